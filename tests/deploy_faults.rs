//! `sov deploy` under faults, end to end on real hosts (tests/common/hosts.rs):
//! the deploying process killed at any moment, a host that does not answer,
//! a full disk, a missing prerequisite, a second deploy racing the first,
//! health checks outlasting the confirm timeout, and the zones a DNS host
//! actually serves across a deploy and a rollback.
//!
//! What a host holds is read from its own filesystem and hashed here with
//! blake3, independently of sov's code.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::hosts::{Host, Lab};
use common::labstack::{current, dig_until, report, LabStack, FIREWALL_IMAGE, PLAIN_IMAGE};
use common::{require, stderr, stdout};

/// Seconds a host waits for confirmation before its watchdog rolls it back
/// (`--confirm-timeout` of every deploy here).
const CONFIRM_TIMEOUT: &str = "3";
/// Kill moments of the SIGKILL sweep.
const KILLS: usize = 50;
/// How long the hosts may take to finish what a dead deploy left running
/// (a remote step, a watchdog sleeping CONFIRM_TIMEOUT, its rollback).
const SETTLE: Duration = Duration::from_secs(60);

// ---- the stack's generations ------------------------------------------------

/// Generation 2 of the lab site changes every host: each image gets a new
/// cloud-init command (a new seed image per host) and a renamed health
/// check (a new activation script), and the internal zone a new record.
fn write_generation_2(stack: &LabStack, lab: &Lab) {
    let changed = |image: &str, check: &str| {
        format!(
            "{}\n[cloud_init]\nruncmd = [[\"true\", \"generation-2\"]]\n",
            image.replace(
                &format!("name = \"{check}\""),
                &format!("name = \"{check}-2\"")
            )
        )
    };
    fs::write(
        stack.root().join("images/plain.toml"),
        changed(PLAIN_IMAGE, "alive"),
    )
    .unwrap();
    fs::write(
        stack.root().join("images/labfw.toml"),
        changed(FIREWALL_IMAGE, "ruleset"),
    )
    .unwrap();
    stack.write_site(lab, "eth0", &[&record("extra", "10.0.0.1")]);
}

fn record(name: &str, address: &str) -> String {
    format!(
        "\n[[records]]\nzone = \"internal\"\nname = \"{name}\"\ntype = \"A\"\nvalue = \"{address}\"\n"
    )
}

/// Replaces the site file's `from` by `to`, which must occur.
fn edit_site(stack: &LabStack, from: &str, to: &str) {
    let path = stack.root().join("sites/lab.toml");
    let site = fs::read_to_string(&path).unwrap();
    assert!(site.contains(from), "the lab site has no {from:?}:\n{site}");
    fs::write(&path, site.replace(from, to)).unwrap();
}

fn confirm_timeout_args() -> [&'static str; 2] {
    ["--confirm-timeout", CONFIRM_TIMEOUT]
}

fn confirm_timeout() -> Duration {
    Duration::from_secs(CONFIRM_TIMEOUT.parse().unwrap())
}

