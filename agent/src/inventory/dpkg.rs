//! dpkg: the installed packages of Debian, Ubuntu and their derivatives.
//!
//! Reads `var/lib/dpkg/status` (at most [`MAX_STATUS_LEN`]) and, for distroless images that have
//! no status file but one control file per package, every regular file of
//! `var/lib/dpkg/status.d/` except the `*.md5sums` lists (at most [`MAX_STATUS_D_FILES`] files of
//! [`MAX_STATUS_D_LEN`] each). Both are deb822 control data: stanzas separated by blank lines,
//! `Field: value` lines (field names case-insensitive), continuation lines starting with a space
//! or a tab. From each stanza it takes `Package`, `Version` (with its epoch, as `dpkg-query`
//! prints it), `Architecture`, `Source` (`name` or `name (version)`) and `Status`.
//!
//! A stanza counts when the third word of its `Status` (want, error flag, state) is
//! `installed`, as in `install ok installed` or `hold ok installed`: removed packages whose
//! configuration files remain (`deinstall ok config-files`) and half-installed ones do not. The
//! distroless files have no `Status` at all and are counted as installed; a `Status` there is
//! honoured. A stanza without a `Package` or `Version` is skipped and counted in a warning.
//!
//! It does not read `var/lib/dpkg/info/*.list` (which files belong to which package), the
//! `available` file, or dpkg's pending `updates/` journal (entries dpkg has not merged into
//! `status` after a crash). Format: deb-control(5), dpkg-query(1) `db:Status-Abbrev`.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::{lines, non_empty, read_db, Ecosystem, Inventory, Package};
use crate::fs::{FileType, FsError, RootFs};

/// The dpkg status database.
pub const STATUS: &str = "/var/lib/dpkg/status";
/// The distroless per-package status directory.
pub const STATUS_D: &str = "/var/lib/dpkg/status.d";
/// Largest status file read (a desktop system's is 2-5 MiB).
pub const MAX_STATUS_LEN: u64 = 64 * 1024 * 1024;
/// Largest `status.d` file read.
pub const MAX_STATUS_D_LEN: u64 = 4 * 1024 * 1024;
/// Most `status.d` files read.
pub const MAX_STATUS_D_FILES: usize = 20_000;

/// What [`parse`] found in one control file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Installed packages, in file order.
    pub packages: Vec<Package>,
    /// Stanzas skipped for lack of a `Package` or `Version`.
    pub incomplete: usize,
}

