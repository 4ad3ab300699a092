//! A host's data to and from the site's restic repository: the agent's tar
//! stream joined to restic's stdin (backup) or stdout (restore) through
//! SSH, so that no full copy is made on either side and memory stays bounded.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::agent::{Agent, Call, Tell, END, SWITCH_TIMEOUT};
use super::split::{self, SplitError};
use super::ssh::{Connection, Held, SshError};
use crate::backup::restic::{self, End, Running};
use crate::backup::{Backup, BackupError, Repository, Tags, Taken};

/// A backup or restore streams the host's data: allow for a lot of it.
const STREAM_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// Extractors a restore runs side by side on the host.
const PARTS: usize = 2;
/// The pipe to each (Linux's default limit for an unprivileged process).
const PIPE_SIZE: usize = 1 << 20;

/// A backup or restore stream that failed, and why.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{host}: {source}")]
    Restic {
        host: String,
        #[source]
        source: BackupError,
    },
    #[error("{host}: {source}")]
    Task {
        host: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("{source} (the host's services were started again)")]
    Broken {
        #[source]
        source: SshError,
    },
    #[error("{host}: restic reported no snapshot")]
    NoSnapshot { host: String },
    #[error("{host}: restore: {source}")]
    Local {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: {source}")]
    Split {
        host: String,
        #[source]
        source: SplitError,
    },
    #[error("{host}: restore: telling the host how the streams ended: {source}")]
    Verdict {
        host: String,
        #[source]
        source: std::io::Error,
    },
    /// Every failure of a restore's streams, first the one that broke it.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<StreamError>),
}

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
) -> Result<Taken, StreamError> {
    let host = &conn.target.host;
    let restic = |source| StreamError::Restic {
        host: host.clone(),
        source,
    };
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
        .map_err(restic)?;
    let argv = Call::Backup { owner, paths }.argv(how, &conn.target.root);
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
        .map_err(|source| StreamError::Task {
            host: host.clone(),
            source,
        })?;
    let summary = finished
        .as_ref()
        .ok()
        .and_then(|out| restic::summary(&out.stdout));
    if let Err(source) = streamed {
        if let Some(s) = summary {
            let _ = repo
                .restic
                .run("drop a broken snapshot", &["forget", &s.snapshot_id]);
        }
        return Err(StreamError::Broken { source });
    }
    let summary = summary.ok_or_else(|| match finished {
        Err(e) => restic(e),
        Ok(_) => StreamError::NoSnapshot { host: host.clone() },
    })?;
    let taken = Taken {
        id: summary.snapshot_id,
        tags,
        size: summary.total_bytes_processed,
        added: summary.data_added,
    };
    repo.record(taken.clone()).map_err(restic)?;
    Ok(taken)
}

/// What a restore puts back onto a host.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub repo: &'a Repository,
    pub backup: &'a Backup,
    /// The data paths of the backup's generation.
    pub paths: &'a [String],
}

