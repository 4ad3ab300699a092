//! The one way sov reads the stack's input files (sites/, images/,
//! templates/): regular files inside the stack root, capped in size, as
//! UTF-8 text whose errors point at a line and column.

use std::ffi::OsStr;
use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::Diagnostic;

/// The largest input file read. A site of 100,000 hosts with pinned host
/// keys is about 21 MB and parses in under 500 MB; the densest TOML (one
/// short key per line) of this size parses in about 900 MB. Anything bigger
/// is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 24 * 1024 * 1024;

/// Why an input file was not read. None of these show what a symbolic link
/// points at or what the file holds: either may be a secret.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "a symbolic link that leads outside the stack (or into a hidden folder such as .sov): \
         expected a file or folder inside the stack"
    )]
    Escapes,
    #[error("this is {0}, not a regular file: expected a file")]
    NotAFile(&'static str),
    #[error("this is {0}, not a folder: expected a folder")]
    NotAFolder(&'static str),
    #[error("the file is {size} bytes: expected at most {MAX_FILE_BYTES} bytes")]
    TooLarge { size: u64 },
    #[error("cannot read the stack root")]
    Root(#[source] io::Error),
    #[error("cannot read")]
    Read(#[source] io::Error),
}

impl InputError {
    /// The error against `rel`, with its cause in the message, since a
    /// diagnostic is text.
    pub fn at(&self, rel: impl Into<PathBuf>) -> Diagnostic {
        let message = match std::error::Error::source(self) {
            Some(cause) => format!("{self}: {cause}"),
            None => self.to_string(),
        };
        Diagnostic::file(rel, message)
    }
}

/// The stack root, resolved once; every file read through it must resolve
/// to a place inside it.
#[derive(Debug, Clone)]
pub struct Inputs {
    root: PathBuf,
    real: PathBuf,
}

impl Inputs {
    pub fn new(root: &Path) -> Result<Inputs, InputError> {
        let real = fs::canonicalize(root).map_err(InputError::Root)?;
        Ok(Inputs {
            root: root.to_path_buf(),
            real,
        })
    }

    /// The entries of folder `dir` (relative to the root) whose names pass
    /// `keep`, sorted, as paths relative to the root. Hidden entries are
    /// skipped: they are editor and tool files, never stack input.
    pub fn list(
        &self,
        dir: &Path,
        keep: impl Fn(&Path) -> bool,
    ) -> Result<Vec<PathBuf>, Diagnostic> {
        self.resolve_dir(dir).map_err(|e| e.at(dir))?;
        let entries = fs::read_dir(self.root.join(dir)).map_err(|e| InputError::Read(e).at(dir))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !is_hidden(&e.file_name()))
            .map(|e| dir.join(e.file_name()))
            .filter(|p| keep(p))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Every file under folder `dir`, recursively, sorted, relative to the
    /// root. Symbolic links are listed, not followed: [`Inputs::read`]
    /// decides whether one may be read.
    pub fn walk(&self, dir: &Path) -> Result<Vec<PathBuf>, Vec<Diagnostic>> {
        self.resolve_dir(dir).map_err(|e| vec![e.at(dir)])?;
        let base = self.root.join(dir);
        let mut files = Vec::new();
        let mut problems = Vec::new();
        let walk = walkdir::WalkDir::new(&base)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()));
        for entry in walk {
            match entry {
                Ok(e) if e.file_type().is_dir() => {}
                Ok(e) => {
                    let rel = e.path().strip_prefix(&base).unwrap_or(e.path());
                    files.push(dir.join(rel));
                }
                Err(e) => {
                    let rel = e
                        .path()
                        .and_then(|p| p.strip_prefix(&base).ok())
                        .map_or_else(|| dir.to_path_buf(), |p| dir.join(p));
                    // Links are not followed, so walkdir has no loop to report.
                    let io = e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("a folder loop"));
                    problems.push(InputError::Read(io).at(rel));
                }
            }
        }
        if problems.is_empty() {
            Ok(files)
        } else {
            Err(problems)
        }
    }

    /// The text of `rel` (relative to the root): a regular file inside the
    /// root, at most [`MAX_FILE_BYTES`], valid UTF-8.
    pub fn read(&self, rel: &Path) -> Result<String, Diagnostic> {
        let bytes = self.read_bytes(rel).map_err(|e| e.at(rel))?;
        utf8(rel, bytes)
    }

    fn read_bytes(&self, rel: &Path) -> Result<Vec<u8>, InputError> {
        let real = self.resolve(rel)?;
        // Checked before opening so that no device is ever opened.
        check_regular(&fs::metadata(&real).map_err(InputError::Read)?)?;
        // NONBLOCK: a FIFO swapped in after the check does not hang the
        // open; NOFOLLOW: nor does a symbolic link swapped in for the file.
        let flags =
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(&real, flags, Mode::empty())
            .map_err(|e| InputError::Read(e.into()))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(InputError::Read)?;
        check_regular(&meta)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(InputError::TooLarge { size: meta.len() });
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // One byte past the cap tells a file that grew since fstat.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(InputError::Read)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(InputError::TooLarge {
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    /// Where `rel` really is, refused unless that is inside the root and
    /// out of hidden folders (the state in `.sov`, `.git`).
    fn resolve(&self, rel: &Path) -> Result<PathBuf, InputError> {
        let real = fs::canonicalize(self.root.join(rel)).map_err(InputError::Read)?;
        match real.strip_prefix(&self.real) {
            Ok(inside) if !inside.iter().any(is_hidden) => Ok(real),
            _ => Err(InputError::Escapes),
        }
    }

    fn resolve_dir(&self, dir: &Path) -> Result<(), InputError> {
        let real = self.resolve(dir)?;
        let t = fs::metadata(real).map_err(InputError::Read)?.file_type();
        if t.is_dir() {
            Ok(())
        } else {
            Err(InputError::NotAFolder(describe(t)))
        }
    }
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b".")
}

fn check_regular(meta: &Metadata) -> Result<(), InputError> {
    let t = meta.file_type();
    if t.is_file() {
        Ok(())
    } else {
        Err(InputError::NotAFile(describe(t)))
    }
}

fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// `bytes` as text, or a diagnostic at the line and column (in characters)
/// of the first byte that is not UTF-8, with the line shown up to there.
fn utf8(rel: &Path, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let valid_up_to = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&bytes[..valid_up_to]).unwrap_or_default();
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        let excerpt = valid[line_start..].to_string();
        Diagnostic {
            file: rel.to_path_buf(),
            line: valid.matches('\n').count() + 1,
            column: excerpt.chars().count() + 1,
            message: format!(
                "byte 0x{:02x} is not UTF-8: expected UTF-8 text",
                bytes.get(valid_up_to).copied().unwrap_or_default()
            ),
            excerpt,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_is_placed_by_line_and_character() {
        let d = utf8(
            Path::new("a.toml"),
            b"x = 1\n# \xc3\xa9t\xc3\xa9 \xfe!\n".to_vec(),
        )
        .unwrap_err();
        assert_eq!((d.line, d.column), (2, 7));
        assert_eq!(d.excerpt, "# été ");
        assert!(d.message.contains("0xfe"), "{}", d.message);
    }

    #[test]
    fn a_truncated_character_at_the_end_is_placed_too() {
        let d = utf8(Path::new("a.toml"), b"ab\xc3".to_vec()).unwrap_err();
        assert_eq!((d.line, d.column, d.excerpt.as_str()), (1, 3, "ab"));
    }
}
