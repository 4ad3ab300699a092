//! `sov build`: load and check the stack, plan every derivation, realise the
//! ones the cache lacks, commit them to the store in one batch and record a
//! site generation for every site whose manifest changed.

mod cache;
mod commit;
pub mod diff;
pub mod gc;
pub mod generation;
mod host;
pub mod manifest;
mod outputs;
mod parallel;
pub mod plan;
mod realise;
pub mod serial;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{Diagnostic, Diagnostics, SiteName, Stack};
use crate::pack::PackError;
use crate::render::{Kind, Templates};
use crate::store::{check_state_dir, Digest, ObjectName, Store, StoreError};
pub use cache::Cache;
pub use generation::{Generation, Profile};
use host::host_manifest;
use manifest::{encode, ArtifactEntry, HostEntry, SiteManifest, MANIFEST_FORMAT};
use outputs::Outputs;
use plan::{Derivation, SitePlan};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The stack's files are wrong: exit code 2, nothing written.
    #[error("{0}")]
    Input(Diagnostics),
    #[error("unknown site `{name}`: expected one of {known}")]
    UnknownSite { name: String, known: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading back the context of {what}")]
    Context {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("packing {what}")]
    Pack {
        what: String,
        #[source]
        source: PackError,
    },
    #[error("store objects this build reuses were removed while it ran (by `sov gc`?): {}; build again", objects.join(", "))]
    Vanished { objects: Vec<String> },
}

impl BuildError {
    pub fn is_input(&self) -> bool {
        match self {
            BuildError::Input(_) | BuildError::UnknownSite { .. } => true,
            BuildError::Store(e) => e.is_input(),
            _ => false,
        }
    }
}

/// What a build did, per site; printed by `sov build --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sites: Vec<SiteReport>,
    /// Store objects that were corrupt and that this build wrote again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<ObjectName>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    pub name: String,
    pub generation: Generation,
    /// Whether this build recorded the generation (false: nothing changed).
    #[serde(skip)]
    pub recorded: bool,
    pub manifest: PathBuf,
    pub rendered: usize,
    pub reused: usize,
    pub artifacts: Vec<ArtifactReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArtifactReport {
    pub kind: Kind,
    pub name: String,
    pub host: Option<String>,
    pub path: PathBuf,
    pub hash: Digest,
}

/// Where a build reads and writes.
pub struct Paths<'a> {
    pub root: &'a Path,
    pub state: &'a Path,
}

/// Builds `sites` (every site when empty) of the stack at `paths.root`.
/// Everything is rendered before anything is written: a build that fails
/// leaves the state directory untouched.
pub fn build(paths: &Paths<'_>, sites: &[String]) -> Result<Report, BuildError> {
    check_state_dir(paths.state)?;
    let stack = Stack::load(paths.root).map_err(BuildError::Input)?;
    let templates =
        Templates::load(paths.root).map_err(|d| BuildError::Input(Diagnostics(d).into_sorted()))?;
    check_templates_exist(&stack, &templates)?;
    let selected = select(&stack, sites)?;
    let serials = serial::Serials::read(paths.root);

    let store = Store::at(paths.state);
    // Built once: every site listing a domain serves the same public zone.
    let public = crate::model::zones::public_zones(&stack, &BTreeSet::new());
    let plans: Vec<SitePlan> = selected
        .iter()
        .filter_map(|name| stack.site(name.as_str()))
        .map(|site| plan::plan_site(&stack, site, &templates, &serials, &public))
        .collect();

    let mut outputs = Outputs::new(&templates, &store)?;
    let all: Vec<&Derivation> = plans.iter().flat_map(|p| p.derivations()).collect();
    outputs.realise_all(&Cache::open(paths.state)?, &all)?;
    outputs.fail_on_problems()?;
    let manifests = manifests(&plans, &mut outputs)?;
    let generations = commit::commit(paths.state, &outputs, &plans, &manifests)?;

    let mut report = Report {
        sites: Vec::new(),
        repaired: outputs
            .corrupt
            .iter()
            .filter(|o| outputs.new.contains_key(*o))
            .cloned()
            .collect(),
    };
    for ((plan, manifest), (generation, recorded)) in plans.iter().zip(&manifests).zip(generations)
    {
        let derivations: Vec<&Derivation> = plan.derivations().collect();
        let artifacts = derivations
            .iter()
            .map(|d| {
                let object = &outputs.made[&d.key];
                ArtifactReport {
                    kind: d.kind,
                    name: d.name.clone(),
                    host: d.host.as_ref().map(|h| h.to_string()),
                    path: store.path(object),
                    hash: object.digest(),
                }
            })
            .collect();
        let rendered_here = derivations
            .iter()
            .filter(|d| outputs.rendered.contains(&d.key))
            .count();
        report.sites.push(SiteReport {
            name: plan.site.to_string(),
            generation,
            recorded,
            manifest: store.path(manifest),
            rendered: rendered_here,
            reused: derivations.len() - rendered_here,
            artifacts,
        });
    }
    Ok(report)
}

