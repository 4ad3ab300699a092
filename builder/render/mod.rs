//! Templates to bytes: the stack's `templates/` folder, loaded once, rendered
//! with strict undefined variables and no auto-escaping.

pub mod context;
pub mod encode;
mod templates;

pub use templates::{Context, Kind, RenderError, Templates};

/// Where secrets are on a host at run time; templates see only these paths.
pub const SECRETS_DIR: &str = "/run/sov/secrets";

/// The compose file's path inside a bundle.
pub const COMPOSE_FILE: &str = "compose.yaml";

/// The path on the host where a secret is delivered.
pub fn secret_path(name: &str) -> String {
    format!("{SECRETS_DIR}/{name}")
}

/// Quotes one word for a POSIX shell: as is when it is plainly safe,
/// otherwise in single quotes.
pub fn shell_quote(word: &str) -> String {
    // No `=`: a first word `A=b` would run as an assignment.
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+:,./-_".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("nft"), "nft");
        assert_eq!(shell_quote("/var/lib/sov"), "/var/lib/sov");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("PATH=/tmp"), "'PATH=/tmp'");
    }
}
