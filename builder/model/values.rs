//! Values that reach generated files and commands, each validated once where
//! it enters: interface names, SSH addresses, users and keys, paths, Debian
//! package names, ports, timeouts and free text. A value that passes here
//! still goes through its target's encoder (`render::encode`); these types
//! make sure that an encoder always exists for it.

use std::fmt;
use std::net::IpAddr;
use std::num::{NonZeroU16, NonZeroU32};

use serde::{Deserialize, Serialize};

use super::names::{check_label, string_value, NameError};

/// How a value is shown in a message: quoted, with control characters
/// escaped, so that the message itself cannot be turned into anything.
pub fn shown(value: &str) -> String {
    format!("{value:?}")
}

string_value!(
    /// A Linux network interface name (`eth1.20`): 1 to 15 bytes of printable
    /// ASCII without `/`, `:`, quotes, backslash or white space, and not `.`
    /// or `..` (the kernel's `dev_valid_name`, without the characters that no
    /// configuration language here can quote).
    Interface,
    |v| {
        let printable = v
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/:\"'\\`$;#{}".contains(&b));
        if v.is_empty() || v.len() > 15 || !printable || v == "." || v == ".." {
            Err(format!(
                "{} is not an interface name: expected 1 to 15 letters, digits and `.`, `-`, `_` or `@` (like eth1.20)",
                shown(v)
            ))
        } else {
            Ok(())
        }
    }
);

string_value!(
    /// Where sov connects over SSH: an IP address or a DNS host name, never
    /// anything ssh could read as an option or known_hosts as a pattern.
    SshAddress,
    |v| {
        if v.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        let valid = !v.is_empty()
            && v.len() <= 253
            && v.split('.').all(|label| check_host_label(label).is_ok());
        if valid {
            Ok(())
        } else {
            Err(format!(
                "{} is not an SSH address: expected an IP address or a DNS host name",
                shown(v)
            ))
        }
    }
);

/// A label of a host name as OpenSSH and resolvers take it: letters (either
/// case), digits and inner `-`.
fn check_host_label(label: &str) -> Result<(), NameError> {
    check_label(&label.to_ascii_lowercase())
}

string_value!(
    /// A POSIX user name (`root`, `deploy`), as ssh and chown take it.
    UserName,
    |v| {
        let mut bytes = v.bytes();
        let first = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        let rest = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if first && rest && v.len() <= 32 {
            Ok(())
        } else {
            Err(format!(
                "{} is not a user name: expected lower-case letters, digits, `_` and `-`, starting with a letter or `_`",
                shown(v)
            ))
        }
    }
);

string_value!(
    /// An absolute, normal path (`/var/lib/sov`): no `.` or `..`, no empty
    /// component, no final `/`, no control characters.
    AbsPath,
    |v| {
        let clean = v.strip_prefix('/').is_some_and(|rest| {
            rest.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        }) && !v.chars().any(char::is_control);
        if clean {
            Ok(())
        } else {
            Err(format!(
                "{} is not an absolute path: expected one like /var/lib/sov, without `.`, `..`, `//`, a final `/` or control characters",
                shown(v)
            ))
        }
    }
);

string_value!(
    /// A Debian package name (Debian Policy 5.6.1): lower-case letters,
    /// digits, `+`, `-` and `.`, at least two characters, starting with a
    /// letter or digit.
    Package,
    |v| {
        let mut bytes = v.bytes();
        let first = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if first && rest && v.len() >= 2 {
            Ok(())
        } else {
            Err(format!(
                "{} is not a Debian package name: expected lower-case letters, digits, `+`, `-` and `.`",
                shown(v)
            ))
        }
    }
);

string_value!(
    /// A time zone of the tz database (`Etc/UTC`, `America/New_York`):
    /// names of letters, digits, `_`, `+` and `-`, joined by `/`.
    Timezone,
    |v| {
        let ok = v.len() <= 64
            && v.split('/').all(|part| {
                !part.is_empty()
                    && !part.starts_with(['-', '.'])
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+-".contains(&b))
            });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not a time zone: expected a tz database name like Etc/UTC or Europe/Berlin",
                shown(v)
            ))
        }
    }
);

string_value!(
    /// One argument of a command, or a value handed to a program as it is
    /// (an environment value, a volume): anything but a NUL byte, which no
    /// argv, shell word or YAML string can carry.
    Arg,
    |v| if v.contains('\0') {
        Err("the value holds a NUL character (\\0): expected text without it".to_string())
    } else {
        Ok(())
    }
);

