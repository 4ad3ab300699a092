//! The example primary site's nftables ruleset judged by real traffic: it is
//! loaded in a "firewall" network namespace wired with veth pairs to a WAN
//! namespace and to one namespace per VLAN, whose hosts hold the reserved
//! addresses of the site file. Port forwards must reach their hosts, allowed
//! inter-VLAN flows must connect, and everything else must not.
//!
//! Everything is derived from the site file, so the tests follow the example.
//! Traffic only ever goes to addresses inside the test's own namespaces.

mod common;

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::Deserialize;

use common::{artifacts, require, require_root, Stack};

// ---- the site, read with `toml` independently of sov's own model ----------

#[derive(Debug, Deserialize)]
struct Site {
    name: String,
    role: String,
    wan_address: Ipv4Addr,
    vlans: Vec<Vlan>,
    firewall: Firewall,
    dns: Dns,
    hosts: Vec<Host>,
}

#[derive(Debug, Deserialize)]
struct Vlan {
    name: String,
    subnet: String,
    gateway: Ipv4Addr,
    interface: String,
    dhcp_pool: Option<Pool>,
}

#[derive(Debug, Deserialize)]
struct Pool {
    start: Ipv4Addr,
}

#[derive(Debug, Deserialize)]
struct Firewall {
    host: String,
    wan_interface: String,
    #[serde(default)]
    allow: Vec<Allow>,
    #[serde(default)]
    forwards: Vec<Forward>,
}

#[derive(Debug, Deserialize)]
struct Allow {
    from: String,
    to: String,
    proto: Proto,
    #[serde(default)]
    ports: Vec<u16>,
}

#[derive(Debug, Deserialize)]
struct Forward {
    proto: Proto,
    port: u16,
    host: String,
    host_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct Dns {
    servers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Host {
    name: String,
    vlan: String,
    ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        })
    }
}

impl Site {
    /// The first primary site of the stack, by file name.
    fn primary(stack: &Stack) -> Site {
        let mut files: Vec<PathBuf> = fs::read_dir(stack.path("sites"))
            .expect("read sites/")
            .map(|e| e.expect("read sites/").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .filter(|p| p.file_stem().is_some_and(|s| s != "stack"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| {
                let text = fs::read_to_string(p).expect("read site file");
                toml::from_str::<Site>(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            })
            .find(|s| s.role == "primary")
            .expect("the example stack has a primary site")
    }

    fn vlan(&self, name: &str) -> &Vlan {
        self.vlans
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("site {} has no VLAN {name}", self.name))
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("site {} has no host {name}", self.name))
    }

    /// Whether an `[[firewall.allow]]` rule lets this flow between VLANs.
    fn allows(&self, from: &str, to: &str, proto: Proto, port: u16) -> bool {
        self.firewall
            .allow
            .iter()
            .any(|a| a.from == from && a.to == to && a.proto == proto && a.ports.contains(&port))
    }

    /// TCP or UDP ports the site names anywhere (allow rules, forwards'
    /// public and host ports), and SSH: the ports a leaky ruleset would
    /// most likely let through where it should not.
    fn ports_of_interest(&self, proto: Proto) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = self
            .firewall
            .allow
            .iter()
            .filter(|a| a.proto == proto)
            .flat_map(|a| a.ports.iter().copied())
            .collect();
        for f in self.firewall.forwards.iter().filter(|f| f.proto == proto) {
            ports.insert(f.port);
            ports.insert(f.host_port.unwrap_or(f.port));
        }
        if proto == Proto::Tcp {
            ports.insert(22);
        }
        ports
    }
}

impl Vlan {
    fn subnet(&self) -> Ipv4Net {
        self.subnet.parse().expect("a VLAN subnet in CIDR form")
    }
}

// ---- the lab: namespaces, links, addresses, listeners ----------------------

/// One machine of the lab: a network namespace and an address in it.
#[derive(Debug, Clone)]
struct Endpoint {
    /// What the site calls it: a host name, `<vlan>-client` or `wan-client`.
    name: String,
    ns: String,
    ip: Ipv4Addr,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.ip)
    }
}

