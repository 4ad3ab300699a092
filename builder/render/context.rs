//! What each template sees: the slice of site and image data an artifact is
//! made from. The slice is also what its derivation key hashes, so it holds
//! no more than the artifact reads, and never a secret value.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use serde::Serialize;

use super::secret_path;
use crate::model::image::{Container, Data, HealthCheck};
use crate::model::site::{Allow, Port, Proto, Role};
use crate::model::values::Arg;
use crate::model::zones::Zone;
use crate::model::{Host, Image, Site, Stack, Vlan};

/// The site as every template sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SiteInfo {
    pub stack: String,
    pub name: String,
    pub region: String,
    pub role: Role,
    pub primary: Option<String>,
    pub wan_address: Ipv4Addr,
    pub public_domains: Vec<String>,
    pub internal_domain: String,
}

impl SiteInfo {
    pub fn new(stack: &Stack, site: &Site) -> Self {
        SiteInfo {
            stack: stack.settings.value.name.to_string(),
            name: site.name.to_string(),
            region: site.region.to_string(),
            role: site.role,
            primary: site.primary.as_ref().map(|p| p.to_string()),
            wan_address: site.wan_address,
            public_domains: site.domains.public.iter().map(|d| d.to_string()).collect(),
            internal_domain: site.domains.internal.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VlanInfo {
    pub id: u16,
    pub name: String,
    pub subnet: String,
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub interface: String,
}

impl From<&Vlan> for VlanInfo {
    fn from(v: &Vlan) -> Self {
        VlanInfo {
            id: v.id,
            name: v.name.to_string(),
            subnet: v.subnet.to_string(),
            network: v.subnet.network(),
            netmask: v.subnet.netmask(),
            prefix_len: v.subnet.prefix_len(),
            gateway: v.gateway,
            interface: v.interface.to_string(),
        }
    }
}

/// One site's lookups, made once and shared by every context of the site,
/// so that building a site costs what its size is, not its square.
pub struct SiteView<'a> {
    pub site: &'a Site,
    info: SiteInfo,
    hosts: HashMap<&'a str, &'a Host>,
    vlans: HashMap<&'a str, &'a Vlan>,
    /// The addresses of the site's DNS servers, which DHCP and cloud-init
    /// hand out.
    dns_servers: Vec<Ipv4Addr>,
    /// Every host's reserved address, for service configuration.
    addresses: BTreeMap<String, Option<Ipv4Addr>>,
}

impl<'a> SiteView<'a> {
    pub fn new(stack: &Stack, site: &'a Site) -> Self {
        let hosts: HashMap<&str, &Host> = site.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
        let dns_servers = site
            .dns
            .servers
            .iter()
            .filter_map(|n| hosts.get(n.as_str()).and_then(|h| h.ip))
            .collect();
        SiteView {
            site,
            info: SiteInfo::new(stack, site),
            vlans: site.vlans.iter().map(|v| (v.name.as_str(), v)).collect(),
            addresses: site
                .hosts
                .iter()
                .map(|h| (h.name.to_string(), h.ip))
                .collect(),
            hosts,
            dns_servers,
        }
    }

    pub fn info(&self) -> &SiteInfo {
        &self.info
    }

    fn host(&self, name: &str) -> Option<&'a Host> {
        self.hosts.get(name).copied()
    }

    fn vlan(&self, name: &str) -> Option<&'a Vlan> {
        self.vlans.get(name).copied()
    }
}

