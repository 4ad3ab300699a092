//! `sov backup` and `sov restore`: a site's hosts' data to and from its
//! restic repository, with the same pinned-key connections, host locks and
//! checks as a deploy. A restore puts the data back and then brings each
//! host to the generation its backup was taken under, so that data and
//! configuration match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::progress::Progress;
use super::ssh::Target;
use super::{backup, host, target, DeployError, Options, Report, RunDir, Which};
use crate::backup::{Backup, BackupError, Repository};
use crate::build::gc::{closure, read_json};
use crate::build::manifest::{HostManifest, SiteManifest};
use crate::build::{Generation, Profile};
use crate::model::{SiteName, Stack};
use crate::secrets::Vault;
use crate::store::{StateLock, Store};

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
    /// The deploys that then brought the hosts to their backups' generations.
    pub deploys: Vec<Report>,
    pub ok: bool,
}

struct Site {
    stack: Stack,
    name: SiteName,
    store: Store,
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
    let client = Arc::new(dir.client.clone());
    let repo = Arc::new(repo);
    let store = Arc::new(store);
    let run = crate::backup::run_name("backup");
    let owner = format!("sov backup (pid {})", std::process::id());
    let agent = Arc::new(super::agent_object()?);
    let jobs = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
    let names: Vec<String> = targets.iter().map(|t| t.host.clone()).collect();
    let progress = Arc::new(Progress::stderr(&names));
    let results = dir.runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in targets {
            let (client, repo, store, run, owner, jobs, progress, agent) = (
                client.clone(),
                repo.clone(),
                store.clone(),
                run.clone(),
                owner.clone(),
                jobs.clone(),
                progress.clone(),
                agent.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = jobs.acquire_owned().await.ok();
                progress.step(&t.host, "back up data");
                let backup_run = host::BackupRun {
                    repo: &repo,
                    deploy: &run,
                };
                let r = host::with_lock(&client, &t, &owner, &agent, async |conn, how, state| {
                    host::back_up_current(&store, conn, how, &owner, state, backup_run, &progress)
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
                        error: Some(e),
                    },
                }
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            if let Ok(r) = task.await {
                results.push(r);
            }
        }
        results
    });
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

/// `sov restore SITE [--backup ID]`: checks that every generation the
/// chosen backups belong to is complete in the store, then, per host, stops
/// its services, puts the data back exactly, and deploys the backup's
/// generation (which starts the services and runs the health checks).
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
    // Nothing is touched until every backup's generation is whole here.
    let profile = Profile::open(state, &name);
    let mut plan = Vec::new();
    for b in &chosen {
        let lost = || BackupError::LostGeneration {
            site: site.to_string(),
            id: b.short_id.clone(),
            generation: b.tags.generation,
        };
        let record = profile
            .read(Generation(b.tags.generation))?
            .ok_or_else(lost)?;
        closure(&store, &record.manifest).map_err(|_| lost())?;
        let site_manifest: SiteManifest = read_json(&store, &record.manifest)?;
        let entry = site_manifest
            .hosts
            .iter()
            .find(|h| h.name == b.tags.host)
            .ok_or_else(lost)?;
        let manifest: HostManifest = read_json(&store, &entry.manifest)?;
        plan.push((
            target(&stack, &name, &b.tags.host)?,
            b.clone(),
            manifest.data,
        ));
    }

    let targets: Vec<Target> = plan.iter().map(|(t, _, _)| t.clone()).collect();
    let owner = format!("sov restore (pid {})", std::process::id());
    let agent = super::agent_object()?;
    // The run directory goes before the deploys below, which make their own.
    let restored = {
        let _lock = StateLock::shared(state)?;
        let dir = RunDir::create(state, &targets, options.identity.clone())?;
        let client = &dir.client;
        dir.runtime.block_on(async {
            let mut results = Vec::new();
            for (t, b, paths) in &plan {
                eprintln!(
                    "{}: restoring backup {} (generation {}) into {} (services stopped)",
                    t.host,
                    b.short_id,
                    b.tags.generation,
                    paths.join(", ")
                );
                let r = host::with_lock(client, t, &owner, &agent, async |conn, how, _| {
                    backup::restore(conn, how, &owner, &repo, b, paths).await
                })
                .await;
                results.push((b.tags.generation, t.host.clone(), r));
            }
            results
        })
    };

    let mut failed: Vec<String> = restored
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().err().cloned())
        .collect();
    // Then each host goes to its backup's generation, all or nothing per generation.
    let mut by_generation: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (generation, host, r) in &restored {
        if r.is_ok() {
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
