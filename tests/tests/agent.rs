//! `snapscan agent` end to end, as root: the real binary against the fake metadata server
//! (`snapscan_tests::gce_metadata`), the fake QFlow receiver, and fixture images attached as
//! GCE-style disks (`snapscan_tests::gce`: real read-only loop devices behind `google-<name>`
//! links, with the device name as SCSI serial). systemd's notify socket is a real datagram
//! socket of the test. Jobs are followed in their journals (`<state>/jobs/<id>/job.json`) and in
//! the guest attributes the agent writes. The harness is `snapscan_tests::agent`; the work-queue
//! suite is `tests/tests/queue.rs`.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use snapscan_tests::agent::{
    assert_nothing_left, by_snapshot, finish, launcher, readme_role, receiver, snapshot,
    stored_by_job, Harness, BOOT_DISK, TOKEN,
};
use snapscan_tests::compute::metadata_item;
use snapscan_tests::gce_metadata::{FakeMetadata, Identity};
use snapscan_tests::images;
use snapscan_tests::needs_root;
use snapscan_tests::oauth::FakeOauth;
use snapscan_tests::opens::Opens;
use snapscan_tests::qflow::{FakeQflow, Fault, Options};

fn assignment(id: &str, device: &str) -> Value {
    json!({"id": id, "device_name": device, "snapshot": format!("snap-{id}"),
           "source_instance": "vm-1", "source_project": "prod-project",
           "labels": {"team": "sec"}})
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn assigned_disks_are_scanned_uploaded_and_reported() {
    needs_root!();
    let (q, port) = receiver();
    let mut h = Harness::new(port, "");
    let dev_a = h.attach("disk-a", "debian-ext4-gpt", "READ_ONLY");
    h.attach("disk-b", "debian-xfs-mbr", "READ_ONLY");
    h.attach("decoy-rw", "debian-ext4-gpt", "READ_WRITE");
    // disk-a's udev link is stale (it points at disk-b): the serial check must catch it.
    h.gce().make_stale("disk-a", "disk-b").expect("stale link");
    let image_a = images::image("debian-ext4-gpt").expect("fixture");
    let before = snapscan_tests::expect::sha256_file(&image_a);
    h.start();
    h.wait("READY=1", 30, |h| {
        h.notes().iter().any(|n| n.contains("READY=1"))
    });
    h.assign(&json!([
        assignment("job-a", "disk-a"),
        assignment("job-b", "disk-b"),
        assignment("job-rw", "decoy-rw"),
        {"id": "job-bad", "device_name": "disk-x"},
        "not an object",
    ]));
    h.wait_job("job-a", "done", 120);
    h.wait_job("job-b", "done", 120);
    h.wait_job("job-rw", "failed", 30);

    // Uploaded once each, with the assignment's identity in the fields.
    let stored = q.stored();
    assert_eq!(stored_by_job(&q).get("job-a"), Some(&1), "{stored:#?}");
    assert_eq!(stored_by_job(&q).get("job-b"), Some(&1));
    let a = stored
        .iter()
        .find(|s| s.fields.get("job_id").map(String::as_str) == Some("job-a"))
        .expect("job-a upload");
    assert_eq!(
        a.fields.get("snapshot_name").map(String::as_str),
        Some("snap-job-a")
    );
    assert_eq!(
        a.fields.get("device_name").map(String::as_str),
        Some("disk-a")
    );
    assert_eq!(a.fields.get("label_team").map(String::as_str), Some("sec"));
    assert_eq!(
        a.fields.get("source_project").map(String::as_str),
        Some("prod-project")
    );
    assert_eq!(a.fields.get("os_id").map(String::as_str), Some("debian"));
    let sbom: Value =
        serde_json::from_slice(&std::fs::read(&a.path).expect("stored file")).expect("SBOM JSON");
    assert_eq!(sbom["components"].as_array().map(Vec::len), Some(88));
    let ja = h.journal("job-a").expect("journal");
    assert_eq!(ja["packages"], 88);
    // Found by the serial scan (its node in the disks' /dev), past the stale link.
    let device = ja["device"].as_str().map(std::fs::canonicalize);
    assert_eq!(device.and_then(Result::ok), Some(dev_a), "{ja}");
    // The QFlow sink acknowledged the SBOM: deleted locally; report.json stays.
    let results = h.state().join("jobs/job-a/results");
    assert!(results.join("report.json").exists());
    assert!(!results.join("snap-job-a.cdx.json").exists());
    let states: Vec<&str> = ja["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["assigned", "resolved", "opened", "detected", "scanned", "uploaded", "done"]
    );

    // The READ_WRITE decoy was refused without being opened; the bad entries are reported.
    let jrw = h.journal("job-rw").expect("journal");
    assert!(
        jrw["error"]
            .as_str()
            .is_some_and(|e| e.contains("READ_WRITE")),
        "{jrw}"
    );
    assert!(jrw["device"].is_null(), "the decoy was never resolved");

    // Guest attributes reach the final states, within the documented write rate.
    h.wait("guest attributes", 120, |h| {
        h.guest("job-a")["state"] == "done"
            && h.guest("job-b")["state"] == "done"
            && h.guest("job-rw")["state"] == "failed"
            && h.guest("agent")["done"] == 2
    });
    let agent = h.guest("agent");
    assert_eq!(agent["errors"].as_array().map(Vec::len), Some(2), "{agent}");
    assert_eq!(h.guest("job-a")["os"], "Debian GNU/Linux 12 (bookworm)");
    assert_eq!(h.guest("job-a")["result"]["packages"], 88);
    let worst = h.md.max_writes_in_any_window(Duration::from_secs(60));
    assert!(worst <= 10, "{worst} guest-attribute writes in one minute");

    // SIGTERM: clean stop, nothing mounted, systemd told.
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    let notes = h.notes().join("\n");
    assert!(notes.contains("STOPPING=1"), "{notes}");
    assert!(notes.contains("STATUS="), "{notes}");
    assert!(notes.matches("WATCHDOG=1").count() >= 2, "{notes}");
    assert_eq!(snapscan_tests::expect::sha256_file(&image_a), before);
    // The watch hung on the server instead of polling.
    let watches =
        h.md.requests()
            .iter()
            .filter(|r| r.path_and_query.contains("wait_for_change=true"))
            .count();
    assert!(watches >= 2, "no watch requests");
    assert!(h
        .md
        .requests()
        .iter()
        .filter(|r| r.path_and_query.contains("wait_for_change=true"))
        .all(|r| r.path_and_query.contains("last_etag=")));
}

#[test]
fn metadata_server_away_at_start_then_flaky() {
    needs_root!();
    let (q, port) = receiver();
    // The poweroff command of a one-off VM, made harmless.
    let marks = tempfile::tempdir().expect("tempdir");
    let marker = marks.path().join("powered-off");
    let mut h = Harness::new(
        port,
        &format!(
            "[agent]\nidle_action = \"poweroff\"\nidle_grace_secs = 2\npoweroff_command = [\"touch\", \"{}\"]\n",
            marker.display()
        ),
    );
    h.attach("disk-a", "debian-ext4-gpt", "READ_ONLY");
    let port_md = free_port();
    h.start_with(&format!("http://127.0.0.1:{port_md}"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        h.agent
            .as_mut()
            .expect("agent")
            .try_wait()
            .expect("wait")
            .is_none(),
        "the agent exited while the metadata server was away\n{}",
        h.log_text()
    );
    assert!(
        !h.notes().iter().any(|n| n.contains("READY=1")),
        "READY before identity"
    );
    // The server comes up on that port, answers 503 in bursts, and has guest attributes off.
    let md = FakeMetadata::start_on(([127, 0, 0, 1], port_md).into()).expect("metadata up");
    md.set_disks(h.md.disks());
    md.set_guest_attributes_enabled(false);
    md.fail_next(5, 503);
    h.md = md;
    h.wait("READY=1", 30, |h| {
        h.notes().iter().any(|n| n.contains("READY=1"))
    });
    h.md.fail_next(3, 503);
    h.assign(&json!([assignment("job-a", "disk-a")]));
    h.wait_job("job-a", "done", 120);
    assert_eq!(stored_by_job(&q).get("job-a"), Some(&1));
    assert!(h.log_text().contains("guest attributes are disabled"));
    // Idle: the one-off VM powers itself off.
    h.wait("poweroff", 30, |_| marker.exists());
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

/// A stand-in external scanner that signals it started and then waits `secs`.
fn slow_scanner(dir: &Path, secs: u32) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let script = bin.join("slowscan");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nout=$1\ngrep -q '^ID=debian' \"$2/etc/os-release\"\ntouch \"{marker}\"\nsleep {secs} &\nwait\necho result > \"$out/result.txt\"\n",
            marker = dir.join("started").display()
        ),
    )
    .expect("script");
    let mut perm = std::fs::metadata(&script).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).expect("chmod");
    format!(
        "[scan]\nscanner = \"slow\"\nscanner_search_path = [\"{bin}\", \"/usr/bin\", \"/bin\"]\n\
         [scanner.profiles.slow]\ncommand = [\"slowscan\", \"{{output_dir}}\", \"{{mount}}\"]\n\
         outputs = [\"result.txt\"]\nkill_grace_secs = 2\n",
        bin = bin.display()
    )
}