/// Streams `backup` back onto the host: services stopped, `paths` replaced
/// exactly. restic's stream is dealt out to PARTS extractors side by side
/// (see [`split`]), its directories and hard links unpacked last; the
/// restore keeps the old data until all of it has arrived, and puts it back
/// if anything fails. When `generation` is already current the agent starts
/// the services and checks health; otherwise the switch that follows does.
/// `scratch` is a private folder for the directories' headers; `sent`
/// hears now and then how many bytes of the stream's total arrived.
pub async fn restore(
    conn: &Connection,
    how: Agent<'_>,
    owner: &str,
    source: Source<'_>,
    scratch: &Path,
    sent: impl Fn(u64, u64) + Send + 'static,
) -> Result<(), StreamError> {
    let Source {
        repo,
        backup,
        paths,
    } = source;
    let host = conn.target.host.clone();
    let root = &conn.target.root;
    let local = |source| StreamError::Local {
        host: host.clone(),
        source,
    };
    let last = scratch_file(scratch, &host).map_err(local)?;
    let (readers, mut writers) = part_pipes(PARTS).map_err(local)?;
    let file = format!("/{}.tar", backup.tags.host);
    let (running, output) = repo
        .restic
        .start("read the backup", &["dump", &backup.id, &file], End::Output)
        .map_err(|source| StreamError::Restic {
            host: host.clone(),
            source,
        })?;
    let dumped = |running: Running| {
        let host = host.clone();
        async move {
            match tokio::task::spawn_blocking(move || running.finish()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(StreamError::Restic { host, source }),
                Err(source) => Err(StreamError::Task { host, source }),
            }
        }
    };
    let call = Call::Restore {
        owner,
        generation: backup.tags.generation,
        paths,
    };
    // Services stopped and the old data moved aside.
    let argv = call.argv(how, root);
    let mut main = match conn.hold("restore data", &argv, END, SWITCH_TIMEOUT).await {
        Ok(main) => main,
        Err(e) => {
            // restic stops at the closed pipe.
            drop(output);
            let _ = dumped(running).await;
            return Err(e.into());
        }
    };
    let part_argv = Call::RestorePart { owner }.argv(how, root);
    let parts = readers.into_iter().map(|r| {
        conn.stream(
            "restore data",
            &part_argv,
            openssh::Stdio::from(r),
            openssh::Stdio::null(),
            STREAM_TIMEOUT,
        )
    });
    // The stream's size, as the index knows it, for the progress bar.
    let total = backup.size.unwrap_or(0);
    let splitting = tokio::task::spawn_blocking(move || {
        let mut input = File::from(output);
        let mut last = last;
        let moved = |n: u64| {
            if total > 0 {
                sent(n.min(total), total);
            }
        };
        let dealt = split::split(&mut input, &mut writers, &mut last, &moved);
        (dealt, last)
    });
    let (parts, split) = tokio::join!(join_all(parts.collect()), splitting);
    let dumped = dumped(running).await;
    let (dealt, last) = split.map_err(|source| StreamError::Task {
        host: host.clone(),
        source,
    })?;
    let mut failures: Vec<StreamError> = parts
        .into_iter()
        .filter_map(|p| p.err().map(StreamError::from))
        .collect();
    if let Err(source) = dealt {
        failures.insert(
            0,
            StreamError::Split {
                host: host.clone(),
                source,
            },
        );
    }
    if let Err(e) = dumped {
        failures.insert(0, e);
    }
    let verdict = if failures.is_empty() {
        send_last(&mut main, last).await
    } else {
        main.send(format!("{}\n", Tell::Abort).as_bytes()).await
    };
    if let Err(source) = verdict {
        failures.push(StreamError::Verdict {
            host: host.clone(),
            source,
        });
    }
    let finished = main.finish(conn, "restore data", STREAM_TIMEOUT).await;
    match (failures.is_empty(), finished) {
        (true, Ok(())) => Ok(()),
        (_, finished) => {
            if let Err(e) = finished {
                failures.push(e.into());
            }
            Err(StreamError::Several(failures))
        }
    }
}

/// Tells the host that every part arrived, and sends the directories and
/// hard links (a tar, closed here).
async fn send_last(main: &mut Held<'_>, mut last: File) -> std::io::Result<()> {
    let written = last.stream_position()?;
    last.rewind()?;
    main.send(format!("{}\n", Tell::Ok).as_bytes()).await?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = last.read(&mut buf)?;
        if n == 0 {
            break;
        }
        main.send(&buf[..n]).await?;
    }
    main.send(&split::end_of_archive(written)).await
}

/// `n` pipes to the parts: their read ends (for the SSH channels) and
/// write ends. Close-on-exec: a copy of a part's read end in another child
/// (restic, another part's ssh) would keep its pipe open after its host
/// side died, and the split would wait on it for good.
fn part_pipes(n: usize) -> std::io::Result<(Vec<OwnedFd>, Vec<File>)> {
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..n {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        // Best effort: a larger pipe evens out the parts' pace.
        let _ = rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE);
        readers.push(r);
        writers.push(File::from(w));
    }
    Ok((readers, writers))
}

/// An unnamed file in `dir`: gone with its last descriptor.
fn scratch_file(dir: &Path, host: &str) -> std::io::Result<File> {
    let path = dir.join(format!("restore-{host}.tar"));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Runs every future to its end, side by side: a part's command must go on
/// (its stderr read) while another is waited for.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(done) => *output = Some(done),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A child started while a restore runs (restic, the other part's ssh)
    /// must not hold a part's pipe open.
    #[test]
    fn part_pipes_stay_out_of_other_children() {
        let (readers, writers) = part_pipes(2).unwrap();
        let flags = |fd: rustix::fd::BorrowedFd<'_>| rustix::io::fcntl_getfd(fd).unwrap();
        for r in &readers {
            assert!(flags(r.as_fd()).contains(rustix::io::FdFlags::CLOEXEC));
        }
        for w in &writers {
            assert!(flags(w.as_fd()).contains(rustix::io::FdFlags::CLOEXEC));
        }
    }
}
