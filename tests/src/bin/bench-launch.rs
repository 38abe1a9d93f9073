//! `bench-launch SNAPSCAN_BIN`: the launch benchmark (run by `scripts/bench-launch.sh`). One VM
//! with one disk, scanned the thin-launcher way through the fakes of the tests: `snapscan
//! launch --instance web-1 --wait --delete-snapshots` against the fake Compute API (credentials
//! from a key file, through the fake OAuth endpoint), the agent started once the scanner VM
//! exists (after `BOOT_SECS`, default 25, standing in for the guest's boot), results to the fake
//! QFlow receiver. Each operation stays `RUNNING` as long as it typically does on GCE (the
//! figures below, times `DELAY_SCALE`, default 1).
//!
//! Prints per run: launch to VM created, agent start to results acknowledged, launch to
//! acknowledged, launch to its exit (VM deleted by itself, snapshot deleted); then the agent's
//! own overhead per job: its start-to-acknowledged time minus the operation delays on that path
//! (`disks.insert`, `instances.attachDisk`) minus a one-shot `snapscan scan --upload` of the
//! same disk (the floor), and its CPU time and peak RSS. `RUNS` (default 3) runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use snapscan_tests::compute::FakeVm;
use snapscan_tests::gce::GceDisks;
use snapscan_tests::gce_metadata::Identity;
use snapscan_tests::images;
use snapscan_tests::oauth::FakeOauth;
use snapscan_tests::qflow::FakeQflow;

/// Typical GCE operation times (a 10 GB pd-balanced disk, seconds from the call to `DONE`): a
/// first snapshot is the slow step; instances.delete includes the guest's shutdown.
const GCE_DELAYS: [(&str, f64); 8] = [
    ("disks.createSnapshot", 30.0),
    ("instances.insert", 12.0),
    ("disks.insert", 8.0),
    ("instances.attachDisk", 4.0),
    ("instances.detachDisk", 4.0),
    ("disks.delete", 3.0),
    ("instances.delete", 40.0),
    ("snapshots.delete", 5.0),
];

const TOKEN: &str = "bench-launch-token";

struct Figures {
    created: Duration,
    agent_to_ack: Duration,
    to_ack: Duration,
    to_exit: Duration,
    cpu_secs: f64,
    rss_kib: u64,
}

