//! Finding every object a build needs without writing anything: reused from
//! the cache once a re-hash proves it sound, or rendered and held in memory
//! until the commit. Input problems are collected, not stopped at.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::cache::Cache;
use super::parallel;
use super::plan::Derivation;
use super::realise::{realise, RealiseError};
use super::BuildError;
use crate::model::Diagnostics;
use crate::render::Templates;
use crate::store::{Digest, Health, ObjectName, Store, StoreError};

pub struct Outputs<'a> {
    templates: &'a Templates,
    store: &'a Store,
    /// The objects the store held when the build began.
    present: HashSet<ObjectName>,
    /// Derivation key to the object it made (or the cache had).
    pub made: BTreeMap<Digest, ObjectName>,
    /// Keys rendered in this build (the rest were reused).
    pub rendered: BTreeSet<Digest>,
    /// Objects used as the store holds them: the commit checks they are
    /// still there.
    pub kept: Vec<ObjectName>,
    /// Bytes the commit writes.
    pub new: BTreeMap<ObjectName, Vec<u8>>,
    /// Objects found corrupt: the commit writes their bytes over them.
    pub corrupt: BTreeSet<ObjectName>,
    problems: Diagnostics,
}

impl<'a> Outputs<'a> {
    pub fn new(templates: &'a Templates, store: &'a Store) -> Result<Self, StoreError> {
        Ok(Outputs {
            templates,
            store,
            present: store.list()?.into_iter().collect(),
            made: BTreeMap::new(),
            rendered: BTreeSet::new(),
            kept: Vec::new(),
            new: BTreeMap::new(),
            corrupt: BTreeSet::new(),
            problems: Diagnostics::default(),
        })
    }

    /// Reuses what the cache names and a re-hash proves sound; renders the
    /// rest, in parallel, into memory.
    pub fn realise_all(
        &mut self,
        cache: &Cache,
        derivations: &[&Derivation],
    ) -> Result<(), BuildError> {
        let mut seen = BTreeSet::new();
        let mut hits: Vec<(&Derivation, ObjectName)> = Vec::new();
        let mut missing: Vec<&Derivation> = Vec::new();
        for d in derivations {
            if !seen.insert(d.key) {
                continue;
            }
            match cache.lookup(&self.present, &d.key) {
                Some(object) => hits.push((d, object)),
                None => missing.push(d),
            }
        }
        // A flipped bit must not travel on to hosts: every reused object is
        // re-hashed (cheap next to rendering; see the README).
        let store = self.store;
        let health = parallel::map(&hits, |(_, object)| store.check(object));
        for ((d, object), health) in hits.into_iter().zip(health) {
            match health? {
                Health::Sound => {
                    self.made.insert(d.key, object.clone());
                    self.kept.push(object);
                }
                Health::Corrupt => {
                    self.corrupt.insert(object);
                    missing.push(d);
                }
                Health::Missing => missing.push(d),
            }
        }
        let templates = self.templates;
        let results = parallel::map(&missing, |d| realise(templates, d));
        let mut fresh = Vec::new();
        for (d, result) in missing.iter().zip(results) {
            match result {
                Ok(output) => {
                    self.made.insert(d.key, output.object.clone());
                    self.rendered.insert(d.key);
                    fresh.push((output.object, output.bytes));
                }
                Err(RealiseError::Input(diagnostic)) => self.problems.push(diagnostic),
                Err(RealiseError::Pack { what, source }) => {
                    return Err(BuildError::Pack { what, source })
                }
                Err(RealiseError::Context { what, source }) => {
                    return Err(BuildError::Context { what, source })
                }
            }
        }
        self.add(fresh)
    }

    /// Adds objects made in memory (rendered artifacts, manifests). One the
    /// store already holds is kept if sound and rewritten if corrupt.
    pub fn add(&mut self, objects: Vec<(ObjectName, Vec<u8>)>) -> Result<(), BuildError> {
        let store = self.store;
        let present = &self.present;
        let corrupt = &self.corrupt;
        let health = parallel::map(&objects, |(object, _)| {
            if present.contains(object) && !corrupt.contains(object) {
                store.check(object)
            } else {
                Ok(Health::Missing)
            }
        });
        for ((object, bytes), health) in objects.into_iter().zip(health) {
            match health? {
                Health::Sound => self.kept.push(object),
                Health::Corrupt => {
                    self.corrupt.insert(object.clone());
                    self.new.insert(object, bytes);
                }
                Health::Missing => {
                    self.new.insert(object, bytes);
                }
            }
        }
        Ok(())
    }

    pub fn fail_on_problems(&mut self) -> Result<(), BuildError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(BuildError::Input(
                std::mem::take(&mut self.problems).into_sorted(),
            ))
        }
    }
}
