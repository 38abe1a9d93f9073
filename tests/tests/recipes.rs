//! The README's GCP recipes are safe to copy: a scanner VM (or template) gets no Google
//! credentials or only a dedicated `snapscan-*` account the README creates (never the project's
//! default one), the assignment snippet appends to the list a running agent works from (run here
//! with `jq` against a stand-in `gcloud` that serves and records instance metadata), and every
//! disk a recipe creates, it also deletes.
//!
//! Not here: the agent's handling of assignments (`tests/tests/agent.rs`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
        .expect("README")
}

/// The README's `sh` code blocks, continuation lines joined.
fn shell_blocks(text: &str) -> Vec<String> {
    text.split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .map(|block| block.replace("\\\n", " "))
        .collect()
}

#[test]
fn scanner_vms_get_no_credentials_or_a_dedicated_account() {
    let blocks = shell_blocks(&readme());
    let mut creates: Vec<&str> = Vec::new();
    for block in &blocks {
        creates.extend(block.lines().filter(|l| {
            l.contains("gcloud compute instances create")
                || l.contains("gcloud compute instance-templates create")
        }));
    }
    // Inline mentions (`...`) in the text count too: a recipe in a list item.
    let text = readme();
    let inline: Vec<&str> = text
        .split('`')
        .filter(|s| s.contains("gcloud compute instance-templates create"))
        .collect();
    creates.extend(inline);
    assert!(!creates.is_empty(), "the README creates no scanner VM");
    let readme = readme();
    for create in creates {
        if create.contains("--no-service-account") && create.contains("--no-scopes") {
            assert!(!create.contains("cloud-platform"), "{create}");
            continue;
        }
        // With credentials (a fleet's instances pull work and make their disks): only a
        // dedicated account the README creates, never the project's default one.
        let account = create
            .split("--service-account=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("a scanner VM with the default account: {create}"));
        let name = account.trim_start_matches('$');
        let created = readme.lines().any(|l| {
            l.contains(&format!("{name}=snapscan-"))
                && readme.contains("gcloud iam service-accounts create snapscan-")
        });
        assert!(
            created,
            "scanner VM account {account} is not a snapscan account the README creates: {create}"
        );
    }
}

#[test]
fn every_disk_a_recipe_creates_it_deletes() {
    for block in shell_blocks(&readme()) {
        for line in block.lines() {
            let Some(rest) = line.split("gcloud compute disks create ").nth(1) else {
                continue;
            };
            let name = rest.split_whitespace().next().expect("disk name");
            assert!(
                block.contains(&format!("gcloud compute disks delete {name} ")),
                "disk {name} is created but never deleted in:\n{block}"
            );
        }
    }
}

/// Run the README's append-assignment snippet against a stand-in `gcloud` whose instance has
/// `current` as its `snapscan-assignments` (none if `None`); the list it writes back.
fn append(current: Option<&Value>) -> Value {
    if Command::new("jq").arg("--version").output().is_err() {
        snapscan_tests::skip("no jq (the test command installs it)");
        return Value::Null;
    }
    let text = readme();
    let snippet = text
        .split("# BEGIN append-assignment\n")
        .nth(1)
        .and_then(|rest| rest.split("# END append-assignment").next())
        .expect("README marks the append-assignment snippet");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut items = vec![json!({"key": "enable-guest-attributes", "value": "TRUE"})];
    if let Some(list) = current {
        items.push(json!({"key": "snapscan-assignments", "value": list.to_string()}));
    }
    let instance = json!({"name": "scanner-1", "metadata": {"fingerprint": "f1", "items": items}});
    std::fs::write(dir.path().join("instance.json"), instance.to_string()).expect("instance");
    let gcloud = dir.path().join("gcloud");
    std::fs::write(
        &gcloud,
        r#"#!/bin/sh
# a stand-in gcloud: `instances describe` prints the instance, `add-metadata` records the list
here=$(dirname "$0")
case "$*" in
  *"instances describe"*) cat "$here/instance.json" ;;
  *"add-metadata"*)
    for a in "$@"; do
      case "$a" in --metadata-from-file=snapscan-assignments=*) cp "${a#*=snapscan-assignments=}" "$here/written.json" ;; esac
    done ;;
  *) echo "unexpected gcloud $*" >&2; exit 1 ;;
esac
"#,
    )
    .expect("gcloud");
    std::fs::set_permissions(&gcloud, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("sh")
        .args(["-euc", snippet])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("ZONE", "europe-west1-b")
        .output()
        .expect("run the snippet");
    assert!(
        out.status.success(),
        "the snippet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(dir.path().join("written.json"))
        .expect("the snippet wrote the assignments back");
    serde_json::from_str(&written).expect("the written list is JSON")
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .expect("a JSON list")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect()
}

#[test]
fn the_assignment_snippet_appends_to_the_running_list() {
    let running = json!([{"id": "scan-0001", "device_name": "d1", "snapshot": "s1"}]);
    let written = append(Some(&running));
    if written.is_null() {
        return;
    }
    assert_eq!(ids(&written), ["scan-0001", "scan-0002"], "{written}");
    assert_eq!(written[0], running[0], "the running entry was changed");
    // On a scanner with no list yet, and run twice: one entry, not a duplicate id.
    assert_eq!(ids(&append(None)), ["scan-0002"]);
    assert_eq!(ids(&append(Some(&written))), ["scan-0001", "scan-0002"]);
}