/// How many live processes mention `dir` (the stand-in scanner's directory).
fn processes(dir: &Path) -> usize {
    snapscan_tests::processes_mentioning(&dir.to_string_lossy()).len()
}

#[test]
fn withdrawn_assignment_cancels_its_scan() {
    needs_root!();
    let (_q, port) = receiver();
    let tools = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new(port, &slow_scanner(tools.path(), 600));
    h.attach("disk-a", "debian-ext4-gpt", "READ_ONLY");
    h.start();
    h.assign(&json!([assignment("job-a", "disk-a")]));
    h.wait("the scanner to start", 60, |_| {
        tools.path().join("started").exists()
    });
    assert!(!h.mounts().is_empty(), "mounted while scanning");
    h.assign(&json!([]));
    h.wait_job("job-a", "cancelled", 30);
    h.wait("the scanner to end", 10, |_| processes(tools.path()) == 0);
    h.wait("unmounting", 10, |h| h.mounts().is_empty());
    // Assigned again under the same id: a cancelled job starts over.
    std::fs::remove_file(tools.path().join("started")).expect("rm");
    h.assign(&json!([assignment("job-a", "disk-a")]));
    h.wait("the scanner to start again", 60, |_| {
        tools.path().join("started").exists()
    });
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
    assert_eq!(processes(tools.path()), 0);
    // Stopped, not finished: resumed at the next start.
    assert_eq!(h.job_state("job-a"), "detected");
}

#[test]
fn receiver_down_for_a_minute() {
    needs_root!();
    let port = free_port();
    let mut h = Harness::new(port, "");
    h.attach("disk-a", "debian-ext4-gpt", "READ_ONLY");
    h.start();
    h.assign(&json!([assignment("job-a", "disk-a")]));
    h.wait_job("job-a", "scanned", 60);
    let down_since = Instant::now();
    h.wait("a failed upload", 30, |h| {
        h.journal("job-a")
            .is_some_and(|j| j["failed_uploads"].as_u64() >= Some(1))
    });
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down_since.elapsed()));
    assert_eq!(
        h.job_state("job-a"),
        "scanned",
        "not done while the receiver is down"
    );
    let q = FakeQflow::try_start(
        TOKEN,
        Options {
            port,
            ..Options::default()
        },
    )
    .expect("receiver up");
    h.wait_job("job-a", "done", 60);
    assert_eq!(stored_by_job(&q).get("job-a"), Some(&1));
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

