//! zstd compression with every output-affecting parameter pinned.

// `::zstd` is the crate; a bare `zstd` would be this module in the parent.
use ::zstd::bulk::Compressor;
use ::zstd::zstd_safe::CParameter;

use super::PackError;

/// Compression level of every bundle. Changing it changes their bytes, not
/// their names: the hash is taken over the uncompressed tar.
pub const ZSTD_LEVEL: i32 = 9;

/// Compresses `bytes` into one frame. Output is a function of the input and
/// the libzstd version (zstd-sys bundles and statically links a pinned one).
pub fn zstd(bytes: &[u8]) -> Result<Vec<u8>, PackError> {
    let compress = || -> std::io::Result<Vec<u8>> {
        let mut compressor = Compressor::new(ZSTD_LEVEL)?;
        // Set explicitly rather than trusting defaults: worker threads split
        // the input into jobs (a different frame), and the two flags change
        // the frame header.
        compressor.set_parameter(CParameter::NbWorkers(0))?;
        compressor.set_parameter(CParameter::ChecksumFlag(true))?;
        compressor.set_parameter(CParameter::ContentSizeFlag(true))?;
        compressor.compress(bytes)
    };
    compress().map_err(|source| PackError::ZstdCompress {
        len: bytes.len(),
        source,
    })
}

/// Decompresses a whole zstd stream (one or more frames).
pub fn unzstd(bytes: &[u8]) -> Result<Vec<u8>, PackError> {
    ::zstd::stream::decode_all(bytes).map_err(|source| PackError::ZstdDecompress { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trip() {
        let input = sample();
        let packed = zstd(&input).unwrap();
        assert!(packed.len() < input.len());
        assert_eq!(unzstd(&packed).unwrap(), input);
    }

    #[test]
    fn round_trip_empty() {
        assert_eq!(unzstd(&zstd(b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn identical_bytes_twice() {
        let input = sample();
        assert_eq!(zstd(&input).unwrap(), zstd(&input).unwrap());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut packed = zstd(&sample()).unwrap();
        let last = packed.len() - 1;
        packed[last] ^= 0xff; // the content checksum
        assert!(matches!(
            unzstd(&packed),
            Err(PackError::ZstdDecompress { .. })
        ));
    }
}
