//! `sov init DIR`: writes a complete example stack (this repository's own
//! sites, images and templates, embedded at compile time) into a new folder.

use std::fs;
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/skeleton.rs"));

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already exists and is not empty: expected a new or empty folder")]
    Exists(PathBuf),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files of the skeleton, relative to the stack root.
pub fn files() -> &'static [(&'static str, &'static [u8])] {
    SKELETON
}

/// Writes the skeleton; refuses a folder that has anything in it.
pub fn init(dir: &Path) -> Result<usize, InitError> {
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
