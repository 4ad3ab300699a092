//! Hardening of the build's writes: a failed build writes nothing, a
//! corrupt object is never reused, the stack's git config runs nothing,
//! long domains make valid file names, and a state path that is a file is
//! bad input.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{artifacts, snapshot, stderr, Stack};

/// A bundle file template that fails when it renders, after the compose
/// file and the other files of the same bundle.
const LATE_TEMPLATE: &str = "templates/compose/files/strfry/strfry.conf.j2";

fn break_template(stack: &Stack) {
    let text = stack.read(LATE_TEMPLATE);
    stack.write(
        LATE_TEMPLATE,
        &format!("{text}\n{{{{ undefined_variable }}}}\n"),
    );
}

fn flip_a_byte(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o444)).unwrap();
}

fn staged_leftovers(state: &Path) -> Vec<String> {
    fs::read_dir(state.join("store"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_template_error_leaves_no_state_directory_behind() {
    let stack = Stack::example();
    break_template(&stack);
    let out = stack.sov(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("strfry.conf.j2"), "{}", stderr(&out));
    assert!(
        !stack.state().exists(),
        "a failed build created {:?}",
        snapshot(&stack.state()).keys().collect::<Vec<_>>()
    );
}

#[test]
fn bad_input_leaves_no_state_directory_behind() {
    let stack = Stack::example();
    let site = stack.read("sites/fra1.toml");
    stack.write("sites/fra1.toml", &format!("{site}\nnot toml =\n"));
    let out = stack.sov(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!stack.state().exists());
}

#[test]
fn a_failed_build_leaves_an_existing_state_byte_identical() {
    let stack = Stack::example();
    stack.build_json();
    let before = snapshot(&stack.state());
    // A change that makes every host of the site render again, then a
    // template that fails late: rendered objects must not be staged.
    let site = stack.read("sites/fra1.toml");
    stack.write(
        "sites/fra1.toml",
        &site.replace("fra1.example.internal", "fra1.example.lan"),
    );
    break_template(&stack);
    let out = stack.sov(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(staged_leftovers(&stack.state()), Vec::<String>::new());
    assert!(
        snapshot(&stack.state()) == before,
        "a failed build changed the state directory"
    );
}

#[test]
fn files_staged_by_a_killed_build_are_removed_by_the_next_one() {
    let stack = Stack::example();
    stack.build_json();
    let leftover = stack.state().join("store/.tmp-4000000-leftover");
    fs::write(&leftover, "half an object").unwrap();
    let site = stack.read("sites/fra1.toml");
    stack.write(
        "sites/fra1.toml",
        &format!("{site}\n[[records]]\nzone = \"internal\"\nname = \"new\"\ntype = \"A\"\nvalue = \"10.99.99.98\"\n"),
    );
    stack.build_json();
    assert!(!leftover.exists());
}

#[test]
fn concurrent_builds_of_a_fresh_state_record_one_generation() {
    let stack = Stack::example();
    let builds: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sov"))
                .arg("--root")
                .arg(stack.root())
                .args(["build", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for build in builds {
        let out = build.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let generations = fs::read_dir(stack.state().join("sites/fra1/generations")).unwrap();
    assert_eq!(generations.count(), 1);
    let verify = stack.sov(&["store", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_corrupt_object_is_rendered_again_and_replaced_not_reused() {
    let stack = Stack::example();
    let first = stack.build_json();
    let all = artifacts(&first);
    let victims: Vec<_> = ["firewall", "compose", "cloud-init"]
        .iter()
        .map(|kind| all.iter().find(|a| &a.kind == kind).unwrap().path.clone())
        .chain([std::path::PathBuf::from(
            first["sites"][0]["manifest"].as_str().unwrap(),
        )])
        .collect();
    let sound: Vec<Vec<u8>> = victims.iter().map(|p| fs::read(p).unwrap()).collect();
    for victim in &victims {
        flip_a_byte(victim);
    }

    let out = stack.sov(&["build"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for victim in &victims {
        let name = victim.file_name().unwrap().to_str().unwrap();
        assert!(
            stderr(&out).contains(name) && stderr(&out).contains("corrupt"),
            "{name} not named corrupt in:\n{}",
            stderr(&out)
        );
    }
    for (victim, bytes) in victims.iter().zip(&sound) {
        assert!(
            fs::read(victim).unwrap() == *bytes,
            "{victim:?} not replaced"
        );
        let mode = fs::metadata(victim).unwrap().permissions().mode();
        assert_eq!(mode & 0o222, 0, "{victim:?} is writable");
    }
    // The same inputs make the same generation: nothing new is recorded.
    let generations = fs::read_dir(stack.state().join("sites/fra1/generations")).unwrap();
    assert_eq!(generations.count(), 1);
    let verify = stack.sov(&["store", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn build_check_and_store_verify_call_corruption_corrupt() {
    let stack = Stack::example();
    let report = stack.build_json();
    let victim = artifacts(&report)
        .into_iter()
        .find(|a| a.kind == "dns")
        .unwrap()
        .path;
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    flip_a_byte(&victim);

    let verify = stack.sov(&["store", "verify"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stderr(&verify).contains(&format!("corrupt: {}", victim.display())),
        "{}",
        stderr(&verify)
    );

    let check = stack.sov(&["build", "--check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("corrupt") && stderr(&check).contains(&name),
        "{}",
        stderr(&check)
    );
    assert!(!stderr(&check).contains("not reproducible"));
    // The build replaced it: the store is sound again.
    let again = stack.sov(&["build", "--check"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let verify = stack.sov(&["store", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_238_character_internal_domain_builds() {
    // 238 characters leave room for the site's longest internal owner
    // (`_ipp._tcp`, `gw-servers`) within DNS's 253: a longer domain is
    // refused at validation, and this one still makes too long a file name.
    let stack = Stack::example();
    let label = "a".repeat(63);
    let domain = format!("{label}.{label}.{label}.{}", "b".repeat(46));
    assert_eq!(domain.len(), 238);
    let site = stack.read("sites/fra1.toml");
    stack.write(
        "sites/fra1.toml",
        &site.replace(
            "internal = \"fra1.example.internal\"",
            &format!("internal = \"{domain}\""),
        ),
    );
    let report = stack.build_json();
    for entry in fs::read_dir(stack.state().join("store")).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(name.len() <= 200, "{name:?} is {} bytes", name.len());
    }
    let zone = artifacts(&report)
        .into_iter()
        .find(|a| a.kind == "dns" && a.name.starts_with("fra1-zone-aaa"))
        .expect("the internal zone");
    let text = fs::read_to_string(&zone.path).unwrap();
    assert!(text.contains(&format!("{domain}.")), "{text}");
    // Activation finds the zone by the name its object has.
    let activation = artifacts(&report)
        .into_iter()
        .find(|a| a.name == "fra1-ns1-activate.sh")
        .unwrap();
    let script = fs::read_to_string(activation.path).unwrap();
    assert!(
        script.contains(&format!("object {}", zone.name)),
        "{script}"
    );
    let verify = stack.sov(&["store", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}

#[test]
fn a_state_path_that_is_a_file_is_bad_input() {
    let stack = Stack::example();
    let file = stack.path("state-file");
    fs::write(&file, "not a directory").unwrap();
    for args in [&["build"][..], &["store", "verify"], &["gc"]] {
        let out = common::sov_with_state(stack.root(), &file, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("not a folder"), "{}", stderr(&out));
        assert_eq!(fs::read_to_string(&file).unwrap(), "not a directory");
    }
    let below = file.join("state");
    let out = common::sov_with_state(stack.root(), &below, &["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

fn git(dir: &Path, args: &[&str]) {
    let date = "@1700000000 +0000";
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn zone_serial(report: &serde_json::Value, name: &str) -> String {
    let zone = artifacts(report)
        .into_iter()
        .find(|a| a.name == name)
        .unwrap();
    let text = fs::read_to_string(zone.path).unwrap();
    text.lines()
        .find(|l| l.contains("; serial"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_stacks_git_config_runs_nothing() {
    if !common::require("git") {
        return;
    }
    let stack = Stack::example();
    let root = stack.root();
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "stack"]);
    let before = stack.build_json();
    let zone = "fra1-zone-fra1.example.internal";
    assert_eq!(zone_serial(&before, zone), "1700000000");

    let marker = root.join("marker");
    let script = root.join("evil.sh");
    fs::write(
        &script,
        format!("#!/bin/sh\ntouch '{}'\ncat\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let evil = script.display().to_string();
    for (key, value) in [
        ("core.fsmonitor", evil.as_str()),
        ("filter.evil.clean", evil.as_str()),
        ("filter.evil.smudge", evil.as_str()),
        ("filter.evil.required", "true"),
        ("diff.external", evil.as_str()),
        ("core.pager", evil.as_str()),
        ("pager.log", evil.as_str()),
        ("log.showSignature", "true"),
        ("gpg.program", evil.as_str()),
    ] {
        git(root, &["config", key, value]);
    }
    fs::write(root.join(".gitattributes"), "* filter=evil diff=evil\n").unwrap();
    git(root, &["config", "diff.evil.textconv", &evil]);
    // A newer mtime, same bytes: `git status` would run the clean filter.
    let site = stack.read("sites/fra1.toml");
    stack.write("sites/fra1.toml", &site);

    let after = stack.build_json();
    assert!(!marker.exists(), "the stack's git config ran a command");
    assert_eq!(zone_serial(&after, zone), "1700000000");
    let generation = |r: &serde_json::Value| {
        r["sites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["manifest"].to_string(), s["generation"].to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(generation(&after), generation(&before), "a new generation");

    // A real change still moves the serial past HEAD.
    stack.write(
        "sites/fra1.toml",
        &format!("{site}\n[[records]]\nzone = \"internal\"\nname = \"new\"\ntype = \"A\"\nvalue = \"10.99.99.97\"\n"),
    );
    let changed = stack.build_json();
    assert!(!marker.exists(), "the stack's git config ran a command");
    assert_eq!(zone_serial(&changed, zone), "1700000001");
}
