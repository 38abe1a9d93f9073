//! `bench-hive`: what snapscan reads, and how fast, from a Windows disk whose registry hives have
//! real sizes (the `windows-real-hives` fixture: 126 MiB `SOFTWARE`, 20 MiB `SYSTEM`), next to
//! the small-hive `windows-server-2022` fixture, to show that bytes read and memory do not grow
//! with the hives. Per disk: inspection (partition table, probes, OS detection) and the
//! inventory of the Windows volume, each in a fresh process: median wall time over a few runs,
//! bytes read from the image, peak RSS. `bench-hive --write-hives DIR` writes the real-size
//! hives into DIR (for comparisons with other tools, see `scripts/bench-hive.sh`).

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context};
use snapscan_tests::hive::realistic;
use snapscan_tests::images;
use snapscan_tests::windows::WindowsFlavor;

/// Runs per measurement (the median is printed).
const RUNS: usize = 5;

/// One run's figures: wall time, bytes read, peak RSS.
struct Run {
    time: Duration,
    bytes: u64,
    rss_kib: u64,
}

/// The peak RSS of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// `--one inspect|inventory IMAGE`: measure once in this process and print `ms bytes rss_kib`.
fn one(what: &str, image: &Path) -> anyhow::Result<()> {
    let got = realistic::read_natively(image)?;
    let (time, bytes) = match what {
        "inspect" => (got.inspect_time, got.inspect_bytes),
        "inventory" => (got.inventory_time, got.inventory_bytes),
        other => bail!("unknown measurement {other:?}"),
    };
    println!("{} {bytes} {}", time.as_micros(), peak_rss_kib()?);
    Ok(())
}

/// Run `--one what image` in a fresh process.
fn measure(what: &str, image: &Path) -> anyhow::Result<Run> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--one", what])
        .arg(image)
        .output()?;
    if !out.status.success() {
        bail!("{what}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [us, bytes, rss_kib] = fields[..] else {
        bail!("{what}: unexpected output {text:?}");
    };
    Ok(Run {
        time: Duration::from_micros(us),
        bytes,
        rss_kib,
    })
}

/// The median run by wall time (bytes and RSS are the same in every run, or close).
fn median(what: &str, image: &Path) -> anyhow::Result<Run> {
    let mut runs = (0..RUNS)
        .map(|_| measure(what, image))
        .collect::<anyhow::Result<Vec<_>>>()?;
    runs.sort_by_key(|r| r.time);
    Ok(runs.swap_remove(RUNS / 2))
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, what, image] if flag == "--one" => return one(what, Path::new(image)),
        [flag, dir] if flag == "--write-hives" => {
            let dir = Path::new(dir);
            let flavor = WindowsFlavor::Server2022;
            realistic::software(flavor, realistic::FIXTURE_PROGRAMS, 110)
                .write(&dir.join("SOFTWARE"))?;
            return realistic::system(flavor, 20).write(&dir.join("SYSTEM"));
        }
        [] => {}
        _ => bail!("usage: bench-hive [--write-hives DIR]"),
    }
    println!(
        "{:<22} {:>10} {:>12} {:>9} {:>10} {:>12} {:>9}",
        "disk", "inspect ms", "inspect read", "RSS", "invent. ms", "invent. read", "RSS"
    );
    for name in ["windows-real-hives", "windows-server-2022"] {
        let image = images::image(name)?;
        let inspect = median("inspect", &image)?;
        let inventory = median("inventory", &image)?;
        let mib = |b: u64| format!("{:.2} MiB", b as f64 / f64::from(1 << 20));
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        println!(
            "{:<22} {:>10} {:>12} {:>9} {:>10} {:>12} {:>9}",
            name,
            ms(inspect.time),
            mib(inspect.bytes),
            mib(inspect.rss_kib * 1024),
            ms(inventory.time),
            mib(inventory.bytes),
            mib(inventory.rss_kib * 1024),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
