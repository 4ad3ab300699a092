//! The command line: arguments, dispatch to the library, and output in
//! plain text or stable JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::build::{self, gc, BuildError, Paths, Report};
use crate::deploy::{self, recover, Mode, OnFailure, Which};
use crate::init;
use crate::model::Stack;
use crate::secrets::{self, SecretError, SecretValue, Vault};
use crate::store::{Health, ObjectName, StateLock, Store, StoreError};

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

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Gc(#[from] gc::GcError),
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
    #[error("{what} of site {site} failed: {failed}")]
    Failed {
        what: &'static str,
        site: String,
        failed: String,
    },
    #[error("give a site: sov backup SITE, or sov backup verify SITE")]
    NoSite,
    #[error("deploy of site {site} failed: {failed}")]
    DeployFailed { site: String, failed: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Init(#[from] init::InitError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot read the secret's value from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("{count} corrupt object{}: {}", if *count == 1 { "" } else { "s" }, names.join(", "))]
    Corrupt { count: usize, names: Vec<String> },
    #[error("the store held corrupt objects, rendered again and replaced by this build: {}; `sov store verify` checks the rest", names.join(", "))]
    Repaired { names: Vec<String> },
    #[error("not reproducible: {}", artifacts.join(", "))]
    NotReproducible { artifacts: Vec<String> },
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    #[error("cannot resolve path {path}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// 2 for bad input or usage, 1 for everything that failed otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Build(e) if e.is_input() => 2,
            CliError::Store(e) if e.is_input() => 2,
            CliError::Gc(gc::GcError::Store(e)) if e.is_input() => 2,
            CliError::Deploy(e) if e.is_input() => 2,
            CliError::Init(e) if e.is_input() => 2,
            CliError::Secret(e) if e.is_input() => 2,
            CliError::NoSite => 2,
            _ => 1,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    let root = absolute(&cli.root)?;
    let state = match &cli.state {
        Some(s) => absolute(s)?,
        None => root.join(".sov"),
    };
    let paths = Paths {
        root: &root,
        state: &state,
    };
    let age_identity = cli.age_identity.as_deref().map(absolute).transpose()?;
    match cli.command {
        Command::Build(args) => build_command(&paths, &args),
        Command::Deploy {
            site,
            hosts,
            dry_run,
            keep_going,
        } => {
            let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
            let on_failure = if keep_going {
                OnFailure::KeepGoing
            } else {
                OnFailure::RollBackAll
            };
            deploy_command(
                &paths,
                &site,
                Which::Current,
                &hosts,
                mode,
                on_failure,
                age_identity,
            )
        }
        Command::Rollback { site, to, hosts } => {
            let which = to.map_or(Which::Previous, Which::Number);
            deploy_command(
                &paths,
                &site,
                which,
                &hosts,
                Mode::Apply,
                OnFailure::RollBackAll,
                age_identity,
            )
        }
        Command::Generations {
            site,
            jobs,
            identity,
            json,
        } => generations(&paths, &site, identity, jobs, json),
        Command::Diff { site, from, to } => diff(&state, &site, from, to),
        Command::Keyscan { site } => keyscan(&root, &site),
        Command::Store {
            command: StoreCommand::Verify,
        } => verify(&state),
        Command::Gc { keep } => {
            let report = gc::gc(&state, keep)?;
            println!(
                "removed {} generation(s) and {} object(s), {} bytes freed",
                report.generations_removed, report.objects_removed, report.bytes_freed
            );
            Ok(())
        }
        Command::Backup {
            command: Some(BackupCommand::Verify { site, read }),
            ..
        } => {
            let said = recover::verify(&root, &state, &site, &read, age_identity)?;
            print!("{said}");
            println!("backups of site {site}: repository checked, {read} of the data read back");
            Ok(())
        }
        Command::Backup {
            command: None,
            site,
            hosts,
        } => {
            let site = site.ok_or(CliError::NoSite)?;
            let options = options_of(&hosts, Mode::Apply, OnFailure::RollBackAll, age_identity);
            let results = recover::backup_site(&root, &state, &site, &options)?;
            let mut out = std::io::stdout().lock();
            if hosts.json {
                write_json(&mut out, &results)?;
            } else {
                for r in &results {
                    let said = match (&r.backup, &r.error) {
                        (_, Some(e)) => format!("FAILED: {e}"),
                        (Some(id), None) => format!("backup {id}"),
                        (None, None) => "nothing to back up".to_string(),
                    };
                    writeln!(out, "{}: {said}", r.host).map_err(CliError::Output)?;
                }
            }
            let failed: Vec<&str> = results
                .iter()
                .filter(|r| r.error.is_some())
                .map(|r| r.host.as_str())
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::Failed {
                    what: "backup",
                    site,
                    failed: failed.join(", "),
                })
            }
        }
        Command::Backups { site, json } => {
            let backups = recover::list(&root, &state, &site, age_identity)?;
            let mut out = std::io::stdout().lock();
            if json {
                write_json(&mut out, &backups)
            } else {
                for b in &backups {
                    let bytes = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
                    writeln!(
                        out,
                        "{}  {}  {:<16} generation {:<4} {:>12} bytes  {:>12} added  {}",
                        b.short_id,
                        b.time.get(..19).unwrap_or(&b.time),
                        b.tags.host,
                        b.tags.generation,
                        bytes(b.size),
                        bytes(b.added),
                        b.tags.deploy
                    )
                    .map_err(CliError::Output)?;
                }
                Ok(())
            }
        }
        Command::Restore {
            site,
            backup,
            hosts,
        } => {
            let options = options_of(&hosts, Mode::Apply, OnFailure::RollBackAll, age_identity);
            let restored = recover::restore(&root, &state, &site, backup.as_deref(), &options)?;
            let mut out = std::io::stdout().lock();
            if hosts.json {
                write_json(&mut out, &restored)?;
            } else {
                for b in &restored.backups {
                    writeln!(
                        out,
                        "{}: data of backup {} restored",
                        b.tags.host, b.short_id
                    )
                    .map_err(CliError::Output)?;
                }
                for d in &restored.deploys {
                    for h in &d.hosts {
                        writeln!(out, "{}: {}", h.host, deploy::describe(h))
                            .map_err(CliError::Output)?;
                    }
                }
            }
            if restored.ok {
                Ok(())
            } else {
                Err(CliError::Failed {
                    what: "restore",
                    site,
                    failed: "see above".into(),
                })
            }
        }
        Command::Secret { command } => {
            let vault = Vault::open(&state, age_identity);
            match command {
                SecretCommand::Set { site, name } => secret_set(&root, &vault, &site, &name),
                SecretCommand::List { site, json } => secret_list(&root, &vault, &site, json),
            }
        }
        Command::Init { dir } => {
            let written = init::init(&dir)?;
            println!("wrote {written} files into {}", dir.display());
            println!("next: cd {} && sov build", dir.display());
            Ok(())
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|source| CliError::Path {
        path: path.to_path_buf(),
        source,
    })
}

fn build_command(paths: &Paths<'_>, args: &BuildArgs) -> Result<(), CliError> {
    let report = build::build(paths, &args.sites)?;
    for object in &report.repaired {
        eprintln!("warning: store object {object} was corrupt: rendered again and replaced");
    }
    if args.check {
        // The store did not hold what the inputs make, even if it does now.
        if !report.repaired.is_empty() {
            return Err(CliError::Repaired {
                names: report.repaired.iter().map(ToString::to_string).collect(),
            });
        }
        check(paths, &args.sites, &report)?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        write_json(&mut out, &report)?;
    } else {
        print_report(&mut out, &report).map_err(CliError::Output)?;
        if args.check {
            writeln!(
                out,
                "check: every artifact rebuilt bit for bit in a fresh store"
            )
            .map_err(CliError::Output)?;
        }
    }
    out.flush().map_err(CliError::Output)
}

fn print_report(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for site in &report.sites {
        let what = if site.recorded {
            "recorded"
        } else {
            "unchanged"
        };
        writeln!(
            out,
            "{}: generation {} ({what}), {} rendered, {} reused",
            site.name, site.generation, site.rendered, site.reused
        )?;
        for a in &site.artifacts {
            writeln!(out, "  {:<10} {:<44} {}", a.kind.as_str(), a.name, a.hash)?;
        }
        writeln!(out, "  manifest   {}", site.manifest.display())?;
    }
    Ok(())
}

/// Rebuilds into a temporary state directory and compares every artifact's
/// bytes with what the real store holds.
fn check(paths: &Paths<'_>, sites: &[String], report: &Report) -> Result<(), CliError> {
    let scratch = paths.state.join(format!("check-{}", std::process::id()));
    let result = (|| {
        let fresh = build::build(
            &Paths {
                root: paths.root,
                state: &scratch,
            },
            sites,
        )?;
        let store = Store::at(paths.state);
        let (mut differ, mut corrupt) = (Vec::new(), Vec::new());
        for (ours, theirs) in report.sites.iter().zip(&fresh.sites) {
            for (a, b) in ours.artifacts.iter().zip(&theirs.artifacts) {
                let same =
                    a.name == b.name && std::fs::read(&a.path).ok() == std::fs::read(&b.path).ok();
                if same {
                    continue;
                }
                // Bytes that no longer match their own hash are corruption,
                // not a build that changed.
                match object_of(&a.path).map(|o| store.check(&o)).transpose()? {
                    Some(Health::Corrupt) => corrupt.push(a.path.display().to_string()),
                    _ => differ.push(format!("{} ({})", a.name, a.kind.as_str())),
                }
            }
        }
        if !corrupt.is_empty() {
            Err(CliError::Corrupt {
                count: corrupt.len(),
                names: corrupt,
            })
        } else if differ.is_empty() {
            Ok(())
        } else {
            Err(CliError::NotReproducible { artifacts: differ })
        }
    })();
    // A scratch build that failed wrote nothing, not even its directory.
    match std::fs::remove_dir_all(&scratch) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::Path {
            path: scratch.clone(),
            source: e,
        }),
        _ => result,
    }
}

