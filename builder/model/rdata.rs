//! DNS record data: parsed per record type where it enters, and written in
//! zone-file presentation format by the `domain` crate's encoder, so that no
//! value can add records, directives (`$INCLUDE`) or open parentheses.
//!
//! The stack writes TXT values as the text itself (`v=spf1 -all`), and the
//! other types in their usual presentation form (`10 mail.example.org.`),
//! with names that need no escaping.

use std::net::{Ipv4Addr, Ipv6Addr};

use domain::base::zonefile_fmt::{DisplayKind, ZonefileFmt};
use domain::base::CharStr;
use domain::rdata::caa::{Caa, CaaFlags, CaaTag};
use domain::rdata::Txt;

/// Why record data was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RdataError(String);

/// Record types sov writes, with the number of fields the stack gives.
const TYPES: [&str; 9] = ["A", "AAAA", "CNAME", "NS", "PTR", "MX", "SRV", "TXT", "CAA"];

/// A name in zone-file syntax that needs no escaping: `@`, or labels of
/// letters, digits, `-` and `_` (a leading `*` label allowed), with or
/// without the final dot, at most 253 characters.
pub fn is_zone_name(name: &str) -> bool {
    if name == "@" {
        return true;
    }
    let bare = name.strip_suffix('.').unwrap_or(name);
    !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').enumerate().all(|(i, label)| {
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        })
}

fn name(field: &str) -> Result<String, RdataError> {
    if is_zone_name(field) && field != "@" && !field.starts_with('*') {
        Ok(field.to_ascii_lowercase())
    } else {
        Err(RdataError(format!(
            "{field:?} is not a target name: expected a domain name of letters, digits, `-` and `_`"
        )))
    }
}

fn number<T: std::str::FromStr>(field: &str, what: &str) -> Result<T, RdataError> {
    field
        .parse()
        .map_err(|_| RdataError(format!("{field:?} is not {what}")))
}

/// The data of a record of type `rtype`, in presentation format.
pub fn encode(rtype: &str, value: &str) -> Result<String, RdataError> {
    if rtype == "TXT" {
        return txt(value);
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(RdataError(format!(
            "the value holds the character {}: expected {rtype} data on one line",
            c.escape_unicode()
        )));
    }
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let shape = |expected: &str| RdataError(format!("expected `{expected}`, found {value:?}"));
    match (rtype, fields.as_slice()) {
        ("A", [ip]) => Ok(number::<Ipv4Addr>(ip, "an IPv4 address")?.to_string()),
        ("AAAA", [ip]) => Ok(number::<Ipv6Addr>(ip, "an IPv6 address")?.to_string()),
        ("CNAME" | "NS" | "PTR", [target]) => name(target),
        ("MX", [pref, target]) => Ok(format!(
            "{} {}",
            number::<u16>(pref, "a preference (0 to 65535)")?,
            name(target)?
        )),
        ("SRV", [prio, weight, port, target]) => Ok(format!(
            "{} {} {} {}",
            number::<u16>(prio, "a priority (0 to 65535)")?,
            number::<u16>(weight, "a weight (0 to 65535)")?,
            number::<u16>(port, "a port (0 to 65535)")?,
            name(target)?
        )),
        ("CAA", [flags, tag, ..]) => caa(value, flags, tag),
        ("A", _) => Err(shape("<IPv4 address>")),
        ("AAAA", _) => Err(shape("<IPv6 address>")),
        ("CNAME" | "NS" | "PTR", _) => Err(shape("<target name>")),
        ("MX", _) => Err(shape("<preference> <mail server>")),
        ("SRV", _) => Err(shape("<priority> <weight> <port> <target>")),
        ("CAA", _) => Err(shape("<flags> <tag> \"<value>\"")),
        _ => Err(RdataError(format!(
            "record type {rtype:?} is not one sov writes: expected one of {}",
            TYPES.join(", ")
        ))),
    }
}

