//! Secrets end to end on real hosts: set with `sov secret set` or generated,
//! kept age-encrypted on the management machine, delivered before activation
//! to `/run/sov/secrets/NAME` on the host's tmpfs (mode 0600, the image's
//! owner), and found nowhere else: not in the state directory, not in any
//! output, not on any host's disk.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::hosts::{Host, Lab};
use common::labstack::{current, report, LabStack, PLAIN_IMAGE};
use common::stderr;

const POISON: &str = "poison-5e1d-secret-value-never-logged";
const POISON_NEXT: &str = "poison-9b2c-the-rotated-value";

const SECRET_IMAGE: &str = r#"
[[secrets]]
name = "api-token"
owner = "nobody"

[[secrets]]
name = "db-password"
generate = true

[[health]]
name = "token-delivered"
command = ["test", "-s", "/run/sov/secrets/api-token"]
"#;

fn secret_list(stack: &LabStack) -> serde_json::Value {
    let out = stack.sov(&["secret", "list", "lab", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn state_of(list: &serde_json::Value, name: &str) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{name} not listed: {list}"))
}

/// Every file under `dir` (symlink targets too), `.zst` ones also decompressed.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let path = entry.path();
        let mut bytes = if entry.path_is_symlink() {
            fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if entry.file_type().is_file() {
            fs::read(path).unwrap_or_default()
        } else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "zst") {
            if let Ok(plain) = zstd::decode_all(&bytes[..]) {
                bytes.extend(plain);
            }
        }
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(path.display().to_string());
        }
    }
    found
}

fn on_host(lab: &Lab, host: &Host, script: &str) -> String {
    lab.ssh_ok(host, &["sh", "-c", script]).trim().to_string()
}

#[test]
fn secrets_reach_the_hosts_tmpfs_and_nowhere_else() {
    let Some(lab) = Lab::start(2) else { return };
    let stack = LabStack::new(&lab);
    fs::write(
        stack.root().join("images/plain.toml"),
        format!("{PLAIN_IMAGE}{SECRET_IMAGE}"),
    )
    .unwrap();
    stack.build();
    let host = &lab.hosts[1];
    let mut printed: Vec<u8> = Vec::new();

    let list = secret_list(&stack);
    assert_eq!(state_of(&list, "api-token"), "missing");
    assert_eq!(state_of(&list, "db-password"), "generated-on-deploy");

    // A secret nobody set stops the deploy before any host is touched.
    let out = stack.deploy(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sov secret set lab api-token"),
        "{}",
        stderr(&out)
    );
    assert!(lab.hosts.iter().all(|h| current(h).is_none()));

    // Only declared names can be set, and an empty value is refused.
    let out = stack.secret_set("lab", "no-such-secret", &format!("{POISON}\n"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("api-token, db-password"),
        "{}",
        stderr(&out)
    );
    let out = stack.secret_set("lab", "api-token", "\n");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    let out = stack.secret_set("lab", "api-token", &format!("{POISON}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));

    // A host name that is not in the site stops the deploy before any
    // secret is generated.
    let out = stack.deploy(&["--hosts", &format!("{},nosuch", host.name)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    assert_eq!(
        state_of(&secret_list(&stack), "db-password"),
        "generated-on-deploy"
    );

    let out = stack.deploy(&[]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));
    assert_eq!(current(host), Some(1));
    assert_eq!(
        on_host(&lab, host, "cat /run/sov/secrets/api-token"),
        POISON
    );
    assert_eq!(
        on_host(
            &lab,
            host,
            "stat -c '%a %U' /run/sov/secrets/api-token /run/sov/secrets/db-password; stat -f -c %T /run/sov/secrets"
        ),
        "600 nobody\n600 root\ntmpfs"
    );
    let generated = on_host(&lab, host, "cat /run/sov/secrets/db-password");
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_alphanumeric()));
    let list = secret_list(&stack);
    assert_eq!(state_of(&list, "db-password"), "set");

    // The vault keeps the generated value: the next deploy sends nothing.
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));
    for h in report(&out)["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "up-to-date", "{h}");
    }
    assert_eq!(
        on_host(&lab, host, "cat /run/sov/secrets/db-password"),
        generated
    );

    // A rotated value reaches the host though no artifact changed, and the
    // host is activated again with it.
    let out = stack.secret_set("lab", "api-token", &format!("{POISON_NEXT}\n"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));
    let r = report(&out);
    let hosts = r["hosts"].as_array().unwrap();
    assert_eq!(hosts[1]["outcome"], "switched", "{}", hosts[1]);
    assert_eq!(hosts[0]["outcome"], "up-to-date", "{}", hosts[0]);
    assert_eq!(
        on_host(&lab, host, "cat /run/sov/secrets/api-token"),
        POISON_NEXT
    );
    assert_eq!(current(host), Some(1));

    // A reboot empties the tmpfs: the next deploy delivers again.
    on_host(&lab, host, "rm -f /run/sov/secrets/api-token");
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    printed.extend(out.stdout.iter().chain(&out.stderr));
    assert_eq!(
        on_host(&lab, host, "cat /run/sov/secrets/api-token"),
        POISON_NEXT
    );

    for needle in [POISON, POISON_NEXT, generated.as_str()] {
        assert!(
            !printed
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "a secret value was printed"
        );
        let state = stack.root().join(".sov");
        assert_eq!(files_containing(&state, needle), Vec::<String>::new());
        for h in &lab.hosts {
            // Everything the host wrote to disk: its overlay's upper layer.
            let upper = lab.dir.join(&h.name).join("upper");
            assert_eq!(files_containing(&upper, needle), Vec::<String>::new());
        }
    }
    // The values are at rest only as age ciphertext, which age opens.
    let identity = stack.root().join(".sov/secrets/identity.txt");
    let opened = Command::new("age")
        .arg("--decrypt")
        .arg("--identity")
        .arg(&identity)
        .arg(stack.root().join(".sov/secrets/lab/api-token.age"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&opened.stdout), POISON_NEXT);
}
