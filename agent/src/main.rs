//! The `snapscan` binary: parse the command line, set up logging, run, turn the outcome into an
//! exit code. Everything else lives in the library.
//!
//! Logs go to stderr; `SNAPSCAN_LOG` sets the level or filter (`info`, `snapscan=debug`;
//! default `warn`).

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
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAPSCAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    ExitCode::from(snapscan::cli::run(cli))
}
