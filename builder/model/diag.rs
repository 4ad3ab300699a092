//! Diagnostics for bad input: where (file, line, column), the offending line,
//! and what was expected. A run collects all of them before it gives up.

use std::borrow::Cow;
use std::fmt::{self, Write};
use std::path::PathBuf;

/// One problem in the stack's input files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path as the user would type it, relative to the stack root.
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem is the file as a whole.
    pub line: usize,
    pub column: usize,
    /// The text of the offending line, shown under the message.
    pub excerpt: String,
    pub message: String,
}

impl Diagnostic {
    /// A problem with a whole file (missing, unreadable, misnamed).
    pub fn file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            column: 0,
            excerpt: String::new(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.to_string_lossy();
        let (file, message) = (printable(&file), printable(&self.message));
        if self.line == 0 {
            return write!(f, "error: {file}: {message}");
        }
        writeln!(f, "error: {file}:{}:{}: {message}", self.line, self.column)?;
        let gutter = self.line.to_string().len();
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{} | {}", self.line, printable(&self.excerpt))?;
        // The caret goes under the column's character as printed: escapes
        // widen what comes before it, a tab stays a tab.
        let before = self.column.saturating_sub(1);
        let mut pad = String::new();
        for c in self.excerpt.chars().take(before) {
            match c {
                '\t' => pad.push('\t'),
                c => pad.extend(std::iter::repeat_n(' ', escape(c).map_or(1, |e| e.len()))),
            }
        }
        // A column past the end of the line (a missing value) keeps its place.
        let past_end = before.saturating_sub(self.excerpt.chars().count());
        pad.extend(std::iter::repeat_n(' ', past_end));
        write!(f, "{:gutter$} | {pad}^", "")
    }
}

/// `text` as it may be printed on a terminal: every control character but
/// tab, and every character that reorders text (Trojan Source), written as
/// an escape, so that a value quoted in a message cannot colour the
/// terminal, move the cursor or start a line of its own.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| escape(c).is_some()) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match escape(c) {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`printable`] line by line: for text whose lines are its structure, such
/// as an error chain that holds a whole report.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

fn escape(c: char) -> Option<String> {
    let mut e = String::new();
    match c {
        '\t' => return None,
        '\u{1b}' => e.push_str("\\e"),
        '\r' => e.push_str("\\r"),
        '\n' => e.push_str("\\n"),
        '\0' => e.push_str("\\0"),
        c if c.is_ascii_control() => {
            let _ = write!(e, "\\x{:02x}", c as u32);
        }
        c if c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
        {
            let _ = write!(e, "\\u{{{:x}}}", c as u32);
        }
        _ => return None,
    }
    Some(e)
}

/// Every problem one run found, in file and line order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Sorted and deduplicated, so the report reads top to bottom and is
    /// the same on every run.
    pub fn into_sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
        });
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(
            printable("a\u{1b}[31mb\rc\td\u{7f}\u{9b}\u{202e}"),
            "a\\e[31mb\\rc\td\\x7f\\u{9b}\\u{202e}"
        );
        assert!(matches!(printable("plain é"), Cow::Borrowed(_)));
        assert_eq!(printable_lines("x\u{1b}\ny"), "x\\e\ny");
    }

    #[test]
    fn caret_stays_under_its_column() {
        let d = Diagnostic {
            file: "sites/a.toml".into(),
            line: 3,
            column: 6,
            excerpt: "\u{1b}[1m\tx = 1".into(),
            message: "bad \u{1b}]0;title\u{7}".into(),
        };
        let shown = d.to_string();
        assert!(!shown.contains(['\u{1b}', '\u{7}']), "{shown}");
        assert!(shown.contains("bad \\e]0;title\\x07"), "{shown}");
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[2], "3 | \\e[1m\tx = 1");
        assert_eq!(lines[3], "  |      \t^");
    }
}