#[test]
fn killed_mid_scan_and_mid_upload_every_job_completes_once() {
    needs_root!();
    let (q, port) = receiver();
    let tools = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new(port, &slow_scanner(tools.path(), 3));
    h.attach("disk-a", "debian-ext4-gpt", "READ_ONLY");
    h.start();
    h.assign(&json!([assignment("job-a", "disk-a")]));
    // Killed mid-scan: the scan is redone from the start after the restart.
    h.wait("the scanner to start", 60, |_| {
        tools.path().join("started").exists()
    });
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGKILL), None);
    assert_eq!(h.job_state("job-a"), "detected");
    // Under systemd the unit's cgroup dies with the agent; here, wait for the orphan.
    h.wait("the orphaned scanner", 30, |_| processes(tools.path()) == 0);
    // Killed mid-upload: the receiver stores the file but the answer never comes.
    q.push_fault(Fault::StoreThenHang);
    h.start();
    h.wait("the upload to be stored", 90, |_| {
        stored_by_job(&q).get("job-a") == Some(&1)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.job_state("job-a"), "scanned");
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGKILL), None);
    // Restart: sent again with the same idempotency key, acknowledged as a duplicate.
    h.start();
    h.wait_job("job-a", "done", 60);
    assert_eq!(
        stored_by_job(&q).get("job-a"),
        Some(&1),
        "stored exactly once"
    );
    let j = h.journal("job-a").expect("journal");
    assert_eq!(j["scan_attempts"], 2);
    // A restart after done redoes nothing.
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    h.start();
    h.wait("READY=1", 30, |h| {
        h.notes().iter().filter(|n| n.contains("READY=1")).count() >= 4
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.journal("job-a").expect("journal"), j);
    assert_eq!(stored_by_job(&q).get("job-a"), Some(&1));
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    assert!(h.mounts().is_empty(), "{:?}", h.mounts());
}

/// The metadata server's guest-attribute history so far (of every agent process) keeps within the
/// VM's limits: 10 writes in any 60 s, 3 in any second.
fn within_limits(h: &Harness) {
    let per_minute = h.md.max_writes_in_any_window(Duration::from_secs(60));
    let per_second = h.md.max_writes_in_any_window(Duration::from_secs(1));
    eprintln!(
        "guest-attribute writes: {} in all, at most {per_minute} in any 60 s, {per_second} in any second",
        h.md.guest_writes().len()
    );
    assert!(per_minute <= 10, "{per_minute} writes in one minute");
    assert!(per_second <= 3, "{per_second} writes in one second");
}

#[test]
fn restarts_keep_the_vm_write_limits_and_refused_disks_are_never_opened() {
    needs_root!();
    const JOBS: usize = 6;
    let (q, port) = receiver();
    let tools = tempfile::tempdir().expect("tempdir");
    let mut h = Harness::new(port, &slow_scanner(tools.path(), 3));
    let boot = h.attach_boot("debian-ext4-gpt");
    let rw = h.attach("decoy-rw", "debian-ext4-gpt", "READ_WRITE");
    let fixtures = ["debian-ext4-gpt", "debian-xfs-mbr"];
    let mut entries = vec![
        assignment("job-boot", BOOT_DISK),
        assignment("job-rw", "decoy-rw"),
    ];
    for n in 0..JOBS {
        let disk = format!("disk-{n}");
        h.attach(&disk, fixtures[n % 2], "READ_ONLY");
        entries.push(assignment(&format!("job-{n}"), &disk));
    }
    {
        // On an NVMe machine type: the refused disks are NVMe namespaces (identified only by
        // opening them), the READ_WRITE one without its by-id link, and disk-0 has no link
        // either, so finding it scans every device.
        let gce = h.gce();
        gce.show_as_nvme(BOOT_DISK, "nvme0n1").expect("nvme");
        gce.show_as_nvme("decoy-rw", "nvme0n2").expect("nvme");
        gce.unlink("decoy-rw").expect("unlink");
        gce.unlink("disk-0").expect("unlink");
    }
    let mut opens = Opens::watch(&[&boot, &rw]).expect("watch the refused devices");
    let started = Instant::now();
    h.start();
    h.assign(&Value::Array(entries));
    let done = |h: &Harness| {
        (0..JOBS)
            .filter(|n| h.job_state(&format!("job-{n}")) == "done")
            .count()
    };
    // Killed twice within a minute while jobs finish, restarted at once each time (sooner than
    // systemd's RestartSec=5).
    for finished in [1, 3] {
        h.wait("a job to finish", 60, |h| done(h) >= finished);
        assert_eq!(h.stop(nix::sys::signal::Signal::SIGKILL), None);
        h.wait("the orphaned scanner", 30, |_| processes(tools.path()) == 0);
        h.start();
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "both kills within a minute"
    );
    for n in 0..JOBS {
        h.wait_job(&format!("job-{n}"), "done", 120);
    }
    h.wait_job("job-boot", "failed", 30);
    h.wait_job("job-rw", "failed", 30);
    // Neither refused disk was opened by anyone, not even read-only.
    let opened = opens.opened().expect("opens");
    assert!(opened.is_empty(), "opened: {opened:?}");
    within_limits(&h);
    h.wait("the final guest attributes", 180, |h| {
        (0..JOBS).all(|n| h.guest(&format!("job-{n}"))["state"] == "done")
            && h.guest("job-boot")["state"] == "failed"
            && h.guest("job-rw")["state"] == "failed"
            && h.guest("agent")["done"] == JOBS
    });
    let boot_error = h.journal("job-boot").expect("journal")["error"].clone();
    assert!(
        boot_error.as_str().is_some_and(|e| e.contains("boot disk")),
        "{boot_error}"
    );
    let rw_error = h.journal("job-rw").expect("journal")["error"].clone();
    assert!(
        rw_error.as_str().is_some_and(|e| e.contains("READ_WRITE")),
        "{rw_error}"
    );
    for n in 0..JOBS {
        assert_eq!(stored_by_job(&q).get(&format!("job-{n}")), Some(&1));
    }

    within_limits(&h);
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    // disk-0 was found by the scan, past both NVMe namespaces.
    let dev_dir = h.gce().dev_dir();
    let j0 = h.journal("job-0").expect("journal");
    assert!(
        j0["device"]
            .as_str()
            .is_some_and(|d| Path::new(d).starts_with(&dev_dir)),
        "{j0}"
    );
}

