//! Input files as an attacker would plant them: links out of the stack,
//! FIFOs, devices, huge files, broken UTF-8, terminal escapes. Each is
//! refused with exit code 2, names the file, shows nothing it points at or
//! holds, and leaves the state directory as it was.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{snapshot, stderr, Stack};

const POISON: &str = "AGE-SECRET-KEY-1POISONPOISON";

/// Longer than any refusal takes; a FIFO or a device that is read would
/// hang or eat memory far past it.
const DEADLINE: Duration = Duration::from_secs(20);

/// `sov --root <stack> --state <stack>/.sov ARGS`, killed and failed if it
/// has not ended by the deadline.
fn sov_bounded(stack: &Stack, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("--root")
        .arg(stack.root())
        .arg("--state")
        .arg(stack.state())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sov");
    let start = Instant::now();
    while child.try_wait().expect("wait for sov").is_none() {
        if start.elapsed() > DEADLINE {
            child.kill().expect("kill sov");
            let out = child.wait_with_output().expect("reap sov");
            panic!(
                "sov {args:?} still ran after {DEADLINE:?}:\n{}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("sov output")
}

/// Runs `sov build`, which must be refused: exit 2, `file` named, the state
/// untouched. Returns stdout and stderr together.
fn refused(stack: &Stack, file: &str) -> String {
    let before = snapshot(&stack.state());
    let out = sov_bounded(stack, &["build"]);
    let all = format!("{}{}", common::stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "expected exit 2:\n{all}");
    assert!(all.contains(file), "the error names {file}:\n{all}");
    assert_eq!(
        snapshot(&stack.state()),
        before,
        "the state directory was touched"
    );
    all
}

fn assert_no_poison(all: &str) {
    assert!(!all.contains("POISON"), "the file's bytes leaked:\n{all}");
}

#[test]
fn a_link_to_the_age_identity_is_refused_without_showing_the_key_or_the_target() {
    let stack = Stack::example();
    let secrets = stack.state().join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    fs::write(secrets.join("identity.txt"), format!("{POISON}\n")).unwrap();
    symlink(
        "../.sov/secrets/identity.txt",
        stack.path("sites/leak.toml"),
    )
    .unwrap();
    let all = refused(&stack, "sites/leak.toml");
    assert_no_poison(&all);
    assert!(
        !all.contains("identity") && !all.contains("secrets/"),
        "the link's target is not shown:\n{all}"
    );
}

#[test]
fn a_link_to_a_file_outside_the_stack_is_refused_without_its_content() {
    let stack = Stack::example();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("secret.toml");
    fs::write(&target, format!("name = \"{POISON}\"\n")).unwrap();
    symlink(&target, stack.path("images/leak.toml")).unwrap();
    let all = refused(&stack, "images/leak.toml");
    assert_no_poison(&all);
    assert!(!all.contains("secret.toml"), "no target shown:\n{all}");
}

#[test]
fn a_template_linked_outside_the_stack_is_refused() {
    let stack = Stack::example();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("t.j2");
    fs::write(&target, format!("{{{{ {POISON} }}\n")).unwrap();
    symlink(&target, stack.path("templates/dns/leak.j2")).unwrap();
    let all = refused(&stack, "templates/dns/leak.j2");
    assert_no_poison(&all);
}

#[test]
fn an_input_folder_linked_outside_the_stack_is_refused() {
    let stack = Stack::example();
    let outside = tempfile::tempdir().unwrap();
    common::copy_tree(&stack.path("images"), &outside.path().join("images"));
    fs::remove_dir_all(stack.path("images")).unwrap();
    symlink(outside.path().join("images"), stack.path("images")).unwrap();
    refused(&stack, "images");
}

#[test]
fn a_link_inside_the_stack_is_read() {
    let stack = Stack::example();
    fs::create_dir_all(stack.path("shared")).unwrap();
    fs::rename(
        stack.path("sites/nyc1.toml"),
        stack.path("shared/nyc1.toml"),
    )
    .unwrap();
    symlink("../shared/nyc1.toml", stack.path("sites/nyc1.toml")).unwrap();
    let out = sov_bounded(&stack, &["build"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_fifo_in_sites_is_refused_without_blocking() {
    let stack = Stack::example();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        stack.path("sites/pipe.toml"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let all = refused(&stack, "sites/pipe.toml");
    assert!(all.contains("FIFO"), "{all}");
}

#[test]
fn a_link_to_dev_zero_is_refused_without_reading_it() {
    let stack = Stack::example();
    symlink("/dev/zero", stack.path("images/zero.toml")).unwrap();
    refused(&stack, "images/zero.toml");
}

#[test]
fn an_oversize_file_is_refused_before_it_is_read() {
    let stack = Stack::example();
    // Sparse: ten gigabytes that take no room and must not be read.
    let file = fs::File::create(stack.path("sites/huge.toml")).unwrap();
    file.set_len(10 << 30).unwrap();
    let all = refused(&stack, "sites/huge.toml");
    let limit = sov::model::input::MAX_FILE_BYTES.to_string();
    assert!(all.contains(&limit), "the limit is named:\n{all}");
}

#[test]
fn a_file_just_over_the_limit_is_refused() {
    let stack = Stack::example();
    let mut text = stack.read("images/www.toml").into_bytes();
    text.resize(sov::model::input::MAX_FILE_BYTES as usize + 1, b'\n');
    fs::write(stack.path("images/www.toml"), text).unwrap();
    refused(&stack, "images/www.toml");
}

#[test]
fn non_utf8_is_reported_at_its_line_and_column() {
    let stack = Stack::example();
    let mut text = stack.read("sites/fra1.toml");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let line = text.lines().count() + 1;
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice("# café \u{1b}[31m".as_bytes());
    bytes.extend_from_slice(b"\xff rest\n");
    fs::write(stack.path("sites/fra1.toml"), bytes).unwrap();
    let all = refused(&stack, &format!("sites/fra1.toml:{line}:13"));
    assert!(
        all.contains("# café \\e[31m"),
        "the valid part shown:\n{all}"
    );
    assert!(
        !all.contains("index"),
        "a position, not a byte index:\n{all}"
    );
}

#[test]
fn terminal_escapes_from_the_stack_are_printed_escaped() {
    // Raw bytes in the offending line (shown as the excerpt), and TOML
    // escapes that the parser decodes into a key quoted by the message.
    for (file, line) in [
        ("sites/fra1.toml", "note = \"\u{1b}[31mred\r\" oops\n"),
        ("images/www.toml", "\"\\u001b[31mred\\r\" = 1\n"),
    ] {
        let stack = Stack::example();
        let mut text = stack.read(file);
        text.push_str(line);
        stack.write(file, &text);
        let before = snapshot(&stack.state());
        let out = sov_bounded(&stack, &["build"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        for stream in [&out.stdout, &out.stderr] {
            assert!(
                !stream.contains(&0x1b) && !stream.contains(&b'\r'),
                "a raw ESC or CR was printed:\n{}",
                String::from_utf8_lossy(stream).escape_debug()
            );
        }
        let err = stderr(&out);
        assert!(err.contains(file) && err.contains("\\e[31mred\\r"), "{err}");
        assert_eq!(snapshot(&stack.state()), before);
    }
}

#[test]
fn an_unknown_site_named_with_escapes_is_printed_escaped() {
    let stack = Stack::example();
    let out = sov_bounded(&stack, &["build", "\u{1b}]0;pwned\u{7}"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07));
    assert!(
        stderr(&out).contains("\\e]0;pwned\\x07"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn state_onto_a_file_is_a_usage_error() {
    let stack = Stack::example();
    let file = stack.path("state-file");
    fs::write(&file, "keep me").unwrap();
    for state in [file.clone(), file.join("below")] {
        let out = common::sov_with_state(stack.root(), &state, &["build"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("--state"), "{}", stderr(&out));
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn init_onto_a_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack");
    fs::write(&file, "keep me").unwrap();
    for target in [file.clone(), file.join("below")] {
        let out = Command::new(env!("CARGO_BIN_EXE_sov"))
            .arg("init")
            .arg(&target)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("not a folder"), "{}", stderr(&out));
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn hidden_files_in_input_folders_are_not_input() {
    let stack = Stack::example();
    stack.write("sites/.fra1.toml", "not toml at all [");
    stack.write("templates/dns/.zone.j2.swp", "{% broken");
    let out = sov_bounded(&stack, &["build"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_dangling_link_is_refused_without_its_target() {
    let stack = Stack::example();
    symlink("../nowhere/at/all.toml", stack.path("sites/gone.toml")).unwrap();
    let all = refused(&stack, "sites/gone.toml");
    assert!(!all.contains("nowhere"), "no target shown:\n{all}");
}
