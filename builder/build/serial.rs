//! SOA serials that need no clock: the commit time of the newest commit that
//! touched any input of the zone, read from the stack's git history.
//!
//! A later commit that changes a zone's inputs has a later commit time, so
//! the serial increases; building the same commit anywhere gives the same
//! serial. Inputs that differ from HEAD (changed, deleted or untracked) count
//! as one second after HEAD, so a dirty tree still moves the serial forward.
//! A stack outside git gets serial 1 (see the README).
//!
//! The stack's `.git` is not trusted: a checkout can carry a config that
//! runs commands (`core.fsmonitor`, hooks, clean filters from
//! `.gitattributes`, external diff, textconv, pagers, gpg). So sov runs only
//! `git log` and `git ls-tree`, which read the object database and never the
//! work tree, with those settings overridden, and decides what changed since
//! HEAD by hashing the work tree's files itself as git blobs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// What git says about when each input file last changed.
#[derive(Debug, Clone, Default)]
pub struct Serials {
    last_change: BTreeMap<String, u32>,
    dirty: BTreeSet<String>,
    head: u32,
}

/// Folders whose files can change a zone.
const WATCHED: [&str; 2] = ["sites", "templates"];

impl Serials {
    /// Reads the history once per build; a root that is not in a git
    /// work tree (or a machine without git) gives the fallback serial.
    pub fn read(root: &Path) -> Serials {
        let Some(log) = git(
            root,
            &[
                "log",
                "--format=%x00%ct",
                "--name-only",
                "--no-renames",
                "--relative",
                "--no-ext-diff",
                "--no-textconv",
                "--no-show-signature",
                "--",
            ],
        ) else {
            return Serials::default();
        };
        let mut serials = Serials::default();
        let mut time = 0u32;
        for line in log.lines() {
            if let Some(t) = line.strip_prefix('\0') {
                time = t.trim().parse().unwrap_or(0);
                serials.head = serials.head.max(time);
            } else if !line.is_empty() {
                // The log is newest first: the first time seen is the last change.
                serials.last_change.entry(line.to_string()).or_insert(time);
            }
        }
        let committed = git(root, &["ls-tree", "-r", "-z", "HEAD", "--"])
            .map(|listing| blobs(&listing))
            .unwrap_or_default();
        serials.dirty = changed_since(root, committed);
        serials
    }

    /// The serial for a zone made from these inputs: files, or folders
    /// standing for every file below them.
    pub fn for_inputs(&self, inputs: &[String]) -> u32 {
        let covers = |input: &str, file: &str| {
            file == input
                || file
                    .strip_prefix(input)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        let dirty = self
            .dirty
            .iter()
            .any(|f| inputs.iter().any(|i| covers(i, f)));
        if dirty {
            return self.head.saturating_add(1).max(1);
        }
        self.last_change
            .iter()
            .filter(|(f, _)| inputs.iter().any(|i| covers(i, f)))
            .map(|(_, &t)| t)
            .max()
            .unwrap_or(0)
            .max(1)
    }
}

/// `ls-tree -r -z` output (`<mode> <type> <id>\t<path>\0`...) as path to
/// blob id, relative to the stack root.
fn blobs(listing: &str) -> BTreeMap<String, String> {
    listing
        .split('\0')
        .filter_map(|entry| {
            let (meta, path) = entry.split_once('\t')?;
            let mut fields = meta.split(' ');
            let (_mode, kind, id) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "blob").then(|| (path.to_string(), id.to_string()))
        })
        .collect()
}

/// The watched files whose bytes are not HEAD's, and HEAD's files that are
/// gone. A repository whose ids are not SHA-1 (`objectFormat = sha256`)
/// cannot be compared here: all of its files count as changed.
fn changed_since(root: &Path, mut committed: BTreeMap<String, String>) -> BTreeSet<String> {
    let mut dirty = BTreeSet::new();
    for folder in WATCHED {
        // Not following links: a link is a blob of its target, as in git.
        for entry in walkdir::WalkDir::new(root.join(folder)).sort_by_file_name() {
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_dir() {
                continue;
            }
            let Some(rel) = entry
                .path()
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .map(|p| p.replace(std::path::MAIN_SEPARATOR, "/"))
            else {
                continue;
            };
            let id = committed.remove(&rel);
            if id.is_none() || id != blob_id(entry.path(), entry.file_type()) {
                dirty.insert(rel);
            }
        }
    }
    dirty.extend(committed.into_keys());
    dirty
}

