//! One host's part of a deploy: lock, learn what it holds, send what it
//! lacks, switch, and confirm over a new connection.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::agent::{
    lock_holder, Agent, AgentError, AgentExit, Call, HostState, Tell, END, STEP_TIMEOUT,
    SWITCH_TIMEOUT,
};
use super::backup;
use super::progress::Progress;
use super::secrets::{self, Delivery};
use super::ssh::{Client, Connection, Held, SshError, Target, CONTROL_PERSIST_SECS};
use crate::backup::{Repository, Tags};
use crate::build::gc::read_json;
use crate::build::manifest::HostManifest;
use crate::pack::{self, Entry};
use crate::store::{ObjectName, Store};
pub use error::HostError;
use error::{ManifestError, PackingError, Undone};

mod error;

/// Taking the lock may wait for an earlier deploy's collection and for a
/// step of a deploy that died (50 s each on the host).
const LOCK_TIMEOUT: Duration = Duration::from_secs(120);
/// A preflight's connection idle for longer is not reused: its master may
/// be about to exit (ControlPersist).
const REUSE_WITHIN: Duration = Duration::from_secs(CONTROL_PERSIST_SECS as u64 / 2);
/// The dictionary a stream is compressed against stays below this (the
/// host reads it into memory).
const DICTIONARY_LIMIT: usize = 4 << 20;
/// Generations a host keeps after a confirmed deploy; older ones and the
/// objects only they need are removed (a rollback sends them again).
pub const HOST_KEEP: usize = 5;

/// What a host should become.
#[derive(Debug, Clone)]
pub struct Goal {
    pub generation: u64,
    pub manifest: ObjectName,
    /// Every object the generation needs on this host, the agent included.
    pub objects: BTreeSet<ObjectName>,
    pub agent: ObjectName,
    /// The secrets it needs, with their values.
    pub secrets: Vec<Delivery>,
}

impl Goal {
    /// Generation `generation` of a host, described by `manifest` (the
    /// object `manifest_object`), with the agent and the secrets it needs.
    pub fn new(
        generation: u64,
        manifest_object: &ObjectName,
        manifest: &HostManifest,
        agent: &ObjectName,
        secrets: Vec<Delivery>,
    ) -> Goal {
        let mut objects: BTreeSet<ObjectName> = manifest
            .artifacts
            .iter()
            .map(|a| a.object.clone())
            .collect();
        objects.insert(manifest_object.clone());
        objects.insert(agent.clone());
        Goal {
            generation,
            manifest: manifest_object.clone(),
            objects,
            agent: agent.clone(),
            secrets,
        }
    }
}

/// How one host's deploy ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It already ran the target generation.
    UpToDate,
    /// Its artifacts did not change: the new number was recorded, nothing activated.
    Unchanged,
    Switched,
    Failed,
    /// Switched in this run, then rolled back because another host failed.
    RolledBack,
    /// Not attempted: another host failed first.
    Skipped,
    /// A dry run: what would be sent.
    Planned,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub outcome: Outcome,
    /// The generation the host ran before, if any.
    pub from: Option<u64>,
    pub to: u64,
    pub objects_sent: usize,
    pub bytes_sent: u64,
    pub seconds: f64,
    /// The snapshot taken of its data before the switch.
    pub backup: Option<String>,
    pub error: Option<String>,
}

/// Where a host was left after its own steps, for the site-wide rollback.
pub struct Switched {
    pub previous: Option<u64>,
}

/// Makes agent `call` on the host, run `how`.
async fn agent(
    conn: &Connection,
    how: Agent<'_>,
    step: &'static str,
    call: Call<'_>,
    timeout: Duration,
) -> Result<String, SshError> {
    conn.run(step, &call.argv(how, &conn.target.root), b"", timeout)
        .await
}

/// Reads, without writing anything, the host's state with the stored
/// agent, or the inline one if the host lacks it.
pub(super) async fn state(conn: &Connection, stored: &ObjectName) -> Result<HostState, AgentError> {
    let step = "read the host's state";
    let read = |how| agent(conn, how, step, Call::State, STEP_TIMEOUT);
    let out = match read(Agent::Probe(stored)).await {
        Err(SshError::Failed { code, .. }) if AgentExit::from_code(code).is_not_stored() => {
            read(Agent::Inline).await?
        }
        other => other?,
    };
    HostState::parse(out.lines()).map_err(|source| AgentError::Reply {
        host: conn.target.host.clone(),
        step,
        source,
    })
}

