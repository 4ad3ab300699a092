//! Object names: `<hash>-<name>`, and the fixed encoding each is hashed in.

use std::fmt;
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::Digest;

/// The file name of a store object: the hex digest of its fixed encoding,
/// a dash, and a readable name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ObjectName {
    digest: Digest,
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a store object name: expected <64 hex digits>-<name>")]
pub struct ObjectNameError(String);

/// Names are one path component of printable ASCII without '/'.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-@".contains(&b))
}

impl ObjectName {
    pub fn new(digest: Digest, name: &str) -> Result<ObjectName, ObjectNameError> {
        if !valid_name(name) {
            return Err(ObjectNameError(name.to_string()));
        }
        Ok(ObjectName {
            digest,
            name: name.to_string(),
        })
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.digest.hex(), self.name)
    }
}

impl From<ObjectName> for String {
    fn from(o: ObjectName) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for ObjectName {
    type Error = ObjectNameError;
    fn try_from(s: String) -> Result<ObjectName, ObjectNameError> {
        s.parse()
    }
}

impl std::str::FromStr for ObjectName {
    type Err = ObjectNameError;
    fn from_str(s: &str) -> Result<ObjectName, ObjectNameError> {
        let bad = || ObjectNameError(s.to_string());
        let (hex, name) = s.split_at_checked(64).ok_or_else(bad)?;
        let name = name.strip_prefix('-').ok_or_else(bad)?;
        let digest = Digest::from_hex(hex).ok_or_else(bad)?;
        ObjectName::new(digest, name).map_err(|_| bad())
    }
}

/// How an object's bytes relate to the bytes its digest is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Zstd,
}

impl Encoding {
    pub fn of(name: &str) -> Encoding {
        if name.ends_with(".zst") {
            Encoding::Zstd
        } else {
            Encoding::Plain
        }
    }

    /// Hashes what `reader` yields in this encoding.
    pub fn digest<R: Read>(self, reader: R) -> std::io::Result<Digest> {
        let mut hasher = blake3::Hasher::new();
        match self {
            Encoding::Plain => copy_into(reader, &mut hasher)?,
            Encoding::Zstd => {
                let decoder = zstd::stream::read::Decoder::new(reader)?;
                copy_into(decoder, &mut hasher)?
            }
        }
        Ok(Digest::from_hasher(hasher))
    }
}

fn copy_into<R: Read>(mut reader: R, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let o = ObjectName::new(Digest::of(b"x"), "fra1-firewall.nft").unwrap();
        let s = o.to_string();
        assert_eq!(s.parse::<ObjectName>().unwrap(), o);
        assert!(ObjectName::new(Digest::of(b"x"), "a/b").is_err());
        assert!(ObjectName::new(Digest::of(b"x"), "..").is_err());
        assert!("abc-x".parse::<ObjectName>().is_err());
    }
}
