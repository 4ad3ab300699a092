//! The DNS data of a site, derived from its hosts and VLANs plus the records
//! written by hand: a public zone per public domain, the internal zone and a
//! reverse zone per subnet. Validation and the zone templates share it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::names::{check_label, Domain, SiteName};
use super::site::ZoneKind;
use super::source::Step;
use super::{Site, Stack};

/// Which of a site's zones this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Public,
    Internal,
    Reverse,
}

/// One zone: its origin (without the final dot) and its records, sorted.
#[derive(Debug, Clone, Serialize)]
pub struct Zone {
    pub origin: String,
    pub kind: Kind,
    /// The name servers of the zone, absolute (`ns1.example.org.`); the
    /// first is the SOA MNAME.
    pub nameservers: Vec<String>,
    pub records: Vec<Rr>,
}

/// A resource record as it appears in the zone file.
#[derive(Debug, Clone, Serialize)]
pub struct Rr {
    /// Relative to the origin; `@` for the apex.
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// The record data as the stack gives it (TXT: the text itself); the
    /// zone template writes it through `zone_rdata`.
    pub data: String,
    /// Which site file and value it came from, for diagnostics.
    #[serde(skip)]
    pub from: Origin,
}

/// The site file and the path of the value a record was derived from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub site: SiteName,
    pub path: Vec<Step<'static>>,
}

impl Zone {
    fn new(origin: String, kind: Kind, nameservers: Vec<String>) -> Self {
        Zone {
            origin,
            kind,
            nameservers,
            records: Vec::new(),
        }
    }

    fn sort(&mut self) {
        self.records
            .sort_by(|a, b| (&a.owner, a.rtype, &a.data).cmp(&(&b.owner, b.rtype, &b.data)));
        self.records
            .dedup_by(|a, b| a.owner == b.owner && a.rtype == b.rtype && a.data == b.data);
    }
}

/// The public zones of the stack, one per domain any site lists, built
/// once and shared by the sites that serve them. `drained` lists sites
/// whose addresses leave the public zones.
pub fn public_zones(stack: &Stack, drained: &BTreeSet<SiteName>) -> BTreeMap<Domain, Zone> {
    let domains: BTreeSet<&Domain> = stack
        .sites
        .values()
        .flat_map(|s| &s.value.domains.public)
        .collect();
    domains
        .into_iter()
        .map(|d| (d.clone(), public_zone(stack, d, drained)))
        .collect()
}

/// Every zone the site's DNS servers serve, in a stable order: public
/// zones by domain (from `public`), the internal zone, reverse zones by
/// network.
pub fn site_zones(site: &Site, public: &BTreeMap<Domain, Zone>) -> Vec<Zone> {
    let mut zones: Vec<Zone> = site
        .domains
        .public
        .iter()
        .filter_map(|domain| public.get(domain).cloned())
        .collect();
    zones.push(internal_zone(site));
    zones.extend(reverse_zones(site));
    zones
}

/// The internal name servers of a site, absolute.
fn internal_nameservers(site: &Site) -> Vec<String> {
    site.dns
        .servers
        .iter()
        .map(|ns| format!("{ns}.{}.", site.domains.internal))
        .collect()
}

fn ns_records(zone: &mut Zone, site: &SiteName) {
    let records: Vec<Rr> = zone
        .nameservers
        .iter()
        .map(|ns| Rr {
            owner: "@".into(),
            ttl: None,
            rtype: "NS",
            data: ns.clone(),
            from: Origin {
                site: site.clone(),
                path: vec![Step::Key("dns"), Step::Key("servers")],
            },
        })
        .collect();
    zone.records.extend(records);
}

