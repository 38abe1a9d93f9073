//! The Compute Engine client (`snapscan::compute`) against the fake Compute API
//! (`snapscan_tests::compute`) and the fake metadata server that issues its tokens: disks made
//! from snapshots really attach read-only (a loop device behind `google-<name>`, the disk in
//! `instance/disks/`) and go away again; operations are waited for; transient failures are
//! retried, an expired or revoked token is replaced, refusals come back as the kind they are.
//!
//! Not here: the agent's use of it (its job lifecycle).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use snapscan::compute::{Client, ComputeConfig, ComputeError, DiskSource, NewDisk};
use snapscan::metadata::{self, MetadataConfig};
use snapscan::retry::RetryConfig;
use snapscan_tests::compute::FakeCompute;
use snapscan_tests::gce::{DiskBus, GceDisks};
use snapscan_tests::gce_metadata::{FakeMetadata, Mode};
use snapscan_tests::images::is_root;

const PROJECT: &str = "scan-project";
const ZONE: &str = "europe-west1-b";
const SELF: &str = "snapscan-scanner-1";
const SNAPSHOT: &str = "projects/prod/global/snapshots/web-1-boot";

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/debian-mini.img")
}

struct World {
    md: FakeMetadata,
    gce: Arc<Mutex<GceDisks>>,
    api: FakeCompute,
}

impl World {
    fn new() -> World {
        let md = FakeMetadata::start();
        let gce = Arc::new(Mutex::new(GceDisks::new().expect("gce disks")));
        let api = FakeCompute::start(
            PROJECT,
            ZONE,
            md.handle(),
            Arc::clone(&gce) as Arc<Mutex<dyn DiskBus>>,
        );
        api.add_instance(SELF, "9459013426734123456");
        api.add_snapshot(SNAPSHOT, sample());
        api.set_operation_delay(Duration::from_millis(300));
        World { md, gce, api }
    }

    fn client(&self) -> Client {
        let md = metadata::Client::new(&MetadataConfig {
            url: Some(self.md.url()),
            ..MetadataConfig::default()
        })
        .expect("metadata client");
        let cfg = ComputeConfig {
            url: self.api.url(),
            retry: RetryConfig {
                max_attempts: 4,
                initial_backoff_ms: 10,
                max_backoff_ms: 50,
                max_retry_after_secs: 1,
            },
            ..ComputeConfig::default()
        };
        Client::new(&cfg, md, PROJECT, ZONE).expect("compute client")
    }
}

