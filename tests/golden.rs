//! Golden snapshots of every artifact kind of the example stack, reviewed
//! like code: a change to a template or to sov shows up here as a diff.

mod common;

use std::fs;
use std::io::Read;

use common::{artifacts, Stack};

/// The files inside a NoCloud seed image, read back with a FAT reader.
fn seed_files(image: &[u8]) -> Vec<(String, String)> {
    let fs = fatfs::FileSystem::new(
        std::io::Cursor::new(image.to_vec()),
        fatfs::FsOptions::new(),
    )
    .unwrap();
    assert_eq!(fs.volume_label().trim_end(), "cidata");
    let mut files = Vec::new();
    for entry in fs.root_dir().iter() {
        let entry = entry.unwrap();
        let mut text = String::new();
        entry.to_file().read_to_string(&mut text).unwrap();
        files.push((entry.file_name(), text));
    }
    files.sort();
    files
}

#[test]
fn every_artifact_matches_its_golden_snapshot() {
    let stack = Stack::example();
    let report = stack.build_json();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("golden");
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for a in artifacts(&report) {
            let bytes = fs::read(&a.path).unwrap();
            match a.kind.as_str() {
                "cloud-init" => {
                    for (file, text) in seed_files(&bytes) {
                        insta::assert_snapshot!(format!("{}.{file}", a.name), text);
                    }
                }
                "compose" => {
                    let tar = zstd::decode_all(&bytes[..]).unwrap();
                    for entry in sov::pack::untar(&tar).unwrap() {
                        let text = String::from_utf8(entry.contents).unwrap();
                        let name = format!("{}.{}", a.name, entry.path.replace('/', "_"));
                        insta::assert_snapshot!(name, format!("mode {:o}\n{text}", entry.mode));
                    }
                }
                _ => insta::assert_snapshot!(a.name.clone(), String::from_utf8(bytes).unwrap()),
            }
        }
    });
}
