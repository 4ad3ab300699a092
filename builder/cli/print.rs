//! Every result `sov` prints: plain text for people, or stable JSON
//! (`--json`) for scripts.

use std::fmt::Display;
use std::io::Write;
use std::path::Path;

use super::CliError;
use crate::backup::Backup;
use crate::build::{gc::GcReport, Report};
use crate::deploy::live::{Listing, LiveState};
use crate::deploy::recover::{HostBackup, Restored};
use crate::deploy::{self, HostReport};

/// One row of `sov secret list`.
#[derive(serde::Serialize)]
pub struct SecretRow {
    pub name: String,
    /// `set`, `generated-on-deploy` or `missing`.
    pub state: &'static str,
    pub hosts: Vec<String>,
}

/// `value` as JSON when asked, else as `text` writes it; on stdout.
fn emit<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&mut dyn Write, &T) -> std::io::Result<()>,
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        write_json(&mut out, value)
    } else {
        text(&mut out, value).map_err(CliError::Output)
    }
}

/// `value` as pretty JSON and a newline: every `--json` output.
fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| CliError::Output(e.into()))?;
    writeln!(out).map_err(CliError::Output)
}

pub fn repaired(report: &Report) {
    for object in &report.repaired {
        eprintln!("warning: store object {object} was corrupt: rendered again and replaced");
    }
}

/// Per site its generation and artifacts; `checked` adds the line that
/// says `--check` found every artifact reproducible.
pub fn build(report: &Report, checked: bool, json: bool) -> Result<(), CliError> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        write_json(&mut out, report)?;
    } else {
        build_text(&mut out, report).map_err(CliError::Output)?;
        if checked {
            writeln!(
                out,
                "check: every artifact rebuilt bit for bit in a fresh store"
            )
            .map_err(CliError::Output)?;
        }
    }
    out.flush().map_err(CliError::Output)
}

fn build_text(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    for site in &report.sites {
        let what = if site.recorded {
            "recorded"
        } else {
            "unchanged"
        };
        writeln!(
            out,
            "{}: generation {} ({what}), {} rendered, {} reused",
            site.name, site.generation, site.rendered, site.reused
        )?;
        for a in &site.artifacts {
            writeln!(out, "  {:<10} {:<44} {}", a.kind.as_str(), a.name, a.hash)?;
        }
        writeln!(out, "  manifest   {}", site.manifest.display())?;
    }
    Ok(())
}

pub fn corrupt_object(path: &Path) {
    eprintln!("corrupt: {}", path.display());
}

pub fn verified(count: usize) {
    println!("{count} objects verified");
}

pub fn deploy(report: &deploy::Report, json: bool) -> Result<(), CliError> {
    emit(json, report, |out, r| hosts(out, &r.hosts))
}

fn hosts(out: &mut dyn Write, hosts: &[HostReport]) -> std::io::Result<()> {
    for h in hosts {
        writeln!(out, "{}: {}", h.host, deploy::describe(h))?;
    }
    Ok(())
}

pub fn generations(listing: &Listing, json: bool) -> Result<(), CliError> {
    emit(json, listing, generations_text)
}

