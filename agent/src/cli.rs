//! The command line: subcommands and what each prints. Exit codes are documented in the README
//! and are part of the interface: [`EXIT_OK`], [`EXIT_FAILURE`], [`EXIT_USAGE`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::inspect::{self, Options};
use crate::policy::Policy;
use crate::scan::report::{render_summary, Status, Subject};
use crate::scan::{self, ScanRequest};
use crate::scanner::INVENTORY;
use crate::upload::Sink;

/// Everything worked.
pub const EXIT_OK: u8 = 0;
/// At least one disk could not be opened or read (each has a one-line `error:` on stderr).
pub const EXIT_FAILURE: u8 = 1;
/// The command line or the configuration was wrong.
pub const EXIT_USAGE: u8 = 2;
/// `scan`: results written, but incomplete (the scanner said partial, a volume or package
/// database could not be read).
pub const EXIT_PARTIAL: u8 = 3;
/// `scan`: results written locally, but the sink did not acknowledge them.
pub const EXIT_UPLOAD_FAILED: u8 = 4;
/// Stopped by SIGINT or SIGTERM, after cleaning up (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;
/// `scan --policy`: the results are written (and uploaded), and the image breaks the policy.
pub const EXIT_POLICY: u8 = 5;

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
    /// Send kept results again (after a failed upload, say): a scan's directory or its
    /// `report.json` (its result files, with the scan's own fields), or single files.
    Upload(UploadArgs),
    /// Run the daemon of a scanner VM: watch the metadata server for assigned disks, scan and
    /// upload each, report progress in guest attributes (run by systemd).
    Agent(AgentArgs),
    /// Scan a VM's disks from anywhere with gcloud credentials: snapshot them, create one
    /// scanner VM that does the rest, optionally wait for its results.
    Launch(Box<crate::launch::LaunchArgs>),
    /// Send a fleet work: snapshot a VM's disks (or take snapshots), publish one scan request
    /// per disk to the fleet's Pub/Sub topic, optionally wait for their results.
    Submit(Box<crate::launch::submit::SubmitArgs>),
    /// Work with the settings.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// Arguments of `snapscan agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Configuration file (TOML), read instead of the default locations.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Subcommands of `snapscan config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the settings, check that the upload sink and the default scanner can
    /// work here, then print the settings in effect (TOML, secrets redacted, built-in scanner
    /// profiles included).
    Check(CheckArgs),
}

/// Arguments of `snapscan config check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration file (TOML), read instead of the default locations.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Do not look for the secrets that only exist where the agent runs (the QFlow token, the
    /// scanner's environment variables and secret files): for checking an image as it is built.
    #[arg(long)]
    pub no_secrets: bool,
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
    /// Scan a block device even when it is in use (mounted read-write, or held by another
    /// device); it is then read through a read-only loop device, never marked read-only itself.
    #[arg(long)]
    pub force: bool,
    /// Check what the built-in inventory finds against this policy (TOML); a broken rule makes
    /// the exit code 5.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Disk image file or block device.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// Arguments of `snapscan upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// QFlow endpoint; without it, the configured sink (one must be configured).
    #[arg(long, value_name = "URL")]
    pub upload: Option<String>,
    /// Configuration file (TOML), read instead of the default locations.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A metadata field sent with every single file, `NAME=VALUE` (repeatable). Not with a kept
    /// scan: its files go with the scan's own fields, as the first time.
    #[arg(long = "field", value_name = "NAME=VALUE")]
    pub fields: Vec<String>,
    /// A scan's output directory, its `report.json`, or single files.
    #[arg(required = true, value_name = "PATH")]
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
    if !matches!(cli.command, Command::Agent(_)) {
        crate::logging::init_cli();
    }
    match cli.command {
        Command::Agent(args) => run_agent(&args),
        Command::Config(ConfigCommand::Check(args)) => run_config_check(&args),
        Command::Inspect(args) => run_inspect(&args),
        Command::Scan(args) => run_scan(&args),
        Command::Upload(args) => run_upload(&args),
        Command::Launch(args) => match runtime() {
            Ok(rt) => rt.block_on(crate::launch::run(*args)),
            Err(code) => code,
        },
        Command::Submit(args) => match runtime() {
            Ok(rt) => rt.block_on(crate::launch::submit::run(*args)),
            Err(code) => code,
        },
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
        let result = inspect::inspect(path, &opts);
        if let Err(e) = &result {
            say!("error: {e:#}");
            code = EXIT_FAILURE;
        }
        // With --json every PATH gets its object, in order: `{"source", "error"}` for one that
        // cannot be read, so a consumer can pair lines with its arguments.
        let text = match (&result, args.json) {
            (Ok(report), false) => inspect::render_text(report),
            (Err(_), false) => continue,
            (Ok(report), true) => match serde_json::to_value(report) {
                Ok(v) => format!("{v}\n"),
                Err(e) => error_line(path, &format!("cannot encode the report: {e}")),
            },
            (Err(e), true) => error_line(path, &format!("{e:#}")),
        };
        // A closed stdout (`| head`) is not worth a panic or an error message.
        if stdout
            .lock()
            .write_all(crate::redact::text(&text).as_bytes())
            .is_err()
        {
            return code;
        }
    }
    code
}

