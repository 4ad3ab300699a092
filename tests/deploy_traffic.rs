//! A whole site deployed to real hosts and judged by what they do: a
//! firewall host routing between a WAN segment and two VLANs, a DNS host
//! running knotd, a container host. After `sov deploy`, real traffic through
//! the firewall host follows the deployed rules, `dig` gets the zone's
//! records, and the container host ran the image's compose command in the
//! unpacked bundle.
//!
//! The hosts are systemd-nspawn containers with their own network namespace
//! and sshd (tests/common/hosts.rs); the segments behind the firewall host
//! are bridges the test process has no address on. Probes and listeners are
//! tests/traffic.py, run inside a host's network namespace.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::hosts::{Host, HostSpec, Lab};
use common::labstack::{current, dig_until, host_entry, report, LabStack};
use common::{repo, require, stderr, stdout};

const WAN_ADDRESS: &str = "192.0.2.10";
const INTERNET_CLIENT: &str = "192.0.2.100";
const FW_SERVERS: &str = "10.10.20.1";
const FW_OFFICE: &str = "10.10.30.1";
const APP: &str = "10.10.20.10";
const NS: &str = "10.10.30.10";
/// The port forward: WAN port FORWARDED to the app's APP_PORT.
const FORWARDED: u16 = 8443;
const APP_PORT: u16 = 443;
/// A port the app serves that no rule lets another VLAN reach.
const PRIVATE_PORT: u16 = 5432;
/// Where the stand-in for docker-compose on the container host records its runs.
const COMPOSE_CALLS: &str = "var/lib/fake-compose/calls";

/// The container host's image: one pinned container, one bundled file, and
/// the compose commands it is brought up and down with.
const APP_IMAGE: &str = r#"description = "a container host of the test lab"

[compose]
project = "app"
up = ["docker-compose", "--file", "compose.yaml", "--project-name", "app", "up", "--detach", "--remove-orphans"]
down = ["docker-compose", "--file", "compose.yaml", "--project-name", "app", "down"]

[[containers]]
name = "web"
image = "caddy:2.8.4-alpine@sha256:7ad73c2465308b02d4fbef8dc018a105d893519c32af783df015dd6a25cf2975"
ports = ["443:443"]
volumes = ["./site:/srv/www:ro"]

[[files]]
path = "site/index.html"
template = "site/index.html.j2"

[[health]]
name = "alive"
command = ["true"]
"#;

/// Stands in for docker-compose (the container runtime is not under test):
/// records the directory it ran in and its arguments, one call per block.
const FAKE_COMPOSE: &str = r#"#!/bin/sh
mkdir -p /var/lib/fake-compose
{
	printf 'cwd %s\n' "$(pwd)"
	for arg in "$@"; do printf 'arg %s\n' "$arg"; done
	echo end
} >>/var/lib/fake-compose/calls
"#;

/// fw routes between the WAN segment and the VLANs servers and office; ns
/// (office) serves the zones; app (servers) runs containers; inet is a
/// client on the WAN segment, outside the site.
fn start_lab() -> Option<Lab> {
    Lab::start_with(vec![
        HostSpec::new("fw")
            .link("wan0", "wan", &format!("{WAN_ADDRESS}/24"))
            .link("srv0", "servers", &format!("{FW_SERVERS}/24"))
            .link("lan0", "office", &format!("{FW_OFFICE}/24")),
        HostSpec::new("ns")
            .link("lan0", "office", &format!("{NS}/24"))
            .route("default", FW_OFFICE),
        HostSpec::new("app")
            .link("srv0", "servers", &format!("{APP}/24"))
            .route("default", FW_SERVERS),
        HostSpec::new("inet")
            .link("wan0", "wan", &format!("{INTERNET_CLIENT}/24"))
            .route("10.10.0.0/16", WAN_ADDRESS),
    ])
}

/// The site: management VLAN on every host's eth0 (sov reaches the hosts
/// there), servers and office behind fw, the office allowed to reach the
/// servers on APP_PORT only, the app forwarded from the WAN.
fn site(lab: &Lab) -> String {
    let net = lab.gateway.octets();
    let mgmt = format!("{}.{}.{}", net[0], net[1], net[2]);
    let fw = lab.host("fw");
    let mut site = format!(
        r#"name = "lab"
region = "eu-central"
role = "primary"
wan_address = "{WAN_ADDRESS}"

[domains]
public = ["example.org"]
internal = "lab.example.internal"

[[vlans]]
id = 10
name = "mgmt"
subnet = "{mgmt}.0/24"
gateway = "{gateway}"
interface = "eth0"

[[vlans]]
id = 20
name = "servers"
subnet = "10.10.20.0/24"
gateway = "{FW_SERVERS}"
interface = "srv0"

[[vlans]]
id = 30
name = "office"
subnet = "10.10.30.0/24"
gateway = "{FW_OFFICE}"
interface = "lan0"

[switch]
name = "sw1"
dialect = "cisco-ios"
management_vlan = "mgmt"
management_ip = "{mgmt}.250"

[[switch.ports]]
name = "GigabitEthernet1/0/1"
mode = "trunk"
vlans = ["mgmt", "servers", "office"]

[firewall]
dialect = "nftables"
host = "fw"
wan_interface = "wan0"

[[firewall.allow]]
from = "office"
to = "servers"
proto = "tcp"
ports = [{APP_PORT}]
comment = "the office uses the app"

[[firewall.forwards]]
proto = "tcp"
port = {FORWARDED}
host = "app"
host_port = {APP_PORT}
comment = "the app from the Internet"

[dhcp]
server = "fw"

[dns]
servers = ["ns"]
"#,
        gateway = lab.gateway,
    );
    site.push_str(&host_entry(fw, 1, "mgmt", &fw.address.to_string(), "labfw"));
    site.push_str(&host_entry(lab.host("ns"), 2, "office", NS, "plain"));
    site.push_str(&host_entry(lab.host("app"), 3, "servers", APP, "app"));
    site
}

