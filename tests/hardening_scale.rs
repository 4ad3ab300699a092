//! Checks that scale: a site with thousands of problems gets every one of
//! them reported, each at its own line, and no check grows with the square
//! of the site. No timing is asserted; a generous limit only turns a
//! regression to quadratic work into a failure instead of a hung CI job.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::scale::{self, lines_equal, BULK_VLAN, SITE};
use common::{snapshot, Stack};

/// Far above what linear checks take (the 100,000 duplicates below cost a
/// debug build about 11 s of CPU), far below the hours quadratic ones took.
const HANG_GUARD: Duration = Duration::from_secs(180);

/// What a refused `sov build` printed.
struct Refusal {
    stderr: String,
}

impl Refusal {
    /// (line, column) of every diagnostic in `file` whose message contains `text`.
    fn positions(&self, file: &str, text: &str) -> Vec<(usize, usize)> {
        let prefix = format!("error: {file}:");
        self.stderr
            .lines()
            .filter(|l| l.contains(text))
            .filter_map(|l| {
                let rest = l.strip_prefix(&prefix)?;
                let mut parts = rest.splitn(3, ':');
                let line = parts.next()?.parse().ok()?;
                let column = parts.next()?.parse().ok()?;
                Some((line, column))
            })
            .collect()
    }
}

/// `sov build` of a stack that must be refused as bad input (exit 2),
/// within the hang guard, with nothing written to the state directory.
fn refused(stack: &Stack) -> Refusal {
    let before = snapshot(&stack.state());
    let errors = stack.path("stderr.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sov"))
        .arg("--root")
        .arg(stack.root())
        .arg("--state")
        .arg(stack.state())
        .arg("build")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&errors).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("run sov");
    let status = scale::wait_at_most(&mut child, HANG_GUARD)
        .unwrap_or_else(|| panic!("sov build did not finish within {HANG_GUARD:?}"));
    let stderr = fs::read_to_string(&errors).expect("read stderr");
    assert_eq!(
        status.code(),
        Some(2),
        "expected exit 2 for bad input; stderr (head):\n{}",
        head(&stderr)
    );
    assert_eq!(
        snapshot(&stack.state()),
        before,
        "a refused build wrote to the state"
    );
    Refusal { stderr }
}

fn head(text: &str) -> String {
    text.lines().take(40).collect::<Vec<_>>().join("\n")
}

/// The example stack with `extra` appended to fra1.
fn grown(extra: &str) -> (Stack, String) {
    let stack = Stack::example();
    let mut text = stack.read(SITE);
    text.push_str(extra);
    stack.write(SITE, &text);
    (stack, text)
}

#[test]
fn every_duplicate_vlan_id_is_reported_at_its_line() {
    let (stack, text) = grown(&scale::vlans(2_000, 10));
    let refusal = refused(&stack);
    let found = refusal.positions(SITE, "VLAN id 10 is already used by VLAN `mgmt`");
    // The first `id = 10` is the example's own mgmt VLAN.
    let expected: Vec<(usize, usize)> = lines_equal(&text, "id = 10")
        .into_iter()
        .skip(1)
        .map(|line| (line, 6))
        .collect();
    assert_eq!(expected.len(), 2_000);
    assert_eq!(found, expected, "stderr (head):\n{}", head(&refusal.stderr));
    assert!(
        refusal.stderr.ends_with("2000 problems found\n"),
        "only the duplicates are problems; stderr (tail): {}",
        &refusal.stderr[refusal.stderr.len().saturating_sub(300)..]
    );
}

#[test]
fn every_duplicate_host_name_is_reported_at_its_line() {
    let extra = format!("{BULK_VLAN}{}", scale::hosts(2_000, |_| "ns1".into()));
    let (stack, text) = grown(&extra);
    let refusal = refused(&stack);
    let found = refusal.positions(SITE, "host name `ns1` is already used by host number 2");
    let expected: Vec<(usize, usize)> = lines_equal(&text, "name = \"ns1\"")
        .into_iter()
        .skip(1)
        .map(|line| (line, 8))
        .collect();
    assert_eq!(expected.len(), 2_000);
    assert_eq!(found, expected, "stderr (head):\n{}", head(&refusal.stderr));
}

