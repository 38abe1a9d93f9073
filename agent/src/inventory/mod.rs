//! The built-in scanner: the packages installed on one OS root, read from the package managers'
//! own databases over a [`RootFs`], and written as a CycloneDX SBOM ([`cyclonedx`]).
//!
//! [`collect`] reads every database it finds on the volume, whatever the detected OS says:
//!
//! - dpkg ([`dpkg`]): `var/lib/dpkg/status`, and the per-package files of
//!   `var/lib/dpkg/status.d/` that distroless images have instead;
//! - apk ([`apk`]): `lib/apk/db/installed`;
//! - rpm ([`rpm`]): the sqlite `rpmdb.sqlite` or the BerkeleyDB `Packages` of
//!   `usr/lib/sysimage/rpm` and `var/lib/rpm`, by our own parsers (no librpm); the ndb
//!   `Packages.db` of some SUSE releases is only reported as unsupported, and a database
//!   directory without a database is a warning;
//! - Windows ([`windows`]): the `Uninstall` keys of the `SOFTWARE` hive, native and
//!   `WOW6432Node`.
//!
//! Databases come from an untrusted disk. Every file is read with a size cap; a missing database
//! is not an error, a damaged, oversized or unparsable one is a warning and the others are still
//! read. Only device errors ([`FsError::is_device_error`]: I/O, timeout) stop the inventory,
//! because then "absent" can no longer be told from "unreadable". Nothing from the disk is
//! executed; no package manager is run.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

pub mod apk;
pub mod cyclonedx;
pub mod dpkg;
pub mod rpm;
pub mod windows;

use serde::Serialize;

use crate::detect::OsInfo;
use crate::fs::{FsError, RootFs};

pub use cyclonedx::{sbom, SbomMeta};

/// The package ecosystem a [`Package`] comes from; it decides the purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    /// A Debian package (dpkg): Debian, Ubuntu and derivatives.
    Deb,
    /// An RPM package (rpm database).
    Rpm,
    /// An Alpine package (apk).
    Apk,
    /// A Windows program from the registry's `Uninstall` keys.
    Windows,
}

/// One installed package or program.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Package {
    /// Where it comes from (first, so that sorting groups ecosystems).
    pub ecosystem: Ecosystem,
    /// Package name (dpkg `Package`, apk `P:`, rpm `NAME`), or the Windows `DisplayName`.
    pub name: String,
    /// Version as the package manager writes it (dpkg with its epoch, `1:2.3-4`; rpm
    /// `[EPOCH:]VERSION-RELEASE`, `2:1.0-1.el9`), or the Windows `DisplayVersion`; `None` only
    /// for a Windows program that has none.
    pub version: Option<String>,
    /// Architecture as the package manager names it (`amd64`, `all`, `aarch64`); for Windows
    /// `x86_64` / `aarch64` for the native view and `x86` for `WOW6432Node`.
    pub arch: Option<String>,
    /// Source package name (dpkg `Source`, apk origin `o:`, the name in rpm's `SOURCERPM`),
    /// when the disk names one.
    pub source: Option<String>,
    /// Source package version, when it differs from the binary's (dpkg `Source: name (ver)`,
    /// rpm `SOURCERPM`'s `VERSION-RELEASE`).
    pub source_version: Option<String>,
    /// Windows `Publisher`, rpm `VENDOR`.
    pub publisher: Option<String>,
}

/// What [`collect`] found on one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// Installed packages, sorted and without duplicates.
    pub packages: Vec<Package>,
    /// The databases that were read, as absolute paths in the volume
    /// (`/var/lib/dpkg/status`, `/lib/apk/db/installed`...), in reading order.
    pub sources: Vec<String>,
    /// Problems that did not stop the inventory: a corrupt or oversized database, skipped
    /// entries, databases that are not supported (rpm ndb).
    pub warnings: Vec<String>,
}

/// Read every package database present on `fs`. `os` (the detected OS of this volume) gives the
/// Windows architecture of the native and `WOW6432Node` views.
///
/// # Errors
///
/// Device errors only ([`FsError::is_device_error`]); anything else wrong with a database is in
/// [`Inventory::warnings`].
pub fn collect(fs: &dyn RootFs, os: &OsInfo) -> Result<Inventory, FsError> {
    let mut inv = Inventory::default();
    dpkg::read(fs, &mut inv)?;
    apk::read(fs, &mut inv)?;
    rpm::read(fs, &mut inv)?;
    windows::read(fs, os, &mut inv)?;
    inv.packages.sort();
    inv.packages.dedup();
    Ok(inv)
}

/// Read one database file of at most `limit` bytes: `Ok(None)` when absent (no warning) or
/// unreadable for a reason that is the disk's (a warning in `inv`); device errors propagate.
pub(crate) fn read_db(
    fs: &dyn RootFs,
    path: &str,
    limit: u64,
    inv: &mut Inventory,
) -> Result<Option<Vec<u8>>, FsError> {
    match fs.read_file(path, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_device_error() => Err(e),
        Err(FsError::NotFound(_) | FsError::NotADirectory(_)) => Ok(None),
        Err(e) => {
            inv.warnings.push(format!("cannot read '{path}': {e}"));
            Ok(None)
        }
    }
}

