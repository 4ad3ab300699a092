//! Connections to hosts through OpenSSH, with host keys pinned by the site:
//! `StrictHostKeyChecking=yes` against a known_hosts file sov writes, a
//! timeout on every step, and errors that name the host, the step and what
//! the host said.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::model::values::PublicKey;

/// Seconds a master connection outlives its last channel: a sov that is
/// killed leaves none behind for long. A connection idle for longer is gone
/// (see [`Connection::idle`]).
pub const CONTROL_PERSIST_SECS: usize = 15;

/// Where and as whom sov reaches one host.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// The pinned public key line (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    /// sov's state root on the host.
    pub root: String,
}

impl Target {
    /// How a host of the site is reached: its typed address, port, user and
    /// pinned key, so that nothing but an address reaches ssh's command line
    /// and known_hosts.
    pub fn of(h: &crate::model::Host) -> Target {
        Target {
            host: h.name.to_string(),
            address: h.ssh_address(),
            port: h.ssh.port.get(),
            user: h.ssh.user.to_string(),
            host_key: h.ssh.host_key.bare(),
            root: h.ssh.root.to_string(),
        }
    }

    /// The known_hosts line that pins this host's key.
    pub fn known_hosts_line(&self) -> String {
        let key: Vec<&str> = self.host_key.split_whitespace().take(2).collect();
        if self.port == 22 {
            format!("{} {}\n", self.address, key.join(" "))
        } else {
            format!("[{}]:{} {}\n", self.address, self.port, key.join(" "))
        }
    }
}

/// A failed remote step.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}: refused: it presents host key {offered}, but the site pins {expected}; nothing was sent (if the host was re-installed, pin its new key: sov keyscan)")]
    HostKey {
        host: String,
        expected: String,
        offered: String,
    },
    #[error("{host}: cannot connect to {address}: {detail}")]
    Connect {
        host: String,
        address: String,
        detail: String,
    },
    #[error("{host}: {step} failed (exit {}): {stderr}", exit_status(*.code))]
    Failed {
        host: String,
        step: &'static str,
        /// None when a signal ended it.
        code: Option<i32>,
        stderr: String,
    },
    #[error("{host}: {step} did not finish within {secs} s")]
    Timeout {
        host: String,
        step: &'static str,
        secs: u64,
    },
    #[error("{host}: {step}: the connection failed")]
    Transport {
        host: String,
        step: &'static str,
        #[source]
        source: openssh::Error,
    },
}

fn exit_status(code: Option<i32>) -> String {
    code.map_or("by signal".to_string(), |c| c.to_string())
}

/// Options every connection shares.
#[derive(Debug, Clone)]
pub struct Client {
    /// known_hosts made from the site's pinned keys.
    pub known_hosts: PathBuf,
    /// The private key to log in with (ssh's default when None).
    pub identity: Option<PathBuf>,
    /// Where the control sockets live.
    pub control_dir: PathBuf,
    /// The ssh_config every connection reads (see [`write_config`]).
    pub config: PathBuf,
    pub connect_timeout: Duration,
}

/// An open (multiplexed) connection to one host.
pub struct Connection {
    pub target: Target,
    session: Session,
    /// When its last command ended (its master exits CONTROL_PERSIST_SECS later).
    idle_since: Mutex<Instant>,
}

