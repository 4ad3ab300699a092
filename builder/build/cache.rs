//! The derivation cache: which store object each derivation key produced, so
//! a build that sees a known key skips rendering. One index file
//! (`cache/index`, a line `<key> <object>` each, sorted), read once per build
//! and replaced by rename when a build adds to it: a build touches one file,
//! not one per artifact.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::store::{fsync_dir, Digest, ObjectName, Store, StoreError};

pub struct Cache {
    dir: PathBuf,
    entries: BTreeMap<Digest, ObjectName>,
}

impl Cache {
    /// Reads the index, creating nothing; lines that do not parse (a torn
    /// write cannot happen, the file is replaced by rename) are ignored: a
    /// miss only costs a render.
    pub fn open(state: &Path) -> Result<Cache, StoreError> {
        let dir = state.join("cache");
        let index = dir.join("index");
        let text = match fs::read_to_string(&index) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(StoreError::io("read", &index)(e)),
        };
        let entries = text
            .lines()
            .filter_map(|line| {
                let (key, object) = line.split_once(' ')?;
                Some((Digest::from_hex(key)?, object.parse().ok()?))
            })
            .collect();
        Ok(Cache { dir, entries })
    }

    /// The object a key produced, if the store (`present`, listed once per
    /// build) still has it.
    pub fn lookup(&self, present: &HashSet<ObjectName>, key: &Digest) -> Option<ObjectName> {
        self.entries
            .get(key)
            .filter(|o| present.contains(*o))
            .cloned()
    }

    /// Whether recording `key` as `object` would change the index.
    pub fn lacks(&self, key: &Digest, object: &ObjectName) -> bool {
        self.entries.get(key) != Some(object)
    }

    /// Adds entries after their objects are committed.
    pub fn record<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a Digest, &'a ObjectName)>,
    ) -> Result<(), StoreError> {
        let mut changed = false;
        for (key, object) in entries {
            changed |= self.entries.insert(*key, object.clone()).as_ref() != Some(object);
        }
        if !changed {
            return Ok(());
        }
        self.write()
    }

    /// Drops entries whose object is gone (after gc).
    pub fn prune(&mut self, store: &Store) -> Result<usize, StoreError> {
        let present: HashSet<ObjectName> = store.list()?.into_iter().collect();
        let before = self.entries.len();
        self.entries.retain(|_, o| present.contains(o));
        let removed = before - self.entries.len();
        if removed > 0 {
            self.write()?;
        }
        Ok(removed)
    }

    fn write(&self) -> Result<(), StoreError> {
        let index = self.dir.join("index");
        let temp = self.dir.join(format!(".index.{}", std::process::id()));
        let mut text = String::with_capacity(self.entries.len() * 160);
        for (key, object) in &self.entries {
            text.push_str(&key.hex());
            text.push(' ');
            text.push_str(&object.to_string());
            text.push('\n');
        }
        fs::create_dir_all(&self.dir).map_err(StoreError::io("create", &self.dir))?;
        let written = (|| {
            let mut file = fs::File::create(&temp).map_err(StoreError::io("create", &temp))?;
            file.write_all(text.as_bytes())
                .map_err(StoreError::io("write", &temp))?;
            file.sync_all().map_err(StoreError::io("fsync", &temp))?;
            fs::rename(&temp, &index).map_err(StoreError::io("rename into place", &index))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written?;
        fsync_dir(&self.dir)
    }
}
