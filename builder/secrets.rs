//! Secret values on the management machine: one age-encrypted file per site
//! and name, `<state>/secrets/<site>/<name>.age`, decrypted only in memory,
//! on the way to a host. Values go to and from `age` through pipes, never
//! on a command line or in the environment, and never into the store.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::collections::BTreeMap;

use crate::model::{HostName, SiteName, Stack};

/// Characters of a generated value: 32 of them carry 190 bits.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const GENERATED_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("unknown site `{0}`")]
    UnknownSite(String),
    #[error("no host of site {site} needs a secret `{name}`: expected one of {known}")]
    Undeclared {
        site: String,
        name: String,
        known: String,
    },
    #[error("the value of secret `{0}` is empty: pipe it in on stdin")]
    Empty(String),
    #[error("secret `{name}` of site {site} is not set: run `sov secret set {site} {name}` (the value is read from stdin)")]
    NotSet { site: String, name: String },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`age` is needed to keep secrets encrypted: install Debian's `age` package")]
    NoAge(#[source] std::io::Error),
    #[error("age could not {action} {path}: {stderr}")]
    Age {
        action: &'static str,
        path: PathBuf,
        stderr: String,
    },
}

impl SecretError {
    /// Whether the operator's input, not the machine, is at fault.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            SecretError::UnknownSite(_)
                | SecretError::Undeclared { .. }
                | SecretError::Empty(_)
                | SecretError::NotSet { .. }
        )
    }
}

/// A secret that hosts of a site need, as their images declare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// sov generates a value when none is set.
    pub generate: bool,
    pub hosts: Vec<String>,
}

/// The secrets the hosts of `site` need, by name.
pub fn declared(
    stack: &Stack,
    site: &str,
) -> Result<(SiteName, BTreeMap<HostName, Declared>), SecretError> {
    let site = stack
        .site(site)
        .ok_or_else(|| SecretError::UnknownSite(site.to_string()))?;
    let mut declared: BTreeMap<HostName, Declared> = BTreeMap::new();
    for host in &site.hosts {
        let Some(image) = stack.image(host.image.as_str()) else {
            continue;
        };
        for s in &image.secrets {
            let d = declared.entry(s.name.clone()).or_insert(Declared {
                generate: s.generate,
                hosts: Vec::new(),
            });
            d.generate &= s.generate;
            d.hosts.push(host.name.to_string());
        }
    }
    // The site's backup repository opens with a generated secret of its own.
    if stack.keeps_data(site) {
        declared
            .entry(crate::backup::password_secret())
            .or_insert(Declared {
                generate: true,
                hosts: Vec::new(),
            });
    }
    Ok((site.name.clone(), declared))
}

/// A secret's value: printed and debugged as `<redacted>`, zeroed when dropped.
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the zeroing from being optimised away as a dead store.
        std::hint::black_box(&self.0);
    }
}

/// How a secret came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Set by the operator (`sov secret set`).
    Stored,
    /// Generated now, because the image asks sov to generate it.
    Generated,
}

/// The encrypted secrets of every site, and the age identity that opens them.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
    identity: PathBuf,
}

impl Vault {
    /// The vault under `state`. The identity is `identity` when given (an
    /// operator who keeps the key elsewhere), else `<state>/secrets/identity.txt`,
    /// created on first use.
    pub fn open(state: &Path, identity: Option<PathBuf>) -> Vault {
        let dir = state.join("secrets");
        Vault {
            identity: identity.unwrap_or_else(|| dir.join("identity.txt")),
            dir,
        }
    }

    pub fn identity(&self) -> &Path {
        &self.identity
    }

    fn path(&self, site: &SiteName, name: &HostName) -> PathBuf {
        self.dir
            .join(site.as_str())
            .join(format!("{}.age", name.as_str()))
    }

    /// Whether `name` has a value for `site`.
    pub fn is_set(&self, site: &SiteName, name: &HostName) -> bool {
        self.path(site, name).is_file()
    }

    /// Encrypts `value` and replaces the stored one atomically.
    pub fn set(
        &self,
        site: &SiteName,
        name: &HostName,
        value: &SecretValue,
    ) -> Result<(), SecretError> {
        let path = self.path(site, name);
        let tmp = self.encrypt_to_temp(&path, value)?;
        fs::rename(&tmp, &path).map_err(|source| SecretError::Io {
            action: "store the secret in",
            path: path.clone(),
            source,
        })?;
        sync_dir(&path)
    }

    /// The value of `name`, decrypted.
    pub fn get(&self, site: &SiteName, name: &HostName) -> Result<SecretValue, SecretError> {
        let path = self.path(site, name);
        if !path.is_file() {
            return Err(SecretError::NotSet {
                site: site.to_string(),
                name: name.to_string(),
            });
        }
        self.decrypt(&path)
    }

