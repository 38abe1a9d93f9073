//! `bench-queue SNAPSCAN_BIN`: the work-queue benchmark (run by `scripts/bench-queue.sh`).
//! `REQUESTS` (default 12) scan requests of the Debian fixtures (`debian-ext4-gpt`,
//! `debian-lvm`, alternating) published to the real Pub/Sub emulator and worked by 1, then 3
//! agent processes sharing one subscription, each with its own fake VM (metadata server, Compute
//! API making and attaching real loop devices, state) and `max_concurrent_jobs = 2`, results to
//! one fake QFlow receiver; then the same requests as metadata `source` assignments of one agent
//! (the metadata-assignment path, the same disks and Compute API). Each Compute operation stays
//! `RUNNING` for its typical GCE time times `DELAY_SCALE` (default 0.25).
//!
//! Prints per run: requests per minute (first publish, or the assignment, to the last result),
//! the median and slowest publish->result-message time, messages per job (requests, results and
//! duplicates the agents published), the agents' Pub/Sub and Compute API calls per job, and
//! that every request was stored exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use snapscan_tests::compute::{FakeCompute, FakeVm};
use snapscan_tests::gce::GceDisks;
use snapscan_tests::gce_metadata::FakeMetadata;
use snapscan_tests::images;
use snapscan_tests::pubsub::Emulator;
use snapscan_tests::qflow::FakeQflow;

/// Typical GCE operation times (seconds) on a job's path.
const GCE_DELAYS: [(&str, f64); 4] = [
    ("disks.insert", 8.0),
    ("instances.attachDisk", 4.0),
    ("instances.detachDisk", 4.0),
    ("disks.delete", 3.0),
];

const FIXTURES: [&str; 2] = ["debian-ext4-gpt", "debian-lvm"];

const TOKEN: &str = "bench-queue-token";

/// One agent with its fake VM.
struct Vm {
    dir: tempfile::TempDir,
    md: FakeMetadata,
    api: FakeCompute,
    _gce: Arc<Mutex<GceDisks>>,
    agent: Child,
}

