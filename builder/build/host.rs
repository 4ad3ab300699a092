//! What each host carries in a generation: the context of its activation
//! script (which names its artifacts by store path) and its manifest.

use std::collections::BTreeMap;

use super::manifest::{ArtifactEntry, HostManifest, MANIFEST_FORMAT};
use super::plan::{self, Derivation, SitePlan};
use crate::model::Stack;
use crate::render::context::{
    ActivationContext, ComposeActivation, ObjectRef, SecretInfo, SiteInfo,
};
use crate::render::secret_path;
use crate::store::{Digest, ObjectName};

fn object_ref(root: &str, object: &ObjectName) -> ObjectRef {
    ObjectRef {
        name: object.name().to_string(),
        path: format!("{root}/store/{object}"),
    }
}

pub fn activation_context(
    stack: &Stack,
    site: &crate::model::Site,
    plan: &SitePlan,
    host: &plan::HostPlan,
    outputs: &BTreeMap<Digest, ObjectName>,
) -> ActivationContext {
    let root = host.info.root.as_str();
    let image = stack.image(&host.info.image);
    let r = |d: &Derivation| object_ref(root, &outputs[&d.key]);
    ActivationContext {
        site: SiteInfo::new(stack, site),
        host: host.info.clone(),
        firewall: host.roles.firewall.then(|| r(&plan.firewall)),
        dhcp: host.roles.dhcp.then(|| r(&plan.dhcp)),
        zones: if host.roles.dns {
            plan.zones
                .iter()
                .map(|(origin, d)| (origin.clone(), r(d)))
                .collect()
        } else {
            BTreeMap::new()
        },
        compose: image
            .and_then(|i| i.compose.as_ref())
            .zip(host.bundle.as_ref())
            .map(|(c, d)| ComposeActivation {
                bundle: r(d),
                project: c.project.to_string(),
                up: c.up.clone(),
                down: c.down.clone(),
            }),
        seed: r(&host.seed),
        secrets: image
            .map(|i| {
                i.secrets
                    .iter()
                    .map(|s| SecretInfo {
                        name: s.name.to_string(),
                        owner: s.owner.clone(),
                        path: secret_path(s.name.as_str()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        data: image.and_then(|i| i.data.clone()),
        health: image.map(|i| i.health.clone()).unwrap_or_default(),
    }
}

pub fn host_manifest(
    plan: &SitePlan,
    host: &plan::HostPlan,
    activation: &Derivation,
    outputs: &BTreeMap<Digest, ObjectName>,
) -> HostManifest {
    let mut derivations: Vec<&Derivation> = Vec::new();
    if host.roles.firewall {
        derivations.push(&plan.firewall);
    }
    if host.roles.dhcp {
        derivations.push(&plan.dhcp);
    }
    if host.roles.dns {
        derivations.extend(plan.zones.iter().map(|(_, d)| d));
    }
    derivations.push(&host.seed);
    derivations.extend(host.bundle.as_ref());
    derivations.push(activation);
    HostManifest {
        format: MANIFEST_FORMAT,
        site: plan.site.to_string(),
        host: host.host.to_string(),
        activate: outputs[&activation.key].clone(),
        artifacts: derivations
            .into_iter()
            .map(|d| ArtifactEntry::new(d.kind, outputs[&d.key].clone(), d.key))
            .collect(),
    }
}
