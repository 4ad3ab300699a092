//! DNS checks over the zones a site will serve: owner names, record data,
//! and CNAMEs beside other data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::Report;
use crate::model::names::check_domain;
use crate::model::zones::{self, check_owner, Zone};
use crate::model::{Diagnostics, Stack};
use crate::path;

pub(super) fn check(stack: &Stack, problems: &mut Diagnostics) {
    for loaded in stack.sites.values() {
        let site = &loaded.value;
        let mut report = Report::new(&loaded.source, problems);
        for (i, host) in site.hosts.iter().enumerate() {
            for (j, name) in host.public_names.iter().enumerate() {
                if let Err(e) = check_owner(name) {
                    report.at(path!["hosts", i, "public_names", j], e);
                }
            }
            if !host.public_names.is_empty() && site.domains.public.is_empty() {
                report.at(
                    path!["hosts", i, "public_names"],
                    "the site has no public domain to put these names in",
                );
            }
        }
        for (i, record) in site.records.iter().enumerate() {
            if let Err(e) = check_owner(&record.name) {
                report.at(path!["records", i, "name"], e);
            }
            if let Err(e) = check_rdata(record.rtype, &record.value) {
                report.at(path!["records", i, "value"], e);
            }
        }
        if site.domains.public.contains(&site.domains.internal) {
            report.at(
                path!["domains", "internal"],
                "the internal domain must differ from every public domain",
            );
        }
    }
    // Each zone once, with diagnostics in the file each record came from.
    for zone in zones::public_zones(stack, &BTreeSet::new()).values() {
        cname_conflicts(stack, zone, problems);
    }
    for loaded in stack.sites.values() {
        let site = &loaded.value;
        cname_conflicts(stack, &zones::internal_zone(site), problems);
        for zone in zones::reverse_zones(site) {
            cname_conflicts(stack, &zone, problems);
        }
    }
}

fn check_rdata(rtype: crate::model::site::RecordType, value: &str) -> Result<(), String> {
    use crate::model::site::RecordType as T;
    let target = |name: &str| -> Result<(), String> {
        let bare = name.strip_suffix('.').unwrap_or(name);
        if name == "@" || check_domain(bare).is_ok() {
            Ok(())
        } else {
            Err(format!("`{name}` is not a valid target name"))
        }
    };
    let fields: Vec<&str> = value.split_whitespace().collect();
    match rtype {
        T::A => value
            .parse::<Ipv4Addr>()
            .map(drop)
            .map_err(|_| format!("`{value}` is not an IPv4 address")),
        T::AAAA => value
            .parse::<Ipv6Addr>()
            .map(drop)
            .map_err(|_| format!("`{value}` is not an IPv6 address")),
        T::CNAME | T::NS => match fields.as_slice() {
            [name] => target(name),
            _ => Err(format!("expected one target name, found `{value}`")),
        },
        T::MX => match fields.as_slice() {
            [pref, name] if pref.parse::<u16>().is_ok() => target(name),
            _ => Err(format!(
                "expected `<preference> <mail server>`, found `{value}`"
            )),
        },
        T::SRV => match fields.as_slice() {
            [a, b, c, name] if [a, b, c].iter().all(|n| n.parse::<u16>().is_ok()) => target(name),
            _ => Err(format!(
                "expected `<priority> <weight> <port> <target>`, found `{value}`"
            )),
        },
        T::CAA => match fields.as_slice() {
            [flags, tag, v]
                if flags.parse::<u8>().is_ok()
                    && !tag.is_empty()
                    && v.starts_with('"')
                    && v.ends_with('"')
                    && v.len() >= 2 =>
            {
                Ok(())
            }
            _ => Err(format!(
                "expected `<flags> <tag> \"<value>\"`, found `{value}`"
            )),
        },
        T::TXT => Ok(()),
    }
}

/// RFC 1034 3.6.2: a name with a CNAME has no other data, and the apex
/// (which has SOA and NS) has no CNAME.
fn cname_conflicts(stack: &Stack, zone: &Zone, problems: &mut Diagnostics) {
    let mut by_owner: BTreeMap<&str, Vec<&zones::Rr>> = BTreeMap::new();
    for rr in &zone.records {
        by_owner.entry(&rr.owner).or_default().push(rr);
    }
    for (owner, records) in by_owner {
        // How many records of each type the name has: the other data beside
        // one CNAME is every type but CNAME, and CNAME when there are two.
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &records {
            *types.entry(r.rtype).or_default() += 1;
        }
        let others: Vec<&str> = types
            .iter()
            .filter(|&(&t, &n)| t != "CNAME" || n > 1)
            .map(|(&t, _)| t)
            .collect();
        for rr in records.iter().filter(|r| r.rtype == "CNAME") {
            let message = if owner == "@" {
                format!(
                    "CNAME at the apex of zone {}: the apex already has SOA and NS",
                    zone.origin
                )
            } else if others.is_empty() {
                continue;
            } else {
                format!(
                    "`{owner}` in zone {} has a CNAME beside other data ({}): a CNAME must stand alone",
                    zone.origin,
                    others.join(", ")
                )
            };
            if let Some(site) = stack.sites.get(rr.from.site.as_str()) {
                problems.push(site.source.at(&rr.from.path, message));
            }
        }
    }
}
