//! Windows: installed programs from the registry, as "Programs and Features" lists them.
//!
//! Reads the `SOFTWARE` hive ([`SOFTWARE_HIVE`], lazily through [`crate::registry`], its
//! new-format transaction logs replayed when it is dirty, like detection does) and, in it, every
//! subkey of `Microsoft\Windows\CurrentVersion\Uninstall` (the native view) and of
//! `WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall` (32-bit installers on 64-bit
//! Windows): `DisplayName`, `DisplayVersion`, `Publisher`. A key without a `DisplayName` (like
//! `AddressBook`) or marked `SystemComponent` = 1 is not a program and is skipped, as Windows
//! itself does. The architecture is the system's ([`OsInfo::arch`], `i686` spelled `x86`) for
//! the native view and `x86` for `WOW6432Node`.
//!
//! It does not read per-user installs (`NTUSER.DAT` of each profile), MSI product records
//! (`Installer\Products`), installed updates (`Packages` under Component Based Servicing), Store
//! apps (AppX), or old-format transaction logs. Updates registered as `Uninstall` entries with a
//! `DisplayName` are listed like programs.
//!
//! The hive is untrusted: strings are capped as in [`crate::detect::windows`], at most
//! [`MAX_PROGRAMS`] keys are looked at per view, and a corrupt hive or `Uninstall` list is a
//! warning (a corrupt value only leaves its field empty). Registry format:
//! <https://github.com/msuhanov/regf/blob/master/Windows%20registry%20file%20format%20specification.md>.
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::{Ecosystem, Inventory, Package};
pub use crate::detect::windows::SOFTWARE_HIVE;
use crate::detect::windows::{dword_value, string_value, with_hive};
use crate::detect::OsInfo;
use crate::fs::{FsError, RootFs};
use crate::registry::{Hive, HiveError, Key};

/// The native `Uninstall` key.
pub const UNINSTALL: &str = r"Microsoft\Windows\CurrentVersion\Uninstall";
/// The 32-bit view's `Uninstall` key on 64-bit Windows.
pub const UNINSTALL_WOW64: &str = r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall";
/// Most subkeys looked at per `Uninstall` key (a busy server has a few hundred).
pub const MAX_PROGRAMS: usize = 50_000;

/// Which registry view an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `SOFTWARE\Microsoft\...`: programs of the system's own architecture.
    Native,
    /// `SOFTWARE\WOW6432Node\Microsoft\...`: 32-bit programs on 64-bit Windows.
    Wow64,
}

/// The values of one `Uninstall` subkey, before filtering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// `DisplayName`.
    pub display_name: Option<String>,
    /// `DisplayVersion`.
    pub display_version: Option<String>,
    /// `Publisher`.
    pub publisher: Option<String>,
    /// `SystemComponent` (1 hides the entry).
    pub system_component: Option<u32>,
}

/// The `Uninstall` entries of a `SOFTWARE` hive, per view. A view whose key is absent gives no
/// entries.
///
/// # Errors
///
/// A corrupt hive or `Uninstall` key (a corrupt value only leaves its field empty); device
/// errors.
pub fn entries(hive: &Hive<'_>) -> Result<Vec<(View, Entry)>, HiveError> {
    let root = hive.root()?;
    let mut out = Vec::new();
    for (view, path) in [(View::Native, UNINSTALL), (View::Wow64, UNINSTALL_WOW64)] {
        let Some(key) = root.subpath(path)? else {
            continue;
        };
        for sub in key.subkeys(MAX_PROGRAMS)? {
            out.push((view, entry(&sub)?));
        }
    }
    Ok(out)
}

/// The values of one subkey.
fn entry(key: &Key<'_>) -> Result<Entry, HiveError> {
    Ok(Entry {
        display_name: string_value(key, "DisplayName")?,
        display_version: string_value(key, "DisplayVersion")?,
        publisher: string_value(key, "Publisher")?,
        system_component: dword_value(key, "SystemComponent")?,
    })
}

/// The architecture of each view's programs on a system of architecture `os_arch`.
pub fn view_arch(view: View, os_arch: Option<&str>) -> Option<String> {
    let is_64 = |a: &str| matches!(a, "x86_64" | "aarch64");
    match view {
        View::Native => os_arch.map(|a| if a == "i686" { "x86" } else { a }.to_owned()),
        // WOW6432Node only exists on 64-bit Windows; when the system's architecture is
        // unknown its presence says enough.
        View::Wow64 if os_arch.is_none_or(is_64) => Some("x86".to_owned()),
        View::Wow64 => None,
    }
}

/// The programs among `entries`: skips keys without a `DisplayName` and system components.
pub fn programs(entries: Vec<(View, Entry)>, os_arch: Option<&str>) -> Vec<Package> {
    entries
        .into_iter()
        .filter(|(_, e)| e.system_component != Some(1))
        .filter_map(|(view, e)| {
            Some(Package {
                ecosystem: Ecosystem::Windows,
                name: e.display_name?,
                version: e.display_version,
                arch: view_arch(view, os_arch),
                source: None,
                source_version: None,
                publisher: e.publisher,
            })
        })
        .collect()
}