/// The lines of a text database: lossily decoded, `\r\n` and `\n` both ending a line.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// `Some(trimmed)` unless empty.
pub(crate) fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::OsFamily;
    use crate::fs::memfs::{Failing, MemTree};
    use crate::fs::Rooted;

    const STATUS: &str = "Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\
                          Architecture: amd64\nSource: zlib\n\n\
                          Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n\
                          Architecture: amd64\n";

    fn linux() -> OsInfo {
        OsInfo::new(OsFamily::Linux, "debian")
    }

    #[test]
    fn collect_sorts_dedups_and_names_sources() {
        let fs = Rooted(
            MemTree::default()
                .file("/var/lib/dpkg/status", STATUS)
                // The same package again in status.d: one entry in the output.
                .file(
                    "/var/lib/dpkg/status.d/bash",
                    "Package: bash\nVersion: 5.2.15-2+b2\nArchitecture: amd64\n",
                ),
        );
        let inv = collect(&fs, &linux()).expect("collect");
        let names: Vec<_> = inv.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "zlib1g"]);
        assert_eq!(
            inv.sources,
            ["/var/lib/dpkg/status", "/var/lib/dpkg/status.d"]
        );
        assert_eq!(inv.warnings, Vec::<String>::new());
    }

    #[test]
    fn errors_and_warnings() {
        struct Case {
            name: &'static str,
            tree: MemTree,
            fail: Option<(&'static str, FsError)>,
            /// `Err(kind)`, or `Ok((packages, warnings))`.
            want: Result<(usize, usize), &'static str>,
        }
        let with_status = || MemTree::default().file("/var/lib/dpkg/status", STATUS);
        let cases = [
            Case {
                name: "empty volume",
                tree: MemTree::default(),
                fail: None,
                want: Ok((0, 0)),
            },
            Case {
                name: "io error on status stops",
                tree: with_status(),
                fail: Some(("/var/lib/dpkg/status", FsError::Io("sector 9".into()))),
                want: Err("io"),
            },
            Case {
                name: "timeout on apk db stops",
                tree: with_status(),
                fail: Some(("/lib/apk/db/installed", FsError::Timeout(30))),
                want: Err("timeout"),
            },
            Case {
                name: "io on the SOFTWARE hive stops",
                tree: with_status(),
                fail: Some((
                    crate::detect::windows::SOFTWARE_HIVE,
                    FsError::Io("x".into()),
                )),
                want: Err("io"),
            },
            Case {
                name: "corrupt status is a warning",
                tree: with_status(),
                fail: Some(("/var/lib/dpkg/status", FsError::Corrupt("extent".into()))),
                want: Ok((0, 1)),
            },
            Case {
                name: "status too large is a warning",
                tree: with_status(),
                fail: Some((
                    "/var/lib/dpkg/status",
                    FsError::TooLarge {
                        path: "/var/lib/dpkg/status".into(),
                        len: u64::MAX,
                        limit: dpkg::MAX_STATUS_LEN,
                    },
                )),
                want: Ok((0, 1)),
            },
            Case {
                name: "status is a directory",
                tree: MemTree::default().dir("/var/lib/dpkg/status"),
                fail: None,
                want: Ok((0, 1)),
            },
            Case {
                name: "empty rpm directory next to dpkg",
                tree: with_status().dir("/var/lib/rpm"),
                fail: None,
                want: Ok((2, 1)),
            },
            Case {
                name: "corrupt rpmdb.sqlite is a warning",
                tree: MemTree::default()
                    .dir("/var/lib/rpm")
                    .file("/usr/lib/sysimage/rpm/rpmdb.sqlite", "SQLite format 3\0"),
                fail: None,
                want: Ok((0, 1)),
            },
            Case {
                name: "rpm and dpkg packages together",
                tree: with_status().file(
                    "/var/lib/rpm/Packages",
                    rpm::bdb::tests::build(
                        false,
                        false,
                        4096,
                        &[(b"\x01\0\0\0", &rpm::header::sample("bash", None))],
                        1000,
                    ),
                ),
                fail: None,
                want: Ok((3, 0)),
            },
            Case {
                name: "io on the rpm probe stops",
                tree: with_status(),
                fail: Some(("/var/lib/rpm", FsError::Io("x".into()))),
                want: Err("io"),
            },
        ];
        for c in cases {
            let inner = Rooted(c.tree);
            let got = match c.fail {
                Some((path, error)) => collect(&Failing { inner, path, error }, &linux()),
                None => collect(&inner, &linux()),
            };
            let got = got
                .map(|inv| (inv.packages.len(), inv.warnings.len()))
                .map_err(|e| e.kind());
            assert_eq!(got, c.want, "case {}", c.name);
        }
    }
}