/// A flow the tests send: from an endpoint to an address, port and protocol.
#[derive(Debug, Clone)]
struct Flow {
    from: Endpoint,
    to: Ipv4Addr,
    port: u16,
    proto: Proto,
    /// What a listener at the destination answers, when the flow arrives.
    answer: String,
    what: String,
}

/// What a listener on `ip:port/proto` answers: proves which one was reached.
fn answer(ip: Ipv4Addr, port: u16, proto: Proto) -> String {
    format!("sov-probe-{ip}-{port}-{proto}")
}

/// The listeners and probes, a Python script run inside the namespaces.
fn traffic_py() -> PathBuf {
    common::repo().join("tests/traffic.py")
}

/// The interpreter behind `python3`, found once: a version manager's shim
/// would add a fraction of a second to each of the many probes.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("run python3");
        assert!(out.status.success(), "python3 does not run");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The namespaces, links and listeners of one test, torn down on drop, even
/// when the test fails half-way through building it.
struct Lab {
    site: Site,
    ruleset: PathBuf,
    /// `sov<pid><test>`: unique per test and run, a prefix of every namespace.
    prefix: String,
    namespaces: Vec<String>,
    listeners: Vec<Child>,
    listening: BTreeSet<(String, Ipv4Addr, u16, Proto)>,
    wan_client: Endpoint,
    /// The stack copy holding the ruleset; removed after the namespaces.
    _stack: Stack,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.listeners {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let out = Command::new("ip").args(["netns", "del", ns]).output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("warning: could not delete network namespace {ns}");
            }
        }
    }
}

