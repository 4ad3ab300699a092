//! `sov deploy` end to end on real hosts: systemd-nspawn containers with
//! their own network namespace, sshd and host key (tests/common/hosts.rs).
//! Every deploy goes through OpenSSH.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::hosts::Lab;
use common::labstack::{current, report, LabStack, PLAIN_IMAGE};
use common::stderr;

#[test]
fn deploy_switches_every_host_and_a_second_deploy_does_nothing() {
    let Some(lab) = Lab::start(3) else { return };
    let stack = LabStack::new(&lab);
    stack.build();
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    let r = report(&out);
    for h in r["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "switched", "{h}");
        assert!(h["bytes_sent"].as_u64().unwrap() > 0);
    }
    for host in &lab.hosts {
        assert_eq!(
            current(host),
            Some(1),
            "{} is not on generation 1",
            host.name
        );
        let confirmed = host.root.join("var/lib/sov/confirmed/1");
        assert!(confirmed.exists(), "{} was not confirmed", host.name);
        // Every object on the host has the hash its name says.
        let listing = lab.ssh_ok(host, &["sh", "-c", "cd /var/lib/sov/store && for f in *; do case $f in *.zst) h=$(zstd -dcq \"$f\" | b3sum --no-names);; *) h=$(b3sum --no-names \"$f\");; esac; [ \"${f%%-*}\" = \"$h\" ] || echo \"BAD $f\"; done"]);
        assert!(!listing.contains("BAD"), "{}: {listing}", host.name);
    }
    // The firewall host runs the site's ruleset.
    let rules = lab.ssh_ok(&lab.hosts[0], &["nft", "list", "table", "inet", "filter"]);
    assert!(rules.contains("SSH from VLAN mgmt"), "{rules}");

    let again = stack.deploy(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    for h in report(&again)["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "up-to-date", "{h}");
        assert_eq!(h["bytes_sent"], 0);
        // Connecting and reading its state took time, which the report says.
        assert!(
            h["seconds"].as_f64().unwrap() > 0.0,
            "an up-to-date host reports no time spent on it: {h}"
        );
    }
}

#[test]
fn a_failed_first_deploy_leaves_no_generation_and_stops_what_it_started() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = LabStack::new(&lab);
    let plain = &lab.hosts[1];
    // The plain host's first generation fails its health check; its `stop`
    // leaves a mark where the test can see it.
    fs::write(
        stack.root().join("images/plain.toml"),
        PLAIN_IMAGE.replace("command = [\"true\"]", "command = [\"false\"]")
            + "[data]\npaths = [\"/var/lib/sov-test-data\"]\nstop = [[\"touch\", \"/run/sov-test-stopped\"]]\n",
    )
    .unwrap();
    stack.build();
    let out = stack.deploy(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        current(plain),
        None,
        "{} keeps a generation\n{err}",
        plain.name
    );
    let stopped = lab.ssh(plain, &["test", "-e", "/run/sov-test-stopped"]);
    assert!(
        stopped.status.success(),
        "{}: rolled back to no generation, but the services of the failed one were not stopped\n{err}",
        plain.name
    );
    assert!(
        err.lines().any(|l| l.contains(&plain.name)
            && l.contains("no generation")
            && l.contains("stopped")),
        "sov says what became of {}:\n{err}",
        plain.name
    );
}

#[test]
fn deploy_rolls_back_when_the_new_firewall_cuts_ssh() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = LabStack::new(&lab);
    stack.build();
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fw = &lab.hosts[0];
    assert_eq!(current(fw), Some(1));

    // The new ruleset allows SSH only on an interface the firewall lacks.
    stack.write_site(&lab, "eth9", &[]);
    stack.build();
    let timeout = 5;
    let started = Instant::now();
    let out = stack.deploy(&[
        "--confirm-timeout",
        &timeout.to_string(),
        "--hosts",
        &fw.name,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&fw.name),
        "the error names the host: {}",
        stderr(&out)
    );

    let deadline = started + Duration::from_secs(timeout + 10) + Duration::from_secs(30);
    loop {
        let back = current(fw) == Some(1) && lab.ssh(fw, &["true"]).status.success();
        if back {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} is not back on generation 1 and reachable",
            fw.name
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let rules = lab.ssh_ok(fw, &["nft", "list", "table", "inet", "filter"]);
    assert!(
        rules.contains("\"eth0\""),
        "the old ruleset is back: {rules}"
    );
}

