//! Backups and recovery end to end: real hosts (tests/common/hosts.rs),
//! real restic on this machine, data streamed over SSH. Each deploy backs
//! up the hosts' declared data first; `sov restore` puts a backup's data
//! back and returns the host to the generation it was taken under.

mod common;

use std::fs;
use std::io::Write;
use std::process::{Output, Stdio};

use common::hosts::{Host, Lab};
use common::labstack::{current, report, LabStack, PLAIN_IMAGE};
use common::stderr;

const POISON: &str = "poison-backup-2f9e-never-in-a-tag";

/// The `plain` image keeps /srv/app; stopping and starting its "services"
/// leaves a trace; its health check needs the data.
fn data_image() -> String {
    format!(
        r#"{PLAIN_IMAGE}
[data]
paths = ["/srv/app"]
stop = [["sh", "-c", "echo stop >>/var/log/app-services"]]
start = [["sh", "-c", "echo start >>/var/log/app-services"]]

[[health]]
name = "data"
command = ["test", "-f", "/srv/app/healthy"]

[[secrets]]
name = "app-token"
"#
    )
}

fn setup(lab: &Lab) -> LabStack {
    let stack = LabStack::new(lab);
    fs::write(stack.root().join("images/plain.toml"), data_image()).unwrap();
    let mut child = stack
        .command(&["secret", "set", "lab", "app-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(POISON.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stack.build();
    stack
}

/// A new generation in which the data host's activation changes: one more
/// health check.
fn next_generation(stack: &LabStack, n: u32) {
    let check = format!("\n[[health]]\nname = \"gen{n}\"\ncommand = [\"true\"]\n");
    fs::write(
        stack.root().join("images/plain.toml"),
        data_image() + &check,
    )
    .unwrap();
    stack.build();
}

fn sh(lab: &Lab, host: &Host, script: &str) -> String {
    lab.ssh_ok(host, &["sh", "-c", script])
}

/// Every entry of /srv/app: path, type, mode, owner, mtime, link target and
/// content hash.
fn listing(lab: &Lab, host: &Host) -> String {
    sh(
        lab,
        host,
        "cd /srv/app && find . -printf '%p %y %m %U:%G %Ts %l ' -exec sh -c 'if [ -f \"$1\" ] && [ ! -L \"$1\" ]; then sha256sum < \"$1\"; else echo; fi' _ {} \\; | sort",
    )
}

fn write_data(lab: &Lab, host: &Host, version: &str) {
    sh(
        lab,
        host,
        &format!(
            "set -e; mkdir -p /srv/app/sub /srv/app/empty
            echo {version} >/srv/app/file; chown 1234:5678 /srv/app/file; chmod 0640 /srv/app/file
            ln -sfn file /srv/app/link; ln -sfn /etc/hostname /srv/app/abs
            chown 42:43 /srv/app/sub; chmod 0750 /srv/app/sub
            head -c 300000 /dev/urandom >/srv/app/sub/blob-{version}
            touch /srv/app/healthy
            touch -h -d '2001-02-03 04:05:06' /srv/app/file /srv/app/link /srv/app/sub"
        ),
    );
}

fn backups(stack: &LabStack) -> serde_json::Value {
    let out = stack.sov(&["backups", "lab", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn deploy_ok(stack: &LabStack) -> Output {
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    out
}

#[test]
fn restore_puts_data_and_generation_back_together() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = setup(&lab);
    let host = &lab.hosts[1];
    let mut printed: Vec<u8> = Vec::new();

    // Generation 1, with data written under it.
    write_data(&lab, host, "one");
    deploy_ok(&stack);
    let at_one = listing(&lab, host);

    // Deploying 2 backs up the data of 1, services stopped around it.
    next_generation(&stack, 2);
    sh(&lab, host, "rm -f /var/log/app-services");
    let out = deploy_ok(&stack);
    printed.extend(out.stdout.iter().chain(&out.stderr));
    assert!(
        stderr(&out).contains("services are stopped during the backup"),
        "{}",
        stderr(&out)
    );
    let r = report(&out);
    let first = r["hosts"][1]["backup"]
        .as_str()
        .expect("a backup id")
        .to_string();
    assert!(
        r["hosts"][0]["backup"].is_null(),
        "the firewall keeps no data"
    );
    // The backup stopped and started the services; the switch then ran.
    assert_eq!(sh(&lab, host, "cat /var/log/app-services"), "stop\nstart\n");

    // The same data again adds under 1% of its size.
    let out = stack.sov(&[
        "backup",
        "lab",
        "--identity",
        stack.identity.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));
    let list = backups(&stack);
    let second = list.as_array().unwrap().last().unwrap();
    let (size, added) = (
        second["size"].as_u64().unwrap(),
        second["added"].as_u64().unwrap(),
    );
    assert!(size > 300_000, "{second}");
    assert!(
        added * 100 < size,
        "an unchanged backup added {added} of {size} bytes"
    );
    assert_eq!(second["generation"], 2);

    // Change the data, deploy 3.
    write_data(&lab, host, "two");
    sh(
        &lab,
        host,
        "rm -rf /srv/app/empty; echo extra >/srv/app/new",
    );
    next_generation(&stack, 3);
    deploy_ok(&stack);
    assert_eq!(current(host), Some(3));
    assert_ne!(listing(&lab, host), at_one);

    // Restore the backup of generation 1: the data as it was, and generation 1.
    let list = backups(&stack);
    let tagged_one = list
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["short_id"] == first.as_str())
        .unwrap();
    assert_eq!(tagged_one["generation"], 1);
    assert_eq!(tagged_one["host"], host.name.as_str());
    let out = stack.sov(&[
        "restore",
        "lab",
        "--backup",
        &first[..8],
        "--identity",
        stack.identity.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));
    assert_eq!(listing(&lab, host), at_one);
    assert_eq!(current(host), Some(1));
    // The old copy goes in the background, and nothing else goes with it.
    let srv = host.root.join("srv");
    let left = || -> Vec<String> {
        fs::read_dir(&srv)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "app")
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(left(), Vec::<String>::new(), "the old data was not removed");
    assert!(host.root.join("var/lib/sov/confirmed/1").exists());

    // The repository is sound; the secret is in no tag, listing or output.
    let out = stack.sov(&["backup", "verify", "lab", "--read", "100%"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stack.sov(&["backups", "lab"]);
    printed.extend(out.stdout.iter().chain(&out.stderr));
    let listed = serde_json::to_string(&backups(&stack)).unwrap();
    assert!(!listed.contains(POISON));
    assert!(!printed
        .windows(POISON.len())
        .any(|w| w == POISON.as_bytes()));
    let backup_log = sh(&lab, host, "cat /var/lib/sov/backup.log");
    assert!(!backup_log.contains(POISON));
}
