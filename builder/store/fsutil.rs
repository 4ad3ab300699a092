//! Durable filesystem steps: syncing, atomic symlink replacement and the
//! state directory's lock.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::StoreError;

/// fsyncs a directory so that renames inside it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    let file = fs::File::open(dir).map_err(StoreError::io("open", dir))?;
    file.sync_all().map_err(StoreError::io("fsync", dir))
}

/// One syncfs(2) for a whole batch instead of an fsync per file: the same
/// durability before the renames, at a fraction of the cost.
pub fn sync_filesystem(dir: &Path) -> Result<(), StoreError> {
    let file = fs::File::open(dir).map_err(StoreError::io("open", dir))?;
    rustix::fs::syncfs(&file).map_err(|e| StoreError::io("sync the filesystem of", dir)(e.into()))
}

/// Points `link` at `target` by creating a temporary symlink and renaming it
/// over `link`: readers see the old target or the new one, never nothing.
pub fn replace_symlink(target: &Path, link: &Path) -> Result<(), StoreError> {
    let dir = link.parent().unwrap_or(Path::new("."));
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let _ = fs::remove_file(&temp);
    symlink(target, &temp).map_err(StoreError::io("create the symlink", &temp))?;
    fs::rename(&temp, link).map_err(StoreError::io("rename into place", link))
}

/// An exclusive lock on the state directory for the whole command, so two
/// builds or a build and a gc never interleave.
pub struct StateLock {
    _file: fs::File,
}

impl StateLock {
    /// Exclusive: build and gc, which write the store.
    pub fn acquire(state: &Path) -> Result<StateLock, StoreError> {
        StateLock::take(state, FlockOperation::LockExclusive)
    }

    /// Shared: deploys, which only read the store, run side by side but
    /// never beside a gc.
    pub fn shared(state: &Path) -> Result<StateLock, StoreError> {
        StateLock::take(state, FlockOperation::LockShared)
    }

    fn take(state: &Path, operation: FlockOperation) -> Result<StateLock, StoreError> {
        fs::create_dir_all(state).map_err(StoreError::io("create", state))?;
        let path: PathBuf = state.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        flock(&file, operation).map_err(|e| StoreError::io("lock", &path)(e.into()))?;
        Ok(StateLock { _file: file })
    }
}