/// TXT: the text itself, cut into character-strings of 255 octets and
/// quoted with RFC 1035's escapes (`\"`, `\\`, `\DDD`).
fn txt(value: &str) -> Result<String, RdataError> {
    let txt = Txt::<Vec<u8>>::build_from_slice(value.as_bytes())
        .map_err(|e| RdataError(format!("the TXT value cannot be encoded: {e}")))?;
    Ok(txt.display_zonefile(DisplayKind::Simple).to_string())
}

/// CAA: `<flags> <tag> <value>`, the value with or without double quotes.
fn caa(value: &str, flags: &str, tag: &str) -> Result<String, RdataError> {
    let flags = CaaFlags::new(number(flags, "CAA flags (0 to 255)")?);
    let rest = value
        .trim_start()
        .strip_prefix(flags.to_string().as_str())
        .and_then(|r| r.trim_start().strip_prefix(tag))
        .map(str::trim)
        .unwrap_or_default();
    let inner = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') && !inner.contains('\\') => inner,
        Some(_) => {
            return Err(RdataError(format!(
                "the CAA value {rest} holds `\"` or `\\`: expected a plain value"
            )))
        }
        None if !rest.is_empty()
            && !rest.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') =>
        {
            rest
        }
        None => {
            return Err(RdataError(format!(
                "expected `<flags> <tag> \"<value>\"`, found {value:?}"
            )))
        }
    };
    let tag = CharStr::from_octets(tag.as_bytes().to_vec())
        .ok()
        .and_then(|c| CaaTag::new(c).ok())
        .ok_or_else(|| {
            RdataError(format!(
                "{tag:?} is not a CAA tag: expected letters and digits"
            ))
        })?;
    let caa = Caa::try_new(flags, tag, inner.as_bytes().to_vec())
        .map_err(|e| RdataError(format!("the CAA value is too long: {e}")))?;
    Ok(caa.display_zonefile(DisplayKind::Simple).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_is_quoted_and_escaped() {
        assert_eq!(txt("v=spf1 -all").unwrap(), "\"v=spf1 -all\"");
        let evil = txt("x\"\n$INCLUDE /etc/passwd\n").unwrap();
        assert!(!evil.contains('\n'), "{evil}");
        assert!(evil.starts_with("\"x\\\""), "{evil}");
        assert!(
            txt("Grüße").unwrap().contains("\\195"),
            "non-ASCII as \\DDD"
        );
        let long = txt(&"a".repeat(300)).unwrap();
        assert_eq!(
            long.matches('"').count(),
            4,
            "two character-strings: {long}"
        );
    }

    #[test]
    fn records_are_parsed_per_type() {
        assert_eq!(
            encode("MX", "10  mail.example.org.").unwrap(),
            "10 mail.example.org."
        );
        assert!(encode("MX", "0 ( \"x\"").is_err());
        assert!(encode("CNAME", "a\n$INCLUDE /etc/passwd").is_err());
        assert!(encode("NS", "a b").is_err());
        assert!(encode("SRV", "0 5 5060 sip.example.org.").is_ok());
        assert!(encode("A", "10.0.0.300").is_err());
        assert_eq!(
            encode("CAA", "0 issue \"letsencrypt.org\"").unwrap(),
            "0 issue \"letsencrypt.org\""
        );
        assert!(encode("CAA", "0 issue \"a\" b \"c\"").is_err());
        assert!(encode("CAA", "0 is-sue \"a\"").is_err());
        assert!(encode("CAA", "0 issue \"a\"b").is_err());
    }

    #[test]
    fn zone_names_need_no_escapes() {
        assert!(is_zone_name("@"));
        assert!(is_zone_name("_dmarc"));
        assert!(is_zone_name("*.example.org."));
        assert!(!is_zone_name("a b"));
        assert!(!is_zone_name("a;b"));
        assert!(!is_zone_name("$INCLUDE"));
        assert!(!is_zone_name("a..b"));
    }
}
