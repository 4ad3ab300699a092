//! The round-trip oracle: every built artifact read back by the real tool
//! that will consume it (nft, named-checkzone, a Cisco IOS parser, Kea's
//! JSON, cloud-init's YAML out of the FAT image, the compose bundle, `sh`)
//! and compared with what the stack's TOML declares, parsed here on its own
//! so that a bug in sov's model cannot hide the same bug in an artifact.
//! Exactly the rules, records, interfaces, users and keys declared: an
//! extra one is as wrong as a missing one.
//!
//! It works on any stack folder and any `sov build --json` report, so the
//! property test (tests/fields_property.rs) runs it on edited stacks too.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Cursor, Read};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Artifact;

/// The parser the switch check runs, from the venv `.ci/install-deps` makes.
pub const IOS_PYTHON: &str = "/opt/sov-test-venv/bin/python";

/// The system tools the oracle runs; a test calls `common::require` on each.
pub const TOOLS: [&str; 5] = ["nft", "unshare", "named-checkzone", "sh", IOS_PYTHON];

/// Packages sov adds to every host's cloud-init (the design's host
/// prerequisites), besides the image's own.
const HOST_PREREQUISITES: [&str; 5] = ["coreutils", "util-linux", "tar", "zstd", "b3sum"];

// ---- what the stack declares, parsed independently -------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct SiteFile {
    pub name: String,
    pub wan_address: String,
    pub domains: Domains,
    pub vlans: Vec<Vlan>,
    pub switch: Switch,
    pub firewall: Firewall,
    pub dns: Dns,
    pub hosts: Vec<Host>,
    #[serde(default)]
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Domains {
    pub public: Vec<String>,
    pub internal: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vlan {
    pub id: u16,
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub interface: String,
    pub dhcp_pool: Option<Pool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pool {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Switch {
    pub name: String,
    pub management_vlan: String,
    pub management_ip: String,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Port {
    pub name: String,
    pub mode: String,
    pub vlan: Option<String>,
    #[serde(default)]
    pub vlans: Vec<String>,
    pub native_vlan: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Firewall {
    pub host: String,
    pub wan_interface: String,
    #[serde(default)]
    pub allow: Vec<Allow>,
    #[serde(default)]
    pub forwards: Vec<Forward>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Allow {
    pub from: String,
    pub to: String,
    pub proto: String,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Forward {
    pub proto: String,
    pub port: u16,
    pub host: String,
    pub host_port: Option<u16>,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub name: String,
    pub vlan: String,
    pub mac: String,
    pub ip: Option<String>,
    pub image: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub public_names: Vec<String>,
    pub ssh: Ssh,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Ssh {
    #[serde(default = "default_root")]
    pub root: String,
}

fn default_root() -> String {
    "/var/lib/sov".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub zone: String,
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StackFile {
    #[serde(default)]
    pub operators: Vec<Operator>,
    pub dns: DnsDefaults,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Operator {
    pub name: String,
    pub ssh_key: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DnsDefaults {
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    pub nameservers: Vec<String>,
    pub hostmaster: String,
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    #[serde(default = "default_retry")]
    pub retry: u32,
    #[serde(default = "default_expire")]
    pub expire: u32,
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
}

fn default_ttl() -> u32 {
    3600
}
fn default_refresh() -> u32 {
    7200
}
fn default_retry() -> u32 {
    3600
}
fn default_expire() -> u32 {
    1_209_600
}
fn default_negative_ttl() -> u32 {
    300
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageFile {
    #[serde(default)]
    pub cloud_init: CloudInit,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub files: Vec<BundleFile>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub health: Vec<Health>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CloudInit {
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub runcmd: Vec<Vec<String>>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for CloudInit {
    fn default() -> Self {
        CloudInit {
            packages: Vec::new(),
            runcmd: Vec::new(),
            timezone: default_timezone(),
        }
    }
}

fn default_timezone() -> String {
    "Etc/UTC".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default = "default_restart")]
    pub restart: String,
}

fn default_restart() -> String {
    "unless-stopped".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct BundleFile {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Secret {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Health {
    pub name: String,
    pub command: Vec<String>,
    #[serde(default = "default_health_timeout")]
    pub timeout: u32,
}

fn default_health_timeout() -> u32 {
    10
}

/// The whole stack as its files declare it.
#[derive(Debug, Clone)]
pub struct Declared {
    pub stack: StackFile,
    pub sites: BTreeMap<String, SiteFile>,
    pub images: BTreeMap<String, ImageFile>,
}

impl Declared {
    /// Reads sites/*.toml, sites/stack.toml and images/*.toml of `root`.
    pub fn load(root: &Path) -> Result<Declared, String> {
        let read = |rel: &str| -> Result<String, String> {
            fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))
        };
        let stack = toml::from_str(&read("sites/stack.toml")?)
            .map_err(|e| format!("sites/stack.toml: {e}"))?;
        let mut sites = BTreeMap::new();
        for stem in stems(&root.join("sites"))? {
            if stem != "stack" {
                let rel = format!("sites/{stem}.toml");
                let site: SiteFile =
                    toml::from_str(&read(&rel)?).map_err(|e| format!("{rel}: {e}"))?;
                sites.insert(site.name.clone(), site);
            }
        }
        let mut images = BTreeMap::new();
        for stem in stems(&root.join("images"))? {
            let rel = format!("images/{stem}.toml");
            let image = toml::from_str(&read(&rel)?).map_err(|e| format!("{rel}: {e}"))?;
            images.insert(stem, image);
        }
        Ok(Declared {
            stack,
            sites,
            images,
        })
    }
}

fn stems(dir: &Path) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Some(stem) = path.file_stem() {
                found.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

impl SiteFile {
    fn vlan(&self, name: &str) -> Result<&Vlan, String> {
        self.vlans
            .iter()
            .find(|v| v.name == name)
            .ok_or(format!("the site declares no VLAN {name:?}"))
    }

    fn host(&self, name: &str) -> Result<&Host, String> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or(format!("the site declares no host {name:?}"))
    }

    fn dns_ips(&self) -> Result<Vec<Ipv4Addr>, String> {
        let mut ips = Vec::new();
        for name in &self.dns.servers {
            if let Some(ip) = &self.host(name)?.ip {
                ips.push(ipv4(ip)?);
            }
        }
        Ok(ips)
    }
}

fn ipv4(text: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is declared but is no IPv4 address"))
}

fn net(text: &str) -> Result<Ipv4Net, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is declared but is no IPv4 subnet"))
}

// ---- what the oracle reports -------------------------------------------------

/// One artifact read back: how many of each thing it holds, and every way it
/// differs from the stack.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// What was counted (`rules`, `records`, `users` …) to how many.
    pub counts: BTreeMap<String, usize>,
    pub mismatches: Vec<String>,
}

impl Reading {
    fn count(&mut self, what: &str, n: usize) {
        *self.counts.entry(what.to_string()).or_default() += n;
    }

    fn wrong(&mut self, problem: impl Into<String>) {
        self.mismatches.push(problem.into());
    }

    /// Records `Err` as a mismatch; a check that cannot go on returns early.
    fn ok<T>(&mut self, result: Result<T, String>) -> Option<T> {
        result.map_err(|e| self.wrong(e)).ok()
    }

    /// Two multisets of lines: reports what is missing and what is extra.
    fn same_lines(&mut self, what: &str, expected: Vec<String>, seen: Vec<String>) {
        let mut missing = multiset(&expected);
        let mut extra = multiset(&seen);
        for (line, n) in multiset(&seen) {
            if let Some(m) = missing.get_mut(&line) {
                let both = (*m).min(n);
                *m -= both;
                *extra.get_mut(&line).expect("counted") -= both;
            }
        }
        for (line, n) in missing.into_iter().filter(|(_, n)| *n > 0) {
            self.wrong(format!("{what}: missing ({n}x) {line}"));
        }
        for (line, n) in extra.into_iter().filter(|(_, n)| *n > 0) {
            self.wrong(format!("{what}: not declared ({n}x) {line}"));
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, expected: T, seen: T) {
        if expected != seen {
            self.wrong(format!(
                "{what}: expected {expected:?}, the artifact has {seen:?}"
            ));
        }
    }
}

fn multiset(lines: &[String]) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for line in lines {
        *map.entry(line.clone()).or_insert(0) += 1;
    }
    map
}

/// Reads one artifact back and compares it with the stack.
pub fn read_artifact(declared: &Declared, artifact: &Artifact) -> Reading {
    let mut reading = Reading::default();
    let Some(site) = declared.sites.get(&artifact.site) else {
        reading.wrong(format!("no sites/*.toml declares site {}", artifact.site));
        return reading;
    };
    let host = artifact.host.as_deref();
    match artifact.kind.as_str() {
        "firewall" => firewall(site, &artifact.path, &mut reading),
        "dns" => zone(declared, site, artifact, &mut reading),
        "dhcp" => dhcp(site, &artifact.path, &mut reading),
        "switch" => switch(site, &artifact.path, &mut reading),
        "cloud-init" => seed(declared, site, host, &artifact.path, &mut reading),
        "compose" => bundle(declared, site, host, &artifact.path, &mut reading),
        "activation" => activation(declared, site, host, &artifact.path, &mut reading),
        // Kinds the oracle does not read back yet say so, rather than pass.
        other => reading.wrong(format!("the oracle cannot read {other} artifacts")),
    }
    reading
}

/// Every artifact of a build report, read back: artifact name to reading.
pub fn read_all(root: &Path, artifacts: &[Artifact]) -> Result<BTreeMap<String, Reading>, String> {
    let declared = Declared::load(root)?;
    let readings = std::thread::scope(|scope| {
        let running: Vec<_> = artifacts
            .iter()
            .map(|a| {
                let declared = &declared;
                scope.spawn(move || (a.name.clone(), read_artifact(declared, a)))
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    Ok(readings)
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{:?} {:?} failed ({}): {}{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---- firewall: `nft -j list ruleset` after loading it --------------------------

/// An nft comment as the firewall template writes it: `"` becomes `'`, `\`
/// becomes `/`, control characters spaces, any other non-ASCII character `?`, and the
/// whole comment is cut at 128 bytes.
pub fn nft_comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            c if c < ' ' => ' ',
            c if c < '\u{7f}' => c,
            _ => '?',
        })
        .collect();
    clean.chars().take(128).collect()
}

/// Whether a rule's comment carries the declared text: whole, or up to the
/// cut at 128 bytes.
fn carries(comment: &str, declared: &str) -> bool {
    let want = nft_comment(declared);
    if comment.contains(&want) {
        return true;
    }
    comment.len() >= 128
        && (1..=want.len())
            .rev()
            .any(|n| want.is_char_boundary(n) && comment.ends_with(&want[..n]))
}

fn nft_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => nft_set(items),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", p["addr"].as_str().unwrap_or("?"), p["len"])
            } else if let Some(Value::Array(items)) = o.get("set") {
                nft_set(items)
            } else if let Some(Value::Array(r)) = o.get("range") {
                let ends: Vec<String> = r.iter().map(nft_value).collect();
                ends.join("-")
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// A set, sorted; a set of one is its element (nft prints `{ x }` as `x`).
fn nft_set(items: &[Value]) -> String {
    let mut all: Vec<String> = items.iter().map(nft_value).collect();
    all.sort();
    if all.len() == 1 {
        return all.remove(0);
    }
    format!("{{{}}}", all.join(", "))
}

fn nft_left(v: &Value) -> String {
    if let Some(key) = v["meta"]["key"].as_str() {
        key.to_string()
    } else if let Some(p) = v.get("payload") {
        format!(
            "{} {}",
            p["protocol"].as_str().unwrap_or("?"),
            p["field"].as_str().unwrap_or("?")
        )
    } else if let Some(key) = v["ct"]["key"].as_str() {
        format!("ct {key}")
    } else {
        v.to_string()
    }
}

/// One rule in a normal form: its matches (sorted) and then its statements.
fn nft_rule(expr: &[Value]) -> String {
    let mut matches = Vec::new();
    let mut statements = Vec::new();
    for e in expr {
        if let Some(m) = e.get("match") {
            // `in` is how nft writes a flag match (ct state); it means ==.
            let op = match m["op"].as_str() {
                Some("in") | Some("==") => "==",
                Some(op) => op,
                None => "?",
            };
            matches.push(format!(
                "{} {op} {}",
                nft_left(&m["left"]),
                nft_value(&m["right"])
            ));
        } else if let Some(d) = e.get("dnat") {
            statements.push(format!(
                "dnat {}:{}",
                d["addr"].as_str().unwrap_or("?"),
                d["port"]
            ));
        } else if let Some(l) = e.get("limit") {
            statements.push(format!(
                "limit {}/{} burst {}",
                l["rate"],
                l["per"].as_str().unwrap_or("?"),
                l["burst"]
            ));
        } else if let Some(l) = e.get("log") {
            statements.push(format!("log {:?}", l["prefix"].as_str().unwrap_or("")));
        } else if e.get("counter").is_some() {
            continue;
        } else if let Some((key, Value::Null)) = e.as_object().and_then(|o| o.iter().next()) {
            statements.push(key.clone());
        } else {
            statements.push(e.to_string());
        }
    }
    matches.sort();
    format!("{} => {}", matches.join("; "), statements.join(" "))
}

fn rule(matches: &[String], statements: &str) -> String {
    let mut m = matches.to_vec();
    m.sort();
    format!("{} => {statements}", m.join("; "))
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn set_of(items: &[String]) -> String {
    let values: Vec<Value> = items.iter().map(|s| Value::String(s.clone())).collect();
    nft_set(&values)
}

fn dport(proto: &str, ports: &[u16]) -> String {
    let values: Vec<Value> = ports.iter().map(|p| json!(p)).collect();
    format!("{proto} dport == {}", nft_set(&values))
}

/// Rules the template writes whatever the site says.
const FIXED_INPUT: [&str; 8] = [
    "ct state == {\"established\", \"related\"} => accept",
    "ct state == \"invalid\" => drop",
    "iif == \"lo\" => accept",
    "icmp type == {\"destination-unreachable\", \"parameter-problem\", \"time-exceeded\"} => accept",
    "icmp type == \"echo-request\" => limit 20/second burst 50 accept",
    "icmpv6 type == {\"destination-unreachable\", \"nd-neighbor-advert\", \"nd-neighbor-solicit\", \"nd-router-solicit\", \"packet-too-big\", \"parameter-problem\", \"time-exceeded\"} => accept",
    "icmpv6 type == \"echo-request\" => limit 20/second burst 50 accept",
    " => limit 10/minute burst 5 log \"sov drop input: \"",
];
const FIXED_FORWARD: [&str; 4] = [
    "ct state == {\"established\", \"related\"} => accept",
    "ct state == \"invalid\" => drop",
    "ct status == \"dnat\" => accept",
    " => limit 10/minute burst 5 log \"sov drop forward: \"",
];

/// The chains, their hooks and policies, and the rules of each that the
/// site file means, with the declared comment each rule must carry.
struct RulesetModel {
    chains: Vec<String>,
    rules: BTreeMap<String, Vec<String>>,
    comments: Vec<(String, String, String)>,
}

fn firewall_model(site: &SiteFile) -> Result<RulesetModel, String> {
    let wan = &site.firewall.wan_interface;
    let wan_address = ipv4(&site.wan_address)?;
    let lans: Vec<String> = site.vlans.iter().map(|v| v.interface.clone()).collect();
    let mut input: Vec<String> = FIXED_INPUT.iter().map(|s| s.to_string()).collect();
    let mut forward: Vec<String> = FIXED_FORWARD.iter().map(|s| s.to_string()).collect();
    let mut prerouting = Vec::new();
    let mut postrouting = vec![rule(&[format!("oifname == {}", q(wan))], "masquerade")];
    let mut comments = Vec::new();

    let fw = site.host(&site.firewall.host)?;
    let mgmt = site.vlan(&fw.vlan)?;
    input.push(rule(
        &[
            format!("iifname == {}", q(&mgmt.interface)),
            format!("ip saddr == {}", net(&mgmt.subnet)?.trunc()),
            "tcp dport == 22".into(),
        ],
        "accept",
    ));
    input.push(rule(
        &[
            format!("iifname == {}", set_of(&lans)),
            "udp sport == 68".into(),
            "udp dport == 67".into(),
        ],
        "accept",
    ));
    for v in &site.vlans {
        forward.push(rule(
            &[
                format!("iifname == {}", q(&v.interface)),
                format!("oifname == {}", q(wan)),
                format!("ip saddr == {}", net(&v.subnet)?.trunc()),
            ],
            "accept",
        ));
    }
    let daddr: Vec<Value> = site
        .dns_ips()?
        .iter()
        .map(|ip| json!(ip.to_string()))
        .collect();
    if !daddr.is_empty() {
        for proto in ["udp", "tcp"] {
            forward.push(rule(
                &[
                    format!("iifname == {}", set_of(&lans)),
                    format!("ip daddr == {}", nft_set(&daddr)),
                    format!("{proto} dport == 53"),
                ],
                "accept",
            ));
        }
    }
    for a in &site.firewall.allow {
        let (from, to) = (site.vlan(&a.from)?, site.vlan(&a.to)?);
        let what = if a.proto == "icmp" {
            "l4proto == \"icmp\"".to_string()
        } else {
            dport(&a.proto, &a.ports)
        };
        let r = rule(
            &[
                format!("iifname == {}", q(&from.interface)),
                format!("oifname == {}", q(&to.interface)),
                format!("ip saddr == {}", net(&from.subnet)?.trunc()),
                format!("ip daddr == {}", net(&to.subnet)?.trunc()),
                what,
            ],
            "accept",
        );
        if !a.comment.is_empty() {
            comments.push(("forward".into(), r.clone(), a.comment.clone()));
        }
        forward.push(r);
    }
    let mut reflected = Vec::new();
    for f in &site.firewall.forwards {
        let target = site.host(&f.host)?;
        let ip = ipv4(
            target
                .ip
                .as_deref()
                .ok_or(format!("forward to {} without an ip", f.host))?,
        )?;
        let to = format!("dnat {ip}:{}", f.host_port.unwrap_or(f.port));
        let common = [
            format!("ip daddr == {}", q(&wan_address.to_string())),
            format!("{} dport == {}", f.proto, f.port),
        ];
        let mut dnat = common.to_vec();
        dnat.push(format!("iifname == {}", q(wan)));
        let r = rule(&dnat, &to);
        if !f.comment.is_empty() {
            comments.push(("prerouting".into(), r.clone(), f.comment.clone()));
        }
        prerouting.push(r);
        let mut reflect = common.to_vec();
        reflect.push(format!("iifname != {}", q(wan)));
        prerouting.push(rule(&reflect, &to));
        let interface = site.vlan(&target.vlan)?.interface.clone();
        if !reflected.contains(&interface) {
            postrouting.push(rule(
                &[
                    format!("iifname == {}", q(&interface)),
                    format!("oifname == {}", q(&interface)),
                    "ct status == \"dnat\"".into(),
                ],
                "masquerade",
            ));
            reflected.push(interface);
        }
    }
    let chains = [
        "inet filter input filter/input policy drop",
        "inet filter forward filter/forward policy drop",
        "inet filter output filter/output policy accept",
        "ip nat prerouting nat/prerouting policy accept",
        "ip nat postrouting nat/postrouting policy accept",
    ];
    let rules = BTreeMap::from([
        ("inet filter input".to_string(), input),
        ("inet filter forward".to_string(), forward),
        ("inet filter output".to_string(), Vec::new()),
        ("ip nat prerouting".to_string(), prerouting),
        ("ip nat postrouting".to_string(), postrouting),
    ]);
    Ok(RulesetModel {
        chains: chains.iter().map(|s| s.to_string()).collect(),
        rules,
        comments,
    })
}

fn firewall(site: &SiteFile, path: &Path, reading: &mut Reading) {
    // A private network namespace (and user namespace, for CAP_NET_ADMIN
    // without root) holds the loaded ruleset; nothing touches the host's.
    let Some(out) = reading.ok(run(Command::new("unshare")
        .args([
            "-rn",
            "sh",
            "-c",
            "nft -f \"$1\" && nft -j list ruleset",
            "sh",
        ])
        .arg(path)))
    else {
        return;
    };
    let Some(listing) = reading
        .ok(serde_json::from_slice::<Value>(&out.stdout).map_err(|e| format!("nft -j: {e}")))
    else {
        return;
    };
    let Some(model) = reading.ok(firewall_model(site)) else {
        return;
    };
    let mut chains = Vec::new();
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut comments: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut tables = 0;
    for item in listing["nftables"].as_array().into_iter().flatten() {
        if item.get("table").is_some() {
            tables += 1;
        } else if let Some(c) = item.get("chain") {
            chains.push(format!(
                "{} {} {} {}/{} policy {}",
                c["family"].as_str().unwrap_or("?"),
                c["table"].as_str().unwrap_or("?"),
                c["name"].as_str().unwrap_or("?"),
                c["type"].as_str().unwrap_or("-"),
                c["hook"].as_str().unwrap_or("-"),
                c["policy"].as_str().unwrap_or("-"),
            ));
        } else if let Some(r) = item.get("rule") {
            let chain = format!(
                "{} {} {}",
                r["family"].as_str().unwrap_or("?"),
                r["table"].as_str().unwrap_or("?"),
                r["chain"].as_str().unwrap_or("?")
            );
            let normal = nft_rule(r["expr"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            if let Some(comment) = r["comment"].as_str() {
                let short = chain.rsplit(' ').next().unwrap_or("").to_string();
                comments
                    .entry((short, normal.clone()))
                    .or_default()
                    .push(comment.to_string());
            }
            rules.entry(chain).or_default().push(normal);
        }
    }
    reading.count("tables", tables);
    reading.count("chains", chains.len());
    reading.same_lines("nft chains", model.chains.clone(), chains);
    let names: BTreeSet<&String> = rules.keys().chain(model.rules.keys()).collect();
    for chain in names {
        let seen = rules.get(chain).cloned().unwrap_or_default();
        reading.count("rules", seen.len());
        let want = model.rules.get(chain).cloned().unwrap_or_default();
        reading.same_lines(&format!("nft chain {chain}"), want, seen);
    }
    for (chain, r, declared) in &model.comments {
        let seen = comments
            .get(&(chain.clone(), r.clone()))
            .cloned()
            .unwrap_or_default();
        reading.count("comments", 1);
        if !seen.iter().any(|c| carries(c, declared)) {
            reading.wrong(format!(
                "nft chain {chain}: the rule {r} should carry the comment {:?} (declared {declared:?}); it has {seen:?}",
                nft_comment(declared)
            ));
        }
    }
}

// ---- dns: named-checkzone's canonical dump ------------------------------------

/// Splits zone-file text into tokens, a quoted string being one token with
/// its quotes.
fn zone_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            let mut t = String::from(chars.next().unwrap_or('"'));
            while let Some(c) = chars.next() {
                t.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        t.push(n);
                    }
                } else if c == '"' {
                    break;
                }
            }
            tokens.push(t);
        } else {
            let mut t = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                t.push(c);
                chars.next();
            }
            tokens.push(t);
        }
    }
    tokens
}

/// The bytes of one zone-file character-string (`"a\"b"`, `\065`).
fn character_string(token: &str) -> Vec<u8> {
    let inner = token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(token);
    let bytes = inner.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let digits = &bytes[i + 1..bytes.len().min(i + 4)];
            if digits.len() == 3 && digits.iter().all(u8::is_ascii_digit) {
                let n = digits
                    .iter()
                    .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
                out.push(u8::try_from(n).unwrap_or(b'?'));
                i += 4;
            } else {
                out.push(bytes[i + 1]);
                i += 2;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn absolute(name: &str, origin: &str) -> String {
    if name == "@" {
        format!("{origin}.")
    } else if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.{origin}.")
    }
}

/// Declared record data in the form named-checkzone dumps it: names made
/// absolute, addresses canonical. TXT is compared apart, as bytes.
fn canonical_rdata(rtype: &str, value: &str, origin: &str) -> Result<String, String> {
    let t = zone_tokens(value);
    let bad = || format!("{value:?} is declared as {rtype} data but is not valid {rtype} data");
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._@*".contains(c))
    };
    let number = |n: &str| n.parse::<u32>().map_err(|_| bad());
    match (rtype, t.as_slice()) {
        ("A", [a]) => a
            .parse::<Ipv4Addr>()
            .map(|a| a.to_string())
            .map_err(|_| bad()),
        ("AAAA", [a]) => a
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| bad()),
        ("CNAME" | "NS", [n]) if name_ok(n) => Ok(absolute(n, origin)),
        ("MX", [p, n]) if name_ok(n) => Ok(format!("{} {}", number(p)?, absolute(n, origin))),
        ("SRV", [p, w, port, n]) if name_ok(n) => Ok(format!(
            "{} {} {} {}",
            number(p)?,
            number(w)?,
            number(port)?,
            absolute(n, origin)
        )),
        ("CAA", [flags, tag, v]) if tag.chars().all(|c| c.is_ascii_alphanumeric()) => {
            let text = String::from_utf8(character_string(v)).map_err(|_| bad())?;
            if text
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\' || !c.is_ascii())
            {
                return Err(bad());
            }
            Ok(format!("{} {tag} \"{text}\"", number(flags)?))
        }
        _ => Err(bad()),
    }
}

fn zone(declared: &Declared, site: &SiteFile, artifact: &Artifact, reading: &mut Reading) {
    let prefix = format!("{}-zone-", site.name);
    let Some(origin) = artifact.name.strip_prefix(&prefix) else {
        reading.wrong(format!("a zone artifact's name must start with {prefix}"));
        return;
    };
    let Some(out) = reading.ok(run(Command::new("named-checkzone")
        .args(["-D", "-o", "-", "-i", "local"])
        .arg(origin)
        .arg(&artifact.path)))
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = Vec::new();
    let mut txt_seen = Vec::new();
    for line in text.lines() {
        let t = zone_tokens(line);
        if t.len() < 4 || t[2] != "IN" {
            continue;
        }
        let (owner, ttl, rtype) = (&t[0], &t[1], &t[3]);
        if rtype == "TXT" {
            let bytes: Vec<u8> = t[4..].iter().flat_map(|s| character_string(s)).collect();
            txt_seen.push(format!(
                "{owner} {ttl} TXT {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        } else if rtype == "SOA" && t.len() == 11 {
            // The serial is the time of the last commit: not the stack's to say.
            seen.push(format!(
                "{owner} {ttl} SOA {} {} * {}",
                t[4],
                t[5],
                t[7..].join(" ")
            ));
        } else {
            seen.push(format!("{owner} {ttl} {rtype} {}", t[4..].join(" ")));
        }
    }
    reading.count("records", seen.len() + txt_seen.len());
    let Some((want, want_txt)) = reading.ok(zone_model(declared, site, origin)) else {
        return;
    };
    reading.same_lines(&format!("zone {origin}"), want, seen);
    reading.same_lines(&format!("zone {origin} TXT"), want_txt, txt_seen);
}

/// The records of zone `origin` of a site, derived as the design says.
fn zone_model(
    declared: &Declared,
    site: &SiteFile,
    origin: &str,
) -> Result<(Vec<String>, Vec<String>), String> {
    let d = &declared.stack.dns;
    let ttl = d.ttl;
    let mut rr = Vec::new();
    let mut txt = Vec::new();
    let at = format!("{origin}.");
    let internal = &site.domains.internal;
    let internal_ns: Vec<String> = site
        .dns
        .servers
        .iter()
        .map(|n| format!("{n}.{internal}."))
        .collect();
    let add_manual = |rr: &mut Vec<String>,
                      txt: &mut Vec<String>,
                      s: &SiteFile,
                      kind: &str|
     -> Result<(), String> {
        for r in s.records.iter().filter(|r| r.zone == kind) {
            let owner = absolute(&r.name, origin);
            let ttl = r.ttl.unwrap_or(ttl);
            if r.rtype == "TXT" {
                txt.push(format!("{owner} {ttl} TXT {:?}", r.value));
            } else {
                rr.push(format!(
                    "{owner} {ttl} {} {}",
                    r.rtype,
                    canonical_rdata(&r.rtype, &r.value, origin)?
                ));
            }
        }
        Ok(())
    };
    let nameservers: Vec<String>;
    if site.domains.public.iter().any(|p| p == origin) {
        nameservers = d.nameservers.iter().map(|n| format!("{n}.")).collect();
        for s in declared
            .sites
            .values()
            .filter(|s| s.domains.public.iter().any(|p| p == origin))
        {
            for h in &s.hosts {
                for p in &h.public_names {
                    rr.push(format!(
                        "{} {ttl} A {}",
                        absolute(p, origin),
                        ipv4(&s.wan_address)?
                    ));
                }
            }
            add_manual(&mut rr, &mut txt, s, "public")?;
        }
    } else if origin == internal {
        nameservers = internal_ns.clone();
        for h in &site.hosts {
            if let Some(ip) = &h.ip {
                rr.push(format!("{}.{at} {ttl} A {}", h.name, ipv4(ip)?));
            }
            for a in &h.aliases {
                rr.push(format!("{a}.{at} {ttl} CNAME {}.{at}", h.name));
            }
        }
        for v in &site.vlans {
            rr.push(format!("gw-{}.{at} {ttl} A {}", v.name, ipv4(&v.gateway)?));
        }
        rr.push(format!(
            "{}.{at} {ttl} A {}",
            site.switch.name,
            ipv4(&site.switch.management_ip)?
        ));
        add_manual(&mut rr, &mut txt, site, "internal")?;
    } else {
        nameservers = internal_ns.clone();
        let mut ptr = |ip: &str, name: &str| -> Result<(), String> {
            let o = ipv4(ip)?.octets();
            let reverse = format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]);
            if reverse.ends_with(&format!(".{at}")) {
                rr.push(format!("{reverse} {ttl} PTR {name}.{internal}."));
            }
            Ok(())
        };
        for h in &site.hosts {
            if let Some(ip) = &h.ip {
                ptr(ip, &h.name)?;
            }
        }
        for v in &site.vlans {
            ptr(&v.gateway, &format!("gw-{}", v.name))?;
        }
        ptr(&site.switch.management_ip, &site.switch.name)?;
    }
    let mname = nameservers.first().cloned().unwrap_or_default();
    rr.push(format!(
        "{at} {ttl} SOA {mname} {}. * {} {} {} {}",
        d.hostmaster, d.refresh, d.retry, d.expire, d.negative_ttl
    ));
    for ns in &nameservers {
        rr.push(format!("{at} {ttl} NS {ns}"));
    }
    dedup(&mut rr);
    dedup(&mut txt);
    Ok((rr, txt))
}

fn dedup(lines: &mut Vec<String>) {
    lines.sort();
    lines.dedup();
}

// ---- dhcp: Kea's JSON -----------------------------------------------------------

fn dhcp(site: &SiteFile, path: &Path, reading: &mut Reading) {
    let Some(kea) = reading.ok(fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| format!("Kea JSON: {e}"))))
    else {
        return;
    };
    let d = &kea["Dhcp4"];
    let lans: Vec<Value> = site.vlans.iter().map(|v| json!(v.interface)).collect();
    reading.same(
        "interfaces-config.interfaces",
        &json!(lans),
        &d["interfaces-config"]["interfaces"],
    );
    let Some(dns) = reading.ok(site.dns_ips()) else {
        return;
    };
    let mut options = vec![
        json!({"name": "domain-name", "data": site.domains.internal}),
        json!({"name": "domain-search", "data": site.domains.internal}),
    ];
    if !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(Ipv4Addr::to_string).collect();
        options.push(json!({"name": "domain-name-servers", "data": list.join(", ")}));
    }
    reading.same("option-data", &json!(options), &d["option-data"]);
    let mut want = Vec::new();
    for v in &site.vlans {
        let reservations: Vec<Value> = site
            .hosts
            .iter()
            .filter(|h| h.vlan == v.name)
            .filter_map(|h| {
                let ip = h.ip.as_ref()?;
                Some(json!({"hw-address": h.mac, "ip-address": ip, "hostname": h.name}))
            })
            .collect();
        let pools: Vec<Value> = v
            .dhcp_pool
            .iter()
            .map(|p| json!({"pool": format!("{} - {}", p.start, p.end)}))
            .collect();
        want.push(json!({
            "id": v.id,
            "subnet": v.subnet,
            "interface": v.interface,
            "pools": pools,
            "routers": v.gateway,
            "reservations": reservations,
        }));
    }
    let seen: Vec<Value> = d["subnet4"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let routers: Vec<&Value> = s["option-data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["name"] == "routers")
                .map(|o| &o["data"])
                .collect();
            let reservations: Vec<Value> = s["reservations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| json!({"hw-address": r["hw-address"], "ip-address": r["ip-address"], "hostname": r["hostname"]}))
                .collect();
            reading.count("reservations", reservations.len());
            json!({
                "id": s["id"],
                "subnet": s["subnet"],
                "interface": s["interface"],
                "pools": s["pools"],
                "routers": if routers.len() == 1 { routers[0].clone() } else { json!(routers) },
                "reservations": reservations,
            })
        })
        .collect();
    reading.count("subnets", seen.len());
    let want: Vec<String> = want.iter().map(Value::to_string).collect();
    let seen: Vec<String> = seen.iter().map(Value::to_string).collect();
    reading.same_lines("Kea subnet4", want, seen);
}

// ---- switch: ciscoconfparse ------------------------------------------------

/// Whether an IOS description can be written as it is.
fn plain_ios_text(text: &str) -> bool {
    text.len() <= 240 && text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn switch(site: &SiteFile, path: &Path, reading: &mut Reading) {
    if let Ok(bytes) = fs::read(path) {
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().any(|&b| b < 0x20 && b != b'\t') {
                reading.wrong(format!(
                    "IOS line {}: a control character, which a terminal acts on: {:?}",
                    n + 1,
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }
    let script = super::repo().join("tests/ios_ports.py");
    let Some(out) = reading.ok(run(Command::new(IOS_PYTHON).arg(script).arg(path))) else {
        return;
    };
    let Some(parsed) = reading
        .ok(serde_json::from_slice::<Value>(&out.stdout).map_err(|e| format!("IOS reader: {e}")))
    else {
        return;
    };
    if let Err(e) = switch_compare(site, &parsed, reading) {
        reading.wrong(e);
    }
}

fn switch_compare(site: &SiteFile, parsed: &Value, reading: &mut Reading) -> Result<(), String> {
    let id = |name: &str| site.vlan(name).map(|v| v.id);
    let mgmt = site.vlan(&site.switch.management_vlan)?;
    let mgmt_net = net(&mgmt.subnet)?;
    let mut top = vec![
        "version 15.2".to_string(),
        "service timestamps debug datetime msec".into(),
        "service timestamps log datetime msec".into(),
        "service password-encryption".into(),
        format!("hostname {}", site.switch.name),
        format!("ip domain-name {}", site.domains.internal),
        "no ip domain-lookup".into(),
        "spanning-tree mode rapid-pvst".into(),
        "spanning-tree extend system-id".into(),
        "interface Vlan1".into(),
        format!("interface Vlan{}", mgmt.id),
        format!("ip default-gateway {}", ipv4(&mgmt.gateway)?),
        "line con 0".into(),
        "line vty 0 15".into(),
        "end".into(),
    ];
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &site.vlans {
        top.push(format!("vlan {}", v.id));
        children.insert(format!("vlan {}", v.id), vec![format!(" name {}", v.name)]);
    }
    children.insert(
        "interface Vlan1".into(),
        vec![" no ip address".into(), " shutdown".into()],
    );
    children.insert(
        format!("interface Vlan{}", mgmt.id),
        vec![
            format!(" description management ({})", mgmt.name),
            format!(
                " ip address {} {}",
                ipv4(&site.switch.management_ip)?,
                mgmt_net.netmask()
            ),
            " no shutdown".into(),
        ],
    );
    children.insert("line con 0".into(), vec![" logging synchronous".into()]);
    children.insert("line vty 0 15".into(), vec![" transport input ssh".into()]);
    let mut ports = BTreeMap::new();
    for p in &site.switch.ports {
        top.push(format!("interface {}", p.name));
        let vlans: Vec<u16> = if p.mode == "access" {
            vec![id(p.vlan.as_deref().unwrap_or_default())?]
        } else {
            let mut ids = p
                .vlans
                .iter()
                .map(|v| id(v))
                .collect::<Result<Vec<_>, _>>()?;
            ids.sort_unstable();
            ids
        };
        let mut entry = json!({"mode": p.mode, "vlans": vlans});
        if p.mode == "trunk" {
            entry["native"] = match &p.native_vlan {
                Some(v) => json!(id(v)?),
                None => json!(1),
            };
        }
        ports.insert(p.name.clone(), (entry, p.description.clone()));
    }
    let blocks = parsed["blocks"].as_array().cloned().unwrap_or_default();
    let seen_top: Vec<String> = blocks
        .iter()
        .map(|b| b["line"].as_str().unwrap_or("").to_string())
        .collect();
    reading.count("top-level commands", seen_top.len());
    reading.same_lines("IOS top-level commands", top, seen_top);
    for block in &blocks {
        let line = block["line"].as_str().unwrap_or("");
        let kids: Vec<String> = block["children"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.as_str().unwrap_or("").to_string())
            .collect();
        if let Some(want) = children.get(line) {
            reading.same_lines(&format!("IOS {line}"), want.clone(), kids);
        } else if let Some((_, description)) =
            line.strip_prefix("interface ").and_then(|n| ports.get(n))
        {
            let descriptions: Vec<&String> = kids
                .iter()
                .filter(|k| k.starts_with(" description"))
                .collect();
            if description.trim().is_empty() {
                reading.same(&format!("IOS {line} descriptions"), 0, descriptions.len());
            } else if descriptions.len() != 1 {
                reading.wrong(format!(
                    "IOS {line}: {} description lines, expected one: {descriptions:?}",
                    descriptions.len()
                ));
            } else {
                let seen = descriptions[0]
                    .trim_start()
                    .strip_prefix("description")
                    .unwrap_or("")
                    .trim();
                if plain_ios_text(description) {
                    reading.same(&format!("IOS {line} description"), description.trim(), seen);
                } else if !plain_ios_text(seen) {
                    reading.wrong(format!(
                        "IOS {line}: description {seen:?} is not plain text"
                    ));
                }
            }
            for k in &kids {
                let known = [
                    " description",
                    " switchport ",
                    " spanning-tree portfast",
                    " no shutdown",
                ];
                if !known.iter().any(|p| k.starts_with(p)) {
                    reading.wrong(format!(
                        "IOS {line}: a line the site does not declare: {k:?}"
                    ));
                }
            }
        }
    }
    let interfaces = parsed["interfaces"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    reading.count("ports", ports.len());
    for (name, (want, _)) in &ports {
        let seen = interfaces.get(name).cloned().unwrap_or(Value::Null);
        let vlans = match seen["mode"].as_str() {
            Some("access") => json!([seen["access_vlan"]]),
            Some("trunk") => seen["allowed_vlans"].clone(),
            _ => Value::Null,
        };
        let seen = json!({"mode": seen["mode"], "vlans": vlans, "native": seen["native_vlan"]});
        let mut want = want.clone();
        if want.get("native").is_none() {
            want["native"] = Value::Null;
        }
        reading.same(&format!("IOS interface {name}"), want, seen);
    }
    let mut seen_vlans = Vec::new();
    for block in &blocks {
        if let Some(id) = block["line"].as_str().and_then(|l| l.strip_prefix("vlan ")) {
            seen_vlans.push(id.to_string());
        }
    }
    reading.count("vlans", seen_vlans.len());
    Ok(())
}

// ---- cloud-init: the FAT seed image -----------------------------------------

fn seed_files(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let fat = fatfs::FileSystem::new(Cursor::new(bytes), fatfs::FsOptions::new())
        .map_err(|e| format!("not a FAT image: {e}"))?;
    let mut files = BTreeMap::new();
    for entry in fat.root_dir().iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.is_file() {
            let mut data = Vec::new();
            entry
                .to_file()
                .read_to_end(&mut data)
                .map_err(|e| e.to_string())?;
            files.insert(entry.file_name(), data);
        }
    }
    Ok(files)
}

fn yaml(name: &str, bytes: Option<&Vec<u8>>) -> Result<Value, String> {
    let bytes = bytes.ok_or(format!("the seed has no {name}"))?;
    let text = std::str::from_utf8(bytes).map_err(|e| format!("{name}: {e}"))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| format!("{name} is not YAML: {e}"))
}

/// The algorithm and key blob of an OpenSSH public key line.
fn key_words(line: &str) -> Vec<String> {
    line.split_whitespace()
        .take(2)
        .map(str::to_string)
        .collect()
}

fn seed(
    declared: &Declared,
    site: &SiteFile,
    host: Option<&str>,
    path: &Path,
    reading: &mut Reading,
) {
    let Some(host) = reading.ok(host
        .ok_or("a seed image without a host".to_string())
        .and_then(|h| site.host(h)))
    else {
        return;
    };
    let Some(files) = reading.ok(seed_files(path)) else {
        return;
    };
    let names: Vec<String> = files.keys().cloned().collect();
    reading.same(
        "seed files",
        vec!["meta-data", "network-config", "user-data"],
        names.iter().map(String::as_str).collect(),
    );
    let image = declared
        .images
        .get(&host.image)
        .cloned()
        .unwrap_or_default();
    let fqdn = format!("{}.{}", host.name, site.domains.internal);

    if let Some(meta) = reading.ok(yaml("meta-data", files.get("meta-data"))) {
        reading.same(
            "meta-data",
            json!({"instance-id": format!("{}-{}", site.name, host.name), "local-hostname": host.name}),
            meta,
        );
    }
    if let Some(user) = reading.ok(yaml("user-data", files.get("user-data"))) {
        if !files["user-data"].starts_with(b"#cloud-config\n") {
            reading.wrong("user-data does not start with #cloud-config");
        }
        let keys = &declared.stack.operators;
        let allowed = [
            "hostname",
            "fqdn",
            "prefer_fqdn_over_hostname",
            "manage_etc_hosts",
            "timezone",
            "locale",
            "disable_root",
            "ssh_pwauth",
            "ssh_deletekeys",
            "ssh_genkeytypes",
            "ssh_authorized_keys",
            "users",
            "package_update",
            "package_upgrade",
            "packages",
            "runcmd",
            "final_message",
        ];
        for key in user.as_object().into_iter().flatten().map(|(k, _)| k) {
            if !allowed.contains(&key.as_str()) {
                reading.wrong(format!(
                    "user-data: a key the template does not write: {key:?}"
                ));
            }
        }
        reading.same(
            "user-data hostname",
            json!(host.name),
            user["hostname"].clone(),
        );
        reading.same("user-data fqdn", json!(fqdn), user["fqdn"].clone());
        reading.same(
            "user-data timezone",
            json!(image.cloud_init.timezone),
            user["timezone"].clone(),
        );
        let check_keys = |what: &str, list: &Value, want: &[&Operator], reading: &mut Reading| {
            let seen: Vec<String> = list
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| k.as_str().unwrap_or("").to_string())
                .collect();
            reading.count("ssh keys", seen.len());
            for k in &seen {
                if k.chars().any(char::is_control) {
                    reading.wrong(format!("{what}: a key with a control character, which authorized_keys splits: {k:?}"));
                }
            }
            let seen: Vec<Vec<String>> = seen.iter().map(|k| key_words(k)).collect();
            let want: Vec<Vec<String>> = want.iter().map(|o| key_words(&o.ssh_key)).collect();
            reading.same(what, want, seen);
        };
        let all: Vec<&Operator> = keys.iter().collect();
        check_keys(
            "root's ssh_authorized_keys",
            &user["ssh_authorized_keys"],
            &all,
            reading,
        );
        let users = user["users"].as_array().cloned().unwrap_or_default();
        reading.count("users", users.len());
        let mut names = vec![json!("default")];
        names.extend(keys.iter().map(|o| json!(o.name)));
        let seen_names: Vec<Value> = users
            .iter()
            .map(|u| {
                if u.is_string() {
                    u.clone()
                } else {
                    u["name"].clone()
                }
            })
            .collect();
        reading.same("user-data users", names, seen_names);
        for (u, op) in users.iter().skip(1).zip(keys) {
            check_keys(
                &format!("user {}'s ssh_authorized_keys", op.name),
                &u["ssh_authorized_keys"],
                &[op],
                reading,
            );
            reading.same(
                &format!("user {} sudo", op.name),
                json!("ALL=(ALL) NOPASSWD:ALL"),
                u["sudo"].clone(),
            );
        }
        let mut want: BTreeSet<String> = image.cloud_init.packages.iter().cloned().collect();
        want.extend(HOST_PREREQUISITES.iter().map(|p| p.to_string()));
        let seen: BTreeSet<String> = user["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.as_str().unwrap_or("?").to_string())
            .collect();
        reading.count("packages", seen.len());
        reading.same("user-data packages", want, seen);
        let runcmd: Vec<Value> = user["runcmd"].as_array().cloned().unwrap_or_default();
        let ours = runcmd.len().saturating_sub(image.cloud_init.runcmd.len());
        reading.same(
            "user-data runcmd (the image's)",
            json!(image.cloud_init.runcmd),
            json!(runcmd[ours..]),
        );
        let root = &host.ssh.root;
        let sov_dirs = vec![
            json!(["install", "-d", "-m", "0755", root]),
            json!([
                "install",
                "-d",
                "-m",
                "0700",
                format!("{root}/store"),
                format!("{root}/generations")
            ]),
        ];
        reading.same(
            "user-data runcmd (sov's)",
            json!(sov_dirs),
            json!(runcmd[..ours]),
        );
    }
    if let Some(net) = reading.ok(yaml("network-config", files.get("network-config"))) {
        let Some(want) = reading.ok(network_model(site, host)) else {
            return;
        };
        reading.count(
            "interfaces",
            net["ethernets"].as_object().map_or(0, |e| e.len()),
        );
        reading.same("network-config", want, net);
    }
}

fn network_model(site: &SiteFile, host: &Host) -> Result<Value, String> {
    let vlan = site.vlan(&host.vlan)?;
    let mut nic = json!({"match": {"macaddress": host.mac}, "set-name": "lan0", "dhcp6": false});
    match &host.ip {
        Some(ip) => {
            nic["dhcp4"] = json!(false);
            nic["addresses"] =
                json!([format!("{}/{}", ipv4(ip)?, net(&vlan.subnet)?.prefix_len())]);
            nic["routes"] = json!([{"to": "0.0.0.0/0", "via": ipv4(&vlan.gateway)?.to_string()}]);
        }
        None => nic["dhcp4"] = json!(true),
    }
    let dns = site.dns_ips()?;
    if !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(Ipv4Addr::to_string).collect();
        nic["nameservers"] = json!({"search": [site.domains.internal], "addresses": list});
    }
    Ok(json!({"version": 2, "ethernets": {"lan0": nic}}))
}

// ---- compose: the bundle ---------------------------------------------------------

fn bundle_files(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let packed = fs::read(path).map_err(|e| e.to_string())?;
    let tarball = zstd::stream::decode_all(packed.as_slice()).map_err(|e| format!("zstd: {e}"))?;
    let mut archive = tar::Archive::new(Cursor::new(tarball));
    let mut files = BTreeMap::new();
    for entry in archive.entries().map_err(|e| format!("tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("tar: {e}"))?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        files.insert(name, data);
    }
    Ok(files)
}

/// A compose value as the container sees it: `$$` is a literal `$`, and a
/// lone `$` would make compose interpolate, which sov must never ask for.
fn uninterpolated(v: &Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            let mut out = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '$' && chars.next_if_eq(&'$').is_none() {
                    return Err(format!("{s:?} makes compose interpolate a variable"));
                }
                out.push(c);
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(uninterpolated).collect::<Result<_, _>>()?),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), uninterpolated(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn bundle(
    declared: &Declared,
    site: &SiteFile,
    host: Option<&str>,
    path: &Path,
    reading: &mut Reading,
) {
    let Some(host) = reading.ok(host
        .ok_or("a bundle without a host".to_string())
        .and_then(|h| site.host(h)))
    else {
        return;
    };
    let image = declared
        .images
        .get(&host.image)
        .cloned()
        .unwrap_or_default();
    let Some(files) = reading.ok(bundle_files(path)) else {
        return;
    };
    let mut want_files: Vec<String> = image.files.iter().map(|f| f.path.clone()).collect();
    want_files.push("compose.yaml".into());
    reading.count("bundle files", files.len());
    reading.same_lines("bundle files", want_files, files.keys().cloned().collect());
    let Some(compose) = reading
        .ok(yaml("compose.yaml", files.get("compose.yaml")).and_then(|c| uninterpolated(&c)))
    else {
        return;
    };
    let services = compose["services"].as_object().cloned().unwrap_or_default();
    reading.count("services", services.len());
    let names: Vec<String> = services.keys().cloned().collect();
    let declared_names: Vec<String> = image.containers.iter().map(|c| c.name.clone()).collect();
    reading.same_lines("compose services", declared_names, names);
    for c in &image.containers {
        let Some(s) = services.get(&c.name) else {
            continue;
        };
        let mut want = json!({
            "image": c.image,
            "restart": c.restart,
            "container_name": s["container_name"],
            "hostname": c.name,
            "labels": {"org.sov.site": site.name, "org.sov.host": host.name},
            "logging": {"driver": "journald"},
        });
        if let Some(cmd) = &c.command {
            want["command"] = json!(cmd);
        }
        for (key, list) in [
            ("ports", &c.ports),
            ("volumes", &c.volumes),
            ("secrets", &c.secrets),
            ("depends_on", &c.depends_on),
        ] {
            if !list.is_empty() {
                want[key] = json!(list);
            }
        }
        if !c.environment.is_empty() {
            want["environment"] = json!(c.environment);
        }
        reading.same(
            &format!("compose service {}", c.name),
            want,
            Value::Object(s.as_object().cloned().unwrap_or_default()),
        );
    }
    let secrets: BTreeMap<String, Value> = image
        .secrets
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                json!({"file": format!("/run/sov/secrets/{}", s.name)}),
            )
        })
        .collect();
    let seen_secrets = compose.get("secrets").cloned().unwrap_or(json!({}));
    reading.same("compose secrets", json!(secrets), seen_secrets);
    let mut keys: Vec<&String> = compose
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .collect();
    keys.retain(|k| !["x-sov", "services", "secrets"].contains(&k.as_str()));
    reading.same(
        "compose top-level keys besides x-sov, services, secrets",
        Vec::<&String>::new(),
        keys,
    );
}

// ---- activation: sh ------------------------------------------------------------

/// Runs the script's own assignments and its `cmd_check` in a real `sh`,
/// with `check_one` replaced by a printer of its arguments (whole blocks,
/// so that a quoted word may span lines).
const ACTIVATION_READER: &str = r#"
log() { :; }
die() { exit 1; }
compose_dir() { :; }
check_one() { printf '%s\037' "$@"; printf '\036'; }
eval "$(sed -n '/^SOV_ROOT=/,/^export SOV_ROOT/p' "$1")"
printf '%s\037' "$SOV_ROOT" "$SOV_SITE" "$SOV_HOST"; printf '\036'
eval "$(sed -n '/^cmd_check() {$/,/^}$/p' "$1")"
cmd_check
"#;

fn activation(
    declared: &Declared,
    site: &SiteFile,
    host: Option<&str>,
    path: &Path,
    reading: &mut Reading,
) {
    let Some(host) = reading.ok(host
        .ok_or("an activation script without a host".to_string())
        .and_then(|h| site.host(h)))
    else {
        return;
    };
    if let Ok(bytes) = fs::read(path) {
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            // sh cannot pass a NUL in a word; every other byte it quotes.
            if line.contains(&0) {
                reading.wrong(format!(
                    "activation line {}: a NUL byte: {:?}",
                    n + 1,
                    String::from_utf8_lossy(line)
                ));
            }
        }
    }
    if reading
        .ok(run(Command::new("sh").arg("-n").arg(path)))
        .is_none()
    {
        return;
    }
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return reading.wrong(e.to_string()),
    };
    let Some(out) = reading.ok(run(Command::new("sh")
        .args(["-c", ACTIVATION_READER, "sh"])
        .arg(path)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")))
    else {
        return;
    };
    let records: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .split('\x1e')
        .filter(|r| !r.is_empty())
        .map(|r| r.split('\x1f').map(str::to_string).collect::<Vec<_>>())
        .map(|mut fields| {
            fields.pop();
            fields
        })
        .collect();
    let mut want = vec![vec![
        host.ssh.root.clone(),
        site.name.clone(),
        host.name.clone(),
    ]];
    let image = declared
        .images
        .get(&host.image)
        .cloned()
        .unwrap_or_default();
    for h in &image.health {
        let mut argv = vec![h.name.clone(), h.timeout.to_string()];
        argv.extend(h.command.iter().cloned());
        want.push(argv);
    }
    reading.count("assignments and health checks", records.len());
    reading.same(
        "activation SOV_ROOT, SOV_SITE, SOV_HOST and check_one lines",
        want,
        records,
    );
}
