//! `sov backup` and `sov restore`: a site's hosts' data to and from its
//! restic repository, with the same pinned-key connections, host locks and
//! checks as a deploy. A restore puts the data back and then brings each
//! host to the generation its backup was taken under, so that data and
//! configuration match.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::agent::{Agent, HostState};
use super::host::HostError;
use super::progress::Progress;
use super::ssh::{Client, Connection, Target};
use super::{backup, host, secrets, target, DeployError, Options, Report, RunDir, Which};
use crate::backup::{Backup, BackupError, Repository};
use crate::build::gc::{closure, read_json};
use crate::build::manifest::{HostManifest, SiteManifest};
use crate::build::{Generation, Profile};
use crate::model::{SiteName, Stack};
use crate::secrets::Vault;
use crate::store::{ObjectName, StateLock, Store};

/// One host's part of `sov backup`.
#[derive(Debug, Clone, Serialize)]
pub struct HostBackup {
    pub host: String,
    /// The snapshot taken; None when the host keeps no data yet.
    pub backup: Option<String>,
    pub error: Option<String>,
}

/// What `sov restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub site: String,
    /// The backups restored, one per host.
    pub backups: Vec<Backup>,
    /// The deploys that then brought the hosts not yet there to their
    /// backups' generations (none when every host already ran it).
    pub deploys: Vec<Report>,
    pub ok: bool,
}

/// What every host's task of a `sov backup` or `sov restore` shares.
struct Shared {
    client: Client,
    /// Who holds the host locks.
    owner: String,
    agent: ObjectName,
    progress: Progress,
}

