//! Why a command failed, and the exit code that says so.

use std::path::PathBuf;

use crate::build::{gc, BuildError};
use crate::deploy;
use crate::init;
use crate::secrets::SecretError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Gc(#[from] gc::GcError),
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
    #[error("{what} of site {site} failed: {failed}")]
    Failed {
        what: &'static str,
        site: String,
        failed: String,
    },
    #[error("give a site: sov backup SITE, or sov backup verify SITE")]
    NoSite,
    #[error("deploy of site {site} failed: {failed}")]
    DeployFailed { site: String, failed: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Init(#[from] init::InitError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot read the secret's value from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("{count} corrupt object{}: {}", if *count == 1 { "" } else { "s" }, names.join(", "))]
    Corrupt { count: usize, names: Vec<String> },
    #[error("the store held corrupt objects, rendered again and replaced by this build: {}; `sov store verify` checks the rest", names.join(", "))]
    Repaired { names: Vec<String> },
    #[error("not reproducible: {}", artifacts.join(", "))]
    NotReproducible { artifacts: Vec<String> },
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    #[error("cannot resolve path {path}")]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// 2 for bad input or usage, 1 for everything that failed otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Build(e) if e.is_input() => 2,
            CliError::Store(e) if e.is_input() => 2,
            CliError::Gc(gc::GcError::Store(e)) if e.is_input() => 2,
            CliError::Deploy(e) if e.is_input() => 2,
            CliError::Init(e) if e.is_input() => 2,
            CliError::Secret(e) if e.is_input() => 2,
            CliError::NoSite => 2,
            _ => 1,
        }
    }
}
