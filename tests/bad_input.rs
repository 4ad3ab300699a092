//! Bad input: every broken stack is refused with exit code 2, a message
//! naming the file and the line, and a store left exactly as it was.

mod common;

use std::net::Ipv4Addr;

use common::{snapshot, stderr, Stack};

const SITE: &str = "sites/fra1.toml";
const MARK: &str = "# <- bad";

/// One broken input: how to break the stack, where the error must point,
/// and what the message must say.
struct Case {
    name: &'static str,
    file: String,
    edit: Edit,
    expect: String,
}

enum Edit {
    /// Append text to the file; the line carrying MARK is the one reported.
    Append(String),
    /// Replace the first occurrence of a string; the line it lands on is reported.
    Replace(String, String),
}

/// Values read from the example so that the cases stay valid when the
/// example grows.
struct Example {
    vlan: String,
    vlan_id: i64,
    subnet: String,
    image: String,
    host: String,
    host_mac: String,
    host_ip: String,
    host_key: String,
    port: String,
    free_ips: Vec<Ipv4Addr>,
    pool_ip: Option<Ipv4Addr>,
}

impl Example {
    fn read(stack: &Stack) -> Example {
        let site: toml::Value = toml::from_str(&stack.read(SITE)).unwrap();
        let vlan = &site["vlans"][0];
        let host = &site["hosts"][0];
        let subnet: ipnet::Ipv4Net = vlan["subnet"].as_str().unwrap().parse().unwrap();
        let used: Vec<Ipv4Addr> = site["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h.get("ip").and_then(|i| i.as_str()))
            .chain([vlan["gateway"].as_str().unwrap()])
            .chain(site["switch"].get("management_ip").and_then(|i| i.as_str()))
            .map(|i| i.parse().unwrap())
            .collect();
        let pool = vlan.get("dhcp_pool").map(|p| {
            let start: Ipv4Addr = p["start"].as_str().unwrap().parse().unwrap();
            let end: Ipv4Addr = p["end"].as_str().unwrap().parse().unwrap();
            (start, end)
        });
        let in_pool = |ip: &Ipv4Addr| pool.is_some_and(|(s, e)| s <= *ip && *ip <= e);
        let free_ips: Vec<Ipv4Addr> = subnet
            .hosts()
            .filter(|ip| !used.contains(ip) && !in_pool(ip))
            .take(4)
            .collect();
        assert!(
            free_ips.len() == 4,
            "the first VLAN needs free addresses outside its pool"
        );
        Example {
            vlan: vlan["name"].as_str().unwrap().into(),
            vlan_id: vlan["id"].as_integer().unwrap(),
            subnet: subnet.to_string(),
            image: host["image"].as_str().unwrap().into(),
            host: host["name"].as_str().unwrap().into(),
            host_mac: host["mac"].as_str().unwrap().into(),
            host_ip: host["ip"].as_str().unwrap().into(),
            host_key: host["ssh"]["host_key"].as_str().unwrap().into(),
            port: site["switch"]["ports"][0]["name"].as_str().unwrap().into(),
            free_ips,
            pool_ip: pool.map(|(s, _)| s),
        }
    }

    /// A valid extra host; each override replaces a field (None removes it)
    /// and the first override's line carries MARK.
    fn host(&self, overrides: &[(&str, Option<String>)]) -> String {
        let defaults = [
            ("name", "\"extra\"".to_string()),
            ("vlan", format!("{:?}", self.vlan)),
            ("mac", "\"02:00:00:00:ee:01\"".to_string()),
            ("ip", format!("\"{}\"", self.free_ips[0])),
            ("image", format!("{:?}", self.image)),
        ];
        let mut ssh = format!("host_key = {:?}", self.host_key);
        let mut text = String::from("\n[[hosts]]\n");
        text.push_str(&lines(&defaults, overrides, &mut ssh));
        text.push_str(&format!("\n[hosts.ssh]\n{ssh}\n"));
        text
    }

    /// A valid extra VLAN in the same way.
    fn vlan(&self, overrides: &[(&str, Option<String>)]) -> String {
        let defaults = [
            ("id", "3999".to_string()),
            ("name", "\"extra\"".to_string()),
            ("subnet", "\"10.250.0.0/24\"".to_string()),
            ("gateway", "\"10.250.0.1\"".to_string()),
            ("interface", "\"eth1.99\"".to_string()),
        ];
        let mut unused = String::new();
        format!("\n[[vlans]]\n{}", lines(&defaults, overrides, &mut unused))
    }
}

/// `key = value` lines: overrides first (the first marked), then the
/// defaults not overridden. An override of a key in `extra` (`host_key`)
/// rewrites that text instead.
fn lines(
    defaults: &[(&str, String)],
    overrides: &[(&str, Option<String>)],
    extra: &mut String,
) -> String {
    let mut text = String::new();
    for (i, (key, value)) in overrides.iter().enumerate() {
        let mark = if i == 0 {
            format!(" {MARK}")
        } else {
            String::new()
        };
        if extra.starts_with(&format!("{key} =")) {
            *extra = value
                .as_ref()
                .map_or(String::new(), |v| format!("{key} = {v}{mark}"));
        } else if let Some(value) = value {
            text.push_str(&format!("{key} = {value}{mark}\n"));
        }
    }
    for (key, value) in defaults {
        if overrides.iter().all(|(k, _)| k != key) {
            text.push_str(&format!("{key} = {value}\n"));
        }
    }
    text
}

fn append(file: &str, name: &'static str, text: String, expect: &str) -> Case {
    Case {
        name,
        file: file.into(),
        edit: Edit::Append(text),
        expect: expect.into(),
    }
}

fn replace(file: &str, name: &'static str, from: &str, to: &str, expect: &str) -> Case {
    Case {
        name,
        file: file.into(),
        edit: Edit::Replace(from.into(), to.into()),
        expect: expect.into(),
    }
}

fn cases(ex: &Example, stack: &Stack) -> Vec<Case> {
    let v = |s: &str| Some(s.to_string());
    let image_file = format!("images/{}.toml", ex.image);
    let compose_image = stack
        .read("images/www.toml")
        .lines()
        .find(|l| l.trim_start().starts_with("image = "))
        .expect("www runs containers")
        .to_string();
    let mut all = vec![
        // Syntax and types.
        append(SITE, "unterminated string", format!("\nbroken = \"no end {MARK}\n"), "expected"),
        append(SITE, "missing value", format!("\nbroken = {MARK}\n"), "expected"),
        append(SITE, "unknown top-level key", format!("\nflavour = \"vanilla\" {MARK}\n"), "unknown field `flavour`"),
        append(SITE, "unknown table", format!("\n[bogus] {MARK}\nx = 1\n"), "unknown field `bogus`"),
        append(SITE, "unknown host key", ex.host(&[("colour", v("\"red\""))]), "unknown field `colour`"),
        append(SITE, "vlan id is a string", ex.vlan(&[("id", v("\"ten\""))]), "expected u16"),
        append(SITE, "vlan id negative", ex.vlan(&[("id", v("-1"))]), "u16"),
        append(SITE, "ip is not an address", ex.host(&[("ip", v("\"10.0.0.300\""))]), "invalid"),
        append(SITE, "subnet is not a network", ex.vlan(&[("subnet", v("\"10.250.0.0/33\""))]), "invalid"),
        replace(SITE, "role misspelt", "role = \"primary\"", "role = \"primery\"", "unknown variant `primery`"),
        append(SITE, "port mode unknown", format!("\n[[switch.ports]]\nmode = \"hybrid\" {MARK}\nname = \"Gi9/9\"\n"), "hybrid"),
        append(SITE, "malformed MAC", ex.host(&[("mac", v("\"52:54:00:zz:00:01\""))]), "not a MAC address"),
        append(SITE, "short MAC", ex.host(&[("mac", v("\"52:54:00:00:01\""))]), "not a MAC address"),
        append(SITE, "host name with underscore", ex.host(&[("name", v("\"bad_name\""))]), "not a DNS label"),
        append(SITE, "host name upper case", ex.host(&[("name", v("\"Web\""))]), "not a DNS label"),
        append(SITE, "alias too long", ex.host(&[("aliases", Some(format!("[\"{}\"]", "a".repeat(64))))]), "1 to 63"),
        replace(SITE, "internal domain label starts with a dash", "internal = \"", "internal = \"-bad.", "not a DNS label"),
        // VLANs and subnets.
        append(SITE, "vlan id zero", ex.vlan(&[("id", v("0"))]), "out of range"),
        append(SITE, "vlan id above 4094", ex.vlan(&[("id", v("4095"))]), "out of range"),
        append(SITE, "duplicate vlan id", ex.vlan(&[("id", Some(ex.vlan_id.to_string()))]), "already used by VLAN"),
        append(SITE, "duplicate vlan name", ex.vlan(&[("name", Some(format!("{:?}", ex.vlan)))]), "declared twice"),
        append(SITE, "overlapping subnet", ex.vlan(&[("subnet", Some(format!("{:?}", ex.subnet))), ("gateway", Some(format!("\"{}\"", ex.free_ips[1])))]), "overlaps"),
        append(SITE, "subnet with host bits", ex.vlan(&[("subnet", v("\"10.250.0.5/24\""))]), "host bits"),
        append(SITE, "gateway outside subnet", ex.vlan(&[("gateway", v("\"10.251.0.1\""))]), "not a usable address"),
        append(SITE, "pool outside subnet", ex.vlan(&[("dhcp_pool", v("{ start = \"10.250.0.100\", end = \"10.250.1.10\" }"))]), "outside subnet"),
        append(SITE, "pool backwards", ex.vlan(&[("dhcp_pool", v("{ start = \"10.250.0.200\", end = \"10.250.0.100\" }"))]), "after it ends"),
        // Hosts.
        append(SITE, "reservation outside its subnet", ex.host(&[("ip", v("\"192.0.2.77\""))]), "outside subnet"),
        append(SITE, "duplicate host name", ex.host(&[("name", Some(format!("{:?}", ex.host)))]), "already used by host"),
        append(SITE, "duplicate MAC", ex.host(&[("mac", Some(format!("{:?}", ex.host_mac)))]), "already used by host"),
        append(SITE, "duplicate IP", ex.host(&[("ip", Some(format!("{:?}", ex.host_ip)))]), "already used by"),
        append(SITE, "unknown VLAN", ex.host(&[("vlan", v("\"nowhere\""))]), "unknown VLAN `nowhere`"),
        append(SITE, "unknown image", ex.host(&[("image", v("\"no-such-image\""))]), "unknown image `no-such-image`"),
        append(SITE, "unknown vm host", ex.host(&[("vm_on", v("\"ghost\""))]), "unknown host `ghost`"),
        append(SITE, "host key not a key", ex.host(&[("host_key", v("\"not a key\""))]), "OpenSSH public key"),
        // Firewall and services.
        append(SITE, "forward to unknown host", format!("\n[[firewall.forwards]]\nproto = \"tcp\"\nport = 8080\nhost = \"ghost\" {MARK}\n"), "unknown host `ghost`"),
        append(
            SITE,
            "forward to host without address",
            format!(
                "\n[[firewall.forwards]]\nproto = \"tcp\"\nport = 8081\nhost = \"noaddr\" {MARK}\n{}",
                ex.host(&[("name", v("\"noaddr\"")), ("ip", None), ("host_key", Some(format!("{:?}\naddress = \"192.0.2.1\"", ex.host_key)))]).replace(MARK, "")
            ),
            "no reserved address",
        ),
        append(SITE, "allow from unknown VLAN", format!("\n[[firewall.allow]]\nfrom = \"guests\" {MARK}\nto = {:?}\nproto = \"tcp\"\nports = [22]\n", ex.vlan), "unknown VLAN `guests`"),
        append(SITE, "allow tcp without ports", format!("\n[[firewall.allow]]\nfrom = {:?}\nto = {:?}\nproto = \"tcp\"\nports = [] {MARK}\n", ex.vlan, ex.vlan), "at least one port"),
        append(SITE, "trunk with unknown VLAN", format!("\n[[switch.ports]]\nmode = \"trunk\"\nname = \"Gi9/9\"\nvlans = [{:?}, \"ghost\"] {MARK}\n", ex.vlan), "unknown VLAN `ghost`"),
        append(SITE, "duplicate switch port", format!("\n[[switch.ports]]\nmode = \"access\"\nname = {:?} {MARK}\nvlan = {:?}\n", ex.port, ex.vlan), "declared twice"),
        // DNS.
        append(SITE, "record with invalid owner", format!("\n[[records]]\nzone = \"internal\"\nname = \"bad_owner\" {MARK}\ntype = \"A\"\nvalue = \"10.0.0.1\"\n"), "invalid owner name"),
        append(SITE, "A record with a name as value", format!("\n[[records]]\nzone = \"internal\"\nname = \"x\"\ntype = \"A\"\nvalue = \"not-an-ip\" {MARK}\n"), "not an IPv4 address"),
        append(SITE, "MX without preference", format!("\n[[records]]\nzone = \"public\"\nname = \"@\"\ntype = \"MX\"\nvalue = \"mail.example.org.\" {MARK}\n"), "preference"),
        append(SITE, "CNAME beside an A record", format!("\n[[records]]\nzone = \"internal\"\nname = {:?}\ntype = \"CNAME\" {MARK}\nvalue = \"elsewhere\"\n", ex.host), "CNAME beside other data"),
        append(SITE, "CNAME at the apex", format!("\n[[records]]\nzone = \"internal\"\nname = \"@\"\ntype = \"CNAME\" {MARK}\nvalue = \"elsewhere.example.org.\"\n"), "apex"),
        append(SITE, "record type unknown", format!("\n[[records]]\nzone = \"internal\"\nname = \"x\"\ntype = \"SPF\" {MARK}\nvalue = \"v=spf1\"\n"), "unknown variant `SPF`"),
        // Roles and references across files.
        replace(SITE, "unknown region", "region = \"", "region = \"atlantis-", "unknown region"),
        replace("sites/nyc1.toml", "mirror of unknown primary", "primary = \"fra1\"", "primary = \"lon9\"", "unknown primary site `lon9`"),
        replace("sites/nyc1.toml", "mirror without primary", "role = \"mirror\"\nprimary = \"fra1\"", "role = \"mirror\"", "must name its `primary`"),
        replace(SITE, "primary naming a primary", "role = \"primary\"", "role = \"primary\"\nprimary = \"nyc1\" # <- bad", "follows no other site"),
        // Images.
        replace("images/www.toml", "unpinned container image", &compose_image, "image = \"docker.io/library/caddy:2.8\"", "is not pinned"),
        replace("images/www.toml", "digest too short", &compose_image, "image = \"caddy:2.8@sha256:abc123\"", "is not pinned"),
        append(&image_file, "unknown image key", format!("\nflavour = 1 {MARK}\n"), "unknown field `flavour`"),
        append("images/www.toml", "bundle file escapes the bundle", format!("\n[[files]]\npath = \"../etc/passwd\" {MARK}\ntemplate = \"x.j2\"\n"), "not a relative path"),
        append("images/www.toml", "bundle template missing", format!("\n[[files]]\npath = \"extra.conf\"\ntemplate = \"missing.j2\" {MARK}\n"), "missing.j2"),
        append("images/www.toml", "container secret not declared", format!("\n[[containers]]\nname = \"sidecar\"\nimage = \"busybox:1.36@sha256:{}\"\nsecrets = [\"nope\"] {MARK}\n", "0".repeat(64)), "not declared"),
        // Stack settings.
        append("sites/stack.toml", "stack setting unknown", format!("\nmotd = \"hi\" {MARK}\n"), "unknown field `motd`"),
        replace("sites/stack.toml", "operator key malformed", "ssh_key = \"ssh-", "ssh_key = \"xx ssh-", "OpenSSH public key"),
        // Templates.
        append("templates/dns/zone.j2", "template reads an undefined variable", format!("{{{{ zone.no_such_field }}}} {MARK}\n"), "undefined"),
        append("templates/firewall/nftables.j2", "template syntax error", format!("{{% if %}} {MARK}\n"), "syntax error"),
        append("templates/cloud-init/user-data.j2", "template output not YAML", format!("key: [unclosed {MARK}\n"), "not valid YAML"),
        append("templates/firewall/nftables.j2", "raw value in a template", format!("{{{{ wan_interface }}}} {MARK}\n"), "without an encoder"),
        append("templates/firewall/nftables.j2", "encoder of another language", format!("{{{{ wan_interface | json }}}} {MARK}\n"), "cannot stand in a nft file"),
        append("templates/dhcp/kea-dhcp4.json.j2", "template output not JSON", format!("}} {MARK}\n"), "not valid JSON"),
    ];
    if let Some(pool_ip) = ex.pool_ip {
        all.push(append(
            SITE,
            "reservation inside the DHCP pool",
            ex.host(&[("ip", Some(format!("\"{pool_ip}\"")))]),
            "lies in the DHCP pool",
        ));
    }
    all
}

fn apply(stack: &Stack, case: &Case) -> Option<usize> {
    let before = stack.read(&case.file);
    let after = match &case.edit {
        Edit::Append(text) => format!("{before}{text}"),
        Edit::Replace(from, to) => {
            assert!(
                before.contains(from.as_str()),
                "{}: `{from}` not in {}",
                case.name,
                case.file
            );
            let at = before.find(from.as_str()).unwrap();
            let line = before[..at].matches('\n').count() + 1;
            let after = before.replacen(from.as_str(), to, 1);
            stack.write(&case.file, &after);
            let marked = after.lines().position(|l| l.contains(MARK)).map(|i| i + 1);
            return marked.or(Some(line));
        }
    };
    stack.write(&case.file, &after);
    after.lines().position(|l| l.contains(MARK)).map(|i| i + 1)
}

/// Templates report the line the parser or renderer names; data files the
/// marked line. Output-format errors name the template file only.
fn expects_line(case: &Case) -> bool {
    !case.file.starts_with("templates/")
        || case.expect == "undefined"
        || case.expect == "syntax error"
}

#[test]
fn every_broken_input_is_refused_with_its_file_and_line_and_touches_nothing() {
    let stack = Stack::example();
    let first = stack.sov(&["build"]);
    assert!(
        first.status.success(),
        "the example must build: {}",
        stderr(&first)
    );
    let state_before = snapshot(&stack.state());
    let ex = Example::read(&stack);
    let cases = cases(&ex, &stack);
    assert!(cases.len() >= 40, "only {} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let original = stack.read(&case.file);
        let line = apply(&stack, case);
        let out = stack.sov(&["build"]);
        let err = stderr(&out);
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!("exit code {:?}, expected 2", out.status.code()));
        }
        if !err.contains(case.expect.as_str()) {
            problems.push(format!("message lacks `{}`", case.expect));
        }
        let located = match (expects_line(case), line) {
            (true, Some(line)) => format!("{}:{line}:", case.file),
            _ => case.file.clone(),
        };
        if !err.contains(&located) {
            problems.push(format!("message does not point at `{located}`"));
        }
        if snapshot(&stack.state()) != state_before {
            problems.push("the state directory changed".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{err}", case.name, problems.join("; ")));
        }
        stack.write(&case.file, &original);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn all_problems_of_a_run_are_reported_together() {
    let stack = Stack::example();
    let ex = Example::read(&stack);
    let site = stack.read(SITE);
    let broken = format!(
        "{site}{}{}",
        ex.host(&[("mac", Some(format!("{:?}", ex.host_mac)))]),
        ex.vlan(&[("id", Some("0".to_string()))])
    );
    stack.write(SITE, &broken);
    let www = stack.read("images/www.toml");
    let pinned = www
        .lines()
        .find(|l| l.trim_start().starts_with("image = "))
        .unwrap();
    stack.write(
        "images/www.toml",
        &www.replacen(pinned, "image = \"caddy:latest\"", 1),
    );
    let out = stack.sov(&["build"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "already used by host",
        "out of range",
        "is not pinned",
        "3 problems found",
    ] {
        assert!(err.contains(needle), "`{needle}` missing from:\n{err}");
    }
    assert!(
        !stack.state().exists(),
        "nothing may be written on bad input"
    );
}

#[test]
fn usage_errors_exit_with_two() {
    let stack = Stack::example();
    let out = stack.sov(&["build", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = stack.sov(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
