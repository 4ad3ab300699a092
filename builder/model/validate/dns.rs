//! DNS checks over the zones a site will serve: owner names, record data,
//! and CNAMEs beside other data.

use std::collections::{BTreeMap, BTreeSet};

use super::Report;
use crate::model::names::Domain;
use crate::model::rdata;
use crate::model::site::ZoneKind;
use crate::model::zones::{self, check_owner, Zone};
use crate::model::{Diagnostics, Stack};
use crate::path;

pub(super) fn check(stack: &Stack, problems: &mut Diagnostics) {
    for loaded in stack.sites.values() {
        let site = &loaded.value;
        let mut report = Report::new(&loaded.source, problems);
        let internal = &site.domains.internal;
        // The internal zone's derived names must fit beside its origin: one
        // report for the longest of each kind is enough to say so.
        let longest_host = site
            .hosts
            .iter()
            .enumerate()
            .max_by_key(|(_, h)| h.name.as_str().len());
        if let Some((i, host)) = longest_host {
            if let Err(e) = check_fits(host.name.as_str(), internal) {
                report.at(path!["hosts", i, "name"], e);
            }
        }
        let longest_vlan = site
            .vlans
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.name.as_str().len());
        if let Some((i, vlan)) = longest_vlan {
            if let Err(e) = check_fits(&zones::gateway_name(vlan.name.as_str()), internal) {
                report.at(path!["vlans", i, "name"], e);
            }
        }
        for (i, host) in site.hosts.iter().enumerate() {
            for (j, alias) in host.aliases.iter().enumerate() {
                if let Err(e) = check_fits(alias.as_str(), internal) {
                    report.at(path!["hosts", i, "aliases", j], e);
                }
            }
            for (j, name) in host.public_names.iter().enumerate() {
                if let Err(e) = check_owner(name) {
                    report.at(path!["hosts", i, "public_names", j], e);
                }
                for domain in &site.domains.public {
                    if let Err(e) = check_fits(name, domain) {
                        report.at(path!["hosts", i, "public_names", j], e);
                    }
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
            if let Err(e) = rdata::encode(record.rtype.as_str(), &record.value) {
                report.at(path!["records", i, "value"], e.to_string());
            }
            let origin = match record.zone {
                ZoneKind::Internal => Some(&site.domains.internal),
                ZoneKind::Public => site.domains.public.iter().max_by_key(|d| d.as_str().len()),
            };
            if let Some(origin) = origin {
                if let Err(e) = check_fits(&record.name, origin) {
                    report.at(path!["records", i, "name"], e);
                }
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

/// A name and its zone's origin together fit in a DNS name: 255 octets on
/// the wire, 253 characters written without the final dot.
fn check_fits(owner: &str, origin: &Domain) -> Result<(), String> {
    let len = if owner == "@" {
        origin.as_str().len()
    } else {
        owner.len() + 1 + origin.as_str().len()
    };
    if len > 253 {
        Err(format!(
            "`{owner}` in zone {origin} makes a name of {len} characters: expected at most 253"
        ))
    } else {
        Ok(())
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
