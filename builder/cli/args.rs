//! The command line's arguments: every command and option `sov` takes.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sov",
    version,
    about = "Build every site of a self-hosted stack into content-addressed artifacts"
)]
pub struct Cli {
    /// The stack repository (sites/, images/, templates/).
    #[arg(long, global = true, default_value = ".")]
    pub root: PathBuf,
    /// Store, generations and cache [default: <root>/.sov].
    #[arg(long, global = true)]
    pub state: Option<PathBuf>,
    /// The age identity that opens the secrets [default: <state>/secrets/identity.txt, created on first use].
    #[arg(long, global = true, env = "SOV_AGE_IDENTITY")]
    pub age_identity: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build sites (all by default) into the store and record generations.
    Build(BuildArgs),
    /// Bring every host of a site to its newest generation, atomically, with rollback.
    Deploy {
        site: String,
        #[command(flatten)]
        hosts: HostArgs,
        /// Show the plan (per host: objects and bytes to send); touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// On a failed host, deploy the others anyway instead of rolling back.
        #[arg(long)]
        keep_going: bool,
    },
    /// Bring every host of a site back to generation N (default: the previous one).
    Rollback {
        site: String,
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        hosts: HostArgs,
    },
    /// Print the SSH host keys a site's hosts present, to pin in the site file (never trusted automatically).
    Keyscan { site: String },
    /// Show what changed between two generations of a site (default: the previous and the current).
    Diff {
        site: String,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
    },
    /// List a site's generations and which hosts run each one now (asked over SSH, read-only).
    Generations {
        site: String,
        /// Hosts asked at once.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        /// The SSH private key to log in with.
        #[arg(long)]
        identity: Option<PathBuf>,
        /// Print the result as JSON (see the README for the schema).
        #[arg(long)]
        json: bool,
    },
    /// Inspect the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Keep the newest generations of each site and remove unreferenced objects.
    Gc {
        /// Generations to keep per site (the current one is always kept).
        #[arg(long, default_value_t = 5)]
        keep: usize,
    },
    /// Write a new stack skeleton (this example stack) into DIR.
    Init { dir: PathBuf },
    /// Back up the data of a site's hosts now (services stopped during each host's backup), or `verify` the repository.
    #[command(args_conflicts_with_subcommands = true)]
    Backup {
        #[command(subcommand)]
        command: Option<BackupCommand>,
        site: Option<String>,
        #[command(flatten)]
        hosts: HostArgs,
    },
    /// List a site's backups: id, time, host, generation, size, bytes added.
    Backups {
        site: String,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a backup's data back (default: the newest deploy's) and roll the hosts to the generation it was taken under.
    Restore {
        site: String,
        /// A backup id (or a unique prefix) from `sov backups`.
        #[arg(long)]
        backup: Option<String>,
        #[command(flatten)]
        hosts: HostArgs,
    },
    /// Set or list a site's secrets (kept age-encrypted under <state>/secrets).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Run restic's check on a site's repository and read back a sample of the data.
    Verify {
        site: String,
        /// How much of the data to read back (restic's --read-data-subset).
        #[arg(long, default_value = "10%")]
        read: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set secret NAME of SITE to the value read from stdin (one final newline is dropped).
    Set { site: String, name: String },
    /// List the secrets a site's hosts need and whether each has a value (never the values).
    List {
        site: String,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Only these hosts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Hosts deployed at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Seconds a host waits for confirmation over a new connection before it rolls itself back.
    #[arg(long, default_value_t = 30)]
    pub confirm_timeout: u64,
    /// The SSH private key to log in with.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Sites to build; every site when none is named.
    pub sites: Vec<String>,
    /// Rebuild everything in a fresh temporary store and fail on any artifact whose bytes differ.
    #[arg(long)]
    pub check: bool,
    /// Print the result as JSON (see the README for the schema).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Re-hash every object and name any that is corrupt.
    Verify,
}
