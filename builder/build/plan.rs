//! Derivations: for every artifact, the recipe that makes it and the key
//! that names the recipe. The key hashes everything that can change the
//! bytes and nothing else.

use std::collections::BTreeMap;

use serde::Serialize;

use super::manifest::SecretEntry;
use super::serial::Serials;
use crate::model::site::Site;
use crate::model::{zones, HostName, Stack};
use crate::render::context::{self, HostInfo};
use crate::render::{Kind, Templates};
use crate::store::Digest;

/// Bumped when sov changes how an artifact kind is packed or what its
/// context means, so old cache entries stop matching.
pub const FORMAT_VERSION: u32 = 1;

/// How to make an artifact's bytes.
#[derive(Debug, Clone)]
pub enum Recipe {
    /// One template to one text file.
    Text { template: String },
    /// The three cloud-init templates packed into a NoCloud seed image.
    Seed,
    /// The compose file and the image's bundle files packed into `bundle.tar.zst`.
    Bundle { files: Vec<BundleFile> },
}

#[derive(Debug, Clone, Serialize)]
pub struct BundleFile {
    pub path: String,
    pub template: String,
    pub mode: u32,
}

/// One artifact to realise.
#[derive(Debug, Clone)]
pub struct Derivation {
    pub kind: Kind,
    /// The readable part of the object name (`fra1-www-seed.img`).
    pub name: String,
    pub host: Option<HostName>,
    pub key: Digest,
    pub recipe: Recipe,
    /// The context as canonical JSON: what the key hashes and, parsed
    /// again, what the templates see (kept as bytes: most builds render
    /// nothing, and a byte string is cheap to keep and free).
    pub context: Vec<u8>,
}

impl Derivation {
    fn new(
        templates: &Templates,
        kind: Kind,
        name: String,
        host: Option<&HostName>,
        recipe: Recipe,
        context: &impl Serialize,
    ) -> Derivation {
        let context = serde_json::to_vec(context).unwrap_or_default();
        // A name made from a long domain is cut to fit a file name here,
        // so manifests and activation scripts use the name the object has.
        let name = crate::store::fit_name(&name);
        let key = key(templates, kind, &name, &recipe, &context);
        Derivation {
            kind,
            name,
            host: host.cloned(),
            key,
            recipe,
            context,
        }
    }

    /// For diagnostics: which artifact of which host this renders. Made only
    /// when something failed, not for every derivation of every build.
    pub fn what(&self) -> String {
        match &self.host {
            Some(h) => format!("{} `{}` of host {h}", self.kind.as_str(), self.name),
            None => format!("{} `{}`", self.kind.as_str(), self.name),
        }
    }
}

/// blake3 over a length-prefixed, versioned encoding of: kind, output
/// format version, the kind's template set hash, the recipe and the context.
fn key(templates: &Templates, kind: Kind, name: &str, recipe: &Recipe, context: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"sov-derivation-v1");
    field(kind.as_str().as_bytes());
    field(&FORMAT_VERSION.to_le_bytes());
    field(templates.hash(kind).hex().as_bytes());
    field(name.as_bytes());
    let recipe = match recipe {
        Recipe::Text { template } => format!("text:{template}"),
        Recipe::Seed => "seed".to_string(),
        Recipe::Bundle { files } => format!(
            "bundle:{}",
            serde_json::to_string(files).unwrap_or_default()
        ),
    };
    field(recipe.as_bytes());
    field(context);
    Digest::from_hasher(hasher)
}

/// What a host holds besides its own artifacts: the site artifacts it serves.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub firewall: bool,
    pub dhcp: bool,
    pub dns: bool,
}

impl Roles {
    pub fn of(site: &Site, host: &HostName) -> Roles {
        Roles {
            firewall: &site.firewall.host == host,
            dhcp: &site.dhcp.server == host,
            dns: site.dns.servers.contains(host),
        }
    }
}

/// The derivations of one site.
pub struct SitePlan {
    pub site: crate::model::SiteName,
    pub firewall: Derivation,
    pub switch: Derivation,
    pub dhcp: Derivation,
    /// Zone origin and its derivation.
    pub zones: Vec<(String, Derivation)>,
    pub hosts: Vec<HostPlan>,
}

pub struct HostPlan {
    pub host: HostName,
    pub info: HostInfo,
    pub roles: Roles,
    pub seed: Derivation,
    pub bundle: Option<Derivation>,
    pub activation: Derivation,
    pub secrets: Vec<SecretEntry>,
    /// The data directories its image declares.
    pub data: Vec<String>,
}

impl SitePlan {
    /// The site-wide derivations: firewall, switch, DHCP, zones.
    pub fn site_derivations(&self) -> impl Iterator<Item = &Derivation> {
        [&self.firewall, &self.switch, &self.dhcp]
            .into_iter()
            .chain(self.zones.iter().map(|(_, d)| d))
    }

    /// Every derivation of the plan, site artifacts first.
    pub fn derivations(&self) -> impl Iterator<Item = &Derivation> {
        self.site_derivations()
            .chain(self.hosts.iter().flat_map(|h| {
                [&h.seed]
                    .into_iter()
                    .chain(&h.bundle)
                    .chain([&h.activation])
            }))
    }
}

