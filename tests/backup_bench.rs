//! The backup benchmark: `sov backup` and `sov restore` of about 1 GiB of
//! realistic data (tens of thousands of small files, some medium ones and a
//! few large ones, text and incompressible) on a real test host
//! (tests/common/hosts.rs), side by side with plain restic backing up and
//! restoring the same directory on the same machine, read straight from the
//! host's filesystem. It prints a table of numbers and judges none of them
//! (only a command that fails, or data that does not come back whole, stops
//! it). Ignored in a normal `cargo test`; run it with
//!
//! ```text
//! cargo test --release --test backup_bench -- --ignored --nocapture
//! ```
//!
//! `SOV_BENCH_MIB` (default 1024) sizes the data, `SOV_BENCH_RUNS` (default
//! 3) the runs per row, `SOV_BENCH_SETTLE` (default 61) the seconds both
//! sides wait before a timed restore (see `Bench::settle`). Needs root and
//! restic.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::bench::{bytes, env_or, median, median_u64};
use common::hosts::{Host, Lab};
use common::labstack::{current, report, LabStack, PLAIN_IMAGE};
use common::{require, stderr};
use sov::backup::restic::{self, End, Restic};
use sov::secrets::SecretValue;

/// Where the data lives on the data host, and what its image backs up.
const DATA: &str = "/srv/app";

/// The lab's plain image with data: stopping and starting its "services"
/// is a line in a log, so that the numbers are the data's.
fn data_image() -> String {
    format!(
        r#"{PLAIN_IMAGE}
[data]
paths = ["{DATA}"]
stop = [["sh", "-c", "echo stop >>/var/log/app-services"]]
start = [["sh", "-c", "echo start >>/var/log/app-services"]]

[[health]]
name = "data"
command = ["test", "-d", "{DATA}"]
"#
    )
}

/// splitmix64: the same data on every run and every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// Log-uniform in [lo, hi]: many small ones, a few big ones.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let f = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo as f64) * ((hi as f64) / (lo as f64)).powf(f)) as u64
    }
}

/// Text that compresses about like source code, logs or mail: words from a
/// made-up vocabulary, numbers, timestamps.
struct Text {
    rng: Rng,
    words: Vec<Vec<u8>>,
}

impl Text {
    fn new(seed: u64) -> Text {
        let mut rng = Rng(seed);
        let syllables = [
            "ka", "lo", "mi", "ser", "ver", "tor", "an", "ex", "dat", "conf", "ig", "ure", "log",
            "net", "work", "host", "port", "sys", "tem", "app", "user", "id", "ent", "ion", "pro",
            "cess", "file", "path", "back", "up", "re", "store",
        ];
        let words = (0..600)
            .map(|_| {
                let n = 1 + rng.below(3);
                (0..n)
                    .flat_map(|_| syllables[rng.below(syllables.len() as u64) as usize].bytes())
                    .collect()
            })
            .collect();
        Text { rng, words }
    }

    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        out.clear();
        while out.len() < len {
            match self.rng.below(16) {
                0 => {
                    let _ = write!(
                        out,
                        "2024-{:02}-{:02}T{:02}:{:02}:{:02}Z ",
                        1 + self.rng.below(12),
                        1 + self.rng.below(28),
                        self.rng.below(24),
                        self.rng.below(60),
                        self.rng.below(60)
                    );
                }
                1 => {
                    let _ = write!(out, "{} ", self.rng.below(1_000_000));
                }
                2 => out.extend_from_slice(b"\n"),
                _ => {
                    // Zipf-ish: a few words are most of the text.
                    let k = self.rng.log_uniform(1, self.words.len() as u64) as usize - 1;
                    out.extend_from_slice(&self.words[k]);
                    out.push(b' ');
                }
            }
        }
        out.truncate(len);
    }
}

