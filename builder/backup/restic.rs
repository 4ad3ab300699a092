//! The restic process: one repository per site, its password handed over
//! on an inherited pipe (`--password-file /dev/fd/N`), never on a command
//! line, in the environment or in a file.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Deserialize;

use super::BackupError;
use crate::secrets::SecretValue;

/// A site's restic repository and the password that opens it.
#[derive(Debug, Clone)]
pub struct Restic {
    pub repo: PathBuf,
    password: Arc<SecretValue>,
}

/// A snapshot as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ResticSnapshot {
    pub id: String,
    pub short_id: String,
    pub time: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The summary line of `restic backup --json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BackupSummary {
    pub snapshot_id: String,
    #[serde(default)]
    pub data_added: u64,
    #[serde(default)]
    pub total_bytes_processed: u64,
}

/// A restic child whose stdin or stdout sov connects elsewhere. What it
/// prints meanwhile is read as it comes: a pipe nobody reads fills up
/// (64 KiB), and restic, blocked writing to it, would stop reading its
/// stdin and the host's stream with it, for good.
pub struct Running {
    pub child: Child,
    what: &'static str,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    /// Waits for it; its stdout is the answer.
    pub fn finish(mut self) -> Result<Output, BackupError> {
        let what = self.what;
        let status = self.child.wait().map_err(|e| BackupError::Restic {
            what,
            message: e.to_string(),
        })?;
        let collect = |reader: Option<JoinHandle<Vec<u8>>>| {
            reader.and_then(|r| r.join().ok()).unwrap_or_default()
        };
        let out = Output {
            status,
            stdout: collect(self.stdout.take()),
            stderr: collect(self.stderr.take()),
        };
        if out.status.success() {
            Ok(out)
        } else {
            Err(failed(what, &out))
        }
    }
}

/// Starts `cmd` (stdout and stderr piped) with the `end` the caller joins
/// elsewhere handed back, and the other outputs read as they come.
fn spawn(
    mut cmd: Command,
    what: &'static str,
    end: End,
) -> Result<(Running, OwnedFd), BackupError> {
    if end == End::Input {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(what, e))?;
    let fd = match end {
        End::Input => child.stdin.take().map(OwnedFd::from),
        End::Output => child.stdout.take().map(OwnedFd::from),
    }
    .ok_or(BackupError::Restic {
        what,
        message: "no pipe to restic".into(),
    })?;
    let running = Running {
        stdout: drain(child.stdout.take()),
        stderr: drain(child.stderr.take()),
        child,
        what,
    };
    Ok((running, fd))
}

/// Reads `from` to its end on a thread of its own.
fn drain(from: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    let mut from = from?;
    Some(std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    }))
}

impl Restic {
    pub fn new(repo: PathBuf, password: SecretValue) -> Restic {
        Restic {
            repo,
            password: Arc::new(password),
        }
    }

    /// A restic command on this repository, with the password on a pipe the
    /// child inherits. The pipe's read end must live until the child has
    /// started: it is returned with the command.
    fn command(&self, args: &[&str]) -> Result<(Command, OwnedFd), BackupError> {
        let io = |e: rustix::io::Errno| BackupError::Restic {
            what: "pass the password",
            message: e.to_string(),
        };
        let (read, write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io)?;
        // A password longer than the pipe's buffer (64 KiB) would block here.
        let mut writer = std::fs::File::from(write);
        writer
            .write_all(self.password.expose())
            .map_err(|e| BackupError::Restic {
                what: "pass the password",
                message: e.to_string(),
            })?;
        drop(writer);
        // Only the read end crosses exec.
        rustix::io::fcntl_setfd(&read, rustix::io::FdFlags::empty()).map_err(io)?;
        let mut cmd = Command::new("restic");
        cmd.arg("--repo")
            .arg(&self.repo)
            .arg("--password-file")
            .arg(format!("/dev/fd/{}", read.as_raw_fd()))
            .arg("--no-cache")
            .args(args)
            .env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_PASSWORD_FILE")
            .env_remove("RESTIC_PASSWORD_COMMAND")
            .env_remove("RESTIC_REPOSITORY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok((cmd, read))
    }

    /// Runs restic to the end and returns its stdout.
    pub fn run(&self, what: &'static str, args: &[&str]) -> Result<Vec<u8>, BackupError> {
        let (mut cmd, pipe) = self.command(args)?;
        let out = cmd.output().map_err(|e| spawn_error(what, e))?;
        drop(pipe);
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(failed(what, &out))
        }
    }

    /// Starts restic with its stdin (`Input`) or stdout (`Output`) handed
    /// to the caller, to be joined to an SSH stream.
    pub fn start(
        &self,
        what: &'static str,
        args: &[&str],
        end: End,
    ) -> Result<(Running, OwnedFd), BackupError> {
        let (cmd, pipe) = self.command(args)?;
        let started = spawn(cmd, what, end);
        drop(pipe);
        started
    }

    /// Creates the repository unless it exists, or else lists the
    /// snapshots tagged `site_tag`: either proves the password opens it.
    /// restic derives the key from the password once per run (scrypt,
    /// about half a second), so a listing that doubles as the proof is one
    /// run fewer for every command that needs both.
    pub fn open_or_init(&self, site_tag: &str) -> Result<Vec<ResticSnapshot>, BackupError> {
        if self.repo.join("config").exists() {
            return self.snapshots(site_tag);
        }
        if let Some(parent) = self.repo.parent() {
            std::fs::create_dir_all(parent).map_err(|source| BackupError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        self.run("create the repository", &["init"])?;
        Ok(Vec::new())
    }

    pub fn snapshots(&self, site_tag: &str) -> Result<Vec<ResticSnapshot>, BackupError> {
        let out = self.run(
            "list snapshots",
            &["snapshots", "--json", "--tag", site_tag],
        )?;
        serde_json::from_slice(&out).map_err(|e| BackupError::Restic {
            what: "list snapshots",
            message: format!("unexpected output: {e}"),
        })
    }
}

/// Which end of restic sov connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// sov feeds restic's stdin (`backup --stdin`).
    Input,
    /// sov takes restic's stdout (`dump`).
    Output,
}

/// Whether restic can be run at all.
pub fn available() -> Result<(), BackupError> {
    Command::new("restic")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|_| ())
        .map_err(|e| spawn_error("run", e))
}

/// The summary of `restic backup --json`: its last line.
pub fn summary(stdout: &[u8]) -> Option<BackupSummary> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter(|v| v["message_type"] == "summary")
        .filter_map(|v| serde_json::from_value(v).ok())
        .next_back()
}

/// The ids of the snapshots `restic forget --json` kept: the groups it
/// prints first (prune's progress may follow as text); None if it printed
/// no groups.
pub fn kept(stdout: &[u8]) -> Option<BTreeSet<String>> {
    #[derive(Deserialize)]
    struct Group {
        #[serde(default)]
        keep: Option<Vec<ResticSnapshot>>,
    }
    let groups: Vec<Group> = serde_json::Deserializer::from_slice(stdout)
        .into_iter()
        .next()?
        .ok()?;
    Some(
        groups
            .into_iter()
            .flat_map(|g| g.keep.unwrap_or_default())
            .map(|s| s.id)
            .collect(),
    )
}

fn spawn_error(what: &'static str, e: std::io::Error) -> BackupError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BackupError::NoRestic
    } else {
        BackupError::Restic {
            what,
            message: e.to_string(),
        }
    }
}

fn failed(what: &'static str, out: &Output) -> BackupError {
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.contains("wrong password") {
        return BackupError::WrongPassword;
    }
    BackupError::Restic {
        what,
        message: if said.is_empty() {
            format!("exit {}", out.status)
        } else {
            said
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_output_names_the_snapshots_kept() {
        let said = br#"[{"tags":null,"host":"h","paths":null,"keep":[{"time":"t","hostname":"h","id":"9e74","short_id":"9e"}],"remove":[{"time":"t","hostname":"h","id":"1ccb","short_id":"1c"}]},{"host":"g","keep":[{"time":"t","hostname":"g","id":"77aa","short_id":"77"}],"remove":null}]
loading indexes...
this removes:          0 b
"#;
        let ids: Vec<String> = kept(said).unwrap().into_iter().collect();
        assert_eq!(ids, ["77aa", "9e74"]);
        assert_eq!(kept(b"[]\n").unwrap().len(), 0);
        assert!(kept(b"loading indexes...\n").is_none());
    }

    /// A child that prints more than a pipe holds before it reads its
    /// input (restic's progress lines during a long backup) must not
    /// stall the stream sov feeds it.
    #[test]
    fn a_child_that_prints_a_lot_keeps_reading_its_input() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; wc -c",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let (running, input) = spawn(cmd, "test", End::Input).unwrap();
        let mut input = std::fs::File::from(input);
        input.write_all(&vec![b'x'; 1 << 20]).unwrap();
        drop(input);
        let out = running.finish().unwrap();
        assert_eq!(out.stderr.len(), 1_000_000);
        assert!(out.stdout.ends_with(b"1048576\n"));
    }
}
