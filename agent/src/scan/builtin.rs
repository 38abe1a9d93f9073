//! The built-in scanner in the pipeline: the package inventory of the OS root, through whichever
//! [`RootFs`](crate::fs::RootFs) reached it, written as `<name>.cdx.json`.
//!
//! The inventory itself (which databases, how they are parsed) is [`crate::inventory`]; this
//! module only picks the view, bounds the time, looks for a policy's forbidden files on the same
//! view, and writes the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::access::Root;
use crate::detect::OsInfo;
use crate::disk::reader::Budget;
use crate::fs::{self, contain, host::HostTree, RootFs, Rooted};
use crate::inventory::{self, Inventory, SbomMeta};
use crate::policy;

/// Read the inventory of `root` within `timeout`, and find the files matching `forbidden`
/// (a policy's patterns, [`policy::find_files`]) on it.
///
/// # Errors
///
/// A device error, a timeout, or a parser panic (contained).
pub fn collect(
    root: &Root,
    timeout: Duration,
    forbidden: Vec<String>,
) -> anyhow::Result<(Inventory, Vec<String>)> {
    let os = root.os().clone();
    let read = move |fs: &dyn RootFs| {
        let inv = inventory::collect(fs, &os)?;
        Ok((inv, policy::find_files(fs, &forbidden)?))
    };
    let result = match root {
        Root::Kernel { path, .. } => {
            let path = path.clone();
            contain::run(&Budget::new(u64::MAX), timeout, move || {
                read(&Rooted(HostTree::new(path)))
            })
        }
        Root::Native { kind, volume, .. } => fs::with_native(*kind, volume, timeout, read)
            .context("no native reader for this filesystem")?,
    };
    result.context("cannot read the package databases")
}

/// Write the SBOM of `inv` to `dir/<name>.cdx.json`; returns its path.
///
/// # Errors
///
/// The file cannot be written.
pub fn write_sbom(
    dir: &Path,
    name: &str,
    inv: &Inventory,
    os: &OsInfo,
    subject: &str,
    timestamp: &str,
) -> anyhow::Result<PathBuf> {
    let meta = SbomMeta {
        serial_number: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        timestamp: timestamp.to_owned(),
        subject: subject.to_owned(),
    };
    let bom = inventory::sbom(inv, os, &meta);
    let path = dir.join(format!("{name}.cdx.json"));
    let json = serde_json::to_vec_pretty(&bom).context("cannot encode the SBOM")?;
    super::write_atomic(&path, &json)?;
    Ok(path)
}
