//! Names and small values that are validated once, where they enter: DNS
//! labels, host/site/VLAN/image names, MAC addresses, pinned container images.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused; the loader turns it into a diagnostic with a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(String);

impl NameError {
    pub fn new(message: impl Into<String>) -> Self {
        NameError(message.into())
    }
}

/// Checks one DNS label (RFC 1035 as relaxed by RFC 1123): 1–63 of a-z, 0-9 and
/// '-', not starting or ending with '-'. Upper case is refused so that names
/// compare and hash the same everywhere.
pub fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() || label.len() > 63 {
        return Err(NameError(format!(
            "`{label}` is not a DNS label: expected 1 to 63 characters"
        )));
    }
    let valid = label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid || label.starts_with('-') || label.ends_with('-') {
        return Err(NameError(format!(
            "`{label}` is not a DNS label: expected lower-case letters, digits and inner '-'"
        )));
    }
    Ok(())
}

/// Checks a domain name written without the final dot (`example.org`).
pub fn check_domain(name: &str) -> Result<(), NameError> {
    if name.len() > 253 {
        return Err(NameError(format!(
            "`{name}` is not a domain name: longer than 253 characters"
        )));
    }
    if name.ends_with('.') {
        return Err(NameError(format!(
            "`{name}` is not a domain name as expected here: write it without the final dot"
        )));
    }
    for label in name.split('.') {
        check_label(label).map_err(|e| NameError(format!("in domain `{name}`: {e}")))?;
    }
    Ok(())
}

/// A string newtype that is checked once, when it is made from a `String`
/// (and so when serde reads it), and is a plain string afterwards.
macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&value).map_err(NameError::new)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub(crate) use string_value;

macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        string_value!($(#[$doc])* $name, |v| check_label(v).map_err(|e| e.to_string()));

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

label_newtype!(
    /// A site (data center) name; also the file stem of `sites/<name>.toml`.
    SiteName
);
label_newtype!(
    /// A host or VM name, unique within its site; its internal DNS name.
    HostName
);
label_newtype!(
    /// A VLAN name, unique within its site.
    VlanName
);
label_newtype!(
    /// An image (host role) name; the file stem of `images/<name>.toml`.
    ImageName
);

string_value!(
    /// A domain name without the final dot, validated label by label.
    Domain,
    |v| check_domain(v).map_err(|e| e.to_string())
);

/// An Ethernet MAC address, printed lower case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac([u8; 6]);

impl TryFrom<String> for Mac {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        let bad = || {
            NameError(format!(
                "`{value}` is not a MAC address: expected six hex pairs separated by ':' (52:54:00:12:34:56)"
            ))
        };
        let mut bytes = [0u8; 6];
        let mut parts = value.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(bytes))
    }
}

impl From<Mac> for String {
    fn from(value: Mac) -> String {
        value.to_string()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A container image reference. Pinning by digest is checked by validation
/// (so that every unpinned image of a run is reported, with its position).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerImage(String);

impl ContainerImage {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `Some(digest)` when the reference ends in `@sha256:<64 hex>`.
    pub fn digest(&self) -> Option<&str> {
        let (_, digest) = self.0.rsplit_once('@')?;
        let hex = digest.strip_prefix("sha256:")?;
        let pinned = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        pinned.then_some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rfc_1123() {
        assert!(check_label("www").is_ok());
        assert!(check_label("a-1").is_ok());
        assert!(check_label("-a").is_err());
        assert!(check_label("a-").is_err());
        assert!(check_label("Www").is_err());
        assert!(check_label("a_b").is_err());
        assert!(check_label(&"a".repeat(64)).is_err());
        assert!(check_domain("example.org").is_ok());
        assert!(check_domain("example.org.").is_err());
        assert!(check_domain("exa..mple").is_err());
    }

    #[test]
    fn mac_round_trips_lower_case() {
        let mac = Mac::try_from("52:54:00:AB:cd:0F".to_string()).unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert!(Mac::try_from("52:54:00:ab:cd".to_string()).is_err());
        assert!(Mac::try_from("52:54:00:ab:cd:0f:00".to_string()).is_err());
        assert!(Mac::try_from("52-54-00-ab-cd-0f".to_string()).is_err());
        assert!(Mac::try_from("52:54:00:ab:cd:zz".to_string()).is_err());
    }

    #[test]
    fn only_sha256_digests_pin_an_image() {
        let pinned = format!("caddy:2.8@sha256:{}", "a".repeat(64));
        assert!(ContainerImage(pinned).digest().is_some());
        assert!(ContainerImage("caddy:2.8".into()).digest().is_none());
        assert!(ContainerImage("caddy@sha256:abc".into()).digest().is_none());
    }
}
