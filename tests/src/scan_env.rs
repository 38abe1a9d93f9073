//! A private place for `snapscan scan` runs in a test: a temporary directory holding the
//! configuration (`config.toml`, whose `[scan] work_dir` is inside it), the work directory and
//! the output directory `out/`; the command line of a run; what a run wrote or left mounted.
//!
//! Not here: the fixture disks (`images`), what their scans must find (`expect`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// One test's scan environment; removed when dropped.
pub struct ScanEnv {
    /// The temporary directory everything is in.
    pub dir: tempfile::TempDir,
}

impl ScanEnv {
    /// A new environment whose configuration is `[scan] work_dir` plus `extra` (TOML that
    /// continues the `[scan]` table, or starts others).
    #[must_use]
    pub fn new(extra: &str) -> ScanEnv {
        ScanEnv::with_config(|_| extra.to_owned())
    }

    /// As [`ScanEnv::new`], with `extra` made from the environment's directory (for a stand-in
    /// scanner placed there).
    #[must_use]
    pub fn with_config(extra: impl FnOnce(&Path) -> String) -> ScanEnv {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "[scan]\nwork_dir = \"{}\"\n{}",
            dir.path().join("work").display(),
            extra(dir.path())
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("config");
        ScanEnv { dir }
    }

    /// The configuration file.
    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The work directory (mount points, crash leftovers).
    #[must_use]
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The output directory of [`ScanEnv::scan`].
    #[must_use]
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The `snapscan scan` command line on `disk` with `args`, writing to [`ScanEnv::out`], not
    /// started. The built-in `qscanner` profile's `{env:...}` are set.
    #[must_use]
    pub fn command(&self, disk: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::snapscan_bin());
        cmd.arg("scan")
            .arg("--config")
            .arg(self.config())
            .arg("--output")
            .arg(self.out())
            .args(args)
            .arg(disk)
            .env("QUALYS_URL", "https://qualys.invalid")
            .env("QUALYS_AUTH_TOKEN", "test-token");
        cmd
    }

    /// Run `snapscan scan` on `disk` with `args`.
    #[must_use]
    pub fn scan(&self, disk: &Path, args: &[&str]) -> Output {
        self.command(disk, args)
            .output()
            .expect("run snapscan scan")
    }

    /// The `report.json` of the last scan.
    #[must_use]
    pub fn report(&self) -> Value {
        let text = std::fs::read(self.out().join("report.json")).expect("report.json");
        serde_json::from_slice(&text).expect("report.json is JSON")
    }

    /// The SBOM `<name>.cdx.json` of the last scan.
    #[must_use]
    pub fn sbom(&self, name: &str) -> Value {
        let text = std::fs::read(self.out().join(format!("{name}.cdx.json"))).expect("sbom");
        serde_json::from_slice(&text).expect("sbom is JSON")
    }

    /// Mounts left under the work directory.
    #[must_use]
    pub fn mounts_left(&self) -> Vec<String> {
        mounts_under(&self.work())
    }

    /// What a scan of `image` left behind on the host: loop devices over the image or over a
    /// file in this environment (the FUSE file of a decoded image), mounts under the work
    /// directory, scan work areas in it.
    ///
    /// # Panics
    ///
    /// `losetup` cannot run.
    #[must_use]
    pub fn left_behind(&self, image: &Path) -> Vec<String> {
        let out = Command::new("losetup")
            .args(["--list", "--noheadings", "--output", "NAME,BACK-FILE"])
            .output()
            .expect("losetup");
        let backing = [
            image.canonicalize().unwrap_or_else(|_| image.to_path_buf()),
            self.dir.path().to_path_buf(),
        ];
        let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| backing.iter().any(|b| l.contains(&*b.to_string_lossy())))
            .map(|l| format!("loop device: {l}"))
            .collect();
        found.extend(
            self.mounts_left()
                .into_iter()
                .map(|m| format!("mount: {m}")),
        );
        if let Ok(entries) = std::fs::read_dir(self.work()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("scan-") {
                    found.push(format!("work dir: {}", e.path().display()));
                }
            }
        }
        found
    }
}

/// The lines of `/proc/self/mountinfo` that mention `dir`: mounts under it.
#[must_use]
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&dir))
        .map(str::to_owned)
        .collect()
}
