//! A stack whose site `lab` is made of a lab's hosts (tests/common/hosts.rs),
//! for the end-to-end deploy tests: write the site, build, run `sov deploy`,
//! and read back which generation each host runs.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::hosts::{Host, Lab};
use super::{copy_tree, repo, stderr, stdout};

/// A stack whose site `lab` is made of the lab's hosts: `fw` runs the
/// firewall, `ns` the zones, the rest are plain hosts.
pub struct LabStack {
    pub dir: tempfile::TempDir,
    /// The private key the lab's hosts accept, given to sov as `--identity`.
    pub identity: PathBuf,
}

pub const PLAIN_IMAGE: &str = r#"description = "a plain host of the test lab"
[[health]]
name = "alive"
command = ["true"]
"#;

pub const FIREWALL_IMAGE: &str = r#"description = "the lab's firewall"
[[health]]
name = "ruleset"
command = ["nft", "list", "table", "inet", "filter"]
"#;

impl LabStack {
    pub fn new(lab: &Lab) -> LabStack {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["templates", "images"] {
            copy_tree(&repo().join(sub), &dir.path().join(sub));
        }
        fs::create_dir_all(dir.path().join("sites")).unwrap();
        fs::copy(
            repo().join("sites/stack.toml"),
            dir.path().join("sites/stack.toml"),
        )
        .unwrap();
        fs::write(dir.path().join("images/plain.toml"), PLAIN_IMAGE).unwrap();
        fs::write(dir.path().join("images/labfw.toml"), FIREWALL_IMAGE).unwrap();
        let stack = LabStack {
            dir,
            identity: lab.client_key.clone(),
        };
        stack.write_site(lab, "eth0", &[]);
        stack
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The lab site: one VLAN (the lab's management network, on the
    /// firewall's `mgmt_interface`), hosts with their pinned keys, and
    /// `extra` TOML appended.
    pub fn write_site(&self, lab: &Lab, mgmt_interface: &str, extra: &[&str]) {
        let net = lab.gateway.octets();
        let subnet = format!("{}.{}.{}.0/24", net[0], net[1], net[2]);
        let switch_ip = format!("{}.{}.{}.250", net[0], net[1], net[2]);
        let mut site = format!(
            r#"name = "lab"
region = "eu-central"
role = "primary"
wan_address = "192.0.2.10"

[domains]
public = ["example.org"]
internal = "lab.example.internal"

[[vlans]]
id = 10
name = "mgmt"
subnet = "{subnet}"
gateway = "{gw}"
interface = "{mgmt_interface}"

[switch]
name = "sw1"
dialect = "cisco-ios"
management_vlan = "mgmt"
management_ip = "{switch_ip}"

[[switch.ports]]
name = "GigabitEthernet1/0/1"
mode = "access"
vlan = "mgmt"

[firewall]
dialect = "nftables"
host = "{fw}"
wan_interface = "wan0"

[dhcp]
server = "{fw}"

[dns]
servers = ["{fw}"]
"#,
            gw = lab.gateway,
            fw = lab.hosts[0].name,
        );
        for (i, host) in lab.hosts.iter().enumerate() {
            let image = if i == 0 { "labfw" } else { "plain" };
            site.push_str(&format!(
                "\n[[hosts]]\nname = \"{}\"\nvlan = \"mgmt\"\nmac = \"02:00:00:00:00:{:02x}\"\nip = \"{}\"\nimage = \"{image}\"\nssh = {{ host_key = \"{}\" }}\n",
                host.name,
                i + 1,
                host.address,
                host.host_key_pub.trim()
            ));
        }
        for e in extra {
            site.push_str(e);
        }
        fs::write(self.dir.path().join("sites/lab.toml"), site).unwrap();
    }

    /// Replaces the site file by `text`: for a test that lays out the
    /// site itself (VLANs behind a firewall host, say).
    pub fn write_site_text(&self, text: &str) {
        fs::write(self.dir.path().join("sites/lab.toml"), text).unwrap();
    }

    /// `sov --root <stack> ARGS`, not yet run: for a deploy the test
    /// starts, watches or kills.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sov"));
        cmd.arg("--root").arg(self.root()).args(args);
        cmd
    }

    pub fn sov(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn build(&self) {
        let out = self.sov(&["build"]);
        assert!(out.status.success(), "build: {}", stderr(&out));
    }

    /// The arguments of `sov deploy lab` with the lab's key and a JSON
    /// report, then `extra`.
    pub fn deploy_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let identity = self
            .identity
            .to_str()
            .expect("the lab's key has a UTF-8 path");
        let mut args = vec!["deploy", "lab", "--identity", identity, "--json"];
        args.extend_from_slice(extra);
        args
    }

    /// `sov secret set SITE NAME` with `value` on its stdin.
    pub fn secret_set(&self, site: &str, name: &str, value: &str) -> Output {
        let mut child = self
            .command(&["secret", "set", site, name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(value.as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    pub fn deploy(&self, extra: &[&str]) -> Output {
        self.sov(&self.deploy_args(extra))
    }
}

/// A `[[hosts]]` entry for a lab host on `vlan` at `ip` (an address on one
/// of its private links), reached over its management address with its
/// pinned key; `index` makes its MAC unique.
pub fn host_entry(host: &Host, index: u8, vlan: &str, ip: &str, image: &str) -> String {
    format!(
        "\n[[hosts]]\nname = \"{}\"\nvlan = \"{vlan}\"\nmac = \"02:00:00:00:01:{index:02x}\"\nip = \"{ip}\"\nimage = \"{image}\"\nssh = {{ address = \"{}\", host_key = \"{}\" }}\n",
        host.name,
        host.address,
        host.host_key_pub.trim()
    )
}

/// The generation a host's `current` points at, read from its filesystem.
pub fn current(host: &Host) -> Option<u64> {
    let link = fs::read_link(host.root.join("var/lib/sov/current")).ok()?;
    link.to_str()?.strip_prefix("generations/")?.parse().ok()
}

/// The `--json` report of a deploy.
pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON report; stderr:\n{}", stderr(out)))
}

/// Waits (up to 30 s) for the collection of old generations that a deploy
/// leaves running in the background on `host` to end.
pub fn wait_for_collection(host: &Host) {
    let owner = host.root.join("var/lib/sov/lock.owner");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs::read_to_string(&owner).is_ok_and(|o| o.starts_with("sov gc "))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `dig +short QUERY` against the knotd a lab stack deploys to `server`
/// (port 5353).
pub fn dig(server: &Host, query: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.address))
        .args(["-p", "5353", "+short", "+time=1", "+tries=1"])
        .args(query)
        .output()
        .expect("run dig");
    stdout(&out).trim().to_string()
}

/// Waits up to 10 s (knotd loads zones after its reload returns) for
/// `server` to answer `want` to `query`; fails saying `when`, with knot's
/// journal and status.
pub fn dig_until(lab: &Lab, server: &Host, query: &[&str], want: &str, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = dig(server, query);
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            let journal = lab.ssh(
                server,
                &["journalctl", "-u", "knot", "--no-pager", "-n", "40"],
            );
            let status = lab.ssh(server, &["systemctl", "status", "knot", "--no-pager"]);
            panic!(
                "{when}: dig {query:?} @{}: {got:?}, expected {want:?}\nknot's journal:\n{}\n{}",
                server.name,
                stdout(&journal),
                stdout(&status)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