/// Read the programs of the `SOFTWARE` hive into `inv`: an absent hive is nothing, an
/// unreadable or corrupt one a warning.
pub(crate) fn read(fs: &dyn RootFs, os: &OsInfo, inv: &mut Inventory) -> Result<(), FsError> {
    match with_hive(fs, SOFTWARE_HIVE, entries) {
        Ok(found) => {
            inv.packages.extend(programs(found, os.arch.as_deref()));
            inv.sources.push(SOFTWARE_HIVE.to_owned());
        }
        Err(HiveError::Device(e)) => return Err(e),
        Err(HiveError::File(FsError::NotFound(_) | FsError::NotADirectory(_))) => {}
        Err(e) => inv.warnings.push(format!(
            "'{SOFTWARE_HIVE}' is not a readable registry hive: {e}"
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::OsFamily;
    use crate::fs::memfs::{random_bytes, MemTree};
    use crate::fs::Rooted;

    fn e(name: Option<&str>, version: Option<&str>, system: Option<u32>) -> Entry {
        Entry {
            display_name: name.map(str::to_owned),
            display_version: version.map(str::to_owned),
            publisher: Some("Pub".into()),
            system_component: system,
        }
    }

    #[test]
    fn programs_table() {
        struct Case {
            name: &'static str,
            os_arch: Option<&'static str>,
            entries: Vec<(View, Entry)>,
            /// (name, version, arch)
            want: Vec<(&'static str, Option<&'static str>, Option<&'static str>)>,
        }
        let cases = [
            Case {
                name: "native and wow64 on x86_64",
                os_arch: Some("x86_64"),
                entries: vec![
                    (View::Native, e(Some("7-Zip"), Some("23.01"), None)),
                    (View::Wow64, e(Some("Chrome"), Some("120"), Some(0))),
                ],
                want: vec![
                    ("7-Zip", Some("23.01"), Some("x86_64")),
                    ("Chrome", Some("120"), Some("x86")),
                ],
            },
            Case {
                name: "no DisplayName (AddressBook) and system components skipped",
                os_arch: Some("x86_64"),
                entries: vec![
                    (View::Native, e(None, None, None)),
                    (View::Native, e(Some("Hidden"), Some("1"), Some(1))),
                    (View::Wow64, e(None, Some("2"), None)),
                    (View::Native, e(Some("No version"), None, None)),
                ],
                want: vec![("No version", None, Some("x86_64"))],
            },
            Case {
                name: "arm64 windows",
                os_arch: Some("aarch64"),
                entries: vec![
                    (View::Native, e(Some("A"), Some("1"), None)),
                    (View::Wow64, e(Some("B"), Some("2"), None)),
                ],
                want: vec![
                    ("A", Some("1"), Some("aarch64")),
                    ("B", Some("2"), Some("x86")),
                ],
            },
            Case {
                name: "32-bit windows",
                os_arch: Some("i686"),
                entries: vec![
                    (View::Native, e(Some("A"), Some("1"), None)),
                    (View::Wow64, e(Some("B"), Some("2"), None)),
                ],
                want: vec![("A", Some("1"), Some("x86")), ("B", Some("2"), None)],
            },
            Case {
                name: "unknown architecture",
                os_arch: None,
                entries: vec![
                    (View::Native, e(Some("A"), Some("1"), None)),
                    (View::Wow64, e(Some("B"), Some("2"), None)),
                ],
                want: vec![("A", Some("1"), None), ("B", Some("2"), Some("x86"))],
            },
        ];
        for c in cases {
            let got = programs(c.entries, c.os_arch);
            let got: Vec<_> = got
                .iter()
                .map(|p| (p.name.as_str(), p.version.as_deref(), p.arch.as_deref()))
                .collect();
            assert_eq!(got, c.want, "case {}", c.name);
        }
    }

    #[test]
    fn unreadable_hives_are_warnings() {
        struct Case {
            name: &'static str,
            hive: Vec<u8>,
        }
        let random = random_bytes(0x9e37_79b9_u32, 8192);
        let mut regf_random = random.clone();
        regf_random[..4].copy_from_slice(b"regf");
        let cases = [
            Case {
                name: "empty",
                hive: Vec::new(),
            },
            Case {
                name: "random",
                hive: random,
            },
            Case {
                name: "regf then random",
                hive: regf_random,
            },
        ];
        let mut os = OsInfo::new(OsFamily::Windows, "windows");
        os.arch = Some("x86_64".into());
        for c in cases {
            let fs = Rooted(MemTree::default().file(SOFTWARE_HIVE, &c.hive));
            let mut inv = Inventory::default();
            read(&fs, &os, &mut inv).unwrap_or_else(|e| panic!("case {}: {e}", c.name));
            assert!(inv.packages.is_empty(), "case {}", c.name);
            assert_eq!(inv.warnings.len(), 1, "case {}", c.name);
            assert!(inv.sources.is_empty(), "case {}", c.name);
        }
        // A hive whose subkey list points at cell 0xFFFFFFFF: corrupt, a warning.
        let hive = crate::detect::windows::tests::hostile_hive();
        let fs = Rooted(MemTree::default().file(SOFTWARE_HIVE, &hive));
        let mut inv = Inventory::default();
        read(&fs, &os, &mut inv).expect("read");
        assert!(inv.packages.is_empty());
        assert_eq!(inv.warnings.len(), 1);
        assert!(inv.warnings[0].contains("corrupt"), "{:?}", inv.warnings);

        // No hive: nothing, silently.
        let mut inv = Inventory::default();
        read(&Rooted(MemTree::default()), &os, &mut inv).expect("read");
        assert_eq!(inv, Inventory::default());
    }
}