/// The fields of one journal entry, in order.
type JournalEntry = Vec<(String, String)>;

/// The journal's native protocol: `KEY=value` lines, or `KEY\n<u64 le length><value>\n`.
fn journal_fields(datagram: &[u8]) -> JournalEntry {
    let mut fields = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let line_end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            rest = rest.get(line_end + 1..).unwrap_or_default();
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let after = rest.get(line_end + 1..).unwrap_or_default();
            let len = after
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0);
            let value = after.get(8..8 + len).unwrap_or_default();
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            rest = after.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

#[test]
fn logs_go_to_the_journal_with_job_fields() {
    needs_root!();
    let (_q, port) = receiver();
    let mut h = Harness::new(port, "");
    h.attach("disk-a", "debian-ext4-gpt", "READ_ONLY");
    let run = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(run.path().join("journal")).expect("mkdir");
    let socket = UnixDatagram::bind(run.path().join("journal/socket")).expect("journal socket");
    let entries: Arc<Mutex<Vec<JournalEntry>>> = Arc::default();
    let sink = Arc::clone(&entries);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = socket.recv(&mut buf) {
            sink.lock()
                .expect("entries")
                .push(journal_fields(buf.get(..n).unwrap_or_default()));
        }
    });
    h.journald = Some(run.path().to_path_buf());
    h.start();
    h.assign(&json!([assignment("job-a", "disk-a")]));
    h.wait_job("job-a", "done", 60);
    let has = |want: &[(&str, &str)]| {
        entries.lock().expect("entries").iter().any(|e| {
            want.iter()
                .all(|(k, v)| e.iter().any(|(ek, ev)| ek == k && ev == v))
        })
    };
    h.wait("journal entries", 10, |_| {
        has(&[
            ("JOB_ID", "job-a"),
            ("STATE", "done"),
            ("SYSLOG_IDENTIFIER", "snapscan"),
        ])
    });
    assert!(has(&[
        ("JOB_ID", "job-a"),
        ("DEVICE", "disk-a"),
        ("SNAPSHOT", "snap-job-a"),
        ("STATE", "scanned"),
    ]));
    assert!(
        has(&[("PRIORITY", "6")]),
        "info lines have the info priority"
    );
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
    // Nothing readable went to stderr: it was all in the journal.
    assert!(!h.log_text().contains("job done"), "{}", h.log_text());
}

#[test]
fn config_check_and_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[upload.qflow]\nurl = \"https://u:hunter2@qflow.example/up\"\n[agent]\nidle_action = \"poweroff\"\n",
    )
    .expect("write");
    let out = Command::new(snapscan_tests::snapscan_bin())
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("idle_action = \"poweroff\"") && !text.contains("hunter2"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\nstate_dir = \"relative\"\n").expect("write");
    for sub in [&["config", "check"][..], &["agent"][..]] {
        let out = Command::new(snapscan_tests::snapscan_bin())
            .args(sub)
            .arg("--config")
            .arg(&bad)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{sub:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("state_dir"),
            "{out:?}"
        );
    }
}

