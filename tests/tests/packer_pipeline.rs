//! The image pipeline example (`packer/examples/image-pipeline.pkr.hcl`) built by the real Packer
//! under QEMU (TCG) from a debootstrap Debian base: the build provisions the image, Packer's qemu
//! builder writes a qcow2, and the shell-local post-processor scans it with
//! `snapscan scan --policy`. With the example policy the build passes and the SBOM and report
//! are beside the artifact; with a policy the image breaks, the build fails (Packer deletes the
//! artifact) and the report says why.
//!
//! The googlecompute variant (`image-pipeline-gce.pkr.hcl`) needs Google Cloud to build; here
//! Packer validates it, and its post-processor's `snapscan launch` line, with the template's
//! values put in, runs as a dry run: the scanner VM it would create has the new image as a
//! read-only disk and the policy in its assignment. (The launch itself, against the fake
//! Compute API, is in the `agent` tests.)

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};
use snapscan_tests::compute::metadata_item;
use snapscan_tests::images::is_root;
use snapscan_tests::packer;
use snapscan_tests::vm::Guest;

const TEMPLATE: &str = "packer/examples/image-pipeline.pkr.hcl";
const GCE_TEMPLATE: &str = "packer/examples/image-pipeline-gce.pkr.hcl";

/// The example policy, and what the base image breaks: it has sudo.
const BREAKING: &str = r#"
[[deny]]
purl = "pkg:deb/debian/sudo"
reason = "no sudo in production images"
"#;

fn json_at(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).expect("JSON")
}

#[test]
fn the_pipeline_scans_what_packer_builds_and_fails_the_build_on_policy() {
    if !is_root() || !packer::available() {
        snapscan_tests::skip("needs root (debootstrap) and packer");
        return;
    }
    let t0 = Instant::now();
    let work = tempfile::tempdir().expect("tempdir");
    let (key, public) = packer::ssh_key(work.path());
    let base = Guest::build_packer_base("pipeline-token", &public).expect("base image");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = repo.join("packer/examples/policy.toml");
    let breaking = work.path().join("breaking.toml");
    let text = std::fs::read_to_string(&example).expect("example policy");
    std::fs::write(&breaking, format!("{text}\n{BREAKING}")).expect("policy");
    for (policy, passes) in [(&example, true), (&breaking, false)] {
        let started = Instant::now();
        let out = work.path().join(if passes { "pass" } else { "fail" });
        let scan = out.with_extension("scan");
        let vars = json!({
            "base_image": base.image(),
            "accelerator": "tcg",
            "ssh_private_key_file": key,
            "qemuargs": base.boot_args(),
            "output_directory": out,
            "scan_directory": scan,
            "snapscan": snapscan_tests::snapscan_bin(),
            "policy": policy,
        });
        let build = packer::build(TEMPLATE, &[], &vars, work.path());
        assert_eq!(
            build.output.status.success(),
            passes,
            "policy {}:\n{}",
            policy.display(),
            build.describe()
        );
        if passes {
            let head = std::fs::read(out.join("golden.qcow2")).expect("the artifact");
            assert!(head.starts_with(b"QFI\xfb"), "the artifact is a qcow2");
        }
        let report = json_at(&scan.join("report.json"));
        assert_eq!(report["disk"]["image_format"], "qcow2");
        assert_eq!(report["os"]["id"], "debian");
        assert_eq!(report["policy"]["passed"], passes, "{}", report["policy"]);
        let sbom = json_at(&scan.join("golden.cdx.json"));
        let components = sbom["components"].as_array().map_or(0, Vec::len);
        assert!(components > 50, "{components} components");
        let printed = String::from_utf8_lossy(&build.output.stdout);
        if passes {
            // The provisioner's hygiene is what the policy checks: no host keys left.
            assert!(printed.contains("passed"), "{printed}");
        } else {
            assert!(
                printed.contains("no sudo in production images"),
                "{printed}"
            );
            assert!(report["policy"]["violations"].to_string().contains("sudo"));
        }
        println!(
            "packer build with {} ({}): {:.1} s, {components} packages",
            policy.display(),
            if passes {
                "passes"
            } else {
                "fails, as it must"
            },
            started.elapsed().as_secs_f64()
        );
    }
    println!("pipeline test: {:.1} s in all", t0.elapsed().as_secs_f64());
}

#[test]
fn the_googlecompute_variant_validates_and_launches_a_scanner_vm_on_the_image() {
    if !packer::available() {
        snapscan_tests::skip("needs packer");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("packer")
        .current_dir(&repo)
        .args([
            "validate",
            "-var",
            "project_id=img-project",
            "-var",
            "zone=europe-west1-b",
        ])
        .arg(GCE_TEMPLATE)
        .output()
        .expect("packer validate");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The post-processor's launch line, with the values Packer would put in.
    let template = std::fs::read_to_string(repo.join(GCE_TEMPLATE)).expect("template");
    let line = template
        .lines()
        .find(|l| l.contains("} launch "))
        .expect("a launch line");
    let mut command = line.trim().trim_matches(['"', ',']).to_owned();
    for (from, to) in [
        (
            "${var.snapscan}",
            snapscan_tests::snapscan_bin().display().to_string(),
        ),
        ("${var.project_id}", "img-project".into()),
        ("${var.zone}", "europe-west1-b".into()),
        ("${var.scanner_image_family}", "snapscan-scanner".into()),
        ("${local.scanner_project}", "img-project".into()),
        ("${local.image_name}", "golden-20261208000000".into()),
        ("${var.policy}", "packer/examples/policy.toml".into()),
    ] {
        command = command.replace(from, &to);
    }
    assert!(!command.contains("${"), "a value not put in: {command}");
    let command = command
        .strip_suffix(" || code=$?")
        .expect("the line keeps the exit code");
    let out = std::process::Command::new("sh")
        .current_dir(&repo)
        .arg("-c")
        .arg(format!("{command} --dry-run"))
        .env("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent")
        .output()
        .expect("launch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{command}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body_start = stdout.find('{').expect("a request body");
    let body: Value = serde_json::Deserializer::from_str(&stdout[body_start..])
        .into_iter::<Value>()
        .next()
        .expect("a body")
        .expect("JSON");
    let disk = &body["disks"][1];
    assert_eq!(disk["mode"], "READ_ONLY", "{body}");
    assert_eq!(
        disk["initializeParams"]["sourceImage"],
        "projects/img-project/global/images/golden-20261208000000",
        "{body}"
    );
    assert_eq!(
        body["disks"][0]["initializeParams"]["sourceImage"],
        "projects/img-project/global/images/family/snapscan-scanner"
    );
    let assignments = metadata_item(&body, "snapscan-assignments").expect("assignments");
    let assignments: Value = serde_json::from_str(assignments).expect("JSON");
    let policy = std::fs::read_to_string(repo.join("packer/examples/policy.toml")).expect("policy");
    assert_eq!(assignments[0]["policy"], json!(policy));
    assert_eq!(assignments[0]["id"], "golden-20261208000000");
}
