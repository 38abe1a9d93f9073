//! The agent under test, shared by the end-to-end suites (`tests/tests/agent.rs`,
//! `tests/tests/queue.rs`): [`Harness`] runs the real `snapscan agent` against its own fakes (a
//! metadata server, GCE-style disks, optionally the Compute API), with a systemd notify socket
//! and its log; helpers for assignments, the receiver's stored results, the launchers
//! (`snapscan launch`, `snapscan submit`) and the README's custom roles.
//!
//! Not here: the tests themselves, the fakes ([`crate::gce_metadata`], [`crate::compute`],
//! [`crate::qflow`]).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::compute::FakeCompute;
use crate::gce::{DiskBus, GceDisks};
use crate::gce_metadata::{Disk, FakeMetadata, Identity};
use crate::images;
use crate::oauth::FakeOauth;
use crate::qflow::FakeQflow;

/// The receiver's token in the agents' configs.
pub const TOKEN: &str = "agent-test-token";
/// The boot disk's device name, listed at index 0 from the start.
pub const BOOT_DISK: &str = "persistent-disk-0";

/// Skip the test (fail it under CI) unless running as root.
#[macro_export]
macro_rules! needs_root {
    () => {
        if !$crate::images::is_root() {
            $crate::skip("needs root (loop devices, mounts)");
            return;
        }
    };
}

/// One agent under test with its fakes and directories.
pub struct Harness {
    dir: tempfile::TempDir,
    /// The agent's metadata server.
    pub md: FakeMetadata,
    qflow_port: u16,
    disks: Arc<Mutex<GceDisks>>,
    /// The Compute API, for `source` assignments ([`Harness::with_compute`]).
    compute: Option<FakeCompute>,
    /// The agent process, while it runs.
    pub agent: Option<Child>,
    notes: Arc<Mutex<Vec<String>>>,
    extra_config: String,
    /// A directory standing in for `/run/systemd` (with `journal/socket`), if the agent should
    /// log to a journal.
    pub journald: Option<PathBuf>,
}

impl Harness {
    /// Fakes up, no disk attached, agent not started. `extra_config` is appended to the config
    /// (its own tables only: `[agent]`, `[status]`... are written here).
    pub fn new(qflow_port: u16, extra_config: &str) -> Harness {
        let md = FakeMetadata::start();
        md.set_disks(vec![Disk::boot(BOOT_DISK)]);
        Harness {
            dir: tempfile::tempdir().expect("tempdir"),
            md,
            qflow_port,
            disks: Arc::new(Mutex::new(GceDisks::new().expect("gce disks"))),
            compute: None,
            agent: None,
            notes: Arc::default(),
            extra_config: extra_config.to_owned(),
            journald: None,
        }
    }

