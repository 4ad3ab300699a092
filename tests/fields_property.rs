//! Every string field of the example stack, one at a time, given a hostile
//! value: a newline and a second nft table, quotes, `$INCLUDE`, a carriage
//! return and an IOS command, NUL, terminal escapes, bidi controls, long
//! strings, option-like words, shell and template syntax, and random mixes.
//! For each, `sov build` either refuses it (exit 2, `file:line:col` of the
//! edited file, state untouched) or builds artifacts that the round-trip
//! oracle finds to mean exactly what the edited stack says, with as many
//! rules, records, users, keys and services as before. Never a panic, a
//! signal, a hang or exit 1; no raw ESC or CR of the input in sov's output.
//!
//! Bounded: about two minutes by default. `SOV_FUZZ_SECONDS=N` runs longer,
//! `SOV_FUZZ_CASES=N` runs exactly N cases, `SOV_FUZZ_SEED=S` changes the
//! inputs, `SOV_FUZZ_CASE=N` replays one case (its seed and number are
//! printed with every failure).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use common::oracle::{self, Reading};
use common::{artifacts, Artifact, Stack};

const DEFAULT_SEED: u64 = 0x5eed_0ff1_e1d5;
const DEFAULT_SECONDS: u64 = 100;
const WORKERS: usize = 2;
/// A build that takes longer has hung (the issue allows 60 s).
const BUILD_TIMEOUT: &str = "60";

// ---- the fields ------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// One string leaf of one TOML file.
#[derive(Debug, Clone)]
struct Field {
    file: String,
    path: Vec<Step>,
    benign: String,
}

impl Field {
    fn name(&self) -> String {
        path_text(&self.path, true)
    }

    /// The field with indices dropped: one class for every firewall comment.
    fn class(&self) -> String {
        format!("{} {}", self.file, path_text(&self.path, false))
    }
}

fn path_text(path: &[Step], indices: bool) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(k) if text.is_empty() => text.push_str(k),
            Step::Key(k) => text.push_str(&format!(".{k}")),
            Step::Index(i) if indices => text.push_str(&format!("[{i}]")),
            Step::Index(_) => text.push_str("[]"),
        }
    }
    text
}

