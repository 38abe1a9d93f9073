//! The command line: subcommands and what each prints. Exit codes are documented in the README
//! and are part of the interface: [`EXIT_OK`], [`EXIT_FAILURE`], [`EXIT_USAGE`].

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::inspect::{self, Options};

/// Everything worked.
pub const EXIT_OK: u8 = 0;
/// At least one disk could not be opened or read (each has a one-line `error:` on stderr).
pub const EXIT_FAILURE: u8 = 1;
/// The command line was wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;

/// snapscan: agentless disk scanner for Google Compute Engine.
#[derive(Debug, Parser)]
#[command(name = "snapscan", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell what is on disk images or block devices: partition table, volumes, filesystems, OS.
    ///
    /// Reads only the few blocks it needs, without root and without mounting.
    Inspect(InspectArgs),
    /// Scan one disk end to end: mount read-only, detect the OS, run the scanner, write and
    /// upload the results.
    Scan(ScanArgs),
    /// Upload result files (kept locally after a failed upload, for instance) to a sink.
    Upload(UploadArgs),
}

/// Arguments of `snapscan scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Where `report.json` and the scanner's outputs are written (default: a new directory
    /// under the configured results directory).
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Upload the results to this QFlow endpoint instead of the configured sink.
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
    /// Scanner profile to run (`inventory`, `qscanner`, `command` or one from the config).
    #[arg(long, value_name = "NAME")]
    pub scanner: Option<String>,
    /// Configuration file (TOML), read instead of the default locations.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Snapshot name passed to the scanner and the upload.
    #[arg(long, value_name = "NAME")]
    pub snapshot: Option<String>,
    /// Instance id of the scanned VM, passed to the scanner and the upload.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,
    /// Print the report as JSON instead of the short summary.
    #[arg(long)]
    pub json: bool,
    /// Disk image file or block device.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// Arguments of `snapscan upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// QFlow endpoint; without it, the configured sink.
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
    /// Configuration file (TOML), read instead of the default locations.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A metadata field sent with every file, `NAME=VALUE` (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE")]
    pub fields: Vec<String>,
    /// Files to upload.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Arguments of `snapscan inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print one JSON object per disk, one per line, instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Longest the parse of one volume may take, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub volume_timeout_secs: u64,
    /// Disk image files or block devices.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Inspect(args) => run_inspect(&args),
        Command::Scan(_) | Command::Upload(_) => {
            eprintln!("error: not built yet");
            EXIT_FAILURE
        }
    }
}

fn run_inspect(args: &InspectArgs) -> u8 {
    let opts = Options {
        volume_timeout: Duration::from_secs(args.volume_timeout_secs.max(1)),
        ..Options::default()
    };
    let mut code = EXIT_OK;
    let stdout = std::io::stdout();
    for path in &args.paths {
        match inspect::inspect(path, &opts) {
            Ok(report) => {
                let text = if args.json {
                    match serde_json::to_string(&report) {
                        Ok(j) => j + "\n",
                        Err(e) => {
                            eprintln!(
                                "error: cannot encode the report of '{}': {e}",
                                path.display()
                            );
                            code = EXIT_FAILURE;
                            continue;
                        }
                    }
                } else {
                    inspect::render_text(&report)
                };
                // A closed stdout (`| head`) is not worth a panic or an error message.
                if stdout.lock().write_all(text.as_bytes()).is_err() {
                    return code;
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                code = EXIT_FAILURE;
            }
        }
    }
    code
}