impl HostState {
    /// It runs the goal's generation, confirmed, with every object and
    /// secret it needs: nothing to do.
    pub(super) fn reached(&self, goal: &Goal) -> bool {
        self.current == Some(goal.generation)
            && self.confirmed
            && goal.objects.iter().all(|o| self.holds(o))
            && !secrets::stale(&goal.secrets, &self.secrets)
    }
}

/// The objects a host lacks, packed in one compressed stream. It is
/// compressed against `dictionary`: objects the host holds (its current
/// manifest and the current versions of the artifacts that change), whose
/// bytes the host concatenates in the same order to decompress.
fn pack_missing(
    store: &Store,
    missing: &[&ObjectName],
    dictionary: &[ObjectName],
) -> Result<Vec<u8>, PackingError> {
    let mut entries = Vec::new();
    for object in missing {
        let contents = store.read(object)?;
        entries.push(Entry {
            path: object.to_string(),
            contents,
            mode: 0o444,
        });
    }
    let tar = pack::tar(&entries)?;
    if dictionary.is_empty() {
        return Ok(pack::zstd(&tar)?);
    }
    let mut dict = Vec::new();
    for object in dictionary {
        dict.extend(store.read(object)?);
    }
    let compress = || -> std::io::Result<Vec<u8>> {
        use zstd::zstd_safe::CParameter;
        let mut compressor = zstd::bulk::Compressor::with_dictionary(pack::ZSTD_LEVEL, &dict)?;
        compressor.set_parameter(CParameter::ChecksumFlag(true))?;
        compressor.compress(&tar)
    };
    compress().map_err(PackingError::Compress)
}

/// The objects both sides hold that a stream of `missing` compresses best
/// against: the host's current manifest, then the versions it holds now of
/// the artifacts in `missing`. Uncompressed objects only (a compressed one
/// shares little with its next version), within DICTIONARY_LIMIT. The
/// manifest comes first: the dictionary must not start with zstd's
/// dictionary magic, and JSON starts with `{`.
fn dictionary(store: &Store, host: &HostState, missing: &[&ObjectName]) -> Vec<ObjectName> {
    let usable = |o: &ObjectName| host.holds(o) && store.contains(o) && !o.name().ends_with(".zst");
    let Some(current) = host
        .manifest
        .as_deref()
        .and_then(|m| m.parse::<ObjectName>().ok())
        .filter(|m| usable(m))
    else {
        return Vec::new();
    };
    let Ok(manifest) = read_json::<HostManifest>(store, &current) else {
        return Vec::new();
    };
    let mut chosen = vec![current];
    for object in missing {
        if let Some(old) = manifest
            .artifacts
            .iter()
            .map(|a| &a.object)
            .find(|old| old.name() == object.name() && usable(old))
        {
            chosen.push(old.clone());
        }
    }
    let mut size = 0;
    chosen
        .into_iter()
        .take_while(|o| {
            size += std::fs::metadata(store.path(o)).map_or(usize::MAX / 2, |m| m.len() as usize);
            size <= DICTIONARY_LIMIT
        })
        .collect()
}

/// What the read-only look at a host before the deploy found.
pub enum Preflight {
    /// It runs the goal's generation, confirmed, with every object; the
    /// connection is closed.
    UpToDate { current: Option<u64> },
    /// It needs the deploy.
    Needed(Checked),
}

/// A host the preflight found work for.
pub struct Checked {
    conn: Connection,
    /// It holds this version of the agent.
    agent_stored: bool,
}

