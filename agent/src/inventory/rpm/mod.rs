//! rpm: the installed packages of RHEL, CentOS, Rocky, Alma, Fedora, Amazon Linux, SUSE and
//! their derivatives, read from the rpm database without librpm.
//!
//! rpm keeps one database directory, `usr/lib/sysimage/rpm` (Fedora ≥ 36, SUSE) or `var/lib/rpm`
//! (RHEL, older Fedora and SUSE; on newer systems often a symlink to the first). In each of
//! these ([`DIRS`]) the first database present is read, in rpm's own order of preference:
//!
//! 1. `rpmdb.sqlite` ([`sqlite`]), with its `-wal` file;
//! 2. `Packages`, BerkeleyDB hash (or btree) ([`bdb`]): RHEL 7/8, SLES 12/15 before SP4;
//! 3. `Packages.db` (ndb, SUSE): **not read**, a warning says so.
//!
//! Each file is read with a cap of [`MAX_DB_LEN`] (the largest real rpm databases are a few
//! hundred MiB of BerkeleyDB on systems with thousands of packages). A database whose bytes
//! equal one already read (the second directory is a symlink to the first) is not read again.
//! Every value is an rpm header blob ([`header`]); each gives one package: `NAME`,
//! `[EPOCH:]VERSION-RELEASE` (the epoch only when the header has one, as `rpm -q --qf
//! '%{EVR}'` prints it), `ARCH`, the source package's name (and its `VERSION-RELEASE` when it
//! differs from the binary's) from `SOURCERPM`, and `VENDOR` as the publisher.
//!
//! **`gpg-pubkey` entries are left out**: they are the imported signing keys that rpm lists as
//! pseudo-packages, not software (Syft and Trivy skip them too). Headers that cannot be parsed
//! and damaged database records are skipped and counted in one warning per database. A
//! database directory with no database in it, when no rpm database was read at all, is a
//! warning too, so an empty package list is never mistaken for "nothing installed".
//!
//! Not read: file lists, dependencies, signatures, the index databases (`Name`, `Basenames`...),
//! which rpm rebuilds from the headers, and rpm transactions left unfinished in a BerkeleyDB log.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

pub mod bdb;
pub mod header;
pub mod sqlite;

use sha2::{Digest, Sha256};

use super::{read_db, Ecosystem, Inventory, Package};
use crate::fs::{FileType, FsError, RootFs};

/// The rpm database directories, in the order they are read.
pub const DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];
/// Largest database file read (and largest `-wal` file).
pub const MAX_DB_LEN: u64 = 512 * 1024 * 1024;
/// The name of rpm's signing-key pseudo-packages, left out of the inventory.
pub const GPG_PUBKEY: &str = "gpg-pubkey";

/// What [`packages`] made of a set of header blobs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// One package per readable header, `gpg-pubkey` excluded, in blob order.
    pub packages: Vec<Package>,
    /// Headers that could not be parsed: how many, and the first error.
    pub bad: usize,
    /// The first parse error, for the warning.
    pub first_error: Option<header::HeaderError>,
}

/// Turn header blobs into packages.
pub fn packages<B: AsRef<[u8]>>(blobs: &[B]) -> Parsed {
    let mut out = Parsed::default();
    for blob in blobs {
        match header::parse(blob.as_ref()) {
            Ok(h) if h.name == GPG_PUBKEY => {}
            Ok(h) => out.packages.push(package(h)),
            Err(e) => {
                out.bad = out.bad.saturating_add(1);
                out.first_error.get_or_insert(e);
            }
        }
    }
    out
}

/// One header as a package.
pub fn package(h: header::Header) -> Package {
    let evr = h.evr();
    let vr = format!("{}-{}", h.version, h.release);
    let (source, source_version) = match h.source_rpm.as_deref().and_then(split_source_rpm) {
        Some((name, src_vr)) => {
            let differs = src_vr != vr;
            (Some(name.to_owned()), differs.then(|| src_vr.to_owned()))
        }
        None => (None, None),
    };
    Package {
        ecosystem: Ecosystem::Rpm,
        name: h.name,
        version: Some(evr),
        arch: h.arch,
        source,
        source_version,
        publisher: h.vendor,
    }
}

