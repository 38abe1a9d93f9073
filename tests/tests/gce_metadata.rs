//! The fake metadata server (`snapscan_tests::gce_metadata`) as real clients see it: curl for
//! the protocol rules of `GCE.md` (headers, listings, recursive JSON, ETags, hanging watches,
//! scripted failures, guest attributes), and Google's own Node.js client, the npm package
//! `gcp-metadata`, pointed at it through `GCE_METADATA_HOST`: if Google's client reads what the
//! fake was given, the fake speaks the protocol the agent will meet on GCE.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapscan_tests::gce_metadata::{Disk, FakeMetadata};

/// The `gcp-metadata` version installed for the check (7.x supports Node.js 18, Debian 12's).
const GCP_METADATA: &str = "gcp-metadata@7.0.1";

/// `(status, headers, body)` of `curl` with `args` on the fake's `path`.
fn curl(md: &FakeMetadata, path: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20"])
        .args(args)
        .arg(format!("{}/computeMetadata/v1/{path}", md.url()))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

const FLAVOR: &[&str] = &["-H", "Metadata-Flavor: Google"];

fn etag(headers: &str) -> String {
    headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn fake() -> FakeMetadata {
    let md = FakeMetadata::start();
    md.set_disks(vec![
        Disk::boot("persistent-disk-0"),
        Disk::read_only("disk-a", 1),
    ]);
    md.set_attribute("snapscan-assignments", r#"[{"id":"j1"}]"#);
    md
}

#[test]
fn protocol_rules_as_curl_sees_them() {
    let md = fake();
    // The header is required; forwarded requests are refused.
    assert_eq!(curl(&md, "instance/id", &[]).0, 403);
    let forwarded = [
        "-H",
        "Metadata-Flavor: Google",
        "-H",
        "X-Forwarded-For: 1.2.3.4",
    ];
    assert_eq!(curl(&md, "instance/id", &forwarded).0, 403);
    let (status, headers, body) = curl(&md, "instance/id", FLAVOR);
    assert_eq!((status, body.as_str()), (200, "9459013426734123456"));
    assert!(headers.contains("metadata-flavor: google"), "{headers}");
    assert!(!etag(&headers).is_empty() && etag(&headers) != "0");
    // Listings, recursive JSON (camelCase, user keys kept), kebab-case paths, 404.
    assert_eq!(curl(&md, "instance/disks/", FLAVOR).2, "0/\n1/\n");
    let (_, _, disks) = curl(&md, "instance/disks/?recursive=true", FLAVOR);
    let disks: Value = serde_json::from_str(&disks).expect("JSON");
    assert_eq!(disks[1]["deviceName"], "disk-a");
    assert_eq!(disks[1]["mode"], "READ_ONLY");
    assert_eq!(
        curl(&md, "instance/disks/1/device-name", FLAVOR).2,
        "disk-a"
    );
    let (_, _, attrs) = curl(&md, "instance/attributes/?recursive=true", FLAVOR);
    assert!(attrs.contains("\"snapscan-assignments\""), "{attrs}");
    assert_eq!(curl(&md, "instance/attributes/absent", FLAVOR).0, 404);
    let (status, headers, _) = curl(&md, "instance/disks", FLAVOR);
    assert_eq!(status, 301, "a directory without its slash");
    assert!(
        headers.contains("location: /computemetadata/v1/instance/disks/"),
        "{headers}"
    );
    assert_eq!(
        curl(&md, "instance/zone", FLAVOR).2,
        "projects/123456789012/zones/europe-west1-b"
    );
    // wait_for_change on a bare listing is a 400.
    assert_eq!(
        curl(&md, "instance/attributes/?wait_for_change=true", FLAVOR).0,
        400
    );
    // Scripted 503 burst, then normal service.
    md.fail_next(2, 503);
    assert_eq!(curl(&md, "instance/name", FLAVOR).0, 503);
    assert_eq!(curl(&md, "instance/name", FLAVOR).0, 503);
    assert_eq!(curl(&md, "instance/name", FLAVOR).0, 200);
}

#[test]
fn watches_hang_until_a_change_or_the_timeout() {
    let md = fake();
    let dir = "instance/attributes/?recursive=true";
    let (_, headers, first) = curl(&md, dir, FLAVOR);
    let tag = etag(&headers);
    // The same ETag: the server hangs for timeout_sec, then answers the same value and ETag.
    let started = Instant::now();
    let (status, headers, body) = curl(
        &md,
        &format!("{dir}&wait_for_change=true&last_etag={tag}&timeout_sec=1"),
        FLAVOR,
    );
    let waited = started.elapsed();
    assert_eq!((status, body.as_str()), (200, first.as_str()));
    assert_eq!(etag(&headers), tag);
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    // last_etag=0 answers at once.
    let started = Instant::now();
    assert_eq!(
        curl(
            &md,
            &format!("{dir}&wait_for_change=true&last_etag=0"),
            FLAVOR
        )
        .0,
        200
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // A change wakes a hanging watch early, with the new value and a new ETag.
    let md = std::sync::Arc::new(md);
    let setter = std::sync::Arc::clone(&md);
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        setter.set_attribute("snapscan-assignments", "[]");
    });
    let started = Instant::now();
    let (_, headers, body) = curl(
        &md,
        &format!("{dir}&wait_for_change=true&last_etag={tag}&timeout_sec=15"),
        FLAVOR,
    );
    t.join().expect("setter");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_ne!(etag(&headers), tag);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON"),
        json!({"snapscan-assignments": "[]"})
    );
}

#[test]
fn guest_attributes_count_writes_and_can_be_disabled() {
    let md = fake();
    let put = |v: &str| {
        curl(
            &md,
            "instance/guest-attributes/snapscan/job-1",
            &[
                "-H",
                "Metadata-Flavor: Google",
                "-X",
                "PUT",
                "--data-binary",
                v,
            ],
        )
        .0
    };
    assert_eq!(put("{\"state\":\"assigned\"}"), 200);
    assert_eq!(put("{\"state\":\"done\"}"), 200);
    assert_eq!(
        md.guest_attribute("snapscan", "job-1").as_deref(),
        Some("{\"state\":\"done\"}")
    );
    assert_eq!(
        curl(&md, "instance/guest-attributes/snapscan/job-1", FLAVOR).2,
        "{\"state\":\"done\"}"
    );
    assert_eq!(
        curl(&md, "instance/guest-attributes/snap$can/x", FLAVOR).0,
        400
    );
    assert_eq!(md.guest_writes().len(), 2);
    assert_eq!(md.max_writes_in_any_window(Duration::from_secs(60)), 2);
    md.set_guest_attributes_enabled(false);
    assert_eq!(put("{}"), 403);
}

/// `gcp-metadata` installed under the fixture cache (once).
fn gcp_metadata_dir() -> PathBuf {
    let dir = snapscan_tests::cache_dir().join("npm");
    if !dir.join("node_modules/gcp-metadata/package.json").exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&dir)
            .arg(GCP_METADATA)
            .status()
            .expect("run npm");
        assert!(status.success(), "npm install {GCP_METADATA} failed");
    }
    dir
}

#[test]
fn googles_node_client_reads_the_fake() {
    let md = fake();
    let modules = gcp_metadata_dir().join("node_modules");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/gcp-metadata-check.js");
    let out = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .env("GCE_METADATA_HOST", md.host())
        .env_remove("METADATA_SERVER_DETECTION")
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON from the client");
    assert_eq!(got["available"], true);
    assert_eq!(got["id"], "9459013426734123456");
    assert_eq!(got["name"], "snapscan-scanner-1");
    assert_eq!(got["zone"], "projects/123456789012/zones/europe-west1-b");
    assert_eq!(got["project"], "scan-project");
    assert_eq!(
        got["assignments"],
        json!([{"id": "j1"}]),
        "JSON values are parsed"
    );
    assert_eq!(got["disks"][1]["deviceName"], "disk-a");
    assert_eq!(got["bulk"], json!(["snapscan-scanner-1", "scan-project"]));
    assert_eq!(got["watched"]["snapscan-assignments"], r#"[{"id":"j1"}]"#);
    assert_eq!(got["absent"], "404");
    // Every request the client made carried the header.
    let requests = md.requests();
    assert!(requests.len() >= 8, "{requests:?}");
    assert!(requests.iter().all(|r| r.flavor), "{requests:?}");
}
