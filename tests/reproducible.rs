//! Determinism: the same stack built in two stores, under a different time
//! zone, locale, umask and working directory, gives identical bytes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{artifacts, Stack};

fn build(
    stack: &Stack,
    state: &Path,
    cwd: &Path,
    tz: &str,
    lang: &str,
    umask: &str,
) -> serde_json::Value {
    let script = format!("umask {umask} && exec \"$0\" --root \"$1\" --state \"$2\" build --json");
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_sov"))
        .arg(stack.root())
        .arg(state)
        .current_dir(cwd)
        .env("TZ", tz)
        .env("LANG", lang)
        .env("LC_ALL", lang)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn bytes_by_artifact(report: &serde_json::Value) -> BTreeMap<String, Vec<u8>> {
    artifacts(report)
        .into_iter()
        .map(|a| (format!("{}/{}", a.site, a.name), fs::read(&a.path).unwrap()))
        .collect()
}

#[test]
fn two_builds_in_different_environments_give_identical_bytes() {
    let stack = Stack::example();
    let elsewhere = tempfile::tempdir().unwrap();
    let a = build(&stack, &stack.state(), stack.root(), "UTC", "C", "022");
    let b = build(
        &stack,
        &elsewhere.path().join("state"),
        elsewhere.path(),
        "Pacific/Chatham",
        "de_DE.UTF-8",
        "077",
    );
    let (a, b) = (bytes_by_artifact(&a), bytes_by_artifact(&b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(differ.is_empty(), "artifacts differ: {differ:?}");
    assert!(a.len() > 20, "only {} artifacts", a.len());
}

#[test]
fn manifests_do_not_mention_the_machine() {
    let stack = Stack::example();
    let report = stack.build_json();
    let state = stack.state();
    let needle = state.to_str().unwrap();
    for a in artifacts(&report) {
        if a.kind == "compose" || a.kind == "cloud-init" {
            continue;
        }
        let text = String::from_utf8_lossy(&fs::read(&a.path).unwrap()).into_owned();
        assert!(
            !text.contains(needle),
            "{} names the state directory",
            a.name
        );
        assert!(
            !text.contains(stack.root().to_str().unwrap()),
            "{} names the stack root",
            a.name
        );
    }
}
