//! One host's part of a deploy: lock, learn what it holds, send what it
//! lacks, switch, and confirm over a new connection.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::backup;
use super::progress::Progress;
use super::secrets::{self, Delivery};
use super::ssh::{Client, Connection, SshError, Target};
use super::AGENT;
use crate::backup::{Repository, Tags};
use crate::build::gc::read_json;
use crate::build::manifest::HostManifest;
use crate::pack::{self, Entry};
use crate::store::{ObjectName, Store};

/// Every remote step but the switch is quick; the switch runs activation
/// and health checks.
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const SWITCH_TIMEOUT: Duration = Duration::from_secs(300);
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

pub(super) fn agent_argv<'a>(command: &'a str, root: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["sh", "-c", AGENT, "sov-agent", command, root];
    argv.extend_from_slice(args);
    argv
}

/// The host's answer to `state`.
pub(super) struct HostState {
    pub(super) current: Option<u64>,
    /// The host manifest object of the current generation.
    pub(super) manifest: Option<String>,
    objects: BTreeSet<String>,
    /// `confirmed/<current>` exists: the current generation passed its
    /// checks and was confirmed over a new connection.
    pub(super) confirmed: bool,
    /// An unconfirmed switch: (generation, the generation before it).
    pending: Option<(u64, Option<u64>)>,
    /// The secrets it holds: name to blake3 of the value.
    secrets: BTreeMap<String, String>,
}

/// Reads, without writing anything, what the host runs and holds.
pub(super) async fn state(conn: &Connection) -> Result<HostState, SshError> {
    let root = conn.target.root.as_str();
    let out = conn
        .run(
            "read the host's state",
            &agent_argv("state", root, &[secrets::state_arg()]),
            b"",
            STEP_TIMEOUT,
        )
        .await?;
    let mut state = HostState {
        current: None,
        manifest: None,
        objects: BTreeSet::new(),
        confirmed: false,
        pending: None,
        secrets: BTreeMap::new(),
    };
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("current ") {
            state.current = n.trim().parse().ok();
        } else if let Some(m) = line.strip_prefix("manifest ") {
            state.manifest = Some(m.trim().to_string()).filter(|m| !m.is_empty());
        } else if let Some(c) = line.strip_prefix("confirmed ") {
            state.confirmed = c.trim() == "yes";
        } else if let Some(p) = line.strip_prefix("pending ") {
            let mut words = p.split_whitespace();
            if let Some(Ok(n)) = words.next().map(str::parse) {
                state.pending = Some((n, words.next().and_then(|w| w.parse().ok())));
            }
        } else if let Some(o) = line.strip_prefix("object ") {
            state.objects.insert(o.to_string());
        } else if let Some((name, hash)) =
            line.strip_prefix("secret ").and_then(|s| s.split_once(' '))
        {
            state
                .secrets
                .insert(name.to_string(), hash.trim().to_string());
        }
    }
    Ok(state)
}

/// The objects a host lacks, packed in one compressed stream.
fn pack_missing(store: &Store, missing: &[&ObjectName]) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    for object in missing {
        let contents = store.read(object).map_err(|e| e.to_string())?;
        entries.push(Entry {
            path: object.to_string(),
            contents,
            mode: 0o444,
        });
    }
    let tar = pack::tar(&entries).map_err(|e| e.to_string())?;
    pack::zstd(&tar).map_err(|e| e.to_string())
}

/// What the read-only look at a host before the deploy found.
pub enum Preflight {
    /// It runs the goal's generation, confirmed, with every object.
    UpToDate { current: Option<u64> },
    /// It needs the deploy.
    Needed,
}

/// Connects and reads the host's state without writing anything: the
/// site-wide check that every host is reachable, presents its pinned key
/// and has the prerequisites, before any host is touched.
pub async fn preflight(
    client: &Client,
    target: &Target,
    goal: &Goal,
) -> Result<(Preflight, Connection), String> {
    let conn = client.connect(target).await.map_err(|e| e.to_string())?;
    let state = match state(&conn).await {
        Ok(state) => state,
        Err(e) => {
            conn.close().await;
            return Err(e.to_string());
        }
    };
    let complete = goal
        .objects
        .iter()
        .all(|o| state.objects.contains(&o.to_string()));
    let found = if state.current == Some(goal.generation)
        && state.confirmed
        && complete
        && !secrets::stale(&goal.secrets, &state.secrets)
    {
        Preflight::UpToDate {
            current: state.current,
        }
    } else {
        Preflight::Needed
    };
    Ok((found, conn))
}

/// Plans (dry run) or runs one host's deploy over the connection its
/// preflight opened. On success the host runs the
/// goal's generation, confirmed; on failure after the switch it has been
/// rolled back.
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

