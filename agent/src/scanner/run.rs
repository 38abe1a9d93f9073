//! Run one external scanner once and supervise it.
//!
//! [`run`] renders the profile's argv and environment for one scan ([`ScanContext`]), then:
//!
//! - **never executes anything from the scanned disk**: the program is an absolute path or a bare
//!   name looked up in [`ScanContext::search_path`] (default [`SAFE_PATH`], never the agent's own
//!   `PATH`); it is canonicalized and refused when it lies under the mount point, and so is any
//!   search-path directory (the scanner's `PATH` is that list). Relative program paths are refused
//!   by [`Profile::validate`]. A script whose `#!` interpreter lies on the disk is not detected:
//!   programs are the operator's, not the disk's;
//! - starts it in its own process group, stdin `/dev/null`, working directory the output
//!   directory, with a clean environment: `PATH` (the search path), `LANG=C.UTF-8`, `HOME` (the
//!   per-scan cache directory when the profile has one, else the output directory), then the
//!   profile's `env`;
//! - logs stdout and stderr line by line through `tracing` (lines longer than 4 KiB are cut) up
//!   to `log_cap_bytes` per stream, keeps the last `log_cap_bytes` of each for the report, and
//!   replaces every known secret value by `***` in both; memory stays bounded whatever the
//!   scanner writes;
//! - on timeout or cancellation sends SIGTERM to the whole group, waits `kill_grace_secs`, then
//!   sends SIGKILL; the leader is always reaped. Processes the scanner left behind after it
//!   exited on its own are stopped the same way, so nothing of a scan outlives [`run`] (and
//!   nothing keeps the mount busy). A process that left the group (`setsid`) escapes this;
//! - collects the output files ([`Profile::outputs`]), never following symlinks;
//! - removes the per-scan cache directory.
//!
//! "Gone" means no live (non-zombie) process in the group, read from `/proc`: orphans are
//! reaped by PID 1, which in some containers never happens. Between reaping the leader and the
//! final SIGKILL the group id could in theory be reused by an unrelated new group; that needs
//! the whole PID space to wrap within milliseconds.
//!
//! Not here: retrying, mounting, choosing the profile.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::profile::{env_value, matches_output, render, Values, Var, REDACTED};
use super::{classify, Profile, RunOutcome, ScannerError};
use crate::detect::OsFamily;

/// The default program search path, which is also the scanner's `PATH`.
pub const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest line written to the log; the rest of a longer line is dropped from the log.
const MAX_LOG_LINE_BYTES: usize = 4096;
/// Read size of the output pipes.
const CHUNK_BYTES: usize = 16 * 1024;
/// How long to wait for the group to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for the output pipes to close once the group is gone.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// Polling interval while waiting for the group to vanish.
const POLL: Duration = Duration::from_millis(25);

/// Everything about one scan that a profile's placeholders can refer to, and where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanContext {
    /// The mounted guest root (`{mount}`); required when the profile `needs_mount`.
    pub mount: Option<PathBuf>,
    /// Where the scanner writes its results (`{output_dir}`, its working directory); created when
    /// missing.
    pub output_dir: PathBuf,
    /// The detected OS family (`{os_family}`); Windows selects `command_windows`.
    pub os_family: Option<OsFamily>,
    /// The detected OS id (`{os_id}`: `debian`, `windows`...).
    pub os_id: Option<String>,
    /// The snapshot the disk was made from (`{snapshot}`).
    pub snapshot: Option<String>,
    /// The VM the snapshot belongs to (`{instance_id}`).
    pub instance_id: Option<String>,
    /// The scanned device or image (`{disk}`).
    pub disk: Option<PathBuf>,
    /// The GCE device name of the disk (`{device_name}`).
    pub device_name: Option<String>,
    /// The job's identifier (`{job_id}`).
    pub job_id: String,
    /// Where per-scan cache directories are made (`{cache_dir}` is a fresh directory below it).
    pub cache_root: PathBuf,
    /// Directories searched for a bare program name, in order; also the scanner's `PATH`. Every
    /// one must be absolute and off the scanned disk. Default: [`SAFE_PATH`]. Tests put their
    /// stand-in scanners' directory first.
    pub search_path: Vec<PathBuf>,
}

