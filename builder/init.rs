//! `sov init DIR`: writes a complete example stack (this repository's own
//! sites, images and templates, embedded at compile time) into a new folder.

use std::fs;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/skeleton.rs"));

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already exists and is not empty: expected a new or empty folder")]
    Exists(PathBuf),
    #[error("{0} is not a folder: expected a new or empty folder")]
    NotAFolder(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl InitError {
    /// Whether DIR was the wrong place (exit code 2), not a failed write.
    pub fn is_input(&self) -> bool {
        matches!(self, InitError::Exists(_) | InitError::NotAFolder(_))
    }
}

/// The files of the skeleton, relative to the stack root.
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    SKELETON
}

/// Writes the skeleton; refuses a folder that has anything in it.
pub fn init(dir: &Path) -> Result<usize, InitError> {
    // DIR, or the nearest part of its path that exists, must be a folder.
    let existing = dir
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_ok());
    if existing.is_some_and(|p| !fs::metadata(p).is_ok_and(|m| m.is_dir())) {
        return Err(InitError::NotAFolder(dir.to_path_buf()));
    }
    let occupied = fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(InitError::Exists(dir.to_path_buf()));
    }
    for (rel, bytes) in SKELETON {
        let path = dir.join(rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&path, bytes)
        };
        write().map_err(|source| InitError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let gitignore = dir.join(".gitignore");
    fs::write(&gitignore, "/.sov\n").map_err(|source| InitError::Write {
        path: gitignore,
        source,
    })?;
    Ok(SKELETON.len() + 1)
}
