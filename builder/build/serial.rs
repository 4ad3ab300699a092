//! SOA serials that need no clock: the commit time of the newest commit that
//! touched any input of the zone, read from the stack's git history.
//!
//! A later commit that changes a zone's inputs has a later commit time, so
//! the serial increases; building the same commit anywhere gives the same
//! serial. Inputs changed but not committed count as one second after HEAD,
//! so a dirty tree still moves the serial forward. A stack outside git gets
//! serial 1 (see the README).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

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
                "--",
            ],
            &WATCHED,
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
        let changed = git(
            root,
            &["diff", "--name-only", "--relative", "HEAD", "--"],
            &WATCHED,
        );
        let untracked = git(
            root,
            &["ls-files", "--others", "--exclude-standard", "--"],
            &WATCHED,
        );
        for list in [changed, untracked].into_iter().flatten() {
            serials
                .dirty
                .extend(list.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
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

fn git(root: &Path, args: &[&str], paths: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .args(paths)
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("git")
            .args(["init", "-q"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
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
    fn outside_git_the_serial_is_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Serials::read(dir.path()).for_inputs(&["sites".into()]), 1);
    }
}