impl Checked {
    /// Leaves the host untouched.
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Connects and reads the host's state without writing anything: the
/// site-wide check that every host is reachable, presents its pinned key
/// and has the prerequisites, before any host is touched.
pub async fn preflight(
    client: &Client,
    target: &Target,
    goal: &Goal,
) -> Result<Preflight, HostError> {
    let conn = client.connect(target).await?;
    let state = match state(&conn, &goal.agent).await {
        Ok(state) => state,
        Err(e) => {
            conn.close().await;
            return Err(e.into());
        }
    };
    if state.reached(goal) {
        conn.close().await;
        Ok(Preflight::UpToDate {
            current: state.current,
        })
    } else {
        Ok(Preflight::Needed(Checked {
            agent_stored: state.holds(&goal.agent),
            conn,
        }))
    }
}

/// One host's part of a run: whom to reach, what to bring it to, and how.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub client: &'a Client,
    pub store: &'a Store,
    pub target: &'a Target,
    pub goal: &'a Goal,
    pub mode: super::Mode,
    pub confirm_timeout: Duration,
    /// Who holds the host lock, as the refusal of a second deploy names it.
    pub owner: &'a str,
    /// Where to back up the host's data before switching it, if anywhere.
    pub backup: Option<BackupRun<'a>>,
    pub progress: &'a Progress,
}

/// The repository a deploy backs up into, and the deploy's name in the tags.
#[derive(Clone, Copy)]
pub struct BackupRun<'a> {
    pub repo: &'a Repository,
    pub deploy: &'a str,
}

/// Plans (dry run) or runs one host's deploy over the connection its
/// preflight opened (which took `checking`). On success the host runs the
/// goal's generation, confirmed; on failure after the switch it has been
/// rolled back.
pub async fn deploy(
    job: Job<'_>,
    checked: Checked,
    checking: Duration,
) -> (HostReport, Option<Switched>) {
    let Job { target, goal, .. } = job;
    let started = Instant::now();
    let mut report = HostReport {
        host: target.host.clone(),
        outcome: Outcome::Failed,
        from: None,
        to: goal.generation,
        objects_sent: 0,
        bytes_sent: 0,
        seconds: 0.0,
        backup: None,
        error: None,
    };
    let result = steps(job, checked, &mut report).await;
    report.seconds = (checking + started.elapsed()).as_secs_f64();
    match result {
        Ok(switched) => (report, switched),
        Err(e) => {
            report.outcome = Outcome::Failed;
            report.error = Some(e.to_string());
            (report, None)
        }
    }
}

async fn steps(
    job: Job<'_>,
    checked: Checked,
    report: &mut HostReport,
) -> Result<Option<Switched>, HostError> {
    let Job {
        client,
        target,
        goal,
        ..
    } = job;
    let Checked { conn, agent_stored } = checked;
    // The preflight's connection, unless it waited for so long (for a job
    // slot) that its master may be gone.
    let conn = if conn.idle() > REUSE_WITHIN {
        conn.close().await;
        client.connect(target).await?
    } else {
        conn
    };
    if job.mode == super::Mode::DryRun {
        job.progress.step(&target.host, "read the host's state");
        let result = match state(&conn, &goal.agent).await {
            Ok(host) => switch(job, &conn, Agent::Inline, &host, report).await,
            Err(e) => Err(e.into()),
        };
        conn.close().await;
        return result;
    }
    let how = if agent_stored {
        Agent::Stored(&goal.agent)
    } else {
        Agent::Inline
    };
    let result = locked(job, &conn, how, report).await;
    conn.close().await;
    result
}