fn random_fill(rng: &mut Rng, out: &mut Vec<u8>, len: usize) {
    out.clear();
    out.reserve(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
}

/// What was generated.
#[derive(Debug, Default)]
struct DataSet {
    files: u64,
    dirs: u64,
    bytes: u64,
    /// Bytes of incompressible content.
    random: u64,
    large: Vec<u64>,
}

/// Writes about `mib` MiB under `dir`, the same every time (content, names,
/// modes and times): 30% small text files (128 B - 32 KiB), 10% small
/// binary ones (1 - 256 KiB), 18% medium ones (1 - 8 MiB, half text), and
/// three large ones (a database-like file of text and binary pages, an
/// incompressible archive, a log): 42%.
fn generate(dir: &Path, mib: u64) -> DataSet {
    let total = mib << 20;
    let mut set = DataSet::default();
    let mut rng = Rng(0x05ee_d0f5_ca1e);
    let mut text = Text::new(0x7e47);
    let mut buf = Vec::new();
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200);
    let write = |path: &Path, data: &[u8], set: &mut DataSet| {
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent).unwrap();
                set.dirs += 1;
            }
        }
        let f = fs::File::create(path).unwrap();
        let mut w = BufWriter::with_capacity(1 << 20, &f);
        w.write_all(data).unwrap();
        w.flush().unwrap();
        drop(w);
        f.set_modified(epoch + Duration::from_secs(set.files * 37))
            .unwrap();
        set.files += 1;
        set.bytes += data.len() as u64;
    };

    let mut budget = total * 30 / 100;
    let mut k = 0u64;
    while budget > 0 {
        let len = rng.log_uniform(128, 32 << 10).min(budget);
        text.fill(&mut buf, len as usize);
        let ext = ["txt", "json", "conf", "md", "eml", "csv"][rng.below(6) as usize];
        let path = dir.join(format!(
            "docs/{:03}/{:02}/f{k:06}.{ext}",
            k / 4000,
            (k / 200) % 20
        ));
        write(&path, &buf, &mut set);
        budget -= len;
        k += 1;
    }
    let mut budget = total * 10 / 100;
    let mut k = 0u64;
    while budget > 0 {
        let len = rng.log_uniform(1 << 10, 256 << 10).min(budget);
        random_fill(&mut rng, &mut buf, len as usize);
        let path = dir.join(format!("cache/{:02}/obj{k:05}.bin", k / 100));
        write(&path, &buf, &mut set);
        set.random += len;
        budget -= len;
        k += 1;
    }
    let mut budget = total * 18 / 100;
    let mut k = 0u64;
    while budget > 0 {
        let len = rng.log_uniform(1 << 20, 8 << 20).min(budget);
        if k.is_multiple_of(2) {
            text.fill(&mut buf, len as usize);
            write(&dir.join(format!("media/doc{k:03}.txt")), &buf, &mut set);
        } else {
            random_fill(&mut rng, &mut buf, len as usize);
            write(&dir.join(format!("media/img{k:03}.jpg")), &buf, &mut set);
            set.random += len;
        }
        budget -= len;
        k += 1;
    }
    let large = total - set.bytes;
    let (db, archive) = (large * 40 / 100, large * 35 / 100);
    let log = large - db - archive;
    // The database: 8 KiB pages, one in three binary.
    let mut page = Vec::new();
    buf.clear();
    let mut random = 0;
    while (buf.len() as u64) < db {
        if rng.below(3) == 0 {
            random_fill(&mut rng, &mut page, 8192);
            random += 8192;
        } else {
            text.fill(&mut page, 8192);
        }
        buf.extend_from_slice(&page);
    }
    buf.truncate(db as usize);
    write(&dir.join("db/main.db"), &buf, &mut set);
    set.random += random.min(db);
    random_fill(&mut rng, &mut buf, archive as usize);
    write(&dir.join("archive/2023.tar.zst"), &buf, &mut set);
    set.random += archive;
    text.fill(&mut buf, log as usize);
    write(&dir.join("logs/app.log"), &buf, &mut set);
    set.large = vec![db, archive, log];
    // A few links, as real data has.
    std::os::unix::fs::symlink("logs/app.log", dir.join("app.log")).unwrap();
    std::os::unix::fs::symlink("../db/main.db", dir.join("logs/db")).unwrap();
    set
}

/// blake3 over every entry under `dir` (sorted): relative path, type,
/// mode, size, mtime and content; with the number of files and bytes.
fn digest(dir: &Path) -> (u64, u64, String) {
    let mut hasher = blake3::Hasher::new();
    let (mut files, mut bytes) = (0, 0);
    let mut buf = vec![0u8; 1 << 20];
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(dir).unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        hasher.update(rel.as_os_str().as_encoded_bytes());
        hasher.update(&[0]);
        if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path()).unwrap();
            hasher.update(b"l");
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            let _ = write!(
                HashWriter(&mut hasher),
                "f{:o} {} {}",
                meta.mode(),
                meta.len(),
                meta.mtime()
            );
            let mut f = fs::File::open(entry.path()).unwrap();
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            files += 1;
            bytes += meta.len();
        } else {
            let _ = write!(HashWriter(&mut hasher), "d{:o}", meta.mode());
        }
        hasher.update(&[0]);
    }
    (files, bytes, hasher.finalize().to_hex().to_string())
}

