//! A restore's tar stream dealt out to several extractors on the host, so
//! that writing tens of thousands of files (kernel time, one core per
//! `tar -x`) is spread over the host's cores: each file, symlink or special
//! file goes whole to one of the parts, the one with the least data still
//! waiting in its pipe. Every directory goes to every part, ahead of the
//! files in it as in the stream (two extractors that both found a folder
//! missing would race to make it, and the loser gives up on the file), and
//! again to a last tar, unpacked after the parts have finished, with the
//! hard links: a directory's times (and mode and owner) must be set after
//! the files in it are written, and a hard link's target must exist.
//!
//! Bodies move from restic's pipe to a part's pipe with splice(2): sov reads
//! only the 512-byte headers, and the data is never copied through it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use tar::{EntryType, Header};

const BLOCK: usize = 512;
/// GNU tar's record: 20 blocks. Each tar sov writes ends on a whole record.
const RECORD: u64 = 20 * BLOCK as u64;
/// A long name, link or pax header larger than this is not a backup sov took.
const PREFIX_LIMIT: u64 = 1 << 20;
/// How often the splitter reports the bytes it has moved.
const REPORT_EVERY: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("the backup stream ended in the middle of an entry")]
    Truncated,
    #[error("the backup stream is not a tar archive (bad header checksum at byte {0})")]
    NotTar(u64),
    #[error("the backup stream has a {0}-byte header entry: not a backup sov took")]
    Oversized(u64),
    #[error("reading the backup stream: {0}")]
    Read(std::io::Error),
    #[error("writing to the host: {0}")]
    Write(std::io::Error),
}

/// Reads the tar stream `input` (a pipe) to its end and deals it out to
/// `parts` (pipes) and `last`, each written as a whole tar, closed by its
/// end-of-archive blocks and padded to a whole record. `moved` hears the
/// bytes read so far now and then.
pub fn split(
    input: &mut File,
    parts: &mut [File],
    last: &mut impl Write,
    moved: &dyn Fn(u64),
) -> Result<(), SplitError> {
    // Bytes written to each part, to end it on a whole record.
    let mut written = vec![0u64; parts.len()];
    let mut offset = 0u64;
    let mut reported = 0u64;
    let mut next = 0;
    // Long name, long link and pax headers: they belong to the entry after them.
    let mut prefix: Vec<u8> = Vec::new();
    // A pax `size` overrides the header's.
    let mut pax_size: Option<u64> = None;
    loop {
        let mut block = [0u8; BLOCK];
        if !read_block(input, &mut block)? {
            return Err(SplitError::Truncated);
        }
        let at = offset;
        offset += BLOCK as u64;
        if block.iter().all(|&b| b == 0) {
            if !prefix.is_empty() {
                return Err(SplitError::Truncated);
            }
            // The end: a second zero block and the record's padding follow.
            offset += std::io::copy(input, &mut std::io::sink()).map_err(SplitError::Read)?;
            break;
        }
        let header = Header::from_byte_slice(&block);
        if !checksum_ok(&block) {
            return Err(SplitError::NotTar(at));
        }
        let size = match pax_size.take() {
            Some(size) => size,
            None => header.entry_size().map_err(|_| SplitError::NotTar(at))?,
        };
        let kind = header.entry_type();
        if matches!(
            kind,
            EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader
        ) {
            if size > PREFIX_LIMIT {
                return Err(SplitError::Oversized(size));
            }
            let mut body = vec![0u8; padded(size) as usize];
            input
                .read_exact(&mut body)
                .map_err(|_| SplitError::Truncated)?;
            offset += body.len() as u64;
            if kind == EntryType::XHeader {
                pax_size = tar::PaxExtensions::new(&body[..size as usize])
                    .filter_map(Result::ok)
                    .find(|e| e.key() == Ok("size"))
                    .and_then(|e| e.value().ok()?.parse().ok());
            }
            prefix.extend_from_slice(&block);
            prefix.extend_from_slice(&body);
            continue;
        }
        // A pax global header applies to every entry after it, in every tar.
        if kind == EntryType::XGlobalHeader {
            let mut body = vec![0u8; padded(size) as usize];
            input
                .read_exact(&mut body)
                .map_err(|_| SplitError::Truncated)?;
            offset += body.len() as u64;
            for (i, part) in parts.iter_mut().enumerate() {
                write(part, &[&block, &body])?;
                written[i] += (BLOCK + body.len()) as u64;
            }
            last.write_all(&block).map_err(SplitError::Write)?;
            last.write_all(&body).map_err(SplitError::Write)?;
            continue;
        }
        // An old GNU sparse file's map may go on in extension blocks.
        let mut extensions = Vec::new();
        if kind == EntryType::GNUSparse && header.as_gnu().is_some_and(|g| g.is_extended()) {
            loop {
                let mut ext = [0u8; BLOCK];
                if !read_block(input, &mut ext)? {
                    return Err(SplitError::Truncated);
                }
                offset += BLOCK as u64;
                extensions.extend_from_slice(&ext);
                if ext[504] == 0 {
                    break;
                }
            }
        }
        let body = padded(size);
        let directory = kind == EntryType::Directory || kind == EntryType::new(b'D');
        if directory || kind == EntryType::Link || parts.is_empty() {
            let mut whole = [prefix.as_slice(), &block, &extensions].concat();
            // Directories and links have no body; anything else is kept whole.
            let copied = Read::by_ref(input)
                .take(body)
                .read_to_end(&mut whole)
                .map_err(SplitError::Read)?;
            if copied as u64 != body {
                return Err(SplitError::Truncated);
            }
            if directory {
                for (i, part) in parts.iter_mut().enumerate() {
                    write(part, &[&whole])?;
                    written[i] += whole.len() as u64;
                }
            }
            last.write_all(&whole).map_err(SplitError::Write)?;
        } else {
            let i = least_waiting(parts, next);
            next = (i + 1) % parts.len();
            let part = &mut parts[i];
            write(part, &[&prefix, &block, &extensions])?;
            move_body(input, part, body)?;
            written[i] += (prefix.len() + BLOCK + extensions.len()) as u64 + body;
        }
        offset += body;
        prefix.clear();
        if offset - reported >= REPORT_EVERY {
            reported = offset;
            moved(offset);
        }
    }
    moved(offset);
    for (part, written) in parts.iter_mut().zip(written) {
        write(part, &[&end_of_archive(written)])?;
    }
    Ok(())
}

