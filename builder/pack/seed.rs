//! NoCloud seed images: small FAT12 volumes that cloud-init finds by label.

use std::io::{Cursor, Write};

use fatfs::{
    format_volume, Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time,
    TimeProvider,
};

use super::PackError;

const SECTOR: u64 = 512;
/// Images are sized in these steps, which also keeps the sector count a
/// multiple of the 32 sectors-per-track fatfs writes (mtools checks it).
const SIZE_STEP: u64 = 16 * 1024;
/// At 4085 clusters and above a volume is FAT16 by definition.
const MAX_FAT12_CLUSTERS: u64 = 4084;
const MAX_CLUSTER: u32 = 32 * 1024;
const DIR_ENTRY: u64 = 32;
/// UTF-16 units of a name held by one long-file-name directory entry.
const LFN_UNITS: u64 = 13;
const LABEL_LEN: usize = 11;

/// Stamps every directory entry with 1980-01-01 00:00:00. fatfs would use
/// the wall clock if anything in the build enabled its `chrono` feature, and
/// its clock-free fallback is the invalid date 1980-00-00.
#[derive(Debug)]
struct DosEpoch;

impl TimeProvider for DosEpoch {
    fn get_current_date(&self) -> Date {
        Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static DOS_EPOCH: DosEpoch = DosEpoch;

/// Builds a FAT12 image labelled `label` holding `files` in its root
/// directory. The bytes are a function of the arguments alone: sorted files,
/// fixed timestamps, a volume id hashed from the contents, a size computed
/// from the contents.
pub fn seed_image(label: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, PackError> {
    let volume_label = volume_label(label)?;
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _) in &sorted {
        validate_name(name)?;
    }
    if let Some(pair) = sorted.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(PackError::DuplicatePath {
            path: pair[0].0.clone(),
        });
    }
    let layout = Layout::for_files(&sorted)?;
    let size = usize::try_from(layout.bytes).map_err(|_| PackError::SeedTooLarge {
        bytes: layout.bytes,
    })?;

    let mut image = vec![0u8; size];
    let options = FormatVolumeOptions::new()
        .fat_type(FatType::Fat12)
        .bytes_per_cluster(layout.cluster_bytes)
        .max_root_dir_entries(layout.root_entries)
        .volume_id(volume_id(label, &sorted))
        .volume_label(volume_label);
    format_volume(Cursor::new(image.as_mut_slice()), options).map_err(|source| {
        PackError::SeedFormat {
            bytes: layout.bytes,
            source,
        }
    })?;

    let fs = FileSystem::new(
        Cursor::new(image.as_mut_slice()),
        FsOptions::new().time_provider(&DOS_EPOCH),
    )
    .map_err(|source| PackError::SeedMount { source })?;
    for (name, contents) in sorted {
        let write = || -> std::io::Result<()> {
            let mut file = fs.root_dir().create_file(name)?;
            file.write_all(contents)?;
            // Dropping would flush too, but would only log a failure.
            file.flush()
        };
        write().map_err(|source| PackError::SeedWrite {
            name: name.clone(),
            source,
        })?;
    }
    // Clears the dirty flag fatfs sets in the boot sector on first write.
    fs.unmount()
        .map_err(|source| PackError::SeedMount { source })?;
    Ok(image)
}

/// Geometry decided from the contents alone.
struct Layout {
    cluster_bytes: u32,
    root_entries: u16,
    bytes: u64,
}

impl Layout {
    /// Smallest cluster size (from one sector up) that keeps the volume
    /// FAT12; contents plus a quarter of slack, rounded up to `SIZE_STEP`.
    fn for_files(files: &[&(String, Vec<u8>)]) -> Result<Self, PackError> {
        let content: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
        let too_large = || PackError::SeedTooLarge { bytes: content };
        // One entry for the volume label, then per file its long-name
        // entries plus the short-name entry; FAT12 root directories are
        // allocated in whole sectors.
        let entries: u64 = 1 + files
            .iter()
            .map(|(name, _)| 1 + (name.encode_utf16().count() as u64).div_ceil(LFN_UNITS))
            .sum::<u64>();
        let entries = entries.next_multiple_of(SECTOR / DIR_ENTRY);
        let root_entries = u16::try_from(entries).map_err(|_| too_large())?;
        let root_bytes = entries * DIR_ENTRY;

        let mut cluster_bytes: u32 = 512; // one sector
        while cluster_bytes <= MAX_CLUSTER {
            let cluster = u64::from(cluster_bytes);
            let data: u64 = files
                .iter()
                .map(|(_, c)| (c.len() as u64).div_ceil(cluster) * cluster)
                .sum();
            let data = data + data / 4;
            let mut bytes = (SECTOR + root_bytes + data).next_multiple_of(SIZE_STEP);
            // Both FATs sized for every cluster the volume could hold, an
            // upper bound on what fatfs allocates for them.
            while SECTOR + 2 * fat_bytes(bytes / cluster) + root_bytes + data > bytes {
                bytes += SIZE_STEP;
            }
            if bytes / cluster <= MAX_FAT12_CLUSTERS {
                return Ok(Layout {
                    cluster_bytes,
                    root_entries,
                    bytes,
                });
            }
            cluster_bytes *= 2;
        }
        Err(too_large())
    }
}

/// Sector-rounded size of one FAT12 table: 12 bits per cluster, plus the
/// two reserved entries.
fn fat_bytes(clusters: u64) -> u64 {
    ((clusters + 2) * 3).div_ceil(2).next_multiple_of(SECTOR)
}

/// The label exactly as given (cloud-init matches "cidata" or "CIDATA"),
/// space-padded as FAT stores it in both the boot sector and the root
/// directory's volume-label entry.
fn volume_label(label: &str) -> Result<[u8; LABEL_LEN], PackError> {
    let invalid = |reason| PackError::InvalidLabel {
        label: label.into(),
        reason,
    };
    if label.is_empty() {
        return Err(invalid("empty"));
    }
    if label.len() > LABEL_LEN {
        return Err(invalid("longer than 11 bytes"));
    }
    if label.starts_with(' ') {
        return Err(invalid("starts with a space"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b" !#$%&'()-@^_`{}~".contains(&b);
    if !label.bytes().all(allowed) {
        return Err(invalid("contains a character FAT labels cannot hold"));
    }
    let mut out = [b' '; LABEL_LEN];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

/// Restricted to lower-case names so that FAT's case-insensitive lookup
/// cannot make two distinct names collide (fatfs would then silently open the
/// first file again), and without '~' so no name can equal a generated
/// short name.
fn validate_name(name: &str) -> Result<(), PackError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else if name.starts_with('.') || name.ends_with('.') {
        Some("starts or ends with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        Some("seed file names are lower-case ASCII letters, digits, '.', '-' and '_'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PackError::InvalidPath {
            path: name.into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Differs per image (so two seeds attached to one machine are told apart)
/// yet is fixed by what the image holds.
fn volume_id(label: &str, files: &[&(String, Vec<u8>)]) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sov seed volume id\0");
    // Length-prefixed so no two argument lists hash the same byte stream.
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(label.as_bytes());
    for (name, contents) in files {
        field(name.as_bytes());
        field(contents);
    }
    let hash = hasher.finalize();
    let [a, b, c, d, ..] = *hash.as_bytes();
    u32::from_le_bytes([a, b, c, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    fn sample() -> Vec<(String, Vec<u8>)> {
        vec![
            (
                "user-data".into(),
                b"#cloud-config\nhostname: alpha\n".to_vec(),
            ),
            ("network-config".into(), b"version: 2\n".to_vec()),
            ("meta-data".into(), b"instance-id: alpha-1\n".to_vec()),
        ]
    }

    fn mount(image: &mut [u8]) -> FileSystem<Cursor<&mut [u8]>> {
        FileSystem::new(Cursor::new(image), FsOptions::new()).unwrap()
    }

    #[test]
    fn identical_bytes_twice() {
        assert_eq!(
            seed_image("cidata", &sample()).unwrap(),
            seed_image("cidata", &sample()).unwrap()
        );
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(
            seed_image("cidata", &sample()).unwrap(),
            seed_image("cidata", &reversed).unwrap()
        );
    }

    #[test]
    fn different_contents_give_different_image_and_volume_id() {
        let mut other = sample();
        other[0].1 = b"#cloud-config\nhostname: beta\n".to_vec();
        let mut a = seed_image("cidata", &sample()).unwrap();
        let mut b = seed_image("cidata", &other).unwrap();
        assert_ne!(a, b);
        assert_ne!(mount(&mut a).volume_id(), mount(&mut b).volume_id());
    }

    #[test]
    fn small_contents_give_smallest_image() {
        let step = usize::try_from(SIZE_STEP).unwrap();
        assert_eq!(seed_image("cidata", &sample()).unwrap().len(), step);
        assert_eq!(seed_image("cidata", &[]).unwrap().len(), step);
    }

    #[test]
    fn label_is_lower_case_in_boot_sector_and_root_dir() {
        let mut image = seed_image("cidata", &sample()).unwrap();
        let fs = mount(&mut image);
        assert_eq!(fs.fat_type(), FatType::Fat12);
        assert_eq!(fs.volume_label(), "cidata");
        assert_eq!(
            fs.read_volume_label_from_root_dir().unwrap().as_deref(),
            Some("cidata")
        );
    }

    #[test]
    fn files_read_back_sorted_with_fixed_timestamps() {
        let mut image = seed_image("cidata", &sample()).unwrap();
        let fs = mount(&mut image);
        let mut seen = Vec::new();
        for entry in fs.root_dir().iter() {
            let entry = entry.unwrap();
            assert_eq!(entry.modified(), DOS_EPOCH.get_current_date_time());
            assert_eq!(entry.created(), DOS_EPOCH.get_current_date_time());
            assert_eq!(entry.accessed(), DOS_EPOCH.get_current_date());
            let mut contents = Vec::new();
            entry.to_file().read_to_end(&mut contents).unwrap();
            seen.push((entry.file_name(), contents));
        }
        let mut expected = sample();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn large_contents_use_larger_clusters() {
        let big = vec![("user-data".to_string(), vec![7u8; 3 << 20])];
        let mut image = seed_image("cidata", &big).unwrap();
        assert_eq!(image.len() % usize::try_from(SIZE_STEP).unwrap(), 0);
        let fs = mount(&mut image);
        assert_eq!(fs.fat_type(), FatType::Fat12);
        assert!(fs.cluster_size() > 512);
        let mut contents = Vec::new();
        fs.root_dir()
            .open_file("user-data")
            .unwrap()
            .read_to_end(&mut contents)
            .unwrap();
        assert_eq!(contents, big[0].1);
    }

    #[test]
    fn contents_beyond_fat12_are_refused() {
        let huge = vec![("user-data".to_string(), vec![0u8; 128 << 20])];
        assert!(matches!(
            seed_image("cidata", &huge),
            Err(PackError::SeedTooLarge { .. })
        ));
    }

    #[test]
    fn bad_labels_are_refused() {
        for bad in ["", "twelve-bytes", " cidata", "ci.data", "cïdata"] {
            let err = seed_image(bad, &sample()).unwrap_err();
            assert!(
                matches!(&err, PackError::InvalidLabel { label, .. } if label == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn bad_and_duplicate_names_are_refused() {
        for bad in ["", "User-Data", "a/b", ".hidden", "x~1", "trailing."] {
            let err = seed_image("cidata", &[(bad.into(), vec![])]).unwrap_err();
            assert!(
                matches!(&err, PackError::InvalidPath { path, .. } if path == bad),
                "{bad:?}: {err}"
            );
        }
        let twice = [("meta-data".into(), vec![1]), ("meta-data".into(), vec![2])];
        assert!(matches!(
            seed_image("cidata", &twice),
            Err(PackError::DuplicatePath { path }) if path == "meta-data"
        ));
    }

    /// The tool's path, or None (after saying so) when it is missing outside CI.
    fn tool(name: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        // blkid and fsck.vfat live in sbin, often not on a user's PATH.
        let found = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .map(|dir| dir.join(name))
            .find(|p| p.is_file());
        if found.is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{name} not installed (required when CI is set)"
            );
            println!("skipped: {name} not installed");
        }
        found
    }

    fn run(tool: &Path, args: &[&str], image: &Path) -> Output {
        let output = Command::new(tool)
            .args(args)
            .arg(image)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            tool.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn write_image(dir: &tempfile::TempDir, files: &[(String, Vec<u8>)]) -> PathBuf {
        let path = dir.path().join("seed.img");
        std::fs::write(&path, seed_image("cidata", files).unwrap()).unwrap();
        path
    }

    #[test]
    fn mtools_list_and_read_long_names() {
        let (Some(mdir), Some(mtype)) = (tool("mdir"), tool("mtype")) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let image = write_image(&dir, &sample());
        let listing = run(&mdir, &["-i"], &image);
        let listing = String::from_utf8_lossy(&listing.stdout);
        for name in ["user-data", "meta-data", "network-config"] {
            assert!(listing.contains(name), "{name} missing from:\n{listing}");
        }
        for (name, contents) in sample() {
            let out = Command::new(&mtype)
                .arg("-i")
                .arg(&image)
                .arg(format!("::{name}"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, contents, "{name}");
        }
    }

    #[test]
    fn blkid_reports_label_and_volume_id() {
        let Some(blkid) = tool("blkid") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let image = write_image(&dir, &sample());
        let label = run(&blkid, &["-p", "-o", "value", "-s", "LABEL"], &image);
        assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "cidata");
        let kind = run(&blkid, &["-p", "-o", "value", "-s", "SEC_TYPE"], &image);
        assert_eq!(String::from_utf8_lossy(&kind.stdout).trim(), "msdos");
        let uuid = run(&blkid, &["-p", "-o", "value", "-s", "UUID"], &image);
        let id = volume_id("cidata", &sorted_refs(&sample()));
        assert_eq!(
            String::from_utf8_lossy(&uuid.stdout).trim(),
            format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
        );
    }

    fn sorted_refs(files: &[(String, Vec<u8>)]) -> Vec<&(String, Vec<u8>)> {
        let mut refs: Vec<_> = files.iter().collect();
        refs.sort_by(|a, b| a.0.cmp(&b.0));
        refs
    }

    #[test]
    fn fsck_finds_no_errors() {
        let Some(fsck) = tool("fsck.vfat") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let big = vec![("user-data".to_string(), vec![7u8; 3 << 20])];
        for files in [sample(), big, vec![]] {
            let image = write_image(&dir, &files);
            let out = run(&fsck, &["-n"], &image);
            let report = String::from_utf8_lossy(&out.stdout);
            // fsck -n exits 0 on some findings it would merely fix, so also
            // require that it printed nothing but its banner and summary.
            assert_eq!(report.lines().count(), 2, "{report}");
            assert!(report.contains(" files, "), "{report}");
            assert!(
                out.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