impl Vm {
    fn start(
        bin: &Path,
        delays: &[(&str, Duration)],
        qflow: &str,
        queue: &str,
    ) -> anyhow::Result<Vm> {
        let dir = tempfile::tempdir()?;
        let FakeVm { md, gce, api } = FakeVm::start()?;
        for (call, d) in delays {
            api.set_call_delay(call, *d);
        }
        for f in FIXTURES {
            api.add_snapshot(&snapshot(f), images::image(f)?);
        }
        let (by_id, sys) = {
            let g = gce
                .lock()
                .map_err(|_| anyhow::anyhow!("gce disks poisoned"))?;
            (g.by_id_dir(), g.sys_dir())
        };
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = \"{state}\"\nby_id_dir = \"{by_id}\"\nsys_dir = \"{sys}\"\n\
                 max_concurrent_jobs = 2\nlog = \"snapscan::gapi=debug,info\"\n\
                 [metadata]\nurl = \"{metadata}\"\n\
                 [scan]\nwork_dir = \"{work}\"\n\
                 [upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"{qflow}\"\ntoken_env = \"QFLOW_TOKEN\"\n\
                 [compute]\nurl = \"{compute}\"\n{queue}",
                state = dir.path().join("state").display(),
                by_id = by_id.display(),
                sys = sys.display(),
                metadata = md.url(),
                work = dir.path().join("work").display(),
                compute = api.url(),
            ),
        )?;
        let agent = Command::new(bin)
            .args(["agent", "--config"])
            .arg(&config)
            .env("QFLOW_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log"))?)
            .spawn()?;
        Ok(Vm {
            dir,
            md,
            api,
            _gce: gce,
            agent,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Calls the agent made to `api` (`Pub/Sub`), from its debug log.
    fn calls(&self, api: &str) -> usize {
        let field = format!("api=\"{api}\"");
        self.log().lines().filter(|l| l.contains(&field)).count()
    }

    /// Wait until every disk the agent made is deleted (its last Compute calls).
    fn released(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.api.disk_names().is_empty() {
            if Instant::now() > deadline {
                bail!("disks left: {:?}", self.api.disk_names());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.agent.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while matches!(self.agent.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn snapshot(fixture: &str) -> String {
    format!("projects/prod/global/snapshots/{fixture}")
}

fn request(id: &str, i: usize) -> Value {
    json!({"id": id, "source": {"snapshot": snapshot(FIXTURES[i % FIXTURES.len()])}})
}

/// What one run measured.
struct Figures {
    per_minute: f64,
    median: Option<Duration>,
    slowest: Option<Duration>,
    messages_per_job: Option<f64>,
    pubsub_per_job: f64,
    compute_per_job: f64,
}

fn main() -> anyhow::Result<()> {
    let bin = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: bench-queue SNAPSCAN_BIN")?,
    );
    let scale = snapscan_tests::env_f64("DELAY_SCALE", 0.25)?;
    let requests = snapscan_tests::env_f64("REQUESTS", 12.0)? as usize;
    let delays: Vec<(&str, Duration)> = GCE_DELAYS
        .iter()
        .map(|(c, s)| (*c, Duration::from_secs_f64(s * scale)))
        .collect();
    println!(
        "== work queue: {requests} requests ({}), 2 job slots per agent",
        FIXTURES.join(", ")
    );
    println!(
        "operation delays: {}",
        delays
            .iter()
            .map(|(c, d)| format!("{c} {:.1} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let emu = Emulator::start()?;
    let mut lines = Vec::new();
    for agents in [1, 3] {
        let f = queued(&bin, &emu, agents, requests, &delays)?;
        lines.push((format!("queue, {agents} agent(s)"), f));
    }
    let f = assigned(&bin, requests, &delays)?;
    lines.push(("metadata assignments, 1 agent".to_owned(), f));
    for (what, f) in &lines {
        let secs =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "{what}: {:.1} requests/min; publish->result median {}, slowest {}; messages/job {}; \
             API calls/job: Pub/Sub {:.1}, Compute {:.1}",
            f.per_minute,
            secs(f.median),
            secs(f.slowest),
            f.messages_per_job
                .map_or("-".to_owned(), |m| format!("{m:.2}")),
            f.pubsub_per_job,
            f.compute_per_job,
        );
    }
    Ok(())
}

/// `requests` requests through `agents` queued agents.
fn queued(
    bin: &Path,
    emu: &Emulator,
    agents: usize,
    requests: usize,
    delays: &[(&str, Duration)],
) -> anyhow::Result<Figures> {
    let topic = format!("projects/bench/topics/work-{agents}");
    let sub = format!("projects/bench/subscriptions/work-{agents}");
    let results = format!("projects/bench/topics/results-{agents}");
    let results_sub = format!("projects/bench/subscriptions/results-{agents}");
    emu.create_topic(&topic)?;
    emu.create_subscription(&sub, &topic, 60)?;
    emu.create_topic(&results)?;
    emu.create_subscription(&results_sub, &results, 60)?;
    let q = FakeQflow::start(TOKEN);
    let queue = format!(
        "[queue]\nsubscription = \"{sub}\"\nresults_topic = \"{results}\"\nurl = \"{}\"\n",
        emu.url()
    );
    let vms: Vec<Vm> = (0..agents)
        .map(|_| Vm::start(bin, delays, &q.url(), &queue))
        .collect::<anyhow::Result<_>>()?;
    let ready = Instant::now() + Duration::from_secs(30);
    while !vms
        .iter()
        .all(|v| v.log().contains("pulling scan requests"))
    {
        if Instant::now() > ready {
            bail!("the agents did not start:\n{}", vms[0].log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t0 = Instant::now();
    let mut published = BTreeMap::new();
    for i in 0..requests {
        let id = format!("q{agents}-{i:03}");
        emu.publish(&topic, &request(&id, i).to_string(), &[])?;
        published.insert(id, t0.elapsed());
    }
    let mut arrived: BTreeMap<String, Duration> = BTreeMap::new();
    let mut messages = 0usize;
    let deadline = Instant::now() + Duration::from_secs(900);
    while arrived.len() < requests {
        for m in emu.pull_now(&results_sub, 100, true)? {
            messages += 1;
            if let Some(id) = m["data"]["request_id"].as_str() {
                if m["data"]["state"] != "done" {
                    bail!("{id}: {}", m["data"]);
                }
                arrived.entry(id.to_owned()).or_insert_with(|| t0.elapsed());
            }
        }
        if Instant::now() > deadline {
            bail!("{}/{requests} results after 900 s", arrived.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = arrived.values().max().copied().unwrap_or_default();
    let mut latencies: Vec<Duration> = arrived
        .iter()
        .map(|(id, at)| at.saturating_sub(published.get(id).copied().unwrap_or_default()))
        .collect();
    latencies.sort();
    check_stored(&q, requests)?;
    for v in &vms {
        v.released()?;
    }
    let pubsub: usize = vms.iter().map(|v| v.calls("Pub/Sub")).sum();
    let compute: usize = vms.iter().map(|v| v.api.requests().len()).sum();
    for v in vms {
        v.stop();
    }
    Ok(Figures {
        per_minute: requests as f64 / total.as_secs_f64() * 60.0,
        median: latencies.get(latencies.len() / 2).copied(),
        slowest: latencies.last().copied(),
        // Each request's message, and the result messages the agents published.
        messages_per_job: Some((requests + messages) as f64 / requests as f64),
        pubsub_per_job: pubsub as f64 / requests as f64,
        compute_per_job: compute as f64 / requests as f64,
    })
}

/// The same requests as `source` assignments of one agent's metadata.
fn assigned(bin: &Path, requests: usize, delays: &[(&str, Duration)]) -> anyhow::Result<Figures> {
    let q = FakeQflow::start(TOKEN);
    let vm = Vm::start(bin, delays, &q.url(), "")?;
    let ready = Instant::now() + Duration::from_secs(30);
    while !vm.log().contains("watching for assignments") && !vm.log().contains("metadata server at")
    {
        if Instant::now() > ready {
            bail!("the agent did not start:\n{}", vm.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let list: Vec<Value> = (0..requests)
        .map(|i| request(&format!("a-{i:03}"), i))
        .collect();
    let t0 = Instant::now();
    vm.md
        .set_attribute("snapscan-assignments", &Value::Array(list).to_string());
    let deadline = Instant::now() + Duration::from_secs(900);
    while q.stored().len() < requests {
        if Instant::now() > deadline {
            bail!(
                "{}/{requests} stored after 900 s\n{}",
                q.stored().len(),
                vm.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let total = t0.elapsed();
    check_stored(&q, requests)?;
    vm.released()?;
    let compute = vm.api.requests().len();
    vm.stop();
    Ok(Figures {
        per_minute: requests as f64 / total.as_secs_f64() * 60.0,
        median: None,
        slowest: None,
        messages_per_job: None,
        pubsub_per_job: 0.0,
        compute_per_job: compute as f64 / requests as f64,
    })
}

/// Every job stored exactly once.
fn check_stored(q: &FakeQflow, requests: usize) -> anyhow::Result<()> {
    let by = snapscan_tests::agent::stored_by_job(q);
    if by.len() != requests || by.values().any(|n| *n != 1) {
        bail!("stored: {by:?}");
    }
    Ok(())
}
