//! `sov init` writes this repository's example stack, which builds.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{repo, stderr};

fn files_under(dir: &std::path::Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .filter(|p| !p.starts_with(".sov") && p != ".gitignore")
        .collect()
}

#[test]
fn init_writes_the_example_stack_which_builds() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("mystack");
    let out = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("init")
        .arg(&stack)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let mut expected = BTreeSet::new();
    for sub in ["sites", "images", "templates"] {
        for f in files_under(&repo().join(sub)) {
            expected.insert(format!("{sub}/{f}"));
        }
    }
    assert_eq!(
        files_under(&stack),
        expected,
        "init must write every file of the example"
    );

    let build = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("--root")
        .arg(&stack)
        .arg("build")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", stderr(&build));
    assert!(stack.join(".sov/sites/fra1/current").exists());
}

#[test]
fn init_refuses_a_folder_with_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("init")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}
