//! `sov deploy` and `sov rollback`: bring every host of a site to a site
//! generation, in parallel with a bound, all or nothing.

mod agent;
mod backup;
mod host;
pub mod live;
pub mod progress;
pub mod recover;
mod secrets;
mod split;
pub mod ssh;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backup::{BackupError, Repository};
use crate::build::gc::{read_json, GcError};
use crate::build::manifest::{HostManifest, SiteManifest};
use crate::build::{Generation, Profile};
use crate::model::{Diagnostics, SiteName, Stack};
use crate::secrets::{SecretError, Vault};
use crate::store::{Digest, ObjectName, StateLock, Store, StoreError};
pub use host::{HostReport, Outcome};
use progress::Progress;
use ssh::{Client, Target};

/// The host side of a deploy, sent inline and kept in each host's store.
pub const AGENT: &str = include_str!("agent.sh");

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Input(Diagnostics),
    #[error("unknown site `{0}`")]
    UnknownSite(String),
    #[error("unknown host `{name}` in site {site}: expected one of {known}")]
    UnknownHost {
        site: String,
        name: String,
        known: String,
    },
    #[error("site {0} has no generation {1}: run `sov build` first, or see `sov generations {0}`")]
    NoGeneration(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] GcError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("cannot prepare the deploy in {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DeployError {
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            DeployError::Input(_)
                | DeployError::UnknownSite(_)
                | DeployError::UnknownHost { .. }
                | DeployError::NoGeneration(..)
                | DeployError::Secret(SecretError::NotSet { .. })
        ) || matches!(self, DeployError::Backup(e) if e.is_input())
    }
}

/// How to deploy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only these hosts (all when empty).
    pub hosts: Vec<String>,
    pub mode: Mode,
    pub on_failure: OnFailure,
    pub jobs: usize,
    pub confirm_timeout: Duration,
    /// The private key sov logs in with (ssh's default when None).
    pub identity: Option<PathBuf>,
    /// The age identity that opens the secrets (`<state>/secrets/identity.txt` when None).
    pub age_identity: Option<PathBuf>,
    pub backups: Backups,
}

/// Whether a deploy backs up the hosts' data before switching them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backups {
    /// Every host whose current generation declares data (the default).
    BeforeSwitch,
    /// None: a restore has just put the data in place.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    /// Show the plan: per host, objects and bytes to send; touch nothing.
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Roll back the hosts already switched in this run.
    RollBackAll,
    /// Deploy the other hosts anyway and report each.
    KeepGoing,
}

/// The result of a site deploy, printed by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub site: String,
    pub generation: u64,
    pub ok: bool,
    pub hosts: Vec<HostReport>,
}

/// Which generation to bring the hosts to.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// The site's current (newest built) generation.
    Current,
    /// Generation N (`--to N`).
    Number(u64),
    /// The generation before the current one.
    Previous,
}

