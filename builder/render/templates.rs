//! Loading `templates/` into memory, hashing each artifact kind's template
//! set, and rendering with errors that point at the template line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::model::Diagnostic;
use crate::store::Digest;

/// The kinds of artifact, each rendered from its own folder of templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Firewall,
    Switch,
    Dhcp,
    Dns,
    CloudInit,
    Compose,
    Activation,
    Manifest,
}

impl Kind {
    pub const TEMPLATED: [Kind; 7] = [
        Kind::Firewall,
        Kind::Switch,
        Kind::Dhcp,
        Kind::Dns,
        Kind::CloudInit,
        Kind::Compose,
        Kind::Activation,
    ];

    /// The folder under `templates/`, and the name in `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Firewall => "firewall",
            Kind::Switch => "switch",
            Kind::Dhcp => "dhcp",
            Kind::Dns => "dns",
            Kind::CloudInit => "cloud-init",
            Kind::Compose => "compose",
            Kind::Activation => "activation",
            Kind::Manifest => "manifest",
        }
    }
}

/// A template failed: where, and what it was rendering.
#[derive(Debug, thiserror::Error)]
#[error("{diagnostic}")]
pub struct RenderError {
    pub diagnostic: Diagnostic,
}

/// Every template of the stack, in memory, with one hash per kind.
pub struct Templates {
    env: Environment<'static>,
    sources: BTreeMap<String, String>,
    hashes: BTreeMap<Kind, Digest>,
}

impl Templates {
    /// Reads every file under `<root>/templates` through the stack's one
    /// reader; a problem reading one is a diagnostic against the file.
    pub fn load(root: &Path) -> Result<Templates, Vec<Diagnostic>> {
        let dir = Path::new("templates");
        let inputs = crate::model::input::Inputs::new(root).map_err(|e| vec![e.at(root)])?;
        let mut sources = BTreeMap::new();
        let mut problems = Vec::new();
        for shown in inputs.walk(dir)? {
            let name = shown
                .strip_prefix(dir)
                .unwrap_or(&shown)
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            match inputs.read(&shown) {
                Ok(text) => {
                    sources.insert(name, text);
                }
                Err(d) => problems.push(d),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Templates::from_sources(sources)
    }

    /// Builds the environment from templates named by their path under
    /// `templates/` (`dns/zone.j2`).
    pub fn from_sources(sources: BTreeMap<String, String>) -> Result<Templates, Vec<Diagnostic>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Block tags on their own lines leave no blank lines or indentation.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build();
        match syntax {
            Ok(syntax) => env.set_syntax(syntax),
            Err(e) => {
                return Err(vec![Diagnostic::file(
                    "templates",
                    format!("template syntax settings: {e}"),
                )])
            }
        }
        env.add_filter("sh", sh_filter);
        let mut problems = Vec::new();
        for (name, text) in &sources {
            if let Err(e) = env.add_template_owned(name.clone(), text.clone()) {
                problems.push(diagnostic(&sources, &e, "parsing the template"));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let hashes = Kind::TEMPLATED
            .iter()
            .map(|&kind| (kind, hash_kind(&sources, kind)))
            .collect();
        Ok(Templates {
            env,
            sources,
            hashes,
        })
    }

    /// The hash of every template a kind may use: its own folder and `lib/`
    /// (shared macros), names and bytes.
    pub fn hash(&self, kind: Kind) -> Digest {
        self.hashes
            .get(&kind)
            .copied()
            .unwrap_or_else(|| Digest::of(b""))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// Renders template `name` with `context`; `what` says which artifact
    /// it was for, in the error.
    pub fn render<C: Serialize>(
        &self,
        name: &str,
        context: &C,
        what: &str,
    ) -> Result<String, RenderError> {
        let template = self.env.get_template(name).map_err(|e| RenderError {
            diagnostic: Diagnostic::file(
                PathBuf::from("templates").join(name),
                format!("template not found while rendering {what}: {e}"),
            ),
        })?;
        template
            .render(minijinja::Value::from(minijinja::value::Serde(context)))
            .map_err(|e| RenderError {
                diagnostic: diagnostic(&self.sources, &e, &format!("rendering {what}")),
            })
    }
}

fn hash_kind(sources: &BTreeMap<String, String>, kind: Kind) -> Digest {
    let own = format!("{}/", kind.as_str());
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sov-templates-v1\0");
    for (name, text) in sources {
        if name.starts_with(&own) || name.starts_with("lib/") {
            hasher.update(&(name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update(&(text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
    }
    Digest::from_hasher(hasher)
}

/// A minijinja error as a diagnostic at the template line it names.
fn diagnostic(sources: &BTreeMap<String, String>, e: &minijinja::Error, doing: &str) -> Diagnostic {
    let name = e.name().unwrap_or("?");
    let line = e.line().unwrap_or(0);
    let excerpt = sources
        .get(name)
        .and_then(|s| s.lines().nth(line.saturating_sub(1)))
        .unwrap_or_default()
        .to_string();
    let column = excerpt
        .find(|c: char| !c.is_whitespace())
        .map_or(1, |c| c + 1);
    let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
    Diagnostic {
        file: PathBuf::from("templates").join(name),
        line,
        column,
        excerpt,
        message: format!("{}{detail} ({doing})", e.kind()),
    }
}

/// `{{ argv | sh }}`: a list of words as one shell command line, each quoted.
fn sh_filter(argv: Vec<String>) -> String {
    argv.iter()
        .map(|w| super::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}
