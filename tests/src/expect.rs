//! What the end-to-end tests compare snapscan against, computed by independent tools: the
//! packages `dpkg-query` lists in the cached Debian tree, and image hashes by `sha256sum`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::images::cmd::{run, tool};

/// `(name, version, architecture)` of a package.
pub type Triple = (String, String, String);

/// SHA-256 of a file, hex, by `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let out = run(tool("sha256sum").arg(path), None).expect("sha256sum");
    out.split_whitespace().next().expect("a hash").to_owned()
}

/// The installed packages of the cached Debian tree (the one every Debian fixture holds), as
/// `dpkg-query` lists them. Needs root (the tree is built by debootstrap).
pub fn debian_packages() -> BTreeSet<Triple> {
    let root = crate::images::debian_root().expect("debian root");
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args([
            "-W",
            "-f",
            "${db:Status-Abbrev}|${Package}|${Version}|${Architecture}\n",
        ])
        .output()
        .expect("run dpkg-query");
    assert!(
        out.status.success(),
        "dpkg-query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeSet<Triple> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            let status = f.next()?;
            let t = (f.next()?.into(), f.next()?.into(), f.next()?.into());
            status.starts_with("ii").then_some(t)
        })
        .collect();
    assert!(
        want.len() > 80,
        "only {} packages from dpkg-query",
        want.len()
    );
    want
}

/// `(name, version, arch)` of every component of an SBOM, from its purl.
#[must_use]
pub fn sbom_triples(bom: &serde_json::Value) -> BTreeSet<Triple> {
    bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            let purl = c["purl"].as_str().unwrap_or_default();
            let arch = purl
                .split(['?', '&'])
                .find_map(|q| q.strip_prefix("arch="))
                .unwrap_or_default();
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["version"].as_str().unwrap_or_default().to_owned(),
                arch.to_owned(),
            )
        })
        .collect()
}
