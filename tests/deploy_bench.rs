//! The deploy benchmark: `sov deploy` and `sov rollback` to a lab of real
//! hosts (tests/common/hosts.rs: systemd-nspawn containers, each with its own
//! network namespace and sshd), side by side with the floor a hand-written
//! script reaches over the same SSH: `rsync -a` of the same store objects,
//! then `ssh HOST ln -sfn`. It prints a table of numbers and judges none of
//! them (only a deploy that fails, or does something other than the phase
//! means, stops it). Ignored in a normal `cargo test`; run it with
//!
//! ```text
//! cargo test --release --test deploy_bench -- --ignored --nocapture
//! ```
//!
//! `SOV_BENCH_HOSTS` (default 10) and `SOV_BENCH_RUNS` (default 5) scale it.
//! Needs root, rsync on this machine and in the hosts' root filesystem
//! (tests/hosts/rootfs.sh), and strace for the per-step trace (optional).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::bench::{bytes, env_or, median, median_u64};
use common::hosts::{Host, Lab};
use common::labstack::{current, report, LabStack};
use common::{require, stderr};

/// Where the script baseline keeps its copies on each host: one for
/// `rsync -a`, one for `rsync -az`, so that neither finds the other's files.
const RSYNC_ROOT: &str = "/var/lib/rsync-bench/plain";
const RSYNC_ROOT_Z: &str = "/var/lib/rsync-bench/zstd";

/// One timed run of one operation over every host.
#[derive(Debug, Clone, Default)]
struct Sample {
    secs: f64,
    /// Payload bytes the tool says it sent: sov's `bytes_sent` (the
    /// compressed object stream), rsync's "Total bytes sent".
    bytes: u64,
    /// Objects (sov) or files (rsync) sent.
    objects: u64,
    /// Bytes that went onto the hosts' links (the veths' tx counters on
    /// this side): TCP/IP, SSH handshakes and command lines included.
    wire: u64,
    /// Each host's own time (sov's per-host `seconds`, rsync + ln per host).
    host_secs: Vec<f64>,
}

/// Medians (and spread) of a set of runs.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    bytes: u64,
    objects: u64,
    wire: u64,
    host_median: f64,
    host_max: f64,
    runs: usize,
}

fn summarize(samples: &[Sample]) -> Summary {
    let secs: Vec<f64> = samples.iter().map(|s| s.secs).collect();
    Summary {
        median: median(secs.clone()),
        min: secs.iter().copied().fold(f64::INFINITY, f64::min),
        max: secs.iter().copied().fold(0.0, f64::max),
        bytes: median_u64(samples.iter().map(|s| s.bytes)),
        objects: median_u64(samples.iter().map(|s| s.objects)),
        wire: median_u64(samples.iter().map(|s| s.wire)),
        host_median: median(
            samples
                .iter()
                .map(|s| median(s.host_secs.clone()))
                .collect(),
        ),
        host_max: median(
            samples
                .iter()
                .map(|s| s.host_secs.iter().copied().fold(0.0, f64::max))
                .collect(),
        ),
        runs: samples.len(),
    }
}

fn ms(secs: f64) -> String {
    if secs.is_nan() {
        "-".to_string()
    } else if secs >= 10.0 {
        format!("{secs:.1} s")
    } else if secs >= 1.0 {
        format!("{secs:.2} s")
    } else {
        format!("{:.0} ms", secs * 1000.0)
    }
}

/// The table, row by row.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 9]>,
}

impl Table {
    fn row(&mut self, operation: &str, tool: &str, s: &Summary) {
        self.rows.push([
            operation.to_string(),
            tool.to_string(),
            ms(s.median),
            format!("{} / {}", ms(s.min), ms(s.max)),
            bytes(s.bytes),
            bytes(s.objects),
            bytes(s.wire),
            format!("{} / {}", ms(s.host_median), ms(s.host_max)),
            s.runs.to_string(),
        ]);
    }

    fn print(&self) {
        let header = [
            "operation",
            "tool",
            "median",
            "min / max",
            "bytes sent",
            "objects",
            "wire bytes",
            "per host med / max",
            "runs",
        ];
        println!("| {} |", header.join(" | "));
        println!("|{}", "---|".repeat(header.len()));
        for r in &self.rows {
            println!("| {} |", r.join(" | "));
        }
    }
}