string_value!(
    /// The name of a switch port as the switch's CLI takes it
    /// (`GigabitEthernet1/0/1`): printable ASCII without spaces or `?`.
    PortName,
    |v| {
        let ok = !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic() && b != b'?');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} is not a switch port name: expected one word of printable ASCII, like GigabitEthernet1/0/1",
                shown(v)
            ))
        }
    }
);

string_value!(
    #[derive(Default)]
    /// Free text (comments, descriptions): one line of printable characters.
    /// Control characters, line and paragraph separators and the invisible
    /// characters that reorder text (Trojan Source) are refused, since no
    /// target has a faithful encoding for them.
    Text,
    |v| match v.chars().find(|c| !is_text_char(*c)) {
        Some(c) => Err(format!(
            "the text holds the character {}: expected one line of printable text",
            c.escape_unicode()
        )),
        None if v.len() > MAX_TEXT => Err(format!(
            "the text is {} bytes long: expected at most {MAX_TEXT}",
            v.len()
        )),
        None => Ok(()),
    }
);

impl UserName {
    /// A user name written in sov's own code.
    pub(crate) fn constant(value: &'static str) -> Self {
        UserName(value.to_string())
    }
}

impl Timezone {
    /// A time zone written in sov's own code.
    pub(crate) fn constant(value: &'static str) -> Self {
        Timezone(value.to_string())
    }
}

impl AbsPath {
    /// A path written in sov's own code.
    pub(crate) fn constant(value: &'static str) -> Self {
        AbsPath(value.to_string())
    }
}

/// The longest free text accepted: enough for any comment, and within the
/// 240 characters of an IOS description.
pub const MAX_TEXT: usize = 240;

impl Text {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_text_char(c: char) -> bool {
    !c.is_control()
        && !matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{200B}'..='\u{200F}' // zero-width characters, marks
                | '\u{202A}'..='\u{202E}' // embeddings and overrides
                | '\u{2060}'..='\u{206F}' // isolates and invisible operators
                | '\u{061C}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// An OpenSSH public key, parsed, and written back in its canonical form
/// (`<algorithm> <base64>[ <comment>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey {
    key: ssh_key::PublicKey,
}

impl PublicKey {
    /// `<algorithm> <base64>`, without the comment: what known_hosts pins.
    pub fn bare(&self) -> String {
        let mut key = self.key.clone();
        key.set_comment("");
        key.to_openssh().unwrap_or_default()
    }

    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
    }
}

impl TryFrom<String> for PublicKey {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        let bad = |why: &str| {
            NameError::new(format!(
                "{} is not an OpenSSH public key ({why}): expected `<type> <base64> [comment]`, like ssh-ed25519 AAAAC3… alice@example.org",
                shown(&value)
            ))
        };
        if value.chars().any(|c| !is_text_char(c)) {
            return Err(bad("it holds a control or invisible character"));
        }
        let mut key =
            ssh_key::PublicKey::from_openssh(value.trim()).map_err(|e| bad(&e.to_string()))?;
        let comment = key
            .comment()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        key.set_comment(comment);
        if let ssh_key::Algorithm::Other(name) = key.algorithm() {
            return Err(bad(&format!("unknown key type {}", name.as_str())));
        }
        Ok(PublicKey { key })
    }
}

impl From<PublicKey> for String {
    fn from(value: PublicKey) -> String {
        value.to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key.to_openssh().map_err(|_| fmt::Error)?)
    }
}