pub fn plan_site(
    stack: &Stack,
    site: &Site,
    templates: &Templates,
    serials: &Serials,
    public: &BTreeMap<crate::model::Domain, zones::Zone>,
) -> SitePlan {
    let s = site.name.as_str();
    let view = context::SiteView::new(stack, site);
    let firewall = Derivation::new(
        templates,
        Kind::Firewall,
        format!("{s}-firewall.nft"),
        None,
        Recipe::Text {
            template: site.firewall.dialect.template().to_string(),
        },
        &context::firewall(&view),
    );
    let switch = Derivation::new(
        templates,
        Kind::Switch,
        format!("{s}-switch-{}.ios", site.switch.name),
        None,
        Recipe::Text {
            template: site.switch.dialect.template().to_string(),
        },
        &context::switch(&view),
    );
    let dhcp = Derivation::new(
        templates,
        Kind::Dhcp,
        format!("{s}-kea-dhcp4.json"),
        None,
        Recipe::Text {
            template: "dhcp/kea-dhcp4.json.j2".to_string(),
        },
        &context::dhcp(&view),
    );
    let zones = zones::site_zones(site, public)
        .into_iter()
        .map(|zone| {
            let origin = zone.origin.clone();
            let serial = serials.for_inputs(&zone_inputs(stack, site, &zone));
            let derivation = Derivation::new(
                templates,
                Kind::Dns,
                format!("{s}-zone-{origin}"),
                None,
                Recipe::Text {
                    template: "dns/zone.j2".to_string(),
                },
                &context::dns(stack, &view, zone, serial),
            );
            (origin, derivation)
        })
        .collect();
    let hosts = site
        .hosts
        .iter()
        .filter_map(|h| {
            let image = stack.image(h.image.as_str())?;
            let info = HostInfo::new(&view, h)?;
            let n = h.name.as_str();
            let seed = Derivation::new(
                templates,
                Kind::CloudInit,
                format!("{s}-{n}-seed.img"),
                Some(&h.name),
                Recipe::Seed,
                &context::cloud_init(stack, &view, info.clone(), image),
            );
            let bundle = image.compose.as_ref().map(|_| {
                let files = image
                    .files
                    .iter()
                    .map(|f| BundleFile {
                        path: f.path.clone(),
                        template: format!("compose/files/{}", f.template),
                        mode: f.mode,
                    })
                    .collect();
                Derivation::new(
                    templates,
                    Kind::Compose,
                    format!("{s}-{n}-bundle.tar.zst"),
                    Some(&h.name),
                    Recipe::Bundle { files },
                    &context::compose(&view, info.clone(), image),
                )
            });
            Some((h.name.clone(), info, seed, bundle))
        })
        .collect::<Vec<_>>();
    let mut plan = SitePlan {
        site: site.name.clone(),
        firewall,
        switch,
        dhcp,
        zones,
        hosts: Vec::new(),
    };
    for (host, info, seed, bundle) in hosts {
        let roles = Roles::of(site, &host);
        let context =
            super::host::activation_context(stack, &view, &plan, &info, &roles, bundle.as_ref());
        let activation = plan_activation(templates, site.name.as_str(), &host, &context);
        let secrets = stack
            .image(&info.image)
            .map(|image| {
                image
                    .secrets
                    .iter()
                    .map(|s| SecretEntry {
                        name: s.name.clone(),
                        owner: s.owner.clone(),
                        generate: s.generate,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let data = stack
            .image(&info.image)
            .and_then(|image| image.data.as_ref())
            .map(|d| d.paths.clone())
            .unwrap_or_default();
        plan.hosts.push(HostPlan {
            host,
            info,
            roles,
            seed,
            bundle,
            activation,
            secrets,
            data,
        });
    }
    plan
}

/// The files whose history decides a zone's serial.
fn zone_inputs(stack: &Stack, site: &Site, zone: &zones::Zone) -> Vec<String> {
    let mut inputs = vec![
        crate::model::load::SETTINGS_FILE.to_string(),
        "templates/dns".to_string(),
        "templates/lib".to_string(),
    ];
    let sites: Vec<&Site> = if zone.kind == zones::Kind::Public {
        stack
            .sites
            .values()
            .map(|l| &l.value)
            .filter(|s| s.domains.public.iter().any(|d| d.as_str() == zone.origin))
            .collect()
    } else {
        vec![site]
    };
    inputs.extend(sites.iter().map(|s| format!("sites/{}.toml", s.name)));
    inputs
}

/// Seed image file names and the templates that render them.
pub const SEED_FILES: [(&str, &str); 3] = [
    ("meta-data", "cloud-init/meta-data.j2"),
    ("network-config", "cloud-init/network-config.j2"),
    ("user-data", "cloud-init/user-data.j2"),
];

/// The activation script of a host.
fn plan_activation(
    templates: &Templates,
    site: &str,
    host: &HostName,
    context: &context::ActivationContext,
) -> Derivation {
    Derivation::new(
        templates,
        Kind::Activation,
        format!("{site}-{host}-activate.sh"),
        Some(host),
        Recipe::Text {
            template: "activation/activate.sh.j2".to_string(),
        },
        context,
    )
}