impl Client {
    fn builder(&self, target: &Target) -> SessionBuilder {
        let mut b = SessionBuilder::default();
        b.user(target.user.clone())
            .port(target.port)
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&self.known_hosts)
            .control_directory(&self.control_dir)
            .connect_timeout(self.connect_timeout)
            .server_alive_interval(Duration::from_secs(5))
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(CONTROL_PERSIST_SECS).unwrap_or(NonZeroUsize::MIN),
            ))
            .config_file(&self.config);
        if let Some(identity) = &self.identity {
            b.keyfile(identity);
        }
        b
    }

    /// Opens a new master connection (never reusing another one: a
    /// confirmation must prove that a new connection gets through).
    pub async fn connect(&self, target: &Target) -> Result<Connection, SshError> {
        let session = self
            .builder(target)
            .connect(&target.address)
            .await
            .map_err(|e| {
                let detail = error_chain(&e);
                match offered_key_mismatch(target) {
                    Some((expected, offered)) => SshError::HostKey {
                        host: target.host.clone(),
                        expected,
                        offered,
                    },
                    None => SshError::Connect {
                        host: target.host.clone(),
                        address: target.address.clone(),
                        detail,
                    },
                }
            })?;
        Ok(Connection {
            target: target.clone(),
            session,
            idle_since: Mutex::new(Instant::now()),
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(cause.to_string().trim());
        source = cause.source();
    }
    text
}

impl Connection {
    /// How long no command has run over this connection.
    pub fn idle(&self) -> Duration {
        self.idle_since
            .lock()
            .map_or(Duration::MAX, |since| since.elapsed())
    }

    fn used(&self) {
        if let Ok(mut since) = self.idle_since.lock() {
            *since = Instant::now();
        }
    }

    /// Runs `argv` on the host (each word quoted for the remote shell),
    /// feeding it `stdin`; fails on a non-zero exit or after `timeout`.
    pub async fn run(
        &self,
        step: &'static str,
        argv: &[impl AsRef<str>],
        stdin: &[u8],
        timeout: Duration,
    ) -> Result<String, SshError> {
        self.run_reporting(step, argv, stdin, timeout, &|_| {})
            .await
    }

    /// Like `run`, telling `sent` how many bytes of `stdin` it has written
    /// so far (for a progress bar).
    pub async fn run_reporting(
        &self,
        step: &'static str,
        argv: &[impl AsRef<str>],
        stdin: &[u8],
        timeout: Duration,
        sent: &(dyn Fn(u64) + Sync),
    ) -> Result<String, SshError> {
        let work = async {
            let mut command = self.command(argv, openssh::Stdio::piped(), openssh::Stdio::piped());
            let mut child = command.spawn().await?;
            if let Some(mut input) = child.stdin().take() {
                // A host that exits early closes the pipe; its status says why.
                let mut written = 0;
                for chunk in stdin.chunks(64 * 1024) {
                    if input.write_all(chunk).await.is_err() {
                        break;
                    }
                    written += chunk.len() as u64;
                    sent(written);
                }
                let _ = input.shutdown().await;
            }
            child.wait_with_output().await
        };
        let output = self.finish(step, timeout, work).await?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The remote command `argv` (each word quoted for the remote shell),
    /// its stderr piped for the error message.
    fn command(
        &self,
        argv: &[impl AsRef<str>],
        stdin: openssh::Stdio,
        stdout: openssh::Stdio,
    ) -> openssh::OwningCommand<&Session> {
        let mut command = self.session.command(argv[0].as_ref());
        command
            .args(argv[1..].iter().map(AsRef::as_ref))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(openssh::Stdio::piped());
        command
    }

    /// Waits for a remote command within `timeout`; a non-zero exit is an
    /// error that says what the host said.
    async fn finish(
        &self,
        step: &'static str,
        timeout: Duration,
        work: impl std::future::Future<Output = Result<std::process::Output, openssh::Error>>,
    ) -> Result<std::process::Output, SshError> {
        let host = &self.target.host;
        let output = tokio::time::timeout(timeout, work).await;
        self.used();
        let output = output
            .map_err(|_| SshError::Timeout {
                host: host.clone(),
                step,
                secs: timeout.as_secs(),
            })?
            .map_err(|source| SshError::Transport {
                host: host.clone(),
                step,
                source,
            })?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(failed(host, step, &output))
        }
    }

    /// Starts a long-running command whose stdin sov keeps open (the host
    /// lock) and returns, once it printed the line `end`, the lines before.
    /// A command that ends instead fails with its status and what it said.
    pub async fn hold(
        &self,
        step: &'static str,
        argv: &[impl AsRef<str>],
        end: &str,
        timeout: Duration,
    ) -> Result<Held<'_>, SshError> {
        let host = self.target.host.clone();
        let transport = |source| SshError::Transport {
            host: host.clone(),
            step,
            source,
        };
        let timed_out = || SshError::Timeout {
            host: host.clone(),
            step,
            secs: timeout.as_secs(),
        };
        let mut command = self.command(argv, openssh::Stdio::piped(), openssh::Stdio::piped());
        let mut child = command.spawn().await.map_err(transport)?;
        let stdout = child.stdout().take();
        let read = async {
            let mut lines = Vec::new();
            if let Some(out) = stdout {
                let mut reader = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if line == end {
                        return (lines, true);
                    }
                    lines.push(line);
                }
            }
            (lines, false)
        };
        let (lines, held) = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| timed_out())?;
        self.used();
        if held {
            return Ok(Held { child, lines });
        }
        let mut output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| timed_out())?
            .map_err(transport)?;
        output.stdout = lines.join("\n").into_bytes();
        Err(failed(&host, step, &output))
    }

    /// Runs `argv` on the host with its stdin and stdout joined to local
    /// descriptors (a restic process), so that the data flows between the
    /// two without passing through sov; fails on a non-zero exit or after
    /// `timeout`, with what the host said on stderr.
    pub async fn stream(
        &self,
        step: &'static str,
        argv: &[impl AsRef<str>],
        stdin: openssh::Stdio,
        stdout: openssh::Stdio,
        timeout: Duration,
    ) -> Result<(), SshError> {
        let work = async {
            let mut command = self.command(argv, stdin, stdout);
            let child = command.spawn().await?;
            // Our copies of the descriptors close with the command: the
            // local end sees EOF when the remote one ends.
            drop(command);
            child.wait_with_output().await
        };
        self.finish(step, timeout, work).await.map(|_| ())
    }

    pub async fn close(self) {
        let _ = self.session.close().await;
    }
}