/// A public zone is shared by every site that lists its domain, so that each
/// site's DNS serves the addresses of all of them (and drain removes one).
pub fn public_zone(stack: &Stack, domain: &Domain, drained: &BTreeSet<SiteName>) -> Zone {
    let settings = &stack.settings.value;
    let nameservers = settings
        .dns
        .nameservers
        .iter()
        .map(|ns| format!("{ns}."))
        .collect();
    let mut zone = Zone::new(domain.to_string(), Kind::Public, nameservers);
    let first = stack.sites.keys().next().cloned();
    if let Some(site) = first {
        ns_records(&mut zone, &site);
    }
    for (name, loaded) in &stack.sites {
        let site = &loaded.value;
        if !site.domains.public.contains(domain) || drained.contains(name) {
            continue;
        }
        for (h, host) in site.hosts.iter().enumerate() {
            for (p, public) in host.public_names.iter().enumerate() {
                zone.records.push(Rr {
                    owner: public.clone(),
                    ttl: None,
                    rtype: "A",
                    data: site.wan_address.to_string(),
                    from: Origin {
                        site: name.clone(),
                        path: vec![
                            Step::Key("hosts"),
                            Step::Index(h),
                            Step::Key("public_names"),
                            Step::Index(p),
                        ],
                    },
                });
            }
        }
        manual_records(&mut zone, site, ZoneKind::Public);
    }
    zone.sort();
    zone
}

pub fn internal_zone(site: &Site) -> Zone {
    let mut zone = Zone::new(
        site.domains.internal.to_string(),
        Kind::Internal,
        internal_nameservers(site),
    );
    ns_records(&mut zone, &site.name);
    let at = |path: Vec<Step<'static>>| Origin {
        site: site.name.clone(),
        path,
    };
    for (h, host) in site.hosts.iter().enumerate() {
        if let Some(ip) = host.ip {
            zone.records.push(Rr {
                owner: host.name.to_string(),
                ttl: None,
                rtype: "A",
                data: ip.to_string(),
                from: at(vec![Step::Key("hosts"), Step::Index(h), Step::Key("name")]),
            });
        }
        for (a, alias) in host.aliases.iter().enumerate() {
            zone.records.push(Rr {
                owner: alias.to_string(),
                ttl: None,
                rtype: "CNAME",
                data: host.name.to_string(),
                from: at(vec![
                    Step::Key("hosts"),
                    Step::Index(h),
                    Step::Key("aliases"),
                    Step::Index(a),
                ]),
            });
        }
    }
    for (v, vlan) in site.vlans.iter().enumerate() {
        zone.records.push(Rr {
            owner: gateway_name(&vlan.name.to_string()),
            ttl: None,
            rtype: "A",
            data: vlan.gateway.to_string(),
            from: at(vec![
                Step::Key("vlans"),
                Step::Index(v),
                Step::Key("gateway"),
            ]),
        });
    }
    zone.records.push(Rr {
        owner: site.switch.name.to_string(),
        ttl: None,
        rtype: "A",
        data: site.switch.management_ip.to_string(),
        from: at(vec![Step::Key("switch"), Step::Key("management_ip")]),
    });
    manual_records(&mut zone, site, ZoneKind::Internal);
    zone.sort();
    zone
}

/// The internal name of a VLAN's gateway address.
pub fn gateway_name(vlan: &str) -> String {
    format!("gw-{vlan}")
}

fn manual_records(zone: &mut Zone, site: &Site, kind: ZoneKind) {
    for (r, record) in site.records.iter().enumerate() {
        if record.zone != kind {
            continue;
        }
        zone.records.push(Rr {
            owner: record.name.clone(),
            ttl: record.ttl,
            rtype: record.rtype.as_str(),
            data: record.value.clone(),
            from: Origin {
                site: site.name.clone(),
                path: vec![Step::Key("records"), Step::Index(r), Step::Key("type")],
            },
        });
    }
}

/// The reverse zone that holds a subnet's PTR records: the subnet widened to
/// the octet boundary at or above it (a /26 is served by its /24's zone).
pub fn reverse_origin(subnet: Ipv4Net) -> (Ipv4Net, String) {
    let bits = (subnet.prefix_len() / 8 * 8).max(8);
    let net = Ipv4Net::new(subnet.network(), bits)
        .map(|n| n.trunc())
        .unwrap_or(subnet);
    let octets = net.network().octets();
    let labels: Vec<String> = octets[..usize::from(bits / 8)]
        .iter()
        .rev()
        .map(u8::to_string)
        .collect();
    (net, format!("{}.in-addr.arpa", labels.join(".")))
}