fn deploy_ok(stack: &LabStack, what: &str) -> Output {
    let out = stack.deploy(&confirm_timeout_args());
    assert!(
        out.status.success(),
        "{what}: sov deploy failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    out
}

fn rollback_ok(stack: &LabStack, to: u64, what: &str) {
    let identity = stack.identity.to_str().unwrap();
    let to = to.to_string();
    let mut args = vec!["rollback", "lab", "--to", &to, "--identity", identity];
    args.extend(confirm_timeout_args());
    let out = stack.sov(&args);
    assert!(
        out.status.success(),
        "{what}: sov rollback --to {to} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
}

// ---- a host's sov folder, audited -------------------------------------------

/// sov's folder on a host, seen from the test process.
fn sov_dir(host: &Host) -> PathBuf {
    host.root.join("var/lib/sov")
}

/// What a host's sov folder holds, checked against the generations it may
/// legitimately run.
#[derive(Debug)]
struct Audit {
    generation: Option<u64>,
    /// `confirmed/<current>` exists.
    confirmed: bool,
    /// Work files of agent steps in the store (`.incoming.*` staging
    /// folders, gc's `.live.*`): never taken for objects, which a dot
    /// cannot start.
    work_files: Vec<String>,
    problems: Vec<String>,
}

/// `<64 lowercase hex>-<name>`: the name of an object that entered the store.
fn final_name(name: &str) -> Option<&str> {
    let (hash, rest) = name.split_at_checked(64)?;
    let ok = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && rest.len() > 1
        && rest.starts_with('-');
    ok.then_some(hash)
}

/// blake3 of an object's fixed encoding: zstd objects are hashed
/// decompressed (builder/store/object.rs says why).
fn encoded_hash(name: &str, bytes: &[u8]) -> Result<String, String> {
    if name.ends_with(".zst") {
        let plain = zstd::stream::decode_all(bytes).map_err(|e| format!("not zstd: {e}"))?;
        Ok(blake3::hash(&plain).to_hex().to_string())
    } else {
        Ok(blake3::hash(bytes).to_hex().to_string())
    }
}

/// Checks that object `name` is in `store` with the hash its name says.
fn check_object(store: &Path, name: &str) -> Result<(), String> {
    let want = final_name(name).ok_or_else(|| format!("{name:?} is not an object name"))?;
    let bytes = fs::read(store.join(name)).map_err(|e| format!("object {name}: {e}"))?;
    let got = encoded_hash(name, &bytes).map_err(|e| format!("object {name}: {e}"))?;
    if got == want {
        Ok(())
    } else {
        Err(format!("object {name} has blake3 {got}"))
    }
}

/// Audits the sov folder `dir` of one host. `manifests` maps each
/// generation the host may run to its host manifest's object name.
fn audit(dir: &Path, manifests: &BTreeMap<u64, String>) -> Audit {
    let mut audit = Audit {
        generation: None,
        confirmed: false,
        work_files: Vec::new(),
        problems: Vec::new(),
    };
    let store = dir.join("store");
    match fs::read_link(dir.join("current")) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => audit.problems.push(format!("current: {e}")),
        Ok(target) => {
            let n = target
                .to_str()
                .and_then(|t| t.strip_prefix("generations/"))
                .and_then(|n| n.parse::<u64>().ok());
            match n {
                None => audit.problems.push(format!(
                    "current -> {} (not generations/<N>)",
                    target.display()
                )),
                Some(n) => {
                    audit.generation = Some(n);
                    audit.confirmed = dir.join(format!("confirmed/{n}")).exists();
                    audit.problems.extend(check_generation(dir, n, manifests));
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(&store) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                audit.work_files.push(name);
            } else if final_name(&name).is_none() {
                audit.problems.push(format!(
                    "store/{name}: neither an object nor an agent's work file"
                ));
            } else if !entry.file_type().is_ok_and(|t| t.is_file()) {
                audit.problems.push(format!("store/{name} is not a file"));
            } else if let Err(e) = check_object(&store, &name) {
                // An object renamed away since the listing is not corrupt.
                if store.join(&name).exists() {
                    audit.problems.push(format!("store: {e}"));
                }
            }
        }
    }
    audit
}

/// Generation `n` is whole: its link names the expected manifest, and the
/// manifest and every object it lists are in the store, hashes intact.
fn check_generation(dir: &Path, n: u64, manifests: &BTreeMap<u64, String>) -> Vec<String> {
    let Some(manifest) = manifests.get(&n) else {
        return vec![format!(
            "current is generation {n}, expected one of {:?}",
            manifests.keys().collect::<Vec<_>>()
        )];
    };
    let link = dir.join(format!("generations/{n}"));
    let want = format!("../store/{manifest}");
    match fs::read_link(&link) {
        Ok(t) if t == Path::new(&want) => {}
        Ok(t) => {
            return vec![format!(
                "generations/{n} -> {}, expected {want}",
                t.display()
            )]
        }
        Err(e) => return vec![format!("current is {n} but generations/{n}: {e}")],
    }
    let store = dir.join("store");
    if let Err(e) = check_object(&store, manifest) {
        return vec![format!("generation {n}'s manifest: {e}")];
    }
    let text = fs::read(store.join(manifest)).unwrap_or_default();
    let json: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(j) => j,
        Err(e) => return vec![format!("generation {n}'s manifest {manifest}: {e}")],
    };
    let mut listed: BTreeSet<String> = json["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["object"].as_str().map(str::to_string))
        .collect();
    listed.extend(json["activate"].as_str().map(str::to_string));
    if listed.is_empty() {
        return vec![format!("generation {n}'s manifest lists no object")];
    }
    listed
        .iter()
        .filter_map(|o| check_object(&store, o).err())
        .map(|e| format!("generation {n} is not whole: {e}"))
        .collect()
}

/// The manifest object generation `n` links to on `host`.
fn manifest_of(host: &Host, n: u64) -> String {
    let link = fs::read_link(sov_dir(host).join(format!("generations/{n}")))
        .unwrap_or_else(|e| panic!("{}: generations/{n}: {e}", host.name));
    link.to_str()
        .and_then(|l| l.strip_prefix("../store/"))
        .unwrap_or_else(|| panic!("{}: generations/{n} -> {}", host.name, link.display()))
        .to_string()
}

/// Every object generation `n` of `host` needs, its manifest included.
fn closure_of(host: &Host, n: u64) -> BTreeSet<String> {
    let manifest = manifest_of(host, n);
    let text = fs::read(sov_dir(host).join("store").join(&manifest)).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let mut all: BTreeSet<String> = json["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["object"].as_str().unwrap().to_string())
        .collect();
    all.insert(json["activate"].as_str().unwrap().to_string());
    all.insert(manifest);
    all
}

// ---- processes --------------------------------------------------------------

/// The processes of the sov agent (a step, a watchdog) running on `host`.
fn agent_processes(host: &Host) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "pids", &host.netns])
        .output()
        .expect("run ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let words: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            // The agent runs as `sh -c SCRIPT sov-agent CMD …` or as the stored
            // `…-sov-agent.sh CMD …` (the watchdog); show it without the script.
            let at = words
                .iter()
                .position(|w| w.ends_with("sov-agent") || w.ends_with("sov-agent.sh"))?;
            Some(format!("pid {pid}: {}", words[at..].join(" ")))
        })
        .collect()
}

/// Waits until no host runs anything of the agent any more: what a killed
/// deploy left running has ended and every watchdog has fired or been
/// stopped.
fn settle(lab: &Lab, why: &str) {
    until_none(why, "the hosts are still busy", || {
        lab.hosts
            .iter()
            .flat_map(|h| {
                agent_processes(h)
                    .into_iter()
                    .map(move |p| format!("{}: {p}", h.name))
            })
            .collect()
    });
}