struct HashWriter<'a>(&'a mut blake3::Hasher);

impl std::fmt::Write for HashWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// `du -sb`: a repository's size on disk, as an operator would measure it.
fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    assert!(out.status.success(), "du: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let started = Instant::now();
    let t = f();
    (started.elapsed().as_secs_f64(), t)
}

fn secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.2} s")
    }
}

/// "median (min - max)" of a set of timings.
fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!(
        "{} ({} - {})",
        secs(median(v.to_vec())),
        secs(min),
        secs(max)
    )
}

fn mib_s(bytes: u64, secs: f64) -> String {
    format!("{:.0} MiB/s", bytes as f64 / (1 << 20) as f64 / secs)
}

/// One run of each side.
#[derive(Default)]
struct Runs {
    cold: Vec<f64>,
    warm: Vec<f64>,
    restore: Vec<f64>,
    /// Repository size after the cold backup, and growth by the warm one.
    repo: Vec<u64>,
    growth: Vec<u64>,
    /// restic's `data_added` of the cold and the warm backup.
    added_cold: Vec<u64>,
    added_warm: Vec<u64>,
    /// How long the host went on removing the old data after the restore.
    after: Vec<f64>,
}

struct Bench<'a> {
    lab: &'a Lab,
    host: &'a Host,
    stack: LabStack,
    identity: String,
    work: tempfile::TempDir,
    password: Vec<u8>,
    settle_secs: u64,
}