/// Bytes sent so far into every host's link (this side of its veth).
fn wire_total(lab: &Lab) -> u64 {
    (1..=lab.hosts.len())
        .map(|i| {
            let path = format!("/sys/class/net/sovlab{}-h{i}/statistics/tx_bytes", lab.id);
            fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Runs `f` on every host at once; results in host order.
fn on_every_host<T: Send>(lab: &Lab, f: impl Fn(usize, &Host) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = lab
            .hosts
            .iter()
            .enumerate()
            .map(|(k, h)| {
                let f = &f;
                s.spawn(move || f(k, h))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `rm -rf DIR` on every host (the next deploy is a cold one).
fn wipe(lab: &Lab, dir: &str) {
    on_every_host(lab, |_, h| {
        lab.ssh_ok(h, &["rm", "-rf", dir]);
    });
}

/// The benchmark's stack: the lab's site, its state directory, and the
/// command lines it runs.
struct Bench<'a> {
    lab: &'a Lab,
    stack: LabStack,
    identity: String,
    jobs: String,
    /// Lists of files for rsync, one per host.
    lists: tempfile::TempDir,
}

/// What sov's JSON report said about one deploy.
struct SovRun {
    sample: Sample,
    outcomes: BTreeMap<String, String>,
    sent: BTreeMap<String, (u64, u64)>,
}

impl Bench<'_> {
    fn state(&self) -> PathBuf {
        self.stack.root().join(".sov")
    }

    fn deploy_args(&self) -> Vec<&str> {
        vec![
            "deploy",
            "lab",
            "--identity",
            &self.identity,
            "--jobs",
            &self.jobs,
            "--json",
        ]
    }

    fn rollback_args(&self) -> Vec<&str> {
        vec![
            "rollback",
            "lab",
            "--identity",
            &self.identity,
            "--jobs",
            &self.jobs,
            "--json",
        ]
    }

    fn build(&self) {
        let out = self.stack.sov(&["build"]);
        assert!(out.status.success(), "sov build: {}", stderr(&out));
    }

    /// Runs sov with `args` (a deploy or rollback with `--json`), timed,
    /// and checks every host ended as `expect` says (by host name, or "*").
    fn sov(&self, args: &[&str], expect: &[(&str, &str)]) -> SovRun {
        let wire_before = wire_total(self.lab);
        let started = Instant::now();
        let out = self.stack.sov(args);
        let secs = started.elapsed().as_secs_f64();
        let wire = wire_total(self.lab) - wire_before;
        assert!(
            out.status.success(),
            "sov {}: {}",
            args.join(" "),
            stderr(&out)
        );
        let r = report(&out);
        let mut run = SovRun {
            sample: Sample {
                secs,
                wire,
                ..Sample::default()
            },
            outcomes: BTreeMap::new(),
            sent: BTreeMap::new(),
        };
        for h in r["hosts"].as_array().expect("hosts") {
            let name = h["host"].as_str().unwrap().to_string();
            let b = h["bytes_sent"].as_u64().unwrap();
            let o = h["objects_sent"].as_u64().unwrap();
            run.sample.bytes += b;
            run.sample.objects += o;
            run.sample.host_secs.push(h["seconds"].as_f64().unwrap());
            run.sent.insert(name.clone(), (o, b));
            run.outcomes
                .insert(name, h["outcome"].as_str().unwrap().to_string());
        }
        let hosts = if args.contains(&"--hosts") {
            1
        } else {
            self.lab.hosts.len()
        };
        assert_eq!(run.outcomes.len(), hosts, "{r}");
        for (name, outcome) in &run.outcomes {
            let want = expect
                .iter()
                .find(|(n, _)| n == name)
                .or_else(|| expect.iter().find(|(n, _)| *n == "*"))
                .map(|(_, o)| *o);
            if let Some(want) = want {
                assert_eq!(outcome, want, "{name} in `sov {}`: {r}", args.join(" "));
            }
        }
        run
    }

    /// The site's current generation number and, per host, its manifest
    /// and the objects it lists (read from sov's state directory).
    fn generation(&self) -> (u64, Vec<(String, Vec<String>)>) {
        let site_dir = self.state().join("sites/lab");
        let link = fs::read_link(site_dir.join("current")).unwrap();
        let n: u64 = link
            .to_str()
            .unwrap()
            .strip_prefix("generations/")
            .unwrap()
            .parse()
            .unwrap();
        let site: serde_json::Value =
            serde_json::from_slice(&fs::read(site_dir.join("current")).unwrap()).unwrap();
        let mut hosts = Vec::new();
        for h in site["hosts"].as_array().unwrap() {
            let manifest = h["manifest"].as_str().unwrap().to_string();
            let m: serde_json::Value = serde_json::from_slice(
                &fs::read(self.state().join("store").join(&manifest)).unwrap(),
            )
            .unwrap();
            let mut objects: Vec<String> = m["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["object"].as_str().unwrap().to_string())
                .collect();
            objects.push(manifest.clone());
            hosts.push((manifest, objects));
        }
        assert_eq!(hosts.len(), self.lab.hosts.len());
        (n, hosts)
    }

    /// The script baseline: per host, in parallel, `rsync` of the host's
    /// objects from sov's store to RSYNC_ROOT/store, then `ln -sfn` of
    /// `current` to its manifest, each over a new SSH connection.
    fn rsync(&self, objects: &[(String, Vec<String>)], compress: bool) -> Sample {
        let root = if compress { RSYNC_ROOT_Z } else { RSYNC_ROOT };
        let e = format!("ssh {}", self.lab.ssh_options().join(" "));
        let store = format!("{}/", self.state().join("store").display());
        let wire_before = wire_total(self.lab);
        let started = Instant::now();
        let per_host = on_every_host(self.lab, |k, h| {
            let list = self.lists.path().join(&h.name);
            fs::write(&list, objects[k].1.join("\n") + "\n").unwrap();
            let t = Instant::now();
            let mut cmd = Command::new("rsync");
            cmd.args(["-a", "--stats", "--mkpath"]);
            if compress {
                cmd.args(["--compress", "--compress-choice=zstd", "--compress-level=9"]);
            }
            cmd.arg(format!("--files-from={}", list.display()))
                .arg("-e")
                .arg(&e)
                .arg(&store)
                .arg(format!("root@{}:{root}/store/", h.address));
            let out = cmd.stdin(Stdio::null()).output().expect("run rsync");
            assert!(
                out.status.success(),
                "rsync to {}: {}",
                h.name,
                stderr(&out)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let stat = |label: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(label))
                    .map(|v| {
                        v.split_whitespace()
                            .next()
                            .unwrap_or("0")
                            .replace(',', "")
                            .parse()
                            .unwrap_or(0)
                    })
                    .unwrap_or(0)
            };
            let sent = stat("Total bytes sent:");
            let files = stat("Number of regular files transferred:");
            let target = format!("store/{}", objects[k].0);
            let ln = self.ssh_plain(h, &["ln", "-sfn", &target, &format!("{root}/current")]);
            assert!(ln.status.success(), "ln on {}: {}", h.name, stderr(&ln));
            (sent, files, t.elapsed().as_secs_f64())
        });
        let secs = started.elapsed().as_secs_f64();
        let wire = wire_total(self.lab) - wire_before;
        Sample {
            secs,
            bytes: per_host.iter().map(|p| p.0).sum(),
            objects: per_host.iter().map(|p| p.1).sum(),
            wire,
            host_secs: per_host.iter().map(|p| p.2).collect(),
        }
    }

    /// The script's rollback: `ln -sfn` back to the previous manifests,
    /// one new SSH connection per host, all at once.
    fn relink(&self, objects: &[(String, Vec<String>)]) -> Sample {
        let wire_before = wire_total(self.lab);
        let started = Instant::now();
        let per_host = on_every_host(self.lab, |k, h| {
            let t = Instant::now();
            let target = format!("store/{}", objects[k].0);
            let out = self.ssh_plain(
                h,
                &["ln", "-sfn", &target, &format!("{RSYNC_ROOT}/current")],
            );
            assert!(out.status.success(), "ln on {}: {}", h.name, stderr(&out));
            t.elapsed().as_secs_f64()
        });
        Sample {
            secs: started.elapsed().as_secs_f64(),
            wire: wire_total(self.lab) - wire_before,
            host_secs: per_host,
            ..Sample::default()
        }
    }

    /// `ssh HOST -- ARGV` with the lab's options, as a script would.
    fn ssh_plain(&self, h: &Host, argv: &[&str]) -> Output {
        Command::new("ssh")
            .args(self.lab.ssh_options())
            .arg(format!("root@{}", h.address))
            .arg("--")
            .arg(common::hosts::shell_join(argv))
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// The floor of any tool that opens one SSH connection per host:
    /// `ssh HOST true` to every host at once.
    fn ssh_floor(&self, only: Option<&Host>) -> Sample {
        let wire_before = wire_total(self.lab);
        let started = Instant::now();
        let per_host = on_every_host(self.lab, |_, h| {
            if only.is_some_and(|o| o.name != h.name) {
                return f64::NAN;
            }
            let t = Instant::now();
            let out = self.ssh_plain(h, &["true"]);
            assert!(out.status.success(), "ssh {}: {}", h.name, stderr(&out));
            t.elapsed().as_secs_f64()
        });
        Sample {
            secs: started.elapsed().as_secs_f64(),
            wire: wire_total(self.lab) - wire_before,
            host_secs: per_host.into_iter().filter(|s| !s.is_nan()).collect(),
            ..Sample::default()
        }
    }
}

/// The objects in a host's sov store, with their sizes.
fn host_store(host: &Host) -> BTreeMap<String, u64> {
    let dir = host.root.join("var/lib/sov/store");
    let mut objects = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            objects.insert(name, e.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    objects
}

fn zstd9(data: &[u8]) -> u64 {
    zstd::encode_all(data, 9).expect("zstd").len() as u64
}

/// An object's name without its hash: `lab-zone-lab.example.internal`.
fn short(object: &str) -> &str {
    object.split_once('-').map_or(object, |(_, rest)| rest)
}

/// A `[[records]]` entry that changes the internal zone and nothing else.
fn record(tag: &str) -> String {
    format!(
        "\n[[records]]\nzone = \"internal\"\nname = \"{tag}\"\ntype = \"TXT\"\nvalue = \"deploy benchmark {tag}\"\n"
    )
}

#[test]
#[ignore = "benchmark: cargo test --release --test deploy_bench -- --ignored --nocapture"]
fn deploy_benchmark() {
    let n: usize = env_or("SOV_BENCH_HOSTS", 10);
    let runs: usize = env_or("SOV_BENCH_RUNS", 5).max(1);
    let git = common::bench::git_describe();
    if !common::require_root() || !require("rsync") {
        return;
    }
    let Some(lab) = Lab::start(n) else { return };
    let probe = lab.ssh(&lab.hosts[0], &["sh", "-c", "command -v rsync"]);
    if !probe.status.success() {
        let msg = "rsync is missing in the test hosts: add it to the package list of tests/hosts/rootfs.sh";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("skipped: {msg}");
        return;
    }
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let stack = LabStack::new(&lab);
    let bench = Bench {
        lab: &lab,
        identity: stack.identity.display().to_string(),
        stack,
        jobs: n.to_string(),
        lists: tempfile::tempdir().unwrap(),
    };
    let fw = lab.hosts[0].name.clone();
    let started = Instant::now();
    let mut table = Table::default();
    let mut notes = String::new();
    let mut records: Vec<String> = Vec::new();
    let write_site = |records: &[String]| {
        let extra: Vec<&str> = records.iter().map(String::as_str).collect();
        bench.stack.write_site(&lab, "eth0", &extra);
    };

    // The hosts finish booting first: sshd is up before the rest of
    // their units, and a booting host would slow the first rows down.
    on_every_host(&lab, |_, h| {
        lab.ssh(h, &["systemctl", "is-system-running", "--wait"]);
    });
    let last = &lab.hosts[n - 1];

    // 1. Cold: every host empty.
    bench.build();
    let (gen1, objects1) = bench.generation();
    let (mut cold, mut cold_rsync, mut cold_rsync_z) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        wipe(&lab, "/var/lib/sov");
        cold.push(bench.sov(&bench.deploy_args(), &[("*", "switched")]).sample);
        wipe(&lab, RSYNC_ROOT);
        cold_rsync.push(bench.rsync(&objects1, false));
        wipe(&lab, RSYNC_ROOT_Z);
        cold_rsync_z.push(bench.rsync(&objects1, true));
    }
    for h in &lab.hosts {
        assert_eq!(current(h), Some(gen1), "{}", h.name);
    }
    table.row("cold deploy (hosts empty)", "sov deploy", &summarize(&cold));
    table.row("", "rsync -a + ln", &summarize(&cold_rsync));
    table.row("", "rsync -az (zstd 9) + ln", &summarize(&cold_rsync_z));

    // The floor of one SSH connection (on top of the table).
    let floor: Vec<Sample> = (0..runs).map(|_| bench.ssh_floor(None)).collect();
    let alone: Vec<Sample> = (0..runs).map(|_| bench.ssh_floor(Some(last))).collect();
    let mut top = Table::default();
    top.row(
        "one SSH connection per host",
        "ssh HOST true",
        &summarize(&floor),
    );
    top.row(
        &format!("one SSH connection, {} alone", last.name),
        "ssh HOST true",
        &summarize(&alone),
    );
    table.rows.splice(0..0, top.rows);

    // 2. No-op: everything up to date.
    let (mut noop, mut noop_rsync, mut noop_rsync_z) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        noop.push(
            bench
                .sov(&bench.deploy_args(), &[("*", "up-to-date")])
                .sample,
        );
        noop_rsync.push(bench.rsync(&objects1, false));
        noop_rsync_z.push(bench.rsync(&objects1, true));
    }
    let noop_summary = summarize(&noop);
    table.row("no-op deploy (up to date)", "sov deploy", &noop_summary);
    table.row("", "rsync -a + ln", &summarize(&noop_rsync));
    table.row("", "rsync -az (zstd 9) + ln", &summarize(&noop_rsync_z));
    let mut one_host = bench.deploy_args();
    one_host.extend(["--hosts", last.name.as_str()]);
    let noop_alone: Vec<Sample> = (0..runs)
        .map(|_| bench.sov(&one_host, &[("*", "up-to-date")]).sample)
        .collect();
    table.row(
        &format!("no-op deploy, {} alone", last.name),
        "sov deploy --hosts",
        &summarize(&noop_alone),
    );

    // 3. One artifact: a record in the internal zone changes the DNS
    // host's zone (and so its host manifest); the other hosts only take
    // the new generation number.
    let (mut one, mut one_rsync, mut one_rsync_z) = (Vec::new(), Vec::new(), Vec::new());
    let mut ratios = Vec::new();
    let mut zone_zstd = Vec::new();
    let mut one_breakdown = String::new();
    for i in 0..runs {
        records.push(record(&format!("bench{i}")));
        write_site(&records);
        bench.build();
        let (_, objects) = bench.generation();
        let before = host_store(&lab.hosts[0]);
        let run = bench.sov(
            &bench.deploy_args(),
            &[(&fw, "switched"), ("*", "unchanged")],
        );
        let after = host_store(&lab.hosts[0]);
        let new: Vec<&String> = after.keys().filter(|o| !before.contains_key(*o)).collect();
        let zone = new
            .iter()
            .find(|o| o.ends_with("-lab-zone-lab.example.internal"))
            .unwrap_or_else(|| panic!("no new internal zone on {fw}: {new:?}"));
        let zone_bytes = fs::read(bench.state().join("store").join(zone)).unwrap();
        let z = zstd9(&zone_bytes);
        let (objs, sent) = run.sent[&fw];
        ratios.push(run.sample.bytes as f64 / z as f64);
        zone_zstd.push(z);
        if i == 0 {
            let mut ideal = 0;
            let mut parts = Vec::new();
            for o in &new {
                let data = fs::read(bench.state().join("store").join(o)).unwrap();
                let c = zstd9(&data);
                ideal += c;
                parts.push(format!(
                    "{} ({} B, {} B zstd -9)",
                    short(o),
                    bytes(data.len() as u64),
                    bytes(c)
                ));
            }
            let _ = writeln!(
                one_breakdown,
                "  {fw} received {objs} objects in a {sent} B stream: {}; \
                 each compressed alone: {ideal} B; tar + one zstd frame: {} B more",
                parts.join(", "),
                sent as i64 - ideal as i64
            );
            let others: u64 = run
                .sent
                .iter()
                .filter(|(h, _)| **h != fw)
                .map(|(_, (_, b))| b)
                .sum();
            let _ = writeln!(
                one_breakdown,
                "  the other {} hosts: {others} B (outcome `unchanged`: relabelled, nothing activated)",
                n - 1
            );
        }
        one.push(run.sample);
        one_rsync.push(bench.rsync(&objects, false));
        one_rsync_z.push(bench.rsync(&objects, true));
    }
    let one_summary = summarize(&one);
    table.row(
        "one-artifact change (a zone record)",
        "sov deploy",
        &one_summary,
    );
    table.row("", "rsync -a + ln", &summarize(&one_rsync));
    table.row("", "rsync -az (zstd 9) + ln", &summarize(&one_rsync_z));

    // Where a deploy's time goes, per host and step (one extra run each,
    // untimed above): no-op and one-artifact change under strace.
    let strace = require_quiet("strace");
    let mut trace = if strace {
        let mut t = String::new();
        t.push_str(&traced(
            &bench,
            &bench.deploy_args(),
            "no-op deploy",
            &[("*", "up-to-date")],
        ));
        records.push(record("traced"));
        write_site(&records);
        bench.build();
        t.push_str(&traced(
            &bench,
            &bench.deploy_args(),
            "one-artifact change",
            &[(&fw, "switched"), ("*", "unchanged")],
        ));
        t
    } else {
        "strace not installed: no per-step trace\n".to_string()
    };

    // 4. Rollback: a change of every host (one more operator, so every
    // host's cloud-init seed and manifest change), then back and forth.
    let (prev_gen, prev_objects) = bench.generation();
    let stack_toml = bench.stack.root().join("sites/stack.toml");
    let text = fs::read_to_string(&stack_toml).unwrap();
    let operator = "[[operators]]\nname = \"bench\"\nssh_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDBHKuAHF/iGSld91vy8VuMZMx1EvzuMhgwCLol8L+2F bench@example.org\"\n\n[[operators]]\n";
    assert!(text.contains("[[operators]]\n"));
    fs::write(&stack_toml, text.replacen("[[operators]]\n", operator, 1)).unwrap();
    bench.build();
    let (every_gen, every_objects) = bench.generation();
    let first = bench.sov(&bench.deploy_args(), &[("*", "switched")]);
    let first_rsync = bench.rsync(&every_objects, false);
    table.row(
        "change every host (new operator: every seed)",
        "sov deploy",
        &summarize(std::slice::from_ref(&first.sample)),
    );
    table.row("", "rsync -a + ln", &summarize(&[first_rsync]));
    let (mut back, mut back_script, mut forth, mut forth_rsync) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        back.push(
            bench
                .sov(&bench.rollback_args(), &[("*", "switched")])
                .sample,
        );
        for h in &lab.hosts {
            assert_eq!(current(h), Some(prev_gen), "{} after rollback", h.name);
        }
        back_script.push(bench.relink(&prev_objects));
        forth.push(bench.sov(&bench.deploy_args(), &[("*", "switched")]).sample);
        for h in &lab.hosts {
            assert_eq!(current(h), Some(every_gen), "{} after deploy", h.name);
        }
        forth_rsync.push(bench.rsync(&every_objects, false));
    }
    let back_summary = summarize(&back);
    table.row("rollback of every host", "sov rollback", &back_summary);
    table.row("", "ssh HOST ln -sfn (previous)", &summarize(&back_script));
    table.row(
        "deploy again after the rollback (objects on hosts)",
        "sov deploy",
        &summarize(&forth),
    );
    table.row("", "rsync -a + ln", &summarize(&forth_rsync));
    if strace {
        trace.push_str(&traced(
            &bench,
            &bench.rollback_args(),
            "rollback",
            &[("*", "switched")],
        ));
    }

    // The report.
    let cpus = std::thread::available_parallelism().map_or(0, |c| c.get());
    let load_after = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let sov_version = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let rsync_version = Command::new("rsync")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    println!();
    println!(
        "deploy benchmark: `cargo test --release --test deploy_bench -- --ignored --nocapture`"
    );
    println!(
        "{sov_version} ({git}); {n} hosts (systemd-nspawn, own netns and sshd): {fw} firewall + DNS + DHCP, {} plain; \
         {runs} runs per row (median, min / max); sov --jobs {n}; the script runs all hosts at once",
        n - 1
    );
    println!(
        "machine: {cpus} CPUs, shared with the hosts (both ends of every SSH handshake, \
         activation and hashing run here); load average {} before, {} after; {rsync_version}",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "bytes sent: sov's `bytes_sent` (the zstd tar stream of missing objects), rsync's `Total bytes sent`; \
         wire bytes: everything into the hosts' links (veth tx), handshakes and command lines included"
    );
    println!();
    table.print();
    println!();
    let opts = lab.ssh_options().join(" ");
    let root = bench.stack.root().display().to_string();
    let h = &lab.hosts[0];
    println!("commands (h1 for HOST):");
    println!("  sov --root {root} {}", bench.deploy_args().join(" "));
    println!("  sov --root {root} {}", bench.rollback_args().join(" "));
    println!(
        "  rsync -a [--compress --compress-choice=zstd --compress-level=9] --stats --mkpath \
         --files-from=LIST -e 'ssh {opts}' {root}/.sov/store/ root@{}:{RSYNC_ROOT}/store/",
        h.address
    );
    println!(
        "    (LIST: the host manifest and the objects it names; -az copies go to {RSYNC_ROOT_Z})"
    );
    println!(
        "  ssh {opts} root@{} -- ln -sfn store/MANIFEST {RSYNC_ROOT}/current",
        h.address
    );
    println!();
    println!("one-artifact change, first run:");
    print!("{one_breakdown}");
    let _ = writeln!(
        notes,
        "no-op deploy of {n} hosts: median {} (target < 1 s: {})",
        ms(noop_summary.median),
        met(noop_summary.median < 1.0)
    );
    let z = median_u64(zone_zstd);
    let ratio = median(ratios);
    let _ = writeln!(
        notes,
        "one-artifact change: {} B sent vs {} B (the new zone, zstd -9): {:.2}x (target <= 1.10x: {})",
        one_summary.bytes,
        z,
        ratio,
        met(ratio <= 1.10)
    );
    let _ = writeln!(
        notes,
        "rollback of {n} hosts: median {} (target < 2 s: {})",
        ms(back_summary.median),
        met(back_summary.median < 2.0)
    );
    println!();
    println!("targets:");
    for l in notes.lines() {
        println!("  {l}");
    }
    println!();
    println!(
        "where a deploy's time goes (one extra run each, under strace -f; ssh processes sov started: \
         `connect` is a new master connection (`ssh -M`, until authenticated), the others are \
         channels of it, named by the agent command; `hold-lock` lasts while the lock is held):"
    );
    print!("{trace}");
    println!();
    println!("benchmark took {:.0?}", started.elapsed());
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Whether a tool is installed, without failing in CI.
fn require_quiet(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// One ssh process sov started, from the strace log.
#[derive(Debug, Clone)]
struct SshProc {
    start: f64,
    end: Option<f64>,
    /// connect (`ssh -M`), `-O check`/`-O exit`, or the agent command.
    what: String,
    /// The control socket (names the host connection).
    ctl: String,
    /// The address, for masters.
    address: Option<String>,
}

fn clock(t: &str) -> Option<f64> {
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The words of an strace argv dump `["ssh", "-S", ...]` (strings only).
fn strace_words(argv: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = argv.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut w = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(e) = chars.next() {
                        w.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                }
                '"' => break,
                other => w.push(other),
            }
        }
        // strace marks a cut string with "..." after the quote.
        words.push(w);
    }
    words
}

/// Runs one sov command under `strace -f` (execve and exits only) and
/// summarizes, per host, its SSH connections and remote steps.
fn traced(bench: &Bench, args: &[&str], label: &str, expect: &[(&str, &str)]) -> String {
    let log = bench.lists.path().join("strace.log");
    let _ = fs::remove_file(&log);
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-q",
        "-tt",
        "--seccomp-bpf",
        "-e",
        "trace=execve",
        "-e",
        "signal=none",
        "-s",
        "65536",
        "-o",
    ])
    .arg(&log)
    .arg(env!("CARGO_BIN_EXE_sov"))
    .arg("--root")
    .arg(bench.stack.root())
    .args(args);
    let started = Instant::now();
    let out = cmd.output().expect("run strace");
    let total = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "traced sov: {}", stderr(&out));
    let r = report(&out);
    for h in r["hosts"].as_array().unwrap() {
        let name = h["host"].as_str().unwrap();
        let want = expect
            .iter()
            .find(|(n, _)| *n == name)
            .or_else(|| expect.iter().find(|(n, _)| *n == "*"))
            .map(|(_, o)| *o);
        if let Some(want) = want {
            assert_eq!(h["outcome"], want, "traced {label}: {h}");
        }
    }
    let text = fs::read_to_string(&log).unwrap_or_default();
    // Every ssh process in order; by pid, the one running now (pids wrap
    // and are reused, and strace pads short ones).
    let mut procs: Vec<SshProc> = Vec::new();
    let mut running: BTreeMap<u32, usize> = BTreeMap::new();
    let mut t0 = None;
    for line in text.lines() {
        let line = line.trim_start();
        let Some((pid, line)) = line.split_once(' ') else {
            continue;
        };
        let Some((time, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let (Ok(pid), Some(time)) = (pid.parse::<u32>(), clock(time)) else {
            continue;
        };
        t0.get_or_insert(time);
        if let Some(call) = rest.strip_prefix("execve(") {
            let Some((path, argv)) = call.split_once(", [") else {
                continue;
            };
            if !path.ends_with("/ssh\"") || running.contains_key(&pid) {
                continue;
            }
            let words = strace_words(&format!("[{argv}"));
            let flag = |f: &str| words.iter().position(|w| w == f);
            let ctl = flag("-S")
                .and_then(|i| words.get(i + 1))
                .map(|p| p.trim_end_matches("/master").to_string())
                .unwrap_or_default();
            let (what, address) = if flag("-M").is_some() {
                ("connect".to_string(), words.last().cloned())
            } else if let Some(i) = flag("-O") {
                (
                    format!("-O {}", words.get(i + 1).cloned().unwrap_or_default()),
                    None,
                )
            } else {
                let cmd = words
                    .iter()
                    .position(|w| w.contains("sov-agent") && !w.contains('\n'))
                    .and_then(|i| words.get(i + 1))
                    .cloned()
                    .unwrap_or_else(|| "command".to_string());
                (cmd, None)
            };
            running.insert(pid, procs.len());
            procs.push(SshProc {
                start: time,
                end: None,
                what,
                ctl,
                address,
            });
        } else if rest.starts_with("+++ exited") || rest.starts_with("+++ killed") {
            if let Some(k) = running.remove(&pid) {
                procs[k].end = Some(time);
            }
        }
    }
    let t0 = t0.unwrap_or(0.0);
    // Control socket -> host, from the masters.
    let by_address: BTreeMap<String, String> = bench
        .lab
        .hosts
        .iter()
        .map(|h| (h.address.to_string(), h.name.clone()))
        .collect();
    let mut host_of_ctl = BTreeMap::new();
    for p in &procs {
        if let Some(a) = &p.address {
            if let Some(h) = by_address.get(a) {
                host_of_ctl.insert(p.ctl.clone(), h.clone());
            }
        }
    }
    let mut per_host: BTreeMap<String, Vec<SshProc>> = BTreeMap::new();
    for p in &procs {
        let host = host_of_ctl
            .get(&p.ctl)
            .cloned()
            .unwrap_or_else(|| "?".to_string());
        per_host.entry(host).or_default().push(p.clone());
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {label}: {} wall under strace, {} ssh processes",
        ms(total),
        procs.len()
    );
    // Per step kind: how many per host, median duration.
    let mut kinds: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    for ps in per_host.values() {
        for p in ps {
            let e = kinds.entry(p.what.clone()).or_default();
            e.0.push(p.end.unwrap_or(p.start) - p.start);
            e.1 += 1;
        }
    }
    let hosts = per_host.len().max(1);
    let mut parts: Vec<String> = kinds
        .iter()
        .map(|(k, (d, count))| {
            format!(
                "{k} {:.1}x/host, {}",
                *count as f64 / hosts as f64,
                ms(median(d.clone()))
            )
        })
        .collect();
    parts.sort();
    let _ = writeln!(
        s,
        "    per step (count per host, median duration): {}",
        parts.join("; ")
    );
    // Two hosts in detail: the one that changed and a plain one.
    let mut shown = BTreeSet::new();
    for name in [
        bench.lab.hosts[0].name.as_str(),
        bench.lab.hosts[bench.lab.hosts.len() - 1].name.as_str(),
    ] {
        if !shown.insert(name) {
            continue;
        }
        let Some(ps) = per_host.get(name) else {
            continue;
        };
        let mut ps = ps.clone();
        ps.sort_by(|a, b| a.start.total_cmp(&b.start));
        let steps: Vec<String> = ps
            .iter()
            .map(|p| {
                format!(
                    "{} @{:.0}+{:.0}",
                    p.what,
                    (p.start - t0) * 1000.0,
                    (p.end.unwrap_or(p.start) - p.start) * 1000.0
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "    {name} (ms from sov's start + duration): {}",
            steps.join(", ")
        );
    }
    s
}