/// A step that failed on the host: its exit status and what it said (on
/// stderr, or else on stdout).
fn failed(host: &str, step: &'static str, output: &std::process::Output) -> SshError {
    let mut said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    }
    SshError::Failed {
        host: host.to_string(),
        step,
        code: output.status.code(),
        stderr: said,
    }
}

/// A remote command kept running until released (its stdin then closes).
pub struct Held<'s> {
    child: openssh::Child<&'s Session>,
    /// What it printed before its end line.
    pub lines: Vec<String>,
}

impl Held<'_> {
    /// Sends the command one line on its stdin; best effort (a command that
    /// is gone has nothing to do with it).
    pub async fn tell(&mut self, line: &str) {
        if let Some(input) = self.child.stdin().as_mut() {
            let _ = input.write_all(format!("{line}\n").as_bytes()).await;
            let _ = input.flush().await;
        }
    }

    /// Writes `bytes` to the command's stdin.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.child.stdin().as_mut() {
            Some(input) => input.write_all(bytes).await,
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Ends the command by closing its stdin, and waits for it.
    pub async fn release(mut self) {
        drop(self.child.stdin().take());
        let _ = self.child.wait().await;
    }

    /// Closes the command's stdin and waits for it to end within
    /// `timeout`; a non-zero exit is an error that says what it said.
    pub async fn finish(
        self,
        conn: &Connection,
        step: &'static str,
        timeout: Duration,
    ) -> Result<(), SshError> {
        conn.finish(step, timeout, self.child.wait_with_output())
            .await
            .map(|_| ())
    }
}

/// Writes the ssh_config of sov's connections. Only the cipher order
/// differs from OpenSSH's defaults: AES-GCM first, which the AES
/// instructions of today's CPUs make cheaper than chacha20-poly1305 for the
/// gigabytes of a backup or restore (a 1 GiB tar through one connection on
/// the benchmark's machine: 1.5-1.7 s against 2.3-2.7 s); a host without
/// it negotiates the next one.
pub fn write_config(path: &Path) -> std::io::Result<()> {
    std::fs::write(
        path,
        "Ciphers ^aes128-gcm@openssh.com,aes256-gcm@openssh.com\n",
    )
}

/// Writes the known_hosts file for a set of targets.
pub fn write_known_hosts(path: &Path, targets: &[Target]) -> std::io::Result<()> {
    let text: String = targets.iter().map(Target::known_hosts_line).collect();
    std::fs::write(path, text)
}

/// The keys a host offers, as `ssh-keyscan` prints them (no trust implied).
pub fn scan(address: &str, port: u16, key_type: Option<&str>) -> Vec<String> {
    let mut command = std::process::Command::new("ssh-keyscan");
    command.args(["-T", "5", "-p", &port.to_string()]);
    if let Some(t) = key_type {
        command.args(["-t", t]);
    }
    let Ok(out) = command
        .arg(address)
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(_, key)| key.to_string()))
        .collect()
}

/// `SHA256:…` of a public key line, as OpenSSH prints fingerprints; the
/// line itself when it does not parse.
fn fingerprint(key: &str) -> String {
    PublicKey::try_from(key.to_string()).map_or_else(|_| key.to_string(), |k| k.fingerprint())
}

/// After a failed connection: does the host offer a key of the pinned type
/// that differs from the pin? Returns (expected, offered) fingerprints.
fn offered_key_mismatch(target: &Target) -> Option<(String, String)> {
    let pinned: Vec<&str> = target.host_key.split_whitespace().take(2).collect();
    let key_type = pinned.first().copied()?;
    let offered = scan(
        &target.address,
        target.port,
        Some(key_type.trim_start_matches("ssh-")),
    );
    let offered = offered.into_iter().find(|k| k.starts_with(key_type))?;
    let offered_parts: Vec<&str> = offered.split_whitespace().take(2).collect();
    (offered_parts != pinned).then(|| (fingerprint(&pinned.join(" ")), fingerprint(&offered)))
}