/// The `--json` line of a PATH that has no report.
fn error_line(path: &std::path::Path, error: &str) -> String {
    let line = serde_json::json!({ "source": path.display().to_string(), "error": error });
    format!("{line}\n")
}

/// Print an error and its causes, one ` -> cause` line each.
pub fn print_error(e: &anyhow::Error) {
    say!("error: {e}");
    for cause in e.chain().skip(1) {
        say!(" -> {cause}");
    }
}

/// Load the settings named on the command line (or the default layers).
fn load_config(file: Option<&std::path::Path>) -> Result<Config, u8> {
    config::load(file).map_err(|e| {
        print_error(&e);
        EXIT_USAGE
    })
}

/// A multi-threaded runtime for the async commands.
fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            say!("error: cannot start the async runtime: {e}");
            EXIT_FAILURE
        })
}

/// Cancel `token` on the first SIGINT or SIGTERM; the signal's name.
async fn cancel_on_signal(token: CancellationToken) -> Option<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return None;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::warn!("{name} received: stopping and cleaning up");
    token.cancel();
    Some(name)
}

fn run_agent(args: &AgentArgs) -> u8 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init_agent(&cfg.agent.log);
    // Before anything is attached or READY sent: a sink or scanner that cannot work is a
    // configuration error (exit 2, which systemd does not restart on).
    let sink = match cfg.preflight(None, None) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{}", crate::redact::string(format_args!("{e:#}")));
            print_error(&e);
            return EXIT_USAGE;
        }
    };
    let settings = crate::agent::Settings {
        agent: cfg.agent,
        metadata: cfg.metadata,
        compute: cfg.compute,
        queue: cfg.queue,
        status: cfg.status,
        scan: cfg.scan,
        scanners: cfg.scanner,
        sink: std::sync::Arc::new(sink),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        let stop = CancellationToken::new();
        tokio::spawn(cancel_on_signal(stop.clone()));
        crate::agent::run(settings, stop).await
    });
    // Blocking tasks (a scan's unmount) are done: the jobs were awaited.
    rt.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            tracing::error!("{}", crate::redact::string(format_args!("{e:#}")));
            print_error(&e);
            EXIT_FAILURE
        }
    }
}

fn run_config_check(args: &CheckArgs) -> u8 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let checked = if args.no_secrets {
        cfg.scanner
            .preflight(&cfg.scan.scanner, &cfg.scan.scanner_search_path, false)
    } else {
        cfg.preflight(None, None).map(drop)
    };
    if let Err(e) = checked {
        print_error(&e);
        return EXIT_USAGE;
    }
    match config::render_redacted(&cfg) {
        Ok(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            EXIT_OK
        }
        Err(e) => {
            print_error(&e);
            EXIT_FAILURE
        }
    }
}

fn run_upload(args: &UploadArgs) -> u8 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let sink = match Sink::from_config(&cfg.upload, args.upload.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            say!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if sink.destination().is_none() {
        say!(
            "error: no upload destination: give --upload URL, or configure [upload] sink = \
             \"qflow\" (or [upload] local_dir)"
        );
        return EXIT_USAGE;
    }
    match runtime() {
        Ok(rt) => rt.block_on(crate::upload::cli::run_cli(args, &sink)),
        Err(code) => code,
    }
}

