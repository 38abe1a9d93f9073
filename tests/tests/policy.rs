//! `snapscan scan --policy` end to end, on the benchmark Debian disk (raw, and as the qcow2 an
//! image pipeline builds): a policy every rule of which holds passes (exit 0); one that breaks
//! each rule kind fails with exit 5, every broken rule in `report.json` and the summary, and the
//! SBOM still written; a malformed policy, or one given with an external scanner, is a usage
//! error (exit 2) before the disk is opened.

use std::path::Path;

use serde_json::Value;
use snapscan_tests::images::formats::{self, VARIANTS};
use snapscan_tests::images::{self, is_root};
use snapscan_tests::scan_env::ScanEnv;

const PASSING: &str = r#"
max_packages = 500
forbidden_files = ["/root/.bash_history", "/etc/ssh/ssh_host_*_key"]

[os]
family = "linux"
id = ["debian", "ubuntu"]
version = "vers:generic/>=12|<13"

[[require]]
purl = "pkg:deb/debian/bash"
vers = "vers:deb/>=5"

[[deny]]
purl = "pkg:deb/debian/telnetd"
reason = "clear-text logins"

[[deny]]
purl = "pkg:deb/debian/bash"
vers = "vers:deb/<5"
"#;

const FAILING: &str = r#"
max_packages = 10
forbidden_files = ["/etc/host*"]

[os]
version = "vers:generic/>=13"

[[require]]
purl = "pkg:deb/debian/openssh-server"

[[deny]]
purl = "pkg:deb/debian/bash"
vers = "vers:deb/>=5"
reason = "no shells in this image"
"#;

fn scan_with(disk: &Path, policy: &str, args: &[&str]) -> (ScanEnv, std::process::Output) {
    let env = ScanEnv::new("");
    let file = env.dir.path().join("policy.toml");
    std::fs::write(&file, policy).expect("policy");
    let mut all = vec!["--policy", file.to_str().expect("utf-8")];
    all.extend_from_slice(args);
    let out = env.scan(disk, &all);
    (env, out)
}

fn rules(report: &Value) -> Vec<String> {
    report["policy"]["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["rule"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn policies_pass_and_fail_the_scan_with_their_own_exit_code() {
    if !is_root() {
        snapscan_tests::skip("needs root to build the fixture disk");
        return;
    }
    let raw = images::image("debian-ext4-gpt").expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let qcow2 = formats::build(&raw, VARIANTS[0], dir.path()).expect("qcow2");
    for disk in [&raw, &qcow2] {
        let (env, out) = scan_with(disk, PASSING, &[]);
        let report = env.report();
        assert_eq!(out.status.code(), Some(0), "{}: {report}", disk.display());
        assert_eq!(report["policy"]["passed"], true, "{report}");
        assert!(rules(&report).is_empty());

        let (env, out) = scan_with(disk, FAILING, &[]);
        let report = env.report();
        assert_eq!(out.status.code(), Some(5), "{}: {report}", disk.display());
        assert_eq!(report["status"], "success", "the scan itself worked");
        assert_eq!(report["policy"]["passed"], false);
        let mut broken = rules(&report);
        broken.dedup();
        assert_eq!(
            broken,
            ["os", "deny", "require", "max_packages", "forbidden_files"],
            "{}",
            report["policy"]
        );
        let text = report["policy"].to_string();
        for want in [
            "/etc/hostname",
            "/etc/host.conf",
            "no shells in this image",
            "openssh-server",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("FAILED"), "{summary}");
        assert!(
            report["outputs"].as_array().is_some_and(|o| !o.is_empty()),
            "the SBOM is written whatever the verdict"
        );
        println!(
            "{}: passes and fails as written:\n{summary}",
            disk.display()
        );
    }
}

#[test]
fn bad_policies_are_usage_errors_before_the_disk_is_opened() {
    let missing = Path::new("/nonexistent/disk.img");
    for (policy, args, says) in [
        ("[[deny]]\npurl = \"openssl\"\n", &[][..], "purl"),
        ("max_pakages = 3\n", &[][..], "max_pakages"),
        ("[os]\nversion = \"12\"\n", &[][..], "vers:"),
        (
            "",
            &["--scanner", "command"][..],
            "needs --scanner inventory",
        ),
    ] {
        let (_env, out) = scan_with(missing, policy, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{policy:?}: {stderr}");
        assert!(stderr.contains(says), "{policy:?}: {stderr}");
        assert!(
            !stderr.contains("does not exist"),
            "the disk was looked at: {stderr}"
        );
    }
}
