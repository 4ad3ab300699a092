//! The protocol between sov and the host agent (`agent.sh`), both
//! directions in one place: the calls sov makes as argv, the lines the
//! agent prints and sov reads, the lines sov writes to a running agent, and
//! the exit statuses sov tells apart. Each unit test pins one side of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use super::ssh::SshError;
use super::AGENT;
use crate::store::ObjectName;

/// Every remote step but the switch is quick; the switch runs activation
/// and health checks. Taking the lock may wait for an earlier deploy's
/// collection and for a step of a deploy that died (50 s each on the host).
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const SWITCH_TIMEOUT: Duration = Duration::from_secs(300);
/// The line after which `hold-lock` and `restore` wait on their stdin.
pub(super) const END: &str = "end";
/// Runs the stored agent `$0` if the host has it, else exits with
/// [`AgentExit::NotStored`].
const PROBE: &str = r#"[ -f "$0" ] || exit 97; exec sh "$0" "$@""#;

/// How a host runs the agent.
#[derive(Debug, Clone, Copy)]
pub(super) enum Agent<'a> {
    /// Its copy in the store.
    Stored(&'a ObjectName),
    /// The stored copy if there is one, else fail with [`AgentExit::NotStored`].
    Probe(&'a ObjectName),
    /// Sent on the command line: the host lacks this version of it.
    Inline,
}

/// One call of the agent, as `agent.sh` reads its arguments.
#[derive(Debug, Clone)]
pub(super) enum Call<'a> {
    /// Read-only: the state lines.
    State,
    /// Hold the host lock for `owner` until stdin closes.
    HoldLock { owner: &'a str },
    /// Unpack a zstd tar of objects from stdin, compressed against `dictionary`.
    Receive {
        owner: &'a str,
        dictionary: &'a [ObjectName],
    },
    /// Install a tar of secrets from stdin: (name, the user who owns it).
    Secrets {
        owner: &'a str,
        secrets: Vec<(&'a str, &'a str)>,
    },
    /// Write a tar of `paths` to stdout, services stopped.
    Backup { owner: &'a str, paths: &'a [String] },
    /// Move `paths` aside and wait for the parts of a backup of `generation`.
    Restore {
        owner: &'a str,
        generation: u64,
        paths: &'a [String],
    },
    /// Unpack one part of a restore from stdin.
    RestorePart { owner: &'a str },
    /// Record `generation` for the current, confirmed manifest.
    Relabel {
        owner: &'a str,
        generation: u64,
        manifest: &'a ObjectName,
    },
    /// Make `generation` current and activate it; its watchdog (the stored
    /// `agent`) rolls it back unless confirmed within `confirm_within`.
    Switch {
        owner: &'a str,
        generation: u64,
        manifest: &'a ObjectName,
        confirm_within: Duration,
        agent: &'a ObjectName,
    },
    /// Over a new connection: `generation` works.
    Confirm { generation: u64 },
    /// Undo `generation` now, back to `previous` (or to none).
    Rollback {
        generation: u64,
        previous: Option<u64>,
    },
}

impl Call<'_> {
    fn command(&self) -> &'static str {
        match self {
            Call::State => "state",
            Call::HoldLock { .. } => "hold-lock",
            Call::Receive { .. } => "receive",
            Call::Secrets { .. } => "secrets",
            Call::Backup { .. } => "backup",
            Call::Restore { .. } => "restore",
            Call::RestorePart { .. } => "restore-part",
            Call::Relabel { .. } => "relabel",
            Call::Switch { .. } => "switch",
            Call::Confirm { .. } => "confirm",
            Call::Rollback { .. } => "rollback",
        }
    }

    /// The arguments after ROOT.
    fn args(&self) -> Vec<String> {
        let words = |first: &[&str], rest: &[String]| -> Vec<String> {
            first
                .iter()
                .map(|w| w.to_string())
                .chain(rest.iter().cloned())
                .collect()
        };
        match self {
            Call::State => Vec::new(),
            Call::HoldLock { owner } | Call::RestorePart { owner } => vec![owner.to_string()],
            Call::Receive { owner, dictionary } => {
                let names: Vec<String> = dictionary.iter().map(ObjectName::to_string).collect();
                words(&[owner], &names)
            }
            Call::Secrets { owner, secrets } => {
                let specs: Vec<String> = secrets.iter().map(|(n, o)| format!("{n}={o}")).collect();
                words(&[owner], &specs)
            }
            Call::Backup { owner, paths } => words(&[owner], paths),
            Call::Restore {
                owner,
                generation,
                paths,
            } => words(&[owner, &generation.to_string()], paths),
            Call::Relabel {
                owner,
                generation,
                manifest,
            } => vec![
                owner.to_string(),
                generation.to_string(),
                manifest.to_string(),
            ],
            Call::Switch {
                owner,
                generation,
                manifest,
                confirm_within,
                agent,
            } => vec![
                owner.to_string(),
                generation.to_string(),
                manifest.to_string(),
                confirm_within.as_secs().max(1).to_string(),
                agent.to_string(),
            ],
            Call::Confirm { generation } => vec![generation.to_string()],
            Call::Rollback {
                generation,
                previous,
            } => vec![
                generation.to_string(),
                previous.map(|p| p.to_string()).unwrap_or_default(),
            ],
        }
    }

    /// The remote command line: the agent run `how`, this call's command,
    /// the host's state `root`, and the call's arguments, one word each.
    pub(super) fn argv(&self, how: Agent<'_>, root: &str) -> Vec<String> {
        let stored = |name: &ObjectName| format!("{root}/store/{name}");
        let mut argv: Vec<String> = match how {
            Agent::Stored(name) => vec!["sh".into(), stored(name)],
            Agent::Probe(name) => vec!["sh".into(), "-c".into(), PROBE.into(), stored(name)],
            Agent::Inline => vec!["sh".into(), "-c".into(), AGENT.into(), "sov-agent".into()],
        };
        argv.push(self.command().into());
        argv.push(root.into());
        argv.extend(self.args());
        argv
    }
}

