//! The command line: dispatch of each command to the library, one short
//! function per command. Its arguments are in [`args`], its output (plain
//! text or stable JSON) in [`print`], its failures in [`error`].

mod args;
mod check;
mod error;
mod print;
mod secret;

use std::path::{Path, PathBuf};

pub use args::{BackupCommand, BuildArgs, Cli, Command, HostArgs, SecretCommand, StoreCommand};
pub use error::CliError;

use crate::build::{self, gc, BuildError, Paths};
use crate::deploy::{self, recover, Mode, OnFailure, Which};
use crate::init;
use crate::model::values::PublicKey;
use crate::model::Stack;
use crate::secrets::Vault;
use crate::store::{check_state_dir, StateLock, Store};

/// What every command shares: the absolute stack root and state folder,
/// and the age identity named on the command line.
struct Context {
    root: PathBuf,
    state: PathBuf,
    age_identity: Option<PathBuf>,
}

impl Context {
    fn of(cli: &Cli) -> Result<Self, CliError> {
        let root = absolute(&cli.root)?;
        let state = match &cli.state {
            Some(s) => absolute(s)?,
            None => root.join(".sov"),
        };
        let age_identity = cli.age_identity.as_deref().map(absolute).transpose()?;
        Ok(Context {
            root,
            state,
            age_identity,
        })
    }

    fn paths(&self) -> Paths<'_> {
        Paths {
            root: &self.root,
            state: &self.state,
        }
    }

    /// What a command that reaches hosts is to do with them.
    fn options(&self, hosts: &HostArgs, mode: Mode, on_failure: OnFailure) -> deploy::Options {
        deploy::Options {
            hosts: hosts.hosts.clone(),
            mode,
            on_failure,
            jobs: hosts.jobs,
            confirm_timeout: std::time::Duration::from_secs(hosts.confirm_timeout),
            identity: hosts.identity.clone(),
            age_identity: self.age_identity.clone(),
            backups: deploy::Backups::BeforeSwitch,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    let cx = Context::of(&cli)?;
    // Every command but init reads or writes the state: a path that cannot
    // be a folder is bad input before anything runs.
    if !matches!(cli.command, Command::Init { .. }) {
        check_state_dir(&cx.state)?;
    }
    match cli.command {
        Command::Build(args) => build_command(&cx, &args),
        Command::Deploy {
            site,
            hosts,
            dry_run,
            keep_going,
        } => deploy_command(&cx, &site, &hosts, dry_run, keep_going),
        Command::Rollback { site, to, hosts } => rollback(&cx, &site, to, &hosts),
        Command::Generations {
            site,
            jobs,
            identity,
            json,
        } => generations(&cx, &site, identity, jobs, json),
        Command::Diff { site, from, to } => diff(&cx.state, &site, from, to),
        Command::Keyscan { site } => keyscan(&cx.root, &site),
        Command::Store {
            command: StoreCommand::Verify,
        } => verify(&cx.state),
        Command::Gc { keep } => gc_command(&cx.state, keep),
        Command::Backup {
            command: Some(BackupCommand::Verify { site, read }),
            ..
        } => backup_verify(&cx, &site, &read),
        Command::Backup {
            command: None,
            site,
            hosts,
        } => backup(&cx, site, &hosts),
        Command::Backups { site, json } => backups(&cx, &site, json),
        Command::Restore {
            site,
            backup,
            hosts,
        } => restore(&cx, site, backup.as_deref(), &hosts),
        Command::Secret { command } => secret(&cx, command),
        Command::Init { dir } => init_command(&dir),
    }
}

fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|source| CliError::Path {
        path: path.to_path_buf(),
        source,
    })
}

fn build_command(cx: &Context, args: &BuildArgs) -> Result<(), CliError> {
    let paths = cx.paths();
    let report = build::build(&paths, &args.sites)?;
    print::repaired(&report);
    if args.check {
        // The store did not hold what the inputs make, even if it does now.
        if !report.repaired.is_empty() {
            return Err(CliError::Repaired {
                names: report.repaired.iter().map(ToString::to_string).collect(),
            });
        }
        check::check(&paths, &args.sites, &report)?;
    }
    print::build(&report, args.check, args.json)
}

fn verify(state: &Path) -> Result<(), CliError> {
    let _lock = StateLock::acquire(state)?;
    let store = Store::open(state)?;
    let objects = store.list()?;
    let mut corrupt = Vec::new();
    for object in &objects {
        if !store.verify(object)? {
            print::corrupt_object(&store.path(object));
            corrupt.push(object.to_string());
        }
    }
    if corrupt.is_empty() {
        print::verified(objects.len());
        Ok(())
    } else {
        Err(CliError::Corrupt {
            count: corrupt.len(),
            names: corrupt,
        })
    }
}

fn deploy_command(
    cx: &Context,
    site: &str,
    hosts: &HostArgs,
    dry_run: bool,
    keep_going: bool,
) -> Result<(), CliError> {
    let mode = if dry_run { Mode::DryRun } else { Mode::Apply };
    let on_failure = if keep_going {
        OnFailure::KeepGoing
    } else {
        OnFailure::RollBackAll
    };
    let options = cx.options(hosts, mode, on_failure);
    deploy_to(cx, site, Which::Current, &options, hosts.json)
}

