//! Image checks: pinned container images, references between containers,
//! secrets and bundle files.

use std::collections::{BTreeMap, BTreeSet};

use super::Report;
use crate::model::Image;
use crate::path;

pub(super) fn check(image: &Image, report: &mut Report<'_>) {
    let secrets: BTreeSet<&str> = image.secrets.iter().map(|s| s.name.as_str()).collect();
    let containers: BTreeSet<&str> = image.containers.iter().map(|c| c.name.as_str()).collect();
    if !image.containers.is_empty() && image.compose.is_none() {
        report.at(
            path!["containers"],
            "containers need a [compose] table saying how to bring them up and down",
        );
    }
    if let Some(compose) = &image.compose {
        for (key, argv) in [("up", &compose.up), ("down", &compose.down)] {
            if argv.is_empty() {
                report.at(path!["compose", key], "expected a command (an argv list)");
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, c) in image.containers.iter().enumerate() {
        if !names.insert(c.name.as_str()) {
            report.at(
                path!["containers", i, "name"],
                format!("container `{}` is declared twice", c.name),
            );
        }
        if c.image.digest().is_none() {
            report.at(
                path!["containers", i, "image"],
                format!(
                    "container image `{}` is not pinned: expected `name:tag@sha256:<64 hex digits>`",
                    c.image.as_str()
                ),
            );
        }
        for (j, s) in c.secrets.iter().enumerate() {
            if !secrets.contains(s.as_str()) {
                report.at(
                    path!["containers", i, "secrets", j],
                    format!("secret `{s}` is not declared in this image's [[secrets]]"),
                );
            }
        }
        for (j, d) in c.depends_on.iter().enumerate() {
            if !containers.contains(d.as_str()) {
                report.at(
                    path!["containers", i, "depends_on", j],
                    format!("unknown container `{d}`"),
                );
            }
        }
        for key in c.environment.keys() {
            let mut bytes = key.bytes();
            let valid = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                report.at(
                    path!["containers", i, "environment", key.as_str()],
                    format!(
                        "{key:?} is not an environment variable name: expected letters, digits and `_`, not starting with a digit"
                    ),
                );
            }
        }
        for (j, port) in c.ports.iter().enumerate() {
            if !valid_port_mapping(port) {
                report.at(
                    path!["containers", i, "ports", j],
                    format!("`{port}` is not a port mapping: expected `host:container` or `host:container/udp`"),
                );
            }
        }
    }
    let mut declared = BTreeSet::new();
    for (i, s) in image.secrets.iter().enumerate() {
        if !declared.insert(s.name.as_str()) {
            report.at(
                path!["secrets", i, "name"],
                format!("secret `{}` is declared twice", s.name),
            );
        }
        if !valid_owner(&s.owner) {
            report.at(
                path!["secrets", i, "owner"],
                format!(
                    "`{}` is not an owner: expected a user name or a numeric uid, optionally `:group`",
                    s.owner
                ),
            );
        }
    }
    let mut paths = BTreeSet::new();
    let mut folders = BTreeMap::new();
    for (i, f) in image.files.iter().enumerate() {
        // tar and the host's file system take any byte but NUL and `/`;
        // control characters are refused too, so that listings stay honest.
        let clean = !f.path.is_empty()
            && !f.path.starts_with('/')
            && !f.path.chars().any(char::is_control)
            && f.path
                .split('/')
                .all(|p| !p.is_empty() && p != "." && p != "..");
        if !clean {
            report.at(
                path!["files", i, "path"],
                format!(
                    "{:?} is not a relative path inside the bundle: expected names without control characters, `.` or `..`",
                    f.path
                ),
            );
        }
        if f.path == crate::render::COMPOSE_FILE {
            report.at(
                path!["files", i, "path"],
                "the bundle's compose file is rendered by sov itself",
            );
        }
        if !paths.insert(f.path.as_str()) {
            report.at(
                path!["files", i, "path"],
                format!("bundle file `{}` is declared twice", f.path),
            );
        }
        if let Some(message) = file_and_folder(&f.path, &paths, &mut folders) {
            report.at(path!["files", i, "path"], message);
        }
        if f.mode > 0o7777 {
            report.at(
                path!["files", i, "mode"],
                format!("mode {:o} is not a file mode", f.mode),
            );
        }
    }
    for (i, p) in image.data.iter().flat_map(|d| d.paths.iter()).enumerate() {
        let clean = !p.chars().any(char::is_control)
            && p.strip_prefix('/').is_some_and(|rest| {
                rest.split('/')
                    .all(|c| !c.is_empty() && c != "." && c != "..")
            });
        if !clean {
            report.at(
                path!["data", "paths", i],
                format!("`{p}` is not a data directory: expected an absolute path like /var/lib/app, without `.`, `..` or a final `/`"),
            );
        }
    }
    let mut checks = BTreeSet::new();
    for (i, h) in image.health.iter().enumerate() {
        if h.command.is_empty() {
            report.at(
                path!["health", i, "command"],
                "expected a command (an argv list)",
            );
        }
        if !checks.insert(h.name.as_str()) {
            report.at(
                path!["health", i, "name"],
                format!("health check `{}` is declared twice", h.name),
            );
        }
    }
}

/// Whether a bundle file needs a path that an earlier one (or the compose
/// file) takes as a file where it needs a folder, or the other way round:
/// `caddy` and `caddy/Caddyfile` cannot both be in the tar. `files` holds
/// the paths seen so far, `folders` each folder they need with one file in
/// it; both take this path's part.
fn file_and_folder<'a>(
    path: &'a str,
    files: &BTreeSet<&str>,
    folders: &mut BTreeMap<&'a str, &'a str>,
) -> Option<String> {
    let mut problem = folders
        .get(path)
        .map(|inside| format!("bundle file `{path}` is also the folder of bundle file `{inside}`"));
    for (at, _) in path.match_indices('/') {
        let folder = &path[..at];
        if problem.is_none() && (files.contains(folder) || folder == crate::render::COMPOSE_FILE) {
            problem = Some(format!(
                "bundle file `{path}` needs `{folder}` to be a folder, but `{folder}` is a file of the bundle"
            ));
        }
        folders.entry(folder).or_insert(path);
    }
    problem
}

fn valid_port_mapping(port: &str) -> bool {
    let (ports, proto) = match port.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (port, "tcp"),
    };
    let numbers: Vec<&str> = ports.split(':').collect();
    matches!(proto, "tcp" | "udp")
        && (1..=3).contains(&numbers.len())
        && numbers[numbers.len().saturating_sub(2)..]
            .iter()
            .all(|n| n.parse::<u16>().is_ok_and(|n| n > 0))
}

/// `user`, `uid`, `user:group` or `uid:gid`, as chown takes them.
fn valid_owner(owner: &str) -> bool {
    let part = |p: &str| {
        let mut bytes = p.bytes();
        match bytes.next() {
            Some(b) if b.is_ascii_digit() => bytes.all(|b| b.is_ascii_digit()),
            Some(b) if b.is_ascii_lowercase() || b == b'_' => {
                bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
            }
            _ => false,
        }
    };
    match owner.split_once(':') {
        Some((user, group)) => part(user) && part(group),
        None => part(owner),
    }
}
