//! What each host carries in a generation: the context of its activation
//! script (which names its artifacts by store path) and its manifest.

use std::collections::BTreeMap;

use super::manifest::{ArtifactEntry, HostManifest, MANIFEST_FORMAT};
use super::plan::{self, Derivation, Roles, SitePlan};
use crate::model::Stack;
use crate::render::context::{
    ActivationContext, ComposeActivation, HostInfo, SecretInfo, SiteView,
};
use crate::render::secret_path;
use crate::store::{Digest, ObjectName};

/// The activation script's context: the host, its roles' artifacts by name,
/// and what its image says about secrets, data and health.
pub fn activation_context(
    stack: &Stack,
    view: &SiteView<'_>,
    plan: &SitePlan,
    info: &HostInfo,
    roles: &Roles,
    bundle: Option<&Derivation>,
) -> ActivationContext {
    let image = stack.image(&info.image);
    ActivationContext {
        site: view.info().clone(),
        host: info.clone(),
        firewall: roles.firewall.then(|| plan.firewall.name.clone()),
        dhcp: roles.dhcp.then(|| plan.dhcp.name.clone()),
        zones: if roles.dns {
            plan.zones
                .iter()
                .map(|(origin, d)| (origin.clone(), d.name.clone()))
                .collect()
        } else {
            BTreeMap::new()
        },
        compose: image
            .and_then(|i| i.compose.as_ref())
            .zip(bundle)
            .map(|(c, d)| ComposeActivation {
                bundle: d.name.clone(),
                project: c.project.to_string(),
                up: c.up.clone(),
                down: c.down.clone(),
            }),
        secrets: image
            .map(|i| {
                i.secrets
                    .iter()
                    .map(|s| SecretInfo {
                        name: s.name.to_string(),
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
    outputs: &BTreeMap<Digest, ObjectName>,
) -> HostManifest {
    let activation = &host.activation;
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
        secrets: host.secrets.clone(),
        data: host.data.clone(),
    }
}