pub fn deploy(
    root: &Path,
    state: &Path,
    site: &str,
    which: Which,
    options: &Options,
) -> Result<Report, DeployError> {
    let stack = Stack::load(root).map_err(DeployError::Input)?;
    let site_def = stack
        .site(site)
        .ok_or_else(|| DeployError::UnknownSite(site.to_string()))?;
    let site_name = site_def.name.clone();
    let profile = Profile::open(state, &site_name);
    let record = pick(&profile, &site_name, which)?;

    let _lock = StateLock::shared(state)?;
    let store = Store::open(state)?;
    let agent = agent_object()?;
    if !store.contains(&agent) {
        let batch = store.batch();
        batch.put(&agent, AGENT.as_bytes())?;
        batch.commit()?;
    }
    let site_manifest: SiteManifest = read_json(&store, &record.manifest)?;
    // Before any secret is decrypted or generated: bad input writes nothing.
    for name in &options.hosts {
        if !site_manifest.hosts.iter().any(|h| &h.name == name) {
            let known = site_manifest.hosts.iter().map(|h| h.name.as_str());
            return Err(unknown_host(site, name, known));
        }
    }
    let vault = Vault::open(state, options.age_identity.clone());
    let missing_secrets = match options.mode {
        Mode::Apply => secrets::Missing::Generate,
        Mode::DryRun => secrets::Missing::Skip,
    };
    let mut values = secrets::Values::new(&vault, &site_name, missing_secrets);
    let mut work = Vec::new();
    for entry in &site_manifest.hosts {
        if !options.hosts.is_empty() && !options.hosts.contains(&entry.name) {
            continue;
        }
        let manifest: HostManifest = read_json(&store, &entry.manifest)?;
        let target = target(&stack, &site_name, &entry.name)?;
        let secrets = values.for_host(&manifest)?;
        work.push((
            target,
            host::Goal::new(
                record.generation.0,
                &entry.manifest,
                &manifest,
                &agent,
                secrets,
            ),
        ));
    }

    // The repository opens (or is created) before any host is touched: a
    // missing restic or a wrong password stops the deploy here.
    let repo = if options.backups == Backups::BeforeSwitch
        && options.mode == Mode::Apply
        && stack.keeps_data(site_def)
    {
        Some(Arc::new(Repository::open(state, &vault, &site_name)?))
    } else {
        None
    };

    let targets: Vec<Target> = work.iter().map(|(t, _)| t.clone()).collect();
    let dir = RunDir::create(state, &targets, options.identity.clone())?;
    let names: Vec<String> = targets.iter().map(|t| t.host.clone()).collect();
    let progress = Arc::new(Progress::stderr(&names));
    let backups = repo
        .clone()
        .map(|repo| (repo, crate::backup::run_name("deploy")));
    let hosts = dir.runtime.block_on(run(
        dir.client.clone(),
        store,
        work,
        backups,
        options,
        progress,
    ));
    drop(dir);
    if let Some(repo) = repo.filter(|_| hosts.iter().any(|h| h.backup.is_some())) {
        if let Err(e) = repo.forget(&stack.settings.value.backups) {
            eprintln!("warning: backups of site {site}: {e}");
        }
    }
    let ok = hosts.iter().all(|h| {
        !matches!(
            h.outcome,
            Outcome::Failed | Outcome::RolledBack | Outcome::Skipped
        )
    });
    Ok(Report {
        site: site.to_string(),
        generation: record.generation.0,
        ok,
        hosts,
    })
}

/// What talking to a site's hosts needs: a private folder under
/// `<state>/run/<pid>` with the known_hosts made from the pinned keys, the
/// ssh_config and the SSH control sockets (removed when dropped), the client, and a runtime.
struct RunDir {
    path: PathBuf,
    client: Client,
    runtime: tokio::runtime::Runtime,
}

