//! Deterministic tar archives built from in-memory entries, and listing them back.

use std::collections::BTreeSet;
use std::io::{self, Read};

// `::tar` is the crate; a bare `tar` would be this module in the parent.
use ::tar::{Archive, Builder, EntryType, Header};

use super::PackError;

/// Mode of the directory entries emitted for parents of files.
const DIR_MODE: u32 = 0o755;

/// One file to pack. `path` is relative, '/'-separated, no leading '/', no '..' components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// Builds a GNU tar whose bytes depend only on the set of entries: sorted by
/// path, parents emitted as directories before their contents, and every
/// header field that could carry host state (owner, time, names) zeroed.
pub fn tar(entries: &[Entry]) -> Result<Vec<u8>, PackError> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    for entry in &sorted {
        validate_path(&entry.path)?;
    }
    if let Some(pair) = sorted.windows(2).find(|p| p[0].path == p[1].path) {
        return Err(PackError::DuplicatePath {
            path: pair[0].path.clone(),
        });
    }
    let files: BTreeSet<&str> = sorted.iter().map(|e| e.path.as_str()).collect();

    let mut builder = Builder::new(Vec::new());
    let mut dirs_done: BTreeSet<&str> = BTreeSet::new();
    for entry in sorted {
        for (end, _) in entry.path.match_indices('/') {
            let dir = &entry.path[..end];
            if files.contains(dir) {
                return Err(PackError::FileIsDirectory { path: dir.into() });
            }
            if dirs_done.insert(dir) {
                append(
                    &mut builder,
                    &format!("{dir}/"),
                    EntryType::Directory,
                    DIR_MODE,
                    &[],
                )?;
            }
        }
        append(
            &mut builder,
            &entry.path,
            EntryType::Regular,
            entry.mode & 0o7777,
            &entry.contents,
        )?;
    }
    builder
        .into_inner()
        .map_err(|source| PackError::TarFinish { source })
}

/// Lists the regular files of a tar, in archive order; directories are
/// skipped since they are implied by file paths, and any other entry type is
/// refused so nothing in an archive goes unnoticed.
pub fn untar(bytes: &[u8]) -> Result<Vec<Entry>, PackError> {
    let read_err = |source| PackError::TarRead { source };
    let mut archive = Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = std::str::from_utf8(&entry.path_bytes())
            .map_err(|source| PackError::TarPathNotUtf8 { source })?
            .to_owned();
        match entry.header().entry_type() {
            EntryType::Directory => continue,
            EntryType::Regular => {}
            kind => return Err(PackError::TarEntryType { path, kind }),
        }
        validate_path(&path)?;
        let mode = entry.header().mode().map_err(read_err)?;
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).map_err(read_err)?;
        out.push(Entry {
            path,
            contents,
            mode,
        });
    }
    Ok(out)
}

fn append(
    builder: &mut Builder<Vec<u8>>,
    path: &str,
    kind: EntryType,
    mode: u32,
    contents: &[u8],
) -> Result<(), PackError> {
    let write = |builder: &mut Builder<Vec<u8>>| -> io::Result<()> {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(contents.len() as u64);
        header.set_username("")?;
        header.set_groupname("")?;
        header.set_device_major(0)?;
        header.set_device_minor(0)?;
        // Sets the name (with a GNU long-name entry past 100 bytes) and the checksum.
        builder.append_data(&mut header, path, contents)
    };
    write(builder).map_err(|source| PackError::TarWrite {
        path: path.into(),
        source,
    })
}

