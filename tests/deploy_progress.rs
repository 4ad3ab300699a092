//! What `sov deploy` shows while it runs, on real hosts
//! (tests/common/hosts.rs): plain lines when stderr is not a terminal, a
//! bar per host redrawn in place when it is (under `script`, which gives it
//! a pseudo-terminal).

mod common;

use std::process::Command;

use common::hosts::{shell_join, Lab};
use common::labstack::LabStack;
use common::{require, stderr, stdout};

#[test]
fn deploy_prints_plain_lines_off_a_terminal_and_bars_on_one() {
    if !require("script") {
        return;
    }
    let Some(lab) = Lab::start(2) else { return };
    let stack = LabStack::new(&lab);
    stack.build();
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stderr(&out);
    assert!(
        !lines.contains('\x1b'),
        "escape codes off a terminal: {lines:?}"
    );
    for host in &lab.hosts {
        let h = &host.name;
        for step in [
            "check",
            "deploying generation 1",
            "take the host lock",
            "receive objects",
            "switch and activate",
            "confirm over a new connection",
        ] {
            let line = format!("{h}: {step}");
            assert!(
                lines.lines().any(|l| l == line),
                "no line {line:?} in:\n{lines}"
            );
        }
        assert!(
            lines
                .lines()
                .any(|l| l.starts_with(&format!("{h}: sent ")) && l.ends_with(" bytes")),
            "no line saying how much {h} was sent:\n{lines}"
        );
    }

    stack.write_site(&lab, "eth0", &["\n[[records]]\nzone = \"internal\"\nname = \"extra\"\ntype = \"A\"\nvalue = \"10.0.0.1\"\n"]);
    stack.build();
    let sov = env!("CARGO_BIN_EXE_sov");
    let root = stack.root().to_str().unwrap();
    let identity = stack.identity.to_str().unwrap();
    let argv = [sov, "--root", root, "deploy", "lab", "--identity", identity];
    let out = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &shell_join(&argv),
            "/dev/null",
        ])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let screen = stdout(&out);
    assert!(out.status.success(), "{screen}\n{}", stderr(&out));
    let frames: Vec<&str> = screen.split("\x1b[J").collect();
    assert!(frames.len() > 2, "no bars redrawn: {screen:?}");
    assert!(
        frames
            .iter()
            .any(|f| f.contains("receive objects") && f.contains("100%") && f.contains("B / ")),
        "no bar with the bytes sent: {screen:?}"
    );
    let last = frames.last().unwrap();
    for host in &lab.hosts {
        let bar = last
            .lines()
            .find(|l| l.starts_with(&format!("{} ", host.name)))
            .unwrap_or_else(|| panic!("no bar for {}: {last:?}", host.name));
        assert!(bar.contains(" [####################] "), "{bar:?}");
    }
    assert!(
        last.contains("generation 1 -> 2"),
        "the last frame shows the outcome: {last:?}"
    );
}
