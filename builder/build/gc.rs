//! `sov gc`: keep the newest generations of every site and remove the store
//! objects that no kept generation references.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::Serialize;

use super::cache::Cache;
use super::generation::Profile;
use super::manifest::{HostManifest, SiteManifest};
use crate::model::SiteName;
use crate::store::{ObjectName, StateLock, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {object} of a kept generation cannot be read")]
    Manifest {
        object: ObjectName,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "manifest {object} of a kept generation is missing from the store: run `sov store verify`"
    )]
    Missing { object: ObjectName },
    #[error("cannot tell which generations the backups need")]
    Backups(#[source] Box<crate::backup::BackupError>),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub generations_removed: usize,
    pub objects_removed: usize,
    pub bytes_freed: u64,
}

/// Removes all but the newest `keep` generations of each site (never the
/// current one), then every object no remaining generation needs.
pub fn gc(state: &Path, keep: usize) -> Result<GcReport, GcError> {
    let _lock = StateLock::acquire(state)?;
    let store = Store::open(state)?;
    let mut report = GcReport::default();
    let mut live = BTreeSet::new();
    for site in recorded_sites(state)? {
        let profile = Profile::open(state, &site);
        let current = profile.current()?.map(|r| r.generation);
        // A kept backup is restored together with its generation.
        let pinned = crate::backup::pinned_generations(state, site.as_str())
            .map_err(|e| GcError::Backups(Box::new(e)))?;
        let records = profile.list()?;
        let cut = records.len().saturating_sub(keep);
        for (i, record) in records.iter().enumerate() {
            if i < cut
                && Some(record.generation) != current
                && !pinned.contains(&record.generation.0)
            {
                profile.remove(record.generation)?;
                report.generations_removed += 1;
            } else {
                live.extend(closure(&store, &record.manifest)?);
            }
        }
        if cut > 0 {
            profile.sync()?;
        }
    }
    for object in store.list()? {
        if !live.contains(&object) {
            let size = fs::metadata(store.path(&object))
                .map(|m| m.len())
                .unwrap_or(0);
            store.remove(&object)?;
            report.objects_removed += 1;
            report.bytes_freed += size;
        }
    }
    store.remove_staged_leftovers()?;
    Cache::open(state)?.prune(&store)?;
    Ok(report)
}

/// Every object a site generation needs, its manifests included.
pub fn closure(store: &Store, site_manifest: &ObjectName) -> Result<Vec<ObjectName>, GcError> {
    let site: SiteManifest = read_json(store, site_manifest)?;
    let hosts = site
        .hosts
        .iter()
        .map(|h| read_json::<HostManifest>(store, &h.manifest))
        .collect::<Result<Vec<_>, _>>()?;
    let mut objects = site.objects(&hosts);
    objects.push(site_manifest.clone());
    Ok(objects)
}

pub fn read_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    object: &ObjectName,
) -> Result<T, GcError> {
    if !store.contains(object) {
        return Err(GcError::Missing {
            object: object.clone(),
        });
    }
    let bytes = store.read(object)?;
    serde_json::from_slice(&bytes).map_err(|source| GcError::Manifest {
        object: object.clone(),
        source,
    })
}

/// Sites with recorded generations, whether or not the stack still has them.
fn recorded_sites(state: &Path) -> Result<Vec<SiteName>, StoreError> {
    let dir = state.join("sites");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", &dir)(e)),
    };
    let mut sites = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", &dir))?;
        if let Ok(name) = SiteName::try_from(entry.file_name().to_string_lossy().into_owned()) {
            sites.push(name);
        }
    }
    sites.sort();
    Ok(sites)
}