#[test]
fn a_failing_health_check_rolls_back_every_host_of_the_run() {
    let Some(lab) = Lab::start(3) else { return };
    let stack = LabStack::new(&lab);
    stack.build();
    assert!(stack.deploy(&[]).status.success());

    // Generation 2 changes every host, and its plain image's health check fails.
    let failing = PLAIN_IMAGE.replace("command = [\"true\"]", "command = [\"false\"]");
    fs::write(stack.root().join("images/plain.toml"), failing).unwrap();
    stack.build();
    let out = stack.deploy(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r = report(&out);
    let outcomes: Vec<&str> = r["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.contains(&"failed"), "{outcomes:?}");
    for host in &lab.hosts {
        assert_eq!(
            current(host),
            Some(1),
            "{} was left on the new generation",
            host.name
        );
    }
}

#[test]
fn a_host_presenting_another_key_is_refused_and_nothing_is_sent() {
    let Some(lab) = Lab::start(1) else { return };
    let stack = LabStack::new(&lab);
    let site = fs::read_to_string(stack.root().join("sites/lab.toml")).unwrap();
    let wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHzD9J5UrJC7KIbiQ1pJlfnxtccwQ75TsKa1fepLnrhV";
    let key = lab.hosts[0].host_key_pub.trim().to_string();
    fs::write(
        stack.root().join("sites/lab.toml"),
        site.replace(&key, wrong),
    )
    .unwrap();
    stack.build();
    let out = stack.deploy(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&lab.hosts[0].name) && err.to_lowercase().contains("host key"),
        "{err}"
    );
    assert!(
        !lab.hosts[0].root.join("var/lib/sov/store").exists(),
        "something was sent"
    );
}

#[test]
fn rollback_returns_every_host_to_the_previous_generation() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = LabStack::new(&lab);
    stack.build();
    assert!(stack.deploy(&[]).status.success());
    stack.write_site(&lab, "eth0", &["\n[[records]]\nzone = \"internal\"\nname = \"extra\"\ntype = \"A\"\nvalue = \"10.0.0.1\"\n"]);
    stack.build();
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(current(&lab.hosts[0]), Some(2));
    let identity = stack.identity.display().to_string();
    let out = stack.sov(&["rollback", "lab", "--identity", &identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    for host in &lab.hosts {
        assert_eq!(current(host), Some(1), "{}", host.name);
    }
}

#[test]
fn rollback_to_a_generation_the_host_collected_sends_its_objects_again() {
    let Some(lab) = Lab::start(1) else { return };
    let stack = LabStack::new(&lab);
    let host = &lab.hosts[0];
    for n in 0..7 {
        let record = format!("\n[[records]]\nzone = \"internal\"\nname = \"gen{n}\"\ntype = \"TXT\"\nvalue = \"generation {n}\"\n");
        stack.write_site(&lab, "eth0", &[&record]);
        stack.build();
        let out = stack.deploy(&[]);
        assert!(out.status.success(), "deploy {n}: {}", stderr(&out));
    }
    assert_eq!(current(host), Some(7));
    let generations = host.root.join("var/lib/sov/generations");
    assert!(
        !generations.join("1").exists(),
        "the host kept generation 1"
    );
    let identity = stack.identity.display().to_string();
    let out = stack.sov(&[
        "rollback",
        "lab",
        "--to",
        "1",
        "--identity",
        &identity,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = report(&out)["hosts"][0]["objects_sent"].as_u64().unwrap();
    assert!(sent > 0, "generation 1's objects had to travel again");
    assert_eq!(current(host), Some(1));
    let zone = lab.ssh_ok(
        host,
        &[
            "sh",
            "-c",
            "cat /var/lib/sov/store/*-lab-zone-lab.example.internal",
        ],
    );
    assert!(zone.contains("generation 0"), "{zone}");
}
