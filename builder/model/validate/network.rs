//! VLANs, subnets, addresses and MACs of one site: ranges, overlaps and
//! duplicates.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Report;
use crate::model::Site;
use crate::path;

pub(super) fn check(site: &Site, report: &mut Report<'_>) {
    vlans(site, report);
    hosts(site, report);
    switch_ports(site, report);
}

/// Usable host addresses: inside the subnet, not its network or broadcast
/// address (a /31 or /32 has no such reserved addresses).
fn usable(subnet: ipnet::Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip)
        && (subnet.prefix_len() >= 31 || (ip != subnet.network() && ip != subnet.broadcast()))
}

fn vlans(site: &Site, report: &mut Report<'_>) {
    let mut ids = BTreeMap::new();
    let mut names = BTreeMap::new();
    for (i, vlan) in site.vlans.iter().enumerate() {
        if !(1..=4094).contains(&vlan.id) {
            report.at(
                path!["vlans", i, "id"],
                format!("VLAN id {} is out of range: expected 1 to 4094", vlan.id),
            );
        }
        if let Some(first) = ids.insert(vlan.id, i) {
            report.at(
                path!["vlans", i, "id"],
                format!(
                    "VLAN id {} is already used by VLAN `{}`",
                    vlan.id, site.vlans[first].name
                ),
            );
        }
        if names.insert(&vlan.name, i).is_some() {
            report.at(
                path!["vlans", i, "name"],
                format!("VLAN name `{}` is declared twice", vlan.name),
            );
        }
        if vlan.subnet.network() != vlan.subnet.addr() {
            report.at(
                path!["vlans", i, "subnet"],
                format!(
                    "subnet {} has host bits set: expected {}",
                    vlan.subnet,
                    vlan.subnet.trunc()
                ),
            );
        }
        if !usable(vlan.subnet, vlan.gateway) {
            report.at(
                path!["vlans", i, "gateway"],
                format!(
                    "gateway {} is not a usable address of subnet {}",
                    vlan.gateway, vlan.subnet
                ),
            );
        }
        if let Some(pool) = vlan.dhcp_pool {
            for (key, ip) in [("start", pool.start), ("end", pool.end)] {
                if !usable(vlan.subnet, ip) {
                    report.at(
                        path!["vlans", i, "dhcp_pool", key],
                        format!("DHCP pool {key} {ip} is outside subnet {}", vlan.subnet),
                    );
                }
            }
            if pool.start > pool.end {
                report.at(
                    path!["vlans", i, "dhcp_pool"],
                    format!(
                        "DHCP pool starts at {} after it ends at {}",
                        pool.start, pool.end
                    ),
                );
            }
            if pool.contains(vlan.gateway) {
                report.at(
                    path!["vlans", i, "dhcp_pool"],
                    format!("DHCP pool contains the gateway {}", vlan.gateway),
                );
            }
        }
        for (j, other) in site.vlans.iter().enumerate().take(i) {
            if vlan.subnet.contains(&other.subnet.network())
                || other.subnet.contains(&vlan.subnet.network())
            {
                report.at(
                    path!["vlans", i, "subnet"],
                    format!(
                        "subnet {} overlaps subnet {} of VLAN `{}`",
                        vlan.subnet, other.subnet, site.vlans[j].name
                    ),
                );
            }
        }
    }
}

fn hosts(site: &Site, report: &mut Report<'_>) {
    let mut names = BTreeMap::new();
    let mut macs = BTreeMap::new();
    let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for vlan in &site.vlans {
        ips.insert(vlan.gateway, format!("the gateway of VLAN `{}`", vlan.name));
    }
    ips.insert(
        site.switch.management_ip,
        format!("the switch `{}`", site.switch.name),
    );
    for (i, host) in site.hosts.iter().enumerate() {
        if let Some(first) = names.insert(&host.name, i) {
            report.at(
                path!["hosts", i, "name"],
                format!(
                    "host name `{}` is already used by host number {}",
                    host.name,
                    first + 1
                ),
            );
        }
        if let Some(first) = macs.insert(host.mac, i) {
            report.at(
                path!["hosts", i, "mac"],
                format!(
                    "MAC {} is already used by host `{}`",
                    host.mac, site.hosts[first].name
                ),
            );
        }
        let Some(ip) = host.ip else { continue };
        if let Some(owner) = ips.insert(ip, format!("host `{}`", host.name)) {
            report.at(
                path!["hosts", i, "ip"],
                format!("address {ip} is already used by {owner}"),
            );
        }
        let Some(vlan) = site.vlans.iter().find(|v| v.name == host.vlan) else {
            continue;
        };
        if !usable(vlan.subnet, ip) {
            report.at(
                path!["hosts", i, "ip"],
                format!(
                    "reserved address {ip} is outside subnet {} of VLAN `{}`",
                    vlan.subnet, vlan.name
                ),
            );
        }
        if vlan.dhcp_pool.is_some_and(|p| p.contains(ip)) {
            report.at(
                path!["hosts", i, "ip"],
                format!(
                    "reserved address {ip} lies in the DHCP pool of VLAN `{}`: expected an address outside the pool",
                    vlan.name
                ),
            );
        }
    }
    if let Some(vlan) = site
        .vlans
        .iter()
        .find(|v| v.name == site.switch.management_vlan)
    {
        if !usable(vlan.subnet, site.switch.management_ip) {
            report.at(
                path!["switch", "management_ip"],
                format!(
                    "switch address {} is outside subnet {} of VLAN `{}`",
                    site.switch.management_ip, vlan.subnet, vlan.name
                ),
            );
        }
    }
}

fn switch_ports(site: &Site, report: &mut Report<'_>) {
    let mut names = BTreeMap::new();
    for (i, port) in site.switch.ports.iter().enumerate() {
        if port.name().is_empty() || port.name().contains(char::is_whitespace) {
            report.at(
                path!["switch", "ports", i, "name"],
                format!(
                    "port name `{}` must be one word, like GigabitEthernet1/0/1",
                    port.name()
                ),
            );
        }
        if names.insert(port.name(), i).is_some() {
            report.at(
                path!["switch", "ports", i, "name"],
                format!("port `{}` is declared twice", port.name()),
            );
        }
    }
}