impl ScanContext {
    /// A context with only the required parts; everything optional is `None` and the search
    /// path is [`SAFE_PATH`].
    pub fn new(
        output_dir: impl Into<PathBuf>,
        cache_root: impl Into<PathBuf>,
        job_id: impl Into<String>,
    ) -> Self {
        ScanContext {
            mount: None,
            output_dir: output_dir.into(),
            os_family: None,
            os_id: None,
            snapshot: None,
            instance_id: None,
            disk: None,
            device_name: None,
            job_id: job_id.into(),
            cache_root: cache_root.into(),
            search_path: std::env::split_paths(SAFE_PATH).collect(),
        }
    }
}

/// Run the scanner `name` described by `profile` once over `ctx`, until it exits, times out or
/// `cancel` fires; see the module header for what is guaranteed.
///
/// # Errors
///
/// A [`ScannerError`] when the scanner could not be started at all (invalid profile, missing
/// mount, secret or program, program on the scanned disk, spawn failure). A scanner that ran is
/// always an `Ok` [`RunOutcome`], whatever its class.
pub async fn run(
    name: &str,
    profile: &Profile,
    ctx: &ScanContext,
    cancel: CancellationToken,
) -> Result<RunOutcome, ScannerError> {
    profile.validate()?;
    let mount = match (&ctx.mount, profile.needs_mount) {
        (Some(m), _) => Some(canonical(m, "mount point")?),
        (None, true) => {
            return Err(ScannerError::Context(format!(
                "profile '{name}' needs the guest root mounted, and none is"
            )))
        }
        (None, false) => None,
    };
    check_search_path(&ctx.search_path, mount.as_deref())?;
    let template = profile.argv_for(ctx.os_family == Some(OsFamily::Windows));
    let Some((program, args)) = template.split_first() else {
        return Err(ScannerError::Profile("command is empty".to_owned()));
    };
    let program = resolve_program(program, &ctx.search_path, mount.as_deref())?;

    std::fs::create_dir_all(&ctx.output_dir).map_err(|source| ScannerError::Io {
        context: format!("cannot create '{}'", ctx.output_dir.display()),
        source,
    })?;
    let output_dir = canonical(&ctx.output_dir, "output directory")?;
    let cache = if profile.cache_dir {
        Some(CacheDir::create(&ctx.cache_root, name)?)
    } else {
        None
    };

    let path_of = |p: &Path| p.to_string_lossy().into_owned();
    let vars = |v: Var| -> Option<String> {
        match v {
            Var::Mount => mount.as_deref().map(path_of),
            Var::OutputDir => Some(path_of(&output_dir)),
            Var::CacheDir => cache.as_ref().map(|c| path_of(&c.0)),
            Var::OsFamily => ctx.os_family.map(|f| {
                match f {
                    OsFamily::Linux => "linux",
                    OsFamily::Windows => "windows",
                }
                .to_owned()
            }),
            Var::OsId => ctx.os_id.clone(),
            Var::Snapshot => ctx.snapshot.clone(),
            Var::InstanceId => ctx.instance_id.clone(),
            Var::Disk => ctx.disk.as_deref().map(path_of),
            Var::DeviceName => ctx.device_name.clone(),
            Var::JobId => Some(ctx.job_id.clone()),
        }
    };
    // Rendered in a block: the templates' closures are not `Send` and must not live across an
    // await.
    let (mut secrets, argv, shown, envs) = {
        let agent_env = |n: &str| std::env::var(n).ok();
        let values = Values {
            vars: &vars,
            env: &agent_env,
        };
        let mut secrets = Vec::new();
        let mut argv = Vec::new();
        let mut shown = vec![program.display().to_string()];
        for t in args {
            let r = render(t, &values)?;
            secrets.extend(r.secrets);
            argv.push(r.value);
            shown.push(r.shown);
        }
        let mut envs = Vec::new();
        for (var, source) in &profile.env {
            let r = env_value(var, source, &values)?;
            secrets.extend(r.secrets);
            envs.push((var.clone(), r.value));
        }
        (secrets, argv, shown, envs)
    };
    secrets.retain(|s| !s.is_empty());
    let secrets = Arc::new(secrets);
    let home = cache.as_ref().map_or(&output_dir, |c| &c.0);
    // OK to fall back: check_search_path found every entry absolute, and a ':' in one is
    // impossible to express in PATH anyway.
    let path_var = std::env::join_paths(&ctx.search_path).unwrap_or_else(|_| SAFE_PATH.into());

    let mut cmd = Command::new(&program);
    cmd.args(&argv)
        .env_clear()
        .env("PATH", &path_var)
        .env("LANG", "C.UTF-8")
        .env("HOME", home)
        .envs(envs)
        .current_dir(&output_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    info!(scanner = name, command = %shown.join(" "), cwd = %output_dir.display(), "starting scanner");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ScannerError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw)
        .ok_or_else(|| ScannerError::Io {
            context: format!("'{}' has no process id", program.display()),
            source: std::io::Error::other("no pid"),
        })?;
    // From here on, dropping this future (the caller gave up) still kills the whole group.
    let mut guard = GroupGuard(Some(pgid));
    let cap = profile.log_cap_bytes;
    let stdout = child.stdout.take().map(|r| {
        tokio::spawn(capture(
            r,
            name.to_owned(),
            "stdout",
            cap,
            Arc::clone(&secrets),
        ))
    });
    let stderr = child.stderr.take().map(|r| {
        tokio::spawn(capture(
            r,
            name.to_owned(),
            "stderr",
            cap,
            Arc::clone(&secrets),
        ))
    });

    let grace = Duration::from_secs(profile.kill_grace_secs);
    let timeout = tokio::time::sleep(Duration::from_secs(profile.timeout_secs));
    let (status, timed_out, cancelled, deadline) = tokio::select! {
        status = child.wait() => (status, false, false, Instant::now() + grace),
        () = timeout => {
            warn!(scanner = name, timeout_secs = profile.timeout_secs, "scanner timed out: stopping its process group");
            let deadline = Instant::now() + grace;
            (stop_leader(&mut child, pgid, deadline, name).await, true, false, deadline)
        }
        () = cancel.cancelled() => {
            warn!(scanner = name, "scan cancelled: stopping the scanner's process group");
            let deadline = Instant::now() + grace;
            (stop_leader(&mut child, pgid, deadline, name).await, false, true, deadline)
        }
    };
    stop_group(pgid, deadline, name).await;
    guard.disarm();
    let status = status.map_err(|source| ScannerError::Io {
        context: format!("cannot wait for '{}'", program.display()),
        source,
    })?;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (stdout_tail, stdout_bytes) = drain(stdout, name, &secrets).await;
    let (stderr_tail, stderr_bytes) = drain(stderr, name, &secrets).await;

    let exit_code = status.code();
    let signal = status.signal();
    let class = classify(&profile.exit_codes, exit_code, timed_out, cancelled);
    let outputs = {
        let dir = output_dir.clone();
        let patterns = profile.outputs.clone();
        tokio::task::spawn_blocking(move || collect_outputs(&dir, &patterns))
            .await
            .map_err(|e| ScannerError::Io {
                context: format!("cannot list '{}'", output_dir.display()),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| ScannerError::Io {
                context: format!("cannot list '{}'", output_dir.display()),
                source,
            })?
    };
    drop(cache);
    info!(
        scanner = name,
        class = ?class,
        exit_code,
        signal,
        elapsed_ms,
        outputs = outputs.len(),
        "scanner finished"
    );
    Ok(RunOutcome {
        scanner: name.to_owned(),
        program,
        argv: shown,
        class,
        exit_code,
        signal,
        timed_out,
        cancelled,
        elapsed_ms,
        outputs,
        stdout_bytes,
        stderr_bytes,
        stdout_tail,
        stderr_tail,
    })
}

/// The live (not zombie) processes of process group `pgid`, from `/proc`.
///
/// # Errors
///
/// `/proc` cannot be listed. Processes that vanish while being read are skipped.
pub fn group_members(pgid: i32) -> std::io::Result<Vec<i32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) && !matches!(state, Some("Z" | "X")) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Kills the group with SIGKILL when dropped armed (the run was abandoned midway).
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}

