//! The `sov` command: parse the arguments, run, print the error chain and
//! map it to an exit code (0 done, 1 failed, 2 bad input or usage).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sov::cli::{Cli, Command};
use sov::model::diag::{printable, printable_lines};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // Plain text, escaped: a usage error quotes the arguments.
            eprint!("{}", printable_lines(&e.render().to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Some(state) = unusable_state(&cli) {
        eprintln!(
            "error: --state {}: not a folder: expected a folder, or a path where one can be made",
            printable(&state.to_string_lossy())
        );
        return ExitCode::from(2);
    }
    match sov::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message may quote a value from the stack: escaped, so
            // that none can drive the terminal or fake a line of the report.
            eprintln!("{}", printable_lines(&e.to_string()));
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {}", printable_lines(&cause.to_string()));
                source = cause.source();
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The state folder when it cannot be one: it, or the nearest part of its
/// path that exists, is a file. Found before anything runs, since it is a
/// usage error and not a failure of the store.
fn unusable_state(cli: &Cli) -> Option<PathBuf> {
    if matches!(cli.command, Command::Init { .. }) {
        return None;
    }
    let state = cli.state.clone().unwrap_or_else(|| cli.root.join(".sov"));
    let existing = state
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_ok())?;
    (!is_folder(existing)).then_some(state)
}

fn is_folder(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_dir())
}