fn new_disk(name: &str, source: DiskSource) -> NewDisk {
    NewDisk {
        name: name.to_owned(),
        source,
        labels: BTreeMap::from([
            ("snapscan-instance".to_owned(), SELF.to_owned()),
            ("snapscan-job".to_owned(), name.to_owned()),
        ]),
        disk_type: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_disk_from_a_snapshot_attaches_read_only_and_goes_away() {
    if !is_root() {
        snapscan_tests::skip("needs root (loop devices)");
        return;
    }
    let w = World::new();
    let c = w.client();
    let by_id = w.gce.lock().expect("gce").by_id_dir();
    runtime().block_on(async {
        let op = c
            .insert_disk(&new_disk("snap-a", DiskSource::Snapshot(SNAPSHOT.into())))
            .await
            .expect("insert");
        assert_ne!(op.status, "DONE", "the fake's operations take a while");
        c.wait(op).await.expect("created");
        let disk = c.get_disk("snap-a").await.expect("get").expect("exists");
        assert_eq!(disk.source_snapshot.as_deref(), Some(SNAPSHOT));
        assert_eq!(disk.labels["snapscan-instance"], SELF);
        let mine = c
            .list_disks(&format!("labels.snapscan-instance={SELF}"))
            .await
            .expect("list");
        assert_eq!(mine.len(), 1);

        c.wait(
            c.attach_disk(SELF, "snap-a", "snap-a")
                .await
                .expect("attach"),
        )
        .await
        .expect("attached");
        // The guest's view: a read-only block device by its device name, and the disk in
        // instance/disks/ as READ_ONLY.
        let link = by_id.join("google-snap-a");
        let dev = std::fs::canonicalize(&link).expect("google-snap-a link");
        let ro = snapscan_tests::images::cmd::run(
            snapscan_tests::images::cmd::tool("blockdev")
                .arg("--getro")
                .arg(&dev),
            None,
        )
        .expect("blockdev");
        assert_eq!(ro.trim(), "1", "{} is writable", dev.display());
        let listed = w.md.disks();
        let entry = listed
            .iter()
            .find(|d| d.device_name == "snap-a")
            .expect("in instance/disks/");
        assert_eq!(entry.mode, Mode::ReadOnly);
        assert_eq!(entry.index, 1);
        let me = c.get_instance(SELF).await.expect("self");
        assert!(me
            .disks
            .iter()
            .any(|d| d.device_name == "snap-a" && d.mode == "READ_ONLY" && !d.boot));

        // Attached disks cannot be deleted: the API says so, and nothing changes.
        let refused = c.delete_disk("snap-a").await.expect_err("in use");
        assert!(
            refused.to_string().contains("already being used"),
            "{refused}"
        );

        c.wait(c.detach_disk(SELF, "snap-a").await.expect("detach"))
            .await
            .expect("detached");
        assert!(!link.exists(), "the link outlived the detach");
        assert!(w.md.disks().iter().all(|d| d.device_name != "snap-a"));
        c.wait(c.delete_disk("snap-a").await.expect("delete"))
            .await
            .expect("deleted");
        assert!(c.get_disk("snap-a").await.expect("get").is_none());
    });
    assert_eq!(w.api.deleted_disks(), ["snap-a"]);
}

#[test]
fn transient_failures_are_retried_and_a_refused_token_replaced() {
    let w = World::new();
    let c = w.client();
    runtime().block_on(async {
        w.api.fail_next("/disks", 503, "backendError");
        w.api.fail_next("/disks", 429, "rateLimitExceeded");
        w.api.fail_next("/disks", 403, "rateLimitExceeded");
        let op = c
            .insert_disk(&new_disk("snap-b", DiskSource::Snapshot(SNAPSHOT.into())))
            .await
            .expect("retried through 503, 429 and a rate-limit 403");
        c.wait(op).await.expect("created");
        let statuses: Vec<u16> = w
            .api
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path_and_query.contains("/disks?"))
            .map(|r| r.status)
            .collect();
        assert_eq!(statuses, [503, 429, 403, 200]);
        // Every try of one insert carries the same requestId.
        let ids: std::collections::BTreeSet<String> = w
            .api
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path_and_query.contains("/disks?"))
            .filter_map(|r| {
                r.path_and_query
                    .split("requestId=")
                    .nth(1)
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(ids.len(), 1, "{ids:?}");

        let issued = w.md.tokens_issued();
        assert_eq!(issued, 1, "one token for every request so far");
        w.md.revoke_tokens();
        c.get_disk("snap-b")
            .await
            .expect("a new token after the 401");
        assert_eq!(w.md.tokens_issued(), 2);

        // A token that expires within a minute is replaced before it is used.
        w.md.set_token_lifetime(Duration::from_secs(61));
        w.md.revoke_tokens();
        c.get_disk("snap-b").await.expect("get");
        let before = w.md.tokens_issued();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        c.get_disk("snap-b").await.expect("get");
        assert_eq!(
            w.md.tokens_issued(),
            before + 1,
            "not refreshed before expiry"
        );
    });
}

#[test]
fn refusals_say_what_kind_they_are() {
    let w = World::new();
    let c = w.client();
    runtime().block_on(async {
        let missing = c
            .insert_disk(&new_disk(
                "snap-x",
                DiskSource::Snapshot("projects/prod/global/snapshots/nope".into()),
            ))
            .await
            .expect_err("no such snapshot");
        assert!(
            matches!(missing, ComputeError::NotFound { .. }),
            "{missing}"
        );

        w.api.fail_next("/attachDisk", 403, "forbidden");
        let denied = c
            .attach_disk(SELF, "snap-x", "snap-x")
            .await
            .expect_err("denied");
        assert!(
            matches!(denied, ComputeError::Permission { .. }),
            "{denied}"
        );
        assert!(!denied.is_retryable());

        // A quota is found by the operation, not the request: its error is surfaced.
        w.api.set_disk_quota(0);
        let op = c
            .insert_disk(&new_disk("snap-q", DiskSource::Snapshot(SNAPSHOT.into())))
            .await
            .expect("accepted");
        let quota = c.wait(op).await.expect_err("over quota");
        assert!(matches!(quota, ComputeError::Quota { .. }), "{quota}");
        assert!(quota.to_string().contains("DISKS_TOTAL_GB"), "{quota}");

        w.api.fail_next("/disks", 500, "backendError");
        w.api.fail_next("/disks", 500, "backendError");
        w.api.fail_next("/disks", 500, "backendError");
        w.api.fail_next("/disks", 500, "backendError");
        let down = c.get_disk("snap-q").await.expect_err("retries used up");
        assert!(down.is_retryable(), "{down}");
        assert!(down.to_string().contains("after 4 attempts"), "{down}");
    });
}

#[test]
fn disks_are_listed_by_label_over_every_page() {
    let w = World::new();
    w.api.set_page_size(2);
    for i in 0..5 {
        w.api.add_disk(
            &format!("mine-{i}"),
            SNAPSHOT,
            &[("snapscan-instance", SELF)],
        );
    }
    w.api.add_disk(
        "other",
        SNAPSHOT,
        &[("snapscan-instance", "another-scanner")],
    );
    let c = w.client();
    let mine = runtime()
        .block_on(c.list_disks(&format!("labels.snapscan-instance={SELF}")))
        .expect("list");
    let names: Vec<String> = mine.into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["mine-0", "mine-1", "mine-2", "mine-3", "mine-4"]);
}
