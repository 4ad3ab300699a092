//! The store, the derivation cache and site generations, through the CLI.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{artifacts, stderr, stdout, Stack};

fn total(report: &serde_json::Value, field: &str) -> u64 {
    report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

fn generation(report: &serde_json::Value, site: &str) -> u64 {
    report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == site)
        .unwrap()["generation"]
        .as_u64()
        .unwrap()
}

#[test]
fn unchanged_rebuild_renders_nothing_and_records_no_generation() {
    let stack = Stack::example();
    let first = stack.build_json();
    assert!(total(&first, "rendered") > 0);
    assert_eq!(total(&first, "reused"), 0);
    assert_eq!(generation(&first, "fra1"), 1);

    let second = stack.build_json();
    assert_eq!(total(&second, "rendered"), 0, "nothing changed");
    assert_eq!(total(&second, "reused"), total(&first, "rendered"));
    assert_eq!(generation(&second, "fra1"), 1, "no new generation");
    let generations = stack.state().join("sites/fra1/generations");
    assert_eq!(fs::read_dir(generations).unwrap().count(), 1);
}

#[test]
fn editing_one_record_rerenders_only_what_reads_it() {
    let stack = Stack::example();
    let first = stack.build_json();
    let site = stack.read("sites/fra1.toml");
    stack.write(
        "sites/fra1.toml",
        &format!("{site}\n[[records]]\nzone = \"internal\"\nname = \"printer\"\ntype = \"A\"\nvalue = \"10.99.99.99\"\n"),
    );
    let second = stack.build_json();
    let fra1 = second["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "fra1")
        .unwrap();
    // Only the internal zone: activation scripts name it, not its hash.
    let rendered = fra1["rendered"].as_u64().unwrap();
    assert_eq!(rendered, 1, "rendered {rendered}");
    assert_eq!(generation(&second, "fra1"), 2);
    assert_eq!(
        generation(&second, "nyc1"),
        generation(&first, "nyc1"),
        "the mirror did not change"
    );
    let current = fs::read_link(stack.state().join("sites/fra1/current")).unwrap();
    assert_eq!(current.to_str(), Some("generations/2"));
}

#[test]
fn store_objects_are_read_only_and_named_by_hash() {
    let stack = Stack::example();
    let report = stack.build_json();
    for a in artifacts(&report) {
        let meta = fs::metadata(&a.path).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o222,
            0,
            "{} is writable",
            a.name
        );
        let file = a.path.file_name().unwrap().to_str().unwrap();
        assert!(file.ends_with(&a.name), "{file}");
        assert_eq!(file.as_bytes()[64], b'-');
    }
    let leftovers: Vec<_> = fs::read_dir(stack.state().join("store"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "staged files left behind");
}

#[test]
fn store_verify_names_a_corrupt_object() {
    let stack = Stack::example();
    let report = stack.build_json();
    let ok = stack.sov(&["store", "verify"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("objects verified"));

    let all = artifacts(&report);
    let victims = [
        all.iter().find(|a| a.kind == "dns").unwrap(),
        all.iter().find(|a| a.kind == "compose").unwrap(),
    ];
    for victim in victims {
        let mut perms = fs::metadata(&victim.path).unwrap().permissions();
        perms.set_mode(0o644);
        fs::set_permissions(&victim.path, perms).unwrap();
        let mut bytes = fs::read(&victim.path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        fs::write(&victim.path, bytes).unwrap();
    }
    let bad = stack.sov(&["store", "verify"]);
    assert_eq!(bad.status.code(), Some(1));
    for victim in victims {
        let name = victim.path.file_name().unwrap().to_str().unwrap();
        assert!(
            stderr(&bad).contains(name),
            "{} not named in:\n{}",
            name,
            stderr(&bad)
        );
    }
}

#[test]
fn gc_keeps_the_newest_generations_and_what_they_need() {
    let stack = Stack::example();
    let original = stack.read("sites/fra1.toml");
    let mut reports = Vec::new();
    for n in 0..4 {
        stack.write(
            "sites/fra1.toml",
            &format!("{original}\n[[records]]\nzone = \"internal\"\nname = \"gen{n}\"\ntype = \"TXT\"\nvalue = \"generation {n}\"\n"),
        );
        reports.push(stack.build_json());
    }
    assert_eq!(generation(&reports[3], "fra1"), 4);
    let out = stack.sov(&["gc", "--keep", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut kept: Vec<String> = fs::read_dir(stack.state().join("sites/fra1/generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["3", "4"]);
    for a in artifacts(&reports[3]) {
        assert!(
            a.path.exists(),
            "gc removed {} of the current generation",
            a.name
        );
    }
    for a in artifacts(&reports[2]) {
        assert!(
            a.path.exists(),
            "gc removed {} of a kept generation",
            a.name
        );
    }
    let zone_of_first = artifacts(&reports[0])
        .into_iter()
        .find(|a| a.site == "fra1" && a.name.contains("zone-fra1"))
        .unwrap();
    assert!(
        !zone_of_first.path.exists(),
        "gc kept an object no kept generation needs"
    );
    let verify = stack.sov(&["store", "verify"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // The cache forgot what gc removed: rebuilding the first generation renders again.
    stack.write("sites/fra1.toml", &format!("{original}\n[[records]]\nzone = \"internal\"\nname = \"gen0\"\ntype = \"TXT\"\nvalue = \"generation 0\"\n"));
    let again = stack.build_json();
    assert!(total(&again, "rendered") > 0);
    assert!(artifacts(&again).iter().all(|a| a.path.exists()));
}

#[test]
fn build_check_rebuilds_bit_for_bit() {
    let stack = Stack::example();
    let out = stack.sov(&["build", "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("bit for bit"));
    let leftovers: Vec<_> = fs::read_dir(stack.state())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("check-"))
        .collect();
    assert!(leftovers.is_empty(), "--check left its scratch store");
}

#[test]
fn json_report_lists_every_kind_with_absolute_paths() {
    let stack = Stack::example();
    let report = stack.build_json();
    let kinds: std::collections::BTreeSet<String> =
        artifacts(&report).into_iter().map(|a| a.kind).collect();
    for kind in [
        "firewall",
        "switch",
        "dhcp",
        "dns",
        "cloud-init",
        "compose",
        "activation",
    ] {
        assert!(kinds.contains(kind), "no {kind} artifact");
    }
    for site in report["sites"].as_array().unwrap() {
        let manifest = site["manifest"].as_str().unwrap();
        assert!(manifest.starts_with('/'));
        let m: serde_json::Value = serde_json::from_slice(&fs::read(manifest).unwrap()).unwrap();
        assert_eq!(m["site"], site["name"]);
    }
    for a in artifacts(&report) {
        assert!(
            a.path.is_absolute() && a.path.exists(),
            "{}",
            a.path.display()
        );
    }
}

#[test]
fn building_one_site_leaves_the_others_alone() {
    let stack = Stack::example();
    let out = stack.sov(&["build", "--json", "nyc1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nyc1"]);
    assert!(!stack.state().join("sites/fra1").exists());
    let unknown = stack.sov(&["build", "nowhere"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown site `nowhere`"));
}