/// Runs a command that sets up the lab; any failure stops the test.
fn must(cmd: &mut Command) {
    let out = cmd.output().expect("run a lab command");
    assert!(
        out.status.success(),
        "lab setup failed: {:?}\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -n NS ARGS`, which must succeed.
fn ip_in(ns: &str, args: &[&str]) {
    must(Command::new("ip").args(["-n", ns]).args(args));
}

fn in_ns(ns: &str, argv: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(argv);
    cmd
}

impl Lab {
    /// Builds the example stack and wires the primary site's network, without
    /// its ruleset yet. None when the machine cannot run it (not in CI).
    fn new(test: &str) -> Option<Lab> {
        let tools = ["nft", "ip", "timeout", "python3"];
        if !(require_root() && tools.into_iter().all(require)) {
            return None;
        }
        let stack = Stack::example();
        let report = stack.build_json();
        let site = Site::primary(&stack);
        let ruleset = artifacts(&report)
            .into_iter()
            .find(|a| a.kind == "firewall" && a.site == site.name)
            .unwrap_or_else(|| panic!("site {} builds no firewall artifact", site.name))
            .path;
        let prefix = format!("sov{}{test}", std::process::id());
        let wan_client = Endpoint {
            name: "wan-client".to_string(),
            ns: format!("{prefix}-wan"),
            ip: neighbour(site.wan_address),
        };
        let mut lab = Lab {
            site,
            ruleset,
            prefix,
            namespaces: Vec::new(),
            listeners: Vec::new(),
            listening: BTreeSet::new(),
            wan_client,
            _stack: stack,
        };
        lab.wire();
        Some(lab)
    }

    fn firewall_ns(&self) -> String {
        format!("{}-fw", self.prefix)
    }

    fn vlan_ns(&self, vlan: &Vlan) -> String {
        format!("{}-{}", self.prefix, vlan.name)
    }

    fn add_namespace(&mut self, ns: &str) {
        // Recorded first, so that Drop removes it even if the next step fails.
        self.namespaces.push(ns.to_string());
        must(Command::new("ip").args(["netns", "add", ns]));
        ip_in(ns, &["link", "set", "lo", "up"]);
    }

    /// A veth pair: `name` in the firewall namespace, `eth0` in `peer_ns`.
    fn link(&self, name: &str, peer_ns: &str) {
        let fw = self.firewall_ns();
        let pair = [
            "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", peer_ns,
        ];
        ip_in(&fw, &pair);
        ip_in(&fw, &["link", "set", name, "up"]);
        ip_in(peer_ns, &["link", "set", "eth0", "up"]);
    }

    fn wire(&mut self) {
        let fw = self.firewall_ns();
        let wan = self.wan_client.ns.clone();
        let vlan_namespaces: Vec<String> =
            self.site.vlans.iter().map(|v| self.vlan_ns(v)).collect();
        for ns in [&fw, &wan].into_iter().chain(&vlan_namespaces) {
            self.add_namespace(ns);
        }

        // The WAN: the firewall holds the site's public address; a client
        // next to it reaches it on the link and everything else through it.
        let wan_if = &self.site.firewall.wan_interface;
        let public = self.site.wan_address.to_string();
        let (public_32, client_32) = (format!("{public}/32"), format!("{}/32", self.wan_client.ip));
        self.link(wan_if, &wan);
        ip_in(&fw, &["addr", "add", &public_32, "dev", wan_if]);
        ip_in(&fw, &["route", "add", &client_32, "dev", wan_if]);
        ip_in(&wan, &["addr", "add", &client_32, "dev", "eth0"]);
        ip_in(&wan, &["route", "add", &public_32, "dev", "eth0"]);
        ip_in(&wan, &["route", "add", "default", "via", &public]);

        // Each VLAN: its interface on the firewall (named as in the site,
        // `eth1.20`: interface-name rules see exactly that name) holds the
        // gateway; its hosts hold their reserved addresses.
        for vlan in &self.site.vlans {
            let ns = self.vlan_ns(vlan);
            let prefix_len = vlan.subnet().prefix_len();
            self.link(&vlan.interface, &ns);
            let gateway = format!("{}/{prefix_len}", vlan.gateway);
            ip_in(&fw, &["addr", "add", &gateway, "dev", &vlan.interface]);
            for host in self.endpoints(&vlan.name) {
                let address = format!("{}/{prefix_len}", host.ip);
                ip_in(&ns, &["addr", "add", &address, "dev", "eth0"]);
            }
            ip_in(
                &ns,
                &["route", "add", "default", "via", &vlan.gateway.to_string()],
            );
        }
        must(&mut in_ns(&fw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    }

    /// `nft -f` the site's firewall artifact in the firewall namespace.
    fn load_ruleset(&self) {
        let out = in_ns(&self.firewall_ns(), &["nft", "-f"])
            .arg(&self.ruleset)
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft -f {} failed in the firewall namespace:\n{}",
            self.ruleset.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The machines of a VLAN: every host with a reserved address (except the
    /// firewall, whose place is the firewall namespace), or, for a VLAN of
    /// DHCP clients only, one at the start of its pool.
    fn endpoints(&self, vlan_name: &str) -> Vec<Endpoint> {
        let vlan = self.site.vlan(vlan_name);
        let ns = self.vlan_ns(vlan);
        let hosts: Vec<Endpoint> = self
            .site
            .hosts
            .iter()
            .filter(|h| h.vlan == vlan.name && h.name != self.site.firewall.host)
            .filter_map(|h| {
                Some(Endpoint {
                    name: h.name.clone(),
                    ns: ns.clone(),
                    ip: h.ip?,
                })
            })
            .collect();
        if !hosts.is_empty() {
            return hosts;
        }
        let ip = match &vlan.dhcp_pool {
            Some(pool) => pool.start,
            None => vlan
                .subnet()
                .hosts()
                .find(|ip| *ip != vlan.gateway)
                .expect("a subnet with room for a host"),
        };
        vec![Endpoint {
            name: format!("{vlan_name}-client"),
            ns,
            ip,
        }]
    }

    fn endpoint_of_host(&self, name: &str) -> Endpoint {
        let host = self.site.host(name);
        Endpoint {
            name: host.name.clone(),
            ns: self.vlan_ns(self.site.vlan(&host.vlan)),
            ip: host
                .ip
                .unwrap_or_else(|| panic!("host {name} has no reserved address")),
        }
    }

    /// Asks for a listener on `ip:port/proto` in `ns` that answers with
    /// `answer(ip, port, proto)`; `start_listeners` starts them.
    fn listen(&mut self, ns: &str, ip: Ipv4Addr, port: u16, proto: Proto) {
        if proto != Proto::Icmp {
            self.listening.insert((ns.to_string(), ip, port, proto));
        }
    }

    /// Starts one listener process per namespace and waits until it has
    /// bound every socket, so that no probe races a listener.
    fn start_listeners(&mut self) {
        let namespaces: BTreeSet<String> = self.listening.iter().map(|l| l.0.clone()).collect();
        for ns in namespaces {
            let specs: Vec<String> = self
                .listening
                .iter()
                .filter(|l| l.0 == ns)
                .map(|&(_, ip, port, proto)| {
                    format!("{ip},{port},{proto},{}", answer(ip, port, proto))
                })
                .collect();
            let mut child = in_ns(&ns, &[python()])
                .arg(traffic_py())
                .arg("listen")
                .args(&specs)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the listeners");
            let mut ready = String::new();
            let stdout = child.stdout.take().expect("listener stdout");
            BufReader::new(stdout)
                .read_line(&mut ready)
                .expect("read from the listeners");
            if ready.trim() != "ready" {
                let out = child.wait_with_output().expect("wait for the listeners");
                panic!(
                    "the listeners in {ns} did not start ({specs:?}): {}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            self.listeners.push(child);
        }
    }
}

/// A WAN address next to the site's public one, for the Internet client.
fn neighbour(address: Ipv4Addr) -> Ipv4Addr {
    let n = u32::from(address);
    Ipv4Addr::from(if n & 0xff < 0xfe { n + 1 } else { n - 1 })
}

// ---- sending traffic ------------------------------------------------------

/// What became of a flow.
#[derive(Debug, Clone)]
enum Outcome {
    /// What the listener that got it answered.
    Answer(String),
    /// Why nothing answered (refused, timed out...).
    Nothing(String),
}

impl Outcome {
    fn is(&self, expected: &str) -> bool {
        matches!(self, Outcome::Answer(a) if a == expected)
    }

    /// Whether any listener of the lab answered.
    fn reached_a_listener(&self) -> bool {
        matches!(self, Outcome::Answer(a) if a.contains("sov-probe-"))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Answer(a) => write!(f, "answered {a:?}"),
            Outcome::Nothing(why) => write!(f, "no answer ({why})"),
        }
    }
}

/// Sends every flow at once: one `traffic.py send` per source namespace, all
/// in parallel; each probe gives up after 2 s, each process after 10 s.
fn send(flows: &[&Flow]) -> Vec<Outcome> {
    let namespaces: BTreeSet<&str> = flows.iter().map(|f| f.from.ns.as_str()).collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; flows.len()];
    thread::scope(|scope| {
        let running: Vec<_> = namespaces
            .into_iter()
            .map(|ns| {
                let mine: Vec<usize> = (0..flows.len())
                    .filter(|&i| flows[i].from.ns == ns)
                    .collect();
                let specs: Vec<String> = mine
                    .iter()
                    .map(|&i| {
                        let f = flows[i];
                        format!("{},{},{},{}", f.proto, f.from.ip, f.to, f.port)
                    })
                    .collect();
                scope.spawn(move || {
                    let out = Command::new("timeout")
                        .args(["10", "ip", "netns", "exec", ns, python()])
                        .arg(traffic_py())
                        .arg("send")
                        .args(&specs)
                        .stdin(Stdio::null())
                        .output()
                        .expect("run traffic.py send");
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let lines: Vec<&str> = text.lines().collect();
                    let parsed: Vec<Outcome> = if out.status.success() && lines.len() == mine.len()
                    {
                        lines
                            .iter()
                            .map(|l| match l.split_once(' ') {
                                Some(("answer", a)) => Outcome::Answer(a.to_string()),
                                _ => Outcome::Nothing(l.trim_start_matches("nothing ").to_string()),
                            })
                            .collect()
                    } else {
                        let why = format!(
                            "traffic.py send in {ns} failed, {}: {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim_end()
                        );
                        vec![Outcome::Nothing(why); mine.len()]
                    };
                    mine.into_iter().zip(parsed).collect::<Vec<_>>()
                })
            })
            .collect();
        for t in running {
            for (i, outcome) in t.join().expect("sender thread") {
                outcomes[i] = Some(outcome);
            }
        }
    });
    outcomes
        .into_iter()
        .map(|o| o.expect("every flow was sent"))
        .collect()
}

/// Asserts that every flow gets its own listener's answer, sending those
/// that did not again, a bounded number of times.
fn assert_answered(flows: &[Flow], context: &str) {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; flows.len()];
    let mut pending: Vec<usize> = (0..flows.len()).collect();
    for round in 0..3 {
        if round > 0 {
            thread::sleep(Duration::from_millis(200));
        }
        let batch: Vec<&Flow> = pending.iter().map(|&i| &flows[i]).collect();
        for (&i, outcome) in pending.iter().zip(send(&batch)) {
            outcomes[i] = Some(outcome);
        }
        pending.retain(|&i| !outcomes[i].as_ref().is_some_and(|o| o.is(&flows[i].answer)));
        if pending.is_empty() {
            return;
        }
    }
    let failed: Vec<String> = pending
        .iter()
        .map(|&i| {
            let flow = &flows[i];
            let outcome = outcomes[i].as_ref().expect("sent");
            format!("  {}: {outcome}, expected {:?}", flow.what, flow.answer)
        })
        .collect();
    panic!(
        "{} of {} flows {context}:\n{}",
        failed.len(),
        flows.len(),
        failed.join("\n")
    );
}

/// Asserts that no flow reaches any listener (one try each: a drop only
/// costs time to retry).
fn assert_dropped(flows: &[Flow], context: &str) {
    let batch: Vec<&Flow> = flows.iter().collect();
    let leaked: Vec<String> = flows
        .iter()
        .zip(send(&batch))
        .filter(|(_, outcome)| outcome.reached_a_listener())
        .map(|(flow, outcome)| format!("  {}: {outcome}", flow.what))
        .collect();
    assert!(
        leaked.is_empty(),
        "{} of {} flows {context}:\n{}",
        leaked.len(),
        flows.len(),
        leaked.join("\n")
    );
}

// ---- the tests -------------------------------------------------------------

#[test]
fn wan_port_forwards_reach_their_hosts() {
    let Some(mut lab) = Lab::new("fwd") else {
        return;
    };
    assert!(
        !lab.site.firewall.forwards.is_empty(),
        "the primary site forwards no port: nothing to test"
    );
    let mut flows = Vec::new();
    let forwards: Vec<(Proto, u16, u16, Endpoint)> = lab
        .site
        .firewall
        .forwards
        .iter()
        .map(|f| {
            let host_port = f.host_port.unwrap_or(f.port);
            (f.proto, f.port, host_port, lab.endpoint_of_host(&f.host))
        })
        .collect();
    for (proto, port, host_port, target) in forwards {
        lab.listen(&target.ns, target.ip, host_port, proto);
        flows.push(Flow {
            from: lab.wan_client.clone(),
            to: lab.site.wan_address,
            port,
            proto,
            answer: answer(target.ip, host_port, proto),
            what: format!(
                "WAN {} -> {}:{port}/{proto} forwarded to {target}:{host_port}",
                lab.wan_client, lab.site.wan_address
            ),
        });
    }
    lab.start_listeners();
    lab.load_ruleset();
    assert_answered(
        &flows,
        "forwarded from the WAN address did not reach their host",
    );
}

#[test]
fn inter_vlan_flows_an_allow_rule_permits_connect() {
    let Some(mut lab) = Lab::new("allow") else {
        return;
    };
    let mut flows = Vec::new();
    let rules: Vec<(String, String, Proto, Vec<u16>)> = lab
        .site
        .firewall
        .allow
        .iter()
        .map(|a| (a.from.clone(), a.to.clone(), a.proto, a.ports.clone()))
        .collect();
    for (from_vlan, to_vlan, proto, ports) in rules {
        if from_vlan == to_vlan {
            continue; // stays on its VLAN: never crosses the firewall
        }
        let from = lab.endpoints(&from_vlan).remove(0);
        let ports = if proto == Proto::Icmp { vec![0] } else { ports };
        for to in lab.endpoints(&to_vlan) {
            for &port in &ports {
                lab.listen(&to.ns, to.ip, port, proto);
                let (answer, what) = match proto {
                    Proto::Icmp => (
                        answer(to.ip, 0, proto),
                        format!("{from_vlan} {from} -> {to_vlan} {to} icmp echo"),
                    ),
                    _ => (
                        answer(to.ip, port, proto),
                        format!("{from_vlan} {from} -> {to_vlan} {to}:{port}/{proto}"),
                    ),
                };
                flows.push(Flow {
                    from: from.clone(),
                    to: to.ip,
                    port,
                    proto,
                    answer,
                    what,
                });
            }
        }
    }
    assert!(
        !flows.is_empty(),
        "the primary site allows no inter-VLAN flow: nothing to test"
    );
    lab.start_listeners();
    lab.load_ruleset();
    assert_answered(&flows, "that an allow rule permits did not connect");
}

#[test]
fn inter_vlan_flows_no_rule_allows_are_dropped() {
    let Some(mut lab) = Lab::new("deny") else {
        return;
    };
    let vlans: Vec<String> = lab.site.vlans.iter().map(|v| v.name.clone()).collect();
    // The design lets every VLAN use the site's DNS servers (the firewall
    // template adds that rule), so port 53 to them is no counterexample.
    let dns_ports = [53];
    let mut flows = Vec::new();
    for from_vlan in &vlans {
        let from = lab.endpoints(from_vlan).remove(0);
        for to_vlan in vlans.iter().filter(|v| *v != from_vlan) {
            for to in lab.endpoints(to_vlan) {
                for proto in [Proto::Tcp, Proto::Udp] {
                    for port in lab.site.ports_of_interest(proto) {
                        let dns_server = lab.site.dns.servers.contains(&to.name);
                        if lab.site.allows(from_vlan, to_vlan, proto, port)
                            || (dns_server && dns_ports.contains(&port))
                        {
                            continue;
                        }
                        lab.listen(&to.ns, to.ip, port, proto);
                        flows.push(Flow {
                            from: from.clone(),
                            to: to.ip,
                            port,
                            proto,
                            answer: answer(to.ip, port, proto),
                            what: format!("{from_vlan} {from} -> {to_vlan} {to}:{port}/{proto}"),
                        });
                    }
                }
            }
        }
    }
    assert!(
        !flows.is_empty(),
        "the primary site has a single VLAN: nothing to test"
    );
    lab.start_listeners();
    // Without the ruleset every one of these flows connects: what stops them
    // afterwards is the ruleset, not the lab.
    assert_answered(
        &flows,
        "did not connect even without the ruleset (the lab is broken)",
    );
    lab.load_ruleset();
    assert_dropped(
        &flows,
        "between VLANs got through although no allow rule permits them",
    );
}

#[test]
fn wan_reaches_only_the_forwarded_ports() {
    let Some(mut lab) = Lab::new("wan") else {
        return;
    };
    let public = lab.site.wan_address;
    let fw = lab.firewall_ns();
    let vlan_names: Vec<String> = lab.site.vlans.iter().map(|v| v.name.clone()).collect();
    let mut flows = Vec::new();
    let wan = lab.wan_client.clone();
    for proto in [Proto::Tcp, Proto::Udp] {
        let forwarded: BTreeSet<u16> = lab
            .site
            .firewall
            .forwards
            .iter()
            .filter(|f| f.proto == proto)
            .map(|f| f.port)
            .collect();
        for port in lab.site.ports_of_interest(proto) {
            if forwarded.contains(&port) {
                continue;
            }
            // The public address on a port that is not forwarded: not even a
            // listener on the firewall itself may answer.
            lab.listen(&fw, public, port, proto);
            flows.push(Flow {
                from: wan.clone(),
                to: public,
                port,
                proto,
                answer: answer(public, port, proto),
                what: format!("WAN {wan} -> {public}:{port}/{proto} (not forwarded)"),
            });
            // Internal addresses, routed rather than forwarded, on the same
            // port (a forward's host port among them).
            for vlan_name in &vlan_names {
                for to in lab.endpoints(vlan_name) {
                    lab.listen(&to.ns, to.ip, port, proto);
                    flows.push(Flow {
                        from: wan.clone(),
                        to: to.ip,
                        port,
                        proto,
                        answer: answer(to.ip, port, proto),
                        what: format!(
                            "WAN {wan} -> {vlan_name} {to}:{port}/{proto} (internal address)"
                        ),
                    });
                }
            }
        }
    }
    lab.start_listeners();
    assert_answered(
        &flows,
        "did not connect even without the ruleset (the lab is broken)",
    );
    lab.load_ruleset();
    assert_dropped(&flows, "from the WAN got through without a port forward");
}