impl RunDir {
    fn create(
        state: &Path,
        targets: &[Target],
        identity: Option<PathBuf>,
    ) -> Result<RunDir, DeployError> {
        let path = state.join("run").join(std::process::id().to_string());
        let io = |source| DeployError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&path).map_err(io)?;
        ssh::write_known_hosts(&path.join("known_hosts"), targets).map_err(io)?;
        ssh::write_config(&path.join("ssh_config")).map_err(io)?;
        let client = Client {
            known_hosts: path.join("known_hosts"),
            identity,
            control_dir: path.clone(),
            config: path.join("ssh_config"),
            connect_timeout: Duration::from_secs(10),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io)?;
        Ok(RunDir {
            path,
            client,
            runtime,
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The agent as a store object: hosts keep it under this name.
fn agent_object() -> Result<ObjectName, StoreError> {
    ObjectName::new(Digest::of(AGENT.as_bytes()), "sov-agent.sh").map_err(|e| StoreError::Name {
        name: "sov-agent.sh".into(),
        source: e,
    })
}

fn pick(
    profile: &Profile,
    site: &SiteName,
    which: Which,
) -> Result<crate::build::generation::Record, DeployError> {
    let missing = |n: String| DeployError::NoGeneration(site.to_string(), n);
    let current = profile
        .current()?
        .ok_or_else(|| missing("(none built)".into()))?;
    match which {
        Which::Current => Ok(current),
        Which::Number(n) => profile
            .read(Generation(n))?
            .ok_or_else(|| missing(n.to_string())),
        Which::Previous => profile
            .list()?
            .into_iter()
            .rfind(|r| r.generation < current.generation)
            .ok_or_else(|| missing(format!("before {}", current.generation))),
    }
}

fn unknown_host<'a>(site: &str, name: &str, known: impl Iterator<Item = &'a str>) -> DeployError {
    DeployError::UnknownHost {
        site: site.to_string(),
        name: name.to_string(),
        known: known.collect::<Vec<_>>().join(", "),
    }
}

fn target(stack: &Stack, site: &SiteName, host: &str) -> Result<Target, DeployError> {
    let s = stack
        .site(site.as_str())
        .ok_or_else(|| DeployError::UnknownSite(site.to_string()))?;
    let h = s
        .hosts
        .iter()
        .find(|h| h.name.as_str() == host)
        .ok_or_else(|| {
            let known = s.hosts.iter().map(|h| h.name.as_str());
            unknown_host(site.as_str(), host, known)
        })?;
    Ok(Target::of(h))
}

async fn run(
    client: Client,
    store: Store,
    work: Vec<(Target, host::Goal)>,
    backups: Option<(Arc<Repository>, String)>,
    options: &Options,
    progress: Arc<Progress>,
) -> Vec<HostReport> {
    let order: Vec<String> = work.iter().map(|(t, _)| t.host.clone()).collect();
    let client = Arc::new(client);
    let store = Arc::new(store);
    let jobs = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let owner = format!("sov deploy (pid {})", std::process::id());

    // Every host is looked at, read-only, before any is touched: one that is
    // unreachable, presents another key or lacks a prerequisite stops the
    // deploy with nothing sent anywhere.
    let mut checks = Vec::new();
    for (target, goal) in work.clone() {
        let (client, jobs, progress) = (client.clone(), jobs.clone(), progress.clone());
        checks.push(tokio::spawn(async move {
            let _permit = jobs.acquire_owned().await.ok();
            progress.step(&target.host, "check");
            let started = Instant::now();
            // A report carries the error as text.
            let found = host::preflight(&client, &target, &goal)
                .await
                .map_err(|e| e.to_string());
            (found, started.elapsed())
        }));
    }
    let mut pending = Vec::new();
    let mut results = Vec::new();
    let mut refused = Vec::new();
    for ((target, goal), check) in work.iter().zip(checks) {
        let (found, took) = check
            .await
            .unwrap_or_else(|e| (Err(e.to_string()), Duration::ZERO));
        match found {
            Ok(host::Preflight::UpToDate { current }) => {
                let mut report = skipped(target, goal);
                report.outcome = Outcome::UpToDate;
                report.from = current;
                report.seconds = took.as_secs_f64();
                report.error = None;
                progress.done(&target.host, &describe(&report));
                results.push((report, None));
            }
            Ok(host::Preflight::Needed(checked)) => {
                pending.push((target.clone(), goal.clone(), checked, took))
            }
            Err(e) => {
                let mut report = skipped(target, goal);
                report.outcome = Outcome::Failed;
                report.error = Some(e);
                progress.done(&target.host, "FAILED");
                refused.push(target.host.clone());
                results.push((report, None));
            }
        }
    }
    if !refused.is_empty() && options.on_failure == OnFailure::RollBackAll {
        for (target, goal, checked, _) in pending {
            checked.close().await;
            let mut report = skipped(&target, &goal);
            report.error = Some(format!(
                "not attempted: {} failed the check before the deploy",
                refused.join(", ")
            ));
            progress.done(&target.host, "not attempted");
            results.push((report, None));
        }
        return in_order(results, &order);
    }

    let work: Vec<(Target, host::Goal)> = pending
        .iter()
        .map(|(t, g, _, _)| (t.clone(), g.clone()))
        .collect();
    let mut tasks = Vec::new();
    for (target, goal, checked, took) in pending {
        let (client, store, jobs, failed, owner, progress) = (
            client.clone(),
            store.clone(),
            jobs.clone(),
            failed.clone(),
            owner.clone(),
            progress.clone(),
        );
        let options = options.clone();
        let backups = backups.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = jobs.acquire_owned().await.ok();
            if options.on_failure == OnFailure::RollBackAll
                && failed.load(std::sync::atomic::Ordering::SeqCst)
            {
                progress.done(&target.host, "not attempted");
                return (skipped(&target, &goal), None);
            }
            progress.step(
                &target.host,
                &format!("deploying generation {}", goal.generation),
            );
            let job = host::Job {
                client: &client,
                store: &store,
                target: &target,
                goal: &goal,
                mode: options.mode,
                confirm_timeout: options.confirm_timeout,
                owner: &owner,
                backup: backups
                    .as_ref()
                    .map(|(repo, deploy)| host::BackupRun { repo, deploy }),
                progress: &progress,
            };
            let (report, switched) = host::deploy(job, checked, took).await;
            let outcome = match report.outcome {
                Outcome::Failed => "FAILED".to_string(),
                _ => describe(&report),
            };
            progress.done(&target.host, &outcome);
            if matches!(report.outcome, Outcome::Failed) {
                failed.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            (report, switched)
        }));
    }
    let first = results.len();
    for task in tasks {
        if let Ok(r) = task.await {
            results.push(r);
        }
    }
    let any_failed = results
        .iter()
        .any(|(r, _)| matches!(r.outcome, Outcome::Failed));
    if any_failed && options.on_failure == OnFailure::RollBackAll {
        for ((report, switched), (target, goal)) in results[first..].iter_mut().zip(&work) {
            if let Some(s) = switched {
                let previous = s.previous.map_or("none".into(), |p| p.to_string());
                progress.step(
                    &target.host,
                    &format!("rolling back to generation {previous}"),
                );
                host::roll_back(&client, None, target, goal, s.previous).await;
                report.outcome = Outcome::RolledBack;
                progress.done(&target.host, &describe(report));
            }
        }
    }
    in_order(results, &order)
}

