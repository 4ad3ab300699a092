//! Batches of writes: objects staged under temporary names, made durable
//! together and renamed into place on commit, or removed on any failure.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{fsutil, fsync_dir, ObjectName, Store, StoreError, STAGING_PREFIX};

/// Objects written under temporary names, renamed into place together.
/// Dropping a batch without committing, or a commit that fails, removes
/// everything it staged.
pub struct Batch<'a> {
    store: &'a Store,
    /// Final path to staged path; shared by the threads that realise.
    staged: std::sync::Mutex<std::collections::BTreeMap<PathBuf, PathBuf>>,
}

impl<'a> Batch<'a> {
    pub(super) fn new(store: &'a Store) -> Batch<'a> {
        Batch {
            store,
            staged: std::sync::Mutex::default(),
        }
    }

    /// Stages `bytes` as `object` unless the store already has it. The
    /// caller has hashed the bytes in the object's encoding. Safe to call
    /// from several threads.
    pub fn put(&self, object: &ObjectName, bytes: &[u8]) -> Result<(), StoreError> {
        if self.store.path(object).is_file() {
            return Ok(());
        }
        self.stage(object, bytes)
    }

    /// Stages `bytes` to take the place of a corrupt `object` on commit.
    pub fn replace(&self, object: &ObjectName, bytes: &[u8]) -> Result<(), StoreError> {
        self.stage(object, bytes)
    }

    fn stage(&self, object: &ObjectName, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.store.path(object);
        if self.staged().contains_key(&target) {
            return Ok(());
        }
        let temp = self
            .store
            .dir
            .join(format!("{STAGING_PREFIX}{}-{object}", std::process::id()));
        match write_read_only(&temp, bytes) {
            Ok(()) => {
                self.staged().insert(target, temp);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<PathBuf, PathBuf>> {
        // A panic while holding the lock leaves the map usable as it was.
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every staged object durable with one filesystem sync, then
    /// gives each its final name and syncs the directory: a crash leaves
    /// either no object or a complete one under its final name.
    pub fn commit(self) -> Result<(), StoreError> {
        let mut staged = self.staged();
        if staged.is_empty() {
            return Ok(());
        }
        // On any error what is still staged is removed by `drop`.
        fsutil::sync_filesystem(&self.store.dir)?;
        while let Some((target, temp)) = staged.pop_first() {
            if let Err(e) = fs::rename(&temp, &target) {
                let _ = fs::remove_file(&temp);
                return Err(StoreError::io("rename into place", &target)(e));
            }
        }
        drop(staged);
        fsync_dir(&self.store.dir)
    }
}

fn write_read_only(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = fs::File::create(path).map_err(StoreError::io("create", path))?;
    file.write_all(bytes)
        .map_err(StoreError::io("write", path))?;
    let mut perms = file
        .metadata()
        .map_err(StoreError::io("stat", path))?
        .permissions();
    perms.set_readonly(true);
    file.set_permissions(perms)
        .map_err(StoreError::io("chmod", path))
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for temp in self.staged().values() {
            // Best effort: a leftover is skipped by readers and removed by
            // the next build or gc.
            let _ = fs::remove_file(temp);
        }
    }
}