/// A number above zero, read from TOML's integers; out of range is refused
/// with `$what` in the message.
macro_rules! nonzero_value {
    ($(#[$doc:meta])* $name:ident($nonzero:ty, $int:ty, $int_name:literal), $what:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = $int_name)]
        pub struct $name($nonzero);

        impl $name {
            /// A value written in sov's own code; zero does not compile.
            pub const fn constant(value: $int) -> $name {
                match <$nonzero>::new(value) {
                    Some(value) => $name(value),
                    None => panic!("zero"),
                }
            }

            pub fn get(self) -> $int {
                self.0.get()
            }
        }

        impl TryFrom<i64> for $name {
            type Error = NameError;
            fn try_from(value: i64) -> Result<Self, NameError> {
                <$int>::try_from(value)
                    .ok()
                    .and_then(<$nonzero>::new)
                    .map($name)
                    .ok_or_else(|| {
                        NameError::new(format!(
                            "{} {value} is out of range: expected 1 to {}",
                            $what,
                            <$int>::MAX
                        ))
                    })
            }
        }

        impl From<$name> for $int {
            fn from(value: $name) -> $int {
                value.get()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

nonzero_value!(
    /// A TCP or UDP port: 1 to 65535.
    PortNumber(NonZeroU16, u16, "u16"),
    "port"
);

nonzero_value!(
    /// A duration or lifetime in seconds that must be above 0.
    Seconds(NonZeroU32, u32, "u32"),
    "the number of seconds"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T: TryFrom<String>>(v: &str) -> bool {
        T::try_from(v.to_string()).is_ok()
    }

    #[test]
    fn interface_names_follow_linux_without_quotes() {
        assert!(ok::<Interface>("eth1.20"));
        assert!(ok::<Interface>("wg0"));
        assert!(!ok::<Interface>("eth0\" accept; meta l4proto tcp accept #"));
        assert!(!ok::<Interface>("eth1\ntable ip evil {}"));
        assert!(!ok::<Interface>("a-very-long-name0"));
        assert!(!ok::<Interface>(".."));
        assert!(!ok::<Interface>("eth/0"));
        assert!(!ok::<Interface>(""));
    }

    #[test]
    fn ssh_addresses_are_ips_or_host_names() {
        assert!(ok::<SshAddress>("10.20.10.2"));
        assert!(ok::<SshAddress>("fe80::1"));
        assert!(ok::<SshAddress>("fw1.Example.org"));
        assert!(!ok::<SshAddress>("127.0.10.*"));
        assert!(!ok::<SshAddress>("-oProxyCommand=sh"));
        assert!(!ok::<SshAddress>("10.0.0.1\n10.0.0.2 ssh-ed25519 AAAA"));
        assert!(!ok::<SshAddress>("host name"));
        assert!(!ok::<SshAddress>("[10.0.0.1]:22"));
    }

    #[test]
    fn keys_are_parsed_and_written_canonically() {
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKZMlQACrWCXasrgnwDeHKyO3WX811x4RGAHCm0KMwk";
        let key = PublicKey::try_from(format!("  {line}   alice@example.org ")).unwrap();
        assert_eq!(key.to_string(), format!("{line} alice@example.org"));
        assert_eq!(key.bare(), line);
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert!(PublicKey::try_from(format!("{line} a\nssh-ed25519 AAAA b")).is_err());
        assert!(PublicKey::try_from("ssh-foo AAAAB3NzaC1yc2E".to_string()).is_err());
        assert!(PublicKey::try_from("ssh-ed25519 AAAA".to_string()).is_err());
    }

    #[test]
    fn text_refuses_what_no_target_can_encode() {
        assert!(ok::<Text>(
            "Caddy on www proxies \"pay.example.org\" to BTCPay"
        ));
        assert!(ok::<Text>("Büro im 2. Stock"));
        assert!(!ok::<Text>("a\rinterface Vlan1"));
        assert!(!ok::<Text>("a\nb"));
        assert!(!ok::<Text>("\u{1b}[31mred"));
        assert!(!ok::<Text>("abc\u{202E}fed"));
        assert!(!ok::<Text>(&"x".repeat(MAX_TEXT + 1)));
    }

    #[test]
    fn small_values_have_their_ranges() {
        assert!(PortNumber::try_from(0).is_err());
        assert!(PortNumber::try_from(65536).is_err());
        assert_eq!(PortNumber::try_from(22).unwrap().get(), 22);
        assert!(Seconds::try_from(0).is_err());
        assert!(Seconds::try_from(-1).is_err());
        assert!(ok::<Package>("b3sum"));
        assert!(ok::<Package>("libc6.1-dev+x"));
        assert!(!ok::<Package>("zstd; rm -rf /"));
        assert!(!ok::<Package>("-o"));
        assert!(ok::<UserName>("root"));
        assert!(!ok::<UserName>("-oProxy"));
        assert!(ok::<Timezone>("America/Port-au-Prince"));
        assert!(ok::<Timezone>("Etc/GMT+5"));
        assert!(!ok::<Timezone>("../../etc/passwd"));
        assert!(!ok::<Timezone>("UTC\nruncmd: [x]"));
        assert!(ok::<AbsPath>("/var/lib/sov"));
        assert!(!ok::<AbsPath>("/var/../etc"));
        assert!(!ok::<AbsPath>("relative"));
    }
}
