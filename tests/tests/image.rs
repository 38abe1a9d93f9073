//! The image's static parts: the Packer template validates with Debian's Packer 1.6.6 (and a
//! broken copy does not), and the systemd unit's exposure (`systemd-analyze security`) stays at
//! or under 3.0. The VM test (`tests/vm.rs`) boots what they describe.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `packer validate` of `template` from the repository root (its file sources are relative to
/// it): exit status and output.
fn validate(template: &Path) -> (bool, String) {
    let bin = snapscan_tests::snapscan_bin();
    let out = Command::new("packer")
        .current_dir(repo())
        .arg("validate")
        .arg("-var")
        .arg("project_id=snapscan-demo")
        .arg("-var")
        .arg(format!("snapscan_binary={}", bin.display()))
        .arg(template)
        .output()
        .expect("run packer");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn packer_template_validates() {
    if !have("packer") {
        snapscan_tests::skip("no packer (the test command installs Debian's)");
        return;
    }
    let template = repo().join("packer/snapscan.pkr.hcl");
    let (ok, text) = validate(&template);
    assert!(ok, "{text}");
    // The check can fail: a qemu source without its checksum setting is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.pkr.hcl");
    let source = std::fs::read_to_string(&template).expect("template");
    assert!(source.contains("iso_checksum"));
    std::fs::write(
        &broken,
        source.replace("iso_checksum         = \"none\"", ""),
    )
    .expect("write");
    let (ok, text) = validate(&broken);
    assert!(!ok, "a template without iso_checksum validated:\n{text}");
}

#[test]
fn unit_exposure_is_at_most_3() {
    if !have("systemd-analyze") {
        snapscan_tests::skip("no systemd-analyze");
        return;
    }
    let unit = repo().join("systemd/snapscan-agent.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for snapscan-agent.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 3.0, "exposure {exposure}:\n{text}");
}