/// One line per generation (number, time, manifest hash, current, the
/// hosts running it), then one per host that runs none of them.
fn generations_text(out: &mut dyn Write, listing: &Listing) -> std::io::Result<()> {
    for g in &listing.generations {
        let when = g.recorded.map_or("?".to_string(), utc);
        write!(out, "{:>4}  {when}  {}", g.generation, g.manifest)?;
        if g.current {
            write!(out, "  (current)")?;
        }
        if !g.live.is_empty() {
            let hosts: Vec<String> = g
                .live
                .iter()
                .map(|name| {
                    let unconfirmed = listing
                        .hosts
                        .iter()
                        .any(|h| &h.host == name && h.state == LiveState::Unconfirmed);
                    if unconfirmed {
                        format!("{name} (unconfirmed)")
                    } else {
                        name.clone()
                    }
                })
                .collect();
            write!(out, "  live: {}", hosts.join(", "))?;
        }
        writeln!(out)?;
    }
    for h in &listing.hosts {
        let n = h.generation.map_or("?".to_string(), |n| n.to_string());
        match h.state {
            LiveState::Live | LiveState::Unconfirmed => {}
            LiveState::Unknown => writeln!(
                out,
                "{}: runs generation {n}, which is not this site's generation {n} here",
                h.host
            )?,
            LiveState::None => writeln!(out, "{}: no generation deployed", h.host)?,
            LiveState::Unreachable => {
                let error = h.error.as_deref().unwrap_or("");
                let prefix = format!("{}: ", h.host);
                let why = error.strip_prefix(&prefix).unwrap_or(error);
                writeln!(out, "{}: unreachable: {why}", h.host)?
            }
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since 1970; `?` past year 9999.
fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or("?".to_string(), |t| {
            t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
        })
}

/// A host's key as a line to paste into the site file after checking it
/// out of band, under a comment with its fingerprint and how it compares
/// with the pin.
pub fn scanned_key(host: &str, address: &str, fingerprint: &str, matches: bool, key: &str) {
    let note = if matches {
        "matches the pin"
    } else {
        "differs from the pin"
    };
    println!("# {host} ({address}): {fingerprint} {note}");
    println!("{host}: host_key = \"{key}\"");
}

pub fn no_key(host: &str, address: &str) {
    println!("# {host} ({address}): no answer");
}

pub fn diff(text: &str) {
    print!("{text}");
}

pub fn gc(report: &GcReport) {
    println!(
        "removed {} generation(s) and {} object(s), {} bytes freed",
        report.generations_removed, report.objects_removed, report.bytes_freed
    );
}

pub fn backup_verified(said: &str, site: &str, read: &str) {
    print!("{said}");
    println!("backups of site {site}: repository checked, {read} of the data read back");
}

pub fn backed_up(results: &[HostBackup], json: bool) -> Result<(), CliError> {
    emit(json, &results, |out, results| {
        for r in *results {
            let said = match (&r.backup, &r.error) {
                (_, Some(e)) => format!("FAILED: {e}"),
                (Some(id), None) => format!("backup {id}"),
                (None, None) => "nothing to back up".to_string(),
            };
            writeln!(out, "{}: {said}", r.host)?;
        }
        Ok(())
    })
}

/// Id, time, host, generation, size, bytes added and deploy of each backup.
pub fn backups(backups: &[Backup], json: bool) -> Result<(), CliError> {
    emit(json, &backups, |out, backups| {
        let bytes = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        for b in *backups {
            writeln!(
                out,
                "{}  {}  {:<16} generation {:<4} {:>12} bytes  {:>12} added  {}",
                b.short_id,
                b.time.get(..19).unwrap_or(&b.time),
                b.tags.host,
                b.tags.generation,
                bytes(b.size),
                bytes(b.added),
                b.tags.deploy
            )?;
        }
        Ok(())
    })
}

pub fn restored(restored: &Restored, json: bool) -> Result<(), CliError> {
    emit(json, restored, |out, restored| {
        for b in &restored.backups {
            writeln!(
                out,
                "{}: data of backup {} restored",
                b.tags.host, b.short_id
            )?;
        }
        for d in &restored.deploys {
            hosts(out, &d.hosts)?;
        }
        Ok(())
    })
}

pub fn secret_prompt(name: &str) {
    eprint!("value of {name} (not shown, end with Enter): ");
}

pub fn secret_stored(name: impl Display, site: impl Display, identity: &Path) {
    eprintln!(
        "secret {name} of site {site} stored, encrypted with {}; hosts get it on the next deploy",
        identity.display()
    );
}

pub fn secrets(rows: &[SecretRow], json: bool) -> Result<(), CliError> {
    emit(json, &rows, |out, rows| {
        for r in *rows {
            writeln!(out, "{:<24} {:<20} {}", r.name, r.state, r.hosts.join(", "))?;
        }
        Ok(())
    })
}

pub fn initialised(written: usize, dir: &Path) {
    println!("wrote {written} files into {}", dir.display());
    println!("next: cd {} && sov build", dir.display());
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(1_795_279_747), "2026-11-21 16:49:07 UTC");
    }
}
