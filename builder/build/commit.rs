//! The only step of a build that writes. Everything before it reads, so a
//! build that fails, on bad input or a template error, leaves the state
//! directory as it found it (or absent). Here, under the state's lock: the
//! new objects in one batch, the cache, and the site generations.

use std::path::Path;

use super::cache::Cache;
use super::generation::{Generation, Profile};
use super::outputs::Outputs;
use super::plan::SitePlan;
use super::BuildError;
use crate::store::{ObjectName, StateLock, Store};

/// Commits what `outputs` found and records a generation for every site
/// whose manifest changed; returns each site's generation and whether this
/// build recorded it. Takes no lock and creates nothing when nothing changed.
pub fn commit(
    state: &Path,
    outputs: &Outputs<'_>,
    plans: &[SitePlan],
    manifests: &[ObjectName],
) -> Result<Vec<(Generation, bool)>, BuildError> {
    if outputs.new.is_empty() && !new_cache_entries(outputs, &Cache::open(state)?) {
        if let Some(generations) = current(state, plans, manifests)? {
            return Ok(generations.into_iter().map(|g| (g, false)).collect());
        }
    }

    let _lock = StateLock::acquire(state)?;
    let store = Store::open(state)?;
    // Only a holder of the exclusive lock stages, so any staged file is a
    // leftover of a build that was killed.
    store.remove_staged_leftovers()?;
    // The build read the store without the lock: a gc since then may have
    // removed an object it reuses.
    let vanished: Vec<String> = outputs
        .kept
        .iter()
        .filter(|o| !store.contains(o))
        .map(ToString::to_string)
        .collect();
    if !vanished.is_empty() {
        return Err(BuildError::Vanished { objects: vanished });
    }
    let batch = store.batch();
    for (object, bytes) in &outputs.new {
        if outputs.corrupt.contains(object) {
            batch.replace(object, bytes)?;
        } else {
            batch.put(object, bytes)?;
        }
    }
    batch.commit()?;
    // Read again under the lock: another build may have added to it.
    let mut cache = Cache::open(state)?;
    cache.record(
        outputs
            .made
            .iter()
            .filter(|(key, _)| outputs.rendered.contains(*key)),
    )?;
    plans
        .iter()
        .zip(manifests)
        .map(|(plan, manifest)| Ok(Profile::open(state, &plan.site).record(manifest)?))
        .collect()
}

fn new_cache_entries(outputs: &Outputs<'_>, cache: &Cache) -> bool {
    outputs
        .made
        .iter()
        .any(|(key, object)| outputs.rendered.contains(key) && cache.lacks(key, object))
}

/// Each site's current generation, if every one already is `manifests`.
fn current(
    state: &Path,
    plans: &[SitePlan],
    manifests: &[ObjectName],
) -> Result<Option<Vec<Generation>>, BuildError> {
    let mut generations = Vec::new();
    for (plan, manifest) in plans.iter().zip(manifests) {
        match Profile::open(state, &plan.site).current()? {
            Some(record) if &record.manifest == manifest => generations.push(record.generation),
            _ => return Ok(None),
        }
    }
    Ok(Some(generations))
}
