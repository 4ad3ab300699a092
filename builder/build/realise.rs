//! Realising a derivation: render its templates, check the output parses in
//! its format, pack it, and name it by the hash of its fixed encoding.

use std::path::PathBuf;

use super::plan::{Derivation, Recipe, SEED_FILES};
use crate::model::Diagnostic;
use crate::pack::{self, Entry, PackError};
use crate::render::{Context, Kind, Templates, COMPOSE_FILE};
use crate::store::{Digest, ObjectName};

/// The bytes of a realised derivation and the name they are stored under.
#[derive(Debug)]
pub struct Output {
    pub object: ObjectName,
    pub bytes: Vec<u8>,
}

/// Why a derivation could not be realised: the user's input (a template),
/// or sov itself.
#[derive(Debug, thiserror::Error)]
pub enum RealiseError {
    #[error("{0}")]
    Input(Diagnostic),
    #[error("packing {what}")]
    Pack {
        what: String,
        #[source]
        source: PackError,
    },
    #[error("reading back the context of {what}")]
    Context {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

pub fn realise(templates: &Templates, d: &Derivation) -> Result<Output, RealiseError> {
    // The context was serialized by sov itself a moment ago: failing to read
    // it back is sov's error, not the stack's.
    let context = Context::from_json(&d.context).map_err(|source| RealiseError::Context {
        what: d.what(),
        source,
    })?;
    let render = |template: &str| {
        templates
            .render(template, &context, &d.what())
            .map_err(|e| RealiseError::Input(e.diagnostic))
    };
    let pack_error = |source| RealiseError::Pack {
        what: d.what(),
        source,
    };
    let (digest, bytes) = match &d.recipe {
        Recipe::Text { template } => {
            let text = render(template)?;
            check_format(d.kind, template, &text)?;
            let bytes = text.into_bytes();
            (Digest::of(&bytes), bytes)
        }
        Recipe::Seed => {
            let mut files = Vec::new();
            for (file, template) in SEED_FILES {
                let text = render(template)?;
                check_yaml(template, &text)?;
                files.push((file.to_string(), text.into_bytes()));
            }
            let image = pack::seed_image("cidata", &files).map_err(pack_error)?;
            (Digest::of(&image), image)
        }
        Recipe::Bundle { files } => {
            let compose_template = "compose/compose.yaml.j2";
            let compose = render(compose_template)?;
            check_yaml(compose_template, &compose)?;
            let mut entries = vec![Entry {
                path: COMPOSE_FILE.to_string(),
                contents: compose.into_bytes(),
                mode: 0o644,
            }];
            for f in files {
                entries.push(Entry {
                    path: f.path.clone(),
                    contents: render(&f.template)?.into_bytes(),
                    mode: f.mode,
                });
            }
            let tar = pack::tar(&entries).map_err(pack_error)?;
            let digest = Digest::of(&tar);
            (digest, pack::zstd(&tar).map_err(pack_error)?)
        }
    };
    let object = ObjectName::new(digest, &d.name).map_err(|e| {
        RealiseError::Input(Diagnostic::file(
            "sites",
            format!("{} cannot name a store object: {e}", d.what()),
        ))
    })?;
    Ok(Output { object, bytes })
}

/// A template whose output does not parse in its own format is caught here,
/// at build time, rather than on a host.
fn check_format(kind: Kind, template: &str, text: &str) -> Result<(), RealiseError> {
    match kind {
        Kind::Dhcp => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map(drop)
            .map_err(|e| output_error(template, "JSON", e.line(), &e.to_string())),
        _ => Ok(()),
    }
}

fn check_yaml(template: &str, text: &str) -> Result<(), RealiseError> {
    serde_saphyr::from_str::<serde_json::Value>(text)
        .map(drop)
        .map_err(|e| output_error(template, "YAML", 0, &e.to_string()))
}

fn output_error(template: &str, format: &str, line: usize, error: &str) -> RealiseError {
    let at = if line > 0 {
        format!(" at output line {line}")
    } else {
        String::new()
    };
    RealiseError::Input(Diagnostic::file(
        PathBuf::from("templates").join(template),
        format!("the template's output is not valid {format}{at}: {error}"),
    ))
}