impl Bench<'_> {
    fn data(&self) -> PathBuf {
        self.host.root.join(DATA.trim_start_matches('/'))
    }

    fn sov(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--identity", &self.identity, "--json"]);
        let out = self.stack.sov(&all);
        assert!(
            out.status.success(),
            "sov {}: {}",
            args.join(" "),
            stderr(&out)
        );
        report(&out)
    }

    fn sov_repo(&self) -> PathBuf {
        self.stack.root().join(".sov/backups/lab/repo")
    }

    /// `sov backup lab`: the data host's snapshot id.
    fn sov_backup(&self) -> String {
        let r = self.sov(&["backup", "lab"]);
        let hosts = r.as_array().expect("a list of hosts");
        let data = hosts
            .iter()
            .find(|h| h["host"] == self.host.name.as_str())
            .expect("the data host");
        data["backup"].as_str().expect("a backup").to_string()
    }

    /// `sov backups lab --json` (it connects to no host: no key to give).
    fn backups(&self) -> serde_json::Value {
        let out = self.stack.sov(&["backups", "lab", "--json"]);
        assert!(out.status.success(), "sov backups: {}", stderr(&out));
        report(&out)
    }

    /// restic's `added` for a backup, as `sov backups --json` lists it.
    fn sov_added(&self, id: &str) -> u64 {
        let list = self.backups();
        list.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"].as_str().is_some_and(|full| full.starts_with(id)))
            .and_then(|b| b["added"].as_u64())
            .unwrap_or_else(|| panic!("backup {id} not listed: {list}"))
    }

    fn run_sov(&self, runs: &mut Runs, expected: &(u64, u64, String)) {
        let _ = fs::remove_dir_all(self.sov_repo().parent().unwrap());
        let (t, cold) = timed(|| self.sov_backup());
        runs.cold.push(t);
        let size = du(&self.sov_repo());
        let (t, warm) = timed(|| self.sov_backup());
        runs.warm.push(t);
        runs.repo.push(size);
        runs.growth.push(du(&self.sov_repo()) - size);
        runs.added_cold.push(self.sov_added(&cold));
        runs.added_warm.push(self.sov_added(&warm));
        // The data changes (so that the restore has to put it back), the
        // host stays at the backup's generation: the restore is the data,
        // the services' stop and start and the health checks.
        self.lab.ssh_ok(
            self.host,
            &["sh", "-c", &format!("rm -rf {DATA}/docs/000 {DATA}/db")],
        );
        self.settle();
        let (t, r) = timed(|| self.sov(&["restore", "lab", "--backup", &cold]));
        runs.restore.push(t);
        assert_eq!(r["ok"], true, "{r}");
        // The host removes the old copy in the background: nothing else
        // runs until it is gone, and how long it went on is reported.
        let (t, ()) = timed(|| self.wait_for_trash());
        runs.after.push(t);
        assert_eq!(current(self.host), Some(1));
        assert_eq!(
            &digest(&self.data()),
            expected,
            "the data after sov restore"
        );
    }

    /// Waits until the data host has removed the old copies of restores.
    fn wait_for_trash(&self) {
        let parent = self.data().parent().unwrap().to_path_buf();
        let deadline = Instant::now() + Duration::from_secs(300);
        while fs::read_dir(&parent).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".sov-trash.")
        }) {
            assert!(Instant::now() < deadline, "the old data is still there");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Before a timed restore: the files either side deleted are written
    /// out and no longer recent. This machine's ext4 has no journal, and
    /// without one ext4 will not reuse an inode freed in the last 60 s
    /// (300 s more while its table block is dirty): each file a restore
    /// makes then first skips over such inodes, which cost a restore that
    /// followed the removal of 57,000 files seconds before it up to a third
    /// more time. Journalled ext4, as hosts run, never checks.
    fn settle(&self) {
        sync();
        self.lab.ssh_ok(self.host, &["sync"]);
        std::thread::sleep(Duration::from_secs(self.settle_secs));
    }

    fn restic(&self, repo: &Path) -> Restic {
        Restic::new(repo.to_path_buf(), SecretValue::new(self.password.clone()))
    }

    fn run_plain(&self, runs: &mut Runs, run: usize, expected: &(u64, u64, String)) {
        let repo = self.work.path().join(format!("plain-{run}"));
        let restic = self.restic(&repo);
        let data = self.data();
        let data = data.to_str().unwrap();
        let backup = || {
            let out = restic
                .run("back up", &["backup", "--json", "--quiet", data])
                .unwrap();
            restic::summary(&out).expect("a summary")
        };
        let (t, cold) = timed(|| {
            restic.run("init", &["init"]).unwrap();
            backup()
        });
        runs.cold.push(t);
        let size = du(&repo);
        let (t, warm) = timed(backup);
        runs.warm.push(t);
        runs.repo.push(size);
        runs.growth.push(du(&repo) - size);
        runs.added_cold.push(cold.data_added);
        runs.added_warm.push(warm.data_added);
        // Into a fresh folder on the host's filesystem, then made durable
        // as sov's restore makes it (the agent syncs before it drops the
        // old copy).
        let target = self.host.root.join("srv/plain-restore");
        self.settle();
        let (t, ()) = timed(|| {
            restic
                .run(
                    "restore",
                    &[
                        "restore",
                        &cold.snapshot_id,
                        "--target",
                        target.to_str().unwrap(),
                    ],
                )
                .unwrap();
            sync();
        });
        runs.restore.push(t);
        let restored = target.join(data.trim_start_matches('/'));
        assert_eq!(
            &digest(&restored),
            expected,
            "the data after restic restore"
        );
        fs::remove_dir_all(&target).unwrap();
        fs::remove_dir_all(&repo).unwrap();
    }
}

fn sync() {
    let status = Command::new("sync").status().unwrap();
    assert!(status.success());
}