fn leaves(value: &toml::Value, path: &mut Vec<Step>, file: &str, out: &mut Vec<Field>) {
    match value {
        toml::Value::String(s) => out.push(Field {
            file: file.to_string(),
            path: path.clone(),
            benign: s.clone(),
        }),
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                leaves(item, path, file, out);
                path.pop();
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table {
                path.push(Step::Key(k.clone()));
                leaves(v, path, file, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn set(value: &mut toml::Value, path: &[Step], new: &str) {
    let Some((first, rest)) = path.split_first() else {
        *value = toml::Value::String(new.to_string());
        return;
    };
    let next = match (first, value) {
        (Step::Key(k), toml::Value::Table(t)) => t.get_mut(k),
        (Step::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
        _ => None,
    };
    set(next.expect("the field's path exists"), rest, new);
}

fn stack_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for dir in ["sites", "images"] {
        for entry in fs::read_dir(root.join(dir)).expect("read stack folder") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".toml") {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    files
}

fn parse(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).expect("the example stack parses"))
}

// ---- the hostile strings -----------------------------------------------------

/// xorshift64*: small, deterministic, and enough to pick among payloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PAYLOADS: &[&str] = &[
    "\ntable ip evil { chain c { type filter hook forward priority -1; policy accept; } }\n",
    "\" accept; meta l4proto tcp accept #",
    "\\\" accept #",
    "\"",
    "; reboot",
    "# hidden",
    "\n$INCLUDE /etc/passwd\n",
    "0 ( \"x\"",
    "(",
    "\rinterface Vlan99\r ip address 192.0.2.1 255.255.255.0\r",
    "\r\nusername evil privilege 15 secret 0 x\r\n",
    "\0",
    "\x1b[31mred\x1b[0m",
    "\u{202e}txt.exe",
    "\u{2028}line",
    "\u{85}next",
    "\x7f",
    "\x0b\x0c",
    "Grüße ✓ 日本",
    "-oProxyCommand=touch /tmp/sov-fuzz-pwned",
    "*",
    "127.0.10.*",
    "EVIL=1",
    "$(touch sov-fuzz-pwned)",
    "`touch sov-fuzz-pwned`",
    "${HOME}",
    "$$",
    "{{ 7 * 7 }}{% raw %}",
    "'",
    "\\",
    "\t",
    " ",
    "",
    "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKZMlQACrWCXasrgnwDeHKyO3WX811x4RGAHCm0KMwk evil@x\n",
    "\n  - name: evil\n    sudo: ALL\n",
    "../../../etc/passwd",
    "@",
    "%s%n",
];

/// A hostile value for a field: a payload alone, glued to the benign value
/// (the realistic attack: `eth0` and then something), long, or a mix.
fn hostile(rng: &mut Rng, benign: &str) -> String {
    let payload = PAYLOADS[rng.below(PAYLOADS.len())];
    match rng.below(8) {
        0 => payload.to_string(),
        1 => format!("{payload}{benign}"),
        2 => {
            let filler: String = (0..300).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            format!("{benign}{filler}{payload}")
        }
        3 => {
            let mut mix = benign.to_string();
            for _ in 0..3 {
                mix.push_str(PAYLOADS[rng.below(PAYLOADS.len())]);
            }
            mix
        }
        4 => {
            let chars: String = (0..1 + rng.below(12))
                .map(|_| char::from_u32((rng.next() % 0x3000) as u32).unwrap_or('?'))
                .collect();
            format!("{benign}{chars}")
        }
        _ => format!("{benign}{payload}"),
    }
}

// ---- one case ------------------------------------------------------------------

/// A worker's stack: the example, written back through `toml` once (so that
/// only the edit differs), built, and read back by the oracle.
struct Bench {
    stack: Stack,
    texts: BTreeMap<String, String>,
    values: BTreeMap<String, toml::Value>,
    /// Artifact name to (hash, reading) of the unedited build.
    baseline: BTreeMap<String, (String, Reading)>,
    first_site: String,
}

impl Bench {
    fn new() -> Bench {
        let stack = Stack::example();
        let mut texts = BTreeMap::new();
        let mut values = BTreeMap::new();
        for file in stack_files(stack.root()) {
            let value = parse(&stack.read(&file));
            let text = toml::to_string(&value).expect("serialize");
            stack.write(&file, &text);
            texts.insert(file.clone(), text);
            values.insert(file, value);
        }
        let report = stack.build_json();
        let built = artifacts(&report);
        let readings = oracle::read_all(stack.root(), &built).expect("stack parses");
        let mut baseline = BTreeMap::new();
        let mut wrong = Vec::new();
        for a in &built {
            let reading = readings[&a.name].clone();
            wrong.extend(
                reading
                    .mismatches
                    .iter()
                    .map(|m| format!("{}: {m}", a.name)),
            );
            baseline.insert(a.name.clone(), (hash_of(&report, &a.name), reading));
        }
        assert!(
            wrong.is_empty(),
            "the oracle rejects the unedited stack:\n{}",
            wrong.join("\n")
        );
        let first_site = built.first().expect("artifacts").site.clone();
        Bench {
            stack,
            texts,
            values,
            baseline,
            first_site,
        }
    }

    fn run(&self, field: &Field, input: &str) -> Result<(), Vec<String>> {
        let mut edited = self.values[&field.file].clone();
        set(&mut edited, &field.path, input);
        let text = toml::to_string(&edited).expect("serialize");
        self.stack.write(&field.file, &text);
        let result = self.build_and_check(field, input);
        self.stack.write(&field.file, &self.texts[&field.file]);
        result
    }

    fn build_and_check(&self, field: &Field, input: &str) -> Result<(), Vec<String>> {
        let site = field
            .file
            .strip_prefix("sites/")
            .and_then(|f| f.strip_suffix(".toml"))
            .filter(|s| *s != "stack")
            .unwrap_or(&self.first_site)
            .to_string();
        let before = light_snapshot(&self.stack.state());
        let out = Command::new("timeout")
            .arg(BUILD_TIMEOUT)
            .arg(env!("CARGO_BIN_EXE_sov"))
            .arg("--root")
            .arg(self.stack.root())
            .arg("--state")
            .arg(self.stack.state())
            .args(["build", &site, "--json"])
            .output()
            .expect("run sov");
        let mut problems = raw_bytes(&out, input);
        match out.status.code() {
            None => problems.push(format!("killed by a signal: {}", common::stderr(&out))),
            Some(101) => problems.push(format!("panic: {}", tail(&common::stderr(&out)))),
            Some(124) => problems.push(format!("no answer within {BUILD_TIMEOUT} s")),
            Some(1) => problems.push(format!("exit 1: {}", tail(&common::stderr(&out)))),
            Some(2) => {
                let stderr = common::stderr(&out);
                if !names_position(&stderr, &field.file) {
                    problems.push(format!(
                        "exit 2 without {}:LINE:COL: {}",
                        field.file,
                        tail(&stderr)
                    ));
                }
                if light_snapshot(&self.stack.state()) != before {
                    problems.push("exit 2, but the state directory changed".into());
                }
            }
            Some(0) => problems.extend(self.oracle(&out)),
            Some(n) => problems.push(format!("exit {n}: {}", tail(&common::stderr(&out)))),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Reads back every artifact that the edit changed.
    fn oracle(&self, out: &Output) -> Vec<String> {
        let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(r) => r,
            Err(e) => return vec![format!("exit 0 but --json is not JSON: {e}")],
        };
        let built = artifacts(&report);
        let changed: Vec<Artifact> = built
            .iter()
            .filter(|a| {
                self.baseline
                    .get(&a.name)
                    .is_none_or(|(hash, _)| *hash != hash_of(&report, &a.name))
            })
            .cloned()
            .collect();
        let readings = match oracle::read_all(self.stack.root(), &changed) {
            Ok(r) => r,
            Err(e) => return vec![format!("exit 0 but the oracle cannot parse the stack: {e}")],
        };
        let mut problems = Vec::new();
        for a in &changed {
            let reading = &readings[&a.name];
            for m in &reading.mismatches {
                problems.push(format!("exit 0, {} {}: {m}", a.kind, a.name));
            }
            match self.baseline.get(&a.name) {
                None => problems.push(format!("exit 0, a new artifact {}", a.name)),
                // A public zone holds every site's records: an edit of one
                // site's record adds one beside the other's. The oracle's
                // exact comparison of the zone covers it.
                Some(_) if a.kind == "dns" => {}
                Some((_, before)) if before.counts != reading.counts => problems.push(format!(
                    "exit 0, {} {}: counts {:?} became {:?}",
                    a.kind, a.name, before.counts, reading.counts
                )),
                Some(_) => {}
            }
        }
        problems
    }
}

fn hash_of(report: &serde_json::Value, name: &str) -> String {
    report["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["artifacts"].as_array().into_iter().flatten())
        .find(|a| a["name"] == name)
        .and_then(|a| a["hash"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Whether stderr names `file:LINE:COL`.
fn names_position(stderr: &str, file: &str) -> bool {
    stderr.match_indices(file).any(|(i, _)| {
        let rest = &stderr[i + file.len()..];
        let mut parts = rest.splitn(3, ':');
        parts.next() == Some("")
            && parts
                .next()
                .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|c| c.starts_with(|ch: char| ch.is_ascii_digit()))
    })
}

/// Raw terminal bytes of the input that sov echoed.
fn raw_bytes(out: &Output, input: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (byte, what) in [(b'\x1b', "ESC"), (b'\r', "CR")] {
        if !input.as_bytes().contains(&byte) {
            continue;
        }
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if bytes.contains(&byte) {
                problems.push(format!("sov printed a raw {what} of the input on {stream}"));
            }
        }
    }
    problems
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(6);
    format!("{:?}", lines[start..].join("\n"))
}

/// Every path under the state directory with its size and mtime: enough to
/// see a file written, added or removed, without reading the store.
fn light_snapshot(dir: &Path) -> BTreeMap<String, (u64, Option<SystemTime>)> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let path = e.path().strip_prefix(dir).ok()?.display().to_string();
            Some((path, (meta.len(), meta.modified().ok())))
        })
        .collect()
}

// ---- the property --------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

struct Failure {
    case: usize,
    field: Field,
    input: String,
    problems: Vec<String>,
}

/// The kind of a problem, for grouping: its text before the first detail.
fn category(problem: &str) -> String {
    let cut = problem
        .find([':', '('])
        .map(|i| &problem[..i])
        .unwrap_or(problem);
    let mut words: Vec<&str> = cut.split_whitespace().take(8).collect();
    // `exit 0, firewall fra1-firewall.nft`: the kind is the class, not the site.
    words.retain(|w| !w.contains("fra1") && !w.contains("nyc1"));
    words.join(" ")
}

#[test]
fn every_string_field_is_refused_with_a_position_or_means_what_it_says() {
    for tool in oracle::TOOLS {
        if !common::require(tool) {
            return;
        }
    }
    if !(common::require("timeout") && common::require_root()) {
        return;
    }
    let seed = env_u64("SOV_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let only = env_u64("SOV_FUZZ_CASE").map(|c| c as usize);
    let cases = env_u64("SOV_FUZZ_CASES").map(|c| c as usize);
    let seconds = env_u64("SOV_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let deadline = Instant::now() + Duration::from_secs(seconds);

    let pristine = Stack::example();
    let mut fields = Vec::new();
    for file in stack_files(pristine.root()) {
        leaves(
            &parse(&pristine.read(&file)),
            &mut Vec::new(),
            &file,
            &mut fields,
        );
    }
    // A seeded shuffle: each run covers the fields in a different order,
    // every field before any is tried twice.
    let mut rng = Rng::new(seed);
    for i in (1..fields.len()).rev() {
        fields.swap(i, rng.below(i + 1));
    }
    eprintln!(
        "fields_property: seed {seed:#x}, {} string fields, {} s or {cases:?} cases",
        fields.len(),
        seconds
    );

    let next = AtomicUsize::new(only.unwrap_or(0));
    let failures = Mutex::new(Vec::new());
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                let bench = Bench::new();
                loop {
                    let case = next.fetch_add(1, Ordering::SeqCst);
                    let finished = match (only, cases) {
                        (Some(one), _) => case != one,
                        (None, Some(n)) => case >= n,
                        (None, None) => Instant::now() >= deadline,
                    };
                    if finished {
                        break;
                    }
                    let field = &fields[case % fields.len()];
                    let input = hostile(&mut Rng::new(seed ^ (case as u64 + 1)), &field.benign);
                    if let Err(problems) = bench.run(field, &input) {
                        failures.lock().expect("lock").push(Failure {
                            case,
                            field: field.clone(),
                            input,
                            problems,
                        });
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });

    let failures = failures.into_inner().expect("lock");
    let done = done.into_inner();
    // One line per distinct failure (field class and kind of problem), with
    // the first case that showed it and how to replay it.
    let mut classes: BTreeMap<(String, String), (usize, &Failure, &String)> = BTreeMap::new();
    for f in &failures {
        for p in &f.problems {
            let key = (f.field.class(), category(p));
            classes.entry(key).or_insert((0, f, p)).0 += 1;
        }
    }
    let mut report = String::new();
    for ((class, kind), (n, f, p)) in &classes {
        report.push_str(&format!(
            "\n* {class}: {kind} ({n}x)\n    case {} (SOV_FUZZ_SEED={seed:#x} SOV_FUZZ_CASE={}), field {}, input {:?}\n    {}\n",
            f.case,
            f.case,
            f.field.name(),
            f.input,
            p.chars().take(1500).collect::<String>()
        ));
    }
    eprintln!(
        "fields_property: {done} cases, {} failed, {} distinct failures",
        failures.len(),
        classes.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {done} cases failed; {} distinct failures:\n{report}",
        failures.len(),
        classes.len()
    );
}