    /// The GCE-style disks attached to the agent's view.
    pub fn gce(&self) -> std::sync::MutexGuard<'_, GceDisks> {
        self.disks.lock().expect("gce disks")
    }

    /// Start the fake Compute API for the fake metadata server's project, zone and instance,
    /// with the snapshot `projects/prod/global/snapshots/<fixture>` of each fixture named.
    pub fn with_compute(&mut self, fixtures: &[&str]) -> &FakeCompute {
        let id = Identity::default();
        let zone = id.zone.rsplit('/').next().unwrap_or_default().to_owned();
        let api = FakeCompute::start(
            &id.project,
            &zone,
            self.md.handle(),
            Arc::clone(&self.disks) as Arc<Mutex<dyn DiskBus>>,
        );
        api.add_instance(&id.name, &id.id.to_string());
        api.set_operation_delay(Duration::from_millis(300));
        for f in fixtures {
            api.add_snapshot(&snapshot(f), images::image(f).expect("fixture"));
        }
        self.compute.insert(api)
    }

    /// The Compute API ([`Harness::with_compute`] first).
    pub fn api(&self) -> &FakeCompute {
        self.compute.as_ref().expect("with_compute first")
    }

    /// The agent's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The agent's work directory (its mounts).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The agent's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// Write the agent's config for `metadata_url`; its path.
    pub fn config(&self, metadata_url: &str) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        let (by_id, sys, dev) = {
            let gce = self.gce();
            (gce.by_id_dir(), gce.sys_dir(), gce.dev_dir())
        };
        let text = format!(
            r#"[agent]
state_dir = "{state}"
by_id_dir = "{by_id}"
sys_dir = "{sys}"
dev_dir = "{dev}"
device_wait_secs = 10
upload_retry_secs = 3
stop_timeout_secs = 10
max_concurrent_jobs = 2
log = "snapscan=debug,info"
{agent_extra}
[metadata]
url = "{metadata_url}"
watch_timeout_secs = 5
initial_backoff_ms = 100
max_backoff_ms = 1000

[scan]
work_dir = "{work}"
{scan_extra}
[upload]
sink = "qflow"

[upload.qflow]
url = "http://127.0.0.1:{port}/qflow/snapshot/v1/upload"
token_env = "QFLOW_TOKEN"
request_timeout_secs = 5

[upload.qflow.retry]
max_attempts = 2
initial_backoff_ms = 100
max_backoff_ms = 300
{extra}"#,
            state = self.state().display(),
            by_id = by_id.display(),
            sys = sys.display(),
            dev = dev.display(),
            work = self.work().display(),
            port = self.qflow_port,
            agent_extra = section(&self.extra_config, "agent"),
            scan_extra = section(&self.extra_config, "scan"),
            extra = rest(&self.extra_config),
        );
        let text = match &self.compute {
            None => text,
            Some(api) => format!(
                "{text}\n[compute]\nurl = \"{}\"\noperation_timeout_secs = 30\n\
                 [compute.retry]\nmax_attempts = 3\ninitial_backoff_ms = 50\nmax_backoff_ms = 200\n",
                api.url()
            ),
        };
        std::fs::write(&path, text).expect("config");
        path
    }

    /// Start the agent against `metadata_url` (default: the fake's).
    pub fn start(&mut self) {
        self.start_with(&self.md.url());
    }

    /// Start the agent against `metadata_url`.
    pub fn start_with(&mut self, metadata_url: &str) {
        let config = self.config(metadata_url);
        let socket_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
        let notes = Arc::clone(&self.notes);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
                notes.lock().expect("notes").push(text);
            }
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log");
        // Through `exec` so that WATCHDOG_PID is the agent's own pid, as systemd sets it. With
        // a journal stand-in: in a mount namespace of its own where it is /run/systemd, with
        // stderr named by JOURNAL_STREAM as systemd names it.
        let mut cmd = match &self.journald {
            None => Command::new("sh"),
            Some(run_systemd) => {
                let meta = log.metadata().expect("log metadata");
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg("mount --bind \"$0\" /run/systemd && exec sh \"$@\"")
                    .arg(run_systemd)
                    .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
                c
            }
        };
        let child = cmd
            .arg("-c")
            .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
            .arg(crate::snapscan_bin())
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .env("QFLOW_TOKEN", TOKEN)
            .env("NOTIFY_SOCKET", &socket_path)
            // As systemd sets it for WatchdogSec=2: a ping every second.
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("RUST_LOG")
            .env_remove("GCE_METADATA_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        self.agent = Some(child);
    }

    /// The running agent's pid.
    pub fn pid(&self) -> nix::unistd::Pid {
        let id = self.agent.as_ref().expect("agent running").id();
        nix::unistd::Pid::from_raw(i32::try_from(id).expect("pid"))
    }

    /// Send `signal` and wait for the exit; returns the exit code (None: killed by a signal).
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) -> Option<i32> {
        nix::sys::signal::kill(self.pid(), signal).expect("signal the agent");
        let mut child = self.agent.take().expect("agent running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The notifications it sent to the notify socket.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes").clone()
    }

    /// Attach fixture `fixture` as `device_name` and list it in `instance/disks/`; its device.
    pub fn attach(&mut self, device_name: &str, fixture: &str, mode: &str) -> PathBuf {
        let image = images::image(fixture).expect("fixture");
        let dev = self
            .gce()
            .attach(device_name, &image, mode == "READ_ONLY")
            .expect("attach");
        let mut disks = self.md.disks();
        let index = u32::try_from(disks.len()).expect("index");
        disks.push(if mode == "READ_ONLY" {
            Disk::read_only(device_name, index)
        } else {
            Disk::read_write(device_name, index)
        });
        self.md.set_disks(disks);
        dev
    }

    /// Attach fixture `fixture` as the boot disk (`instance/disks/` lists it from the start,
    /// index 0, READ_WRITE); its device.
    pub fn attach_boot(&mut self, fixture: &str) -> PathBuf {
        let image = images::image(fixture).expect("fixture");
        self.gce()
            .attach(BOOT_DISK, &image, false)
            .expect("attach the boot disk")
    }

    /// Set `snapscan-assignments` to `entries`.
    pub fn assign(&self, entries: &Value) {
        self.md
            .set_attribute("snapscan-assignments", &entries.to_string());
    }

    /// Job `id`'s journal, if written.
    pub fn journal(&self, id: &str) -> Option<Value> {
        let bytes = std::fs::read(self.state().join("jobs").join(id).join("job.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Job `id`'s state in its journal (empty if none).
    pub fn job_state(&self, id: &str) -> String {
        self.journal(id)
            .and_then(|j| j["state"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Wait until `cond` holds, at most `secs`; the agent's log is in the panic message.
    pub fn wait(&self, what: &str, secs: u64, cond: impl Fn(&Harness) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond(self) {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- agent log ---\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until job `id` is in `state`, at most `secs`.
    pub fn wait_job(&self, id: &str, state: &str, secs: u64) {
        self.wait(&format!("job {id} {state}"), secs, |h| {
            h.job_state(id) == state
        });
    }

    /// The guest attribute `snapscan/<key>`, parsed.
    pub fn guest(&self, key: &str) -> Value {
        self.md.guest_json("snapscan", key)
    }

    /// Mounts left under the work directory.
    pub fn mounts(&self) -> Vec<String> {
        crate::scan_env::mounts_under(&self.work())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Unmount what a killed agent left, so the loop devices can go.
        for m in self.mounts() {
            if let Some(point) = m.split(' ').nth(4) {
                let _ = Command::new("umount").arg("-l").arg(point).status();
            }
        }
    }
}

/// The lines of `extra` under `[table]` (without the header), for merging into that table.
fn section(extra: &str, table: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in extra.lines() {
        if line.trim_start().starts_with('[') {
            inside = line.trim() == format!("[{table}]");
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The tables of `extra` other than `[agent]` and `[scan]`.
fn rest(extra: &str) -> String {
    let mut out = String::new();
    let mut keep = true;
    for line in extra.lines() {
        if line.trim_start().starts_with('[') {
            keep = !matches!(line.trim(), "[agent]" | "[scan]");
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The snapshot path [`Harness::with_compute`] registers for `fixture`.
/// The path of the snapshot of `fixture` the fake Compute APIs register.
pub fn snapshot(fixture: &str) -> String {
    format!("projects/prod/global/snapshots/{fixture}")
}

/// A fake QFlow receiver taking [`TOKEN`], and its port.
pub fn receiver() -> (FakeQflow, u16) {
    let q = FakeQflow::start(TOKEN);
    let port = q.addr().port();
    (q, port)
}

/// Stored uploads per job id.
pub fn stored_by_job(q: &FakeQflow) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for s in q.stored() {
        let job = s.fields.get("job_id").cloned().unwrap_or_default();
        *by.entry(job).or_insert(0) += 1;
    }
    by
}

/// A `source` assignment `id` of the snapshot of `fixture`.
pub fn by_snapshot(id: &str, fixture: &str) -> Value {
    json!({"id": id, "source": {"snapshot": snapshot(fixture)}, "labels": {"team": "sec"}})
}

/// Nothing the jobs made is left: no disk in the API, no attachment but the boot disk, no
/// loop device in the agent's view, only the boot disk in `instance/disks/`.
pub fn assert_nothing_left(h: &Harness) {
    let me = Identity::default().name;
    h.wait("every created disk deleted", 60, |h| {
        h.api().disk_names().is_empty()
    });
    assert_eq!(h.api().attached(&me), ["persistent-disk-0"]);
    assert!(h.gce().attached().is_empty(), "{:?}", h.gce().attached());
    assert_eq!(h.md.disks(), [Disk::boot("persistent-disk-0")]);
}

/// `snapscan <command>` (`launch` or `submit`) as [`launch`] runs it, with `envs` set.
pub fn launcher(
    h: &Harness,
    oauth: &FakeOauth,
    command: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Child {
    let key = oauth.key_file(h.dir.path()).expect("key file");
    let out = std::fs::File::create(h.dir.path().join("launch.out")).expect("stdout file");
    let err = std::fs::File::create(h.dir.path().join("launch.err")).expect("stderr file");
    Command::new(crate::snapscan_bin())
        .args([
            command,
            "--project",
            "scan-project",
            "--zone",
            "europe-west1-b",
        ])
        .args(["--compute-url", &h.api().url()])
        .args(args)
        .env("GOOGLE_APPLICATION_CREDENTIALS", key)
        .env("HOME", h.dir.path())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn snapscan")
}

/// Wait for `child` at most `secs`; its exit code and what it printed (stdout, stderr).
pub fn finish(h: &Harness, mut child: Child, secs: u64) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "snapscan did not end\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- agent log ---\n{}",
                std::fs::read_to_string(h.dir.path().join("launch.out")).unwrap_or_default(),
                std::fs::read_to_string(h.dir.path().join("launch.err")).unwrap_or_default(),
                h.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |f: &str| std::fs::read_to_string(h.dir.path().join(f)).unwrap_or_default();
    (status.code(), read("launch.out"), read("launch.err"))
}

/// The permissions of the README's `gcloud iam roles create ROLE ... --permissions=A,B,...`.
pub fn readme_role(role: &str) -> std::collections::BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README");
    let from = readme
        .find(&format!("gcloud iam roles create {role} "))
        .unwrap_or_else(|| panic!("the README creates no role {role}"));
    let list = readme[from..]
        .split("--permissions=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("role {role} has no --permissions"));
    list.split(',').map(str::to_owned).collect()
}
