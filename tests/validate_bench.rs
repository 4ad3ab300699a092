//! The validation benchmark: how long `sov build` takes to load and check a
//! site grown to 100,000 hosts (made invalid by one duplicate host, so that
//! it stops after validation), and to report 100,000 duplicate VLAN ids or
//! host names. It prints a table of numbers and judges none of them.
//! Ignored in a normal `cargo test`; run it with
//!
//! ```text
//! cargo test --release --test validate_bench -- --ignored --nocapture
//! ```
//!
//! `SOV_BENCH_ENTRIES` (default 100000) scales every case,
//! `SOV_BENCH_TIMEOUT` (seconds, default 600) stops a case that runs
//! longer, and `SOV_BENCH_SOV` measures another build of sov (of an older
//! tree, say) instead of this tree's. Peak memory needs /usr/bin/time.

mod common;

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bench::{bytes, env_or, git_describe};
use common::scale::{self, BULK_VLAN, SITE};
use common::Stack;

/// Makes the text a case appends to the site (made when the case runs, so
/// that one case's text at a time is in memory).
type Grow<'a> = Box<dyn Fn() -> String + 'a>;

/// What one run of `sov build` on a grown stack gave.
struct Run {
    secs: f64,
    /// None: stopped at the timeout.
    exit: Option<i32>,
    problems: Option<u64>,
    peak_kib: Option<u64>,
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn validation_at_scale() {
    let n: usize = env_or("SOV_BENCH_ENTRIES", 100_000);
    let timeout = Duration::from_secs(env_or("SOV_BENCH_TIMEOUT", 600));
    let sov = std::env::var("SOV_BENCH_SOV").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sov").into());
    println!("sov {} ({sov}), {n} entries per case", git_describe());
    let cases: [(&str, Grow<'_>); 3] = [
        (
            "hosts, one of them a duplicate",
            Box::new(|| {
                let mut text = format!("{BULK_VLAN}{}", scale::hosts(n, |i| format!("h{i}")));
                text.push_str(&scale::hosts(1, |_| "h0".into()));
                text
            }),
        ),
        (
            "VLANs, every id a duplicate",
            Box::new(|| scale::vlans(n, 10)),
        ),
        (
            "hosts, every name a duplicate",
            Box::new(|| format!("{BULK_VLAN}{}", scale::hosts(n, |_| "ns1".into()))),
        ),
    ];
    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5}",
        "case", "entries", "file MB", "seconds", "problems", "peak MB", "exit"
    );
    for (name, grow) in cases {
        let stack = Stack::example();
        let mut text = stack.read(SITE);
        text.push_str(&grow());
        stack.write(SITE, &text);
        let run = build(&sov, &stack, timeout);
        let shown = |v: Option<u64>| v.map_or("-".to_string(), bytes);
        println!(
            "{:<32} {:>10} {:>10.1} {:>10} {:>10} {:>10} {:>5}",
            name,
            bytes(n as u64),
            text.len() as f64 / 1e6,
            match run.exit {
                Some(_) => format!("{:.2}", run.secs),
                None => format!("> {:.0}", run.secs),
            },
            shown(run.problems),
            shown(run.peak_kib.map(|k| k / 1024)),
            run.exit.map_or("-".to_string(), |c| c.to_string()),
        );
    }
}

/// `sov build` of the stack, under /usr/bin/time when there is one, in its
/// own process group so that a timeout stops all of it.
fn build(sov: &str, stack: &Stack, timeout: Duration) -> Run {
    let timed = Path::new("/usr/bin/time").exists();
    let rusage = stack.path("rusage.txt");
    let errors = stack.path("stderr.txt");
    let mut command = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("%M").arg("-o").arg(&rusage).arg(sov);
        c
    } else {
        Command::new(sov)
    };
    command
        .arg("--root")
        .arg(stack.root())
        .arg("--state")
        .arg(stack.state())
        .arg("build")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errors).expect("stderr file"))
        .process_group(0);
    let start = Instant::now();
    let mut child = command.spawn().expect("run sov");
    let status = scale::wait_at_most(&mut child, timeout);
    let secs = start.elapsed().as_secs_f64();
    let stderr = fs::read_to_string(&errors).unwrap_or_default();
    let problems = stderr
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_suffix(" problems found")
                .or(l.strip_suffix(" problem found"))
        })
        .and_then(|n| n.parse().ok());
    let peak_kib = fs::read_to_string(&rusage)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()));
    Run {
        secs,
        exit: status.map(|s| s.code().unwrap_or(-1)),
        problems,
        peak_kib: if timed && status.is_some() {
            peak_kib
        } else {
            None
        },
    }
}
