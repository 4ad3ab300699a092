//! `sites/stack.toml`: settings shared by every site of the stack.

use serde::{Deserialize, Serialize};

use super::names::{Domain, HostName};
use super::values::{PublicKey, Text};

/// Stack-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The stack's name, shown in output and comments of artifacts.
    pub name: HostName,
    /// People who may log in to every host; their keys go into cloud-init.
    #[serde(default)]
    pub operators: Vec<Operator>,
    pub dns: DnsDefaults,
    /// Regions that sites are placed in.
    pub regions: Vec<Region>,
    /// How many backups of each host to keep.
    #[serde(default)]
    pub backups: Retention,
}

/// restic's forget policy, applied to each host's backups after each backup
/// run; 0 turns a rule off. A snapshot any rule keeps is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default = "default_keep_last")]
    pub keep_last: u32,
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u32,
    #[serde(default = "default_keep_weekly")]
    pub keep_weekly: u32,
    #[serde(default = "default_keep_monthly")]
    pub keep_monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: default_keep_last(),
            keep_daily: default_keep_daily(),
            keep_weekly: default_keep_weekly(),
            keep_monthly: default_keep_monthly(),
        }
    }
}

fn default_keep_last() -> u32 {
    10
}
fn default_keep_daily() -> u32 {
    7
}
fn default_keep_weekly() -> u32 {
    4
}
fn default_keep_monthly() -> u32 {
    6
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: HostName,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
    pub ssh_key: PublicKey,
}

/// SOA and NS defaults for every zone sov writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDefaults {
    /// Default TTL of every record, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Name servers of the public zones (the first is the SOA MNAME).
    pub nameservers: Vec<Domain>,
    /// Mailbox of the zones' administrator, as a domain (`hostmaster.example.org`).
    pub hostmaster: Domain,
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    #[serde(default = "default_retry")]
    pub retry: u32,
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// Negative-caching TTL (the SOA minimum field).
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: HostName,
    #[serde(default)]
    pub description: Text,
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