/// Parse deb822 control data. `default_installed` says whether a stanza without a `Status`
/// field counts as installed (true for distroless `status.d` files, false for `status`).
pub fn parse(text: &str, default_installed: bool) -> Parsed {
    let mut out = Parsed::default();
    let mut stanza = Stanza::default();
    for line in lines(text) {
        if line.trim().is_empty() {
            stanza.finish(default_installed, &mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Continuation of a multi-line field (Description, Conffiles): none that we use.
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            // Not a field; dpkg would refuse the file, we keep what makes sense.
            continue;
        };
        stanza.seen = true;
        let value = value.trim();
        let field = field.trim();
        let slot = if field.eq_ignore_ascii_case("Package") {
            &mut stanza.package
        } else if field.eq_ignore_ascii_case("Version") {
            &mut stanza.version
        } else if field.eq_ignore_ascii_case("Architecture") {
            &mut stanza.arch
        } else if field.eq_ignore_ascii_case("Source") {
            &mut stanza.source
        } else if field.eq_ignore_ascii_case("Status") {
            &mut stanza.status
        } else {
            continue;
        };
        *slot = non_empty(value);
    }
    stanza.finish(default_installed, &mut out);
    out
}

/// The fields of one stanza read so far.
#[derive(Debug, Default)]
struct Stanza {
    /// Any field line was seen (so a run of blank lines is not an empty stanza).
    seen: bool,
    package: Option<String>,
    version: Option<String>,
    arch: Option<String>,
    source: Option<String>,
    status: Option<String>,
}

impl Stanza {
    /// Turn the stanza into a package (if installed and complete) and start a new one.
    fn finish(&mut self, default_installed: bool, out: &mut Parsed) {
        let s = std::mem::take(self);
        if !s.seen {
            return;
        }
        let installed = match &s.status {
            Some(status) => status.split_whitespace().nth(2) == Some("installed"),
            None => default_installed,
        };
        if !installed {
            return;
        }
        let (Some(name), Some(version)) = (s.package, s.version) else {
            out.incomplete = out.incomplete.saturating_add(1);
            return;
        };
        let (source, source_version) = match s.source.as_deref().map(split_source) {
            Some((src, ver)) => (Some(src), ver),
            None => (None, None),
        };
        out.packages.push(Package {
            ecosystem: Ecosystem::Deb,
            name,
            version: Some(version),
            arch: s.arch,
            source,
            source_version,
            publisher: None,
        });
    }
}

/// `glibc (2.36-9)` → (`glibc`, `Some("2.36-9")`); `zlib` → (`zlib`, `None`).
fn split_source(field: &str) -> (String, Option<String>) {
    match field.split_once('(') {
        Some((name, rest)) => {
            let version = rest.split(')').next().and_then(non_empty);
            (name.trim().to_owned(), version)
        }
        None => (field.trim().to_owned(), None),
    }
}

/// Read `status` and `status.d/` into `inv`.
pub(crate) fn read(fs: &dyn RootFs, inv: &mut Inventory) -> Result<(), FsError> {
    if let Some(bytes) = read_db(fs, STATUS, MAX_STATUS_LEN, inv)? {
        let parsed = parse(&String::from_utf8_lossy(&bytes), false);
        add(inv, STATUS, parsed);
        inv.sources.push(STATUS.to_owned());
    }
    let entries = match fs.read_dir(STATUS_D) {
        Ok(entries) => entries,
        Err(e) if e.is_device_error() => return Err(e),
        Err(FsError::NotFound(_) | FsError::NotADirectory(_)) => return Ok(()),
        Err(e) => {
            inv.warnings.push(format!("cannot list '{STATUS_D}': {e}"));
            return Ok(());
        }
    };
    let mut names: Vec<String> = entries
        .into_iter()
        .filter(|e| matches!(e.file_type, FileType::File | FileType::Symlink))
        .map(|e| e.name)
        .filter(|n| !n.ends_with(".md5sums"))
        .collect();
    names.sort();
    if names.len() > MAX_STATUS_D_FILES {
        inv.warnings.push(format!(
            "'{STATUS_D}' has {} files, only the first {MAX_STATUS_D_FILES} are read",
            names.len()
        ));
        names.truncate(MAX_STATUS_D_FILES);
    }
    for name in &names {
        let path = format!("{STATUS_D}/{name}");
        if let Some(bytes) = read_db(fs, &path, MAX_STATUS_D_LEN, inv)? {
            add(inv, &path, parse(&String::from_utf8_lossy(&bytes), true));
        }
    }
    inv.sources.push(STATUS_D.to_owned());
    Ok(())
}

/// Add what one file gave, with a warning for its incomplete stanzas.
fn add(inv: &mut Inventory, path: &str, parsed: Parsed) {
    if parsed.incomplete > 0 {
        inv.warnings.push(format!(
            "'{path}': {} installed stanza(s) without Package or Version skipped",
            parsed.incomplete
        ));
    }
    inv.packages.extend(parsed.packages);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::memfs::MemTree;
    use crate::fs::Rooted;
    use proptest::prelude::*;

    /// (name, version, arch, source, source_version)
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );

    fn rows(parsed: &Parsed) -> Vec<Row<'_>> {
        parsed
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_deref().unwrap_or_default(),
                    p.arch.as_deref(),
                    p.source.as_deref(),
                    p.source_version.as_deref(),
                )
            })
            .collect()
    }

    #[test]
    fn parse_table() {
        struct Case {
            name: &'static str,
            text: &'static str,
            default_installed: bool,
            want: Vec<Row<'static>>,
            incomplete: usize,
        }
        let cases = [
            Case {
                name: "normal stanzas",
                text: "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
                       Architecture: amd64\nMulti-Arch: same\nSource: glibc\n\
                       Version: 2.36-9+deb12u4\n\n\
                       Package: base-files\nEssential: yes\nStatus: install ok installed\n\
                       Architecture: amd64\nVersion: 12.4+deb12u5\n",
                default_installed: false,
                want: vec![
                    ("libc6", "2.36-9+deb12u4", Some("amd64"), Some("glibc"), None),
                    ("base-files", "12.4+deb12u5", Some("amd64"), None, None),
                ],
                incomplete: 0,
            },
            Case {
                name: "continuation lines, even ones that look like fields",
                text: "Package: dpkg\nStatus: install ok installed\nConffiles:\n \
                       /etc/dpkg/dpkg.cfg f4413ffb\nDescription: Debian package system\n \
                       Package: not-a-package\n Version: 9\n .\n\tVersion: 10\n\
                       Version: 1.21.22\nArchitecture: amd64\n",
                default_installed: false,
                want: vec![("dpkg", "1.21.22", Some("amd64"), None, None)],
                incomplete: 0,
            },
            Case {
                name: "source with version, epoch kept",
                text: "Package: libgcc-s1\nStatus: install ok installed\n\
                       Source: gcc-12 (12.2.0-14)\nVersion: 1:12.2.0-14\nArchitecture: amd64\n",
                default_installed: false,
                want: vec![(
                    "libgcc-s1",
                    "1:12.2.0-14",
                    Some("amd64"),
                    Some("gcc-12"),
                    Some("12.2.0-14"),
                )],
                incomplete: 0,
            },
            Case {
                name: "deinstalled, half-installed and hold",
                text: "Package: a\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                       Package: b\nStatus: install ok half-installed\nVersion: 1\n\n\
                       Package: c\nStatus: purge ok not-installed\n\n\
                       Package: d\nStatus: hold ok installed\nVersion: 4\n\n\
                       Package: e\nStatus: install reinstreq installed\nVersion: 5\n\n\
                       Package: f\nStatus: install ok unpacked\nVersion: 6\n",
                default_installed: false,
                want: vec![("d", "4", None, None, None), ("e", "5", None, None, None)],
                incomplete: 0,
            },
            Case {
                name: "missing fields",
                text: "Package: noversion\nStatus: install ok installed\n\n\
                       Version: 1.0\nStatus: install ok installed\n\n\
                       Package: nostatus\nVersion: 1\n\n\
                       Package: noarch\nStatus: install ok installed\nVersion: 2\n",
                default_installed: false,
                want: vec![("noarch", "2", None, None, None)],
                incomplete: 2,
            },
            Case {
                name: "crlf, case-insensitive fields, extra blank lines",
                text: "\r\n\r\npackage: curl\r\nSTATUS: install ok installed\r\n\
                       version:   7.88.1-10  \r\narchitecture: arm64\r\n\r\n\r\n\r\n",
                default_installed: false,
                want: vec![("curl", "7.88.1-10", Some("arm64"), None, None)],
                incomplete: 0,
            },
            Case {
                name: "distroless: no status means installed",
                text: "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n\n\
                       Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
                default_installed: true,
                want: vec![("tzdata", "2024a-0+deb12u1", Some("all"), None, None)],
                incomplete: 0,
            },
            Case {
                name: "garbage lines and no trailing newline",
                text: "\u{1}\u{2}garbage\nPackage: x\nno colon here\nStatus: install ok installed\nVersion: 1",
                default_installed: false,
                want: vec![("x", "1", None, None, None)],
                incomplete: 0,
            },
            Case {
                name: "empty",
                text: "",
                default_installed: true,
                want: vec![],
                incomplete: 0,
            },
        ];
        for c in cases {
            let got = parse(c.text, c.default_installed);
            assert_eq!(rows(&got), c.want, "case {}", c.name);
            assert_eq!(got.incomplete, c.incomplete, "case {} incomplete", c.name);
        }
    }

    #[test]
    fn read_status_and_status_d() {
        struct Case {
            name: &'static str,
            tree: MemTree,
            want: Vec<&'static str>,
            sources: Vec<&'static str>,
            warnings: usize,
        }
        let cases = [
            Case {
                name: "absent",
                tree: MemTree::default(),
                want: vec![],
                sources: vec![],
                warnings: 0,
            },
            Case {
                name: "distroless status.d, md5sums and subdirectories skipped",
                tree: MemTree::default()
                    .file(
                        "/var/lib/dpkg/status.d/base",
                        "Package: base-files\nVersion: 12.4\nArchitecture: amd64\n",
                    )
                    .file(
                        "/var/lib/dpkg/status.d/libssl3",
                        "Package: libssl3\nVersion: 3.0.11-1\nArchitecture: amd64\n\
                         Source: openssl\n",
                    )
                    .file(
                        "/var/lib/dpkg/status.d/libssl3.md5sums",
                        "0123 usr/lib/x86_64-linux-gnu/libssl.so.3\n",
                    )
                    .dir("/var/lib/dpkg/status.d/sub"),
                want: vec!["base-files", "libssl3"],
                sources: vec![STATUS_D],
                warnings: 0,
            },
            Case {
                name: "garbage bytes in status",
                tree: MemTree::default().file(STATUS, [0xff, 0xfe, 0, 1, b'\n', 0x80]),
                want: vec![],
                sources: vec![STATUS],
                warnings: 0,
            },
            Case {
                name: "incomplete stanza warned",
                tree: MemTree::default().file(STATUS, "Package: x\nStatus: install ok installed\n"),
                want: vec![],
                sources: vec![STATUS],
                warnings: 1,
            },
            Case {
                name: "status.d is a file",
                tree: MemTree::default().file(STATUS_D, "Package: x\nVersion: 1\n"),
                want: vec![],
                sources: vec![],
                warnings: 0,
            },
        ];
        for c in cases {
            let mut inv = Inventory::default();
            read(&Rooted(c.tree), &mut inv).unwrap_or_else(|e| panic!("case {}: {e}", c.name));
            let names: Vec<_> = inv.packages.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, c.want, "case {}", c.name);
            assert_eq!(inv.sources, c.sources, "case {}", c.name);
            assert_eq!(
                inv.warnings.len(),
                c.warnings,
                "case {}: {:?}",
                c.name,
                inv.warnings
            );
        }
    }

    #[test]
    fn huge_status_is_a_warning() {
        let big = "Package: x\nStatus: install ok installed\nVersion: 1\n\n".repeat(16);
        let mut inv = Inventory::default();
        let fs = Rooted(MemTree::default().file(STATUS, &big));
        // Shrink the limit through read_db directly: the real one is 64 MiB.
        assert_eq!(read_db(&fs, STATUS, 10, &mut inv), Ok(None));
        assert_eq!(inv.warnings.len(), 1);
        assert!(
            inv.warnings[0].contains("more than the 10 allowed"),
            "{:?}",
            inv.warnings
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC*", default_installed: bool) {
            let _ = parse(&text, default_installed);
        }

        #[test]
        fn parse_never_panics_on_stanza_like_text(
            text in "((Package|Version|Status|Source|Architecture|X)?:? ?[a-z0-9 ().:+~-]{0,12}(\r?\n)?){0,40}",
        ) {
            let parsed = parse(&text, true);
            prop_assert!(parsed.packages.iter().all(|p| !p.name.is_empty()));
        }
    }
}
