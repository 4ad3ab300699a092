//! `sov diff`: what changed between two generations of a site, per host
//! and for the site's own artifacts, with unified diffs of the text inside.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;

use similar::TextDiff;

use super::gc::{read_json, GcError};
use super::manifest::{ArtifactEntry, HostManifest, SiteManifest};
use crate::pack;
use crate::store::{ObjectName, Store};

/// How one artifact differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// The artifacts of one host (or of the site, `host` None) that differ.
#[derive(Debug, Clone)]
pub struct Section {
    pub host: Option<String>,
    pub changes: Vec<(Change, ArtifactEntry, Option<ArtifactEntry>)>,
}

/// Compares two site manifests; hosts are matched by name, artifacts by kind
/// and name.
pub fn compare(store: &Store, from: &ObjectName, to: &ObjectName) -> Result<Vec<Section>, GcError> {
    let a: SiteManifest = read_json(store, from)?;
    let b: SiteManifest = read_json(store, to)?;
    let mut sections = vec![Section {
        host: None,
        changes: changes(&a.artifacts, &b.artifacts),
    }];
    let hosts = |m: &SiteManifest| -> Result<BTreeMap<String, Vec<ArtifactEntry>>, GcError> {
        m.hosts
            .iter()
            .map(|h| {
                Ok((
                    h.name.clone(),
                    read_json::<HostManifest>(store, &h.manifest)?.artifacts,
                ))
            })
            .collect()
    };
    let (old, new) = (hosts(&a)?, hosts(&b)?);
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let none = Vec::new();
        let list = changes(
            old.get(name).unwrap_or(&none),
            new.get(name).unwrap_or(&none),
        );
        sections.push(Section {
            host: Some(name.clone()),
            changes: list,
        });
    }
    sections.retain(|s| !s.changes.is_empty());
    Ok(sections)
}

fn changes(
    old: &[ArtifactEntry],
    new: &[ArtifactEntry],
) -> Vec<(Change, ArtifactEntry, Option<ArtifactEntry>)> {
    let key = |a: &ArtifactEntry| (a.kind.clone(), a.name.clone());
    let old: BTreeMap<_, _> = old.iter().map(|a| (key(a), a)).collect();
    let new: BTreeMap<_, _> = new.iter().map(|a| (key(a), a)).collect();
    let mut out = Vec::new();
    for (k, a) in &old {
        match new.get(k) {
            None => out.push((Change::Removed, (*a).clone(), None)),
            Some(b) if b.object != a.object => {
                out.push((Change::Changed, (*a).clone(), Some((*b).clone())))
            }
            Some(_) => {}
        }
    }
    for (k, b) in &new {
        if !old.contains_key(k) {
            out.push((Change::Added, (*b).clone(), None));
        }
    }
    out
}

/// The text files inside an artifact, for diffing: the artifact itself for
/// text kinds, the files of a bundle or of a seed image, nothing for bytes
/// that are not text.
pub fn texts(store: &Store, artifact: &ArtifactEntry) -> Vec<(String, String)> {
    let Ok(bytes) = store.read(&artifact.object) else {
        return Vec::new();
    };
    let name = artifact.name.clone();
    match artifact.kind.as_str() {
        "compose" => pack::unzstd(&bytes)
            .ok()
            .and_then(|tar| pack::untar(&tar).ok())
            .map(|entries| {
                entries
                    .into_iter()
                    .filter_map(|e| {
                        Some((
                            format!("{name}/{}", e.path),
                            String::from_utf8(e.contents).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "cloud-init" => seed_files(&bytes)
            .into_iter()
            .map(|(file, text)| (format!("{name}/{file}"), text))
            .collect(),
        _ => String::from_utf8(bytes)
            .map(|t| vec![(name, t)])
            .unwrap_or_default(),
    }
}

fn seed_files(image: &[u8]) -> Vec<(String, String)> {
    let Ok(fs) = fatfs::FileSystem::new(
        std::io::Cursor::new(image.to_vec()),
        fatfs::FsOptions::new(),
    ) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in fs.root_dir().iter().flatten() {
        if entry.is_file() {
            let mut text = String::new();
            if entry.to_file().read_to_string(&mut text).is_ok() {
                files.push((entry.file_name(), text));
            }
        }
    }
    files.sort();
    files
}

/// The report: a line per changed artifact, then unified diffs of its text.
pub fn render(store: &Store, sections: &[Section], from: u64, to: u64) -> String {
    let mut out = String::new();
    if sections.is_empty() {
        let _ = writeln!(out, "generations {from} and {to} have the same artifacts");
        return out;
    }
    for section in sections {
        let _ = writeln!(
            out,
            "{}:",
            section
                .host
                .as_deref()
                .map_or("site".to_string(), |h| format!("host {h}"))
        );
        for (change, a, _) in &section.changes {
            let word = match change {
                Change::Added => "added",
                Change::Removed => "removed",
                Change::Changed => "changed",
            };
            let _ = writeln!(out, "  {word:<8} {:<10} {}", a.kind, a.name);
        }
        for (change, a, b) in &section.changes {
            let (old, new) = match change {
                Change::Added => (Vec::new(), texts(store, a)),
                Change::Removed => (texts(store, a), Vec::new()),
                Change::Changed => (
                    texts(store, a),
                    b.as_ref().map(|b| texts(store, b)).unwrap_or_default(),
                ),
            };
            let old: BTreeMap<String, String> = old.into_iter().collect();
            let new: BTreeMap<String, String> = new.into_iter().collect();
            let mut files: Vec<&String> = old.keys().chain(new.keys()).collect();
            files.sort();
            files.dedup();
            for file in files {
                let (x, y) = (
                    old.get(file).map_or("", String::as_str),
                    new.get(file).map_or("", String::as_str),
                );
                if x == y {
                    continue;
                }
                let diff = TextDiff::from_lines(x, y);
                let _ = write!(
                    out,
                    "{}",
                    diff.unified_diff().header(
                        &format!("{file} (generation {from})"),
                        &format!("{file} (generation {to})")
                    )
                );
            }
        }
    }
    out
}