// ---- firewall ------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct FirewallContext {
    pub site: SiteInfo,
    pub wan_interface: String,
    pub vlans: Vec<VlanInfo>,
    pub allow: Vec<AllowInfo>,
    pub forwards: Vec<ForwardInfo>,
    /// The firewall host's name and its own address.
    pub host: String,
    pub host_ip: Option<Ipv4Addr>,
    /// The firewall host's own VLAN: operators and sov reach it (SSH) from here.
    pub management: Option<VlanInfo>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub dhcp_server: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct AllowInfo {
    pub from: VlanInfo,
    pub to: VlanInfo,
    pub proto: Proto,
    pub ports: Vec<u16>,
    pub comment: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardInfo {
    pub proto: Proto,
    pub port: u16,
    pub host: String,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    /// The interface of the VLAN the target host is on.
    pub interface: String,
    pub comment: String,
}

pub fn firewall(view: &SiteView<'_>) -> FirewallContext {
    let site = view.site;
    let fw = view.host(site.firewall.host.as_str());
    let allow = site
        .firewall
        .allow
        .iter()
        .filter_map(|a: &Allow| {
            Some(AllowInfo {
                from: view.vlan(a.from.as_str())?.into(),
                to: view.vlan(a.to.as_str())?.into(),
                proto: a.proto,
                ports: a.ports.iter().map(|p| p.get()).collect(),
                comment: a.comment.to_string(),
            })
        })
        .collect();
    let forwards = site
        .firewall
        .forwards
        .iter()
        .filter_map(|f| {
            let target = view.host(f.host.as_str())?;
            Some(ForwardInfo {
                proto: f.proto,
                port: f.port.get(),
                host: f.host.to_string(),
                host_ip: target.ip?,
                host_port: f.host_port.unwrap_or(f.port).get(),
                interface: view.vlan(target.vlan.as_str())?.interface.to_string(),
                comment: f.comment.to_string(),
            })
        })
        .collect();
    FirewallContext {
        site: view.info.clone(),
        wan_interface: site.firewall.wan_interface.to_string(),
        vlans: site.vlans.iter().map(VlanInfo::from).collect(),
        allow,
        forwards,
        host: site.firewall.host.to_string(),
        host_ip: fw.and_then(|h| h.ip),
        management: fw
            .and_then(|h| view.vlan(h.vlan.as_str()))
            .map(VlanInfo::from),
        dns_servers: view.dns_servers.clone(),
        dhcp_server: view
            .host(site.dhcp.server.as_str())
            .and_then(|h| h.ip)
            .unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

// ---- switch --------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct SwitchContext {
    pub site: SiteInfo,
    pub name: String,
    pub vlans: Vec<VlanInfo>,
    pub management: ManagementInfo,
    pub ports: Vec<PortInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManagementInfo {
    pub vlan: VlanInfo,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortInfo {
    pub name: String,
    /// `access` or `trunk`.
    pub mode: &'static str,
    pub description: String,
    /// The access VLAN id, or the trunk's allowed VLAN ids.
    pub vlans: Vec<u16>,
    pub native_vlan: Option<u16>,
}

pub fn switch(view: &SiteView<'_>) -> SwitchContext {
    let site = view.site;
    let id = |name: &str| view.vlan(name).map(|v| v.id);
    let ports = site
        .switch
        .ports
        .iter()
        .map(|p| match p {
            Port::Access {
                name,
                vlan,
                description,
            } => PortInfo {
                name: name.to_string(),
                mode: "access",
                description: description.to_string(),
                vlans: id(vlan.as_str()).into_iter().collect(),
                native_vlan: None,
            },
            Port::Trunk {
                name,
                vlans,
                native_vlan,
                description,
            } => {
                let mut ids: Vec<u16> = vlans.iter().filter_map(|v| id(v.as_str())).collect();
                ids.sort_unstable();
                PortInfo {
                    name: name.to_string(),
                    mode: "trunk",
                    description: description.to_string(),
                    vlans: ids,
                    native_vlan: native_vlan.as_ref().and_then(|v| id(v.as_str())),
                }
            }
        })
        .collect();
    let mut vlans: Vec<VlanInfo> = site.vlans.iter().map(VlanInfo::from).collect();
    vlans.sort_by_key(|v| v.id);
    let management = view
        .vlan(site.switch.management_vlan.as_str())
        .map(VlanInfo::from)
        .unwrap_or_else(|| vlans[0].clone());
    SwitchContext {
        site: view.info.clone(),
        name: site.switch.name.to_string(),
        vlans,
        management: ManagementInfo {
            vlan: management,
            ip: site.switch.management_ip,
        },
        ports,
    }
}

// ---- dhcp ----------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct DhcpContext {
    pub site: SiteInfo,
    pub valid_lifetime: u32,
    pub dns_servers: Vec<Ipv4Addr>,
    pub subnets: Vec<SubnetInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubnetInfo {
    pub vlan: VlanInfo,
    pub pool: Option<PoolInfo>,
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolInfo {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reservation {
    pub hostname: String,
    pub mac: String,
    pub ip: Ipv4Addr,
}

pub fn dhcp(view: &SiteView<'_>) -> DhcpContext {
    let site = view.site;
    let mut reservations: HashMap<&str, Vec<Reservation>> = HashMap::new();
    for h in &site.hosts {
        if let Some(ip) = h.ip {
            reservations
                .entry(h.vlan.as_str())
                .or_default()
                .push(Reservation {
                    hostname: h.name.to_string(),
                    mac: h.mac.to_string(),
                    ip,
                });
        }
    }
    let subnets = site
        .vlans
        .iter()
        .map(|v| SubnetInfo {
            vlan: v.into(),
            pool: v.dhcp_pool.map(|p| PoolInfo {
                start: p.start,
                end: p.end,
            }),
            reservations: reservations.remove(v.name.as_str()).unwrap_or_default(),
        })
        .collect();
    DhcpContext {
        site: view.info.clone(),
        valid_lifetime: site.dhcp.valid_lifetime.get(),
        dns_servers: view.dns_servers.clone(),
        subnets,
    }
}

// ---- dns -----------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct DnsContext {
    pub site: SiteInfo,
    pub zone: Zone,
    pub ttl: u32,
    pub soa: Soa,
}

#[derive(Debug, Clone, Serialize)]
pub struct Soa {
    /// Absolute names, with the final dot.
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub negative_ttl: u32,
}

pub fn dns(stack: &Stack, view: &SiteView<'_>, zone: Zone, serial: u32) -> DnsContext {
    let d = &stack.settings.value.dns;
    let mname = zone.nameservers.first().cloned().unwrap_or_default();
    DnsContext {
        site: view.info.clone(),
        ttl: d.ttl,
        soa: Soa {
            mname,
            rname: format!("{}.", d.hostmaster),
            serial,
            refresh: d.refresh,
            retry: d.retry,
            expire: d.expire,
            negative_ttl: d.negative_ttl,
        },
        zone,
    }
}

// ---- per host: cloud-init and compose -----------------------------------

/// A host as its own templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub name: String,
    pub fqdn: String,
    pub image: String,
    pub mac: String,
    /// None: the host takes a dynamic address by DHCP.
    pub ip: Option<Ipv4Addr>,
    pub vlan: VlanInfo,
    pub vm_on: Option<String>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub search_domain: String,
    /// Where sov keeps its store on the host.
    pub root: String,
}

impl HostInfo {
    pub fn new(view: &SiteView<'_>, h: &Host) -> Option<Self> {
        let site = view.site;
        Some(HostInfo {
            name: h.name.to_string(),
            fqdn: format!("{}.{}", h.name, site.domains.internal),
            image: h.image.to_string(),
            mac: h.mac.to_string(),
            ip: h.ip,
            vlan: view.vlan(h.vlan.as_str())?.into(),
            vm_on: h.vm_on.as_ref().map(|p| p.to_string()),
            dns_servers: view.dns_servers.clone(),
            search_domain: site.domains.internal.to_string(),
            root: h.ssh.root.to_string(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CloudInitContext {
    pub site: SiteInfo,
    pub host: HostInfo,
    pub packages: Vec<String>,
    pub runcmd: Vec<Vec<Arg>>,
    pub timezone: String,
    pub operators: Vec<OperatorInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperatorInfo {
    pub name: String,
    pub ssh_key: String,
}

/// Packages every host needs to take part in deploys (see the design's
/// host prerequisites); images add their own.
pub const HOST_PREREQUISITES: [&str; 5] = ["coreutils", "util-linux", "tar", "zstd", "b3sum"];

pub fn cloud_init(
    stack: &Stack,
    view: &SiteView<'_>,
    host: HostInfo,
    image: &Image,
) -> CloudInitContext {
    let mut packages: Vec<String> = HOST_PREREQUISITES.iter().map(|p| p.to_string()).collect();
    packages.extend(image.cloud_init.packages.iter().map(|p| p.to_string()));
    packages.sort();
    packages.dedup();
    CloudInitContext {
        site: view.info.clone(),
        host,
        packages,
        runcmd: image.cloud_init.runcmd.clone(),
        timezone: image.cloud_init.timezone.to_string(),
        operators: stack
            .settings
            .value
            .operators
            .iter()
            .map(|o| OperatorInfo {
                name: o.name.to_string(),
                ssh_key: o.ssh_key.to_string(),
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ComposeContext {
    pub site: SiteInfo,
    pub host: HostInfo,
    pub project: String,
    pub containers: Vec<ContainerInfo>,
    /// Every secret of the image: name to the path on the host.
    pub secrets: BTreeMap<String, String>,
    /// Internal addresses of the site's hosts, for service configuration.
    pub hosts: BTreeMap<String, Option<Ipv4Addr>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    #[serde(flatten)]
    pub container: Container,
    /// (name, host path) of each secret it mounts.
    pub secret_paths: Vec<SecretMount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretMount {
    pub name: String,
    pub path: String,
}

pub fn compose(view: &SiteView<'_>, host: HostInfo, image: &Image) -> ComposeContext {
    ComposeContext {
        site: view.info.clone(),
        host,
        project: image
            .compose
            .as_ref()
            .map(|c| c.project.to_string())
            .unwrap_or_default(),
        containers: image
            .containers
            .iter()
            .map(|c| ContainerInfo {
                container: c.clone(),
                secret_paths: c
                    .secrets
                    .iter()
                    .map(|s| SecretMount {
                        name: s.to_string(),
                        path: secret_path(s.as_str()),
                    })
                    .collect(),
            })
            .collect(),
        secrets: image
            .secrets
            .iter()
            .map(|s| (s.name.to_string(), secret_path(s.name.as_str())))
            .collect(),
        hosts: view.addresses.clone(),
    }
}

// ---- activation ----------------------------------------------------------

/// What the activation script sees. It names the host's other artifacts by
/// name (`fra1-firewall.nft`), never by hash: it looks their store paths up
/// in the generation's manifest when it runs, so that changing an artifact
/// does not change the script.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationContext {
    pub site: SiteInfo,
    pub host: HostInfo,
    pub firewall: Option<String>,
    pub dhcp: Option<String>,
    /// Zone origin to the name of its file.
    pub zones: BTreeMap<String, String>,
    pub compose: Option<ComposeActivation>,
    pub secrets: Vec<SecretInfo>,
    pub data: Option<Data>,
    pub health: Vec<HealthCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComposeActivation {
    /// The bundle's artifact name.
    pub bundle: String,
    pub project: String,
    pub up: Vec<Arg>,
    pub down: Vec<Arg>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub path: String,
}
