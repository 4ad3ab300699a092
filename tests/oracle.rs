//! The round-trip oracle on the example stack: every artifact kind read back
//! by its real tool is exactly what the stack's TOML declares. One test per
//! kind; each reports every difference of every artifact at once.

mod common;

use common::oracle::{self, Reading};
use common::{artifacts, require, Stack};

/// Builds the example stack and reads back its artifacts of `kind`.
fn read_back(kind: &str, tools: &[&str]) -> Option<Vec<(String, Reading)>> {
    for tool in tools {
        if !require(tool) {
            return None;
        }
    }
    let stack = Stack::example();
    let report = stack.build_json();
    let of_kind: Vec<_> = artifacts(&report)
        .into_iter()
        .filter(|a| a.kind == kind)
        .collect();
    assert!(
        !of_kind.is_empty(),
        "the example stack has no {kind} artifact"
    );
    let readings = oracle::read_all(stack.root(), &of_kind).expect("the stack's files parse");
    Some(readings.into_iter().collect())
}

/// Every artifact matches the stack, and each holds something of `what`.
fn assert_exact(readings: &[(String, Reading)], what: &str) {
    let mut problems = Vec::new();
    for (name, reading) in readings {
        for m in &reading.mismatches {
            problems.push(format!("{name}: {m}"));
        }
        if reading.counts.get(what).copied().unwrap_or(0) == 0 {
            problems.push(format!(
                "{name}: the oracle counted no {what}: {:?}",
                reading.counts
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences between the artifacts and the stack:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn firewall_rules_are_exactly_the_declared_ones() {
    if !common::require_root() {
        return;
    }
    if let Some(r) = read_back("firewall", &["nft", "unshare"]) {
        assert_exact(&r, "rules");
        assert_exact(&r, "comments");
    }
}

#[test]
fn zone_records_are_exactly_the_declared_and_derived_ones() {
    if let Some(r) = read_back("dns", &["named-checkzone"]) {
        assert_exact(&r, "records");
    }
}

#[test]
fn dhcp_subnets_and_reservations_are_exactly_the_declared_ones() {
    if let Some(r) = read_back("dhcp", &[]) {
        assert_exact(&r, "subnets");
        assert_exact(&r, "reservations");
    }
}

#[test]
fn switch_config_has_exactly_the_declared_vlans_ports_and_commands() {
    if let Some(r) = read_back("switch", &[oracle::IOS_PYTHON]) {
        assert_exact(&r, "ports");
        assert_exact(&r, "vlans");
    }
}

#[test]
fn seed_images_hold_exactly_the_declared_users_keys_and_network() {
    if let Some(r) = read_back("cloud-init", &[]) {
        assert_exact(&r, "users");
        assert_exact(&r, "ssh keys");
        assert_exact(&r, "interfaces");
    }
}

#[test]
fn bundles_hold_exactly_the_declared_services() {
    if let Some(r) = read_back("compose", &[]) {
        assert_exact(&r, "services");
    }
}

#[test]
fn activation_scripts_assign_exactly_the_declared_values() {
    if let Some(r) = read_back("activation", &["sh"]) {
        assert_exact(&r, "assignments and health checks");
    }
}
