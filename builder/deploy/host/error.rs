//! How one host's deploy, backup or restore step fails: each variant names
//! the host and keeps what went wrong beneath it. Strings are made only
//! where a report is written.

use crate::build::gc::GcError;
use crate::deploy::agent::AgentError;
use crate::deploy::backup::StreamError;
use crate::deploy::secrets::SecretsError;
use crate::deploy::ssh::SshError;
use crate::pack::PackError;
use crate::store::{ObjectNameError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("{host}: another deploy holds the host lock ({holder})")]
    Locked { host: String, holder: String },
    #[error("{host}: packing objects: {source}")]
    Pack {
        host: String,
        #[source]
        source: PackingError,
    },
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error("{host}: cannot tell what generation {generation} keeps to back it up: {source}")]
    BackupManifest {
        host: String,
        generation: u64,
        #[source]
        source: ManifestError,
    },
    #[error("{host}: backup failed, nothing was switched: {source}")]
    Backup {
        host: String,
        #[source]
        source: StreamError,
    },
    #[error(transparent)]
    Restore(StreamError),
    /// The switch failed; it was rolled back over the same connection.
    #[error("{source}{}", undone.as_ref().map_or(String::new(), |u| format!("\n{host}: {u}")))]
    Switch {
        host: String,
        #[source]
        source: SshError,
        /// What the host said the rollback did, if it could be reached.
        undone: Option<String>,
    },
    /// The confirmation over a new connection failed.
    #[error("{source} ({undone})")]
    Confirm {
        #[source]
        source: SshError,
        undone: Undone,
    },
}

/// Packing the objects a host lacks.
#[derive(Debug, thiserror::Error)]
pub enum PackingError {
    #[error(transparent)]
    Read(#[from] StoreError),
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("compressing against the host's objects: {0}")]
    Compress(#[source] std::io::Error),
}

/// Reading the host manifest of a host's current generation.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Name(#[from] ObjectNameError),
    #[error(transparent)]
    Read(#[from] GcError),
}

/// What became of a switch whose confirmation failed.
#[derive(Debug)]
pub enum Undone {
    /// Rolled back over the old connection: what the host said.
    Said(String),
    /// The host could not be reached: its watchdog goes back by itself.
    Watchdog { previous: Option<u64>, secs: u64 },
}

impl std::fmt::Display for Undone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undone::Said(said) => f.write_str(said),
            Undone::Watchdog { previous, secs } => write!(
                f,
                "the host's watchdog returns it to generation {} within {secs} s",
                previous.map_or("none".to_string(), |p| p.to_string())
            ),
        }
    }
}
