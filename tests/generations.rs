//! `sov generations` on real hosts (tests/common/hosts.rs): each generation
//! with the hosts that run it now, read over SSH without writing anything;
//! a host that cannot be reached is listed as such.

mod common;

use std::process::Command;

use common::hosts::Lab;
use common::labstack::{wait_for_collection, LabStack};
use common::{snapshot, stderr, stdout};

fn hosts_of(listing: &serde_json::Value, generation: u64) -> Vec<String> {
    listing["generations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["generation"] == generation)
        .unwrap_or_else(|| panic!("no generation {generation} in {listing}"))["live"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

fn host<'a>(listing: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    listing["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {listing}"))
}

#[test]
fn generations_shows_which_hosts_run_each_and_names_the_unreachable() {
    let Some(lab) = Lab::start(4) else { return };
    let stack = LabStack::new(&lab);
    let identity = stack.identity.to_str().unwrap().to_string();
    stack.build();
    let out = stack.deploy(&["--hosts", "h1,h2,h3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stack.write_site(&lab, "eth0", &["\n[[records]]\nzone = \"internal\"\nname = \"extra\"\ntype = \"A\"\nvalue = \"10.0.0.1\"\n"]);
    stack.build();
    let out = stack.deploy(&["--hosts", "h1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // h3 drops off the network; h4 never got a deploy.
    let h3 = lab.host("h3");
    let down = Command::new("ip")
        .args(["-n", &h3.netns, "link", "set", "eth0", "down"])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", stderr(&down));

    for h in &lab.hosts {
        wait_for_collection(h);
    }
    let before: Vec<_> = lab
        .hosts
        .iter()
        .map(|h| snapshot(&h.root.join("var/lib/sov")))
        .collect();
    let out = stack.sov(&["generations", "lab", "--identity", &identity, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["site"], "lab");
    assert_eq!(listing["current"], 2);
    assert_eq!(hosts_of(&listing, 1), ["h2"], "{listing}");
    assert_eq!(hosts_of(&listing, 2), ["h1"], "{listing}");
    for g in listing["generations"].as_array().unwrap() {
        assert_eq!(g["current"], g["generation"] == 2, "{g}");
        assert!(
            g["manifest"].as_str().unwrap().starts_with("blake3-"),
            "{g}"
        );
        assert!(g["recorded"].as_u64().is_some(), "{g}");
    }
    assert_eq!(host(&listing, "h1")["state"], "live");
    assert_eq!(host(&listing, "h1")["generation"], 2);
    assert_eq!(host(&listing, "h2")["state"], "live");
    assert_eq!(host(&listing, "h2")["generation"], 1);
    assert_eq!(host(&listing, "h3")["state"], "unreachable");
    assert!(
        host(&listing, "h3")["error"]
            .as_str()
            .unwrap()
            .contains(&h3.address.to_string()),
        "{listing}"
    );
    assert_eq!(host(&listing, "h4")["state"], "none");
    let after: Vec<_> = lab
        .hosts
        .iter()
        .map(|h| snapshot(&h.root.join("var/lib/sov")))
        .collect();
    assert!(before == after, "sov generations wrote on a host");

    // The plain form says the same in lines.
    let out = stack.sov(&["generations", "lab", "--identity", &identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].trim_start().starts_with("1  ") && lines[0].ends_with("live: h2"),
        "{text}"
    );
    assert!(
        lines[1].contains("(current)") && lines[1].ends_with("live: h1"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("h3: unreachable: ")),
        "{text}"
    );
    assert!(lines.contains(&"h4: no generation deployed"), "{text}");

    // Another state directory, built from the same files, has one
    // generation: h2 runs its artifacts (the new record changed only the
    // zones, which h1 serves) under the same number; h1 runs a generation
    // it does not have.
    let up = Command::new("ip")
        .args(["-n", &h3.netns, "link", "set", "eth0", "up"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
    let elsewhere = stack.root().join("elsewhere");
    let state = elsewhere.to_str().unwrap();
    let out = stack.sov(&["--state", state, "build"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stack.sov(&[
        "--state",
        state,
        "generations",
        "lab",
        "--identity",
        &identity,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(host(&listing, "h1")["state"], "unknown", "{listing}");
    assert_eq!(host(&listing, "h1")["generation"], 2, "{listing}");
    assert!(
        hosts_of(&listing, 1).contains(&"h2".to_string()),
        "{listing}"
    );
}