/// `glibc-2.34-60.el9.src.rpm` → (`glibc`, `2.34-60.el9`); `None` unless it has that shape.
pub fn split_source_rpm(file: &str) -> Option<(&str, &str)> {
    let nvr = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (nv, release) = nvr.rsplit_once('-')?;
    let (name, version) = nv.rsplit_once('-')?;
    if [name, version, release].iter().any(|s| s.is_empty()) {
        return None;
    }
    // `nvr` minus the name and its dash: "VERSION-RELEASE".
    let vr = nvr.get(name.len().saturating_add(1)..)?;
    Some((name, vr))
}

/// Read the rpm databases of `fs` into `inv`.
pub(crate) fn read(fs: &dyn RootFs, inv: &mut Inventory) -> Result<(), FsError> {
    let mut digests: Vec<Vec<u8>> = Vec::new();
    let mut read_any = false;
    let mut empty_dirs = Vec::new();
    for dir in DIRS {
        let sqlite_path = format!("{dir}/rpmdb.sqlite");
        let (db, present) = read_present(fs, &sqlite_path, inv)?;
        read_any |= present;
        if let Some(db) = db {
            let wal = read_db(fs, &format!("{sqlite_path}-wal"), MAX_DB_LEN, inv)?;
            if !first_time(&mut digests, &[&db, wal.as_deref().unwrap_or_default()]) {
                continue;
            }
            match sqlite::blobs(&db, wal.as_deref()) {
                Ok(rows) => {
                    if rows.bad_rows > 0 {
                        inv.warnings.push(format!(
                            "'{sqlite_path}': {} row(s) without a usable header blob skipped",
                            rows.bad_rows
                        ));
                    }
                    add(inv, &sqlite_path, packages(&rows.blobs));
                    inv.sources.push(sqlite_path);
                }
                Err(e) => inv.warnings.push(format!("'{sqlite_path}': {e:#}")),
            }
            continue;
        }
        if present {
            // There, but unreadable (already a warning): rpm would not look further either.
            continue;
        }
        let bdb_path = format!("{dir}/Packages");
        let (db, present) = read_present(fs, &bdb_path, inv)?;
        read_any |= present;
        if present && db.is_none() {
            continue;
        }
        if let Some(db) = db {
            if !first_time(&mut digests, &[&db]) {
                continue;
            }
            match bdb::values(&db) {
                Ok(values) => {
                    if let Some(first) = values.errors.first() {
                        inv.warnings.push(format!(
                            "'{bdb_path}': {} damaged record(s) skipped (first: {first})",
                            values.errors.len()
                        ));
                    }
                    add(inv, &bdb_path, packages(&values.values));
                    inv.sources.push(bdb_path);
                }
                Err(e) => inv.warnings.push(format!(
                    "'{bdb_path}': cannot read the BerkeleyDB file: {e}"
                )),
            }
            continue;
        }
        let ndb_path = format!("{dir}/Packages.db");
        match fs.metadata(&ndb_path) {
            Ok(_) => {
                read_any = true;
                inv.warnings.push(format!(
                    "'{ndb_path}': ndb rpm databases are not supported: its packages are \
                     missing from this inventory"
                ));
                continue;
            }
            Err(e) if e.is_device_error() => return Err(e),
            Err(_) => {}
        }
        match fs.metadata(dir) {
            Ok(md) if md.file_type == FileType::Dir => empty_dirs.push(dir),
            Ok(_) => {}
            Err(e) if e.is_device_error() => return Err(e),
            Err(_) => {}
        }
    }
    if !read_any {
        for dir in empty_dirs {
            inv.warnings.push(format!(
                "rpm database directory '{dir}' holds no rpm database (rpmdb.sqlite, Packages, \
                 Packages.db): no rpm packages listed"
            ));
        }
    }
    Ok(())
}

/// [`read_db`] at [`MAX_DB_LEN`], also saying whether the file is there: `(None, true)` when
/// it is but could not be read (the reason is then the last warning).
fn read_present(
    fs: &dyn RootFs,
    path: &str,
    inv: &mut Inventory,
) -> Result<(Option<Vec<u8>>, bool), FsError> {
    let warnings = inv.warnings.len();
    let db = read_db(fs, path, MAX_DB_LEN, inv)?;
    let present = db.is_some() || inv.warnings.len() > warnings;
    Ok((db, present))
}

