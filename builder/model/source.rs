//! A parsed input file kept with its text, so that any later check can point
//! at the line and column of the value it is about.

use std::ops::Range;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::Diagnostic;

/// One step of a path into a TOML document: a key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl<'a> From<&'a str> for Step<'a> {
    fn from(key: &'a str) -> Self {
        Step::Key(key)
    }
}

impl From<usize> for Step<'_> {
    fn from(index: usize) -> Self {
        Step::Index(index)
    }
}

/// Builds a `&[Step]` from keys and indices: `path!["hosts", 2, "mac"]`.
#[macro_export]
macro_rules! path {
    ($($step:expr),* $(,)?) => {
        &[$($crate::model::source::Step::from($step)),*]
    };
}

/// A TOML file of the stack with its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// Relative to the stack root, as shown in diagnostics.
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        Self {
            path: path.into(),
            text,
        }
    }

    /// Deserializes the whole file; a syntax or type error becomes a
    /// diagnostic at the position toml reports.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.diagnostic_at(span, e.message().trim_end().to_string())
        })
    }

    /// A diagnostic at the value found by `path`; at the nearest enclosing
    /// value that exists when the path ends early (a missing key).
    pub fn at(&self, path: &[Step<'_>], message: impl Into<String>) -> Diagnostic {
        let span = self.span_of(path).unwrap_or(0..0);
        self.diagnostic_at(span, message.into())
    }

    fn span_of(&self, path: &[Step<'_>]) -> Option<Range<usize>> {
        let root: Spanned<DeTable<'_>> = DeTable::parse(&self.text).ok()?;
        let mut span = root.span();
        let mut table = Some(root.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for step in path {
            let next = match (*step, table, value.map(|v| v.get_ref())) {
                (Step::Key(key), Some(t), _) => t.get(key),
                (Step::Index(i), _, Some(DeValue::Array(a))) => a.get(i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            table = next.get_ref().as_table();
            value = Some(next);
        }
        Some(span)
    }

    fn diagnostic_at(&self, span: Range<usize>, message: String) -> Diagnostic {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = self.text[..start].matches('\n').count() + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let excerpt = self.text[line_start..]
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        Diagnostic {
            file: self.path.clone(),
            line,
            column,
            excerpt,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"a\"\n\n[[hosts]]\nname = \"x\"\nmac = \"zz\"\n\n[[hosts]]\nname = \"y\"\nmac = \"52\"\n";

    #[test]
    fn points_at_nested_values() {
        let src = Source::new("sites/a.toml", TEXT.to_string());
        let d = src.at(crate::path!["hosts", 1, "mac"], "bad mac");
        assert_eq!((d.line, d.column), (9, 7));
        assert_eq!(d.excerpt, "mac = \"52\"");
        let d = src.at(crate::path!["hosts", 0, "missing"], "no key");
        assert_eq!(d.line, 3, "a missing key points at its table");
    }

    #[test]
    fn parse_errors_carry_positions() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            name: u32,
        }
        let src = Source::new("x.toml", "\nname = \"a\"\n".to_string());
        let d = src.parse::<T>().unwrap_err();
        assert_eq!((d.line, d.column), (2, 8));
        assert!(d.message.contains("expected u32"), "{}", d.message);
    }
}