// ---- traffic ----------------------------------------------------------------

fn python_in(host: &Host) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "ip", "netns", "exec", &host.netns, "python3"])
        .arg(repo().join("tests/traffic.py"));
    cmd
}

/// Listeners in a host's network namespace, stopped when dropped.
struct Listeners(Child);

impl Listeners {
    /// Binds `address:port` over TCP for each port, answering `name-port`.
    fn start(host: &Host, address: &str, ports: &[u16]) -> Listeners {
        let specs: Vec<String> = ports
            .iter()
            .map(|p| format!("{address},{p},tcp,{}-{p}", host.name))
            .collect();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &host.netns, "python3"])
            .arg(repo().join("tests/traffic.py"))
            .arg("listen")
            .args(&specs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the listeners");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("listener stdout"))
            .read_line(&mut ready)
            .expect("read from the listeners");
        if ready.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err).ok();
            }
            panic!("the listeners on {} did not start: {err}", host.name);
        }
        Listeners(child)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One TCP connection from `from` (its address `src`) to `dst:port`: what
/// the listener answered, or `None` when nothing did within 2 s.
struct Flow<'a> {
    what: &'static str,
    from: &'a Host,
    src: &'a str,
    dst: &'a str,
    port: u16,
}

fn send(flow: &Flow) -> Result<String, String> {
    let out = python_in(flow.from)
        .arg("send")
        .arg(format!("tcp,{},{},{}", flow.src, flow.dst, flow.port))
        .stdin(Stdio::null())
        .output()
        .expect("run traffic.py send");
    assert!(
        out.status.success(),
        "traffic.py send on {}: {}",
        flow.from.name,
        stderr(&out)
    );
    let line = stdout(&out).trim().to_string();
    match line.strip_prefix("answer ") {
        Some(answer) => Ok(answer.to_string()),
        None => Err(line),
    }
}

fn assert_answered(flow: &Flow, expected: &str, context: &str) {
    match send(flow) {
        Ok(got) if got == expected => {}
        got => panic!(
            "{} ({} -> {}:{}): expected the answer {expected:?}, got {got:?}\n{context}",
            flow.what, flow.src, flow.dst, flow.port
        ),
    }
}

fn assert_no_answer(flow: &Flow, context: &str) {
    if let Ok(got) = send(flow) {
        panic!(
            "{} ({} -> {}:{}) must get no answer, but {got:?} answered\n{context}",
            flow.what, flow.src, flow.dst, flow.port
        );
    }
}

// ---- the container host -----------------------------------------------------

/// The object name of the artifact of `kind` in the host manifest a host's
/// `current` points at, read from the host's own filesystem.
fn current_object(host: &Host, kind: &str) -> String {
    let manifest = fs::read(host.root.join("var/lib/sov/current"))
        .unwrap_or_else(|e| panic!("{}: read its current manifest: {e}", host.name));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest JSON");
    manifest["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["kind"] == kind)
        .and_then(|a| a["object"].as_str())
        .unwrap_or_else(|| panic!("{}: no {kind} artifact in {manifest}", host.name))
        .to_string()
}

/// Every file of a compose bundle (a zstd-compressed tar) by path.
fn bundle_files(bundle: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let tar = zstd::decode_all(fs::File::open(bundle).expect("open the bundle")).expect("zstd");
    let mut archive = tar::Archive::new(&tar[..]);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        if entry.header().entry_type().is_file() {
            let path = entry.path().expect("entry path").into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read entry");
            files.insert(path, bytes);
        }
    }
    files
}

/// Every file under `dir` by path relative to it.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).expect("under dir").to_path_buf();
            (rel, fs::read(e.path()).expect("read"))
        })
        .collect()
}

/// The runs of the fake docker-compose: (working directory, arguments).
fn compose_calls(app: &Host) -> Vec<(String, Vec<String>)> {
    let text = fs::read_to_string(app.root.join(COMPOSE_CALLS)).unwrap_or_default();
    let mut calls = Vec::new();
    let (mut cwd, mut args) = (String::new(), Vec::new());
    for line in text.lines() {
        if let Some(dir) = line.strip_prefix("cwd ") {
            cwd = dir.to_string();
        } else if let Some(arg) = line.strip_prefix("arg ") {
            args.push(arg.to_string());
        } else if line == "end" {
            calls.push((std::mem::take(&mut cwd), std::mem::take(&mut args)));
        }
    }
    calls
}

