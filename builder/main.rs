//! The `sov` command: parse the arguments, run, print the error chain and
//! map it to an exit code (0 done, 1 failed, 2 bad input or usage).

use std::process::ExitCode;

use clap::Parser;
use sov::cli::Cli;
use sov::model::diag::printable_lines;

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
