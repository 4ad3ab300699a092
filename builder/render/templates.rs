//! Loading `templates/` into memory, hashing each artifact kind's template
//! set, and rendering with errors that point at the template line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::model::{Diagnostic, Diagnostics};
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
    /// Whether template `name` belongs to this kind's folder.
    fn owns(self, name: &str) -> bool {
        name.strip_prefix(self.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Whether this kind's templates may read template `name`: their own
    /// folder and the shared macros in `lib/`.
    fn reads(self, name: &str) -> bool {
        self.owns(name) || name.starts_with("lib/")
    }

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
    envs: BTreeMap<Kind, Environment<'static>>,
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

    /// Builds one environment per artifact kind from templates named by their
    /// path under `templates/` (`dns/zone.j2`). A kind's environment holds
    /// its own folder and `lib/` and nothing else: an include of another
    /// kind's template is an error, so a kind's hash covers all it can read.
    pub fn from_sources(sources: BTreeMap<String, String>) -> Result<Templates, Vec<Diagnostic>> {
        let mut envs = BTreeMap::new();
        let mut problems = Vec::new();
        for kind in Kind::TEMPLATED {
            let mut env = environment()?;
            for (name, text) in sources.iter().filter(|(name, _)| kind.reads(name)) {
                if let Err(e) = env.add_template_owned(name.clone(), text.clone()) {
                    problems.push(diagnostic(&sources, &e, "parsing the template"));
                }
            }
            envs.insert(kind, env);
        }
        if !problems.is_empty() {
            return Err(Diagnostics(problems).into_sorted().0);
        }
        let hashes = Kind::TEMPLATED
            .iter()
            .map(|&kind| (kind, hash_kind(&sources, kind)))
            .collect();
        Ok(Templates {
            envs,
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
    /// it was for, in the error. The render stops when it has run
    /// out of fuel or written [`MAX_OUTPUT`] bytes.
    pub fn render(&self, name: &str, context: &Context, what: &str) -> Result<String, RenderError> {
        let kind = Kind::TEMPLATED.into_iter().find(|k| k.owns(name));
        let mut env = kind.and_then(|k| self.envs.get(&k)).cloned();
        if let Some(env) = &mut env {
            env.set_fuel(Some(context.fuel()));
        }
        let template = env
            .as_ref()
            .ok_or_else(|| minijinja::Error::new(ErrorKind::TemplateNotFound, name.to_string()))
            .and_then(|env| env.get_template(name))
            .map_err(|e| RenderError {
                diagnostic: Diagnostic::file(
                    PathBuf::from("templates").join(name),
                    format!("template not found while rendering {what}: {e}"),
                ),
            })?;
        let mut out = Capped::default();
        let rendered = template.render_captured_to(context.value.clone(), &mut out);
        match rendered {
            Ok(_) => String::from_utf8(out.bytes).map_err(|_| RenderError {
                diagnostic: Diagnostic::file(
                    PathBuf::from("templates").join(name),
                    format!("rendering {what} gave text that is not UTF-8"),
                ),
            }),
            Err(_) if out.full => Err(RenderError {
                diagnostic: Diagnostic::file(
                    PathBuf::from("templates").join(name),
                    format!(
                        "the output is larger than {} MiB, the most an artifact may be (rendering {what})",
                        MAX_OUTPUT >> 20
                    ),
                ),
            }),
            Err(e) => Err(RenderError {
                diagnostic: diagnostic(&self.sources, &e, &format!("rendering {what}")),
            }),
        }
    }
}

/// What a template renders from: a derivation's context, the canonical JSON
/// its key hashed, read once for all the templates of the artifact.
pub struct Context {
    value: minijinja::Value,
    size: u64,
}

impl Context {
    pub fn from_json(json: &[u8]) -> Result<Context, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_slice(json)?;
        Ok(Context {
            value: minijinja::Value::from(minijinja::value::Serde(&value)),
            size: json.len() as u64,
        })
    }

    /// Fuel in proportion to the data: a template may do a bounded amount of
    /// work per byte of what it reads, and a runaway loop over a small
    /// context stops within a second.
    fn fuel(&self) -> u64 {
        FUEL_BASE + FUEL_PER_BYTE * self.size
    }
}

/// Template steps one artifact may take, plus [`FUEL_PER_BYTE`] per byte of
/// its context (see `render`).
pub const FUEL_BASE: u64 = 500_000;
pub const FUEL_PER_BYTE: u64 = 40;

/// The largest artifact a template may write.
pub const MAX_OUTPUT: usize = 64 << 20;

/// A writer that refuses to grow past [`MAX_OUTPUT`].
#[derive(Default)]
struct Capped {
    bytes: Vec<u8>,
    full: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT {
            self.full = true;
            return Err(std::io::Error::other("output cap reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An environment with sov's settings: strict undefined values, no
/// auto-escaping but the encoders (`render::encode`), fuel.
fn environment() -> Result<Environment<'static>, Vec<Diagnostic>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Block tags on their own lines leave no blank lines or indentation.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| {
            vec![Diagnostic::file(
                "templates",
                format!("template syntax settings: {e}"),
            )]
        })?;
    env.set_syntax(syntax);
    super::encode::install(&mut env);
    Ok(env)
}

fn hash_kind(sources: &BTreeMap<String, String>, kind: Kind) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sov-templates-v2\0");
    for (name, text) in sources.iter().filter(|(name, _)| kind.reads(name)) {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
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
