//! Every artifact of the example stack, checked by the real program that will
//! read it: nft, named-checkzone and knot, kea-dhcp4, mtools and cloud-init,
//! docker-compose, a Cisco IOS parser, sh and shellcheck. One test per kind;
//! each reports every failing artifact at once, with the tool's own output.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use common::{artifacts, require, Artifact, Stack};

/// The parser of the switch test, run with the venv `.ci/install-deps` makes.
const IOS_PYTHON: &str = "/opt/sov-test-venv/bin/python";

// ---- what the tests read from the site file ------------------------------
//
// Parsed here with `toml`, independently of sov's own model, so that a bug
// in the model cannot hide the same bug in the artifact.

#[derive(Debug, Deserialize)]
struct Site {
    vlans: Vec<Vlan>,
    switch: Switch,
    hosts: Vec<Host>,
}

#[derive(Debug, Deserialize)]
struct Vlan {
    id: u16,
    name: String,
    subnet: String,
    gateway: Ipv4Addr,
    interface: String,
}

#[derive(Debug, Deserialize)]
struct Switch {
    management_vlan: String,
    management_ip: Ipv4Addr,
    ports: Vec<Port>,
}

#[derive(Debug, Deserialize)]
struct Port {
    name: String,
    mode: String,
    vlan: Option<String>,
    #[serde(default)]
    vlans: Vec<String>,
    native_vlan: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Host {
    name: String,
    vlan: String,
    mac: String,
    ip: Option<Ipv4Addr>,
}

impl Site {
    fn of(stack: &Stack, artifact: &Artifact) -> Site {
        let rel = format!("sites/{}.toml", artifact.site);
        toml::from_str(&stack.read(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    fn vlan(&self, name: &str) -> &Vlan {
        self.vlans
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("the site has no VLAN `{name}`"))
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("the site has no host `{name}`"))
    }
}

impl Vlan {
    fn subnet(&self) -> Ipv4Net {
        self.subnet.parse().expect("a VLAN subnet in CIDR form")
    }
}

// ---- running tools and collecting failures --------------------------------

/// The example stack, built, and its artifacts of one kind (at least one).
fn built(kind: &str) -> (Stack, Vec<Artifact>) {
    let stack = Stack::example();
    let report = stack.build_json();
    let of_kind: Vec<Artifact> = artifacts(&report)
        .into_iter()
        .filter(|a| a.kind == kind)
        .collect();
    assert!(
        !of_kind.is_empty(),
        "the example stack has no {kind} artifact to validate"
    );
    (stack, of_kind)
}

/// Whether a tool that the suite does not require is installed.
fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
        .status()
        .is_ok_and(|s| s.success())
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

fn output_of(out: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every problem found in the artifacts of one kind, reported together.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, artifact: &Artifact, problem: impl Display) {
        self.0.push(format!(
            "{} ({}):\n{problem}",
            artifact.name,
            artifact.path.display()
        ));
    }

    /// Runs a tool on an artifact; returns its output when it succeeded, and
    /// records the command and everything it printed when it did not.
    fn run(&mut self, artifact: &Artifact, cmd: &mut Command) -> Option<Output> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
        if out.status.success() {
            Some(out)
        } else {
            self.add(
                artifact,
                format!("`{}` failed\n{}", describe(cmd), output_of(&out)),
            );
            None
        }
    }

    fn assert_none(self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{} {what}:\n\n{}",
            self.0.len(),
            self.0.join("\n\n")
        );
    }
}