fn ptr_owner(net: Ipv4Net, ip: Ipv4Addr) -> String {
    let skip = usize::from(net.prefix_len() / 8);
    let octets = ip.octets();
    let labels: Vec<String> = octets[skip..].iter().rev().map(u8::to_string).collect();
    labels.join(".")
}

/// One reverse zone per subnet; subnets that share an octet-aligned network
/// share its zone. An address goes to the zone of the first VLAN whose
/// zone holds it.
pub fn reverse_zones(site: &Site) -> Vec<Zone> {
    // Zone networks are octet-aligned, so the zones that may hold an
    // address are its /8, /16, /24 and /32: four lookups, not a scan.
    let mut zones: Vec<(Ipv4Net, Zone)> = Vec::new();
    let mut by_net: HashMap<Ipv4Net, usize> = HashMap::new();
    for vlan in &site.vlans {
        let (net, origin) = reverse_origin(vlan.subnet);
        if let Entry::Vacant(slot) = by_net.entry(net) {
            slot.insert(zones.len());
            let mut zone = Zone::new(origin, Kind::Reverse, internal_nameservers(site));
            ns_records(&mut zone, &site.name);
            zones.push((net, zone));
        }
    }
    let internal = &site.domains.internal;
    let mut ptr = |ip: Ipv4Addr, name: String, path: Vec<Step<'static>>| {
        let first = [8, 16, 24, 32]
            .into_iter()
            .filter_map(|bits| Ipv4Net::new(ip, bits).ok())
            .filter_map(|net| by_net.get(&net.trunc()).copied())
            .min();
        if let Some((net, zone)) = first.map(|i| &mut zones[i]) {
            zone.records.push(Rr {
                owner: ptr_owner(*net, ip),
                ttl: None,
                rtype: "PTR",
                data: format!("{name}.{internal}."),
                from: Origin {
                    site: site.name.clone(),
                    path,
                },
            });
        }
    };
    for (h, host) in site.hosts.iter().enumerate() {
        if let Some(ip) = host.ip {
            let path = vec![Step::Key("hosts"), Step::Index(h), Step::Key("ip")];
            ptr(ip, host.name.to_string(), path);
        }
    }
    for (v, vlan) in site.vlans.iter().enumerate() {
        let path = vec![Step::Key("vlans"), Step::Index(v), Step::Key("gateway")];
        ptr(vlan.gateway, gateway_name(vlan.name.as_str()), path);
    }
    let path = vec![Step::Key("switch"), Step::Key("management_ip")];
    ptr(
        site.switch.management_ip,
        site.switch.name.to_string(),
        path,
    );
    let mut zones: Vec<Zone> = zones.into_iter().map(|(_, z)| z).collect();
    zones.sort_by(|a, b| a.origin.cmp(&b.origin));
    for zone in &mut zones {
        zone.sort();
    }
    zones
}

/// Checks an owner name relative to a zone: `@`, or labels where `_` may lead
/// a label (`_dmarc`, `_sip._tcp`) and `*` may stand first.
pub fn check_owner(owner: &str) -> Result<(), String> {
    if owner == "@" {
        return Ok(());
    }
    for (i, label) in owner.split('.').enumerate() {
        if i == 0 && label == "*" {
            continue;
        }
        let plain = label.strip_prefix('_').unwrap_or(label);
        check_label(plain).map_err(|e| format!("invalid owner name `{owner}`: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_zones_widen_to_octets() {
        let (net, origin) = reverse_origin("10.20.30.64/26".parse().unwrap());
        assert_eq!(origin, "30.20.10.in-addr.arpa");
        assert_eq!(ptr_owner(net, "10.20.30.70".parse().unwrap()), "70");
        let (net, origin) = reverse_origin("10.20.0.0/20".parse().unwrap());
        assert_eq!(origin, "20.10.in-addr.arpa");
        assert_eq!(ptr_owner(net, "10.20.3.4".parse().unwrap()), "4.3");
    }

    #[test]
    fn owners_allow_service_labels() {
        assert!(check_owner("@").is_ok());
        assert!(check_owner("_sip._tcp").is_ok());
        assert!(check_owner("*.www").is_ok());
        assert!(check_owner("bad_label").is_err());
        assert!(check_owner("a..b").is_err());
    }
}
