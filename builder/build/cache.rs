//! The derivation cache: `cache/<key>` is a symlink to the store object the
//! derivation produced, so a build that sees the key skips rendering.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::store::{fsync_dir, replace_symlink, Digest, ObjectName, Store, StoreError};

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn open(state: &Path) -> Result<Cache, StoreError> {
        let dir = state.join("cache");
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        Ok(Cache { dir })
    }

    /// The object a key produced, if the store (`present`, listed once per
    /// build rather than a stat per key) still has it.
    pub fn lookup(&self, present: &HashSet<ObjectName>, key: &Digest) -> Option<ObjectName> {
        let target = fs::read_link(self.dir.join(key.hex())).ok()?;
        let object: ObjectName = target.file_name()?.to_str()?.parse().ok()?;
        present.contains(&object).then_some(object)
    }

    /// Records keys after their objects are committed; durable with one
    /// directory sync.
    pub fn record<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a Digest, &'a ObjectName)>,
    ) -> Result<(), StoreError> {
        let mut any = false;
        for (key, object) in entries {
            let target = Path::new("../store").join(object.to_string());
            replace_symlink(&target, &self.dir.join(key.hex()))?;
            any = true;
        }
        if any {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Drops entries whose object is gone (after gc).
    pub fn prune(&self, store: &Store) -> Result<usize, StoreError> {
        let present: HashSet<ObjectName> = store.list()?.into_iter().collect();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir).map_err(StoreError::io("list", &self.dir))? {
            let entry = entry.map_err(StoreError::io("list", &self.dir))?;
            let Some(key) = entry.file_name().to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if self.lookup(&present, &key).is_none() {
                fs::remove_file(entry.path()).map_err(StoreError::io("remove", entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
