//! The content-addressed store: immutable objects named `<hash>-<name>`,
//! written atomically in batches and re-hashed on demand.

mod digest;
mod fsutil;
mod object;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use digest::{Digest, DigestError};
pub use fsutil::{fsync_dir, replace_symlink, StateLock};
pub use object::{fit_name, Encoding, ObjectName, ObjectNameError, MAX_NAME};

/// Everything that can go wrong in the store, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {doing} {path}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("object {name} has the wrong name for its bytes")]
    Name {
        name: String,
        #[source]
        source: ObjectNameError,
    },
}

impl StoreError {
    pub fn io(
        doing: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            doing,
            path,
            source,
        }
    }
}

/// The store directory of a state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Prefix of files being written; never a valid object name.
const STAGING_PREFIX: &str = ".tmp-";

impl Store {
    /// Opens (creating if needed) `<state>/store`.
    pub fn open(state: &Path) -> Result<Store, StoreError> {
        let dir = state.join("store");
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        Ok(Store { dir })
    }

    pub fn path(&self, object: &ObjectName) -> PathBuf {
        self.dir.join(object.to_string())
    }

    pub fn contains(&self, object: &ObjectName) -> bool {
        self.path(object).is_file()
    }

    pub fn read(&self, object: &ObjectName) -> Result<Vec<u8>, StoreError> {
        let path = self.path(object);
        fs::read(&path).map_err(StoreError::io("read", path))
    }

    /// Starts a batch of writes: objects are staged under temporary names
    /// and take their final names only in `Batch::commit`.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            staged: std::sync::Mutex::default(),
        }
    }

    /// Every object in the store, sorted; staged leftovers are skipped.
    pub fn list(&self) -> Result<Vec<ObjectName>, StoreError> {
        let mut objects = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(StoreError::io("list", &self.dir))? {
            let entry = entry.map_err(StoreError::io("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(STAGING_PREFIX) {
                continue;
            }
            let object = name
                .parse::<ObjectName>()
                .map_err(|source| StoreError::Name { name, source })?;
            objects.push(object);
        }
        objects.sort();
        Ok(objects)
    }

    /// Re-hashes one object; `Ok(false)` when its bytes no longer match its name.
    pub fn verify(&self, object: &ObjectName) -> Result<bool, StoreError> {
        let path = self.path(object);
        let file = fs::File::open(&path).map_err(StoreError::io("open", &path))?;
        match Encoding::of(object.name()).digest(std::io::BufReader::new(file)) {
            Ok(d) => Ok(d == object.digest()),
            // A compressed object that no longer decompresses is corrupt too.
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => Ok(false),
            Err(e) => Err(StoreError::io("read", path)(e)),
        }
    }

    /// Removes an object (garbage collection).
    pub fn remove(&self, object: &ObjectName) -> Result<(), StoreError> {
        let path = self.path(object);
        fs::remove_file(&path).map_err(StoreError::io("remove", path))
    }

    /// Removes files left staged by a build that did not finish.
    pub fn remove_staged_leftovers(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(StoreError::io("list", &self.dir))? {
            let entry = entry.map_err(StoreError::io("list", &self.dir))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                fs::remove_file(entry.path()).map_err(StoreError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Objects written under temporary names, renamed into place together.
/// Dropping a batch without committing removes what it staged.
pub struct Batch<'a> {
    store: &'a Store,
    /// Final path to staged path; shared by the threads that realise.
    staged: std::sync::Mutex<std::collections::BTreeMap<PathBuf, PathBuf>>,
}

impl Batch<'_> {
    /// Stages `bytes` as `object` unless the store already has it. The
    /// caller has hashed the bytes in the object's encoding. Safe to call
    /// from several threads.
    pub fn put(&self, object: &ObjectName, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.store.path(object);
        if target.is_file() || self.staged().contains_key(&target) {
            return Ok(());
        }
        let temp = self
            .store
            .dir
            .join(format!("{STAGING_PREFIX}{}-{object}", std::process::id()));
        let mut file = fs::File::create(&temp).map_err(StoreError::io("create", &temp))?;
        file.write_all(bytes)
            .map_err(StoreError::io("write", &temp))?;
        let mut perms = file
            .metadata()
            .map_err(StoreError::io("stat", &temp))?
            .permissions();
        perms.set_readonly(true);
        file.set_permissions(perms)
            .map_err(StoreError::io("chmod", &temp))?;
        self.staged().insert(target, temp);
        Ok(())
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<PathBuf, PathBuf>> {
        // A panic while holding the lock leaves the map usable as it was.
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every staged object durable with one filesystem sync, then
    /// gives each its final name and syncs the directory: a crash leaves
    /// either no object or a complete one under its final name.
    pub fn commit(self) -> Result<(), StoreError> {
        let staged = std::mem::take(&mut *self.staged());
        if staged.is_empty() {
            return Ok(());
        }
        fsutil::sync_filesystem(&self.store.dir)?;
        for (target, temp) in staged {
            fs::rename(&temp, &target).map_err(StoreError::io("rename into place", &target))?;
        }
        fsync_dir(&self.store.dir)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for temp in self.staged().values() {
            // Best effort: a leftover is skipped by readers and removed by gc.
            let _ = fs::remove_file(temp);
        }
    }
}