fn run_scan(args: &ScanArgs) -> u8 {
    let cfg = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let scanner = args
        .scanner
        .clone()
        .unwrap_or_else(|| cfg.scan.scanner.clone());
    // Everything that can be checked before the disk is touched: the policy, the sink, the
    // scanner, the output directory (usage errors), then the input.
    let policy = match &args.policy {
        Some(_) if scanner != INVENTORY => {
            print_error(&anyhow::anyhow!(
                "--policy checks the built-in inventory's findings: it needs --scanner {INVENTORY}, \
                 not '{scanner}'"
            ));
            return EXIT_USAGE;
        }
        Some(file) => match Policy::load(file) {
            Ok(p) => Some((file.clone(), p)),
            Err(e) => {
                print_error(&e);
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let sink = match cfg.preflight(Some(&scanner), args.upload.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            print_error(&e);
            return EXIT_USAGE;
        }
    };
    if let Some(dir) = &args.output {
        if let Err(e) = scan::check_output_dir(dir) {
            print_error(&e);
            return EXIT_USAGE;
        }
    }
    if let Err(e) = crate::disk::reader::check_source(&args.path) {
        print_error(&e);
        return EXIT_FAILURE;
    }
    let mut req = ScanRequest {
        policy,
        path: args.path.clone(),
        output_dir: PathBuf::new(),
        scanner,
        subject: Subject {
            snapshot: args.snapshot.clone(),
            instance_id: args.instance_id.clone(),
            ..Subject::default()
        },
        fields: BTreeMap::new(),
        progress: None,
        force: args.force,
    };
    req.output_dir = match &args.output {
        Some(dir) => dir.clone(),
        None => new_results_dir(&cfg.scan.results_dir, &req.result_name()),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut report = rt.block_on(async {
        let cancel = CancellationToken::new();
        let watcher = tokio::spawn(cancel_on_signal(cancel.clone()));
        let progress =
            crate::progress::Progress::start(&format!("{}: opening the disk", req.path.display()));
        req.progress = Some(phase_messages(&progress, &req));
        let report = scan::scan(&req, &cfg.scan, &cfg.scanner, &sink, cancel).await;
        progress.finish();
        let signal = if watcher.is_finished() {
            watcher.await.ok().flatten()
        } else {
            watcher.abort();
            None
        };
        (report, signal)
    });
    if let (Status::Interrupted, Some(signal)) = (report.0.status, report.1) {
        report.0.error = Some(format!("interrupted ({signal})"));
        scan::save_report(&req.output_dir, &report.0);
    }
    let report = report.0;
    let text = if args.json {
        serde_json::to_string_pretty(&report).map(|j| j + "\n")
    } else {
        Ok(render_summary(&report, &req.output_dir))
    };
    match text {
        Ok(t) => {
            let _ = std::io::stdout()
                .lock()
                .write_all(crate::redact::text(&t).as_bytes());
        }
        Err(e) => say!("error: cannot encode the report: {e}"),
    }
    if let Some(e) = &report.error {
        say!("error: {e}");
    }
    let broken = report.policy.as_ref().is_some_and(|v| !v.passed);
    match report.status {
        Status::Success | Status::Partial if broken => EXIT_POLICY,
        Status::Success => EXIT_OK,
        Status::Partial => EXIT_PARTIAL,
        Status::UploadFailed => EXIT_UPLOAD_FAILED,
        Status::Failed => EXIT_FAILURE,
        Status::Interrupted => EXIT_INTERRUPTED,
    }
}

/// A channel for the scan's phases that turns them into progress lines.
fn phase_messages(
    progress: &crate::progress::Progress,
    req: &ScanRequest,
) -> tokio::sync::mpsc::UnboundedSender<scan::Phase> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (progress, path, scanner) = (
        progress.clone(),
        req.path.display().to_string(),
        req.scanner.clone(),
    );
    tokio::spawn(async move {
        while let Some(phase) = rx.recv().await {
            progress.set(match phase {
                scan::Phase::Opened => format!("{path}: reading the volumes"),
                scan::Phase::Detected => format!("{path}: scanning with {scanner}, then uploading"),
            });
        }
    });
    tx
}

/// A results directory of its own under `base`: `<name>-<UTC time>`, with `-2`, `-3`... when
/// a scan of the same second already took that name.
fn new_results_dir(base: &std::path::Path, name: &str) -> PathBuf {
    let stem = format!("{name}-{}", compact_now());
    let mut dir = base.join(&stem);
    let mut n = 1u32;
    while dir.exists() {
        n = n.saturating_add(1);
        dir = base.join(format!("{stem}-{n}"));
    }
    dir
}

/// The current UTC time as `20261128T175500Z`, for directory names.
fn compact_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}
