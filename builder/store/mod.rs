//! The content-addressed store: immutable objects named `<hash>-<name>`,
//! written atomically in batches and re-hashed on demand.

mod batch;
mod digest;
mod fsutil;
mod object;

use std::fs;
use std::path::{Path, PathBuf};

pub use batch::Batch;
pub use digest::{Digest, DigestError};
pub use fsutil::{check_state_dir, fsync_dir, replace_symlink, StateLock};
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
    #[error("--state {}: not a folder: expected a folder, or a path where one can be made", path.display())]
    NotADirectory { path: PathBuf },
}

impl StoreError {
    /// The user pointed sov at something that cannot be its state: bad
    /// input (exit 2), not a failure of the store.
    pub fn is_input(&self) -> bool {
        matches!(self, StoreError::NotADirectory { .. })
    }

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

/// What re-hashing an object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Sound,
    /// Its bytes no longer hash to its name (or no longer decompress).
    Corrupt,
    Missing,
}

impl Store {
    /// Opens (creating if needed) `<state>/store`.
    pub fn open(state: &Path) -> Result<Store, StoreError> {
        let store = Store::at(state);
        fs::create_dir_all(&store.dir).map_err(StoreError::io("create", &store.dir))?;
        Ok(store)
    }

    /// The store of `state`, touching nothing: a build reads through it
    /// before it knows it has anything to write.
    pub fn at(state: &Path) -> Store {
        Store {
            dir: state.join("store"),
        }
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
        Batch::new(self)
    }

    /// Every object in the store, sorted; staged leftovers are skipped. A
    /// store not yet created holds nothing.
    pub fn list(&self) -> Result<Vec<ObjectName>, StoreError> {
        let mut objects = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(objects),
            Err(e) => return Err(StoreError::io("list", &self.dir)(e)),
        };
        for entry in entries {
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
        match self.check(object)? {
            Health::Sound => Ok(true),
            Health::Corrupt => Ok(false),
            Health::Missing => Err(StoreError::io("open", self.path(object))(
                std::io::ErrorKind::NotFound.into(),
            )),
        }
    }

    /// Re-hashes one object, telling a missing one from a corrupt one.
    pub fn check(&self, object: &ObjectName) -> Result<Health, StoreError> {
        let path = self.path(object);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Health::Missing),
            Err(e) => return Err(StoreError::io("open", path)(e)),
        };
        match Encoding::of(object.name()).digest(std::io::BufReader::new(file)) {
            Ok(d) if d == object.digest() => Ok(Health::Sound),
            Ok(_) => Ok(Health::Corrupt),
            // A compressed object that no longer decompresses is corrupt too.
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => Ok(Health::Corrupt),
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