/// Every host's manifest and every site's, made in memory and added to
/// `outputs`; returns the site manifests in the order of `plans`.
fn manifests(plans: &[SitePlan], outputs: &mut Outputs<'_>) -> Result<Vec<ObjectName>, BuildError> {
    let mut made = Vec::new();
    let mut sites = Vec::new();
    for plan in plans {
        let mut hosts = Vec::new();
        for host in &plan.hosts {
            let manifest = host_manifest(plan, host, &outputs.made);
            let name = format!("{}-{}-manifest.json", plan.site, host.host);
            let object = manifest_object(&name, encode(&manifest), &mut made)?;
            hosts.push(HostEntry {
                name: host.host.to_string(),
                manifest: object,
            });
        }
        let site_manifest = SiteManifest {
            format: MANIFEST_FORMAT,
            site: plan.site.to_string(),
            artifacts: plan
                .site_derivations()
                .map(|d| ArtifactEntry::new(d.kind, outputs.made[&d.key].clone(), d.key))
                .collect(),
            hosts,
        };
        let name = format!("{}-manifest.json", plan.site);
        sites.push(manifest_object(&name, encode(&site_manifest), &mut made)?);
    }
    outputs.add(made)?;
    Ok(sites)
}

/// Names a manifest; manifests need no derivation, their bytes are their inputs.
fn manifest_object(
    name: &str,
    bytes: Vec<u8>,
    made: &mut Vec<(ObjectName, Vec<u8>)>,
) -> Result<ObjectName, BuildError> {
    let object = ObjectName::new(Digest::of(&bytes), name).map_err(|e| StoreError::Name {
        name: name.to_string(),
        source: e,
    })?;
    made.push((object.clone(), bytes));
    Ok(object)
}

fn unknown(stack: &Stack, name: &str) -> BuildError {
    BuildError::UnknownSite {
        name: name.to_string(),
        known: stack
            .sites
            .keys()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The sites named on the command line, or all of them.
fn select(stack: &Stack, sites: &[String]) -> Result<Vec<SiteName>, BuildError> {
    if sites.is_empty() {
        return Ok(stack.sites.keys().cloned().collect());
    }
    sites
        .iter()
        .map(|s| {
            stack
                .sites
                .keys()
                .find(|k| k.as_str() == s)
                .cloned()
                .ok_or_else(|| unknown(stack, s))
        })
        .collect()
}

/// Every template the stack needs exists; a missing bundle file template is
/// reported against the image that names it.
fn check_templates_exist(stack: &Stack, templates: &Templates) -> Result<(), BuildError> {
    let mut problems = Diagnostics::default();
    for (name, image) in &stack.images {
        for (i, f) in image.value.files.iter().enumerate() {
            if !templates.exists(&format!("compose/files/{}", f.template)) {
                problems.push(image.source.at(
                    crate::path!["files", i, "template"],
                    format!(
                        "image `{name}` names template `{}`, which is not in templates/compose/files/",
                        f.template
                    ),
                ));
            }
        }
    }
    let mut required: BTreeSet<&str> = [
        "dhcp/kea-dhcp4.json.j2",
        "dns/zone.j2",
        "compose/compose.yaml.j2",
        "activation/activate.sh.j2",
    ]
    .into_iter()
    .chain(plan::SEED_FILES.iter().map(|(_, t)| *t))
    .collect();
    for site in stack.sites.values() {
        required.insert(site.value.firewall.dialect.template());
        required.insert(site.value.switch.dialect.template());
    }
    for template in required {
        if !templates.exists(template) {
            problems.push(Diagnostic::file(
                Path::new("templates").join(template),
                "missing: sov renders this template (sov init writes the defaults)",
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Input(problems.into_sorted()))
    }
}