/// Takes the host lock (and with it the host's state), runs the switch, and
/// releases the lock, asking the host to collect old generations after a
/// confirmed switch.
async fn locked(
    job: Job<'_>,
    conn: &Connection,
    how: Agent<'_>,
    report: &mut HostReport,
) -> Result<Option<Switched>, HostError> {
    let Job {
        target,
        goal,
        owner,
        ..
    } = job;
    job.progress.step(&target.host, "take the host lock");
    let (mut lock, host) = take_lock(conn, how, owner).await?;
    let result = switch(job, conn, how, &host, report).await;
    if matches!(report.outcome, Outcome::Switched) {
        lock.tell(
            &Tell::Gc {
                keep: HOST_KEEP,
                agent: &goal.agent,
            }
            .to_string(),
        )
        .await;
    }
    lock.release().await;
    result
}
/// Sends what the host lacks (with the agent `how` the host can run
/// before it has the stored one), switches and confirms.
async fn switch(
    job: Job<'_>,
    conn: &Connection,
    how: Agent<'_>,
    host_state: &HostState,
    report: &mut HostReport,
) -> Result<Option<Switched>, HostError> {
    let Job {
        client,
        store,
        target,
        goal,
        confirm_timeout,
        owner,
        ..
    } = job;
    let stored = Agent::Stored(&goal.agent);
    report.from = host_state.current;
    let missing: Vec<&ObjectName> = goal
        .objects
        .iter()
        .filter(|o| !host_state.holds(o))
        .collect();
    let secrets_stale = secrets::stale(&goal.secrets, &host_state.secrets);
    if host_state.reached(goal) {
        report.outcome = Outcome::UpToDate;
        return Ok(None);
    }
    let dictionary = dictionary(store, host_state, &missing);
    let stream = if missing.is_empty() {
        Vec::new()
    } else {
        pack_missing(store, &missing, &dictionary).map_err(|source| HostError::Pack {
            host: target.host.clone(),
            source,
        })?
    };
    report.objects_sent = missing.len();
    report.bytes_sent = stream.len() as u64;
    if job.mode == super::Mode::DryRun {
        report.outcome = Outcome::Planned;
        return Ok(None);
    }
    let generation = goal.generation;
    let manifest = &goal.manifest;
    if host_state.confirmed
        && missing.is_empty()
        && !secrets_stale
        && host_state.manifest == Some(manifest.to_string())
    {
        // Same artifacts under a new number, on a host that runs them
        // confirmed: nothing to activate.
        job.progress.step(&target.host, "record the generation");
        agent(
            conn,
            stored,
            "record the generation",
            Call::Relabel {
                owner,
                generation,
                manifest,
            },
            STEP_TIMEOUT,
        )
        .await?;
        report.outcome = Outcome::Unchanged;
        return Ok(Some(Switched {
            previous: host_state.current,
        }));
    }
    if !stream.is_empty() {
        job.progress.step(&target.host, "receive objects");
        let total = stream.len() as u64;
        let receive = Call::Receive {
            owner,
            dictionary: &dictionary,
        };
        let argv = receive.argv(how, &target.root);
        conn.run_reporting("receive objects", &argv, &stream, STEP_TIMEOUT, &|sent| {
            job.progress.sent(&target.host, sent, total)
        })
        .await?;
    }
    if let Some(run) = job.backup {
        job.progress.step(&target.host, "back up data");
        report.backup =
            back_up_current(store, conn, stored, owner, host_state, run, job.progress).await?;
    }
    // Before activation, which may start services that read them.
    if secrets_stale {
        job.progress.step(&target.host, "deliver secrets");
        secrets::send(conn, stored, owner, &goal.secrets).await?;
    }
    // Resuming a switch to this generation whose deploy died: "previous" is
    // what that switch would have returned to.
    let previous = match host_state.pending {
        Some((n, before))
            if host_state.current == Some(goal.generation) && n == goal.generation =>
        {
            before
        }
        _ => host_state.current,
    };
    job.progress.step(&target.host, "switch and activate");
    let switched = agent(
        conn,
        stored,
        "switch and activate",
        Call::Switch {
            owner,
            generation,
            manifest,
            confirm_within: confirm_timeout,
            agent: &goal.agent,
        },
        SWITCH_TIMEOUT,
    )
    .await;
    if let Err(source) = switched {
        let undone = roll_back(client, Some(conn), target, goal, previous).await;
        return Err(HostError::Switch {
            host: target.host.clone(),
            source,
            undone,
        });
    }
    // A new connection, not a channel of the old one: it must get through
    // whatever the new generation's firewall allows.
    job.progress
        .step(&target.host, "confirm over a new connection");
    let confirmed = async {
        let fresh = client.connect(target).await?;
        let out = agent(
            &fresh,
            stored,
            "confirm",
            Call::Confirm { generation },
            STEP_TIMEOUT,
        )
        .await;
        fresh.close().await;
        out
    };
    if let Err(source) = confirmed.await {
        // The established connection usually survives a firewall that
        // refuses new ones: roll back over it now. If it is gone too, the
        // host's watchdog rolls back by itself.
        let undone = roll_back(client, Some(conn), target, goal, previous).await;
        return Err(HostError::Confirm {
            source,
            undone: undone.map_or(
                Undone::Watchdog {
                    previous,
                    secs: confirm_timeout.as_secs(),
                },
                Undone::Said,
            ),
        });
    }
    report.outcome = Outcome::Switched;
    Ok(Some(Switched { previous }))
}