/// How an agent call ended, as far as sov acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgentExit {
    Success,
    /// `hold-lock`: another deploy holds the host lock (`exit 75`).
    LockedByAnother,
    /// The probe: the host lacks the stored agent (`exit 97`).
    NotStored,
    /// Any other failure, with its status.
    Failed(i32),
    /// Killed by a signal: no status.
    Signal,
}

impl AgentExit {
    pub(super) fn from_code(code: Option<i32>) -> AgentExit {
        match code {
            Some(0) => AgentExit::Success,
            Some(75) => AgentExit::LockedByAnother,
            Some(97) => AgentExit::NotStored,
            Some(c) => AgentExit::Failed(c),
            None => AgentExit::Signal,
        }
    }

    pub(super) fn is_locked_by_another(self) -> bool {
        self == AgentExit::LockedByAnother
    }

    pub(super) fn is_not_stored(self) -> bool {
        self == AgentExit::NotStored
    }
}

/// Who holds the lock, from what `hold-lock` said when it exited
/// [`AgentExit::LockedByAnother`] (`locked by HOLDER`).
pub(super) fn lock_holder(said: &str) -> &str {
    said.strip_prefix("locked by ").unwrap_or(said)
}

/// A line sov writes to a running agent's stdin.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tell<'a> {
    /// To `hold-lock`: at the end, keep `keep` generations and collect the
    /// rest with the stored `agent`.
    Gc { keep: usize, agent: &'a ObjectName },
    /// To `restore`: every part arrived; the directories' tar follows.
    Ok,
    /// To `restore`: a part failed; put the old data back.
    Abort,
}

impl fmt::Display for Tell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tell::Gc { keep, agent } => write!(f, "gc {keep} {agent}"),
            Tell::Ok => f.write_str("ok"),
            Tell::Abort => f.write_str("abort"),
        }
    }
}

/// A line of the agent's output that is not what the protocol allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("the agent printed {line:?}, expected {expected}")]
    Malformed {
        line: String,
        expected: &'static str,
    },
    #[error("the agent's reply does not start with {expected:?}")]
    Missing { expected: &'static str },
}

/// An agent call that failed, or whose reply sov cannot read.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("{host}: {step}: {source}")]
    Reply {
        host: String,
        step: &'static str,
        #[source]
        source: ReplyError,
    },
}

fn malformed(line: &str, expected: &'static str) -> ReplyError {
    ReplyError::Malformed {
        line: line.to_string(),
        expected,
    }
}

/// The host's state, from the agent's state lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct HostState {
    pub(super) current: Option<u64>,
    /// The host manifest object of the current generation.
    pub(super) manifest: Option<String>,
    pub(super) objects: BTreeSet<String>,
    /// `confirmed/<current>` exists: the current generation passed its
    /// checks and was confirmed over a new connection.
    pub(super) confirmed: bool,
    /// An unconfirmed switch: (generation, the generation before it).
    pub(super) pending: Option<(u64, Option<u64>)>,
    /// The secrets it holds: name to blake3 of the value.
    pub(super) secrets: BTreeMap<String, String>,
}

impl HostState {
    /// Reads the lines `state` prints (`print_state` in the agent).
    pub(super) fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Self, ReplyError> {
        let mut state = HostState::default();
        for line in lines {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let value = value.trim();
            match key {
                "current" => state.current = generation(line, value)?,
                "manifest" => state.manifest = Some(value.to_string()).filter(|m| !m.is_empty()),
                "confirmed" => {
                    state.confirmed = match value {
                        "yes" => true,
                        "no" => false,
                        _ => return Err(malformed(line, "confirmed yes or no")),
                    }
                }
                "pending" => {
                    let mut words = value.split_whitespace();
                    state.pending = match generation(line, words.next().unwrap_or(""))? {
                        Some(n) => Some((n, generation(line, words.next().unwrap_or(""))?)),
                        // A pending file a crash left empty.
                        None => None,
                    };
                }
                "object" if !value.is_empty() => {
                    state.objects.insert(value.to_string());
                }
                "secret" => match value.split_once(' ') {
                    Some((name, hash)) if !name.is_empty() && !hash.trim().is_empty() => {
                        state
                            .secrets
                            .insert(name.to_string(), hash.trim().to_string());
                    }
                    _ => return Err(malformed(line, "secret NAME HASH")),
                },
                _ => return Err(malformed(line, "a state line")),
            }
        }
        Ok(state)
    }

    /// Reads what `hold-lock` prints before [`END`]: `locked`, then the state.
    pub(super) fn parse_locked(lines: &[String]) -> Result<Self, ReplyError> {
        match lines.split_first() {
            Some((first, rest)) if first == "locked" => {
                HostState::parse(rest.iter().map(String::as_str))
            }
            _ => Err(ReplyError::Missing { expected: "locked" }),
        }
    }

    /// It holds `object` in its store.
    pub(super) fn holds(&self, object: &ObjectName) -> bool {
        self.objects.contains(&object.to_string())
    }
}

/// A generation number, or none when the agent printed nothing.
fn generation(line: &str, word: &str) -> Result<Option<u64>, ReplyError> {
    if word.is_empty() {
        return Ok(None);
    }
    word.parse()
        .map(Some)
        .map_err(|_| malformed(line, "a generation number"))
}

#[cfg(test)]
mod tests;
