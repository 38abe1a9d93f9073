//! The `snapscan` binary: parse the command line, set up logging, run, turn the outcome into an
//! exit code. Everything else lives in the library.
//!
//! Logging is set up by [`snapscan::logging`], per command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match snapscan::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                snapscan::cli::EXIT_USAGE
            } else {
                snapscan::cli::EXIT_OK
            });
        }
    };
    ExitCode::from(snapscan::cli::run(cli))
}