pub async fn deploy(job: Job<'_>, conn: Connection) -> (HostReport, Option<Switched>) {
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
    let result = steps(job, conn, &mut report).await;
    report.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(switched) => (report, switched),
        Err(e) => {
            report.outcome = Outcome::Failed;
            report.error = Some(e);
            (report, None)
        }
    }
}

async fn steps(
    job: Job<'_>,
    conn: Connection,
    report: &mut HostReport,
) -> Result<Option<Switched>, String> {
    let Job { target, owner, .. } = job;
    // The preflight's connection: its read-only look found work to do.
    let root = target.root.as_str();
    let lock = if job.mode == super::Mode::DryRun {
        None
    } else {
        job.progress.step(&target.host, "take the host lock");
        let held = conn
            .hold(
                "take the host lock",
                &agent_argv("hold-lock", root, &[owner]),
                STEP_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
        if held.first_line != "locked" {
            let who = held.first_line.clone();
            held.release().await;
            return Err(format!(
                "{}: another deploy holds the host lock ({who})",
                target.host
            ));
        }
        Some(held)
    };
    let result = switch(job, &conn, report).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    conn.close().await;
    result
}

async fn switch(
    job: Job<'_>,
    conn: &Connection,
    report: &mut HostReport,
) -> Result<Option<Switched>, String> {
    let Job {
        client,
        store,
        target,
        goal,
        confirm_timeout,
        ..
    } = job;
    let root = target.root.as_str();
    job.progress.step(&target.host, "read the host's state");
    let host_state = state(conn).await.map_err(|e| e.to_string())?;
    report.from = host_state.current;
    let missing: Vec<&ObjectName> = goal
        .objects
        .iter()
        .filter(|o| !host_state.objects.contains(&o.to_string()))
        .collect();
    let secrets_stale = secrets::stale(&goal.secrets, &host_state.secrets);
    if host_state.current == Some(goal.generation)
        && host_state.confirmed
        && missing.is_empty()
        && !secrets_stale
    {
        report.outcome = Outcome::UpToDate;
        return Ok(None);
    }
    let stream = if missing.is_empty() {
        Vec::new()
    } else {
        pack_missing(store, &missing)
            .map_err(|e| format!("{}: packing objects: {e}", target.host))?
    };
    report.objects_sent = missing.len();
    report.bytes_sent = stream.len() as u64;
    if job.mode == super::Mode::DryRun {
        report.outcome = Outcome::Planned;
        return Ok(None);
    }
    let generation = goal.generation.to_string();
    let manifest = goal.manifest.to_string();
    if host_state.manifest.as_deref() == Some(manifest.as_str()) && !secrets_stale {
        // Same artifacts under a new number: nothing to activate.
        job.progress.step(&target.host, "record the generation");
        conn.run(
            "record the generation",
            &agent_argv("relabel", root, &[&generation, &manifest]),
            b"",
            STEP_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string())?;
        report.outcome = Outcome::Unchanged;
        return Ok(Some(Switched {
            previous: host_state.current,
        }));
    }
    if !stream.is_empty() {
        job.progress.step(&target.host, "receive objects");
        let total = stream.len() as u64;
        conn.run_reporting(
            "receive objects",
            &agent_argv("receive", root, &[]),
            &stream,
            STEP_TIMEOUT,
            &|sent| job.progress.sent(&target.host, sent, total),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    if let Some(run) = job.backup {
        report.backup = back_up_current(job.store, conn, &host_state, run).await?;
    }
    // Before activation, which may start services that read them.
    if secrets_stale {
        secrets::send(conn, &goal.secrets).await?;
    }
    let timeout = confirm_timeout.as_secs().max(1).to_string();
    let agent = goal.agent.to_string();
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
    let switched = conn
        .run(
            "switch and activate",
            &agent_argv("switch", root, &[&generation, &manifest, &timeout, &agent]),
            b"",
            SWITCH_TIMEOUT,
        )
        .await;
    if let Err(e) = switched {
        roll_back(client, Some(conn), target, goal.generation, previous).await;
        return Err(e.to_string());
    }
    // A new connection, not a channel of the old one: it must get through
    // whatever the new generation's firewall allows.
    job.progress
        .step(&target.host, "confirm over a new connection");
    let confirmed = async {
        let fresh = client.connect(target).await?;
        let out = fresh
            .run(
                "confirm",
                &agent_argv("confirm", root, &[&generation]),
                b"",
                STEP_TIMEOUT,
            )
            .await;
        fresh.close().await;
        out
    };
    if let Err(e) = confirmed.await {
        // The established connection usually survives a firewall that
        // refuses new ones: roll back over it now. If it is gone too, the
        // host's watchdog rolls back by itself.
        roll_back(client, Some(conn), target, goal.generation, previous).await;
        return Err(format!(
            "{e} (the host's watchdog returns it to generation {} within {} s)",
            previous.map_or("none".to_string(), |p| p.to_string()),
            confirm_timeout.as_secs()
        ));
    }
    report.outcome = Outcome::Switched;
    // Best effort: a host that keeps too much is not a failed deploy.
    let keep = HOST_KEEP.to_string();
    job.progress.step(&target.host, "collect old generations");
    if let Err(e) = conn
        .run(
            "collect old generations",
            &agent_argv("gc", root, &[&keep]),
            b"",
            STEP_TIMEOUT,
        )
        .await
    {
        job.progress.note(&format!("{}: warning: {e}", target.host));
    }
    Ok(Some(Switched { previous }))
}

/// Backs up the data the host's current generation declares, services
/// stopped; None when it runs nothing yet or keeps no data.
async fn back_up_current(
    store: &Store,
    conn: &Connection,
    host_state: &HostState,
    run: BackupRun<'_>,
) -> Result<Option<String>, String> {
    let host = &conn.target.host;
    let (Some(current), Some(manifest)) = (host_state.current, &host_state.manifest) else {
        return Ok(None);
    };
    let manifest: HostManifest = manifest
        .parse::<ObjectName>()
        .map_err(|e| e.to_string())
        .and_then(|m| read_json(store, &m).map_err(|e| e.to_string()))
        .map_err(|e| {
            format!("{host}: cannot tell what generation {current} keeps to back it up: {e}")
        })?;
    if manifest.data.is_empty() {
        return Ok(None);
    }
    eprintln!(
        "{host}: backing up {} (its services are stopped during the backup)",
        manifest.data.join(", ")
    );
    let tags = Tags {
        site: manifest.site.clone(),
        host: host.clone(),
        generation: current,
        deploy: run.deploy.to_string(),
    };
    let taken = backup::back_up(conn, run.repo, tags, &manifest.data)
        .await
        .map_err(|e| format!("{host}: backup failed, nothing was switched: {e}"))?;
    eprintln!(
        "{host}: backup {} of generation {current}: {} bytes, {} added",
        &taken.id[..taken.id.len().min(8)],
        taken.size,
        taken.added
    );
    Ok(Some(taken.id))
}

/// Runs `work` on the host with its lock held (named `owner`), over a
/// new connection: the steps of `sov backup` and `sov restore` that are not
/// a switch.
pub async fn locked<T>(
    client: &Client,
    target: &Target,
    owner: &str,
    work: impl AsyncFnOnce(&Connection) -> Result<T, String>,
) -> Result<T, String> {
    let conn = client.connect(target).await.map_err(|e| e.to_string())?;
    let root = target.root.as_str();
    let held = match conn
        .hold(
            "take the host lock",
            &agent_argv("hold-lock", root, &[owner]),
            STEP_TIMEOUT,
        )
        .await
    {
        Ok(held) => held,
        Err(e) => {
            conn.close().await;
            return Err(e.to_string());
        }
    };
    let result = if held.first_line == "locked" {
        work(&conn).await
    } else {
        Err(format!(
            "{}: another deploy holds the host lock ({})",
            target.host, held.first_line
        ))
    };
    held.release().await;
    conn.close().await;
    result
}

/// `sov backup` of one host: what its current generation keeps, services
/// stopped during the backup; None when it keeps nothing.
pub async fn backup_only(
    conn: &Connection,
    store: &Store,
    run: BackupRun<'_>,
) -> Result<Option<String>, String> {
    let host_state = state(conn).await.map_err(|e| e.to_string())?;
    back_up_current(store, conn, &host_state, run).await
}

/// Puts the host back on `previous` now, over `conn` or a new connection;
/// best effort: if the host cannot be reached, its watchdog does it.
pub async fn roll_back(
    client: &Client,
    conn: Option<&Connection>,
    target: &Target,
    generation: u64,
    previous: Option<u64>,
) -> bool {
    let generation = generation.to_string();
    let previous = previous.map(|p| p.to_string()).unwrap_or_default();
    let argv = agent_argv("rollback", &target.root, &[&generation, &previous]);
    match conn {
        Some(c) => c.run("roll back", &argv, b"", SWITCH_TIMEOUT).await.is_ok(),
        None => match client.connect(target).await {
            Ok(fresh) => {
                let ok = fresh
                    .run("roll back", &argv, b"", SWITCH_TIMEOUT)
                    .await
                    .is_ok();
                fresh.close().await;
                ok
            }
            Err(_) => false,
        },
    }
}