#[test]
fn deployed_site_routes_filters_serves_dns_and_runs_compose() {
    for tool in ["dig", "python3", "zstd"] {
        if !require(tool) {
            return;
        }
    }
    let Some(lab) = start_lab() else { return };
    let started = Instant::now();
    let (fw, ns, app, inet) = (
        lab.host("fw"),
        lab.host("ns"),
        lab.host("app"),
        lab.host("inet"),
    );
    let stack = LabStack::new(&lab);
    fs::write(stack.root().join("images/app.toml"), APP_IMAGE).unwrap();
    stack.write_site_text(&site(&lab));
    stack.build();

    let fake = app.root.join("usr/local/bin/docker-compose");
    fs::write(&fake, FAKE_COMPOSE).unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let _listeners = Listeners::start(app, APP, &[APP_PORT, PRIVATE_PORT]);
    let answer = |port: u16| format!("app-{port}");

    let forward = Flow {
        what: "the port forward from the WAN",
        from: inet,
        src: INTERNET_CLIENT,
        dst: WAN_ADDRESS,
        port: FORWARDED,
    };
    // Control: before the deploy nothing on the WAN address leads to the app.
    assert_no_answer(&forward, "before the deploy, with no ruleset loaded");

    let out = stack.deploy(&[]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    let deploy_log = stderr(&out);
    for h in report(&out)["hosts"].as_array().unwrap() {
        assert_eq!(h["outcome"], "switched", "{h}");
    }
    for host in [fw, ns, app] {
        assert_eq!(current(host), Some(1), "{}", host.name);
    }
    assert!(
        !inet.root.join("var/lib/sov").exists(),
        "a host outside the site was deployed to"
    );

    // The firewall host forwards and filters as the site says.
    let context = format!(
        "on fw: ip_forward {}\nruleset on fw:\n{}\nsov deploy said:\n{deploy_log}",
        lab.ssh_ok(fw, &["cat", "/proc/sys/net/ipv4/ip_forward"])
            .trim(),
        lab.ssh_ok(fw, &["nft", "list", "ruleset"])
    );
    assert_answered(&forward, &answer(APP_PORT), &context);
    let office_to_app = Flow {
        what: "office to the app on the allowed port",
        from: ns,
        src: NS,
        dst: APP,
        port: APP_PORT,
    };
    assert_answered(&office_to_app, &answer(APP_PORT), &context);
    let office_to_private = Flow {
        what: "office to the app on a port no rule allows",
        from: ns,
        src: NS,
        dst: APP,
        port: PRIVATE_PORT,
    };
    assert_no_answer(&office_to_private, &context);
    // Control: the private port answers on its own segment (here from the
    // firewall host itself), so the drop above is the forward rule's doing.
    let private_on_segment = Flow {
        what: "the private port from the servers segment",
        from: fw,
        src: FW_SERVERS,
        dst: APP,
        port: PRIVATE_PORT,
    };
    assert_answered(&private_on_segment, &answer(PRIVATE_PORT), &context);
    let wan_to_app = Flow {
        what: "the WAN straight to the app's internal address",
        from: inet,
        src: INTERNET_CLIENT,
        dst: APP,
        port: APP_PORT,
    };
    assert_no_answer(&wan_to_app, &context);

    // The DNS host serves the internal zone and its reverse zone.
    dig_until(
        &lab,
        ns,
        &["app.lab.example.internal", "A"],
        APP,
        "the deployed zone",
    );
    dig_until(
        &lab,
        ns,
        &["-x", APP],
        "app.lab.example.internal.",
        "the deployed reverse zone",
    );

    // The container host unpacked this generation's bundle into a folder of
    // its own and ran the image's `up` command there, once.
    let bundle = current_object(app, "compose");
    let unpacked = Path::new("/var/lib/sov/compose").join(
        bundle
            .strip_suffix(".tar.zst")
            .expect("a bundle is a .tar.zst"),
    );
    let host_dir = app.root.join(unpacked.strip_prefix("/").expect("absolute"));
    let shipped = bundle_files(&stack.root().join(".sov/store").join(&bundle));
    assert!(
        shipped.contains_key(Path::new("compose.yaml"))
            && shipped.contains_key(Path::new("site/index.html")),
        "bundle holds {:?}",
        shipped.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        files_under(&host_dir),
        shipped,
        "{} holds the bundle's files, byte for byte",
        unpacked.display()
    );
    let up: Vec<String> = [
        "--file",
        "compose.yaml",
        "--project-name",
        "app",
        "up",
        "--detach",
        "--remove-orphans",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        compose_calls(app),
        vec![(unpacked.display().to_string(), up)],
        "docker-compose runs on app"
    );
    eprintln!("deploy traffic test: {:.2?}", started.elapsed());
}