fn object_of(path: &Path) -> Option<ObjectName> {
    path.file_name()?.to_str()?.parse().ok()
}

fn verify(state: &Path) -> Result<(), CliError> {
    let _lock = StateLock::acquire(state)?;
    let store = Store::open(state)?;
    let objects = store.list()?;
    let mut corrupt = Vec::new();
    for object in &objects {
        if !store.verify(object)? {
            eprintln!("corrupt: {}", store.path(object).display());
            corrupt.push(object.to_string());
        }
    }
    if corrupt.is_empty() {
        println!("{} objects verified", objects.len());
        Ok(())
    } else {
        Err(CliError::Corrupt {
            count: corrupt.len(),
            names: corrupt,
        })
    }
}

fn options_of(
    hosts: &HostArgs,
    mode: Mode,
    on_failure: OnFailure,
    age_identity: Option<PathBuf>,
) -> deploy::Options {
    deploy::Options {
        hosts: hosts.hosts.clone(),
        mode,
        on_failure,
        jobs: hosts.jobs,
        confirm_timeout: std::time::Duration::from_secs(hosts.confirm_timeout),
        identity: hosts.identity.clone(),
        age_identity,
        backups: deploy::Backups::BeforeSwitch,
    }
}

fn deploy_command(
    paths: &Paths<'_>,
    site: &str,
    which: Which,
    hosts: &HostArgs,
    mode: Mode,
    on_failure: OnFailure,
    age_identity: Option<PathBuf>,
) -> Result<(), CliError> {
    let options = options_of(hosts, mode, on_failure, age_identity);
    let report = deploy::deploy(paths.root, paths.state, site, which, &options)?;
    let mut out = std::io::stdout().lock();
    if hosts.json {
        write_json(&mut out, &report)?;
    } else {
        for h in &report.hosts {
            writeln!(out, "{}: {}", h.host, deploy::describe(h)).map_err(CliError::Output)?;
        }
    }
    if report.ok {
        return Ok(());
    }
    let failed: Vec<String> = report
        .hosts
        .iter()
        .filter_map(|h| h.error.clone())
        .collect();
    Err(CliError::DeployFailed {
        site: site.to_string(),
        failed: failed.join("; "),
    })
}