/// Paths are checked here rather than left to the tar crate so that every
/// archive spells each path one way only ("a//b" and "a/./b" would otherwise
/// be normalised into a collision with "a/b").
fn validate_path(path: &str) -> Result<(), PackError> {
    let reason = if path.is_empty() {
        Some("empty")
    } else if path.starts_with('/') {
        Some("absolute")
    } else if path.contains('\0') {
        Some("contains NUL")
    } else if path.split('/').any(str::is_empty) {
        Some("empty component")
    } else if path.split('/').any(|c| c == "." || c == "..") {
        Some("'.' or '..' component")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PackError::InvalidPath {
            path: path.into(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, contents: &[u8], mode: u32) -> Entry {
        Entry {
            path: path.into(),
            contents: contents.into(),
            mode,
        }
    }

    fn sample() -> Vec<Entry> {
        vec![
            entry("etc/sov/config.toml", b"a = 1\n", 0o644),
            entry("bin/run", b"#!/bin/sh\n", 0o100755),
            entry("etc/hosts", b"127.0.0.1 localhost\n", 0o644),
            entry("etc-extra", b"", 0o600),
            entry(&format!("deep/{}/file", "x".repeat(150)), b"long", 0o640),
        ]
    }

    /// (path, type) of every header, directories included.
    fn headers(bytes: &[u8]) -> Vec<(String, EntryType)> {
        let mut archive = Archive::new(bytes);
        let mut out = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            out.push((path, e.header().entry_type()));
        }
        out
    }

    #[test]
    fn input_order_does_not_matter() {
        let forward = sample();
        let mut backward = sample();
        backward.reverse();
        assert_eq!(tar(&forward).unwrap(), tar(&backward).unwrap());
    }

    #[test]
    fn untar_round_trips_sorted_files() {
        let mut expected = sample();
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        for e in &mut expected {
            e.mode &= 0o7777;
        }
        assert_eq!(untar(&tar(&sample()).unwrap()).unwrap(), expected);
    }

    #[test]
    fn parents_emitted_once_before_contents() {
        let listed = headers(&tar(&sample()).unwrap());
        let long_dir = format!("deep/{}/", "x".repeat(150));
        let expected: Vec<(String, EntryType)> = [
            ("bin/", EntryType::Directory),
            ("bin/run", EntryType::Regular),
            ("deep/", EntryType::Directory),
            (long_dir.as_str(), EntryType::Directory),
            (&format!("{long_dir}file"), EntryType::Regular),
            ("etc-extra", EntryType::Regular),
            ("etc/", EntryType::Directory),
            ("etc/hosts", EntryType::Regular),
            ("etc/sov/", EntryType::Directory),
            ("etc/sov/config.toml", EntryType::Regular),
        ]
        .into_iter()
        .map(|(p, t)| (p.to_owned(), t))
        .collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn headers_carry_no_host_state() {
        let bytes = tar(&sample()).unwrap();
        let mut archive = Archive::new(bytes.as_slice());
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            if h.entry_type() == EntryType::Directory {
                assert_eq!(h.mode().unwrap(), DIR_MODE);
            }
        }
    }

    #[test]
    fn bad_paths_are_named() {
        for bad in ["../x", "a/../x", "/abs", "a//b", "a/", "./a", ""] {
            let err = tar(&[entry(bad, b"", 0o644)]).unwrap_err();
            assert!(
                matches!(&err, PackError::InvalidPath { path, .. } if path == bad),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn duplicate_path_is_named() {
        let err = tar(&[entry("a/b", b"1", 0o644), entry("a/b", b"2", 0o644)]).unwrap_err();
        assert!(matches!(&err, PackError::DuplicatePath { path } if path == "a/b"));
        assert!(err.to_string().contains("\"a/b\""), "{err}");
    }

    #[test]
    fn file_used_as_directory_is_named() {
        let err = tar(&[entry("a", b"1", 0o644), entry("a/b", b"2", 0o644)]).unwrap_err();
        assert!(matches!(&err, PackError::FileIsDirectory { path } if path == "a"));
    }

    #[test]
    fn untar_refuses_other_entry_types() {
        let mut builder = Builder::new(Vec::new());
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, "link", "target").unwrap();
        let bytes = builder.into_inner().unwrap();
        let err = untar(&bytes).unwrap_err();
        assert!(matches!(&err, PackError::TarEntryType { path, .. } if path == "link"));
    }
}
