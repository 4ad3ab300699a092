//! `sov build`: load and check the stack, plan every derivation, realise the
//! ones the cache lacks, commit them to the store in one batch and record a
//! site generation for every site whose manifest changed.

mod cache;
pub mod diff;
pub mod gc;
pub mod generation;
mod host;
pub mod manifest;
mod parallel;
pub mod plan;
mod realise;
pub mod serial;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{Diagnostic, Diagnostics, SiteName, Stack};
use crate::pack::PackError;
use crate::render::{Kind, Templates};
use crate::store::{Digest, ObjectName, StateLock, Store, StoreError};
pub use cache::Cache;
pub use generation::{Generation, Profile};
use host::host_manifest;
use manifest::{encode, ArtifactEntry, HostEntry, SiteManifest, MANIFEST_FORMAT};
use plan::{Derivation, SitePlan};
use realise::{realise, RealiseError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The stack's files are wrong: exit code 2, nothing written.
    #[error("{0}")]
    Input(Diagnostics),
    #[error("unknown site `{name}`: expected one of {known}")]
    UnknownSite { name: String, known: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("packing {what}")]
    Pack {
        what: String,
        #[source]
        source: PackError,
    },
}

impl BuildError {
    pub fn is_input(&self) -> bool {
        matches!(self, BuildError::Input(_) | BuildError::UnknownSite { .. })
    }
}

/// What a build did, per site; printed by `sov build --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sites: Vec<SiteReport>,
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
pub fn build(paths: &Paths<'_>, sites: &[String]) -> Result<Report, BuildError> {
    let stack = Stack::load(paths.root).map_err(BuildError::Input)?;
    let templates =
        Templates::load(paths.root).map_err(|d| BuildError::Input(Diagnostics(d).into_sorted()))?;
    check_templates_exist(&stack, &templates)?;
    let selected = select(&stack, sites)?;
    let serials = serial::Serials::read(paths.root);

    let _lock = StateLock::acquire(paths.state)?;
    let store = Store::open(paths.state)?;
    let cache = Cache::open(paths.state)?;
    // Built once: every site listing a domain serves the same public zone.
    let public = crate::model::zones::public_zones(&stack, &BTreeSet::new());
    let plans: Vec<SitePlan> = selected
        .iter()
        .filter_map(|name| stack.site(name.as_str()))
        .map(|site| plan::plan_site(&stack, site, &templates, &serials, &public))
        .collect();

    let mut builder = Builder {
        templates: &templates,
        cache,
        batch: store.batch(),
        outputs: BTreeMap::new(),
        rendered: BTreeSet::new(),
        present: store.list()?.into_iter().collect(),
        problems: Diagnostics::default(),
    };
    let all: Vec<&Derivation> = plans.iter().flat_map(|p| p.derivations()).collect();
    builder.realise_all(&all)?;
    builder.fail_on_problems()?;

    let mut manifests = Vec::new();
    for plan in &plans {
        let mut hosts = Vec::new();
        for host in &plan.hosts {
            let manifest = host_manifest(plan, host, &builder.outputs);
            let name = format!("{}-{}-manifest.json", plan.site, host.host);
            hosts.push(HostEntry {
                name: host.host.to_string(),
                manifest: builder.put(&name, &encode(&manifest))?,
            });
        }
        let site_manifest = SiteManifest {
            format: MANIFEST_FORMAT,
            site: plan.site.to_string(),
            artifacts: plan
                .site_derivations()
                .map(|d| ArtifactEntry::new(d.kind, builder.outputs[&d.key].clone(), d.key))
                .collect(),
            hosts,
        };
        let name = format!("{}-manifest.json", plan.site);
        manifests.push(builder.put(&name, &encode(&site_manifest))?);
    }

    let Builder {
        batch,
        mut cache,
        outputs,
        rendered,
        ..
    } = builder;
    batch.commit()?;
    // Only what this build rendered is new to the cache.
    cache.record(outputs.iter().filter(|(key, _)| rendered.contains(*key)))?;

    let mut report = Report { sites: Vec::new() };
    for (plan, manifest) in plans.iter().zip(&manifests) {
        let (generation, recorded) = Profile::open(paths.state, &plan.site).record(manifest)?;
        let derivations: Vec<&Derivation> = plan.derivations().collect();
        let artifacts = derivations
            .iter()
            .map(|d| {
                let object = &outputs[&d.key];
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
            .filter(|d| rendered.contains(&d.key))
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

/// Realises derivations against one store, collecting input problems
/// instead of stopping at the first.
struct Builder<'a> {
    templates: &'a Templates,
    cache: Cache,
    batch: crate::store::Batch<'a>,
    /// Derivation key to the object it made (or the cache had).
    outputs: BTreeMap<Digest, ObjectName>,
    /// Keys rendered in this build (the rest were reused).
    rendered: BTreeSet<Digest>,
    /// The objects the store held when the build began.
    present: std::collections::HashSet<ObjectName>,
    problems: Diagnostics,
}

impl Builder<'_> {
    fn realise_all(&mut self, derivations: &[&Derivation]) -> Result<(), BuildError> {
        let mut missing: Vec<&Derivation> = Vec::new();
        for d in derivations {
            if self.outputs.contains_key(&d.key) {
                continue;
            }
            match self.cache.lookup(&self.present, &d.key) {
                Some(object) => {
                    self.outputs.insert(d.key, object);
                }
                None if missing.iter().all(|m| m.key != d.key) => missing.push(d),
                None => {}
            }
        }
        let (templates, batch) = (self.templates, &self.batch);
        // Each worker stages what it made at once, so no image waits in memory.
        let results = parallel::map(&missing, |d| {
            let output = realise(templates, d)?;
            batch
                .put(&output.object, &output.bytes)
                .map_err(RealiseError::Store)?;
            Ok(output.object)
        });
        for (d, result) in missing.iter().zip(results) {
            match result {
                Ok(object) => {
                    self.outputs.insert(d.key, object);
                    self.rendered.insert(d.key);
                }
                Err(RealiseError::Input(diagnostic)) => self.problems.push(diagnostic),
                Err(RealiseError::Pack { what, source }) => {
                    return Err(BuildError::Pack { what, source })
                }
                Err(RealiseError::Store(e)) => return Err(BuildError::Store(e)),
            }
        }
        Ok(())
    }

    fn fail_on_problems(&mut self) -> Result<(), BuildError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Input(
                std::mem::take(&mut self.problems).into_sorted(),
            ))
        }
    }

    /// Stages a manifest; manifests need no derivation, their bytes are their inputs.
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<ObjectName, BuildError> {
        let object = ObjectName::new(Digest::of(bytes), name).map_err(|e| StoreError::Name {
            name: name.to_string(),
            source: e,
        })?;
        if !self.present.contains(&object) {
            self.batch.put(&object, bytes)?;
        }
        Ok(object)
    }
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
