//! `sov build --check`: the build done again in a fresh store, to prove
//! every artifact reproducible.

use std::path::Path;

use super::CliError;
use crate::build::{self, Paths, Report};
use crate::store::{Health, ObjectName, Store};

/// Rebuilds into a temporary state directory and compares every artifact's
/// bytes with what the real store holds.
pub fn check(paths: &Paths<'_>, sites: &[String], report: &Report) -> Result<(), CliError> {
    let scratch = paths.state.join(format!("check-{}", std::process::id()));
    let result = (|| {
        let fresh = build::build(
            &Paths {
                root: paths.root,
                state: &scratch,
            },
            sites,
        )?;
        let store = Store::at(paths.state);
        let (mut differ, mut corrupt) = (Vec::new(), Vec::new());
        for (ours, theirs) in report.sites.iter().zip(&fresh.sites) {
            for (a, b) in ours.artifacts.iter().zip(&theirs.artifacts) {
                let same =
                    a.name == b.name && std::fs::read(&a.path).ok() == std::fs::read(&b.path).ok();
                if same {
                    continue;
                }
                // Bytes that no longer match their own hash are corruption,
                // not a build that changed.
                match object_of(&a.path).map(|o| store.check(&o)).transpose()? {
                    Some(Health::Corrupt) => corrupt.push(a.path.display().to_string()),
                    _ => differ.push(format!("{} ({})", a.name, a.kind.as_str())),
                }
            }
        }
        if !corrupt.is_empty() {
            Err(CliError::Corrupt {
                count: corrupt.len(),
                names: corrupt,
            })
        } else if differ.is_empty() {
            Ok(())
        } else {
            Err(CliError::NotReproducible { artifacts: differ })
        }
    })();
    // A scratch build that failed wrote nothing, not even its directory.
    match std::fs::remove_dir_all(&scratch) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CliError::Path {
            path: scratch.clone(),
            source: e,
        }),
        _ => result,
    }
}

fn object_of(path: &Path) -> Option<ObjectName> {
    path.file_name()?.to_str()?.parse().ok()
}
