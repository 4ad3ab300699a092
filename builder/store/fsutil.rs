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

/// Refuses a state path that is, or lies below, something other than a
/// directory, before anything reads or writes there. A missing one is fine:
/// it is created when there is something to write.
pub fn check_state_dir(state: &Path) -> Result<(), StoreError> {
    let not_a_directory = || StoreError::NotADirectory {
        path: state.to_path_buf(),
    };
    match fs::metadata(state) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(not_a_directory()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(not_a_directory()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("read", state)(e)),
    }
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
        check_state_dir(state)?;
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