/// Zero blocks that end a tar of `written` bytes: two, then up to a whole record.
pub fn end_of_archive(written: u64) -> Vec<u8> {
    let end = written + 2 * BLOCK as u64;
    vec![0u8; (end.div_ceil(RECORD) * RECORD - written) as usize]
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// Fills `block`; false at a clean end of the stream.
fn read_block(input: &mut File, block: &mut [u8; BLOCK]) -> Result<bool, SplitError> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(SplitError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SplitError::Read(e)),
        }
    }
    Ok(true)
}

/// The header's checksum: the sum of its bytes, the checksum field counted
/// as spaces.
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    Header::from_byte_slice(block).cksum().ok() == Some(sum)
}

fn write(part: &mut File, pieces: &[&[u8]]) -> Result<(), SplitError> {
    for piece in pieces {
        part.write_all(piece).map_err(SplitError::Write)?;
    }
    Ok(())
}

/// The part with the fewest bytes waiting in its pipe (its host side is the
/// least behind), the first such one from `from` on.
fn least_waiting(parts: &[File], from: usize) -> usize {
    (0..parts.len())
        .map(|k| (from + k) % parts.len())
        .min_by_key(|&i| rustix::io::ioctl_fionread(parts[i].as_fd()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Moves `len` bytes from pipe to pipe inside the kernel.
fn move_body(input: &mut File, part: &mut File, len: u64) -> Result<(), SplitError> {
    let mut left = len;
    while left > 0 {
        let chunk = left.min(1 << 20) as usize;
        match rustix::pipe::splice(
            input.as_fd(),
            None,
            part.as_fd(),
            None,
            chunk,
            rustix::pipe::SpliceFlags::MOVE,
        ) {
            Ok(0) => return Err(SplitError::Truncated),
            Ok(n) => left -= n as u64,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(SplitError::Write(e.into()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt as _;

    /// A tar of every kind of entry a backup holds, long names included, in
    /// GNU tar's `format` (gnu: long names in their own entries; pax: in
    /// extended headers).
    fn sample(format: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("srv");
        let deep = root.join(format!("d/{}", "n".repeat(150)));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir(root.join("empty")).unwrap();
        for i in 0..40u32 {
            let len = (i as usize * 7919) % 70_000;
            let bytes: Vec<u8> = (0..len).map(|k| (k as u32 * 31 + i) as u8).collect();
            std::fs::write(deep.join(format!("f{i}")), bytes).unwrap();
        }
        std::fs::write(root.join("top"), b"top").unwrap();
        std::fs::set_permissions(root.join("top"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::hard_link(root.join("top"), root.join("d/hard")).unwrap();
        std::os::unix::fs::symlink(format!("{}/f3", "n".repeat(150)), root.join("d/link")).unwrap();
        let out = std::process::Command::new("tar")
            .args(["-c", "-f", "-", "--sort=name", "--numeric-owner"])
            .arg(format!("--format={format}"))
            .arg("-C")
            .arg(dir.path())
            .arg("srv")
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    /// Every entry of a tar: name to (type, link target, mode, contents).
    fn entries(tar: &[u8]) -> BTreeMap<String, (u8, String, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        let mut found = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let kind = entry.header().entry_type().as_byte();
            let mode = entry.header().mode().unwrap();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).unwrap();
            found.insert(name, (kind, link, mode, body));
        }
        found
    }

    fn pipe() -> (File, File) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        (File::from(r), File::from(w))
    }

    /// Runs the splitter over `tar` with `n` parts, each pipe drained by a thread.
    fn run(tar: Vec<u8>, n: usize) -> (Result<(), SplitError>, Vec<Vec<u8>>, Vec<u8>) {
        let (mut input, mut feed) = pipe();
        let feeder = std::thread::spawn(move || {
            let _ = feed.write_all(&tar);
        });
        let (mut writers, mut readers) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (mut r, w) = pipe();
            writers.push(w);
            readers.push(std::thread::spawn(move || {
                let mut got = Vec::new();
                r.read_to_end(&mut got).unwrap();
                got
            }));
        }
        let mut last = Vec::new();
        let dealt = split(&mut input, &mut writers, &mut last, &|_| {});
        drop(writers);
        drop(input);
        feeder.join().unwrap();
        let parts = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (dealt, parts, last)
    }

    #[test]
    fn every_entry_lands_in_exactly_one_tar_and_each_tar_is_whole() {
        for format in ["gnu", "pax"] {
            dealt_whole(sample(format));
        }
    }

    fn dealt_whole(tar: Vec<u8>) {
        let whole = entries(&tar);
        let (dealt, parts, last) = run(tar, 3);
        dealt.unwrap();
        let directories: BTreeMap<_, _> = whole
            .iter()
            .filter(|(_, e)| e.0 == b'5')
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        let mut union = BTreeMap::new();
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.len() as u64 % RECORD, 0, "part {i} ends on a record");
            let mut found = entries(part);
            // Every directory, in every part.
            for (name, entry) in &directories {
                assert_eq!(
                    found.remove(name).as_ref(),
                    Some(entry),
                    "{name} in part {i}"
                );
            }
            for (name, entry) in found {
                assert_ne!(entry.0, b'1', "{name} is a hard link in a part");
                assert!(union.insert(name, entry).is_none());
            }
        }
        let last_entries = entries(&[last.as_slice(), &end_of_archive(last.len() as u64)].concat());
        for (name, entry) in last_entries {
            assert!(matches!(entry.0, b'5' | b'1'), "{name} goes to a part");
            assert!(union.insert(name, entry).is_none());
        }
        assert_eq!(union, whole);
        assert!(
            parts
                .iter()
                .filter(|p| entries(p).values().filter(|e| e.0 != b'5').count() > 3)
                .count()
                >= 2,
            "the files are spread over the parts"
        );
    }

    #[test]
    fn a_stream_cut_short_or_not_a_tar_is_an_error() {
        let tar = sample("gnu");
        for cut in [700, 512 * 9 + 100, tar.len() / 2] {
            let (dealt, _, _) = run(tar[..cut].to_vec(), 2);
            assert!(
                matches!(dealt, Err(SplitError::Truncated)),
                "cut at {cut}: {dealt:?}"
            );
        }
        let (dealt, _, _) = run(b"not a tar at all".repeat(100), 2);
        assert!(matches!(dealt, Err(SplitError::NotTar(0))), "{dealt:?}");
    }

    #[test]
    fn a_part_that_goes_away_stops_the_split() {
        let tar = sample("gnu");
        let (mut input, mut feed) = pipe();
        let feeder = std::thread::spawn(move || {
            let _ = feed.write_all(&tar);
        });
        let (reader, writer) = pipe();
        drop(reader);
        let mut parts = [writer];
        let dealt = split(&mut input, &mut parts, &mut Vec::new(), &|_| {});
        assert!(matches!(dealt, Err(SplitError::Write(_))), "{dealt:?}");
        drop(input);
        feeder.join().unwrap();
    }
}