/// Backs up the data the host's current generation declares, services
/// stopped; None when it runs nothing yet or keeps no data.
pub async fn back_up_current(
    store: &Store,
    conn: &Connection,
    how: Agent<'_>,
    owner: &str,
    host_state: &HostState,
    run: BackupRun<'_>,
    progress: &Progress,
) -> Result<Option<String>, HostError> {
    let host = &conn.target.host;
    let (Some(current), Some(manifest)) = (host_state.current, &host_state.manifest) else {
        return Ok(None);
    };
    let read = || -> Result<HostManifest, ManifestError> {
        Ok(read_json(store, &manifest.parse::<ObjectName>()?)?)
    };
    let manifest = read().map_err(|source| HostError::BackupManifest {
        host: host.clone(),
        generation: current,
        source,
    })?;
    if manifest.data.is_empty() {
        return Ok(None);
    }
    progress.note(&format!(
        "{host}: backing up {} (its services are stopped during the backup)",
        manifest.data.join(", ")
    ));
    let tags = Tags {
        site: manifest.site.clone(),
        host: host.clone(),
        generation: current,
        deploy: run.deploy.to_string(),
    };
    let taken = backup::back_up(conn, how, owner, run.repo, tags, &manifest.data)
        .await
        .map_err(|source| HostError::Backup {
            host: host.clone(),
            source,
        })?;
    progress.note(&format!(
        "{host}: backup {} of generation {current}: {} bytes, {} added",
        taken.id, taken.size, taken.added
    ));
    Ok(Some(taken.id))
}

/// Runs `work` on the host with its lock held (named `owner`) over a new
/// connection, given the host's state and the agent it can run: the steps
/// of `sov backup` and `sov restore` that are not a switch.
pub async fn with_lock<T>(
    client: &Client,
    target: &Target,
    owner: &str,
    agent: &ObjectName,
    work: impl AsyncFnOnce(&Connection, Agent<'_>, &HostState) -> Result<T, HostError>,
) -> Result<T, HostError> {
    let conn = client.connect(target).await?;
    let result = match take_lock(&conn, Agent::Inline, owner).await {
        Ok((lock, host)) => {
            let how = if host.holds(agent) {
                Agent::Stored(agent)
            } else {
                Agent::Inline
            };
            let result = work(&conn, how, &host).await;
            lock.release().await;
            result
        }
        Err(e) => Err(e),
    };
    conn.close().await;
    result
}

/// Takes the host lock for `owner` (held until the returned `Held` is
/// released or the connection ends) and, with it, the host's state.
async fn take_lock<'c>(
    conn: &'c Connection,
    how: Agent<'_>,
    owner: &str,
) -> Result<(Held<'c>, HostState), HostError> {
    let step = "take the host lock";
    let argv = Call::HoldLock { owner }.argv(how, &conn.target.root);
    match conn.hold(step, &argv, END, LOCK_TIMEOUT).await {
        Ok(lock) => match HostState::parse_locked(&lock.lines) {
            Ok(host) => Ok((lock, host)),
            Err(source) => {
                lock.release().await;
                Err(AgentError::Reply {
                    host: conn.target.host.clone(),
                    step,
                    source,
                }
                .into())
            }
        },
        Err(SshError::Failed { code, stderr, .. })
            if AgentExit::from_code(code).is_locked_by_another() =>
        {
            Err(HostError::Locked {
                host: conn.target.host.clone(),
                holder: lock_holder(&stderr).to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Puts the host back on `previous` now, over `conn` or a new connection;
/// best effort: if the host cannot be reached, its watchdog does it.
/// Returns what the host said it did.
pub async fn roll_back(
    client: &Client,
    conn: Option<&Connection>,
    target: &Target,
    goal: &Goal,
    previous: Option<u64>,
) -> Option<String> {
    let run = |c| {
        agent(
            c,
            Agent::Stored(&goal.agent),
            "roll back",
            Call::Rollback {
                generation: goal.generation,
                previous,
            },
            SWITCH_TIMEOUT,
        )
    };
    let said = match conn {
        Some(c) => run(c).await,
        None => {
            let fresh = client.connect(target).await.ok()?;
            let said = run(&fresh).await;
            fresh.close().await;
            said
        }
    };
    said.ok().map(|s| s.trim().to_string())
}
