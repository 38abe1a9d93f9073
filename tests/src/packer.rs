//! Running the real Packer on the repository's templates in a test: an SSH key pair for the
//! build user of a [`crate::vm::Guest`] base image, and `packer build` with a variables file,
//! its cache and log in the test's work directory (never the checkout).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Whether `packer` can run here.
#[must_use]
pub fn available() -> bool {
    Command::new("packer").arg("version").output().is_ok()
}

/// A new passphrase-less ed25519 key in `dir`: the private key's path and the public key.
///
/// # Panics
///
/// `ssh-keygen` fails.
#[must_use]
pub fn ssh_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    (key, public)
}

/// What `packer build` did: its output, and the last lines of its log.
pub struct Build {
    /// Exit status and printed output.
    pub output: Output,
    /// The tail of `PACKER_LOG`.
    pub log_tail: String,
}

impl Build {
    /// Packer's stdout, the log tail, for a failure message.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- log tail ---\n{}",
            String::from_utf8_lossy(&self.output.stdout),
            self.log_tail
        )
    }
}

/// `packer build -color=false [args] -var-file=<vars> <template>` from the repository root,
/// with `vars` written to `work/vars.json` and Packer's cache and log in `work`.
///
/// # Panics
///
/// Packer cannot be started.
#[must_use]
pub fn build(template: &str, args: &[&str], vars: &Value, work: &Path) -> Build {
    let var_file = work.join("vars.json");
    std::fs::write(&var_file, vars.to_string()).expect("vars");
    let log = work.join("packer.log");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new("packer")
        .current_dir(&repo)
        .args(["build", "-color=false"])
        .args(args)
        .arg(format!("-var-file={}", var_file.display()))
        .arg(template)
        .env("PACKER_CACHE_DIR", work.join("packer_cache"))
        .env("PACKER_LOG", "1")
        .env("PACKER_LOG_PATH", &log)
        .output()
        .expect("run packer");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.reverse();
    Build {
        output,
        log_tail: tail.join("\n"),
    }
}