fn generations(
    paths: &Paths<'_>,
    site: &str,
    identity: Option<PathBuf>,
    jobs: usize,
    json: bool,
) -> Result<(), CliError> {
    let listing = deploy::live::generations(paths.root, paths.state, site, identity, jobs)?;
    let mut out = std::io::stdout().lock();
    if json {
        write_json(&mut out, &listing)?;
    } else {
        print_generations(&mut out, &listing).map_err(CliError::Output)?;
    }
    Ok(())
}

/// One line per generation (number, time, manifest hash, current, the
/// hosts running it), then one per host that runs none of them.
fn print_generations(out: &mut impl Write, listing: &deploy::live::Listing) -> std::io::Result<()> {
    use deploy::live::LiveState;
    for g in &listing.generations {
        let when = g.recorded.map_or("?".to_string(), utc);
        write!(out, "{:>4}  {when}  {}", g.generation, g.manifest)?;
        if g.current {
            write!(out, "  (current)")?;
        }
        if !g.live.is_empty() {
            let hosts: Vec<String> = g
                .live
                .iter()
                .map(|name| {
                    let unconfirmed = listing
                        .hosts
                        .iter()
                        .any(|h| &h.host == name && h.state == LiveState::Unconfirmed);
                    if unconfirmed {
                        format!("{name} (unconfirmed)")
                    } else {
                        name.clone()
                    }
                })
                .collect();
            write!(out, "  live: {}", hosts.join(", "))?;
        }
        writeln!(out)?;
    }
    for h in &listing.hosts {
        let n = h.generation.map_or("?".to_string(), |n| n.to_string());
        match h.state {
            LiveState::Live | LiveState::Unconfirmed => {}
            LiveState::Unknown => writeln!(
                out,
                "{}: runs generation {n}, which is not this site's generation {n} here",
                h.host
            )?,
            LiveState::None => writeln!(out, "{}: no generation deployed", h.host)?,
            LiveState::Unreachable => {
                let error = h.error.as_deref().unwrap_or("");
                let prefix = format!("{}: ", h.host);
                let why = error.strip_prefix(&prefix).unwrap_or(error);
                writeln!(out, "{}: unreachable: {why}", h.host)?
            }
        }
    }
    Ok(())
}