#[test]
fn a_disk_never_attached_fails_its_job_after_attach_timeout_secs() {
    needs_root!();
    let (_q, port) = receiver();
    let mut h = Harness::new(port, "[agent]\nattach_timeout_secs = 3\n");
    h.start();
    h.assign(&json!([assignment("job-x", "never-attached")]));
    h.wait_job("job-x", "failed", 30);
    h.wait("the guest attribute to say failed", 30, |h| {
        h.guest("job-x")["state"] == "failed"
    });
    let guest = h.guest("job-x");
    let error = guest["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("was not attached within 3 s") && error.contains("attach_timeout_secs"),
        "{guest}"
    );
    assert!(
        guest["started_at"].is_string(),
        "a failed job has started_at: {guest}"
    );
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

/// Run `snapscan agent` (or `config check`) with `config`, the metadata server unreachable: a
/// setting checked at start-up ends it with exit 2 at once; one that is not would leave it
/// waiting for the metadata server, so give up after 20 s.
fn start_up_exit(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(snapscan_tests::snapscan_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("GCE_METADATA_HOST", format!("127.0.0.1:{}", free_port()))
        .env_remove("QFLOW_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run snapscan");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn an_unusable_sink_or_scanner_stops_the_agent_before_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let not_executable = dir.path().join("scan");
    std::fs::write(&not_executable, "#!/bin/sh\n").expect("program");
    let not_executable = format!(
        "[scan]\nscanner = \"mine\"\n[scanner.profiles.mine]\ncommand = [\"{}\"]\n",
        not_executable.display()
    );
    let cases = [
        (
            "[upload]\nsink = \"qflow\"\n",
            "sink = \"qflow\" needs [upload.qflow] url",
        ),
        (
            "[upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"notaurl\"\n",
            "invalid QFlow URL 'notaurl'",
        ),
        (
            "[upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"ftp://qflow.example/up\"\n",
            "not http or https",
        ),
        (
            "[upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"https://qflow.example/up\"\n",
            "no QFlow token",
        ),
        (not_executable.as_str(), "not found"),
        (
            "[upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"https://qflow.example/up\"\n\
             token_file = \"/nonexistent/qflow.token\"\n",
            "/nonexistent/qflow.token",
        ),
        (
            "[scan]\nscanner = \"mine\"\n[scanner.profiles.mine]\n\
             command = [\"/nonexistent/bin/scan\", \"{mount}\"]\n",
            "/nonexistent/bin/scan",
        ),
        (
            "[scan]\nscanner = \"mine\"\n[scanner.profiles.mine]\n\
             command = [\"/bin/true\", \"{env:SNAPSCAN_TEST_UNSET_VARIABLE}\"]\n",
            "SNAPSCAN_TEST_UNSET_VARIABLE",
        ),
    ];
    for (n, (settings, says)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("bad-{n}.toml"));
        std::fs::write(
            &config,
            format!("{settings}\n[agent]\nstate_dir = \"{}\"\n", state.display()),
        )
        .expect("config");
        for args in [&["agent"][..], &["config", "check"][..]] {
            let (code, stderr) = start_up_exit(args, &config);
            assert_eq!(code, Some(2), "{args:?} with {settings}: {stderr}");
            assert!(
                stderr.contains(says),
                "{args:?} with {settings}: wanted \"{says}\" in {stderr}"
            );
        }
    }
}

#[test]
fn config_check_shows_the_built_in_profiles_it_would_run() {
    let out = Command::new(snapscan_tests::snapscan_bin())
        .args(["config", "check", "--config", "/dev/null"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let qscanner = text
        .split("[scanner.profiles.qscanner]")
        .nth(1)
        .unwrap_or_else(|| panic!("no qscanner profile in:\n{text}"));
    assert!(
        qscanner.contains("\"vmsnapshot\"") && qscanner.contains("{mount}"),
        "{text}"
    );
    assert!(text.contains("[scanner.profiles.command]"), "{text}");
}

/// A `source` assignment for `fixture`'s snapshot.
/// The job's disk step in its journal (`requested`, `created`, `attached`...).
fn disk_step(h: &Harness, id: &str) -> String {
    h.journal(id)
        .and_then(|j| j["disk"]["step"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A receiver and a started agent whose Compute API takes 1.5 s per operation (time to act
/// between the steps of a disk).
fn with_slow_compute() -> (FakeQflow, Harness) {
    let (q, port) = receiver();
    let mut h = Harness::new(port, "");
    h.with_compute(&["debian-ext4-gpt"])
        .set_operation_delay(Duration::from_millis(1500));
    h.start();
    (q, h)
}

/// The error in job `id`'s journal.
fn job_error(h: &Harness, id: &str) -> String {
    h.journal(id)
        .and_then(|j| j["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn source_assignments_make_attach_scan_and_delete_their_disks() {
    needs_root!();
    let (q, port) = receiver();
    let mut h = Harness::new(port, "");
    h.with_compute(&["debian-ext4-gpt", "debian-lvm", "windows-11"]);
    h.start();
    h.assign(&json!([
        by_snapshot("src-linux", "debian-ext4-gpt"),
        by_snapshot("src-lvm", "debian-lvm"),
        by_snapshot("src-windows", "windows-11"),
    ]));
    for id in ["src-linux", "src-lvm", "src-windows"] {
        h.wait_job(id, "done", 180);
        h.wait(&format!("{id}'s disk deleted"), 60, |h| {
            disk_step(h, id) == "deleted"
        });
    }
    let stored = stored_by_job(&q);
    for id in ["src-linux", "src-lvm", "src-windows"] {
        assert_eq!(stored.get(id), Some(&1), "{id}: {stored:?}");
    }
    let windows = h.guest("src-windows");
    assert!(
        windows["os"]
            .as_str()
            .unwrap_or_default()
            .contains("Windows 11"),
        "{windows}"
    );
    // The disks were made as the job says: named after it, labelled, from the snapshot.
    let inserts: Vec<String> = h
        .api()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path_and_query.contains("/disks?"))
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(inserts.len(), 3, "{inserts:?}");
    assert!(h
        .api()
        .deleted_disks()
        .iter()
        .all(|d| d.starts_with("snapscan-src-")));
    assert_nothing_left(&h);
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

#[test]
fn a_withdrawn_source_assignment_cleans_up_its_disk() {
    needs_root!();
    let (q, mut h) = with_slow_compute();
    // Withdrawn while its disk is being made, and while it is being attached.
    for (id, step) in [("gone-early", "requested"), ("gone-late", "created")] {
        h.assign(&json!([by_snapshot(id, "debian-ext4-gpt")]));
        h.wait(&format!("{id}'s disk {step}"), 60, |h| {
            disk_step(h, id) == step
        });
        h.assign(&json!([]));
        h.wait_job(id, "cancelled", 60);
        h.wait(&format!("{id}'s disk deleted"), 60, |h| {
            disk_step(h, id) == "deleted"
        });
        assert_nothing_left(&h);
    }
    assert!(stored_by_job(&q).is_empty(), "{:?}", stored_by_job(&q));
    assert!(!h.log_text().contains("leftover"), "{}", h.log_text());
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

#[test]
fn killed_at_every_disk_step_nothing_leaks_and_nothing_is_stored_twice() {
    needs_root!();
    let (q, mut h) = with_slow_compute();
    let mut list = Vec::new();
    // The disk's step, and the job's state ("" for any) when killed: the last two while the
    // detach or delete of a finished job is in flight.
    let kills = [
        ("requested", ""),
        ("created", ""),
        ("attached", ""),
        ("attached", "done"),
        ("detached", "done"),
    ];
    for (n, (step, state)) in kills.iter().enumerate() {
        let id = format!("kill-{n}");
        list.push(by_snapshot(&id, "debian-ext4-gpt"));
        h.assign(&Value::Array(list.clone()));
        h.wait(&format!("{id} at {step} {state}"), 60, |h| {
            disk_step(h, &id) == *step && (state.is_empty() || h.job_state(&id) == *state)
        });
        h.stop(nix::sys::signal::Signal::SIGKILL);
        h.start();
    }
    for n in 0..kills.len() {
        h.wait_job(&format!("kill-{n}"), "done", 180);
    }
    let stored = stored_by_job(&q);
    for n in 0..kills.len() {
        assert_eq!(stored.get(&format!("kill-{n}")), Some(&1), "{stored:?}");
    }
    assert_nothing_left(&h);
    // Each job finished its own clean-up after the restart, none was left to the sweep.
    for n in 0..kills.len() {
        let id = format!("kill-{n}");
        h.wait(&format!("{id}'s disk deleted"), 30, |h| {
            disk_step(h, &id) == "deleted"
        });
    }
    assert!(!h.log_text().contains("leftover"), "{}", h.log_text());
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

#[test]
fn leftover_disks_of_this_instance_are_swept_and_quota_fails_only_its_job() {
    needs_root!();
    let (_q, port) = receiver();
    let mut h = Harness::new(port, "");
    let me = Identity::default().name;
    let api = h.with_compute(&["debian-ext4-gpt"]);
    let snap = snapshot("debian-ext4-gpt");
    api.add_disk(
        "snapscan-gone-job-1234abcd",
        &snap,
        &[("snapscan-instance", &me)],
    );
    api.add_disk(
        "someone-elses",
        &snap,
        &[("snapscan-instance", "another-scanner")],
    );
    api.set_disk_quota(2);
    h.start();
    h.wait("the leftover swept", 60, |h| {
        h.api().disk_names() == ["someone-elses"]
    });
    // Now one disk is in the zone: the quota (2) leaves room for one job, not two.
    h.api().set_disk_quota(1);
    h.assign(&json!([by_snapshot("over-quota", "debian-ext4-gpt")]));
    h.wait_job("over-quota", "failed", 60);
    let error = job_error(&h, "over-quota");
    assert!(
        error.contains("quota exceeded") && error.contains("DISKS_TOTAL_GB"),
        "{error}"
    );
    assert!(
        h.agent
            .as_mut()
            .expect("agent")
            .try_wait()
            .expect("wait")
            .is_none(),
        "agent died"
    );
    assert_eq!(h.api().disk_names(), ["someone-elses"]);
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

#[test]
fn a_disk_of_the_same_name_made_by_another_is_never_used_or_deleted() {
    needs_root!();
    let (_q, port) = receiver();
    let mut h = Harness::new(port, "");
    let me = Identity::default().name;
    let api = h.with_compute(&["debian-ext4-gpt"]);
    // The name this agent would give job "taken"'s disk, made by someone else.
    let name = snapscan::agent::assignments::derived_disk_name(&me, "taken");
    api.add_disk(
        &name,
        &snapshot("debian-ext4-gpt"),
        &[
            ("snapscan-instance", "another-scanner"),
            ("snapscan-job", "taken"),
        ],
    );
    h.start();
    h.assign(&json!([by_snapshot("taken", "debian-ext4-gpt")]));
    h.wait_job("taken", "failed", 60);
    let error = job_error(&h, "taken");
    assert!(error.contains("was not made by this job"), "{error}");
    assert_eq!(h.api().disk_names(), [name]);
    assert!(h.api().deleted_disks().is_empty());
    assert_eq!(h.api().attached(&me), ["persistent-disk-0"]);
    assert_eq!(h.stop(nix::sys::signal::Signal::SIGTERM), Some(0));
}

#[test]
fn idle_action_delete_deletes_the_instance_only_after_every_ack() {
    needs_root!();
    let (q, port) = receiver();
    let mut h = Harness::new(
        port,
        "[agent]\nidle_action = \"delete\"\nidle_grace_secs = 1\n",
    );
    let me = Identity::default().name;
    h.with_compute(&["debian-ext4-gpt"]);
    // The receiver is away at first: the results wait, and so does the deletion.
    q.push_faults(std::iter::repeat_n(Fault::Status(503), 6));
    h.start();
    h.assign(&json!([by_snapshot("last-job", "debian-ext4-gpt")]));
    h.wait_job("last-job", "done", 180);
    h.wait("the instance deleted", 60, |h| {
        !h.api().deleted_instances().is_empty()
    });
    assert_eq!(h.api().deleted_instances(), [me]);
    assert_eq!(stored_by_job(&q).get("last-job"), Some(&1));
    let agent = h.guest("agent");
    assert!(
        agent["idle_action"]
            .as_str()
            .unwrap_or_default()
            .contains("deleting instance"),
        "{agent}"
    );
}

/// `snapscan launch` with the fake Compute API, credentials from a service-account key whose
/// token endpoint is the fake OAuth server; stdout and stderr go to files in the harness.
fn launch(h: &Harness, oauth: &FakeOauth, args: &[&str]) -> Child {
    launcher(h, oauth, "launch", args, &[])
}

/// A source VM `web-1` whose boot disk `web-1-boot` holds `fixture`; the scanner VM not yet
/// created (launch creates it).
fn source_vm(h: &mut Harness, fixture: &str) {
    h.with_compute(&[fixture]);
    h.api().remove_instance(&Identity::default().name);
    h.api().add_instance("web-1", "4242");
    h.api().add_disk("web-1-boot", &snapshot(fixture), &[]);
}

/// Start the agent once the scanner VM exists in the API, as the VM boots after creation.
fn boot_when_created(h: &mut Harness) {
    let me = Identity::default().name;
    h.wait("the scanner VM created", 60, |h| {
        !h.api().attached(&me).is_empty()
    });
    h.start();
}

/// `snapscan launch --name <the fake VM> --wait --poll-secs 1 ARGS`, the agent booted once the
/// VM exists; the launch's exit code and output. Then: every call the launcher and the agent
/// made is allowed by the README's custom roles.
fn launch_and_boot(h: &mut Harness, args: &[&str]) -> (Option<i32>, String, String) {
    let me = Identity::default().name;
    let oauth = FakeOauth::start(h.md.handle());
    let mut all = vec!["--name", &me, "--wait", "--poll-secs", "1"];
    all.extend_from_slice(args);
    let child = launch(h, &oauth, &all);
    boot_when_created(h);
    let ended = finish(h, child, 300);
    let launcher_tokens = oauth.granted();
    let is_launcher = |t: &str| launcher_tokens.iter().any(|l| l == t);
    // The launcher's account gets actAs on the scanner's account (roles/iam.serviceAccountUser).
    let mut launcher_role = readme_role("snapscanLauncher");
    launcher_role.insert("iam.serviceAccounts.actAs".into());
    for (who, used, role) in [
        (
            "launcher",
            h.api().permissions_used(is_launcher),
            launcher_role,
        ),
        (
            "scanner VM",
            h.api().permissions_used(|t| !is_launcher(t)),
            readme_role("snapscanScanner"),
        ),
    ] {
        let missing: Vec<&String> = used.difference(&role).collect();
        assert!(
            missing.is_empty(),
            "the README's role for the {who} lacks {missing:?} (it used {used:?})"
        );
    }
    ended
}

#[test]
fn launch_dry_run_prints_the_requests_and_changes_nothing() {
    let mut h = Harness::new(free_port(), "");
    source_vm(&mut h, "debian-ext4-gpt");
    let oauth = FakeOauth::start(h.md.handle());
    let child = launch(
        &h,
        &oauth,
        &[
            "--instance",
            "web-1",
            "--snapshot",
            "projects/prod/global/snapshots/old-1",
            "--name",
            "scanner-dry",
            "--service-account",
            "scanner@scan-project.iam.gserviceaccount.com",
            "--dry-run",
        ],
    );
    let (code, out, err) = finish(&h, child, 60);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let base = h.api().url();
    assert!(
        out.contains(&format!(
            "POST {base}/projects/scan-project/zones/europe-west1-b/disks/web-1-boot/createSnapshot"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "POST {base}/projects/scan-project/zones/europe-west1-b/instances"
        )),
        "{out}"
    );
    // The body is the instance as it would be made: the assignments by snapshot, guest
    // attributes on, no external address, the scanner's account.
    assert!(out.contains(r#""name": "scanner-dry""#), "{out}");
    assert!(out.contains("snapscan-assignments"), "{out}");
    assert!(
        out.contains(r#"\"source\":{\"snapshot\":\"projects/prod/global/snapshots/old-1\"}"#),
        "{out}"
    );
    assert!(out.contains(r#""key": "enable-guest-attributes""#), "{out}");
    assert!(!out.contains("accessConfigs"), "{out}");
    assert!(err.contains("dry run: nothing was created"), "{err}");
    // Only the source VM was read; nothing was made.
    let sent: Vec<String> = h
        .api()
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    assert!(sent.iter().all(|r| r.starts_with("GET ")), "{sent:?}");
    assert!(h.api().inserted("scanner-dry").is_none());
    assert_eq!(h.api().snapshot_paths(), [snapshot("debian-ext4-gpt")]);
    assert_eq!(oauth.granted().len(), 1);
}

#[test]
fn launch_snapshots_a_vm_and_the_scanner_vm_does_the_rest() {
    needs_root!();
    let (q, port) = receiver();
    // No idle grace in the settings: the launch's metadata sets it.
    let mut h = Harness::new(port, "");
    source_vm(&mut h, "debian-ext4-gpt");
    let me = Identity::default().name;
    let (code, out, err) = launch_and_boot(
        &mut h,
        &[
            "--instance",
            "web-1",
            "--service-account",
            "scanner@scan-project.iam.gserviceaccount.com",
            "--delete-snapshots",
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", h.log_text());
    assert!(out.contains("web-1-boot: done (Debian"), "{out}");
    assert!(
        out.contains("outputs acknowledged by the receiver"),
        "{out}"
    );
    assert!(
        out.contains(&format!("scanner VM {me} deleted itself")),
        "{out}"
    );
    // The VM was made with what the agent needs, and nothing more.
    let body = h.api().inserted(&me).expect("the scanner VM inserted");
    let items: BTreeMap<String, String> = body["metadata"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap_or_default().to_owned(),
                i["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(items["snapscan-idle-action"], "delete");
    assert_eq!(items["snapscan-idle-grace-secs"], "3", "3 x --poll-secs");
    assert_eq!(items["enable-guest-attributes"], "TRUE");
    let assignments: Value = serde_json::from_str(&items["snapscan-assignments"]).expect("json");
    assert_eq!(assignments[0]["id"], "web-1-boot");
    assert_eq!(assignments[0]["source_instance"], "web-1");
    assert_eq!(body["disks"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(
        body["serviceAccounts"][0]["email"],
        "scanner@scan-project.iam.gserviceaccount.com"
    );
    // Results stored once; the snapshot it made, the agent's disk and the VM are gone.
    assert_eq!(stored_by_job(&q).get("web-1-boot"), Some(&1));
    let made = h.api().deleted_snapshots();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(
        made[0].contains("/snapshots/web-1-boot-snapscan-"),
        "{made:?}"
    );
    assert_eq!(h.api().snapshot_paths(), [snapshot("debian-ext4-gpt")]);
    assert_eq!(h.api().deleted_instances(), [me]);
    assert_eq!(h.api().disk_names(), ["web-1-boot"]);
    assert!(h.gce().attached().is_empty(), "{:?}", h.gce().attached());
}

#[test]
fn launch_attach_at_create_needs_no_account_and_deletes_the_vm_after_the_results() {
    needs_root!();
    let (q, port) = receiver();
    let mut h = Harness::new(port, "[agent]\npoweroff_command = [\"true\"]\n");
    source_vm(&mut h, "debian-ext4-gpt");
    let me = Identity::default().name;
    let (code, out, err) = launch_and_boot(&mut h, &["--disk", "web-1-boot", "--attach-at-create"]);
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", h.log_text());
    assert!(out.contains("web-1-boot: done (Debian"), "{out}");
    assert!(
        out.contains(&format!("scanner VM {me} deleted (its disks with it)")),
        "{out}"
    );
    let body = h.api().inserted(&me).expect("the scanner VM inserted");
    assert_eq!(body["serviceAccounts"], json!([]), "{body}");
    assert_eq!(body["disks"][1]["mode"], "READ_ONLY", "{body}");
    assert_eq!(body["disks"][1]["autoDelete"], true, "{body}");
    assert_eq!(stored_by_job(&q).get("web-1-boot"), Some(&1));
    // The agent made no disk of its own; the disk made with the VM went with it.
    assert!(h
        .api()
        .requests()
        .iter()
        .all(|r| !(r.method == "POST" && r.path_and_query.contains("/disks?"))));
    assert_eq!(h.api().deleted_instances(), [me]);
    assert_eq!(h.api().disk_names(), ["web-1-boot"]);
    assert!(h.gce().attached().is_empty(), "{:?}", h.gce().attached());
    // Without --delete-snapshots, the snapshot it made stays for the user.
    assert_eq!(h.api().snapshot_paths().len(), 2);
}

/// A scanner VM in the harness's project about to be created by a launch, with the Debian
/// fixture registered as image `path` (an image a pipeline built); a policy file holding
/// `policy`, its path.
fn golden_image(h: &mut Harness, path: &str, policy: &str) -> String {
    h.with_compute(&[]);
    h.api().remove_instance(&Identity::default().name);
    h.api()
        .add_image(path, images::image("debian-ext4-gpt").expect("fixture"));
    let file = h.state().with_file_name("policy.toml");
    std::fs::write(&file, policy).expect("policy");
    file.display().to_string()
}

#[test]
fn launch_image_the_scanner_vm_makes_scans_and_deletes_a_disk_of_it() {
    needs_root!();
    let (q, port) = receiver();
    let mut h = Harness::new(port, "");
    let image = "projects/scan-project/global/images/golden-1";
    let policy = golden_image(
        &mut h,
        image,
        "[os]\nid = [\"debian\"]\nversion = \"vers:generic/>=12\"\n",
    );
    let me = Identity::default().name;
    let (code, out, err) = launch_and_boot(
        &mut h,
        &[
            "--image",
            "golden-1",
            "--policy",
            &policy,
            "--service-account",
            "scanner@scan-project.iam.gserviceaccount.com",
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}\n{}", h.log_text());
    assert!(out.contains("golden-1: done (Debian"), "{out}");
    assert!(out.contains("policy passed"), "{out}");
    let body = h.api().inserted(&me).expect("the scanner VM inserted");
    let assignments = metadata_item(&body, "snapscan-assignments").expect("assignments");
    let assignments: Value = serde_json::from_str(assignments).expect("json");
    assert_eq!(assignments[0]["source"], json!({ "image": image }));
    assert!(assignments[0]["policy"]
        .as_str()
        .is_some_and(|p| p.contains("debian")));
    // The agent made the disk (the fake knows no other source for it), and deleted it.
    assert!(
        h.api()
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path_and_query.contains("/disks?")),
        "{:?}",
        h.api().requests()
    );
    assert_eq!(stored_by_job(&q).get("golden-1"), Some(&1));
    assert!(
        h.api().disk_names().is_empty(),
        "{:?}",
        h.api().disk_names()
    );
    assert_eq!(h.api().deleted_instances(), [me]);
    assert!(h.gce().attached().is_empty(), "{:?}", h.gce().attached());
    // No snapshot is taken of an image.
    assert!(h.api().snapshot_paths().is_empty());
}

#[test]
fn launch_image_attach_at_create_makes_the_disk_read_only_and_a_broken_policy_exits_5() {
    needs_root!();
    let (q, port) = receiver();
    let mut h = Harness::new(port, "[agent]\npoweroff_command = [\"true\"]\n");
    let family = "projects/scan-project/global/images/family/golden";
    let policy = golden_image(
        &mut h,
        family,
        "[[deny]]\npurl = \"pkg:deb/debian/bash\"\nreason = \"no shells\"\n",
    );
    let me = Identity::default().name;
    let (code, out, err) = launch_and_boot(
        &mut h,
        &[
            "--image",
            "family/golden",
            "--attach-at-create",
            "--policy",
            &policy,
        ],
    );
    assert_eq!(code, Some(5), "{out}\n{err}\n{}", h.log_text());
    assert!(out.contains("golden: done (Debian"), "{out}");
    assert!(out.contains("policy broken: deny: bash"), "{out}");
    let body = h.api().inserted(&me).expect("the scanner VM inserted");
    let disk = &body["disks"][1];
    assert_eq!(disk["mode"], "READ_ONLY", "{body}");
    assert_eq!(disk["autoDelete"], true, "{body}");
    assert_eq!(disk["initializeParams"]["sourceImage"], family, "{body}");
    assert!(
        disk["initializeParams"]["sourceSnapshot"].is_null(),
        "{body}"
    );
    assert_eq!(stored_by_job(&q).get("golden"), Some(&1));
    assert_eq!(h.api().deleted_instances(), [me]);
    assert!(
        h.api().disk_names().is_empty(),
        "{:?}",
        h.api().disk_names()
    );
    assert!(h.gce().attached().is_empty(), "{:?}", h.gce().attached());
}