/// Runs `check` on every artifact at once (the tools are slow to start and
/// independent of each other) and gathers the failures in artifact order.
fn check_all(artifacts: &[Artifact], check: impl Fn(&Artifact, &mut Failures) + Sync) -> Failures {
    let found: Vec<Failures> = thread::scope(|scope| {
        let running: Vec<_> = artifacts
            .iter()
            .map(|artifact| {
                let check = &check;
                scope.spawn(move || {
                    let mut failures = Failures::default();
                    check(artifact, &mut failures);
                    failures
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    Failures(found.into_iter().flat_map(|f| f.0).collect())
}

// ---- firewall ------------------------------------------------------------

#[test]
fn every_firewall_ruleset_passes_nft_check() {
    if !(require("nft") && require("unshare")) {
        return;
    }
    let (_stack, rulesets) = built("firewall");
    check_all(&rulesets, |fw, failures| {
        // `nft -c` still needs CAP_NET_ADMIN; a private user and network
        // namespace gives it without touching the machine's own ruleset.
        failures.run(
            fw,
            Command::new("unshare")
                .args(["-rn", "nft", "-c", "-f"])
                .arg(&fw.path),
        );
    })
    .assert_none("firewall rulesets rejected by nft -c");
}

// ---- dns -----------------------------------------------------------------

#[test]
fn every_zone_passes_named_checkzone_and_knot() {
    if !(require("named-checkzone") && require("knotc")) {
        return;
    }
    let (_stack, zones) = built("dns");
    check_all(&zones, |zone, failures| {
        let prefix = format!("{}-zone-", zone.site);
        let Some(origin) = zone.name.strip_prefix(&prefix) else {
            failures.add(
                zone,
                format!("a zone artifact's name must start with {prefix}"),
            );
            return;
        };
        // Names that are not host names fail; in-zone MX/SRV/NS targets must
        // have addresses; `local` keeps named-checkzone off the network.
        failures.run(
            zone,
            Command::new("named-checkzone")
                .args(["-k", "fail", "-M", "fail", "-S", "fail", "-i", "local"])
                .arg(origin)
                .arg(&zone.path),
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let conf = dir.path().join("knot.conf");
        fs::write(
            &conf,
            format!(
                "server:\n    rundir: {rundir:?}\n\
                 database:\n    storage: {rundir:?}\n\
                 zone:\n  - domain: {origin:?}\n    file: {file:?}\n",
                rundir = dir.path().display().to_string(),
                file = zone.path.display().to_string(),
            ),
        )
        .expect("write knot.conf");
        failures.run(
            zone,
            Command::new("knotc")
                .arg("-c")
                .arg(&conf)
                .args(["zone-check", origin]),
        );
    })
    .assert_none("zones rejected");
}

// ---- dhcp ----------------------------------------------------------------

/// Kea's reservations for a subnet: (hw-address, ip-address).
fn reservations(list: &Value) -> BTreeSet<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_ascii_lowercase();
            (field("hw-address"), field("ip-address"))
        })
        .collect()
}

/// Creates each `NAME=ADDRESS/PREFIX` interface (a veth: this kernel has no
/// dummy links), then runs the rest of the arguments.
const WITH_INTERFACES: &str = r#"
n=0
while [ "$1" != "--" ]; do
    n=$((n + 1))
    name=${1%%=*}
    ip link add "$name" type veth peer name "sovpeer$n" &&
        ip link set "$name" up && ip link set "sovpeer$n" up &&
        ip addr add "${1#*=}" dev "$name" || exit 1
    shift
done
shift
exec "$@"
"#;

#[test]
fn every_dhcp_config_passes_kea_and_reserves_every_host() {
    for tool in ["kea-dhcp4", "unshare", "ip"] {
        if !require(tool) {
            return;
        }
    }
    let (stack, configs) = built("dhcp");
    check_all(&configs, |config, failures| {
        let site = Site::of(&stack, config);
        // `kea-dhcp4 -t` insists that the interfaces it serves exist. In a
        // private network namespace they do, named and addressed as on the
        // site's firewall: each VLAN's interface holding its gateway.
        let interfaces = site
            .vlans
            .iter()
            .map(|v| format!("{}={}/{}", v.interface, v.gateway, v.subnet().prefix_len()));
        failures.run(
            config,
            Command::new("unshare")
                .args(["-rn", "sh", "-c", WITH_INTERFACES, "sh"])
                .args(interfaces)
                .args(["--", "kea-dhcp4", "-t"])
                .arg(&config.path),
        );
        let kea: Value = match serde_json::from_slice(&fs::read(&config.path).expect("read")) {
            Ok(v) => v,
            Err(e) => {
                failures.add(config, format!("not JSON: {e}"));
                return;
            }
        };
        let global = reservations(&kea["Dhcp4"]["reservations"]);
        for host in &site.hosts {
            let Some(ip) = host.ip else { continue };
            let subnet = site.vlan(&host.vlan).subnet().to_string();
            let scope = kea["Dhcp4"]["subnet4"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["subnet"].as_str() == Some(subnet.as_str()));
            let Some(scope) = scope else {
                failures.add(config, format!("no subnet4 {subnet} (VLAN {})", host.vlan));
                continue;
            };
            let wanted = (host.mac.to_ascii_lowercase(), ip.to_string());
            if !reservations(&scope["reservations"]).contains(&wanted) && !global.contains(&wanted)
            {
                failures.add(
                    config,
                    format!(
                        "host {} has no reservation of {} for {} in subnet {subnet}",
                        host.name, ip, host.mac
                    ),
                );
            }
        }
    })
    .assert_none("DHCP configs rejected or incomplete");
}

// ---- cloud-init ----------------------------------------------------------

/// Runs an mtools command on a seed image; mtools checks disk geometry that
/// a plain FAT image need not have, so that check is off.
fn mtools(tool: &str, image: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(image);
    cmd
}

fn yaml(text: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// What the seed's network-config must say for this host: version 2, an
/// interface matched by the host's MAC and, for a host with a reservation,
/// that address in the VLAN's prefix.
fn check_network_config(config: &Value, site: &Site, host: &Host) -> Result<(), String> {
    let network = config.get("network").unwrap_or(config);
    if network["version"].as_u64() != Some(2) {
        return Err(format!("version is {}, not 2", network["version"]));
    }
    let mac = host.mac.to_ascii_lowercase();
    let ethernets = network["ethernets"]
        .as_object()
        .ok_or("no `ethernets` mapping")?;
    let (name, nic) = ethernets
        .iter()
        .find(|(_, nic)| {
            nic["match"]["macaddress"]
                .as_str()
                .is_some_and(|m| m.to_ascii_lowercase() == mac)
        })
        .ok_or(format!("no ethernet with `match: macaddress: {mac}`"))?;
    if let Some(ip) = host.ip {
        let wanted = format!("{ip}/{}", site.vlan(&host.vlan).subnet().prefix_len());
        let addresses: Vec<&str> = nic["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !addresses.contains(&wanted.as_str()) {
            return Err(format!(
                "ethernet {name} has addresses {addresses:?}, not the reserved {wanted}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_seed_image_is_a_cidata_volume_that_cloud_init_accepts() {
    for tool in ["mtype", "mlabel", "blkid", "cloud-init"] {
        if !require(tool) {
            return;
        }
    }
    let (stack, seeds) = built("cloud-init");
    check_all(&seeds, |seed, failures| {
        let host_name = seed
            .host
            .as_deref()
            .expect("a seed image belongs to a host");
        let site = Site::of(&stack, seed);
        let host = site.host(host_name);

        if let Some(out) = failures.run(seed, mtools("mlabel", &seed.path).args(["-s", "::"])) {
            let said = String::from_utf8_lossy(&out.stdout);
            if said.split_whitespace().last() != Some("cidata") {
                failures.add(seed, format!("mlabel -s says {said:?}, not label cidata"));
            }
        }
        let probe = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&seed.path)
            .output()
            .expect("run blkid");
        let said = String::from_utf8_lossy(&probe.stdout);
        if !said.lines().any(|l| l == "LABEL=cidata") || !said.lines().any(|l| l == "TYPE=vfat") {
            failures.add(
                seed,
                format!(
                    "blkid -p does not see a vfat volume labelled cidata\n{}",
                    output_of(&probe)
                ),
            );
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let mut files = BTreeMap::new();
        for file in ["user-data", "meta-data", "network-config"] {
            let Some(out) =
                failures.run(seed, mtools("mtype", &seed.path).arg(format!("::{file}")))
            else {
                continue;
            };
            fs::write(dir.path().join(file), &out.stdout).expect("write extracted file");
            files.insert(file, out.stdout);
        }

        if files.contains_key("user-data") {
            failures.run(
                seed,
                Command::new("cloud-init")
                    .args(["schema", "--config-file"])
                    .arg(dir.path().join("user-data")),
            );
        }
        if let Some(text) = files.get("meta-data") {
            match yaml(text) {
                Ok(meta)
                    if meta["instance-id"]
                        .as_str()
                        .is_some_and(|id| !id.is_empty()) => {}
                Ok(meta) => failures.add(seed, format!("meta-data has no instance-id: {meta}")),
                Err(e) => failures.add(seed, format!("meta-data is not YAML: {e}")),
            }
        }
        if let Some(text) = files.get("network-config") {
            let checked = yaml(text).and_then(|config| check_network_config(&config, &site, host));
            if let Err(e) = checked {
                failures.add(
                    seed,
                    format!(
                        "network-config of host {host_name}: {e}\n{}",
                        String::from_utf8_lossy(text)
                    ),
                );
            }
        }
    })
    .assert_none("seed images rejected");
}

// ---- compose -------------------------------------------------------------

/// Unpacks a bundle the way a host does: `zstd -dc | tar -x`.
fn unpack(bundle: &Artifact, into: &Path, failures: &mut Failures) -> bool {
    let mut zstd = Command::new("zstd")
        .arg("-dc")
        .arg(&bundle.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zstd");
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(zstd.stdout.take().expect("zstd stdout"))
        .output()
        .expect("run tar");
    let zstd = zstd.wait_with_output().expect("wait for zstd");
    for (what, out) in [("zstd -dc", &zstd), ("tar -x", &tar)] {
        if !out.status.success() {
            failures.add(bundle, format!("`{what}` failed\n{}", output_of(out)));
            return false;
        }
    }
    true
}

/// `name[:tag]@sha256:<64 lower-case hex>`.
fn pinned(image: &str) -> bool {
    image.split_once("@sha256:").is_some_and(|(name, digest)| {
        !name.is_empty()
            && digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The bundle-relative source of a bind mount (`./caddy/Caddyfile:...`).
fn bundle_source(volume: &Value) -> Option<String> {
    let source = match volume {
        Value::String(short) => short.split(':').next()?.to_string(),
        Value::Object(long) => long.get("source")?.as_str()?.to_string(),
        _ => return None,
    };
    (source.starts_with("./") || source.starts_with("../")).then_some(source)
}

#[test]
fn every_bundle_passes_docker_compose_and_pins_its_images() {
    for tool in ["zstd", "tar", "docker-compose"] {
        if !require(tool) {
            return;
        }
    }
    let (_stack, bundles) = built("compose");
    check_all(&bundles, |bundle, failures| {
        let dir = tempfile::tempdir().expect("temp dir");
        if !unpack(bundle, dir.path(), failures) {
            return;
        }
        let compose_file = dir.path().join("compose.yaml");
        let Ok(text) = fs::read(&compose_file) else {
            failures.add(bundle, "the bundle has no compose.yaml");
            return;
        };
        // Secrets stay absent, as on the management machine, where they are
        // never plaintext: docker-compose 1.29 `config` opens neither a
        // secret's `file:` nor a bind mount's source, so it needs none of
        // /run/sov/secrets/*. (It does read `env_file:`, which is why a
        // secret must not be passed that way.) A clean environment keeps
        // the caller's COMPOSE_* and DOCKER_* variables out.
        let checked = failures.run(
            bundle,
            Command::new("docker-compose")
                .args(["-f", "compose.yaml", "config", "-q"])
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("HOME", dir.path()),
        );
        if let Some(out) = checked {
            let warnings = String::from_utf8_lossy(&out.stderr);
            if warnings.contains("variable is not set") {
                let why = "compose.yaml interpolates unset variables (`$$` is a literal `$`)";
                failures.add(bundle, format!("{why}:\n{warnings}"));
            }
        }

        let compose = match yaml(&text) {
            Ok(v) => v,
            Err(e) => {
                failures.add(bundle, format!("compose.yaml is not YAML: {e}"));
                return;
            }
        };
        let Some(services) = compose["services"].as_object().filter(|s| !s.is_empty()) else {
            failures.add(bundle, "compose.yaml has no services");
            return;
        };
        // Secrets reach a host's tmpfs at deploy time; the bundle only names
        // where they will be (a path inside it would put a value in the store).
        for (name, secret) in compose["secrets"].as_object().into_iter().flatten() {
            let file = secret["file"].as_str().unwrap_or_default();
            if !file.starts_with("/run/sov/secrets/") {
                failures.add(
                    bundle,
                    format!("secret {name} is not read from /run/sov/secrets/: {secret}"),
                );
            }
        }
        for (name, service) in services {
            match service["image"].as_str() {
                Some(image) if pinned(image) => {}
                Some(image) => failures.add(
                    bundle,
                    format!("service {name}: image {image} is not pinned by @sha256:<digest>"),
                ),
                None => failures.add(bundle, format!("service {name} has no image")),
            }
            for volume in service["volumes"].as_array().into_iter().flatten() {
                if let Some(source) = bundle_source(volume) {
                    if !dir.path().join(&source).exists() {
                        failures.add(
                            bundle,
                            format!("service {name} mounts {source}, which the bundle lacks"),
                        );
                    }
                }
            }
        }
    })
    .assert_none("compose bundles rejected");
}

// ---- switch --------------------------------------------------------------

#[test]
fn every_switch_port_carries_the_site_vlans() {
    if !require(IOS_PYTHON) {
        return;
    }
    let (stack, configs) = built("switch");
    let script = common::repo().join("tests/ios_ports.py");
    check_all(&configs, |config, failures| {
        let Some(out) = failures.run(
            config,
            Command::new(IOS_PYTHON).arg(&script).arg(&config.path),
        ) else {
            return;
        };
        let parsed: Value = serde_json::from_slice(&out.stdout).expect("ios_ports.py prints JSON");
        let site = Site::of(&stack, config);
        let id = |name: &str| u64::from(site.vlan(name).id);

        for vlan in &site.vlans {
            let declared = &parsed["vlans"][vlan.id.to_string()];
            if declared.as_str() != Some(vlan.name.as_str()) {
                failures.add(
                    config,
                    format!(
                        "VLAN {} should be declared with `name {}`, the parser sees {declared}",
                        vlan.id, vlan.name
                    ),
                );
            }
        }

        let interfaces = parsed["interfaces"].as_object().expect("interfaces");
        for port in &site.switch.ports {
            let Some(seen) = interfaces.get(&port.name) else {
                failures.add(config, format!("port {} is not configured", port.name));
                continue;
            };
            let mut expected = serde_json::Map::new();
            expected.insert("mode".into(), port.mode.clone().into());
            match port.mode.as_str() {
                "access" => {
                    let vlan = port.vlan.as_deref().expect("an access port has a vlan");
                    expected.insert("access_vlan".into(), id(vlan).into());
                }
                "trunk" => {
                    let mut ids: Vec<u64> = port.vlans.iter().map(|v| id(v)).collect();
                    ids.sort_unstable();
                    expected.insert("allowed_vlans".into(), ids.into());
                    if let Some(native) = &port.native_vlan {
                        expected.insert("native_vlan".into(), id(native).into());
                    }
                }
                other => panic!("port {}: unknown mode {other}", port.name),
            }
            for (key, want) in &expected {
                if &seen[key] != want {
                    failures.add(
                        config,
                        format!(
                            "port {}: {key} should be {want}, the parser sees {}",
                            port.name, seen[key]
                        ),
                    );
                }
            }
        }

        let site_ports: BTreeSet<&str> =
            site.switch.ports.iter().map(|p| p.name.as_str()).collect();
        for (name, seen) in interfaces {
            let switched = seen["mode"] != "routed";
            if switched && !site_ports.contains(name.as_str()) {
                failures.add(
                    config,
                    format!("interface {name} is a switchport the site does not declare: {seen}"),
                );
            }
        }

        let mgmt = site.vlan(&site.switch.management_vlan);
        let svi = format!("Vlan{}", mgmt.id);
        let want = serde_json::json!({
            "address": site.switch.management_ip.to_string(),
            "netmask": mgmt.subnet().netmask().to_string(),
        });
        let seen = interfaces.get(&svi).map(|i| &i["ipv4"]);
        if seen != Some(&want) {
            failures.add(
                config,
                format!(
                    "interface {svi} should have ip address {} {}, the parser sees {seen:?}",
                    want["address"], want["netmask"]
                ),
            );
        }
    })
    .assert_none("switch configs that differ from their site");
}

// ---- activation ----------------------------------------------------------

#[test]
fn every_activation_script_parses_as_sh() {
    if !require("sh") {
        return;
    }
    let (_stack, scripts) = built("activation");
    // shellcheck is not among the packages CI installs: it adds its findings
    // where it is present.
    let shellcheck = installed("shellcheck");
    if !shellcheck {
        eprintln!("shellcheck not installed: only `sh -n` checks the activation scripts");
    }
    check_all(&scripts, |script, failures| {
        failures.run(script, Command::new("sh").arg("-n").arg(&script.path));
        if shellcheck {
            failures.run(script, Command::new("shellcheck").arg(&script.path));
        }
    })
    .assert_none("activation scripts rejected");
}
