//! `metadata-server [--port P] [--disk NAME:MODE]... [--attribute KEY=VALUE]... [--log-requests]`:
//! run the fake GCE metadata server of the tests on its own, for the agent benchmark and for
//! poking at by hand (`GCE_METADATA_HOST=127.0.0.1:P`). Prints its URL on one line and serves
//! until killed. The boot disk `persistent-disk-0` is always attached; `MODE` is `ro` or `rw`.
//! Lines `KEY=VALUE` on stdin set attributes later (an empty value removes the attribute). With
//! `--log-requests`, each request answered is printed on stderr (`METHOD PATH STATUS`).

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use snapscan_tests::gce_metadata::{Disk, FakeMetadata};

const USAGE: &str =
    "usage: metadata-server [--port PORT] [--disk NAME:ro|rw]... [--attribute KEY=VALUE]...";

fn main() -> anyhow::Result<()> {
    let mut port = 0u16;
    let mut disks = vec![Disk::boot("persistent-disk-0")];
    let mut attributes = Vec::new();
    let mut log_requests = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse().context("bad --port")?,
            "--disk" => {
                let v = value()?;
                let index = u32::try_from(disks.len())?;
                disks.push(match v.rsplit_once(':') {
                    Some((name, "ro")) => Disk::read_only(name, index),
                    Some((name, "rw")) => Disk::read_write(name, index),
                    _ => bail!("bad --disk '{v}'\n{USAGE}"),
                });
            }
            "--attribute" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .with_context(|| format!("bad --attribute '{v}'"))?;
                attributes.push((k.to_owned(), val.to_owned()));
            }
            "--log-requests" => log_requests = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    let md = std::sync::Arc::new(FakeMetadata::start_on(([127, 0, 0, 1], port).into())?);
    md.set_disks(disks);
    for (k, v) in &attributes {
        md.set_attribute(k, v);
    }
    println!("{}", md.url());
    std::io::stdout().flush()?;
    if log_requests {
        let md = std::sync::Arc::clone(&md);
        std::thread::spawn(move || {
            let mut shown = 0;
            loop {
                let requests = md.requests();
                for r in requests.iter().skip(shown) {
                    eprintln!("{} {} {}", r.method, r.path_and_query, r.status);
                }
                shown = requests.len();
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        });
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        match line.split_once('=') {
            Some((k, "")) => md.remove_attribute(k.trim()),
            Some((k, v)) => md.set_attribute(k.trim(), v),
            None => eprintln!("ignored (KEY=VALUE expected): {line}"),
        }
    }
    // stdin closed: serve until killed.
    loop {
        std::thread::park();
    }
}
