//! Test doubles and fixture builders shared by snapscan's end-to-end tests.
//!
//! Fixtures are real disk images made by real Debian tools (mkfs.*, sgdisk, sfdisk, cryptsetup,
//! LVM, debootstrap) and cached under [`cache_dir`], so a second run costs nothing.

pub mod agent;
pub mod compute;
pub mod expect;
pub mod gce;
pub mod gce_metadata;
pub mod hive;
pub mod images;
pub mod oauth;
pub mod opens;
pub mod packer;
pub mod pubsub;
pub mod qflow;
pub mod scan_env;
pub mod server;
pub mod vm;
pub mod windows;

use std::path::PathBuf;
use std::sync::OnceLock;

/// Where built fixtures are cached: `$SNAPSCAN_TEST_CACHE`, else `target/fixture-cache` in the
/// workspace. Created on first use.
pub fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("SNAPSCAN_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("fixture-cache")
        });
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Run `snapscan inspect --json` on one disk and parse its output.
///
/// # Panics
///
/// It cannot run, fails, or prints no JSON.
#[must_use]
pub fn inspect_json(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(snapscan_bin())
        .args(["inspect", "--json"])
        .arg(path)
        .output()
        .expect("run snapscan");
    assert!(
        out.status.success(),
        "snapscan inspect {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The `snapscan` binary of this workspace, built (once per test process) in the same profile
/// as the tests. `CARGO_BIN_EXE_*` only exists for a package's own binaries, and the binary is
/// in the `snapscan` package, hence the explicit build.
pub fn snapscan_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>
        let exe = std::env::current_exe().expect("current test executable");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executable under target/<profile>/deps")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "snapscan", "--bin", "snapscan"])
            .arg("--manifest-path")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"));
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run cargo build for the snapscan binary");
        assert!(status.success(), "cargo build -p snapscan failed");
        let bin = profile_dir.join("snapscan");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Pids of the live (not zombie) processes whose command line mentions `needle`: the test's
/// way to see that a scanner it started through snapscan is gone.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `CI` is set to a true value (anything but empty, `0`, `false`, `no` or `off`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// A test cannot run here (no root, a tool missing): under CI (see [`in_ci`]), where the test
/// command installs every tool and runs as root, that is a failure, so this panics with
/// `reason`; elsewhere it prints `skipped: {reason}` and the caller returns.
///
/// # Panics
/// When running under CI.
#[track_caller]
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("cannot run under CI (CI is set): {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// The number in the environment variable `name` (a benchmark's setting), else `default`.
///
/// # Errors
///
/// It is set but not a number.
pub fn env_f64(name: &str, default: f64) -> anyhow::Result<f64> {
    use anyhow::Context as _;
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v}")),
        Err(_) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    #[test]
    #[ignore = "run by skip_fails_only_under_ci in a child process"]
    fn calls_skip() {
        super::skip("a tool is missing");
    }

    #[test]
    fn skip_fails_only_under_ci() {
        let run = |ci: &str| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args(["--ignored", "--exact", "tests::calls_skip"])
                .env("CI", ci)
                .output()
                .expect("run the test binary")
        };
        let under_ci = run("true");
        assert!(!under_ci.status.success(), "skip passed under CI=true");
        assert!(String::from_utf8_lossy(&under_ci.stdout).contains("cannot run under CI"));
        for not_ci in ["", "false", "0"] {
            let out = run(not_ci);
            assert!(out.status.success(), "skip failed with CI={not_ci:?}");
        }
    }
}
