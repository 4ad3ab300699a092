//! Site generations on the management machine: `sites/<site>/generations/<N>`
//! links to the site manifest object, `current` links to the newest.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::model::SiteName;
use crate::store::{fsync_dir, replace_symlink, ObjectName, StoreError};

/// A site generation number, counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One recorded generation.
#[derive(Debug, Clone)]
pub struct Record {
    pub generation: Generation,
    pub manifest: ObjectName,
    /// When it was recorded (management-side metadata, never in an artifact).
    pub recorded: Option<SystemTime>,
}

/// The generations of one site.
pub struct Profile {
    dir: PathBuf,
}

impl Profile {
    pub fn open(state: &Path, site: &SiteName) -> Profile {
        Profile {
            dir: state.join("sites").join(site.as_str()),
        }
    }

    fn generations_dir(&self) -> PathBuf {
        self.dir.join("generations")
    }

    /// All generations, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, StoreError> {
        let dir = self.generations_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("list", &dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io("list", &dir))?;
            let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(record) = self.read(Generation(n))? {
                records.push(record);
            }
        }
        records.sort_by_key(|r| r.generation);
        Ok(records)
    }

    pub fn read(&self, generation: Generation) -> Result<Option<Record>, StoreError> {
        let link = self.generations_dir().join(generation.to_string());
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &link)(e)),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let manifest = name
            .parse()
            .map_err(|source| StoreError::Name { name, source })?;
        let recorded = fs::symlink_metadata(&link).and_then(|m| m.modified()).ok();
        Ok(Some(Record {
            generation,
            manifest,
            recorded,
        }))
    }

    /// The generation `current` points at.
    pub fn current(&self) -> Result<Option<Record>, StoreError> {
        let link = self.dir.join("current");
        let target = match fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &link)(e)),
        };
        let n = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u64>().ok());
        match n {
            Some(n) => self.read(Generation(n)),
            None => Ok(None),
        }
    }

    /// Records `manifest` as a new generation unless it is already current;
    /// returns the current generation either way.
    pub fn record(&self, manifest: &ObjectName) -> Result<(Generation, bool), StoreError> {
        if let Some(current) = self.current()? {
            if &current.manifest == manifest {
                return Ok((current.generation, false));
            }
        }
        let dir = self.generations_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let next = Generation(self.list()?.last().map_or(1, |r| r.generation.0 + 1));
        let target = Path::new("../../../store").join(manifest.to_string());
        replace_symlink(&target, &dir.join(next.to_string()))?;
        fsync_dir(&dir)?;
        replace_symlink(
            &Path::new("generations").join(next.to_string()),
            &self.dir.join("current"),
        )?;
        fsync_dir(&self.dir)?;
        Ok((next, true))
    }

    /// Removes a generation's link (gc); never the current one.
    pub fn remove(&self, generation: Generation) -> Result<(), StoreError> {
        let link = self.generations_dir().join(generation.to_string());
        fs::remove_file(&link).map_err(StoreError::io("remove", link))
    }

    pub fn sync(&self) -> Result<(), StoreError> {
        fsync_dir(&self.generations_dir())
    }
}