fn rollback(cx: &Context, site: &str, to: Option<u64>, hosts: &HostArgs) -> Result<(), CliError> {
    let which = to.map_or(Which::Previous, Which::Number);
    let options = cx.options(hosts, Mode::Apply, OnFailure::RollBackAll);
    deploy_to(cx, site, which, &options, hosts.json)
}

fn deploy_to(
    cx: &Context,
    site: &str,
    which: Which,
    options: &deploy::Options,
    json: bool,
) -> Result<(), CliError> {
    let report = deploy::deploy(&cx.root, &cx.state, site, which, options)?;
    print::deploy(&report, json)?;
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
    cx: &Context,
    site: &str,
    identity: Option<PathBuf>,
    jobs: usize,
    json: bool,
) -> Result<(), CliError> {
    let listing = deploy::live::generations(&cx.root, &cx.state, site, identity, jobs)?;
    print::generations(&listing, json)
}

/// Prints, per host, the key it presents now, as a line to paste into the
/// site file after checking it out of band.
fn keyscan(root: &Path, site: &str) -> Result<(), CliError> {
    let stack = Stack::load(root).map_err(|d| CliError::Build(BuildError::Input(d)))?;
    let site_def = stack
        .site(site)
        .ok_or_else(|| deploy::DeployError::UnknownSite(site.to_string()))?;
    for host in &site_def.hosts {
        let address = host.ssh_address();
        let keys = deploy::ssh::scan(&address, host.ssh.port.get(), Some("ed25519"));
        match keys.first() {
            Some(key) => {
                // A line that does not parse is shown as it came.
                let fingerprint = PublicKey::try_from(key.clone())
                    .map_or_else(|_| key.clone(), |k| k.fingerprint());
                let matches = host.ssh.host_key.bare() == *key;
                print::scanned_key(host.name.as_str(), &address, &fingerprint, matches, key);
            }
            None => print::no_key(host.name.as_str(), &address),
        }
    }
    Ok(())
}

fn diff(state: &Path, site: &str, from: Option<u64>, to: Option<u64>) -> Result<(), CliError> {
    let unknown = || deploy::DeployError::UnknownSite(site.to_string());
    let name = crate::model::SiteName::try_from(site.to_string()).map_err(|_| unknown())?;
    let profile = build::Profile::open(state, &name);
    let missing = |n: String| deploy::DeployError::NoGeneration(site.to_string(), n);
    let numbered = |n: u64| -> Result<build::generation::Record, CliError> {
        let record = profile.read(build::Generation(n))?;
        Ok(record.ok_or_else(|| missing(n.to_string()))?)
    };
    let to = match to {
        Some(n) => numbered(n)?,
        None => profile
            .current()?
            .ok_or_else(|| missing("(none built)".into()))?,
    };
    let from = match from {
        Some(n) => numbered(n)?,
        None => profile
            .list()?
            .into_iter()
            .rfind(|r| r.generation < to.generation)
            .ok_or_else(|| missing(format!("before {}", to.generation)))?,
    };
    let store = Store::open(state)?;
    let sections = build::diff::compare(&store, &from.manifest, &to.manifest)?;
    print::diff(&build::diff::render(
        &store,
        &sections,
        from.generation.0,
        to.generation.0,
    ));
    Ok(())
}

fn gc_command(state: &Path, keep: usize) -> Result<(), CliError> {
    print::gc(&gc::gc(state, keep)?);
    Ok(())
}

fn backup_verify(cx: &Context, site: &str, read: &str) -> Result<(), CliError> {
    let said = recover::verify(&cx.root, &cx.state, site, read, cx.age_identity.clone())?;
    print::backup_verified(&said, site, read);
    Ok(())
}

fn backup(cx: &Context, site: Option<String>, hosts: &HostArgs) -> Result<(), CliError> {
    let site = site.ok_or(CliError::NoSite)?;
    let options = cx.options(hosts, Mode::Apply, OnFailure::RollBackAll);
    let results = recover::backup_site(&cx.root, &cx.state, &site, &options)?;
    print::backed_up(&results, hosts.json)?;
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

fn backups(cx: &Context, site: &str, json: bool) -> Result<(), CliError> {
    let backups = recover::list(&cx.root, &cx.state, site, cx.age_identity.clone())?;
    print::backups(&backups, json)
}

fn restore(
    cx: &Context,
    site: String,
    backup: Option<&str>,
    hosts: &HostArgs,
) -> Result<(), CliError> {
    let options = cx.options(hosts, Mode::Apply, OnFailure::RollBackAll);
    let restored = recover::restore(&cx.root, &cx.state, &site, backup, &options)?;
    print::restored(&restored, hosts.json)?;
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

fn secret(cx: &Context, command: SecretCommand) -> Result<(), CliError> {
    let vault = Vault::open(&cx.state, cx.age_identity.clone());
    match command {
        SecretCommand::Set { site, name } => secret::set(&cx.root, &vault, &site, &name),
        SecretCommand::List { site, json } => secret::list(&cx.root, &vault, &site, json),
    }
}

fn init_command(dir: &Path) -> Result<(), CliError> {
    let written = init::init(dir)?;
    print::initialised(written, dir);
    Ok(())
}
