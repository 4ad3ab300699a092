//! Reading the stack's TOML files from disk, with positions for every error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::input::Inputs;
use super::names::{ImageName, SiteName};
use super::{Diagnostic, Diagnostics, Loaded, Source, Stack};

pub const SETTINGS_FILE: &str = "sites/stack.toml";

pub fn load(root: PathBuf) -> Result<Stack, Diagnostics> {
    let inputs = Inputs::new(&root).map_err(|e| Diagnostics(vec![e.at(&root)]))?;
    let mut problems = Diagnostics::default();
    let settings = read(&inputs, Path::new(SETTINGS_FILE)).map_err(|d| Diagnostics(vec![d]));
    let settings = match settings.and_then(|s| parse(s).map_err(|d| Diagnostics(vec![d]))) {
        Ok(s) => Some(s),
        Err(d) => {
            problems.extend(d);
            None
        }
    };

    let mut sites = BTreeMap::new();
    for rel in toml_files(&inputs, "sites", &mut problems) {
        if rel == Path::new(SETTINGS_FILE) {
            continue;
        }
        match read(&inputs, &rel).and_then(parse::<super::Site>) {
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
    for rel in toml_files(&inputs, "images", &mut problems) {
        let image = read(&inputs, &rel).and_then(parse::<super::Image>);
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
fn toml_files(inputs: &Inputs, dir: &str, problems: &mut Diagnostics) -> Vec<PathBuf> {
    inputs
        .list(Path::new(dir), |p| {
            p.extension().is_some_and(|x| x == "toml")
        })
        .unwrap_or_else(|d| {
            problems.push(d);
            Vec::new()
        })
}

fn read(inputs: &Inputs, rel: &Path) -> Result<Source, Diagnostic> {
    Ok(Source::new(rel, inputs.read(rel)?))
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
