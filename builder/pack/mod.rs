//! Packing rendered files into reproducible containers: tar, zstd, seed images.
//!
//! Every function here is a pure function of its arguments: no clock, no
//! owner, no umask, no environment, no filesystem reads.

mod seed;
mod tar;
mod zstd;

pub use self::seed::seed_image;
pub use self::tar::{tar, untar, Entry};
pub use self::zstd::{unzstd, zstd, ZSTD_LEVEL};

use std::io;

/// Why packing or unpacking failed; each variant names what was being handled.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("invalid entry path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("duplicate entry path {path:?}")]
    DuplicatePath { path: String },

    #[error("entry path {path:?} is a file but another entry uses it as a directory")]
    FileIsDirectory { path: String },

    #[error("writing tar entry {path:?}")]
    TarWrite {
        path: String,
        #[source]
        source: io::Error,
    },

    #[error("finishing tar archive")]
    TarFinish {
        #[source]
        source: io::Error,
    },

    #[error("reading tar archive")]
    TarRead {
        #[source]
        source: io::Error,
    },

    #[error("tar entry path is not UTF-8")]
    TarPathNotUtf8 {
        #[source]
        source: std::str::Utf8Error,
    },

    #[error("tar entry {path:?} has unsupported type {kind:?}")]
    TarEntryType {
        path: String,
        kind: ::tar::EntryType,
    },

    #[error("compressing {len} bytes with zstd")]
    ZstdCompress {
        len: usize,
        #[source]
        source: io::Error,
    },

    #[error("decompressing zstd stream")]
    ZstdDecompress {
        #[source]
        source: io::Error,
    },

    #[error("invalid seed volume label {label:?}: {reason}")]
    InvalidLabel { label: String, reason: &'static str },

    #[error("seed image contents ({bytes} bytes) do not fit a FAT12 volume")]
    SeedTooLarge { bytes: u64 },

    #[error("formatting {bytes}-byte FAT12 seed image")]
    SeedFormat {
        bytes: u64,
        #[source]
        source: io::Error,
    },

    #[error("writing {name:?} into the seed image")]
    SeedWrite {
        name: String,
        #[source]
        source: io::Error,
    },

    #[error("opening or closing the seed image filesystem")]
    SeedMount {
        #[source]
        source: io::Error,
    },
}
