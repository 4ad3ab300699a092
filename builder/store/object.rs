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

/// The longest readable part of an object name. With the 64-digit hash, a
/// dash and a staging prefix, a file name stays far below the file-system
/// limit (255 bytes), whatever a domain adds to a name.
pub const MAX_NAME: usize = 128;

/// Bytes kept from the end of a shortened name, so its kind and extension
/// (`-seed.img`, `.tar.zst`, which choose its encoding) survive.
const KEPT_TAIL: usize = 24;

/// Digits of the name's own hash that keep two shortened names apart.
const TAG: usize = 16;

/// Names are one path component of printable ASCII without '/'.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-@".contains(&b))
}

/// The readable name an object named `name` gets: a name over `MAX_NAME`
/// bytes keeps its head and tail around a hash of the whole; shorter names
/// are kept as they are. Artifacts take this name from the start, so a
/// script that finds an artifact by name finds its object.
pub fn fit_name(name: &str) -> String {
    // Only ASCII names are valid (and any byte index is a boundary in them).
    if name.len() <= MAX_NAME || !name.is_ascii() {
        return name.to_string();
    }
    let tag = blake3::hash(name.as_bytes()).to_hex();
    let head = MAX_NAME - KEPT_TAIL - TAG - 2;
    format!(
        "{}-{}-{}",
        &name[..head],
        &tag[..TAG],
        &name[name.len() - KEPT_TAIL..]
    )
}

impl ObjectName {
    /// Names the object; a readable name too long for a file name is
    /// shortened (see `fit_name`).
    pub fn new(digest: Digest, name: &str) -> Result<ObjectName, ObjectNameError> {
        if !valid_name(name) {
            return Err(ObjectNameError(name.to_string()));
        }
        Ok(ObjectName {
            digest,
            name: fit_name(name),
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
        // sov never writes a longer name: one would not round-trip.
        if name.len() > MAX_NAME {
            return Err(bad());
        }
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

    #[test]
    fn long_names_are_shortened_uniquely_and_keep_their_extension() {
        let label = "a".repeat(63);
        let domain = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(domain.len(), 253);
        let zone = format!("fra1-zone-{domain}");
        let other = format!("fra1-zone-{}", domain.replacen('a', "c", 1));
        let bundle = format!("{zone}-bundle.tar.zst");
        let d = Digest::of(b"x");
        let [z, o, b] = [&zone, &other, &bundle].map(|n| ObjectName::new(d, n).unwrap());
        for short in [&z, &o, &b] {
            assert_eq!(short.name().len(), MAX_NAME);
            assert_eq!(short.to_string().parse::<ObjectName>().unwrap(), *short);
        }
        assert_ne!(z, o);
        assert!(z.name().starts_with("fra1-zone-aaa"));
        assert_eq!(Encoding::of(b.name()), Encoding::Zstd);
        let long = format!("{}-{zone}", d.hex());
        assert!(long.parse::<ObjectName>().is_err());
    }
}
