//! Shared helpers of the integration tests: a private copy of the example
//! stack, running the real `sov` binary, and the rule for system tools.
#![allow(dead_code)]
pub mod bench;
pub mod hosts;
pub mod labstack;
pub mod oracle;
pub mod scale;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root, which is itself the example stack.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the example stack (sites, images, templates) in a temporary
/// folder outside git, so that tests may edit it and serials are stable.
pub struct Stack {
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub fn example() -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["sites", "images", "templates"] {
            copy_tree(&repo().join(sub), &dir.path().join(sub));
        }
        Stack { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join(".sov")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).expect("read stack file")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write stack file");
    }

    /// Runs `sov --root <stack> --state <stack>/.sov ARGS`.
    pub fn sov(&self, args: &[&str]) -> Output {
        sov_with_state(self.root(), &self.state(), args)
    }

    /// `sov build --json`, which must succeed; returns the parsed report.
    pub fn build_json(&self) -> serde_json::Value {
        build_json_in(self.root(), &self.state())
    }
}

pub fn sov_with_state(root: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("--root")
        .arg(root)
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .expect("run sov")
}

pub fn build_json_in(root: &Path, state: &Path) -> serde_json::Value {
    let out = sov_with_state(root, state, &["build", "--json"]);
    assert!(
        out.status.success(),
        "sov build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("build --json prints JSON")
}

/// Every artifact of a `--json` report: (site, kind, name, host, path).
pub fn artifacts(report: &serde_json::Value) -> Vec<Artifact> {
    let mut all = Vec::new();
    for site in report["sites"].as_array().expect("sites") {
        for a in site["artifacts"].as_array().expect("artifacts") {
            all.push(Artifact {
                site: site["name"].as_str().expect("name").to_string(),
                kind: a["kind"].as_str().expect("kind").to_string(),
                name: a["name"].as_str().expect("name").to_string(),
                host: a["host"].as_str().map(str::to_string),
                path: PathBuf::from(a["path"].as_str().expect("path")),
            });
        }
    }
    all
}

#[derive(Debug, Clone)]
pub struct Artifact {
    pub site: String,
    pub kind: String,
    pub name: String,
    pub host: Option<String>,
    pub path: PathBuf,
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(from).expect("under root");
        let target = to.join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target).expect("mkdir");
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Every file under `dir` with its bytes and every symlink with its target:
/// two equal snapshots mean nothing was written.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    if !dir.exists() {
        return files;
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.expect("walk");
        let rel = entry
            .path()
            .strip_prefix(dir)
            .expect("under dir")
            .to_path_buf();
        if entry.path_is_symlink() {
            let target = fs::read_link(entry.path()).expect("readlink");
            files.insert(rel, target.into_os_string().into_encoded_bytes());
        } else if entry.file_type().is_file() {
            files.insert(rel, fs::read(entry.path()).expect("read"));
        } else {
            files.insert(rel, Vec::new());
        }
    }
    files
}

/// Whether a system tool is installed. Missing in CI (CI set) is a failure;
/// missing on a laptop skips the test with a reason.
pub fn require(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required in CI: run .ci/install-deps");
        }
        eprintln!("skipped: {tool} not installed (run .ci/install-deps)");
    }
    found
}

/// Whether the test runs as root (network namespaces, nft). Required in CI.
pub fn require_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("this test needs root in CI");
        }
        eprintln!("skipped: needs root");
    }
    root
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
