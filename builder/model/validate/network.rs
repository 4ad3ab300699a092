//! VLANs, subnets, addresses and MACs of one site: ranges, overlaps and
//! duplicates.

use std::collections::btree_map::Entry;
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

/// What `key` was first seen with, or None after recording `value` for
/// it: a duplicate names the declaration it repeats, not the previous repeat.
fn first_seen<K: Ord, V: Clone>(seen: &mut BTreeMap<K, V>, key: K, value: V) -> Option<V> {
    match seen.entry(key) {
        Entry::Occupied(first) => Some(first.get().clone()),
        Entry::Vacant(slot) => {
            slot.insert(value);
            None
        }
    }
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
        if let Some(first) = first_seen(&mut ids, vlan.id, i) {
            report.at(
                path!["vlans", i, "id"],
                format!(
                    "VLAN id {} is already used by VLAN `{}`",
                    vlan.id, site.vlans[first].name
                ),
            );
        }
        if first_seen(&mut names, &vlan.name, i).is_some() {
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
    }
    overlaps(site, report);
}

/// Subnets that share an address, found in one pass over the subnets sorted
/// by network: CIDR blocks are either disjoint or nested, so a stack of the
/// blocks enclosing the current one holds every block it overlaps. Each
/// overlap is reported once, at the VLAN declared later.
fn overlaps(site: &Site, report: &mut Report<'_>) {
    let mut order: Vec<(ipnet::Ipv4Net, usize)> = site
        .vlans
        .iter()
        .enumerate()
        .map(|(i, v)| (v.subnet.trunc(), i))
        .collect();
    order.sort_unstable_by_key(|&(net, i)| (net.network(), net.prefix_len(), i));
    let mut enclosing: Vec<(ipnet::Ipv4Net, usize)> = Vec::new();
    for (net, i) in order {
        while enclosing
            .last()
            .is_some_and(|(outer, _)| outer.broadcast() < net.network())
        {
            enclosing.pop();
        }
        if let Some(&(_, j)) = enclosing.last() {
            let (later, earlier) = (i.max(j), i.min(j));
            let (vlan, other) = (&site.vlans[later], &site.vlans[earlier]);
            report.at(
                path!["vlans", later, "subnet"],
                format!(
                    "subnet {} overlaps subnet {} of VLAN `{}`",
                    vlan.subnet, other.subnet, other.name
                ),
            );
        }
        enclosing.push((net, i));
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
    let mut vlans = BTreeMap::new();
    for vlan in &site.vlans {
        vlans.entry(&vlan.name).or_insert(vlan);
    }
    for (i, host) in site.hosts.iter().enumerate() {
        if let Some(first) = first_seen(&mut names, &host.name, i) {
            report.at(
                path!["hosts", i, "name"],
                format!(
                    "host name `{}` is already used by host number {}",
                    host.name,
                    first + 1
                ),
            );
        }
        if let Some(first) = first_seen(&mut macs, host.mac, i) {
            report.at(
                path!["hosts", i, "mac"],
                format!(
                    "MAC {} is already used by host `{}`",
                    host.mac, site.hosts[first].name
                ),
            );
        }
        let Some(ip) = host.ip else { continue };
        if let Some(owner) = first_seen(&mut ips, ip, format!("host `{}`", host.name)) {
            report.at(
                path!["hosts", i, "ip"],
                format!("address {ip} is already used by {owner}"),
            );
        }
        let Some(vlan) = vlans.get(&host.vlan) else {
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
    if let Some(vlan) = vlans.get(&site.switch.management_vlan) {
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