/// Send `sig` to the group; a group that is already gone is fine.
fn signal_group(pgid: Pid, sig: Signal) {
    match killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            warn!(pgid = pgid.as_raw(), signal = %sig, "cannot signal the scanner's process group: {e}")
        }
    }
}

/// SIGTERM the group, wait for the leader until `deadline`, then SIGKILL the group and reap.
async fn stop_leader(
    child: &mut Child,
    pgid: Pid,
    deadline: Instant,
    name: &str,
) -> std::io::Result<ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            warn!(
                scanner = name,
                "scanner ignored SIGTERM: sending SIGKILL to its process group"
            );
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await
        }
    }
}

/// Make sure no live process of the group remains: SIGTERM what is left, wait until `deadline`,
/// SIGKILL, wait a little more.
async fn stop_group(pgid: Pid, deadline: Instant, name: &str) {
    let members = || group_members(pgid.as_raw()).unwrap_or_default();
    let left = members();
    if left.is_empty() {
        return;
    }
    warn!(scanner = name, processes = ?left, "the scanner left processes behind: stopping them");
    signal_group(pgid, Signal::SIGTERM);
    while !members().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    let until = Instant::now() + KILL_WAIT;
    while !members().is_empty() {
        if Instant::now() >= until {
            warn!(scanner = name, processes = ?members(), "processes of the scanner survive SIGKILL");
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What was read from one output pipe.
struct Capture {
    tail: Vec<u8>,
    total: u64,
}

/// Read one pipe to its end: log lines up to `cap` bytes, keep the last `cap` bytes.
async fn capture<R: AsyncRead + Unpin>(
    mut pipe: R,
    scanner: String,
    stream: &'static str,
    cap: u64,
    secrets: Arc<Vec<String>>,
) -> Capture {
    let cap_bytes = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut log = LineLog {
        scanner,
        stream,
        cap,
        logged: 0,
        muted: false,
        secrets,
    };
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut tail = Vec::new();
    let mut line = Vec::new();
    let mut total: u64 = 0;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                warn!(scanner = %log.scanner, stream, "cannot read the scanner's output: {e}");
                break;
            }
        };
        let chunk = &buf[..n];
        total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        tail.extend_from_slice(chunk);
        if tail.len() > cap_bytes.saturating_mul(2).max(CHUNK_BYTES) {
            let excess = tail.len().saturating_sub(cap_bytes);
            tail.drain(..excess);
        }
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            let room = MAX_LOG_LINE_BYTES.saturating_sub(line.len());
            line.extend_from_slice(&body[..body.len().min(room)]);
            if ends {
                log.emit(&line);
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        log.emit(&line);
    }
    let excess = tail.len().saturating_sub(cap_bytes);
    tail.drain(..excess);
    Capture { tail, total }
}

/// The log side of [`capture`].
struct LineLog {
    scanner: String,
    stream: &'static str,
    cap: u64,
    logged: u64,
    muted: bool,
    secrets: Arc<Vec<String>>,
}

impl LineLog {
    fn emit(&mut self, line: &[u8]) {
        if self.muted {
            return;
        }
        let len = u64::try_from(line.len())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        if self.logged.saturating_add(len) > self.cap {
            self.muted = true;
            info!(scanner = %self.scanner, stream = self.stream, "more output not logged: {} bytes logged already", self.logged);
            return;
        }
        self.logged = self.logged.saturating_add(len);
        let text = redact(String::from_utf8_lossy(line).into_owned(), &self.secrets);
        info!(scanner = %self.scanner, stream = self.stream, "{text}");
    }
}

/// Replace every secret value in `text`.
fn redact(mut text: String, secrets: &[String]) -> String {
    for s in secrets {
        if text.contains(s.as_str()) {
            text = text.replace(s.as_str(), REDACTED);
        }
    }
    text
}

/// Wait for a capture task; a pipe still held open by a process that escaped the group is
/// abandoned after [`DRAIN_WAIT`].
async fn drain(
    task: Option<tokio::task::JoinHandle<Capture>>,
    name: &str,
    secrets: &[String],
) -> (String, u64) {
    let Some(mut task) = task else {
        return (String::new(), 0);
    };
    match tokio::time::timeout(DRAIN_WAIT, &mut task).await {
        Ok(Ok(c)) => (
            redact(String::from_utf8_lossy(&c.tail).into_owned(), secrets),
            c.total,
        ),
        Ok(Err(e)) => {
            warn!(scanner = name, "output capture failed: {e}");
            (String::new(), 0)
        }
        Err(_) => {
            task.abort();
            warn!(
                scanner = name,
                "an output pipe stays open after the scanner's group is gone: a process escaped it"
            );
            (String::new(), 0)
        }
    }
}

/// A per-scan cache directory, removed on drop.
struct CacheDir(PathBuf);

impl CacheDir {
    fn create(root: &Path, name: &str) -> Result<CacheDir, ScannerError> {
        let io = |context: String| move |source| ScannerError::Io { context, source };
        std::fs::create_dir_all(root).map_err(io(format!("cannot create '{}'", root.display())))?;
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = root.join(format!("{safe}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).map_err(io(format!("cannot create '{}'", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("cannot restrict '{}'", dir.display())))?;
        let dir = canonical(&dir, "cache directory")?;
        Ok(CacheDir(dir))
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            warn!(path = %self.0.display(), "cannot remove the scanner's cache directory: {e}");
        }
    }
}

fn canonical(path: &Path, what: &str) -> Result<PathBuf, ScannerError> {
    std::fs::canonicalize(path).map_err(|source| ScannerError::Io {
        context: format!("cannot resolve the {what} '{}'", path.display()),
        source,
    })
}

/// Every search-path directory must be absolute and, where it exists, off the scanned disk.
fn check_search_path(dirs: &[PathBuf], mount: Option<&Path>) -> Result<(), ScannerError> {
    for dir in dirs {
        if !dir.is_absolute() {
            return Err(ScannerError::Context(format!(
                "search path entry '{}' is not absolute",
                dir.display()
            )));
        }
        if let (Some(m), Ok(real)) = (mount, std::fs::canonicalize(dir)) {
            if real.starts_with(m) {
                return Err(ScannerError::OnScannedDisk {
                    path: real,
                    mount: m.to_path_buf(),
                });
            }
        }
    }
    Ok(())
}

/// The canonical path of the program to execute.
pub(crate) fn resolve_program(
    program: &str,
    search: &[PathBuf],
    mount: Option<&Path>,
) -> Result<PathBuf, ScannerError> {
    let found = if program.contains('/') {
        let path = PathBuf::from(program);
        if !path.is_absolute() {
            return Err(ScannerError::Profile(format!(
                "the program '{program}' is a relative path"
            )));
        }
        is_executable(&path).then_some(path)
    } else {
        search
            .iter()
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    };
    let Some(found) = found else {
        let searched = if program.contains('/') {
            program.to_owned()
        } else {
            std::env::join_paths(search)
                .unwrap_or_else(|_| OsString::from("?"))
                .to_string_lossy()
                .into_owned()
        };
        return Err(ScannerError::NotFound {
            program: program.to_owned(),
            searched,
        });
    };
    let real = canonical(&found, "scanner program")?;
    if let Some(m) = mount {
        if real.starts_with(m) {
            return Err(ScannerError::OnScannedDisk {
                path: real,
                mount: m.to_path_buf(),
            });
        }
    }
    Ok(real)
}

/// A regular file (after symlinks) with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The regular files under `dir` matching `patterns` (all of them when empty), sorted. Symlinks
/// are never followed nor returned.
fn collect_outputs(dir: &Path, patterns: &[String]) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                stack.push(path);
            } else if file_type.is_file() {
                let rel = path
                    .strip_prefix(dir)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if patterns.is_empty() || patterns.iter().any(|p| matches_output(p, &rel)) {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capture_keeps_the_tail_and_counts_everything() {
        struct Case {
            name: &'static str,
            input: Vec<u8>,
            cap: u64,
            want_tail: Vec<u8>,
        }
        let long: Vec<u8> = (0..100_000u32)
            .map(|i| b'a' + u8::try_from(i % 26).expect("< 26"))
            .collect();
        let cases = [
            Case {
                name: "short",
                input: b"one\ntwo\n".to_vec(),
                cap: 100,
                want_tail: b"one\ntwo\n".to_vec(),
            },
            Case {
                name: "tail only",
                input: b"one\ntwo\n".to_vec(),
                cap: 4,
                want_tail: b"two\n".to_vec(),
            },
            Case {
                name: "zero cap",
                input: b"one\n".to_vec(),
                cap: 0,
                want_tail: Vec::new(),
            },
            Case {
                name: "long line",
                input: long.clone(),
                cap: 10,
                want_tail: long[long.len() - 10..].to_vec(),
            },
        ];
        for c in cases {
            let got = capture(
                &c.input[..],
                "t".into(),
                "stdout",
                c.cap,
                Arc::new(Vec::new()),
            )
            .await;
            assert_eq!(got.tail, c.want_tail, "case {}", c.name);
            assert_eq!(
                got.total,
                u64::try_from(c.input.len()).expect("len"),
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn redaction() {
        let secrets = ["hunter2".to_owned(), "tok".to_owned()];
        let cases = [
            ("none", "plain", "plain"),
            ("one", "pw=hunter2", "pw=***"),
            ("twice", "hunter2 hunter2", "*** ***"),
            ("two secrets", "tok:hunter2", "***:***"),
        ];
        for (name, input, want) in cases {
            assert_eq!(redact(input.to_owned(), &secrets), want, "case {name}");
        }
    }
}