/// Prints, per host, the key it presents now, as a line to paste into the
/// site file after checking it out of band.
fn keyscan(root: &Path, site: &str) -> Result<(), CliError> {
    let stack =
        crate::model::Stack::load(root).map_err(|d| CliError::Build(BuildError::Input(d)))?;
    let site_def = stack
        .site(site)
        .ok_or_else(|| deploy::DeployError::UnknownSite(site.to_string()))?;
    for host in &site_def.hosts {
        let address = host.ssh_address();
        let keys = deploy::ssh::scan(&address, host.ssh.port.get(), Some("ed25519"));
        match keys.first() {
            Some(key) => {
                let pinned = host.ssh.host_key.bare();
                let note = if pinned == *key {
                    "matches the pin"
                } else {
                    "differs from the pin"
                };
                println!(
                    "# {} ({address}): {} {note}",
                    host.name,
                    deploy::ssh::fingerprint(key)
                );
                println!("{}: host_key = \"{key}\"", host.name);
            }
            None => println!("# {} ({address}): no answer", host.name),
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since 1970 (Howard Hinnant's
/// civil-from-days), without a time-zone database.
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn diff(state: &Path, site: &str, from: Option<u64>, to: Option<u64>) -> Result<(), CliError> {
    let unknown = || deploy::DeployError::UnknownSite(site.to_string());
    let name = crate::model::SiteName::try_from(site.to_string()).map_err(|_| unknown())?;
    let profile = build::Profile::open(state, &name);
    let missing = |n: String| deploy::DeployError::NoGeneration(site.to_string(), n);
    let to = match to {
        Some(n) => profile
            .read(build::Generation(n))?
            .ok_or_else(|| missing(n.to_string()))?,
        None => profile
            .current()?
            .ok_or_else(|| missing("(none built)".into()))?,
    };
    let from = match from {
        Some(n) => profile
            .read(build::Generation(n))?
            .ok_or_else(|| missing(n.to_string()))?,
        None => profile
            .list()?
            .into_iter()
            .rfind(|r| r.generation < to.generation)
            .ok_or_else(|| missing(format!("before {}", to.generation)))?,
    };
    let store = Store::open(state)?;
    let sections = build::diff::compare(&store, &from.manifest, &to.manifest)?;
    print!(
        "{}",
        build::diff::render(&store, &sections, from.generation.0, to.generation.0)
    );
    Ok(())
}

fn secret_set(root: &Path, vault: &Vault, site: &str, name: &str) -> Result<(), CliError> {
    let stack = Stack::load(root).map_err(|d| CliError::Build(BuildError::Input(d)))?;
    let (site, declared) = secrets::declared(&stack, site)?;
    let Some((name, _)) = declared.iter().find(|(n, _)| n.as_str() == name) else {
        return Err(SecretError::Undeclared {
            site: site.to_string(),
            name: name.to_string(),
            known: declared
                .keys()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into());
    };
    let value = read_secret(name.as_str())?;
    vault.set(&site, name, &value)?;
    eprintln!(
        "secret {name} of site {site} stored, encrypted with {}; hosts get it on the next deploy",
        vault.identity().display()
    );
    Ok(())
}

/// The value on stdin; read without echo when stdin is a terminal.
fn read_secret(name: &str) -> Result<SecretValue, CliError> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    let mut value = Vec::new();
    if stdin.is_terminal() {
        eprint!("value of {name} (not shown, end with Enter): ");
        let saved = rustix::termios::tcgetattr(&stdin).map_err(|e| CliError::Stdin(e.into()))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &quiet)
            .map_err(|e| CliError::Stdin(e.into()))?;
        let mut line = String::new();
        let read = stdin.read_line(&mut line);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &saved);
        eprintln!();
        read.map_err(CliError::Stdin)?;
        value = line.into_bytes();
    } else {
        stdin
            .lock()
            .read_to_end(&mut value)
            .map_err(CliError::Stdin)?;
    }
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    let value = SecretValue::new(value);
    if value.expose().is_empty() {
        return Err(SecretError::Empty(name.to_string()).into());
    }
    Ok(value)
}

fn secret_list(root: &Path, vault: &Vault, site: &str, json: bool) -> Result<(), CliError> {
    #[derive(serde::Serialize)]
    struct Row {
        name: String,
        /// `set`, `generated-on-deploy` or `missing`.
        state: &'static str,
        hosts: Vec<String>,
    }
    let stack = Stack::load(root).map_err(|d| CliError::Build(BuildError::Input(d)))?;
    let (site, declared) = secrets::declared(&stack, site)?;
    let rows: Vec<Row> = declared
        .into_iter()
        .map(|(name, d)| Row {
            state: if vault.is_set(&site, &name) {
                "set"
            } else if d.generate {
                "generated-on-deploy"
            } else {
                "missing"
            },
            name: name.to_string(),
            hosts: d.hosts,
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        write_json(&mut out, &rows)
    } else {
        for r in &rows {
            writeln!(out, "{:<24} {:<20} {}", r.name, r.state, r.hosts.join(", "))
                .map_err(CliError::Output)?;
        }
        Ok(())
    }
}

/// `value` as pretty JSON and a newline: every `--json` output.
fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| CliError::Output(e.into()))?;
    writeln!(out).map_err(CliError::Output)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_795_279_747), "2026-11-21 16:49:07 UTC");
    }
}
