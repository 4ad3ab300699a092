//! The host agent, checked by shellcheck as the POSIX sh it runs under: a
//! finding of any severity fails the test, with shellcheck's own output.

mod common;

use std::process::Command;

#[test]
fn the_host_agent_passes_shellcheck_as_posix_sh() {
    if !common::require("shellcheck") {
        return;
    }
    let agent = common::repo().join("builder/deploy/agent.sh");
    let out = Command::new("shellcheck")
        .args(["-s", "sh", "-f", "gcc"])
        .arg(&agent)
        .output()
        .expect("shellcheck runs");
    assert!(
        out.status.success(),
        "shellcheck finds problems in {}:\n{}{}",
        agent.display(),
        String::from_utf8_lossy(&out.stdout),
        common::stderr(&out)
    );
}