/// The id git gives these bytes as a blob: SHA-1 of `blob <len>\0<bytes>`.
/// Only regular files and symlinks have one; nothing else is ever read (a
/// FIFO would block).
fn blob_id(path: &Path, kind: fs::FileType) -> Option<String> {
    let bytes = if kind.is_symlink() {
        fs::read_link(path)
            .ok()?
            .into_os_string()
            .into_encoded_bytes()
    } else if kind.is_file() {
        let mut bytes = Vec::new();
        fs::File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
        bytes
    } else {
        return None;
    };
    let mut sha = sha1_smol::Sha1::new();
    sha.update(format!("blob {}\0", bytes.len()).as_bytes());
    sha.update(&bytes);
    Some(sha.digest().to_string())
}

/// Runs a read-only git command on the watched folders with everything a
/// repository's config could make it run switched off, and no config but
/// the repository's own. `None` when git is missing or fails.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    const SAFE: [&str; 12] = [
        "-c",
        "core.fsmonitor=false",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.pager=cat",
        "-c",
        "log.showSignature=false",
        "-c",
        "diff.external=",
        "--no-pager",
        "--no-optional-locks",
    ];
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(root)
        .args(SAFE)
        .args(args)
        .args(WATCHED)
        .env_clear()
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ATTR_NOSYSTEM", "1")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env("GIT_PAGER", "cat")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// An empty git repository in a temporary folder.
    fn repository() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("git")
            .args(["init", "-q"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
        dir
    }

    fn commit(dir: &Path, file: &str, text: &str, time: u64) {
        fs::create_dir_all(dir.join(file).parent().unwrap()).unwrap();
        fs::write(dir.join(file), text).unwrap();
        let date = format!("@{time} +0000");
        for args in [vec!["add", "-A"], vec!["commit", "-qm", "x"]] {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(&args)
                .env("GIT_AUTHOR_DATE", &date)
                .env("GIT_COMMITTER_DATE", &date)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@t")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@t")
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
    }

    #[test]
    fn serial_follows_the_commits_that_touch_the_zone() {
        let dir = repository();
        commit(dir.path(), "sites/a.toml", "1", 1_700_000_000);
        commit(dir.path(), "sites/b.toml", "1", 1_700_000_100);
        let a = vec!["sites/a.toml".to_string()];
        let b = vec!["sites/b.toml".to_string()];
        let s = Serials::read(dir.path());
        assert_eq!(s.for_inputs(&a), 1_700_000_000);
        assert_eq!(s.for_inputs(&b), 1_700_000_100);
        commit(dir.path(), "sites/a.toml", "2", 1_700_000_200);
        let s = Serials::read(dir.path());
        assert_eq!(s.for_inputs(&a), 1_700_000_200);
        assert_eq!(s.for_inputs(&b), 1_700_000_100, "b's zone did not change");
        fs::write(dir.path().join("sites/b.toml"), "dirty").unwrap();
        let s = Serials::read(dir.path());
        assert_eq!(s.for_inputs(&b), 1_700_000_201);
        assert_eq!(s.for_inputs(&["templates".to_string()]), 1);
    }

    #[test]
    fn untracked_and_deleted_files_count_as_changed() {
        let dir = repository();
        commit(dir.path(), "sites/a.toml", "1", 1_700_000_000);
        commit(dir.path(), "templates/dns/zone.j2", "z", 1_700_000_000);
        let zone = vec!["templates/dns".to_string()];
        assert_eq!(Serials::read(dir.path()).for_inputs(&zone), 1_700_000_000);
        fs::write(dir.path().join("templates/dns/new.j2"), "n").unwrap();
        assert_eq!(Serials::read(dir.path()).for_inputs(&zone), 1_700_000_001);
        fs::remove_file(dir.path().join("templates/dns/new.j2")).unwrap();
        fs::remove_file(dir.path().join("sites/a.toml")).unwrap();
        let s = Serials::read(dir.path());
        assert_eq!(s.for_inputs(&zone), 1_700_000_000);
        assert_eq!(s.for_inputs(&["sites/a.toml".into()]), 1_700_000_001);
    }

    #[test]
    fn outside_git_the_serial_is_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Serials::read(dir.path()).for_inputs(&["sites".into()]), 1);
    }
}
