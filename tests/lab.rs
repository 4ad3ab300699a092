//! The test-host harness itself: hosts are separate machines, reachable from
//! the test process by ssh with their pinned key and by nothing else.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::hosts::{HostSpec, Lab};
use common::stderr;

#[test]
fn lab_hosts_are_separate_machines_reachable_only_by_pinned_key() {
    let Some(lab) = Lab::start(3) else { return };

    let mut machine_ids = Vec::new();
    for host in &lab.hosts {
        let out = lab.ssh_ok(
            host,
            &[
                "sh",
                "-c",
                "uname -n; cat /etc/machine-id; ls /var/lib; b3sum --version; zstd --version",
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], host.name, "hostname of {}:\n{out}", host.name);
        assert_eq!(lines[1].len(), 32, "machine id of {}:\n{out}", host.name);
        machine_ids.push(lines[1].to_string());
        assert!(out.contains("b3sum "), "{}: no b3sum:\n{out}", host.name);
        assert!(
            out.contains("Zstandard CLI"),
            "{}: no zstd:\n{out}",
            host.name
        );
    }
    machine_ids.sort();
    machine_ids.dedup();
    assert_eq!(machine_ids.len(), 3, "machine ids are not distinct");

    // Each host has its own /var/lib/sov, seen from the test process too.
    let (h1, h2) = (&lab.hosts[0], &lab.hosts[1]);
    lab.ssh_ok(
        h1,
        &[
            "sh",
            "-c",
            "mkdir -p /var/lib/sov && echo one > /var/lib/sov/x",
        ],
    );
    let out = lab.ssh(h2, &["test", "-e", "/var/lib/sov/x"]);
    assert_eq!(out.status.code(), Some(1), "h1's file is visible on h2");
    assert_eq!(
        fs::read_to_string(h1.root.join("var/lib/sov/x")).expect("h1's file"),
        "one\n"
    );
    assert!(!h2.root.join("var/lib/sov/x").exists());

    // Plain ssh as sov runs it: the lab's known_hosts lets it in; one that
    // pins another host's key, or no key, is refused before any command runs.
    let wrong = lab.dir.join("wrong_known_hosts");
    fs::write(&wrong, format!("{} {}\n", h1.address, h2.host_key_pub)).expect("write");
    let empty = lab.dir.join("empty_known_hosts");
    fs::write(&empty, "").expect("write");
    let strict_ssh = |known_hosts: &Path, file: &str| {
        Command::new("ssh")
            .arg("-i")
            .arg(&lab.client_key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .arg(format!("root@{}", h1.address))
            .args(["--", "touch", file])
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    };
    let out = strict_ssh(&lab.known_hosts, "/var/lib/sov/pinned");
    assert!(out.status.success(), "pinned key: {}", stderr(&out));
    assert!(h1.root.join("var/lib/sov/pinned").exists());
    for known_hosts in [&wrong, &empty] {
        let out = strict_ssh(known_hosts, "/var/lib/sov/reached");
        assert_eq!(out.status.code(), Some(255), "{}", known_hosts.display());
        assert!(
            stderr(&out).contains("Host key verification failed"),
            "{}: {}",
            known_hosts.display(),
            stderr(&out)
        );
    }
    assert!(!h1.root.join("var/lib/sov/reached").exists());
}

#[test]
fn lab_private_segment_joins_hosts_but_not_the_test_process() {
    let specs = vec![
        HostSpec::new("fw").link("lan0", "lan", "10.10.1.1/24"),
        HostSpec::new("srv").link("lan0", "lan", "10.10.1.20/24"),
    ];
    let Some(lab) = Lab::start_with(specs) else {
        return;
    };
    let (fw, srv) = (lab.host("fw"), lab.host("srv"));
    lab.ssh_ok(fw, &["ping", "-c1", "-W2", "10.10.1.20"]);
    lab.ssh_ok(srv, &["ping", "-c1", "-W2", "10.10.1.1"]);
    // Pinned at its segment address, srv would let the test process in if
    // the segment were reachable. (A bare TCP connect proves nothing: a
    // proxy on the default route may accept anything.)
    let pinned = lab.dir.join("segment_known_hosts");
    fs::write(&pinned, format!("10.10.1.20 {}\n", srv.host_key_pub)).expect("write");
    let out = Command::new("ssh")
        .arg("-i")
        .arg(&lab.client_key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", pinned.display()))
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=3", "root@10.10.1.20", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run ssh");
    assert!(
        !out.status.success(),
        "the test process reached the private segment"
    );
}

/// A measurement more than a check (the deploy benchmark runs ten hosts):
/// `cargo test --test lab -- --ignored --nocapture` prints the times.
#[test]
#[ignore = "measurement: starts ten hosts"]
fn lab_starts_ten_hosts() {
    let Some(lab) = Lab::start(10) else { return };
    for host in &lab.hosts {
        assert_eq!(lab.ssh_ok(host, &["uname", "-n"]).trim(), host.name);
    }
}