/// Polls `look` until it finds nothing; after SETTLE, fails with `what`
/// and what it still found.
fn until_none(why: &str, what: &str, look: impl Fn() -> Vec<String>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = look();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{why}: {what} after {SETTLE:?}:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sov` started in the background, its output going to files (an ssh
/// master it leaves behind must not hold a pipe the test reads).
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
}

impl Running {
    fn start(stack: &LabStack, args: &[&str], logs: &Path, tag: &str) -> Running {
        let out = logs.join(format!("{tag}.out"));
        let err = logs.join(format!("{tag}.err"));
        let child = stack
            .command(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("start sov");
        Running {
            child,
            out,
            err,
            started: Instant::now(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL once `delay` has passed since the start (if still running).
    fn kill_at(&mut self, delay: Duration) -> Killed {
        let deadline = self.started + delay;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(
                Duration::from_millis(2).min(deadline.saturating_duration_since(Instant::now())),
            );
        }
        let finished = self.child.try_wait().unwrap().is_some();
        if !finished {
            self.child.kill().expect("SIGKILL sov");
        }
        self.child.wait().unwrap();
        if finished {
            Killed::FinishedFirst
        } else {
            Killed::Killed
        }
    }

    fn wait(mut self) -> (std::process::ExitStatus, String, String) {
        let status = self.child.wait().unwrap();
        (
            status,
            fs::read_to_string(&self.out).unwrap_or_default(),
            fs::read_to_string(&self.err).unwrap_or_default(),
        )
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }
}

/// A test that fails leaves no sov running against a lab being torn down.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, PartialEq)]
enum Killed {
    Killed,
    FinishedFirst,
}

/// Ends the ssh processes a killed `sov` (pid `pid`) left behind: its
/// masters persist (ControlPersist), their sockets under <state>/run/<pid>/.
fn end_leftover_ssh(stack: &LabStack, pid: u32) {
    let marker = format!("{}/run/{pid}/", stack.root().join(".sov").display());
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(n) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("ssh ") && cmdline.contains(&marker) {
            if let Some(pid) = rustix::process::Pid::from_raw(n) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
}

/// Waits until the ssh channels (not the masters) of the killed `sov` with
/// pid `pid` have ended: the remote steps it started are over.
fn channels_end(stack: &LabStack, pid: u32, why: &str) {
    until_none(why, "the killed sov's ssh channels still run", || {
        ssh_processes_of(stack, pid, false)
    });
}

// ---- 1. SIGKILL at any moment -----------------------------------------------

/// Per host: the manifests of generations 1 and 2, and what generation 1 needs.
struct Generations {
    manifests: Vec<BTreeMap<u64, String>>,
    keep: Vec<BTreeSet<String>>,
}

/// One line per host: generation, confirmation, leftovers.
fn describe(lab: &Lab, audits: &[Audit]) -> String {
    lab.hosts
        .iter()
        .zip(audits)
        .map(|(h, a)| {
            format!(
                "{}={}{}{}",
                h.name,
                a.generation.map_or("none".to_string(), |g| g.to_string()),
                if a.generation == Some(2) && !a.confirmed {
                    "(unconfirmed)"
                } else {
                    ""
                },
                if !a.work_files.is_empty() {
                    format!("+{}", a.work_files.join("+"))
                } else {
                    String::new()
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Audits every host; panics naming each host and problem, with sov's stderr.
fn audit_all(lab: &Lab, gens: &Generations, moment: &str, sov_stderr: &str) -> Vec<Audit> {
    let audits: Vec<Audit> = lab
        .hosts
        .iter()
        .zip(&gens.manifests)
        .map(|(h, m)| audit(&sov_dir(h), m))
        .collect();
    let mut problems = Vec::new();
    for (h, a) in lab.hosts.iter().zip(&audits) {
        if a.generation.is_none() {
            problems.push(format!("{}: current is gone", h.name));
        }
        problems.extend(a.problems.iter().map(|p| format!("{}: {p}", h.name)));
    }
    assert!(
        problems.is_empty(),
        "{moment}: hosts not on a whole generation:\n{}\nsov's stderr:\n{sov_stderr}",
        problems.join("\n")
    );
    audits
}

/// Brings every host back to generation 1 without generation 2's objects, so
/// that the next deploy sends, switches and confirms all over again.
fn reset_to_generation_1(lab: &Lab, stack: &LabStack, gens: &Generations, why: &str) {
    settle(lab, why);
    if lab.hosts.iter().any(|h| current(h) != Some(1)) {
        rollback_ok(stack, 1, why);
        settle(lab, why);
    }
    for (host, keep) in lab.hosts.iter().zip(&gens.keep) {
        assert_eq!(
            current(host),
            Some(1),
            "{why}: {} is not on generation 1",
            host.name
        );
        let dir = sov_dir(host);
        for entry in fs::read_dir(dir.join("store")).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) || name.ends_with("-sov-agent.sh") {
                continue;
            }
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
        for stale in ["generations/2", "confirmed/2"] {
            let _ = fs::remove_file(dir.join(stale));
        }
    }
}

#[test]
fn sigkill_at_any_moment_leaves_every_host_on_a_whole_generation() {
    let Some(lab) = Lab::start(3) else { return };
    let test_started = Instant::now();
    let stack = LabStack::new(&lab);
    let logs = tempfile::tempdir().unwrap();
    stack.build();
    deploy_ok(&stack, "generation 1");
    write_generation_2(&stack, &lab);
    stack.build();

    // One uninterrupted deploy: how long the kill moments must cover.
    let started = Instant::now();
    deploy_ok(&stack, "generation 2, uninterrupted");
    let full = started.elapsed();
    let mut gens = Generations {
        manifests: Vec::new(),
        keep: Vec::new(),
    };
    for host in &lab.hosts {
        let (one, two) = (manifest_of(host, 1), manifest_of(host, 2));
        assert_ne!(one, two, "generation 2 must change {}", host.name);
        gens.manifests.push(BTreeMap::from([(1, one), (2, two)]));
        gens.keep.push(closure_of(host, 1));
    }
    audit_all(&lab, &gens, "after the uninterrupted deploy", "");
    eprintln!("one deploy of generation 2 takes {full:.2?}");

    let deploy_args = stack.deploy_args(&confirm_timeout_args());
    let span = full.mul_f64(1.2);
    // Kill moments at which some host was left switched but unconfirmed.
    let mut unconfirmed_moments = Vec::new();
    let mut finished_first = 0;
    for i in 0..KILLS {
        let delay = span.mul_f64(i as f64 / (KILLS - 1) as f64);
        let moment = format!("kill {}/{KILLS} at {delay:.2?}", i + 1);
        reset_to_generation_1(&lab, &stack, &gens, &format!("before {moment}"));
        let mut sov = Running::start(&stack, &deploy_args, logs.path(), &format!("kill{i}"));
        if sov.kill_at(delay) == Killed::FinishedFirst {
            finished_first += 1;
        }
        let err = sov.stderr();
        let after = audit_all(&lab, &gens, &format!("right after {moment}"), &err);
        if after
            .iter()
            .any(|a| a.generation == Some(2) && !a.confirmed)
        {
            unconfirmed_moments.push(delay);
        }
        // A step the killed sov had started may reach a host only now: the
        // hosts are settled once its ssh channels have ended too.
        channels_end(&stack, sov.pid(), &moment);
        settle(&lab, &format!("after {moment}"));
        let settled = audit_all(
            &lab,
            &gens,
            &format!("{moment}, once the hosts settled"),
            &err,
        );
        for (h, a) in lab.hosts.iter().zip(&settled) {
            assert!(
                a.generation != Some(2) || a.confirmed,
                "{moment}: {} stays on generation 2 without confirmation after its watchdog's timeout\nsov's stderr:\n{err}",
                h.name
            );
        }
        eprintln!(
            "{moment}: right after: {}; settled: {}",
            describe(&lab, &after),
            describe(&lab, &settled)
        );
        end_leftover_ssh(&stack, sov.pid());
    }
    eprintln!(
        "{KILLS} kills in {:.2?} ({finished_first} after the deploy had finished; {} left a host switched but unconfirmed)",
        test_started.elapsed(),
        unconfirmed_moments.len()
    );

    // The operator runs the deploy again right away, after a kill that left
    // hosts switched but unconfirmed (their watchdogs still pending) when
    // the sweep found such a moment: it must succeed and stay succeeded.
    let mut last_kill = None;
    for (attempt, delay) in unconfirmed_moments.iter().take(5).enumerate() {
        reset_to_generation_1(&lab, &stack, &gens, "before the last kill");
        let mut sov = Running::start(&stack, &deploy_args, logs.path(), &format!("last{attempt}"));
        sov.kill_at(*delay);
        let after = audit_all(&lab, &gens, "right after the last kill", &sov.stderr());
        let pid = sov.pid();
        if after
            .iter()
            .any(|a| a.generation == Some(2) && !a.confirmed)
        {
            eprintln!("last kill at {delay:.2?}: {}", describe(&lab, &after));
            last_kill = Some(pid);
            break;
        }
        settle(&lab, "after a last kill that missed the window");
        end_leftover_ssh(&stack, pid);
    }
    if last_kill.is_none() {
        eprintln!("no kill left a host switched but unconfirmed: the redeploy follows the sweep's last kill");
    }
    let redeploy = Instant::now();
    let lock_wait = confirm_timeout() + Duration::from_secs(10);
    let mut refusals = Vec::new();
    let out = loop {
        let out = stack.deploy(&confirm_timeout_args());
        let err = stderr(&out);
        if !out.status.success()
            && err.contains("holds the host lock")
            && redeploy.elapsed() < lock_wait
        {
            refusals.push(err);
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        break out;
    };
    if !refusals.is_empty() {
        eprintln!(
            "the redeploy was refused {} times for a lock a killed deploy held; first refusal:\n{}",
            refusals.len(),
            refusals[0]
        );
    }
    assert!(
        out.status.success(),
        "the deploy after the kills failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let outcomes: Vec<String> = report(&out)["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}: {}", h["host"], h["outcome"]))
        .collect();
    // Whatever a killed deploy left pending (a watchdog) has run its course.
    settle(&lab, "after the redeploy");
    let settled = audit_all(&lab, &gens, "after the redeploy settled", &stderr(&out));
    let wrong: Vec<String> = lab
        .hosts
        .iter()
        .zip(&settled)
        .filter(|(_, a)| a.generation != Some(2) || !a.confirmed)
        .map(|(h, a)| {
            let log = fs::read_to_string(sov_dir(h).join("watchdog.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let log = lines[lines.len().saturating_sub(10)..].join("\n");
            format!(
                "{}: generation {:?}, confirmed {}; the end of its watchdog.log:\n{}",
                h.name,
                a.generation,
                a.confirmed,
                log.trim_end()
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the redeploy reported success ({}) but once the hosts settled not every host runs generation 2, confirmed:\n{}\nsov's stderr:\n{}",
        outcomes.join(", "),
        wrong.join("\n"),
        stderr(&out)
    );
    if let Some(pid) = last_kill {
        end_leftover_ssh(&stack, pid);
    }
    eprintln!("sigkill test: {:.2?} in all", test_started.elapsed());
}

// ---- 2. an unreachable host -------------------------------------------------

#[test]
fn an_unreachable_host_fails_clearly_and_nothing_switches() {
    let Some(lab) = Lab::start(3) else { return };
    let started = Instant::now();
    let stack = LabStack::new(&lab);
    stack.build();
    deploy_ok(&stack, "generation 1");

    // Generation 2 changes every host, and h3's ssh address is one of the
    // lab's network that nobody holds.
    write_generation_2(&stack, &lab);
    let gone = &lab.hosts[2];
    let net = lab.gateway.octets();
    let nobody = format!("{}.{}.{}.199", net[0], net[1], net[2]);
    let key = gone.host_key_pub.trim();
    edit_site(
        &stack,
        &format!("ssh = {{ host_key = \"{key}\" }}"),
        &format!("ssh = {{ address = \"{nobody}\", host_key = \"{key}\" }}"),
    );
    stack.build();
    let out = stack.deploy(&confirm_timeout_args());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(&gone.name) && l.contains("cannot connect") && l.contains(&nobody)),
        "the error names {} and says it cannot connect to {nobody}:\n{err}",
        gone.name
    );
    let r = report(&out);
    let hosts = r["hosts"].as_array().unwrap();
    let of = |name: &str| hosts.iter().find(|h| h["host"] == name).unwrap();
    assert_eq!(of(&gone.name)["outcome"], "failed", "{r}");
    for host in &lab.hosts[..2] {
        let outcome = of(&host.name)["outcome"].as_str().unwrap().to_string();
        assert!(
            ["rolled-back", "skipped"].contains(&outcome.as_str()),
            "{}: {outcome}, expected rolled-back or skipped\nstderr:\n{err}",
            host.name
        );
    }
    // All or nothing, and still so once any watchdog would have fired.
    std::thread::sleep(confirm_timeout() + Duration::from_secs(1));
    settle(&lab, "after the failed deploy");
    for host in &lab.hosts {
        assert_eq!(
            current(host),
            Some(1),
            "{} was left off generation 1\nsov's stderr:\n{err}",
            host.name
        );
    }
    eprintln!("unreachable host test: {:.2?}", started.elapsed());
    eprintln!("sov said:\n{err}");
}

// ---- 3. a full disk ---------------------------------------------------------

/// The pid, seen from here, of `host`'s init: its mount namespace is the
/// host's own, which a mount made over ssh lives in.
fn init_pid(host: &Host) -> u32 {
    let out = Command::new("ip")
        .args(["netns", "pids", &host.netns])
        .output()
        .expect("run ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.starts_with("NSpid:") && l.split_whitespace().skip(1).nth(1) == Some("1")
                })
        })
        .unwrap_or_else(|| panic!("{}: no init process in {}", host.name, host.netns))
        .parse()
        .unwrap()
}

#[test]
fn a_full_disk_on_a_host_fails_clearly_and_nothing_switches() {
    let Some(lab) = Lab::start(2) else { return };
    let started = Instant::now();
    let stack = LabStack::new(&lab);
    stack.build();
    deploy_ok(&stack, "generation 1");
    let full = &lab.hosts[1];
    let manifests: Vec<BTreeMap<u64, String>> = lab
        .hosts
        .iter()
        .map(|h| BTreeMap::from([(1, manifest_of(h, 1))]))
        .collect();

    // The store becomes a tmpfs holding what it held, with one page to spare.
    let setup = lab.ssh_ok(
        full,
        &[
            "sh",
            "-euc",
            r#"store=/var/lib/sov/store
keep=/run/sov-test-store
mkdir "$keep"
cp -a "$store/." "$keep/"
used=$(du -sk "$store" | cut -f1)
mount -t tmpfs -o "size=$((used + 4))k,mode=0755" sov-test-full "$store"
cp -a "$keep/." "$store/"
df -k "$store""#,
        ],
    );
    eprintln!("{}'s store: {setup}", full.name);
    let seen = PathBuf::from(format!("/proc/{}/root/var/lib/sov", init_pid(full)));
    let before = audit(&seen, &manifests[1]);
    assert!(
        before.problems.is_empty() && before.generation == Some(1),
        "{}: generation 1 did not survive the move to a tmpfs: {before:?}",
        full.name
    );

    write_generation_2(&stack, &lab);
    stack.build();
    let out = stack.deploy(&confirm_timeout_args());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(&full.name) && l.contains("receive objects")),
        "the error names {} and the receive step:\n{err}",
        full.name
    );
    assert!(
        err.contains("No space left on device"),
        "the error says what the host said (no space left):\n{err}"
    );
    std::thread::sleep(confirm_timeout() + Duration::from_secs(1));
    settle(&lab, "after the failed deploy");
    let after = audit(&seen, &manifests[1]);
    assert!(
        after.problems.is_empty(),
        "{}: {:?}\nsov's stderr:\n{err}",
        full.name,
        after.problems
    );
    assert_eq!(
        after.generation,
        Some(1),
        "{} left generation 1\n{err}",
        full.name
    );
    assert_eq!(
        after.work_files,
        Vec::<String>::new(),
        "{}: a failed receive leaves its staging folder behind\n{err}",
        full.name
    );
    let other = &lab.hosts[0];
    let a = audit(&sov_dir(other), &manifests[0]);
    assert_eq!(
        a.generation,
        Some(1),
        "{} was left switched although {} failed\nsov's stderr:\n{err}",
        other.name,
        full.name
    );
    eprintln!("full disk test: {:.2?}", started.elapsed());
    eprintln!("sov said:\n{err}");
}

// ---- 4. a missing prerequisite ----------------------------------------------

#[test]
fn a_host_missing_a_prerequisite_is_named_before_anything_is_sent() {
    let Some(lab) = Lab::start(2) else { return };
    let started = Instant::now();
    let stack = LabStack::new(&lab);
    let bare = &lab.hosts[1];
    lab.ssh_ok(
        bare,
        &["sh", "-euc", r#"b=$(command -v b3sum); mv "$b" "$b.off""#],
    );
    stack.build();
    let out = stack.deploy(&confirm_timeout_args());
    let err = stderr(&out);
    eprintln!("sov said:\n{err}");
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(&bare.name) && l.contains("missing") && l.contains("b3sum")),
        "the error names {} and the missing b3sum:\n{err}",
        bare.name
    );
    std::thread::sleep(confirm_timeout() + Duration::from_secs(1));
    settle(&lab, "after the failed deploy");
    // A preflight: no host of the site was sent, switched or activated
    // anything (the firewall host would have loaded its ruleset).
    let mut touched = Vec::new();
    for host in &lab.hosts {
        let dir = sov_dir(host);
        let held: Vec<String> = ["store", "generations"]
            .iter()
            .flat_map(|sub| {
                fs::read_dir(dir.join(sub))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(move |e| format!("{sub}/{}", e.file_name().to_string_lossy()))
            })
            .collect();
        if !held.is_empty() {
            touched.push(format!("{} was sent or recorded: {held:?}", host.name));
        }
        if current(host).is_some() {
            touched.push(format!("{} is left switched", host.name));
        }
    }
    let fw = &lab.hosts[0];
    let rules = lab.ssh_ok(fw, &["nft", "list", "ruleset"]);
    if rules.contains("table inet filter") {
        touched.push(format!(
            "{} runs the site's ruleset, activated although the deploy never got past the preflight",
            fw.name
        ));
    }
    assert!(
        touched.is_empty(),
        "{} lacks b3sum, yet the deploy touched hosts:\n{}\nsov's stderr:\n{err}",
        bare.name,
        touched.join("\n")
    );
    eprintln!("missing prerequisite test: {:.2?}", started.elapsed());
}

// ---- 5. two deploys at once -------------------------------------------------

/// The activation script `host` runs now.
fn current_activation(host: &Host) -> String {
    let dir = sov_dir(host);
    let manifest = fs::read(dir.join("current")).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap_or_default();
    let script = json["activate"].as_str().unwrap_or_default();
    fs::read_to_string(dir.join("store").join(script)).unwrap_or_default()
}

#[test]
fn a_second_concurrent_deploy_of_a_host_is_refused_naming_the_holder() {
    let Some(lab) = Lab::start(2) else { return };
    let started = Instant::now();
    let logs = tempfile::tempdir().unwrap();
    let slow = &lab.hosts[1];
    // The plain host's health check holds its deploy (and lock) for 8 s.
    let stack = LabStack::new(&lab);
    fs::write(
        stack.root().join("images/plain.toml"),
        PLAIN_IMAGE.replace(
            "command = [\"true\"]",
            "command = [\"sleep\", \"8\"]\ntimeout = 20",
        ),
    )
    .unwrap();
    stack.build();
    // Another operator's checkout and state: the same site, another image.
    let other = LabStack::new(&lab);
    fs::write(
        other.root().join("images/plain.toml"),
        PLAIN_IMAGE.replace("alive", "alive-elsewhere"),
    )
    .unwrap();
    other.build();

    // The default confirm timeout (30 s): the health check must not outlast it.
    let args = stack.deploy_args(&[]);
    let first = Running::start(&stack, &args, logs.path(), "first");
    let holder = format!("sov deploy (pid {})", first.pid());
    let owner = sov_dir(slow).join("lock.owner");
    let confirmed = sov_dir(slow).join("confirmed/1");
    // The moment to race: the first deploy holds the lock, has switched the
    // host and runs its slow health check, unconfirmed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::read_to_string(&owner).unwrap_or_default().trim() != holder
        || current(slow) != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "{}: the first deploy never switched under the host lock ({owner:?}); its stderr:\n{}",
            slow.name,
            first.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !confirmed.exists(),
        "{}: confirmed before its 8 s health check ended",
        slow.name
    );

    // Another generation 1 for the host, from the other operator.
    let racing = Instant::now();
    let elsewhere = other.deploy(&["--hosts", &slow.name]);
    // This generation 1 again, from the same checkout.
    let again = stack.deploy(&[]);
    let racing = racing.elapsed();
    let still_held = fs::read_to_string(&owner).unwrap_or_default().trim() == holder;
    assert!(
        still_held && !confirmed.exists(),
        "the first deploy ended before the racing ones did ({racing:.2?}): the race was not run\n{}\n{}",
        stderr(&elsewhere),
        stderr(&again)
    );
    let mut wrong = Vec::new();
    for (what, out) in [
        ("another stack's generation", &elsewhere),
        ("the same generation, still unconfirmed", &again),
    ] {
        let err = stderr(out);
        let named = err
            .lines()
            .any(|l| l.contains(&slow.name) && l.contains("lock") && l.contains(&holder));
        if out.status.code() != Some(1) || !named {
            wrong.push(format!(
                "a deploy to {} of {what} exited {} without naming `{holder}` as the lock holder; its report:\n{}\nstderr:\n{err}",
                slow.name,
                out.status,
                stdout(out)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "while the first deploy held {}'s lock and ran its health checks:\n{}",
        slow.name,
        wrong.join("\n")
    );

    let (status, out, first_err) = first.wait();
    assert!(
        status.success(),
        "the first deploy failed ({status}) beside the refused ones:\n{first_err}"
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    for h in r["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "switched", "{h}");
    }
    settle(&lab, "after the deploys");
    for host in &lab.hosts {
        assert_eq!(current(host), Some(1), "{}\n{first_err}", host.name);
        assert!(
            sov_dir(host).join("confirmed/1").exists(),
            "{} is not confirmed\n{first_err}",
            host.name
        );
    }
    let script = current_activation(slow);
    assert!(
        script.contains("sleep") && !script.contains("elsewhere"),
        "{} does not run the first deploy's activation:\n{script}",
        slow.name
    );
    eprintln!("concurrent deploy test: {:.2?}", started.elapsed());
}

// ---- the watchdog's clock -----------------------------------------------------

#[test]
fn health_checks_longer_than_the_confirm_timeout_do_not_roll_back_a_healthy_host() {
    let Some(lab) = Lab::start(1) else { return };
    let started = Instant::now();
    let stack = LabStack::new(&lab);
    let host = &lab.hosts[0];
    // A lone host is the firewall host: its health check takes 5 s, longer
    // than the 3 s the host then waits for confirmation.
    fs::write(
        stack.root().join("images/labfw.toml"),
        "description = \"a slow firewall\"\n[[health]]\nname = \"slow\"\ncommand = [\"sleep\", \"5\"]\ntimeout = 20\n",
    )
    .unwrap();
    stack.build();
    let out = stack.deploy(&confirm_timeout_args());
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "{}: a healthy host whose checks take 5 s, confirmed right after them, was rolled back (--confirm-timeout {CONFIRM_TIMEOUT}):\n{err}\nits watchdog.log:\n{}",
        host.name,
        fs::read_to_string(sov_dir(host).join("watchdog.log")).unwrap_or_default()
    );
    settle(&lab, "after the deploy");
    assert_eq!(current(host), Some(1), "{err}");
    assert!(sov_dir(host).join("confirmed/1").exists(), "{err}");
    eprintln!("slow health check test: {:.2?}", started.elapsed());
}

// ---- 6. what the DNS host serves --------------------------------------------

#[test]
fn dig_answers_the_zone_after_deploy_and_rollback_restores_the_old_answer() {
    if !require("dig") {
        return;
    }
    let Some(lab) = Lab::start(2) else { return };
    let started = Instant::now();
    let stack = LabStack::new(&lab);
    // The zones go to the plain host: the firewall host's own ruleset
    // admits only SSH and DHCP to itself.
    let server = &lab.hosts[1];
    let dns = |address: &str| {
        stack.write_site(&lab, "eth0", &[&record("www", address)]);
        edit_site(
            &stack,
            &format!("servers = [\"{}\"]", lab.hosts[0].name),
            &format!("servers = [\"{}\"]", server.name),
        );
        stack.build();
    };
    let name = "www.lab.example.internal";

    dns("10.0.0.1");
    let out = deploy_ok(&stack, "generation 1");
    let query = [name, "A"];
    dig_until(
        &lab,
        server,
        &query,
        "10.0.0.1",
        &format!("after generation 1 ({})", stderr(&out)),
    );

    dns("10.0.0.2");
    let out = deploy_ok(&stack, "generation 2");
    dig_until(
        &lab,
        server,
        &query,
        "10.0.0.2",
        &format!("after generation 2 ({})", stderr(&out)),
    );

    let identity = stack.identity.to_str().unwrap();
    let out = stack.sov(&["rollback", "lab", "--identity", identity]);
    assert!(out.status.success(), "sov rollback: {}", stderr(&out));
    assert_eq!(current(server), Some(1), "{}", stderr(&out));
    dig_until(&lab, server, &query, "10.0.0.1", "after the rollback");
    eprintln!("dns test: {:.2?}", started.elapsed());
}

// ---- 7. the host lock's step fails --------------------------------------------

#[test]
fn a_lock_step_that_fails_says_what_the_host_said() {
    let Some(lab) = Lab::start(1) else { return };
    let stack = LabStack::new(&lab);
    let host = &lab.hosts[0];
    stack.build();
    deploy_ok(&stack, "generation 1");
    // The lock file cannot be opened: a directory took its name.
    let lock = sov_dir(host).join("lock");
    fs::remove_file(&lock).unwrap();
    fs::create_dir(&lock).unwrap();
    stack.write_site(&lab, "eth0", &[&record("extra", "10.0.0.1")]);
    stack.build();
    let out = stack.deploy(&confirm_timeout_args());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.lines().any(|l| l.contains(&host.name)
            && l.contains("take the host lock")
            && l.contains("Is a directory")),
        "the error names {}, the lock step and what its shell said:\n{err}",
        host.name
    );
    assert!(
        !err.contains("another deploy holds"),
        "a lock step that failed is not another deploy's lock:\n{err}"
    );
    assert_eq!(current(host), Some(1), "{err}");
}

// ---- 8. what a killed deploy leaves running -----------------------------------

/// The ssh processes (masters and channels) a `sov` with pid `pid` started.
fn ssh_processes_of(stack: &LabStack, pid: u32, masters: bool) -> Vec<String> {
    let marker = format!("{}/run/{pid}/", stack.root().join(".sov").display());
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let cmdline = fs::read(p.path().join("cmdline")).ok()?;
            let words: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            let is_master = words.iter().any(|w| w == "-M");
            (words.first().is_some_and(|w| w == "ssh")
                && words.iter().any(|w| w.contains(&marker))
                && (masters || !is_master))
                .then(|| {
                    format!(
                        "pid {}: {}",
                        p.file_name().to_string_lossy(),
                        words.join(" ")
                    )
                })
        })
        .collect()
}

/// A plain image whose health check takes `secs`, logging its start and end
/// to /run/sov-checks on the host.
fn slow_logged_check(secs: u32) -> String {
    PLAIN_IMAGE.replace(
        "command = [\"true\"]",
        &format!(
            "command = [\"sh\", \"-c\", \"echo start >>/run/sov-checks; sleep {secs}; echo end >>/run/sov-checks\"]\ntimeout = 30"
        ),
    )
}

/// Starts a deploy and SIGKILLs it once `host` runs generation 1's health
/// checks under its lock; returns its pid.
fn kill_during_checks(lab: &Lab, stack: &LabStack, host: &Host, logs: &Path) -> u32 {
    let mut sov = Running::start(stack, &stack.deploy_args(&[]), logs, "killed");
    let holder = format!("sov deploy (pid {})", sov.pid());
    let owner = sov_dir(host).join("lock.owner");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let checking = fs::read_to_string(&owner).unwrap_or_default().trim() == holder
            && current(host) == Some(1)
            && stdout(&lab.ssh(host, &["cat", "/run/sov-checks"])).contains("start");
        if checking {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the deploy never reached its health checks; its stderr:\n{}",
            host.name,
            sov.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sov.kill_at(Duration::ZERO), Killed::Killed);
    sov.pid()
}

#[test]
fn a_deploy_after_a_killed_one_waits_for_its_switch_to_end_on_the_host() {
    let Some(lab) = Lab::start(2) else { return };
    let logs = tempfile::tempdir().unwrap();
    let slow = &lab.hosts[1];
    let stack = LabStack::new(&lab);
    fs::write(stack.root().join("images/plain.toml"), slow_logged_check(6)).unwrap();
    stack.build();
    let killed = kill_during_checks(&lab, &stack, slow, logs.path());

    // The killed deploy's lock went with its connection; its switch (and
    // health checks) still runs on the host.
    let out = stack.deploy(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "the deploy after the kill: {err}");
    settle(&lab, "after the deploys");
    let checks = stdout(&lab.ssh(slow, &["cat", "/run/sov-checks"]));
    let lines: Vec<&str> = checks.lines().collect();
    // The killed deploy's checks, then the second deploy's: it resumes the
    // unconfirmed switch (activation and checks again) once the first ended.
    assert_eq!(
        lines,
        ["start", "end", "start", "end"],
        "{}: the health checks of the two deploys, in the order they ran and ended\n{err}",
        slow.name
    );
    assert_eq!(current(slow), Some(1), "{err}");
    assert!(sov_dir(slow).join("confirmed/1").exists(), "{err}");
    end_leftover_ssh(&stack, killed);
}

#[test]
fn the_ssh_connections_of_a_killed_deploy_end_on_their_own() {
    let Some(lab) = Lab::start(1) else { return };
    let logs = tempfile::tempdir().unwrap();
    let host = &lab.hosts[0];
    let stack = LabStack::new(&lab);
    fs::write(
        stack.root().join("images/labfw.toml"),
        slow_logged_check(2).replace("a plain host of the test lab", "a slow firewall"),
    )
    .unwrap();
    stack.build();
    let killed = kill_during_checks(&lab, &stack, host, logs.path());
    assert!(
        !ssh_processes_of(&stack, killed, true).is_empty(),
        "the killed deploy had no ssh connection open"
    );
    // Its remote step ends, then its master outlives its last channel by
    // ControlPersist.
    until_none("after the kill", "its ssh processes still run", || {
        ssh_processes_of(&stack, killed, true)
    });
    settle(&lab, "after the kill");
}
