//! Values that tried to escape their context (the hardening issue's sample):
//! each is refused with exit 2 at its file and line and touches nothing, or
//! builds into an artifact that means exactly what the stack says.

mod common;

use std::fs;

use common::{artifacts, snapshot, stderr, Stack};

const SITE: &str = "sites/fra1.toml";

/// Replaces the first `from` in `file`, builds, and asserts exit 2 with a
/// message at `file:` naming `expect`, and an untouched state.
fn refused(file: &str, from: &str, to: &str, expect: &str) {
    let stack = Stack::example();
    assert!(stack.sov(&["build"]).status.success());
    let before = snapshot(&stack.state());
    let text = stack.read(file);
    assert!(text.contains(from), "{file} has no `{from}`");
    stack.write(file, &text.replacen(from, to, 1));
    let out = stack.sov(&["build"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{to:?} was not refused:\n{err}");
    assert!(
        err.contains(&format!("{file}:")),
        "no position in {file}:\n{err}"
    );
    assert!(err.contains(expect), "`{expect}` not in:\n{err}");
    assert!(
        !err.contains('\u{1b}') && !err.contains('\r'),
        "raw control characters:\n{err}"
    );
    assert_eq!(snapshot(&stack.state()), before, "the state changed");
}

#[test]
fn an_interface_name_cannot_inject_nft() {
    refused(
        SITE,
        "wan_interface = \"eth0\"",
        r#"wan_interface = "eth0\" accept; meta l4proto tcp accept #""#,
        "not an interface name",
    );
    refused(
        SITE,
        "interface = \"eth1.10\"",
        "interface = \"eth1.10\\ntable ip evil { }\"",
        "not an interface name",
    );
}

#[test]
fn record_data_cannot_add_records_or_directives() {
    for (rtype, value, expect) in [
        (
            "MX",
            "0 ( \\\"x\\\"",
            "expected `<preference> <mail server>`",
        ),
        (
            "CNAME",
            "a\\n$INCLUDE /etc/passwd",
            "expected CNAME data on one line",
        ),
        ("NS", "ns1 ns2", "expected `<target name>`"),
        ("SRV", "0 0 1 (", "is not a target name"),
        (
            "CAA",
            "0 issue \\\"a\\\" \\\"b\\\"",
            "expected a plain value",
        ),
    ] {
        refused(
            SITE,
            "[[records]]",
            &format!("[[records]]\nzone = \"public\"\nname = \"evil\"\ntype = \"{rtype}\"\nvalue = \"{value}\"\n\n[[records]]"),
            expect,
        );
    }
    refused(
        SITE,
        "[[records]]",
        &format!("[[records]]\nzone = \"public\"\nname = \"{}\"\ntype = \"TXT\"\nvalue = \"x\"\n\n[[records]]", "a.".repeat(125) + "a"),
        "at most 253",
    );
}

#[test]
fn a_txt_value_is_text_whatever_it_holds() {
    let stack = Stack::example();
    let text = stack.read(SITE);
    let evil = "x\\\"\\n$INCLUDE /etc/passwd\\n( Grüße \\u0007";
    stack.write(
        SITE,
        &text.replacen(
            "[[records]]",
            &format!("[[records]]\nzone = \"public\"\nname = \"evil\"\ntype = \"TXT\"\nvalue = \"{evil}\"\n\n[[records]]"),
            1,
        ),
    );
    let report = stack.build_json();
    let zone = artifacts(&report)
        .into_iter()
        .find(|a| a.site == "fra1" && a.name == "fra1-zone-example.org")
        .expect("the public zone");
    let body = fs::read_to_string(&zone.path).expect("zone");
    assert!(!body.lines().any(|l| l.starts_with("$INCLUDE")), "{body}");
    let line = body
        .lines()
        .find(|l| l.starts_with("evil"))
        .expect("the TXT record");
    assert!(
        line.ends_with(r#""x\"\010$INCLUDE /etc/passwd\010( Gr\195\188\195\159e \007""#),
        "{line}"
    );
    if common::require("named-checkzone") {
        let out = std::process::Command::new("named-checkzone")
            .args(["example.org"])
            .arg(&zone.path)
            .output()
            .expect("named-checkzone");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn free_text_with_control_characters_is_refused() {
    refused(
        SITE,
        "description = \"",
        "description = \"x\\rinterface Vlan1\\r ip address 1.2.3.4 255.0.0.0\\r",
        "printable text",
    );
    refused(
        SITE,
        "comment = \"",
        "comment = \"\\u001b[31m",
        "printable text",
    );
}

#[test]
fn ssh_addresses_and_keys_are_validated() {
    for address in [
        "127.0.10.*",
        "10.0.0.1\\n10.0.0.2 ssh-ed25519 AAAA",
        "-oProxyCommand=sh",
    ] {
        refused(
            SITE,
            "ssh = { host_key",
            &format!("ssh = {{ address = \"{address}\", host_key"),
            "not an SSH address",
        );
    }
    refused(
        SITE,
        "ssh = { host_key = \"ssh-ed25519",
        "ssh = { host_key = \"ssh-foo",
        "not an OpenSSH public key",
    );
    refused(
        "sites/stack.toml",
        " alice@example.org\"",
        " alice@example.org\\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBKZMlQACrWCXasrgnwDeHKyO3WX811x4RGAHCm0KMwk evil\"",
        "not an OpenSSH public key",
    );
}

#[test]
fn numbers_have_their_ranges() {
    refused(SITE, "port = 80\n", "port = 0\n", "out of range");
    refused(
        "images/dns.toml",
        "timeout = 5",
        "timeout = 0",
        "out of range",
    );
}

#[test]
fn runaway_templates_stop_and_write_nothing() {
    for (name, body) in [
        ("a loop of 10^10 steps", "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"),
        ("10 GB of output", "{% for i in range(100000) %}{{ (\"x\" * 100000) | comment }}{% endfor %}"),
    ] {
        let stack = Stack::example();
        let template = "templates/switch/cisco-ios.j2";
        stack.write(template, &format!("{}{body}\n", stack.read(template)));
        let out = stack.sov(&["build"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(template), "{name}: {err}");
        assert!(!stack.state().exists(), "{name}: a failed build made the state directory");
    }
}

#[test]
fn a_template_cannot_read_another_kinds_folder() {
    let stack = Stack::example();
    stack.write(
        "templates/compose/files/site/index.html.j2",
        "{% include \"dns/zone.j2\" %}\n",
    );
    let out = stack.sov(&["build"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("dns/zone.j2"), "{}", stderr(&out));
}

/// known_hosts read back with `ssh-keygen -F`: each host's address finds
/// exactly its pinned key, and the file has one line per host, nothing more.
#[test]
fn known_hosts_pins_exactly_the_declared_keys() {
    if !common::require("ssh-keygen") {
        return;
    }
    let stack = sov::model::Stack::load(common::repo()).expect("the example loads");
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, site) in &stack.sites {
        let targets: Vec<_> = site
            .value
            .hosts
            .iter()
            .map(sov::deploy::ssh::Target::of)
            .collect();
        let file = dir.path().join(format!("{name}-known_hosts"));
        sov::deploy::ssh::write_known_hosts(&file, &targets).expect("write");
        let text = fs::read_to_string(&file).expect("read");
        assert_eq!(text.lines().count(), targets.len(), "{text}");
        for (host, target) in site.value.hosts.iter().zip(&targets) {
            let pattern = if target.port == 22 {
                target.address.clone()
            } else {
                format!("[{}]:{}", target.address, target.port)
            };
            let out = std::process::Command::new("ssh-keygen")
                .args(["-F", &pattern, "-f"])
                .arg(&file)
                .output()
                .expect("ssh-keygen");
            let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                .collect();
            assert_eq!(found, vec![host.ssh.host_key.bare()], "{}", host.name);
        }
    }
}

#[test]
fn an_internal_domain_leaves_room_for_its_names() {
    let label = "a".repeat(63);
    let domain = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    refused(
        SITE,
        "internal = \"fra1.example.internal\"",
        &format!("internal = \"{domain}\""),
        "expected at most 253",
    );
}

#[test]
fn image_values_that_reach_compose_and_the_agent_are_checked() {
    refused(
        "images/www.toml",
        "environment = { ACME_AGREE = \"true\" }",
        "environment = { \"A=B\\nevil\" = \"true\" }",
        "not an environment variable name",
    );
    refused(
        "images/www.toml",
        "paths = [\"/var/lib/www/caddy\"",
        "paths = [\"/var/lib/www/caddy\\n/etc\"",
        "not a data directory",
    );
    refused(
        "images/www.toml",
        "[data]",
        "[[files]]\npath = \"a\\u0000b\"\ntemplate = \"site/index.html.j2\"\n\n[data]",
        "not a relative path",
    );
}
