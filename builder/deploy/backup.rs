//! A host's data to and from the site's restic repository: the agent's tar
//! stream joined to restic's stdin (backup) or stdout (restore) through
//! SSH, so that no full copy is made on either side and memory stays bounded.

use std::time::Duration;

use super::host::Agent;
use super::ssh::Connection;
use crate::backup::restic::{self, End};
use crate::backup::{Backup, BackupError, Repository, Tags, Taken};

/// A backup or restore streams the host's data: allow for a lot of it.
const STREAM_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Stops the host's services, streams `paths` into a new snapshot tagged
/// `tags`, and starts the services again. A stream that breaks leaves no
/// snapshot behind.
pub async fn back_up(
    conn: &Connection,
    how: Agent<'_>,
    owner: &str,
    repo: &Repository,
    tags: Tags,
    paths: &[String],
) -> Result<Taken, String> {
    let host = &conn.target.host;
    let filename = format!("{}.tar", tags.host);
    let restic_tags = tags.to_restic();
    // --quiet: the summary only, not a status line 60 times a second.
    let mut args = vec![
        "backup",
        "--json",
        "--quiet",
        "--stdin",
        "--stdin-filename",
        &filename,
        "--host",
        &tags.host,
    ];
    for t in &restic_tags {
        args.extend(["--tag", t.as_str()]);
    }
    let (running, input) = repo
        .restic
        .start("back up", &args, End::Input)
        .map_err(|e| format!("{host}: {e}"))?;
    let mut args = vec![owner];
    args.extend(paths.iter().map(String::as_str));
    let argv = how.argv("backup", &conn.target.root, &args);
    let streamed = conn
        .stream(
            "back up data",
            &argv,
            openssh::Stdio::null(),
            openssh::Stdio::from(input),
            STREAM_TIMEOUT,
        )
        .await;
    if streamed.is_err() {
        // restic must not keep a truncated stream as a snapshot: interrupted,
        // it stops without saving one and removes its lock.
        let pid = rustix::process::Pid::from_child(&running.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
    let finished = tokio::task::spawn_blocking(move || running.finish())
        .await
        .map_err(|e| format!("{host}: backup: {e}"))?;
    let summary = finished
        .as_ref()
        .ok()
        .and_then(|out| restic::summary(&out.stdout));
    if let Err(e) = streamed {
        if let Some(s) = summary {
            let _ = repo
                .restic
                .run("drop a broken snapshot", &["forget", &s.snapshot_id]);
        }
        return Err(format!("{e} (the host's services were started again)"));
    }
    let summary = summary.ok_or_else(|| match finished {
        Err(e) => format!("{host}: {e}"),
        Ok(_) => format!("{host}: restic reported no snapshot"),
    })?;
    let taken = Taken {
        id: summary.snapshot_id,
        tags,
        size: summary.total_bytes_processed,
        added: summary.data_added,
    };
    repo.record(taken.clone())
        .map_err(|e: BackupError| format!("{host}: {e}"))?;
    Ok(taken)
}

/// Streams `backup` back onto the host: services stopped, `paths` replaced
/// exactly. When `generation` is already current the agent starts the
/// services and checks health; otherwise the switch that follows does.
pub async fn restore(
    conn: &Connection,
    how: Agent<'_>,
    owner: &str,
    repo: &Repository,
    backup: &Backup,
    paths: &[String],
) -> Result<(), String> {
    let host = &conn.target.host;
    let file = format!("/{}.tar", backup.tags.host);
    let (running, output) = repo
        .restic
        .start("read the backup", &["dump", &backup.id, &file], End::Output)
        .map_err(|e| format!("{host}: {e}"))?;
    let generation = backup.tags.generation.to_string();
    let mut args = vec![owner, &generation];
    args.extend(paths.iter().map(String::as_str));
    let argv = how.argv("restore", &conn.target.root, &args);
    let streamed = conn
        .stream(
            "restore data",
            &argv,
            openssh::Stdio::from(output),
            openssh::Stdio::null(),
            STREAM_TIMEOUT,
        )
        .await;
    let finished = tokio::task::spawn_blocking(move || running.finish())
        .await
        .map_err(|e| format!("{host}: restore: {e}"))?;
    finished.map_err(|e| format!("{host}: {e}"))?;
    streamed.map_err(|e| e.to_string())
}
