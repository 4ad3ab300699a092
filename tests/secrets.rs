//! Secret values never enter the store: templates see only the path where a
//! host will find a secret at run time, and the vault holds only ciphertext.

mod common;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{artifacts, Stack};

const POISON: &str = "poison-7f3a9c1e-do-not-store";

/// Every byte sov wrote, with compressed objects also decompressed.
fn everything_written(state: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in walkdir::WalkDir::new(state) {
        let entry = entry.unwrap();
        let path = entry.path().to_path_buf();
        let shown = path.display().to_string();
        if entry.path_is_symlink() {
            let target = fs::read_link(&path).unwrap();
            all.push((shown, target.into_os_string().into_encoded_bytes()));
        } else if entry.file_type().is_file() {
            let bytes = fs::read(&path).unwrap();
            if shown.ends_with(".zst") {
                all.push((
                    format!("{shown} (decompressed)"),
                    zstd::decode_all(&bytes[..]).unwrap(),
                ));
            }
            all.push((shown, bytes));
        }
    }
    all
}

#[test]
fn a_planted_secret_value_appears_in_no_store_object() {
    let stack = Stack::example();
    // The values are in sov's own vault (age-encrypted) and in the
    // environment, where a careless template context might pick them up.
    for name in ["postgres-password", "lnd-wallet-password"] {
        let mut set = Command::new(env!("CARGO_BIN_EXE_sov"))
            .arg("--root")
            .arg(stack.root())
            .args(["secret", "set", "fra1", name])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        set.stdin
            .take()
            .unwrap()
            .write_all(POISON.as_bytes())
            .unwrap();
        let out = set.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("--root")
        .arg(stack.root())
        .args(["build", "--json"])
        .env("BTCPAY_DB_PASSWORD", POISON)
        .env("SOV_SECRET_BTCPAY_DB_PASSWORD", POISON)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = [out.stdout.clone(), out.stderr.clone()].concat();
    assert!(
        !String::from_utf8_lossy(&printed).contains(POISON),
        "the poison was printed"
    );

    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut secret_paths = 0;
    for a in artifacts(&report) {
        let bytes = fs::read(&a.path).unwrap();
        let text = if a.kind == "compose" {
            zstd::decode_all(&bytes[..]).unwrap()
        } else {
            bytes
        };
        if String::from_utf8_lossy(&text).contains("/run/sov/secrets/") {
            secret_paths += 1;
        }
    }
    assert!(
        secret_paths > 0,
        "no artifact refers to a secret path: the test proves nothing"
    );

    for (path, bytes) in everything_written(&stack.state()) {
        let hit = bytes.windows(POISON.len()).any(|w| w == POISON.as_bytes());
        assert!(!hit, "the poison is in {path}");
    }
}