impl Shared {
    /// Runs `work` with the host lock of `target` held (see [`host::with_lock`]).
    async fn with_lock<T>(
        &self,
        target: &Target,
        work: impl AsyncFnOnce(&Connection, Agent<'_>, &HostState) -> Result<T, HostError>,
    ) -> Result<T, HostError> {
        host::with_lock(&self.client, target, &self.owner, &self.agent, work).await
    }
}

/// Runs `work` on every item, at most `jobs` at a time, each in a task of
/// its own; returns what each returned, in order (a task that panicked
/// returns nothing).
async fn in_parallel<T, R, F>(items: Vec<T>, jobs: usize, work: impl Fn(T) -> F) -> Vec<R>
where
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let jobs = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let tasks: Vec<_> = items
        .into_iter()
        .map(|item| {
            let (jobs, work) = (jobs.clone(), work(item));
            tokio::spawn(async move {
                let _permit = jobs.acquire_owned().await.ok();
                work.await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        if let Ok(r) = task.await {
            results.push(r);
        }
    }
    results
}

struct Site {
    stack: Stack,
    name: SiteName,
    store: Store,
    vault: Vault,
    repo: Repository,
}

fn open(
    root: &Path,
    state: &Path,
    site: &str,
    hosts: &[String],
    age_identity: Option<PathBuf>,
) -> Result<Site, DeployError> {
    let stack = Stack::load(root).map_err(DeployError::Input)?;
    let name = stack
        .site(site)
        .ok_or_else(|| DeployError::UnknownSite(site.to_string()))?
        .name
        .clone();
    // Before the repository is opened (or created): bad input writes nothing.
    for wanted in hosts {
        target(&stack, &name, wanted)?;
    }
    let store = Store::open(state)?;
    let vault = Vault::open(state, age_identity);
    let repo = Repository::open(state, &vault, &name)?;
    Ok(Site {
        stack,
        name,
        store,
        vault,
        repo,
    })
}

/// `sov backup SITE`: every host (or `options.hosts`) backs up what its
/// current generation keeps, services stopped during its backup.
pub fn backup_site(
    root: &Path,
    state: &Path,
    site: &str,
    options: &Options,
) -> Result<Vec<HostBackup>, DeployError> {
    let _lock = StateLock::shared(state)?;
    let Site {
        stack,
        name,
        store,
        repo,
        ..
    } = open(
        root,
        state,
        site,
        &options.hosts,
        options.age_identity.clone(),
    )?;
    let hosts = stack
        .site(name.as_str())
        .map(|s| &s.hosts[..])
        .unwrap_or(&[]);
    let mut targets = Vec::new();
    for h in hosts {
        if options.hosts.is_empty() || options.hosts.contains(&h.name.to_string()) {
            targets.push(target(&stack, &name, h.name.as_str())?);
        }
    }
    let dir = RunDir::create(state, &targets, options.identity.clone())?;
    let names: Vec<String> = targets.iter().map(|t| t.host.clone()).collect();
    let shared = Arc::new(Shared {
        client: dir.client.clone(),
        owner: format!("sov backup (pid {})", std::process::id()),
        agent: super::agent_object()?,
        progress: Progress::stderr(&names),
    });
    let (store, repo) = (Arc::new(store), Arc::new(repo));
    let run = Arc::new(crate::backup::run_name("backup"));
    let results = dir
        .runtime
        .block_on(in_parallel(targets, options.jobs, |t| {
            let (shared, store, repo, run) =
                (shared.clone(), store.clone(), repo.clone(), run.clone());
            async move {
                let progress = &shared.progress;
                progress.step(&t.host, "back up data");
                let backup_run = host::BackupRun {
                    repo: &repo,
                    deploy: &run,
                };
                let owner = &shared.owner;
                let r = shared
                    .with_lock(&t, async |conn, how, state| {
                        host::back_up_current(&store, conn, how, owner, state, backup_run, progress)
                            .await
                    })
                    .await;
                progress.done(
                    &t.host,
                    match &r {
                        Ok(Some(_)) => "backed up",
                        Ok(None) => "nothing to back up",
                        Err(_) => "FAILED",
                    },
                );
                match r {
                    Ok(backup) => HostBackup {
                        host: t.host.clone(),
                        backup,
                        error: None,
                    },
                    Err(e) => HostBackup {
                        host: t.host.clone(),
                        backup: None,
                        error: Some(e.to_string()),
                    },
                }
            }
        }));
    drop(dir);
    if results.iter().any(|r| r.backup.is_some()) {
        if let Err(e) = repo.forget(&stack.settings.value.backups) {
            eprintln!("warning: backups of site {site}: {e}");
        }
    }
    Ok(results)
}

/// `sov backups SITE`: every backup, oldest first.
pub fn list(
    root: &Path,
    state: &Path,
    site: &str,
    age_identity: Option<PathBuf>,
) -> Result<Vec<Backup>, DeployError> {
    Ok(open(root, state, site, &[], age_identity)?.repo.list()?)
}

/// `sov backup verify SITE`: restic's check, reading back `subset` of the data.
pub fn verify(
    root: &Path,
    state: &Path,
    site: &str,
    subset: &str,
    age_identity: Option<PathBuf>,
) -> Result<String, DeployError> {
    Ok(open(root, state, site, &[], age_identity)?
        .repo
        .verify(subset)?)
}

/// One host's part of a restore, decided before anything is touched.
struct Planned {
    target: Target,
    backup: Backup,
    /// The data paths of the backup's generation.
    paths: Vec<String>,
    /// The host at the backup's generation.
    goal: host::Goal,
}

/// `sov restore SITE [--backup ID]`: checks that every generation the
/// chosen backups belong to is complete in the store, then, per host (in
/// parallel), stops its services and puts the data back exactly. A host
/// that already runs the backup's generation, confirmed, has its services
/// started and its health checked by the restore; the others are then
/// deployed to it (which starts the services and runs the checks).
pub fn restore(
    root: &Path,
    state: &Path,
    site: &str,
    backup_id: Option<&str>,
    options: &Options,
) -> Result<Restored, DeployError> {
    let Site {
        stack,
        name,
        store,
        vault,
        repo,
    } = open(
        root,
        state,
        site,
        &options.hosts,
        options.age_identity.clone(),
    )?;
    let chosen: Vec<Backup> = repo
        .select(backup_id)?
        .into_iter()
        .filter(|b| options.hosts.is_empty() || options.hosts.contains(&b.tags.host))
        .collect();
    if chosen.is_empty() {
        return Err(BackupError::NoBackups(format!(
            "{site} (of hosts {})",
            options.hosts.join(", ")
        ))
        .into());
    }
    // Nothing is touched until every backup's generation is whole here and
    // its secrets are known.
    let profile = Profile::open(state, &name);
    let agent = super::agent_object()?;
    let mut values = secrets::Values::new(&vault, &name, secrets::Missing::Generate);
    // Each generation's site manifest, checked whole once.
    let mut generations: BTreeMap<u64, SiteManifest> = BTreeMap::new();
    let mut plan = Vec::new();
    for b in &chosen {
        let lost = || BackupError::LostGeneration {
            site: site.to_string(),
            id: b.short_id.clone(),
            generation: b.tags.generation,
        };
        let site_manifest = match generations.entry(b.tags.generation) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                let record = profile
                    .read(Generation(b.tags.generation))?
                    .ok_or_else(lost)?;
                closure(&store, &record.manifest).map_err(|_| lost())?;
                new.insert(read_json(&store, &record.manifest)?)
            }
        };
        let entry = site_manifest
            .hosts
            .iter()
            .find(|h| h.name == b.tags.host)
            .ok_or_else(lost)?;
        let manifest: HostManifest = read_json(&store, &entry.manifest)?;
        let goal = host::Goal::new(
            b.tags.generation,
            &entry.manifest,
            &manifest,
            &agent,
            values.for_host(&manifest)?,
        );
        plan.push(Planned {
            target: target(&stack, &name, &b.tags.host)?,
            backup: b.clone(),
            paths: manifest.data,
            goal,
        });
    }

    let targets: Vec<Target> = plan.iter().map(|p| p.target.clone()).collect();
    let repo = Arc::new(repo);
    // The run directory goes before the deploys below, which make their own.
    let restored = {
        let _lock = StateLock::shared(state)?;
        let dir = RunDir::create(state, &targets, options.identity.clone())?;
        let names: Vec<String> = targets.iter().map(|t| t.host.clone()).collect();
        let shared = Arc::new(Shared {
            client: dir.client.clone(),
            owner: format!("sov restore (pid {})", std::process::id()),
            agent,
            progress: Progress::stderr(&names),
        });
        let scratch = Arc::new(dir.path.clone());
        dir.runtime.block_on(in_parallel(plan, options.jobs, |p| {
            let (shared, repo, scratch) = (shared.clone(), repo.clone(), scratch.clone());
            async move {
                let progress = &shared.progress;
                let host = p.target.host.clone();
                progress.note(&format!(
                    "{host}: restoring backup {} (generation {}) into {} (services stopped)",
                    p.backup.short_id,
                    p.backup.tags.generation,
                    p.paths.join(", ")
                ));
                progress.step(&host, "restore data");
                let owner = &shared.owner;
                let r = shared
                    .with_lock(&p.target, async |conn, how, state| {
                        let source = backup::Source {
                            repo: &repo,
                            backup: &p.backup,
                            paths: &p.paths,
                        };
                        let (sharing, reporting) = (shared.clone(), host.clone());
                        let sent = move |n, total| sharing.progress.sent(&reporting, n, total);
                        backup::restore(conn, how, owner, source, &scratch, sent)
                            .await
                            .map_err(HostError::Restore)?;
                        Ok(state.reached(&p.goal))
                    })
                    .await;
                progress.done(
                    &host,
                    match &r {
                        Ok(true) => "restored, services started and checked",
                        Ok(false) => "restored, to be deployed",
                        Err(_) => "FAILED",
                    },
                );
                (p.backup.tags.generation, host, r)
            }
        }))
    };

    let mut failed: Vec<String> = restored
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().err().map(ToString::to_string))
        .collect();
    // Then each host not yet at its backup's generation goes there, all or
    // nothing per generation.
    let mut by_generation: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (generation, host, r) in &restored {
        if let Ok(false) = r {
            by_generation
                .entry(*generation)
                .or_default()
                .push(host.clone());
        }
    }
    let mut deploys = Vec::new();
    for (generation, hosts) in by_generation {
        let mut o = options.clone();
        o.hosts = hosts;
        o.backups = super::Backups::Skip;
        let report = super::deploy(root, state, site, Which::Number(generation), &o)?;
        failed.extend(
            report
                .hosts
                .iter()
                .filter_map(|h| h.error.as_ref().map(|e| format!("{}: {e}", h.host))),
        );
        deploys.push(report);
    }
    for e in &failed {
        eprintln!("{e}");
    }
    Ok(Restored {
        site: site.to_string(),
        ok: failed.is_empty() && deploys.iter().all(|d| d.ok),
        backups: chosen,
        deploys,
    })
}