/// Reports in the site file's host order, whatever order they ended in.
fn in_order(
    results: Vec<(HostReport, Option<host::Switched>)>,
    order: &[String],
) -> Vec<HostReport> {
    let mut reports: Vec<HostReport> = results.into_iter().map(|(r, _)| r).collect();
    reports.sort_by_key(|r| order.iter().position(|h| *h == r.host));
    reports
}

fn skipped(target: &Target, goal: &host::Goal) -> HostReport {
    HostReport {
        host: target.host.clone(),
        outcome: Outcome::Skipped,
        from: None,
        to: goal.generation,
        objects_sent: 0,
        bytes_sent: 0,
        seconds: 0.0,
        backup: None,
        error: Some("not attempted: another host failed".into()),
    }
}

/// One plain line per host outcome.
pub fn describe(r: &HostReport) -> String {
    let from = r.from.map_or("none".to_string(), |f| f.to_string());
    match r.outcome {
        Outcome::UpToDate => format!("already at generation {}", r.to),
        Outcome::Unchanged => format!(
            "generation {from} -> {}: same artifacts, nothing to activate",
            r.to
        ),
        Outcome::Switched => format!(
            "generation {from} -> {} ({} objects, {} bytes sent, {:.1} s)",
            r.to, r.objects_sent, r.bytes_sent, r.seconds
        ),
        Outcome::Planned => format!(
            "would switch generation {from} -> {}: send {} objects, {} bytes",
            r.to, r.objects_sent, r.bytes_sent
        ),
        Outcome::RolledBack if r.from.is_none() => format!(
            "rolled back to no generation: current removed and generation {}'s services stopped (what its activation installed stays until a deploy replaces it)",
            r.to
        ),
        Outcome::RolledBack => format!("rolled back to generation {from}"),
        Outcome::Skipped => "skipped: another host failed".to_string(),
        Outcome::Failed => format!("FAILED: {}", r.error.clone().unwrap_or_default()),
    }
}