    /// The value of `name`; a new random one, stored, when it has none yet.
    /// Two deploys generating at once agree: the first value stored wins.
    pub fn get_or_generate(
        &self,
        site: &SiteName,
        name: &HostName,
    ) -> Result<(SecretValue, Origin), SecretError> {
        let path = self.path(site, name);
        if path.is_file() {
            return Ok((self.decrypt(&path)?, Origin::Stored));
        }
        let value = generate()?;
        let tmp = self.encrypt_to_temp(&path, &value)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_dir(&path)?;
                Ok((value, Origin::Generated))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((self.decrypt(&path)?, Origin::Stored))
            }
            Err(source) => Err(SecretError::Io {
                action: "store the secret in",
                path,
                source,
            }),
        }
    }

    /// Names with a stored value for `site`, sorted.
    pub fn names(&self, site: &SiteName) -> Result<Vec<String>, SecretError> {
        let dir = self.dir.join(site.as_str());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SecretError::Io {
                    action: "list",
                    path: dir,
                    source,
                })
            }
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".age"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Creates the identity (mode 0600) when there is none.
    fn ensure_identity(&self) -> Result<(), SecretError> {
        if self.identity.is_file() {
            return Ok(());
        }
        let parent = self.identity.parent().unwrap_or(Path::new("."));
        create_private_dir(parent)?;
        let tmp = parent.join(".identity.tmp");
        let _ = fs::remove_file(&tmp);
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .map_err(SecretError::NoAge)?;
        if !out.status.success() {
            return Err(SecretError::Age {
                action: "create the identity",
                path: self.identity.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        // Two first uses at once: the first identity stays, the other is dropped.
        let linked = fs::hard_link(&tmp, &self.identity);
        let _ = fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(SecretError::Io {
                action: "create the identity",
                path: self.identity.clone(),
                source: e,
            }),
            _ => sync_dir(&self.identity),
        }
    }

    fn encrypt_to_temp(&self, path: &Path, value: &SecretValue) -> Result<PathBuf, SecretError> {
        self.ensure_identity()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let tmp = dir.join(format!(".{}.tmp", std::process::id()));
        let ciphertext = self.age(&["--encrypt"], value.expose(), path, "encrypt")?;
        let mut file = fs::File::create(&tmp).map_err(|source| SecretError::Io {
            action: "write",
            path: tmp.clone(),
            source,
        })?;
        file.write_all(&ciphertext)
            .and_then(|()| file.sync_all())
            .map_err(|source| SecretError::Io {
                action: "write",
                path: tmp.clone(),
                source,
            })?;
        Ok(tmp)
    }

    fn decrypt(&self, path: &Path) -> Result<SecretValue, SecretError> {
        let ciphertext = fs::read(path).map_err(|source| SecretError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        self.age(&["--decrypt"], &ciphertext, path, "decrypt")
            .map(SecretValue::new)
    }

    /// Runs age with `input` on its stdin; its stdout is the answer.
    fn age(
        &self,
        args: &[&str],
        input: &[u8],
        path: &Path,
        action: &'static str,
    ) -> Result<Vec<u8>, SecretError> {
        let mut child = Command::new("age")
            .args(args)
            .arg("--identity")
            .arg(&self.identity)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(SecretError::NoAge)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = std::thread::scope(|s| {
            let writer = s.spawn(move || stdin.write_all(input));
            let mut stdout = Vec::new();
            let read = child
                .stdout
                .take()
                .expect("stdout is piped")
                .read_to_end(&mut stdout);
            let written = writer.join().unwrap_or(Ok(()));
            read.and(written).map(|_| stdout)
        });
        let out = child.wait_with_output().map_err(SecretError::NoAge)?;
        match feed {
            Ok(stdout) if out.status.success() => Ok(stdout),
            _ => Err(SecretError::Age {
                action,
                path: path.to_path_buf(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }
}

/// A new random value from the kernel's generator.
fn generate() -> Result<SecretValue, SecretError> {
    let mut random = fs::File::open("/dev/urandom").map_err(|source| SecretError::Io {
        action: "read",
        path: "/dev/urandom".into(),
        source,
    })?;
    let mut value = Vec::with_capacity(GENERATED_LEN);
    let mut buf = [0u8; 64];
    while value.len() < GENERATED_LEN {
        random
            .read_exact(&mut buf)
            .map_err(|source| SecretError::Io {
                action: "read",
                path: "/dev/urandom".into(),
                source,
            })?;
        // Rejection sampling: 248 is the largest multiple of 62 below 256.
        value.extend(
            buf.iter()
                .filter(|&&b| b < 248)
                .map(|&b| ALPHABET[usize::from(b) % ALPHABET.len()]),
        );
    }
    value.truncate(GENERATED_LEN);
    buf.fill(0);
    Ok(SecretValue::new(value))
}

fn create_private_dir(dir: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SecretError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })
}

fn sync_dir(path: &Path) -> Result<(), SecretError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SecretError::Io {
            action: "sync",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_values_use_the_alphabet_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.expose().len(), GENERATED_LEN);
        assert!(a.expose().iter().all(|c| ALPHABET.contains(c)));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn values_never_print() {
        let v = SecretValue::new(b"hunter2".to_vec());
        assert_eq!(format!("{v:?}"), "<redacted>");
    }
}