/// Whether the database made of `parts` has not been read yet (remembering it if so).
fn first_time(digests: &mut Vec<Vec<u8>>, parts: &[&[u8]]) -> bool {
    let mut h = Sha256::new();
    for p in parts {
        h.update(u64::try_from(p.len()).unwrap_or(u64::MAX).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize().to_vec();
    if digests.contains(&d) {
        return false;
    }
    digests.push(d);
    true
}

/// Add what one database gave, with a warning for its unreadable headers.
fn add(inv: &mut Inventory, path: &str, parsed: Parsed) {
    if let Some(e) = &parsed.first_error {
        inv.warnings.push(format!(
            "'{path}': {} unreadable package header(s) skipped (first: {e})",
            parsed.bad
        ));
    }
    inv.packages.extend(parsed.packages);
}

#[cfg(test)]
mod tests {
    use super::header::sample;
    use super::*;
    use crate::fs::memfs::{Failing, MemTree};
    use crate::fs::Rooted;

    #[test]
    fn split_source_rpm_table() {
        let cases = [
            (
                "plain",
                "glibc-2.34-60.el9.src.rpm",
                Some(("glibc", "2.34-60.el9")),
            ),
            (
                "dashes in the name",
                "python-dateutil-2.8.1-7.el9.src.rpm",
                Some(("python-dateutil", "2.8.1-7.el9")),
            ),
            ("nosrc", "foo-1-2.nosrc.rpm", Some(("foo", "1-2"))),
            ("no suffix", "foo-1-2", None),
            ("too few parts", "foo-1.src.rpm", None),
            ("empty name", "-1-2.src.rpm", None),
            ("empty", "", None),
        ];
        for (name, file, want) in cases {
            assert_eq!(split_source_rpm(file), want, "case {name}");
        }
    }

    #[test]
    fn package_fields() {
        let mut h = header::parse(&sample("bash", Some(1))).expect("parse");
        let p = package(h.clone());
        assert_eq!(p.version.as_deref(), Some("1:1.2.3-4.el9"));
        assert_eq!(p.source.as_deref(), Some("bash-src"));
        assert_eq!(p.source_version, None, "same version-release as the binary");
        assert_eq!(p.publisher.as_deref(), Some("Acme"));
        h.source_rpm = Some("bash-src-1.2.3-5.el9.src.rpm".into());
        assert_eq!(package(h).source_version.as_deref(), Some("1.2.3-5.el9"));
    }

    /// A BerkeleyDB hash `Packages` holding `blobs`.
    fn bdb_file(blobs: &[Vec<u8>]) -> Vec<u8> {
        let keys: Vec<[u8; 4]> = (1..=blobs.len())
            .map(|i| u32::try_from(i).expect("small").to_le_bytes())
            .collect();
        let pairs: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(blobs)
            .map(|(k, b)| (k.as_slice(), b.as_slice()))
            .collect();
        bdb::tests::build(false, false, 4096, &pairs, 1000)
    }

    #[test]
    fn read_table() {
        let gpg = header::build(&[
            (header::TAG_NAME, 6, b"gpg-pubkey\0", 1),
            (header::TAG_VERSION, 6, b"fd431d51\0", 1),
            (header::TAG_RELEASE, 6, b"4ae0493b\0", 1),
        ]);
        let bdb_ok = bdb_file(&[sample("bash", None), gpg.clone(), sample("zlib", Some(2))]);
        let bdb_bad_header = bdb_file(&[sample("bash", None), b"garbage".to_vec()]);
        struct Case {
            name: &'static str,
            tree: MemTree,
            fail: Option<(&'static str, FsError)>,
            /// `Err(kind)` or `Ok((names, sources, warnings))`.
            want: Result<(Vec<&'static str>, Vec<&'static str>, usize), &'static str>,
        }
        let cases = [
            Case {
                name: "nothing",
                tree: MemTree::default(),
                fail: None,
                want: Ok((vec![], vec![], 0)),
            },
            Case {
                name: "bdb: gpg-pubkey left out",
                tree: MemTree::default().file("/var/lib/rpm/Packages", &bdb_ok),
                fail: None,
                want: Ok((vec!["bash", "zlib"], vec!["/var/lib/rpm/Packages"], 0)),
            },
            Case {
                name: "the same database twice through a symlinked directory",
                tree: MemTree::default()
                    .file("/usr/lib/sysimage/rpm/Packages", &bdb_ok)
                    .file("/var/lib/rpm/Packages", &bdb_ok),
                fail: None,
                want: Ok((
                    vec!["bash", "zlib"],
                    vec!["/usr/lib/sysimage/rpm/Packages"],
                    0,
                )),
            },
            Case {
                name: "an unreadable header is a warning",
                tree: MemTree::default().file("/var/lib/rpm/Packages", &bdb_bad_header),
                fail: None,
                want: Ok((vec!["bash"], vec!["/var/lib/rpm/Packages"], 1)),
            },
            Case {
                name: "not a BerkeleyDB file",
                tree: MemTree::default().file("/var/lib/rpm/Packages", "hello"),
                fail: None,
                want: Ok((vec![], vec![], 1)),
            },
            Case {
                name: "a corrupt sqlite db is a warning, and wins over Packages",
                tree: MemTree::default()
                    .file("/var/lib/rpm/rpmdb.sqlite", "SQLite format 3\0garbage")
                    .file("/var/lib/rpm/Packages", &bdb_ok),
                fail: None,
                want: Ok((vec![], vec![], 1)),
            },
            Case {
                name: "ndb",
                tree: MemTree::default().file("/usr/lib/sysimage/rpm/Packages.db", "ndb"),
                fail: None,
                want: Ok((vec![], vec![], 1)),
            },
            Case {
                name: "empty directory",
                tree: MemTree::default().dir("/var/lib/rpm"),
                fail: None,
                want: Ok((vec![], vec![], 1)),
            },
            Case {
                name: "empty directory next to a database: no warning",
                tree: MemTree::default()
                    .dir("/usr/lib/sysimage/rpm")
                    .file("/var/lib/rpm/Packages", &bdb_ok),
                fail: None,
                want: Ok((vec!["bash", "zlib"], vec!["/var/lib/rpm/Packages"], 0)),
            },
            Case {
                name: "database too large",
                tree: MemTree::default().file("/var/lib/rpm/Packages", &bdb_ok),
                fail: Some((
                    "/var/lib/rpm/Packages",
                    FsError::TooLarge {
                        path: "/var/lib/rpm/Packages".into(),
                        len: u64::MAX,
                        limit: MAX_DB_LEN,
                    },
                )),
                want: Ok((vec![], vec![], 1)),
            },
            Case {
                name: "io error on the database stops",
                tree: MemTree::default().file("/var/lib/rpm/Packages", &bdb_ok),
                fail: Some(("/var/lib/rpm/Packages", FsError::Io("sector 7".into()))),
                want: Err("io"),
            },
            Case {
                name: "io error on the wal stops",
                tree: MemTree::default().file("/var/lib/rpm/rpmdb.sqlite", "x"),
                fail: Some(("/var/lib/rpm/rpmdb.sqlite-wal", FsError::Timeout(30))),
                want: Err("timeout"),
            },
            Case {
                name: "io error on the directory probe stops",
                tree: MemTree::default(),
                fail: Some(("/var/lib/rpm", FsError::Io("x".into()))),
                want: Err("io"),
            },
        ];
        for c in cases {
            let inner = Rooted(c.tree);
            let mut inv = Inventory::default();
            let got = match c.fail {
                Some((path, error)) => read(&Failing { inner, path, error }, &mut inv),
                None => read(&inner, &mut inv),
            };
            let got = got.map_err(|e| e.kind()).map(|()| {
                (
                    inv.packages
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>(),
                    inv.sources.iter().map(String::as_str).collect::<Vec<_>>(),
                    inv.warnings.len(),
                )
            });
            assert_eq!(got, c.want, "case {}: warnings {:?}", c.name, inv.warnings);
        }
    }
}
