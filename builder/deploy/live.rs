//! `sov generations`: a site's generations and which hosts run each one
//! now, read from every host over SSH (read-only, in parallel, with the
//! pinned-key client deploys use). A host that cannot be read is listed as
//! such; it never fails the listing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::agent::AgentError;
use super::ssh::{Client, SshError, Target};
use super::{host, target, DeployError, RunDir};
use crate::build::gc::read_json;
use crate::build::manifest::SiteManifest;
use crate::build::Profile;
use crate::model::Stack;
use crate::store::{Digest, StateLock, Store, StoreError};

/// Connecting and reading one host's state, at most.
const LOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// What `sov generations --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub site: String,
    /// The site's current (newest built) generation.
    pub current: u64,
    /// Oldest first.
    pub generations: Vec<GenerationEntry>,
    /// Every host of the site, in the site file's order.
    pub hosts: Vec<HostLive>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerationEntry {
    pub generation: u64,
    /// When it was recorded, in seconds since 1970 (UTC); None if unknown.
    pub recorded: Option<u64>,
    /// The hash of the site manifest.
    pub manifest: Digest,
    pub current: bool,
    /// Hosts whose current generation this is, with this generation's
    /// artifacts (`live` or `unconfirmed` in `hosts`).
    pub live: Vec<String>,
}

/// What one host runs now.
#[derive(Debug, Clone, Serialize)]
pub struct HostLive {
    pub host: String,
    pub state: LiveState,
    /// The generation the host's `current` points at, when it could be read.
    pub generation: Option<u64>,
    /// Why the host could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LiveState {
    /// It runs a generation of this site, confirmed over a new connection.
    Live,
    /// It runs a generation of this site that was never confirmed: a deploy
    /// is under way, or died before confirming (the watchdog decides).
    Unconfirmed,
    /// It runs a generation this state directory does not have, or one
    /// with other artifacts (deployed from elsewhere, or collected here).
    Unknown,
    /// It has no generation: never deployed.
    None,
    /// It could not be reached or read.
    Unreachable,
}

impl LiveState {
    pub fn runs_a_known_generation(self) -> bool {
        matches!(self, LiveState::Live | LiveState::Unconfirmed)
    }
}

/// Lists the generations of `site` with the hosts that run each, asking
/// `jobs` hosts at a time.
pub fn generations(
    root: &Path,
    state: &Path,
    site: &str,
    identity: Option<PathBuf>,
    jobs: usize,
) -> Result<Listing, DeployError> {
    let stack = Stack::load(root).map_err(DeployError::Input)?;
    let site_def = stack
        .site(site)
        .ok_or_else(|| DeployError::UnknownSite(site.to_string()))?;
    let profile = Profile::open(state, &site_def.name);
    let (current, records, expected) = {
        let _lock = StateLock::shared(state)?;
        let current = profile
            .current()?
            .ok_or_else(|| DeployError::NoGeneration(site.to_string(), "(none built)".into()))?;
        let records = profile.list()?;
        let store = Store::open(state)?;
        // (generation, host) -> the host manifest object it consists of.
        let mut expected = BTreeMap::new();
        for r in &records {
            let manifest: SiteManifest = read_json(&store, &r.manifest)?;
            for h in manifest.hosts {
                expected.insert((r.generation.0, h.name), h.manifest.to_string());
            }
        }
        (current.generation.0, records, expected)
    };

    let targets = site_def
        .hosts
        .iter()
        .map(|h| target(&stack, &site_def.name, h.name.as_str()))
        .collect::<Result<Vec<Target>, _>>()?;
    let dir = RunDir::create(state, &targets, identity)?;
    let looks = dir
        .runtime
        .block_on(look_at_all(dir.client.clone(), targets, jobs));
    drop(dir);

    let hosts: Vec<HostLive> = looks
        .into_iter()
        .map(|(name, look)| match look {
            Err(error) => HostLive {
                host: name,
                state: LiveState::Unreachable,
                generation: None,
                error: Some(error.to_string()),
            },
            Ok(found) => {
                let state = match found.current {
                    None => LiveState::None,
                    Some(n) if expected.get(&(n, name.clone())) != found.manifest.as_ref() => {
                        LiveState::Unknown
                    }
                    Some(_) if found.confirmed => LiveState::Live,
                    Some(_) => LiveState::Unconfirmed,
                };
                HostLive {
                    host: name,
                    state,
                    generation: found.current,
                    error: None,
                }
            }
        })
        .collect();
    let generations = records
        .iter()
        .map(|r| GenerationEntry {
            generation: r.generation.0,
            recorded: r
                .recorded
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            manifest: r.manifest.digest(),
            current: r.generation.0 == current,
            live: hosts
                .iter()
                .filter(|h| h.state.runs_a_known_generation())
                .filter(|h| h.generation == Some(r.generation.0))
                .map(|h| h.host.clone())
                .collect(),
        })
        .collect();
    Ok(Listing {
        site: site.to_string(),
        current,
        generations,
        hosts,
    })
}

/// What a host said about its current generation.
/// Why a host's state could not be read.
#[derive(Debug, thiserror::Error)]
enum LookError {
    #[error(transparent)]
    AgentName(#[from] StoreError),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("{host}: no answer within {secs} s")]
    Timeout { host: String, secs: u64 },
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

struct Found {
    current: Option<u64>,
    manifest: Option<String>,
    confirmed: bool,
}

/// Every host's state, `jobs` at a time, in the targets' order.
async fn look_at_all(
    client: Client,
    targets: Vec<Target>,
    jobs: usize,
) -> Vec<(String, Result<Found, LookError>)> {
    let client = Arc::new(client);
    let jobs = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let names: Vec<String> = targets.iter().map(|t| t.host.clone()).collect();
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| {
            let (client, jobs) = (client.clone(), jobs.clone());
            tokio::spawn(async move {
                let _permit = jobs.acquire_owned().await.ok();
                tokio::time::timeout(LOOK_TIMEOUT, look(&client, &target))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LookError::Timeout {
                            host: target.host.clone(),
                            secs: LOOK_TIMEOUT.as_secs(),
                        })
                    })
            })
        })
        .collect();
    let mut looks = Vec::new();
    for (name, task) in names.into_iter().zip(tasks) {
        looks.push((name, task.await.unwrap_or_else(|e| Err(e.into()))));
    }
    looks
}

async fn look(client: &Client, target: &Target) -> Result<Found, LookError> {
    let agent = super::agent_object()?;
    let conn = client.connect(target).await?;
    let state = host::state(&conn, &agent).await;
    conn.close().await;
    let state = state?;
    Ok(Found {
        current: state.current,
        manifest: state.manifest,
        confirmed: state.confirmed,
    })
}