fn main() -> anyhow::Result<()> {
    let bin = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: bench-launch SNAPSCAN_BIN")?,
    );
    let scale = snapscan_tests::env_f64("DELAY_SCALE", 1.0)?;
    let boot = Duration::from_secs_f64(snapscan_tests::env_f64("BOOT_SECS", 25.0)?);
    let runs = snapscan_tests::env_f64("RUNS", 3.0)? as usize;
    let image = images::image("debian-ext4-gpt")?;
    let delays: Vec<(&str, Duration)> = GCE_DELAYS
        .iter()
        .map(|(c, s)| (*c, Duration::from_secs_f64(s * scale)))
        .collect();
    println!("== snapscan launch: one VM, one disk (debian-ext4-gpt), {runs} runs");
    println!(
        "operation delays: {}; boot {:.0} s",
        delays
            .iter()
            .map(|(c, d)| format!("{c} {:.1} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        boot.as_secs_f64()
    );
    let mut all = Vec::new();
    for i in 1..=runs {
        let f = once(&bin, &image, &delays, boot)?;
        println!(
            "run {i}: launch->VM created {:.1} s; agent start->acknowledged {:.1} s; \
             launch->acknowledged {:.1} s; launch->exit {:.1} s; agent CPU {:.2} s, peak RSS \
             {:.1} MiB",
            f.created.as_secs_f64(),
            f.agent_to_ack.as_secs_f64(),
            f.to_ack.as_secs_f64(),
            f.to_exit.as_secs_f64(),
            f.cpu_secs,
            f.rss_kib as f64 / 1024.0
        );
        all.push(f);
    }
    let floor = floor(&bin, &image)?;
    let on_path: Duration = delays
        .iter()
        .filter(|(c, _)| matches!(*c, "disks.insert" | "instances.attachDisk"))
        .map(|(_, d)| *d)
        .sum();
    let median = |f: &dyn Fn(&Figures) -> f64| {
        let mut v: Vec<f64> = all.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let agent = median(&|f| f.agent_to_ack.as_secs_f64());
    println!(
        "median: launch->acknowledged {:.1} s, launch->exit {:.1} s",
        median(&|f| f.to_ack.as_secs_f64()),
        median(&|f| f.to_exit.as_secs_f64())
    );
    println!(
        "floor: snapscan scan --upload of the same disk {:.2} s",
        floor.as_secs_f64()
    );
    println!(
        "agent overhead per job: {:.2} s (start->acknowledged {agent:.2} s - operations {:.1} s - \
         floor {:.2} s); CPU {:.2} s, peak RSS {:.1} MiB",
        agent - on_path.as_secs_f64() - floor.as_secs_f64(),
        on_path.as_secs_f64(),
        floor.as_secs_f64(),
        median(&|f| f.cpu_secs),
        median(&|f| f.rss_kib as f64) / 1024.0
    );
    Ok(())
}

/// One launch, end to end.
fn once(
    bin: &Path,
    image: &Path,
    delays: &[(&str, Duration)],
    boot: Duration,
) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let id = Identity::default();
    let zone = id.zone.rsplit('/').next().unwrap_or_default().to_owned();
    let FakeVm { md, gce, api } = FakeVm::start()?;
    // The scanner VM does not exist before the launch creates it.
    api.remove_instance(&id.name);
    for (call, d) in delays {
        api.set_call_delay(call, *d);
    }
    api.add_snapshot("projects/prod/global/snapshots/base", image.to_path_buf());
    api.add_instance("web-1", "4242");
    api.add_disk("web-1-boot", "projects/prod/global/snapshots/base", &[]);
    let q = FakeQflow::start(TOKEN);
    let oauth = FakeOauth::start(md.handle());
    let key = oauth.key_file(dir.path())?;

    let t0 = Instant::now();
    let mut launch = Command::new(bin)
        .args(["launch", "--project", &id.project, "--zone", &zone])
        .args([
            "--compute-url",
            &api.url(),
            "--instance",
            "web-1",
            "--name",
            &id.name,
        ])
        .args([
            "--service-account",
            "scanner@scan-project.iam.gserviceaccount.com",
        ])
        .args(["--wait", "--poll-secs", "2", "--delete-snapshots"])
        .env("GOOGLE_APPLICATION_CREDENTIALS", &key)
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("launch.err"))?)
        .spawn()?;
    let created = wait_for(t0, 600, &mut launch, || !api.attached(&id.name).is_empty())?;
    std::thread::sleep(boot);
    let config = agent_config(dir.path(), &md.url(), &q.url(), &api.url(), &gce)?;
    let started = Instant::now();
    let mut agent = Command::new(bin)
        .args(["agent", "--config"])
        .arg(&config)
        .env("QFLOW_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log"))?)
        .spawn()?;
    let acked = wait_for(t0, 600, &mut launch, || !q.stored().is_empty()).inspect_err(|_| {
        let _ = agent.kill();
    })?;
    let agent_to_ack = t0 + acked - started;
    let status = loop {
        if let Some(s) = launch.try_wait()? {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            let _ = launch.kill();
            bail!("snapscan launch did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let to_exit = t0.elapsed();
    let (cpu_secs, rss_kib) = usage(agent.id());
    let _ = agent.kill();
    let _ = agent.wait();
    if !status.success() {
        bail!(
            "snapscan launch: {status}\n{}",
            std::fs::read_to_string(dir.path().join("launch.err")).unwrap_or_default()
        );
    }
    Ok(Figures {
        created,
        agent_to_ack,
        to_ack: acked,
        to_exit,
        cpu_secs,
        rss_kib,
    })
}

/// Wait (from `t0`, at most `secs`) until `cond`; the time it took. A launch that ends first is
/// an error.
fn wait_for(
    t0: Instant,
    secs: u64,
    launch: &mut Child,
    cond: impl Fn() -> bool,
) -> anyhow::Result<Duration> {
    while !cond() {
        if let Some(status) = launch.try_wait()? {
            bail!("snapscan launch ended early: {status}");
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            bail!("timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t0.elapsed())
}

/// CPU seconds (user + system) and peak RSS (KiB) of a live process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

fn agent_config(
    dir: &Path,
    metadata: &str,
    qflow: &str,
    compute: &str,
    gce: &Mutex<GceDisks>,
) -> anyhow::Result<PathBuf> {
    let (by_id, sys) = {
        let g = gce
            .lock()
            .map_err(|_| anyhow::anyhow!("gce disks poisoned"))?;
        (g.by_id_dir(), g.sys_dir())
    };
    let text = format!(
        "[agent]\nstate_dir = \"{state}\"\nby_id_dir = \"{by_id}\"\nsys_dir = \"{sys}\"\n\
         idle_grace_secs = 1\n\
         [metadata]\nurl = \"{metadata}\"\n\
         [scan]\nwork_dir = \"{work}\"\n\
         [upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"{qflow}\"\ntoken_env = \"QFLOW_TOKEN\"\n\
         [compute]\nurl = \"{compute}\"\n",
        state = dir.join("state").display(),
        by_id = by_id.display(),
        sys = sys.display(),
        work = dir.join("work").display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A one-shot `snapscan scan --upload` of `image` to a fresh receiver: the floor.
fn floor(bin: &Path, image: &Path) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let q = FakeQflow::start(TOKEN);
    let config = dir.path().join("scan.toml");
    std::fs::write(
        &config,
        format!(
            "[upload]\nsink = \"qflow\"\n[upload.qflow]\nurl = \"{}\"\ntoken_env = \"QFLOW_TOKEN\"\n",
            q.url()
        ),
    )?;
    let t = Instant::now();
    let status = Command::new(bin)
        .arg("scan")
        .arg("--config")
        .arg(&config)
        .arg("--output")
        .arg(dir.path().join("out"))
        .args(["--upload", &q.url(), "--snapshot", "floor"])
        .arg(image)
        .env("QFLOW_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let took = t.elapsed();
    if !status.success() || q.stored().is_empty() {
        bail!("snapscan scan --upload: {status}");
    }
    Ok(took)
}
