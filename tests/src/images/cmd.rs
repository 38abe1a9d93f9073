//! The one way the image builders run an external tool.
//!
//! [`tool`] makes a [`Command`] for a program found on `PATH` or in the sbin directories (a
//! non-login root shell may lack them, and tools such as debootstrap call `chroot` from there),
//! with `LC_ALL=C` so that outputs parse the same everywhere. [`run`] runs it to completion and
//! turns every failure into an error that names the command line and carries its stderr.
//! Long-lived helpers (the ntfs-3g daemon) are spawned by their guards instead.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Directories searched after `PATH`.
const EXTRA_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// `PATH` for child processes: the caller's, then the usual sbin and bin directories.
pub fn tool_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(EXTRA_DIRS.iter().map(PathBuf::from));
    // OK to fall back: no directory here holds a ':'.
    std::env::join_paths(dirs).unwrap_or_else(|_| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// Where `program` lives, or `None` when it is not installed.
pub fn find_tool(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&tool_path())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A command for `program` (looked up with [`find_tool`]) with `PATH` extended and `LC_ALL=C`.
/// A missing program is reported by [`run`], naming it.
pub fn tool(program: &str) -> Command {
    let mut cmd = Command::new(find_tool(program).unwrap_or_else(|| PathBuf::from(program)));
    cmd.env("PATH", tool_path()).env("LC_ALL", "C");
    cmd
}

/// The command line as a person would type it (program name, then arguments, quoted when they
/// hold spaces or quotes).
pub fn describe(cmd: &Command) -> String {
    let program = PathBuf::from(cmd.get_program());
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string());
    let mut line = name;
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty() || arg.contains([' ', '"', '\'', '\n', '\t']) {
            line.push_str(&format!("{arg:?}"));
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// Run `cmd` to completion, feeding it `input` on stdin (else `/dev/null`), and return its
/// stdout. Errors when it cannot start or exits unsuccessfully; the error names the command
/// line and includes its stderr.
pub fn run(cmd: &mut Command, input: Option<&[u8]>) -> anyhow::Result<String> {
    let line = describe(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!("cannot run `{line}` (is the tool installed? see scripts/test-all.sh)")
    })?;
    // Feed stdin from a thread so that a child writing much output before reading cannot
    // deadlock against us.
    let feeder = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || stdin.write_all(&bytes)))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .with_context(|| format!("failed to wait for `{line}`"))?;
    if let Some(feeder) = feeder {
        // A child that exits without reading all its input is judged by its exit status.
        let _ = feeder.join();
    }
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let detail = if stderr.trim().is_empty() {
            stdout.trim().to_owned()
        } else {
            stderr.trim().to_owned()
        };
        bail!("`{line}` failed ({}): {detail}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
