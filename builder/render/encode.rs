//! The encoders: the only way a template writes a value into an artifact.
//!
//! Every template has a language, known from its folder (and for bundle files
//! from its extension). A value written with `{{ … }}` must come out of an
//! encoder of that language (`{{ v.interface | nft_str }}`); anything else (a
//! raw string, an encoder of another language, `none`) stops the build with
//! an error at the template line. Numbers and booleans need no encoder, and
//! the output of a macro or a `{% set %}` block was itself written through
//! encoders. minijinja's own `safe`, `escape` and `tojson` are removed: they
//! would let a value through without its language's rules.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State};

use crate::model::rdata;

/// The language of a template's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Nft,
    Zone,
    Ios,
    Json,
    Yaml,
    Sh,
    Html,
    /// Configuration files with no encoder of their own (Caddyfile, lnd.conf,
    /// SQL): only `word` and `comment` may write into them.
    Text,
}

impl Lang {
    const ALL: [Lang; 8] = [
        Lang::Nft,
        Lang::Zone,
        Lang::Ios,
        Lang::Json,
        Lang::Yaml,
        Lang::Sh,
        Lang::Html,
        Lang::Text,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Lang::Nft => "nft",
            Lang::Zone => "zone",
            Lang::Ios => "ios",
            Lang::Json => "json",
            Lang::Yaml => "yaml",
            Lang::Sh => "sh",
            Lang::Html => "html",
            Lang::Text => "text",
        }
    }

    /// The language of template `name` (`firewall/nftables.j2`,
    /// `compose/files/site/nostr.json.j2`).
    pub fn of_template(name: &str) -> Lang {
        let folder = name.split('/').next().unwrap_or_default();
        match folder {
            "firewall" => Lang::Nft,
            "dns" => Lang::Zone,
            "switch" => Lang::Ios,
            "dhcp" => Lang::Json,
            "cloud-init" => Lang::Yaml,
            "activation" => Lang::Sh,
            _ if name.starts_with("compose/files/") => {
                let file = name.strip_suffix(".j2").unwrap_or(name);
                match file.rsplit_once('.').map(|(_, ext)| ext) {
                    Some("json") => Lang::Json,
                    Some("yaml" | "yml") => Lang::Yaml,
                    Some("html" | "htm") => Lang::Html,
                    Some("sh") => Lang::Sh,
                    _ => Lang::Text,
                }
            }
            "compose" => Lang::Yaml,
            _ => Lang::Text,
        }
    }

    fn from_name(name: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether output of encoder class `class` may stand in this language.
    fn accepts(self, class: Class) -> bool {
        match class {
            Class::Lang(lang) => lang == self || (lang == Lang::Json && self == Lang::Yaml),
            Class::Word => !matches!(self, Lang::Json | Lang::Yaml),
            Class::Comment => !matches!(self, Lang::Json | Lang::Html),
        }
    }

    /// The encoders a template of this language may use, for error messages.
    fn encoders(self) -> &'static str {
        match self {
            Lang::Nft => "nft_str, nft_addr, nft_ports, nft_comment, word or comment",
            Lang::Zone => "zone_name, zone_rdata, word or comment",
            Lang::Ios => "ios_word, ios_text, word or comment",
            Lang::Json => "json",
            Lang::Yaml => "json (JSON strings are YAML strings) or comment",
            Lang::Sh => "sh, word or comment",
            Lang::Html => "html or word",
            Lang::Text => "word or comment",
        }
    }
}

/// What produced an encoded value: one language's encoder, or one of the two
/// encoders whose output is safe in most languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Lang(Lang),
    /// A bare token of letters, digits and `._:/-`.
    Word,
    /// One line of text for a line comment.
    Comment,
}

/// A value after its encoder: the text to write, and who wrote it.
#[derive(Debug)]
struct Encoded {
    class: Class,
    text: String,
}

impl Object for Encoded {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn encoded(class: Class, text: String) -> Value {
    Value::from_object(Encoded { class, text })
}

fn refuse(what: &str, value: &Value) -> Error {
    let shown = match value.as_str() {
        Some(s) => format!("{s:?}"),
        None => value.to_string(),
    };
    Error::new(
        ErrorKind::InvalidOperation,
        format!("{shown} cannot be written as {what}"),
    )
}

/// The strings of a value that is a string or a list of strings.
fn strings(value: &Value, what: &str) -> Result<Vec<String>, Error> {
    match value.kind() {
        ValueKind::String => Ok(vec![value.as_str().unwrap_or_default().to_string()]),
        ValueKind::Seq => value
            .try_iter()?
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| refuse(what, &v))
            })
            .collect(),
        _ => Err(refuse(what, value)),
    }
}

