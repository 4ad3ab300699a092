//! `sov deploy` and `sov rollback`: bring every host of a site to a site
//! generation, in parallel with a bound, all or nothing.

mod host;
pub mod ssh;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::build::gc::{read_json, GcError};
use crate::build::manifest::{HostManifest, SiteManifest};
use crate::build::{Generation, Profile};
use crate::model::{Diagnostics, SiteName, Stack};
use crate::store::{Digest, ObjectName, StateLock, Store, StoreError};
pub use host::{HostReport, Outcome};
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
        )
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
    let site_name = stack
        .sites
        .keys()
        .find(|s| s.as_str() == site)
        .cloned()
        .ok_or_else(|| DeployError::UnknownSite(site.to_string()))?;
    let profile = Profile::open(state, &site_name);
    let record = pick(&profile, &site_name, which)?;

    let _lock = StateLock::shared(state)?;
    let store = Store::open(state)?;
    let agent = ObjectName::new(Digest::of(AGENT.as_bytes()), "sov-agent.sh").map_err(|e| {
        StoreError::Name {
            name: "sov-agent.sh".into(),
            source: e,
        }
    })?;
    if !store.contains(&agent) {
        let batch = store.batch();
        batch.put(&agent, AGENT.as_bytes())?;
        batch.commit()?;
    }
    let site_manifest: SiteManifest = read_json(&store, &record.manifest)?;
    let mut work = Vec::new();
    for entry in &site_manifest.hosts {
        if !options.hosts.is_empty() && !options.hosts.contains(&entry.name) {
            continue;
        }
        let manifest: HostManifest = read_json(&store, &entry.manifest)?;
        let mut objects: BTreeSet<ObjectName> = manifest
            .artifacts
            .iter()
            .map(|a| a.object.clone())
            .collect();
        objects.insert(entry.manifest.clone());
        objects.insert(agent.clone());
        let target = target(&stack, &site_name, &entry.name)?;
        work.push((
            target,
            host::Goal {
                generation: record.generation.0,
                manifest: entry.manifest.clone(),
                objects,
                agent: agent.clone(),
            },
        ));
    }
    for name in &options.hosts {
        if !site_manifest.hosts.iter().any(|h| &h.name == name) {
            return Err(DeployError::UnknownHost {
                site: site.to_string(),
                name: name.clone(),
                known: site_manifest
                    .hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }

    let run_dir = state.join("run").join(std::process::id().to_string());
    let io = |source| DeployError::Io {
        path: run_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&run_dir).map_err(io)?;
    let targets: Vec<Target> = work.iter().map(|(t, _)| t.clone()).collect();
    ssh::write_known_hosts(&run_dir.join("known_hosts"), &targets).map_err(io)?;
    let client = Client {
        known_hosts: run_dir.join("known_hosts"),
        identity: options.identity.clone(),
        control_dir: run_dir.clone(),
        connect_timeout: Duration::from_secs(10),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io)?;
    let hosts = runtime.block_on(run(client, store, work, options));
    let _ = std::fs::remove_dir_all(&run_dir);
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

fn target(stack: &Stack, site: &SiteName, host: &str) -> Result<Target, DeployError> {
    let s = stack
        .site(site.as_str())
        .ok_or_else(|| DeployError::UnknownSite(site.to_string()))?;
    let h = s
        .hosts
        .iter()
        .find(|h| h.name.as_str() == host)
        .ok_or_else(|| DeployError::UnknownHost {
            site: site.to_string(),
            name: host.to_string(),
            known: s
                .hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let address = h.ssh_address();
    Ok(Target {
        host: host.to_string(),
        address,
        port: h.ssh.port,
        user: h.ssh.user.clone(),
        host_key: h.ssh.host_key.clone(),
        root: h.ssh.root.clone(),
    })
}

async fn run(
    client: Client,
    store: Store,
    work: Vec<(Target, host::Goal)>,
    options: &Options,
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
        let (client, jobs) = (client.clone(), jobs.clone());
        checks.push(tokio::spawn(async move {
            let _permit = jobs.acquire_owned().await.ok();
            let started = Instant::now();
            let found = host::preflight(&client, &target, &goal).await;
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
                results.push((report, None));
            }
            Ok(host::Preflight::Needed(checked)) => {
                pending.push((target.clone(), goal.clone(), checked, took))
            }
            Err(e) => {
                let mut report = skipped(target, goal);
                report.outcome = Outcome::Failed;
                report.error = Some(e);
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
        let (client, store, jobs, failed, owner) = (
            client.clone(),
            store.clone(),
            jobs.clone(),
            failed.clone(),
            owner.clone(),
        );
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = jobs.acquire_owned().await.ok();
            if options.on_failure == OnFailure::RollBackAll
                && failed.load(std::sync::atomic::Ordering::SeqCst)
            {
                return (skipped(&target, &goal), None);
            }
            eprintln!("{}: deploying generation {}", target.host, goal.generation);
            let job = host::Job {
                client: &client,
                store: &store,
                target: &target,
                goal: &goal,
                mode: options.mode,
                confirm_timeout: options.confirm_timeout,
                owner: &owner,
            };
            let (report, switched) = host::deploy(job, checked, took).await;
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
                eprintln!(
                    "{}: rolling back to generation {}",
                    target.host,
                    s.previous.map_or("none".into(), |p| p.to_string())
                );
                host::roll_back(&client, None, target, goal, s.previous).await;
                report.outcome = Outcome::RolledBack;
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
