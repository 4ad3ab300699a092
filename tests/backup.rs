//! Backups and recovery end to end: real hosts (tests/common/hosts.rs),
//! real restic on this machine, data streamed over SSH. Each deploy backs
//! up the hosts' declared data first; `sov restore` puts a backup's data
//! back and returns the host to the generation it was taken under.

mod common;

use std::fs;
use std::process::{Output, Stdio};

use common::hosts::{Host, Lab};
use common::labstack::{current, report, LabStack, PLAIN_IMAGE};
use common::stderr;

const POISON: &str = "poison-backup-2f9e-never-in-a-tag";

/// The `plain` image keeps /srv/app; stopping and starting its "services"
/// leaves a trace, and starting leaves a process running that keeps every
/// descriptor it was not told to close (a daemon): it must not hold the
/// host's locks. Its health check needs the data.
fn data_image() -> String {
    format!(
        r#"{PLAIN_IMAGE}
[data]
paths = ["/srv/app"]
stop = [["sh", "-c", "echo stop >>/var/log/app-services"]]
start = [["sh", "-c", "echo start >>/var/log/app-services; sleep 600 </dev/null >/dev/null 2>&1 &"]]

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
    set_token(&stack, "lab");
    stack.build();
    stack
}

fn set_token(stack: &LabStack, site: &str) {
    let out = stack.secret_set(site, "app-token", POISON);
    assert!(out.status.success(), "{}", stderr(&out));
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

/// Every entry of /srv/app: path, type, mode, owner, mtime, link count,
/// link target and content hash.
fn listing(lab: &Lab, host: &Host) -> String {
    sh(
        lab,
        host,
        "cd /srv/app && find . -printf '%p %y %m %U:%G %Ts %n %l ' -exec sh -c 'if [ -f \"$1\" ] && [ ! -L \"$1\" ]; then sha256sum < \"$1\"; else echo; fi' _ {} \\; | sort",
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
            ln -f /srv/app/file /srv/app/sub/hard
            mkdir -p /srv/app/many/deeper
            for i in $(seq 1 40); do echo $i-{version} >/srv/app/many/f$i; done
            echo {version} >/srv/app/many/deeper/last
            touch /srv/app/healthy
            touch -h -d '2001-02-03 04:05:06' /srv/app/file /srv/app/link /srv/app/sub /srv/app/many"
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

/// Kills the host's backup tar as soon as it runs, from a command in the
/// background of the test.
fn kill_tar_when_it_runs(lab: &Lab, host: &Host) -> std::process::Child {
    kill_when_it_runs(lab, host, "tar -c -f - --sort=name")
}

/// Kills the first process on the host whose command line starts with
/// `command` as soon as it runs.
fn kill_when_it_runs(lab: &Lab, host: &Host, command: &str) -> std::process::Child {
    let script = format!("for i in $(seq 1 600); do for p in /proc/[0-9]*; do if tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q '^{command}'; then kill -9 ${{p#/proc/}}; exit 0; fi; done; sleep 0.05; done; exit 1");
    lab.ssh_command(host)
        .arg("--")
        .arg(common::hosts::shell_join(&["sh", "-c", &script]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_failed_backup_switches_nothing_and_restarts_services() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = setup(&lab);
    let host = &lab.hosts[1];
    write_data(&lab, host, "one");
    // Enough data that the stream is still running when it is cut.
    sh(&lab, host, "head -c 200000000 /dev/urandom >/srv/app/big");
    deploy_ok(&stack);

    // The stream dies halfway: the host's tar is killed.
    next_generation(&stack, 2);
    sh(&lab, host, "rm -f /var/log/app-services");
    let mut killer = kill_tar_when_it_runs(&lab, host);
    let out = stack.deploy(&[]);
    assert!(
        killer.wait().unwrap().success(),
        "the backup's tar never ran"
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("backup failed, nothing was switched"),
        "{}",
        stderr(&out)
    );
    assert_eq!(current(host), Some(1));
    assert_eq!(sh(&lab, host, "cat /var/log/app-services"), "stop\nstart\n");
    assert_eq!(
        backups(&stack).as_array().unwrap().len(),
        0,
        "no partial snapshot is kept"
    );
    let out = stack.sov(&["backup", "verify", "lab"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The repository's disk fills up.
    let repo_dir = stack.root().join(".sov/backups/lab/repo");
    let filled = stack.root().join(".sov/backups/lab/repo/data/fill");
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "sovtest-full"])
        .arg(repo_dir.join("data"))
        .status()
        .unwrap();
    assert!(mount.success());
    // The tmpfs hides the pack folders restic made: copy them back in.
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in $(seq 0 255); do mkdir -p {0}/$(printf %02x $i); done; head -c 60000000 /dev/zero >{1}",
            repo_dir.join("data").display(),
            filled.display()
        ))
        .status();
    sh(&lab, host, "rm -f /var/log/app-services");
    let out = stack.deploy(&[]);
    let unmount = || {
        std::process::Command::new("umount")
            .arg(repo_dir.join("data"))
            .status()
            .unwrap()
    };
    if out.status.code() != Some(1) {
        unmount();
        panic!("a full repository must fail the deploy: {}", stderr(&out));
    }
    assert!(stderr(&out).contains("backup failed"), "{}", stderr(&out));
    assert_eq!(current(host), Some(1));
    assert_eq!(sh(&lab, host, "cat /var/log/app-services"), "stop\nstart\n");
    assert!(unmount().success());
    let out = stack.sov(&["backup", "verify", "lab"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_restore_that_breaks_halfway_puts_the_old_data_back() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = setup(&lab);
    let host = &lab.hosts[1];
    let identity = stack.identity.to_str().unwrap().to_string();
    write_data(&lab, host, "one");
    // Enough data that the restore is still unpacking when a part is killed.
    sh(&lab, host, "head -c 200000000 /dev/urandom >/srv/app/big");
    deploy_ok(&stack);
    let out = stack.sov(&["backup", "lab", "--identity", &identity, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let taken = report(&out);
    let id = taken[1]["backup"].as_str().unwrap().to_string();
    write_data(&lab, host, "two");
    sh(&lab, host, "rm /srv/app/big /var/log/app-services");
    let before = listing(&lab, host);

    // One of the host's extractors dies halfway.
    let mut killer = kill_when_it_runs(&lab, host, "tar -x -f - -p");
    let out = stack.sov(&["restore", "lab", "--backup", &id, "--identity", &identity]);
    assert!(killer.wait().unwrap().success(), "no tar -x ever ran");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the data is as it was before the restore"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(&lab, host), before);
    assert_eq!(sh(&lab, host, "ls -a /srv"), ".\n..\napp\n");
    assert_eq!(sh(&lab, host, "cat /var/log/app-services"), "stop\nstart\n");
    assert_eq!(current(host), Some(1));
    assert!(host.root.join("var/lib/sov/confirmed/1").exists());

    // The same restore, unbroken, brings the backup back.
    let out = stack.sov(&["restore", "lab", "--backup", &id, "--identity", &identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(sh(&lab, host, "cat /srv/app/many/deeper/last").starts_with("one"));
    assert_eq!(sh(&lab, host, "stat -c %s /srv/app/big"), "200000000\n");
}

#[test]
fn a_wiped_host_comes_back_with_restore() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = setup(&lab);
    let host = &lab.hosts[1];
    let identity = stack.identity.to_str().unwrap().to_string();
    write_data(&lab, host, "one");
    deploy_ok(&stack);
    next_generation(&stack, 2);
    deploy_ok(&stack);
    let at_two = listing(&lab, host);
    let out = stack.sov(&["backup", "lab", "--identity", &identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<String> = backups(&stack)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["short_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);

    // Later generations, then a gc that keeps one: the generations of kept
    // backups stay.
    for n in 3..6 {
        next_generation(&stack, n);
    }
    let out = stack.sov(&["gc", "--keep", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let generations = stack.root().join(".sov/sites/lab/generations");
    for kept in ["1", "2", "5"] {
        assert!(
            generations.join(kept).exists(),
            "gc removed generation {kept}"
        );
    }
    assert!(!generations.join("3").exists());

    // Errors that touch nothing: an unknown id, a missing restic, a wrong password.
    let out = stack.sov(&[
        "restore",
        "lab",
        "--backup",
        "0badc0de",
        "--identity",
        &identity,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no backup `0badc0de` in site lab"),
        "{}",
        stderr(&out)
    );
    let bin = tempfile::tempdir().unwrap();
    for tool in ["ssh", "age", "age-keygen"] {
        std::os::unix::fs::symlink(format!("/usr/bin/{tool}"), bin.path().join(tool)).unwrap();
    }
    let out = stack
        .command(&["restore", "lab", "--identity", &identity])
        .env("PATH", bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("restic is needed"),
        "{}",
        stderr(&out)
    );
    let password = stack.root().join(".sov/secrets/lab/backup-password.age");
    let saved = fs::read(&password).unwrap();
    let out = stack.secret_set("lab", "backup-password", "not-the-password");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stack.sov(&["restore", "lab", "--identity", &identity]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("password is wrong"),
        "{}",
        stderr(&out)
    );
    fs::write(&password, saved).unwrap();
    assert_eq!(current(host), Some(2));
    assert_eq!(listing(&lab, host), at_two);

    // Wipe the host: sov's state, its data and its secrets are gone.
    sh(&lab, host, "rm -rf /var/lib/sov /srv/app /run/sov");
    let out = stack.sov(&["restore", "lab", "--identity", &identity, "--json"]);
    assert!(out.status.success(), "restore: {}", stderr(&out));
    let restored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["backups"][0]["short_id"], ids[1].as_str());
    assert_eq!(current(host), Some(2));
    assert_eq!(listing(&lab, host), at_two);
    // Health checks ran on the host as part of the switch; confirm them again.
    let health = sh(
        &lab,
        host,
        "SOV_MANIFEST=/var/lib/sov/current sh /var/lib/sov/store/$(sed -n 's/^  \"activate\": \"\\(.*\\)\",$/\\1/p' /var/lib/sov/current) check 2>&1",
    );
    assert!(health.contains("healthy"), "{health}");
    assert_eq!(sh(&lab, host, "cat /run/sov/secrets/app-token"), POISON);

    // A generation the store has lost is refused before anything is touched.
    fs::remove_file(generations.join("1")).unwrap();
    let out = stack.sov(&[
        "restore",
        "lab",
        "--backup",
        &ids[0],
        "--identity",
        &identity,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no longer has: nothing was touched"),
        "{}",
        stderr(&out)
    );
    assert_eq!(current(host), Some(2));
}

#[test]
fn a_backup_of_another_site_is_refused_by_name() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = setup(&lab);
    let identity = stack.identity.to_str().unwrap().to_string();
    // A second site on the same machines, with its own state root on them.
    let lab2 = fs::read_to_string(stack.root().join("sites/lab.toml"))
        .unwrap()
        .replacen("name = \"lab\"", "name = \"lab2\"", 1)
        .replace(
            "internal = \"lab.example.internal\"",
            "internal = \"lab2.example.internal\"",
        )
        .replace(
            "ssh = { host_key",
            "ssh = { root = \"/var/lib/sov-lab2\", host_key",
        );
    fs::write(stack.root().join("sites/lab2.toml"), lab2).unwrap();
    stack.build();
    set_token(&stack, "lab2");
    write_data(&lab, &lab.hosts[1], "one");
    let out = stack.sov(&["deploy", "lab2", "--identity", &identity]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stack.sov(&["backup", "lab2", "--identity", &identity, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let taken: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = taken[1]["backup"].as_str().unwrap().to_string();

    deploy_ok(&stack);
    let out = stack.sov(&["restore", "lab", "--backup", &id, "--identity", &identity]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "no backup `{id}` in site lab: it is a backup of site lab2"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(current(&lab.hosts[1]), Some(1));
}