/// One element, or an nft anonymous set `{ a, b }` of several.
fn nft_set(items: Vec<String>, value: &Value, what: &str) -> Result<String, Error> {
    match items.len() {
        0 => Err(refuse(what, value)),
        1 => Ok(items.into_iter().next().unwrap_or_default()),
        _ => Ok(format!("{{ {} }}", items.join(", "))),
    }
}

/// `"eth1.20"`: an nft string. nft strings have no escapes at all, so a value
/// with `"`, `\` or anything but printable ASCII has no encoding.
fn nft_str(value: &Value) -> Result<Value, Error> {
    let what = "an nft string (printable ASCII without `\"` or `\\`)";
    let items = strings(value, what)?
        .into_iter()
        .map(|s| {
            let ok = !s.is_empty()
                && s.bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
            ok.then(|| format!("\"{s}\""))
                .ok_or_else(|| refuse(what, &Value::from(s)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(encoded(
        Class::Lang(Lang::Nft),
        nft_set(items, value, what)?,
    ))
}

/// `10.0.0.1`, `10.0.0.0/24`, or a set of them.
fn nft_addr(value: &Value) -> Result<Value, Error> {
    let what = "an nft address (an IP address or a subnet)";
    let items = strings(value, what)?
        .into_iter()
        .map(|s| {
            let net = s.parse::<IpAddr>().map(|ip| ip.to_string());
            let net = net.or_else(|_| s.parse::<ipnet::IpNet>().map(|n| n.to_string()));
            net.map_err(|_| refuse(what, &Value::from(s)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(encoded(
        Class::Lang(Lang::Nft),
        nft_set(items, value, what)?,
    ))
}

/// `22` or `{ 80, 443 }`: ports 1–65535.
fn nft_ports(value: &Value) -> Result<Value, Error> {
    let what = "an nft port or set of ports (1 to 65535)";
    let one = |v: &Value| {
        i64::try_from(v.clone())
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .map(|p| p.to_string())
            .ok_or_else(|| refuse(what, v))
    };
    let items = match value.kind() {
        ValueKind::Seq => value
            .try_iter()?
            .map(|v| one(&v))
            .collect::<Result<Vec<_>, _>>()?,
        _ => vec![one(value)?],
    };
    Ok(encoded(
        Class::Lang(Lang::Nft),
        nft_set(items, value, what)?,
    ))
}

/// `"free text"` as an nft comment. It cannot hold `"`, so that becomes `'`;
/// other characters outside printable ASCII become `?`, and the text is cut
/// to nft's 128 bytes. Comments carry no meaning, so this loss is allowed.
fn nft_comment(value: &str) -> Value {
    let clean: String = value
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            c if c < ' ' => ' ',
            _ => '?',
        })
        .take(128)
        .collect();
    encoded(Class::Lang(Lang::Nft), format!("\"{clean}\""))
}

/// A name in a zone file: `@`, or a relative or absolute domain name whose
/// labels need no escaping (letters, digits, `-`, `_`, or a leading `*`).
fn zone_name(value: &str) -> Result<Value, Error> {
    if rdata::is_zone_name(value) {
        Ok(encoded(Class::Lang(Lang::Zone), value.to_string()))
    } else {
        Err(refuse("a zone-file name", &Value::from(value)))
    }
}

/// Record data of type `rtype`, parsed and written by the DNS library's
/// presentation-format encoder (TXT as quoted, escaped character-strings).
fn zone_rdata(value: &str, rtype: &str) -> Result<Value, Error> {
    rdata::encode(rtype, value)
        .map(|text| encoded(Class::Lang(Lang::Zone), text))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// One IOS token: printable ASCII without spaces.
fn ios_word(value: &Value) -> Result<Value, Error> {
    let s = value.to_string();
    let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'?');
    if ok {
        Ok(encoded(Class::Lang(Lang::Ios), s))
    } else {
        Err(refuse(
            "one IOS word (printable ASCII without spaces or `?`)",
            value,
        ))
    }
}

/// The rest of an IOS line (a description): the CLI reads every byte as it
/// is pasted, so control characters become spaces and `?` (context help) and
/// non-ASCII characters become `_`; cut to IOS's 240 characters.
fn ios_text(value: &str) -> Value {
    let clean: String = value
        .chars()
        .map(|c| match c {
            '?' => '_',
            ' '..='~' => c,
            c if c.is_control() => ' ',
            _ => '_',
        })
        .take(240)
        .collect();
    encoded(Class::Lang(Lang::Ios), clean)
}

/// A JSON value; JSON strings are also YAML strings (flow scalars) once the
/// characters YAML reads differently are escaped too: DEL and the C1
/// controls, which YAML does not allow, and the line and paragraph
/// separators and byte-order mark, which YAML 1.1 takes as line breaks.
fn json(value: &Value) -> Result<Value, Error> {
    let text = serde_json::to_string(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot write JSON: {e}"),
        )
    })?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    Ok(encoded(Class::Lang(Lang::Json), out))
}

/// One shell word, or a list of words as one command line, each quoted.
fn sh(value: &Value) -> Result<Value, Error> {
    let words = match value.kind() {
        ValueKind::Seq => value
            .try_iter()?
            .map(|v| word_text(&v).ok_or_else(|| refuse("a shell word", &v)))
            .collect::<Result<Vec<_>, _>>()?,
        _ => vec![word_text(value).ok_or_else(|| refuse("a shell word", value))?],
    };
    let quoted: Vec<String> = words.iter().map(|w| super::shell_quote(w)).collect();
    Ok(encoded(Class::Lang(Lang::Sh), quoted.join(" ")))
}

/// A string or number as text; a shell word cannot hold a NUL byte.
fn word_text(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::String => value
            .as_str()
            .filter(|s| !s.contains('\0'))
            .map(str::to_string),
        ValueKind::Number => Some(value.to_string()),
        _ => None,
    }
}

fn html(value: &Value) -> Result<Value, Error> {
    let text = word_text(value).ok_or_else(|| refuse("HTML text", value))?;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Ok(encoded(Class::Lang(Lang::Html), out))
}

/// A bare token (a name, a domain, an address): letters, digits and `._:/-`,
/// not starting with `-`.
fn word(value: &Value) -> Result<Value, Error> {
    let text = word_text(value).unwrap_or_default();
    let ok = !text.is_empty()
        && !text.starts_with('-')
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
    if ok {
        Ok(encoded(Class::Word, text))
    } else {
        Err(refuse("a word (letters, digits and `._:/-`)", value))
    }
}

/// Text for a line comment: one line, no control characters.
fn comment(value: &Value) -> Result<Value, Error> {
    let text = value.to_string();
    if text.chars().any(char::is_control) || value.is_none() || value.is_undefined() {
        Err(refuse("comment text (one line)", value))
    } else {
        Ok(encoded(Class::Comment, text))
    }
}

/// Installs the encoders and the formatter that demands them, and removes
/// the built-in filters that would bypass them.
pub fn install(env: &mut Environment<'_>) {
    for builtin in ["safe", "escape", "e", "tojson", "urlencode"] {
        env.remove_filter(builtin);
    }
    env.add_filter("nft_str", nft_str);
    env.add_filter("nft_addr", nft_addr);
    env.add_filter("nft_ports", nft_ports);
    env.add_filter("nft_comment", |v: String| nft_comment(&v));
    env.add_filter("zone_name", |v: String| zone_name(&v));
    env.add_filter("zone_rdata", |v: String, t: String| zone_rdata(&v, &t));
    env.add_filter("ios_word", ios_word);
    env.add_filter("ios_text", |v: String| ios_text(&v));
    env.add_filter("json", json);
    env.add_filter("sh", sh);
    env.add_filter("html", html);
    env.add_filter("word", word);
    env.add_filter("comment", comment);
    env.set_auto_escape_callback(|name| AutoEscape::Custom(Lang::of_template(name).name().into()));
    env.set_formatter(format);
}

fn format(out: &mut Output<'_>, state: &mut State<'_, '_>, value: &Value) -> Result<(), Error> {
    let lang = match state.auto_escape() {
        AutoEscape::Custom(name) => Lang::from_name(name),
        _ => None,
    }
    .unwrap_or(Lang::Text);
    let write = |out: &mut Output<'_>, text: &str| {
        out.write_str(text).map_err(|e| {
            Error::new(ErrorKind::WriteFailure, "cannot write the output").with_source(e)
        })
    };
    if let Some(enc) = value.downcast_object_ref::<Encoded>() {
        if lang.accepts(enc.class) {
            return write(out, &enc.text);
        }
        let from = match enc.class {
            Class::Lang(l) => format!("the {} encoder", l.name()),
            Class::Word => "word".to_string(),
            Class::Comment => "comment".to_string(),
        };
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "a value from {from} cannot stand in a {} file: write it with {}",
                lang.name(),
                lang.encoders()
            ),
        ));
    }
    match value.kind() {
        ValueKind::Number | ValueKind::Bool => write(out, &value.to_string()),
        // Macro and `{% set %}` output, itself written through encoders.
        ValueKind::String if value.is_safe() => write(out, value.as_str().unwrap_or_default()),
        _ => {
            let shown = match value.as_str() {
                Some(s) => format!("{s:?}"),
                None => value.to_string(),
            };
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{shown} is written into a {} file without an encoder: write it with {}",
                    lang.name(),
                    lang.encoders()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str, source: &str, ctx: Value) -> Result<String, Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        install(&mut env);
        env.add_template_owned(name.to_string(), source.to_string())?;
        env.get_template(name)?.render(ctx)
    }

    fn ctx(v: &str) -> Value {
        minijinja::context! { v => v, list => vec!["a b", "c'd"], n => 22 }
    }

    #[test]
    fn a_raw_string_is_refused_and_numbers_pass() {
        let err = render("firewall/x.j2", "iifname {{ v }}", ctx("eth0")).unwrap_err();
        assert!(err.to_string().contains("without an encoder"), "{err}");
        assert_eq!(render("firewall/x.j2", "{{ n }}", ctx("")).unwrap(), "22");
        let err = render("firewall/x.j2", "{{ v | safe }}", ctx("x")).unwrap_err();
        assert!(err.to_string().contains("unknown filter"), "{err}");
    }

    #[test]
    fn an_encoder_of_another_language_is_refused() {
        let err = render("firewall/x.j2", "{{ v | sh }}", ctx("eth0")).unwrap_err();
        assert!(
            err.to_string().contains("cannot stand in a nft file"),
            "{err}"
        );
        assert_eq!(
            render("compose/compose.yaml.j2", "{{ v | json }}", ctx("a:b")).unwrap(),
            "\"a:b\""
        );
    }

    #[test]
    fn nft_strings_have_no_escape() {
        let attack = "eth0\" accept; meta l4proto tcp accept #";
        assert!(render("firewall/x.j2", "{{ v | nft_str }}", ctx(attack)).is_err());
        assert_eq!(
            render("firewall/x.j2", "{{ v | nft_str }}", ctx("eth1.20")).unwrap(),
            "\"eth1.20\""
        );
        let out = render(
            "firewall/x.j2",
            "{{ v | nft_comment }}",
            ctx("say \"hi\"\nx"),
        )
        .unwrap();
        assert_eq!(out, "\"say 'hi' x\"");
        assert_eq!(
            render("firewall/x.j2", "{{ [80, 443] | nft_ports }}", ctx("")).unwrap(),
            "{ 80, 443 }"
        );
        assert!(render("firewall/x.j2", "{{ 0 | nft_ports }}", ctx("")).is_err());
        assert!(render(
            "firewall/x.j2",
            "{{ v | nft_addr }}",
            ctx("10.0.0.0/8 accept")
        )
        .is_err());
    }

    #[test]
    fn json_escapes_what_yaml_reads_differently() {
        let out = render(
            "cloud-init/user-data.j2",
            "{{ v | json }}",
            ctx("a\u{7f}\u{85}\u{2028}b"),
        )
        .unwrap();
        assert_eq!(out, "\"a\\u007f\\u0085\\u2028b\"");
    }

    #[test]
    fn shell_words_are_quoted_including_assignments() {
        let out = render(
            "activation/a.sh.j2",
            "{{ list | sh }} {{ v | sh }}",
            ctx("A=b"),
        )
        .unwrap();
        assert_eq!(out, "'a b' 'c'\\''d' 'A=b'");
    }

    #[test]
    fn macros_and_blocks_keep_their_checked_output() {
        let src = "{% macro m(x) %}<{{ x | word }}>{% endmacro %}{{ m(v) }}";
        assert_eq!(
            render("compose/files/a.conf.j2", src, ctx("fw1")).unwrap(),
            "<fw1>"
        );
        let src = "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(v) }}";
        assert!(render("compose/files/a.conf.j2", src, ctx("fw1")).is_err());
    }

    #[test]
    fn languages_follow_folders_and_extensions() {
        assert_eq!(Lang::of_template("firewall/nftables.j2"), Lang::Nft);
        assert_eq!(Lang::of_template("compose/compose.yaml.j2"), Lang::Yaml);
        assert_eq!(
            Lang::of_template("compose/files/site/nostr.json.j2"),
            Lang::Json
        );
        assert_eq!(
            Lang::of_template("compose/files/site/index.html.j2"),
            Lang::Html
        );
        assert_eq!(
            Lang::of_template("compose/files/caddy/Caddyfile.j2"),
            Lang::Text
        );
    }
}