/// Where a sov backup's time goes, one piece at a time.
fn breakdown(bench: &Bench, bytes: u64) -> String {
    let mut s = String::new();
    let tar = format!(
        "tar -c -f - --sort=name --numeric-owner -C / {}",
        &DATA[1..]
    );
    // 1. The host's tar alone (into a pipe: GNU tar skips reading files
    // when it writes to /dev/null).
    let (t, out) = timed(|| {
        bench.lab.ssh(
            bench.host,
            &["sh", "-c", &format!("{tar} | cat >/dev/null")],
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = writeln!(
        s,
        "  tar on the host into a pipe: {} ({})",
        secs(t),
        mib_s(bytes, t)
    );
    // 2. The same stream through SSH to this side, with OpenSSH's default
    // cipher (what sov's connections negotiate) and with AES-GCM.
    for cipher in ["chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"] {
        let (t, out) = timed(|| {
            bench
                .lab
                .ssh_command(bench.host)
                .args(["-c", cipher, "--", &tar])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .output()
                .unwrap()
        });
        assert!(out.status.success(), "{}", stderr(&out));
        let _ = writeln!(
            s,
            "  tar on the host, through ssh -c {cipher} to /dev/null here: {} ({})",
            secs(t),
            mib_s(bytes, t)
        );
    }
    // 3. restic's --stdin alone: a local tar of the same folder.
    let repo = bench.work.path().join("stdin-only");
    let restic = bench.restic(&repo);
    restic.run("init", &["init"]).unwrap();
    let (t, ()) = timed(|| {
        let (running, input) = restic
            .start(
                "back up",
                &[
                    "backup",
                    "--json",
                    "--quiet",
                    "--stdin",
                    "--stdin-filename",
                    "h.tar",
                ],
                End::Input,
            )
            .unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -c -f - --sort=name --numeric-owner -C {} {}",
                bench.host.root.display(),
                &DATA[1..]
            ))
            .stdout(Stdio::from(input))
            .status()
            .unwrap();
        assert!(status.success());
        running.finish().unwrap();
    });
    let _ = writeln!(
        s,
        "  tar here into restic backup --stdin (no ssh), fresh repository: {} ({})",
        secs(t),
        mib_s(bytes, t)
    );
    // 4. restic's dump of that snapshot alone, into a pipe.
    let (t, ()) = timed(|| {
        let (running, output) = restic
            .start("dump", &["dump", "latest", "/h.tar"], End::Output)
            .unwrap();
        let status = Command::new("cat")
            .stdin(Stdio::from(output))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        running.finish().unwrap();
    });
    let _ = writeln!(
        s,
        "  restic dump of that snapshot into a pipe here: {} ({})",
        secs(t),
        mib_s(bytes, t)
    );
    fs::remove_dir_all(&repo).unwrap();
    // 5. The host's side of a restore: unpack a tar of the data into a
    // new folder, make it durable, remove the old copy.
    let copy = "/srv/bench-copy";
    for (what, script) in [
        (
            "tar -c | tar -x on the host (a copy of the data)",
            format!(
                "mkdir {copy} && {tar} | tar -x -f - -p --same-owner --numeric-owner -C {copy}"
            ),
        ),
        ("sync on the host", "sync".to_string()),
        ("rm -rf of that copy on the host", format!("rm -rf {copy}")),
    ] {
        let (t, out) = timed(|| bench.lab.ssh(bench.host, &["sh", "-c", &script]));
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let _ = writeln!(s, "  {what}: {}", secs(t));
    }
    // 6. What every sov command pays before any data moves.
    let (t, _) = timed(|| bench.backups());
    let _ = writeln!(
        s,
        "  sov backups lab (opens the repository, lists snapshots; no data): {}",
        secs(t)
    );
    s
}

#[test]
#[ignore = "benchmark: cargo test --release --test backup_bench -- --ignored --nocapture"]
fn backup_benchmark() {
    let mib: u64 = env_or("SOV_BENCH_MIB", 1024);
    let runs: usize = env_or("SOV_BENCH_RUNS", 3).max(1);
    let git = common::bench::git_describe();
    if !common::require_root() || !require("restic") {
        return;
    }
    let Some(lab) = Lab::start(2) else { return };
    let host = &lab.hosts[1];
    lab.ssh(host, &["systemctl", "is-system-running", "--wait"]);
    let stack = LabStack::new(&lab);
    fs::write(stack.root().join("images/plain.toml"), data_image()).unwrap();
    fs::create_dir_all(host.root.join(&DATA[1..])).unwrap();
    stack.build();
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    assert_eq!(current(host), Some(1));
    let bench = Bench {
        lab: &lab,
        host,
        identity: stack.identity.display().to_string(),
        stack,
        work: tempfile::tempdir().unwrap(),
        password: b"backup-bench-password-not-secret".to_vec(),
        settle_secs: env_or("SOV_BENCH_SETTLE", 61),
    };

    let (t, set) = timed(|| generate(&bench.data(), mib));
    sync();
    let expected = digest(&bench.data());
    eprintln!(
        "generated {} files in {} folders, {} bytes ({} incompressible), large files {:?}, in {:.1} s",
        set.files,
        set.dirs,
        set.bytes,
        set.random,
        set.large,
        t
    );
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let (mut sov_runs, mut plain_runs) = (Runs::default(), Runs::default());
    let mut pieces = String::new();
    for run in 0..runs {
        // Alternate who goes first, so that neither always meets a
        // cache the other warmed or a load the other left.
        if run % 2 == 0 {
            bench.run_sov(&mut sov_runs, &expected);
            bench.run_plain(&mut plain_runs, run, &expected);
        } else {
            bench.run_plain(&mut plain_runs, run, &expected);
            bench.run_sov(&mut sov_runs, &expected);
        }
        eprintln!(
            "run {} of {runs} done after {:.0?}",
            run + 1,
            started.elapsed()
        );
        if run == 0 {
            pieces = breakdown(&bench, set.bytes);
        }
    }
    let load_after = fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let ratio = |a: &[f64], b: &[f64]| format!("{:.2}x", median(a.to_vec()) / median(b.to_vec()));
    let cpus = std::thread::available_parallelism().map_or(0, |c| c.get());
    let restic_version = Command::new("restic")
        .arg("version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let load = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!();
    println!(
        "backup benchmark: `cargo test --release --test backup_bench -- --ignored --nocapture`"
    );
    println!(
        "sov {git}; {restic_version}; {} MiB: {} files in {} folders, {} bytes, {:.0}% incompressible, \
         the largest {} MiB; {runs} runs per row (median (min - max))",
        mib,
        bytes(set.files),
        bytes(set.dirs),
        bytes(set.bytes),
        set.random as f64 * 100.0 / set.bytes as f64,
        set.large.iter().max().copied().unwrap_or(0) >> 20
    );
    println!(
        "machine: {cpus} CPUs, shared by both ends (the host is a container here; ssh, tar and restic \
         all run on them); the data mostly in the page cache (this VM reclaims idle page cache); load average {} before, {} after",
        load(&load_before),
        load(&load_after)
    );
    println!();
    println!("| | sov | plain restic | sov / restic |");
    println!("|---|---|---|---|");
    println!(
        "| first backup, fresh repository | {} | {} | {} |",
        spread(&sov_runs.cold),
        spread(&plain_runs.cold),
        ratio(&sov_runs.cold, &plain_runs.cold)
    );
    println!(
        "| second backup, data unchanged | {} | {} | {} |",
        spread(&sov_runs.warm),
        spread(&plain_runs.warm),
        ratio(&sov_runs.warm, &plain_runs.warm)
    );
    println!(
        "| restore | {} | {} | {} |",
        spread(&sov_runs.restore),
        spread(&plain_runs.restore),
        ratio(&sov_runs.restore, &plain_runs.restore)
    );
    println!(
        "| restore: old data still being removed on the host after sov returned | {} | | |",
        spread(&sov_runs.after)
    );
    println!(
        "| repository after the first backup (du -sb) | {} B | {} B | |",
        bytes(median_u64(sov_runs.repo.iter().copied())),
        bytes(median_u64(plain_runs.repo.iter().copied()))
    );
    println!(
        "| restic's `added`, first backup | {} B | {} B | |",
        bytes(median_u64(sov_runs.added_cold.iter().copied())),
        bytes(median_u64(plain_runs.added_cold.iter().copied()))
    );
    println!(
        "| repository growth, second backup (du -sb) | {} B | {} B | |",
        bytes(median_u64(sov_runs.growth.iter().copied())),
        bytes(median_u64(plain_runs.growth.iter().copied()))
    );
    println!(
        "| restic's `added`, second backup | {} B | {} B | |",
        bytes(median_u64(sov_runs.added_warm.iter().copied())),
        bytes(median_u64(plain_runs.added_warm.iter().copied()))
    );
    println!();
    println!("what each side does:");
    println!(
        "  sov backup lab: opens the repository (a fresh one is created first), connects to both \
         hosts, takes the data host's lock, stops its services, streams tar through ssh into \
         restic backup --stdin, starts the services, applies the retention policy"
    );
    println!(
        "  plain restic: [init], restic backup {DATA} read through the host's overlay from this side \
         (restic's own file scanner; a second backup skips files unchanged since its parent snapshot)"
    );
    println!(
        "  sov restore lab --backup ID (the host already at the backup's generation; a part of the \
         data deleted first): stops the services, moves the old data aside, restic dump dealt out \
         as tar streams through ssh to several tar -x side by side, then the folders, sync, starts \
         removing the old copy in the background, starts the services, runs the health checks"
    );
    println!(
        "  plain restic: restic restore ID --target a fresh folder on the host's filesystem, then sync"
    );
    println!(
        "  before each timed restore, both sides: sync, then {} s for the files deleted before it to \
         be old (SOV_BENCH_SETTLE; see Bench::settle)",
        bench.settle_secs
    );
    println!();
    println!("where the time goes (after the first run, one measurement each):");
    print!("{pieces}");
    println!();
    println!("benchmark took {:.0?}", started.elapsed());
}
