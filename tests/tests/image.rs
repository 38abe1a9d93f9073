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

/// `systemd-analyze security` of the unit (offline), optionally under `root` (drop-ins
/// included): its report and the overall exposure.
fn security(args: &[&std::ffi::OsStr]) -> (String, f64) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .args(args)
        .output()
        .expect("run systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for snapscan-agent.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure figure in:\n{text}"));
    (text, exposure)
}

#[test]
fn unit_exposure_is_at_most_3() {
    if !have("systemd-analyze") {
        snapscan_tests::skip("no systemd-analyze");
        return;
    }
    let unit = repo().join("systemd/snapscan-agent.service");
    let (text, exposure) = security(&[unit.as_os_str()]);
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 3.0, "exposure {exposure}:\n{text}");
}

/// The README's drop-in for external scanners that need more (a JIT, namespaces, more system
/// calls) does relax exactly those limits of the installed unit, and stays valid.
#[test]
fn the_readme_drop_in_relaxes_the_limits_external_scanners_inherit() {
    if !have("systemd-analyze") {
        snapscan_tests::skip("no systemd-analyze");
        return;
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let drop_in: String = readme
        .split("```ini\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has an ini drop-in block")
        .to_owned();
    let path = drop_in
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .expect("the drop-in's first line names its path");
    assert!(
        path.starts_with("/etc/systemd/system/snapscan-agent.service.d/"),
        "{path}"
    );
    for limit in [
        "MemoryDenyWriteExecute",
        "SystemCallFilter",
        "RestrictNamespaces",
    ] {
        assert!(readme.contains(limit), "README does not name {limit}");
    }
    let root = tempfile::tempdir().expect("tempdir");
    let target = root.path().join(path.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::write(&target, &drop_in).expect("drop-in");
    std::fs::copy(
        repo().join("systemd/snapscan-agent.service"),
        root.path()
            .join("etc/systemd/system/snapscan-agent.service"),
    )
    .expect("unit");
    let root_arg = format!("--root={}", root.path().display());
    let (text, relaxed) = security(&[root_arg.as_ref(), "snapscan-agent.service".as_ref()]);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_owned()
    };
    assert!(line("MemoryDenyWriteExecute=").starts_with('✗'), "{text}");
    assert!(line("RestrictNamespaces=~user").starts_with('✗'), "{text}");
    let unit = repo().join("systemd/snapscan-agent.service");
    let (_, strict) = security(&[unit.as_os_str()]);
    assert!(
        relaxed > strict,
        "drop-in changed nothing: {relaxed} vs {strict}"
    );
}

/// The `packer validate` command the README gives works on a checkout with nothing built: run
/// from a copy of the repository's Packer, image and unit files alone (no `target/`).
#[test]
fn packer_validate_as_the_readme_shows_needs_no_build() {
    if !have("packer") {
        snapscan_tests::skip("no packer (the test command installs Debian's)");
        return;
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let command = readme
        .split('`')
        .find(|s| s.starts_with("packer validate "))
        .expect("the README gives a `packer validate ...` command");
    let checkout = tempfile::tempdir().expect("tempdir");
    for dir in ["packer", "image", "systemd"] {
        let out = Command::new("cp")
            .arg("-r")
            .arg(repo().join(dir))
            .arg(checkout.path())
            .output()
            .expect("cp");
        assert!(out.status.success(), "cp {dir}");
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(checkout.path())
        .output()
        .expect("run packer");
    assert!(
        out.status.success(),
        "`{command}` failed on a checkout with nothing built:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