#[test]
fn a_hundred_thousand_duplicates_are_reported_before_the_guard() {
    let (stack, _) = grown(&scale::vlans(100_000, 10));
    let refusal = refused(&stack);
    assert!(
        refusal.stderr.ends_with("100000 problems found\n"),
        "stderr (tail): {}",
        &refusal.stderr[refusal.stderr.len().saturating_sub(300)..]
    );
}

#[test]
fn identical_subnets_are_reported_once_each() {
    // 500 VLANs on one subnet: each after the first overlaps, and is
    // reported once, not once per earlier VLAN (that would be 124,750).
    let mut extra = String::new();
    for i in 0..500 {
        extra.push_str(&format!(
            "\n[[vlans]]\nid = {}\nname = \"same{i}\"\nsubnet = \"10.200.0.0/24\"\ngateway = \"10.200.0.1\"\ninterface = \"same{i}\"\n",
            100 + i
        ));
    }
    let (stack, text) = grown(&extra);
    let refusal = refused(&stack);
    let found = refusal.positions(SITE, "overlaps subnet 10.200.0.0/24");
    let expected: Vec<(usize, usize)> = lines_equal(&text, "subnet = \"10.200.0.0/24\"")
        .into_iter()
        .skip(1)
        .map(|line| (line, 10))
        .collect();
    assert_eq!(found, expected, "stderr (head):\n{}", head(&refusal.stderr));
}

#[test]
fn nested_subnets_are_each_reported() {
    // A /16 holding a /24 holding a /30, declared outermost last: both
    // later VLANs are reported, each at its own subnet.
    let vlan = |id: u16, subnet: &str, gateway: &str| {
        format!("\n[[vlans]]\nid = {id}\nname = \"n{id}\"\nsubnet = \"{subnet}\"\ngateway = \"{gateway}\"\ninterface = \"n{id}\"\n")
    };
    let extra = [
        vlan(101, "10.201.7.0/30", "10.201.7.1"),
        vlan(102, "10.201.7.0/24", "10.201.7.5"),
        vlan(103, "10.201.0.0/16", "10.201.0.1"),
    ]
    .concat();
    let (stack, text) = grown(&extra);
    let refusal = refused(&stack);
    let line = |subnet: &str| lines_equal(&text, &format!("subnet = \"{subnet}\""))[0];
    assert_eq!(
        refusal.positions(SITE, "overlaps subnet"),
        vec![(line("10.201.7.0/24"), 10), (line("10.201.0.0/16"), 10)],
        "stderr:\n{}",
        refusal.stderr
    );
}

#[test]
fn unknown_names_list_a_few_of_the_known_ones() {
    // Every host names a VM host that does not exist: the message lists
    // some of the 2,000 known hosts, not all of them, 2,000 times.
    let extra = format!(
        "{BULK_VLAN}{}",
        scale::hosts(2_000, |i| format!("h{i}"))
            .replace("image = \"dns\"\n", "image = \"dns\"\nvm_on = \"nosuch\"\n")
    );
    let (stack, _) = grown(&extra);
    let refusal = refused(&stack);
    let messages: Vec<&str> = refusal
        .stderr
        .lines()
        .filter(|l| l.contains("unknown host `nosuch`"))
        .collect();
    assert_eq!(messages.len(), 2_000);
    assert!(
        messages.iter().all(|m| m.len() < 400 && m.contains("more")),
        "{}",
        messages[0]
    );
}

#[test]
fn a_bundle_file_inside_another_is_refused_with_its_position() {
    for (path, message) in [
        (
            "caddy",
            "bundle file `caddy` is also the folder of bundle file `caddy/Caddyfile`",
        ),
        (
            "caddy/Caddyfile/extra",
            "bundle file `caddy/Caddyfile/extra` needs `caddy/Caddyfile` to be a folder",
        ),
        ("compose.yaml/extra", "needs `compose.yaml` to be a folder"),
    ] {
        let stack = Stack::example();
        let image = "images/www.toml";
        let mut text = stack.read(image);
        text.push_str(&format!(
            "\n[[files]]\npath = \"{path}\"\ntemplate = \"caddy/Caddyfile.j2\"\n"
        ));
        stack.write(image, &text);
        let refusal = refused(&stack);
        let line = lines_equal(&text, &format!("path = \"{path}\""))[0];
        assert_eq!(
            refusal.positions(image, message),
            vec![(line, 8)],
            "stderr:\n{}",
            refusal.stderr
        );
    }
}
