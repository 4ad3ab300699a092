//! `sites/<name>.toml`: one data center, its network and its hosts.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::names::{Domain, HostName, ImageName, Mac, SiteName, VlanName};
use super::values::{
    AbsPath, Interface, PortName, PortNumber, PublicKey, Seconds, SshAddress, Text, UserName,
};

/// One data center.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub name: SiteName,
    pub region: HostName,
    pub role: Role,
    /// For a mirror: the primary site it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<SiteName>,
    /// The public address the firewall holds on its WAN interface.
    pub wan_address: Ipv4Addr,
    pub domains: Domains,
    pub vlans: Vec<Vlan>,
    pub switch: Switch,
    pub firewall: Firewall,
    pub dhcp: Dhcp,
    pub dns: Dns,
    pub hosts: Vec<Host>,
    /// Records beyond the ones derived from hosts.
    #[serde(default)]
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Mirror,
}

impl Role {
    pub fn is_primary(self) -> bool {
        self == Role::Primary
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domains {
    /// Public zones this site serves addresses in.
    pub public: Vec<Domain>,
    /// The site's internal zone: every host and VM has a name in it.
    pub internal: Domain,
}

/// An 802.1Q VLAN with its subnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    pub id: u16,
    pub name: VlanName,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The firewall's interface on this VLAN (`eth1.20`).
    pub interface: Interface,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_pool: Option<Pool>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    pub name: HostName,
    pub dialect: SwitchDialect,
    /// The VLAN whose gateway address the switch's management interface uses.
    pub management_vlan: VlanName,
    /// The switch's own management address on that VLAN.
    pub management_ip: Ipv4Addr,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchDialect {
    CiscoIos,
}

impl SwitchDialect {
    /// The template file under `templates/switch/` that renders this dialect.
    pub fn template(self) -> &'static str {
        match self {
            SwitchDialect::CiscoIos => "switch/cisco-ios.j2",
        }
    }
}

/// A switch port: access (one untagged VLAN) or trunk (tagged VLANs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "mode", rename_all = "lowercase")]
pub enum Port {
    Access {
        name: PortName,
        vlan: VlanName,
        #[serde(default)]
        description: Text,
    },
    Trunk {
        name: PortName,
        vlans: Vec<VlanName>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        native_vlan: Option<VlanName>,
        #[serde(default)]
        description: Text,
    },
}

impl Port {
    pub fn name(&self) -> &str {
        match self {
            Port::Access { name, .. } | Port::Trunk { name, .. } => name.as_str(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    pub dialect: FirewallDialect,
    /// The host that runs the ruleset.
    pub host: HostName,
    pub wan_interface: Interface,
    /// Inter-VLAN traffic that is allowed; everything else between VLANs is dropped.
    #[serde(default)]
    pub allow: Vec<Allow>,
    /// Ports on the WAN address forwarded (DNAT) to a host.
    #[serde(default)]
    pub forwards: Vec<Forward>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallDialect {
    Nftables,
}

impl FirewallDialect {
    pub fn template(self) -> &'static str {
        match self {
            FirewallDialect::Nftables => "firewall/nftables.j2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    pub from: VlanName,
    pub to: VlanName,
    pub proto: Proto,
    /// Destination ports; empty for ICMP.
    #[serde(default)]
    pub ports: Vec<PortNumber>,
    #[serde(default)]
    pub comment: Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub proto: Proto,
    pub port: PortNumber,
    pub host: HostName,
    /// The port on the host; the same as `port` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<PortNumber>,
    #[serde(default)]
    pub comment: Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    /// The host that runs Kea.
    pub server: HostName,
    #[serde(default = "default_lease")]
    pub valid_lifetime: Seconds,
}

fn default_lease() -> Seconds {
    Seconds::constant(86_400)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// The hosts that serve this site's zones.
    pub servers: Vec<HostName>,
}

/// A host or VM of the site.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: HostName,
    pub vlan: VlanName,
    pub mac: Mac,
    /// The address reserved for it by DHCP and named in DNS; a host
    /// without one takes a dynamic address from the pool and has no name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    pub image: ImageName,
    /// For a VM: the host it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_on: Option<HostName>,
    /// More names for it in the internal zone (CNAMEs).
    #[serde(default)]
    pub aliases: Vec<HostName>,
    /// Names in the public zones that resolve to the site's WAN address
    /// (`@` for the apex).
    #[serde(default)]
    pub public_names: Vec<String>,
    pub ssh: Ssh,
}

impl Host {
    /// Where sov connects: `ssh.address`, else the reserved IP (validation
    /// makes sure one of them is set).
    pub fn ssh_address(&self) -> String {
        match (&self.ssh.address, self.ip) {
            (Some(address), _) => address.to_string(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// How sov reaches the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// Address to connect to; the host's reserved IP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SshAddress>,
    #[serde(default = "default_user")]
    pub user: UserName,
    #[serde(default = "default_port")]
    pub port: PortNumber,
    /// The host's public key, pinned (`ssh-ed25519 AAAA…`).
    pub host_key: PublicKey,
    /// Where sov keeps its store and generations on the host.
    #[serde(default = "default_state_root")]
    pub root: AbsPath,
}

fn default_user() -> UserName {
    UserName::constant("root")
}
fn default_port() -> PortNumber {
    PortNumber::constant(22)
}
fn default_state_root() -> AbsPath {
    AbsPath::constant("/var/lib/sov")
}

/// A DNS record added by hand.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub zone: ZoneKind,
    /// Owner relative to the zone (`@` for the apex, `mail`, `_sip._tcp`).
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Record data: for TXT the text itself, for other types their
    /// presentation form (`10 mail.example.org.`).
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZoneKind {
    Public,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
    MX,
    TXT,
    SRV,
    CAA,
    NS,
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
            RecordType::MX => "MX",
            RecordType::TXT => "TXT",
            RecordType::SRV => "SRV",
            RecordType::CAA => "CAA",
            RecordType::NS => "NS",
        }
    }
}
