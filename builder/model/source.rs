//! A parsed input file kept with its text, so that any later check can point
//! at the line and column of the value it is about.

use std::path::PathBuf;
use std::sync::OnceLock;

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
    text: String,
    /// Made on the first diagnostic and kept: a file with thousands of
    /// problems is parsed for positions once, not once per problem.
    index: OnceLock<Index>,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        Self {
            path: path.into(),
            text,
            index: OnceLock::new(),
        }
    }

    /// Deserializes the whole file; a syntax or type error becomes a
    /// diagnostic at the position toml reports.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Diagnostic> {
        toml::from_str(&self.text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start);
            self.diagnostic_at(start, e.message().trim_end().to_string())
        })
    }

    /// A diagnostic at the value found by `path`; at the nearest enclosing
    /// value that exists when the path ends early (a missing key).
    pub fn at(&self, path: &[Step<'_>], message: impl Into<String>) -> Diagnostic {
        let start = self.index().start_of(path);
        self.diagnostic_at(start, message.into())
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| Index::new(&self.text))
    }

    fn diagnostic_at(&self, start: usize, message: String) -> Diagnostic {
        let start = start.min(self.text.len());
        let (line, line_start) = self.index().line_of(start);
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

/// Where every value of a document and every line starts, owned so that it
/// can live beside the text it was read from.
#[derive(Debug, Clone)]
struct Index {
    /// None when the document does not parse: every path points at its start.
    root: Option<Node>,
    /// Byte offsets of the line starts, the first being 0.
    lines: Vec<usize>,
}

/// A value: where it starts, and its keys or elements.
#[derive(Debug, Clone)]
struct Node {
    start: usize,
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Scalar,
    /// Sorted by key.
    Table(Box<[(Box<str>, Node)]>),
    Array(Box<[Node]>),
}

impl Index {
    fn new(text: &str) -> Index {
        let root = DeTable::parse(text).ok().map(|root| Node {
            start: root.span().start,
            inner: Node::table(root.get_ref()),
        });
        let lines = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Index { root, lines }
    }

    fn start_of(&self, path: &[Step<'_>]) -> usize {
        let Some(mut node) = self.root.as_ref() else {
            return 0;
        };
        for step in path {
            let next = match (*step, &node.inner) {
                (Step::Key(key), Inner::Table(entries)) => entries
                    .binary_search_by(|(k, _)| k.as_ref().cmp(key))
                    .ok()
                    .map(|i| &entries[i].1),
                (Step::Index(i), Inner::Array(elements)) => elements.get(i),
                _ => None,
            };
            let Some(next) = next else { break };
            node = next;
        }
        node.start
    }

    /// The 1-based line holding byte `offset`, and where that line starts.
    fn line_of(&self, offset: usize) -> (usize, usize) {
        let line = self.lines.partition_point(|&s| s <= offset).max(1);
        (line, self.lines[line - 1])
    }
}

impl Node {
    fn new(value: &Spanned<DeValue<'_>>) -> Node {
        let inner = match value.get_ref() {
            DeValue::Table(table) => Node::table(table),
            DeValue::Array(array) => Inner::Array(array.iter().map(Node::new).collect()),
            _ => Inner::Scalar,
        };
        Node {
            start: value.span().start,
            inner,
        }
    }

    fn table(table: &DeTable<'_>) -> Inner {
        let mut entries: Vec<(Box<str>, Node)> = table
            .iter()
            .map(|(key, value)| (Box::from(key.get_ref().as_ref()), Node::new(value)))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Inner::Table(entries.into_boxed_slice())
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
    fn points_into_inline_values_and_quoted_keys() {
        let text = "a = [1, { \"b c\" = 2 }]\n\n[t]\n\"x.y\" = [\n  3,\n  4,\n]\n";
        let src = Source::new("x.toml", text.to_string());
        let at = |path: &[Step<'_>]| {
            let d = src.at(path, "");
            (d.line, d.column)
        };
        assert_eq!(at(crate::path!["a", 1, "b c"]), (1, 19));
        assert_eq!(at(crate::path!["t", "x.y", 1]), (6, 3));
        assert_eq!(
            at(crate::path!["t", "x.y", 9]),
            (4, 9),
            "past the end: the array"
        );
        assert_eq!(
            at(crate::path!["a", "k"]),
            (1, 5),
            "a key of an array: the array"
        );
    }

    #[test]
    fn an_unparsable_document_points_at_its_start() {
        let src = Source::new("x.toml", "a = \n[b".to_string());
        let d = src.at(crate::path!["a"], "bad");
        assert_eq!((d.line, d.column, d.excerpt.as_str()), (1, 1, "a = "));
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
