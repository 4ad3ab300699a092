//! Reading the stack's TOML files from disk, with positions for every error.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::names::{ImageName, SiteName};
use super::{Diagnostic, Diagnostics, Loaded, Source, Stack};

pub const SETTINGS_FILE: &str = "sites/stack.toml";

pub fn load(root: PathBuf) -> Result<Stack, Diagnostics> {
    let mut problems = Diagnostics::default();
    let settings = read(&root, Path::new(SETTINGS_FILE)).map_err(|d| Diagnostics(vec![d]));
    let settings = match settings.and_then(|s| parse(s).map_err(|d| Diagnostics(vec![d]))) {
        Ok(s) => Some(s),
        Err(d) => {
            problems.extend(d);
            None
        }
    };

    let mut sites = BTreeMap::new();
    for rel in toml_files(&root, "sites", &mut problems) {
        if rel == Path::new(SETTINGS_FILE) {
            continue;
        }
        match read(&root, &rel).and_then(parse::<super::Site>) {
            Ok(site) => match name_from_stem::<SiteName>(&rel) {
                Ok(stem) if stem == site.value.name => {
                    sites.insert(stem, site);
                }
                Ok(stem) => problems.push(site.source.at(
                    crate::path!["name"],
                    format!(
                        "site is named `{}` but its file is `{}`: expected name = \"{stem}\"",
                        site.value.name,
                        rel.display()
                    ),
                )),
                Err(d) => problems.push(d),
            },
            Err(d) => problems.push(d),
        }
    }
    if sites.is_empty() && problems.is_empty() {
        problems.push(Diagnostic::file(
            "sites",
            "no site found: expected at least one sites/<name>.toml besides stack.toml",
        ));
    }

    let mut images = BTreeMap::new();
    for rel in toml_files(&root, "images", &mut problems) {
        let image = read(&root, &rel).and_then(parse::<super::Image>);
        match (name_from_stem::<ImageName>(&rel), image) {
            (Ok(name), Ok(image)) => {
                images.insert(name, image);
            }
            (Err(d), _) | (_, Err(d)) => problems.push(d),
        }
    }

    match settings {
        Some(settings) if problems.is_empty() => Ok(Stack {
            root,
            settings,
            sites,
            images,
        }),
        _ => Err(problems.into_sorted()),
    }
}

/// `<dir>/*.toml` under the root, sorted, as paths relative to the root.
fn toml_files(root: &Path, dir: &str, problems: &mut Diagnostics) -> Vec<PathBuf> {
    let entries = match fs::read_dir(root.join(dir)) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Diagnostic::file(
                dir,
                format!("cannot read the directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| PathBuf::from(dir).join(e.file_name()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn read(root: &Path, rel: &Path) -> Result<Source, Diagnostic> {
    let bytes = fs::read(root.join(rel))
        .map_err(|e| Diagnostic::file(rel, format!("cannot read the file: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Diagnostic::file(rel, format!("expected UTF-8 text: {e}")))?;
    Ok(Source::new(rel, text))
}

fn parse<T: DeserializeOwned>(source: Source) -> Result<Loaded<T>, Diagnostic> {
    let value = source.parse()?;
    Ok(Loaded { source, value })
}

fn name_from_stem<T: TryFrom<String, Error = super::names::NameError>>(
    rel: &Path,
) -> Result<T, Diagnostic> {
    let stem = rel
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    T::try_from(stem)
        .map_err(|e| Diagnostic::file(rel, format!("the file name must be a valid name: {e}")))
}
