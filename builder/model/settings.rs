//! `sites/stack.toml`: settings shared by every site of the stack.

use serde::{Deserialize, Serialize};

use super::names::{Domain, HostName};

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub name: HostName,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA… comment`).
    pub ssh_key: String,
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
    pub description: String,
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
