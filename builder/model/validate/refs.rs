//! Cross-references by name: every VLAN, host, image, region and primary site
//! a site names must exist, and be of the kind the reference needs.

use std::collections::{BTreeSet, HashMap};

use super::Report;
use crate::model::site::{Port, Proto};
use crate::model::source::Step;
use crate::model::{Site, Stack, VlanName};
use crate::path;

pub(super) fn check(stack: &Stack, site: &Site, report: &mut Report<'_>) {
    roles(stack, site, report);
    let vlans: BTreeSet<&VlanName> = site.vlans.iter().map(|v| &v.name).collect();
    let vlan = |report: &mut Report<'_>, name: &VlanName, path: &[Step<'_>]| {
        if !vlans.contains(name) {
            report.at(
                path,
                unknown("VLAN", name.as_str(), vlans.iter().map(|v| v.as_str())),
            );
        }
    };
    vlan(
        report,
        &site.switch.management_vlan,
        path!["switch", "management_vlan"],
    );
    for (i, port) in site.switch.ports.iter().enumerate() {
        match port {
            Port::Access { vlan: v, .. } => vlan(report, v, path!["switch", "ports", i, "vlan"]),
            Port::Trunk {
                vlans: list,
                native_vlan,
                ..
            } => {
                for (j, v) in list.iter().enumerate() {
                    vlan(report, v, path!["switch", "ports", i, "vlans", j]);
                }
                if let Some(native) = native_vlan {
                    if !list.contains(native) {
                        report.at(
                            path!["switch", "ports", i, "native_vlan"],
                            format!("native VLAN `{native}` is not among the trunk's VLANs"),
                        );
                    }
                }
            }
        }
    }
    for (i, allow) in site.firewall.allow.iter().enumerate() {
        vlan(report, &allow.from, path!["firewall", "allow", i, "from"]);
        vlan(report, &allow.to, path!["firewall", "allow", i, "to"]);
        if allow.proto == Proto::Icmp && !allow.ports.is_empty() {
            report.at(
                path!["firewall", "allow", i, "ports"],
                "ICMP has no ports: expected none",
            );
        }
        if allow.proto != Proto::Icmp && allow.ports.is_empty() {
            report.at(
                path!["firewall", "allow", i, "ports"],
                "expected at least one port for TCP or UDP",
            );
        }
    }
    for (i, host) in site.hosts.iter().enumerate() {
        vlan(report, &host.vlan, path!["hosts", i, "vlan"]);
    }
    hosts(stack, site, report);
}

/// At most this many known names are listed after "expected one of": an
/// unknown name in a site of 100,000 hosts gets a line, not a megabyte.
const LISTED: usize = 8;

fn unknown<'a>(what: &str, name: &str, known: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = known.len();
    let listed: Vec<&str> = known.take(LISTED).collect();
    let more = match total - listed.len() {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "unknown {what} `{name}`: expected one of {}{more}",
        listed.join(", ")
    )
}

fn roles(stack: &Stack, site: &Site, report: &mut Report<'_>) {
    let regions = &stack.settings.value.regions;
    if !regions.iter().any(|r| r.name == site.region) {
        report.at(
            path!["region"],
            unknown(
                "region",
                site.region.as_str(),
                regions.iter().map(|r| r.name.as_str()),
            ),
        );
    }
    match (site.role.is_primary(), &site.primary) {
        (true, Some(_)) => report.at(
            path!["primary"],
            "a primary site follows no other site: remove `primary` or set role = \"mirror\"",
        ),
        (false, None) => report.at(path!["role"], "a mirror site must name its `primary` site"),
        (false, Some(primary)) => match stack.site(primary.as_str()) {
            None => report.at(
                path!["primary"],
                unknown(
                    "primary site",
                    primary.as_str(),
                    stack.sites.keys().map(|s| s.as_str()),
                ),
            ),
            Some(p) if !p.role.is_primary() => report.at(
                path!["primary"],
                format!("site `{primary}` is a mirror: expected a primary site"),
            ),
            Some(_) => {}
        },
        (true, None) => {}
    }
}

fn hosts(stack: &Stack, site: &Site, report: &mut Report<'_>) {
    let names: Vec<&str> = site.hosts.iter().map(|h| h.name.as_str()).collect();
    let mut by_name = HashMap::new();
    for host in &site.hosts {
        by_name.entry(host.name.as_str()).or_insert(host);
    }
    let host_ref =
        |report: &mut Report<'_>, name: &str, path: &[Step<'_>], addressed: bool| match by_name
            .get(name)
        {
            None => report.at(path, unknown("host", name, names.iter().copied())),
            Some(h) if addressed && h.ip.is_none() => report.at(
                path,
                format!("host `{name}` has no reserved address (`ip`), which this needs"),
            ),
            Some(_) => {}
        };
    host_ref(
        report,
        site.firewall.host.as_str(),
        path!["firewall", "host"],
        true,
    );
    host_ref(
        report,
        site.dhcp.server.as_str(),
        path!["dhcp", "server"],
        true,
    );
    if site.dns.servers.is_empty() {
        report.at(
            path!["dns", "servers"],
            "expected at least one DNS server host",
        );
    }
    for (i, ns) in site.dns.servers.iter().enumerate() {
        host_ref(report, ns.as_str(), path!["dns", "servers", i], true);
    }
    let mut forwards = BTreeSet::new();
    for (i, fwd) in site.firewall.forwards.iter().enumerate() {
        host_ref(
            report,
            fwd.host.as_str(),
            path!["firewall", "forwards", i, "host"],
            true,
        );
        if fwd.proto == Proto::Icmp {
            report.at(
                path!["firewall", "forwards", i, "proto"],
                "expected tcp or udp",
            );
        }
        if !forwards.insert((fwd.proto, fwd.port)) {
            report.at(
                path!["firewall", "forwards", i, "port"],
                format!("port {} is forwarded twice", fwd.port),
            );
        }
    }
    for (i, host) in site.hosts.iter().enumerate() {
        if stack.image(host.image.as_str()).is_none() {
            report.at(
                path!["hosts", i, "image"],
                unknown(
                    "image",
                    host.image.as_str(),
                    stack.images.keys().map(|n| n.as_str()),
                ),
            );
        }
        if let Some(parent) = &host.vm_on {
            host_ref(report, parent.as_str(), path!["hosts", i, "vm_on"], false);
            if parent == &host.name {
                report.at(path!["hosts", i, "vm_on"], "a VM cannot run on itself");
            }
        }
        if host.ip.is_none() && host.ssh.address.is_none() {
            report.at(
                path!["hosts", i, "ssh"],
                "the host has neither `ip` nor `ssh.address`: expected one to reach it",
            );
        }
    }
}
