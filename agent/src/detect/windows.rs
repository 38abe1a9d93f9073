//! Windows detection: version and edition from the registry, host name, and the architecture of
//! the system binaries.
//!
//! A volume holds Windows when [`CONFIG_DIR`] (`Windows/System32/config`, found case-insensitively
//! on NTFS) is a directory. What it reads there, and nothing else:
//!
//! - the `SOFTWARE` hive, key `Microsoft\Windows NT\CurrentVersion`: `ProductName`,
//!   `CurrentBuild` (else `CurrentBuildNumber`), `UBR`, `DisplayVersion` (else `ReleaseId`),
//!   `EditionID`, `InstallationType`, `CurrentMajorVersionNumber` / `CurrentMinorVersionNumber`
//!   (else the `CurrentVersion` string of Windows 8.1 / 2012 R2 and older);
//! - the `SYSTEM` hive: `Select\Current` names the control set (`ControlSet001`; there is no
//!   `CurrentControlSet` on disk), whose `Services\Tcpip\Parameters\Hostname` (else
//!   `Control\ComputerName\ComputerName\ComputerName`) is the host name;
//! - the PE header of `System32/cmd.exe` (else `ntoskrnl.exe`) for the architecture.
//!
//! Windows 11 still writes "Windows 10" in `ProductName`; like other tools, a client build of
//! 22000 or later is reported as Windows 11 in [`OsInfo::name`] and [`OsInfo::product_name`]
//! (what JSON consumers read as the product), while [`OsInfo::registry_product_name`] keeps the
//! registry's words.
//!
//! The hives are read lazily by [`crate::registry`]: only the base block and the cells on the
//! way to these keys, a few pages of a hive of any size. A hive of a running system is often
//! "dirty" (its sequence numbers differ): its new-format transaction logs (`SOFTWARE.LOG1`,
//! `SOFTWARE.LOG2` next to it) are replayed in memory, so the newest values are read; old-format
//! logs (Windows 8 and older) are not, and such a hive is read as it is. It does not walk the
//! registry or the volume, reads no other hive, lists no programs (that is the inventory's job),
//! and never runs anything from the disk.
//!
//! The hives come from an untrusted disk. A missing or corrupt hive, or a value of the wrong
//! type, only leaves fields empty: Windows is still reported. Only device errors
//! ([`FsError::Io`], [`FsError::Timeout`]) stop detection. The reader checks every offset and
//! bounds its work, so a hostile hive cannot make it panic (the `registry_hive` fuzz target
//! checks that).
//! Registry format: <https://github.com/msuhanov/regf/blob/master/Windows%20registry%20file%20format%20specification.md>.

use super::{arch, OsFamily, OsInfo};
use crate::fs::{FileType, FsError, RootFs};
use crate::registry::{Hive, HiveError, Key};

/// The directory whose presence means "this volume holds Windows".
pub const CONFIG_DIR: &str = "/Windows/System32/config";
/// The `SOFTWARE` hive (`HKLM\SOFTWARE`).
pub const SOFTWARE_HIVE: &str = "/Windows/System32/config/SOFTWARE";
/// The `SYSTEM` hive (`HKLM\SYSTEM`).
pub const SYSTEM_HIVE: &str = "/Windows/System32/config/SYSTEM";

/// Executables whose PE header gives the system's architecture, most telling first.
const ARCH_PROBES: [&str; 2] = [
    "/Windows/System32/cmd.exe",
    "/Windows/System32/ntoskrnl.exe",
];

/// The version key in the `SOFTWARE` hive.
const CURRENT_VERSION_KEY: &str = r"Microsoft\Windows NT\CurrentVersion";

/// The first build of Windows 11 (21H2); Windows Server 2022 is 20348.
const FIRST_WINDOWS_11_BUILD: u32 = 22000;

/// Largest registry string read, in bytes of UTF-16 data. The values read here are short; the
/// cap also keeps a hostile big-data value from expanding a small hive into a huge string.
const MAX_STRING_DATA: u32 = 2048;

/// Detect Windows on a volume: `Ok(None)` when the volume holds no Windows (no
/// `Windows/System32/config` directory). A Windows whose hives are missing or corrupt is still
/// `Some`, with only what could be read (at least family and id `windows`).
///
/// # Errors
///
/// Device errors ([`FsError::Io`], [`FsError::Timeout`]) from any read; every other failure
/// leaves fields empty.
pub fn detect(fs: &dyn RootFs) -> Result<Option<OsInfo>, FsError> {
    match fs.metadata(CONFIG_DIR) {
        Ok(md) if md.file_type == FileType::Dir => {}
        Ok(_) => return Ok(None),
        Err(e) if e.is_device_error() => return Err(e),
        Err(_) => return Ok(None),
    }
    let version = soft(with_hive(fs, SOFTWARE_HIVE, current_version))?.unwrap_or_default();
    let hostname = soft(with_hive(fs, SYSTEM_HIVE, hostname))?.flatten();
    let arch = system_arch(fs)?;
    Ok(Some(os_info(&version, hostname, arch)))
}

/// Open the hive at `path` (replaying its logs) and run `read` over it.
///
/// # Errors
///
/// The hive's error: [`HiveError::File`] when absent, a device error, a corrupt hive.
pub(crate) fn with_hive<T>(
    fs: &dyn RootFs,
    path: &str,
    read: impl FnOnce(&Hive<'_>) -> Result<T, HiveError>,
) -> Result<T, HiveError> {
    read(&Hive::open_path(fs, path)?)
}

/// A device error out, every other hive error as "nothing read".
fn soft<T>(read: Result<T, HiveError>) -> Result<Option<T>, FsError> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(HiveError::Device(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

/// Architecture from the PE header of the first probe that has one.
fn system_arch(fs: &dyn RootFs) -> Result<Option<&'static str>, FsError> {
    for path in ARCH_PROBES {
        match fs.read_prefix(path, arch::HEAD_LEN) {
            Ok(head) => {
                if let Some(arch) = arch::pe_arch(&head) {
                    return Ok(Some(arch));
                }
            }
            Err(e) if e.is_device_error() => return Err(e),
            Err(_) => {}
        }
    }
    Ok(None)
}

/// The values of `SOFTWARE\Microsoft\Windows NT\CurrentVersion` that detection uses, each
/// `None` when absent, of the wrong type or unreadable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct CurrentVersion {
    /// `ProductName` (`Windows 10 Pro`, also on Windows 11).
    product_name: Option<String>,
    /// `CurrentBuild`, else `CurrentBuildNumber` (`22631`).
    build: Option<String>,
    /// `UBR`, the update build revision (`2861`).
    ubr: Option<u32>,
    /// `DisplayVersion` (`23H2`), else `ReleaseId` (`1909`, frozen at `2009` since 20H2).
    display_version: Option<String>,
    /// `EditionID` (`Professional`, `ServerDatacenter`).
    edition_id: Option<String>,
    /// `InstallationType` (`Client`, `Server`, `Server Core`).
    installation_type: Option<String>,
    /// `CurrentMajorVersionNumber` (10; absent before Windows 10).
    major: Option<u32>,
    /// `CurrentMinorVersionNumber`.
    minor: Option<u32>,
    /// `CurrentVersion` (`6.3`; stuck there on Windows 10 and later).
    current_version: Option<String>,
}

/// Turn the registry values into an [`OsInfo`]; pure, so it is tested without hives.
fn os_info(v: &CurrentVersion, hostname: Option<String>, arch: Option<&str>) -> OsInfo {
    let mut os = OsInfo::new(OsFamily::Windows, "windows");
    os.version_id = match (v.major, v.minor) {
        (Some(major), minor) => Some(format!("{major}.{}", minor.unwrap_or(0))),
        (None, _) => v.current_version.clone(),
    };
    os.build = v.build.as_ref().map(|build| match v.ubr {
        Some(ubr) => format!("{build}.{ubr}"),
        None => build.clone(),
    });
    os.name = v.product_name.as_deref().map(|product| {
        if is_windows_11(v) {
            windows_11_name(product)
        } else {
            product.to_owned()
        }
    });
    os.pretty_name = os.name.as_ref().map(|name| match &v.display_version {
        Some(dv) => format!("{name} {dv}"),
        None => name.clone(),
    });
    os.product_name = os.name.clone();
    os.registry_product_name = v.product_name.clone();
    os.display_version = v.display_version.clone();
    os.edition = v.edition_id.clone();
    os.installation_type = v.installation_type.clone();
    os.hostname = hostname;
    os.arch = arch.map(str::to_owned);
    os
}

/// A client installation (by `InstallationType`, else by an `EditionID` that is not a server
/// edition) of build 22000 or later.
fn is_windows_11(v: &CurrentVersion) -> bool {
    let client = match v.installation_type.as_deref() {
        Some(t) => t.eq_ignore_ascii_case("Client"),
        None => !v.edition_id.as_deref().is_some_and(|e| {
            e.get(..6)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("Server"))
        }),
    };
    let build = v.build.as_deref().and_then(|b| b.parse::<u32>().ok());
    client && build.is_some_and(|b| b >= FIRST_WINDOWS_11_BUILD)
}

/// `Windows 10 Pro` → `Windows 11 Pro`: the first "Windows 10" that is a whole word becomes
/// "Windows 11"; a name without one is kept.
fn windows_11_name(product: &str) -> String {
    const OLD: &str = "Windows 10";
    let mut from = 0;
    while let Some(found) = product.get(from..).and_then(|rest| rest.find(OLD)) {
        let start = from.saturating_add(found);
        let end = start.saturating_add(OLD.len());
        let (Some(before), Some(after)) = (product.get(..start), product.get(end..)) else {
            break;
        };
        let starts_word = !before.ends_with(|c: char| c.is_alphanumeric());
        let ends_word = !after.starts_with(|c: char| c.is_alphanumeric());
        if starts_word && ends_word {
            return format!("{before}Windows 11{after}");
        }
        from = end;
    }
    product.to_owned()
}

/// A string value: `None` when absent, not `REG_SZ`/`REG_EXPAND_SZ`, longer than
/// [`MAX_STRING_DATA`], unreadable, empty, or holding control characters.
///
/// # Errors
///
/// Device errors only.
pub(crate) fn string_value(key: &Key<'_>, name: &str) -> Result<Option<String>, HiveError> {
    let text = soft_value(key.value(name).and_then(|v| match v {
        Some(v) => v.string(MAX_STRING_DATA),
        None => Ok(None),
    }))?;
    Ok(text.and_then(|text| {
        let text = text.trim();
        (!text.is_empty() && !text.chars().any(char::is_control)).then(|| text.to_owned())
    }))
}

/// A `REG_DWORD` value; `None` when absent, of another type or unreadable.
///
/// # Errors
///
/// Device errors only.
pub(crate) fn dword_value(key: &Key<'_>, name: &str) -> Result<Option<u32>, HiveError> {
    soft_value(key.value(name).and_then(|v| match v {
        Some(v) => v.dword(),
        None => Ok(None),
    }))
}

/// A value read: a device error stays an error, any other failure is "no value".
fn soft_value<T>(read: Result<Option<T>, HiveError>) -> Result<Option<T>, HiveError> {
    match read {
        Err(e) if !e.is_device_error() => Ok(None),
        other => other,
    }
}

/// The version values of a `SOFTWARE` hive; all `None` when the key is absent.
fn current_version(hive: &Hive<'_>) -> Result<CurrentVersion, HiveError> {
    let Some(key) = hive.key(CURRENT_VERSION_KEY)? else {
        return Ok(CurrentVersion::default());
    };
    let string = |name| string_value(&key, name);
    let either = |a, b| -> Result<Option<String>, HiveError> {
        Ok(match string(a)? {
            Some(v) => Some(v),
            None => string(b)?,
        })
    };
    Ok(CurrentVersion {
        product_name: string("ProductName")?,
        build: either("CurrentBuild", "CurrentBuildNumber")?,
        ubr: dword_value(&key, "UBR")?,
        display_version: either("DisplayVersion", "ReleaseId")?,
        edition_id: string("EditionID")?,
        installation_type: string("InstallationType")?,
        major: dword_value(&key, "CurrentMajorVersionNumber")?,
        minor: dword_value(&key, "CurrentMinorVersionNumber")?,
        current_version: string("CurrentVersion")?,
    })
}

/// The host name from a `SYSTEM` hive: the control set that `Select\Current` names (else
/// `ControlSet001`), its TCP/IP `Hostname`, else its `ComputerName`.
fn hostname(hive: &Hive<'_>) -> Result<Option<String>, HiveError> {
    let root = hive.root()?;
    let current = match soft_value(root.subkey("Select"))? {
        Some(select) => dword_value(&select, "Current")?,
        None => None,
    };
    let current = current.filter(|n| (1..=999).contains(n)).unwrap_or(1);
    let Some(set) = root.subkey(&format!("ControlSet{current:03}"))? else {
        return Ok(None);
    };
    let from = |path: &str, name: &str| -> Result<Option<String>, HiveError> {
        let Some(key) = soft_value(set.subpath(path))? else {
            return Ok(None);
        };
        Ok(string_value(&key, name)?.filter(|h| !h.chars().any(char::is_whitespace)))
    };
    Ok(match from(r"Services\Tcpip\Parameters", "Hostname")? {
        Some(h) => Some(h),
        None => from(r"Control\ComputerName\ComputerName", "ComputerName")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fs::memfs::{random_bytes, Failing, MemTree};
    use crate::fs::Rooted;

    /// The first bytes of a PE32+ file for `machine` (e_lfanew 0x80).
    fn pe(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 0x100];
        h[..2].copy_from_slice(b"MZ");
        h[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        h[0x80..0x84].copy_from_slice(b"PE\0\0");
        h[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
        h
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn values_to_os_info() {
        struct Case {
            name: &'static str,
            values: CurrentVersion,
            want_name: Option<&'static str>,
            want_pretty: Option<&'static str>,
            want_version: Option<&'static str>,
            want_build: Option<&'static str>,
        }
        let win11 = CurrentVersion {
            product_name: s("Windows 10 Pro"),
            build: s("22631"),
            ubr: Some(2861),
            display_version: s("23H2"),
            edition_id: s("Professional"),
            installation_type: s("Client"),
            major: Some(10),
            minor: Some(0),
            current_version: s("6.3"),
        };
        let cases = [
            Case {
                name: "windows 11 pro 23h2 says windows 10",
                values: win11.clone(),
                want_name: Some("Windows 11 Pro"),
                want_pretty: Some("Windows 11 Pro 23H2"),
                want_version: Some("10.0"),
                want_build: Some("22631.2861"),
            },
            Case {
                name: "windows 11 21h2, the first build",
                values: CurrentVersion {
                    product_name: s("Windows 10 Enterprise multi-session"),
                    build: s("22000"),
                    ubr: None,
                    display_version: s("21H2"),
                    ..win11.clone()
                },
                want_name: Some("Windows 11 Enterprise multi-session"),
                want_pretty: Some("Windows 11 Enterprise multi-session 21H2"),
                want_version: Some("10.0"),
                want_build: Some("22000"),
            },
            Case {
                name: "windows 11 without installation type, client edition",
                values: CurrentVersion {
                    installation_type: None,
                    ..win11.clone()
                },
                want_name: Some("Windows 11 Pro"),
                want_pretty: Some("Windows 11 Pro 23H2"),
                want_version: Some("10.0"),
                want_build: Some("22631.2861"),
            },
            Case {
                name: "product name already says windows 11",
                values: CurrentVersion {
                    product_name: s("Windows 11 Pro"),
                    ..win11.clone()
                },
                want_name: Some("Windows 11 Pro"),
                want_pretty: Some("Windows 11 Pro 23H2"),
                want_version: Some("10.0"),
                want_build: Some("22631.2861"),
            },
            Case {
                name: "windows 10 22h2 stays windows 10",
                values: CurrentVersion {
                    product_name: s("Windows 10 Enterprise"),
                    build: s("19045"),
                    ubr: Some(3803),
                    display_version: s("22H2"),
                    edition_id: s("Enterprise"),
                    ..win11.clone()
                },
                want_name: Some("Windows 10 Enterprise"),
                want_pretty: Some("Windows 10 Enterprise 22H2"),
                want_version: Some("10.0"),
                want_build: Some("19045.3803"),
            },
            Case {
                name: "server 2022 datacenter",
                values: CurrentVersion {
                    product_name: s("Windows Server 2022 Datacenter"),
                    build: s("20348"),
                    ubr: Some(2227),
                    display_version: s("21H2"),
                    edition_id: s("ServerDatacenter"),
                    installation_type: s("Server"),
                    ..win11.clone()
                },
                want_name: Some("Windows Server 2022 Datacenter"),
                want_pretty: Some("Windows Server 2022 Datacenter 21H2"),
                want_version: Some("10.0"),
                want_build: Some("20348.2227"),
            },
            Case {
                name: "server 2025 core, build above 22000",
                values: CurrentVersion {
                    product_name: s("Windows Server 2025 Standard"),
                    build: s("26100"),
                    ubr: Some(1742),
                    display_version: s("24H2"),
                    edition_id: s("ServerStandard"),
                    installation_type: s("Server Core"),
                    ..win11.clone()
                },
                want_name: Some("Windows Server 2025 Standard"),
                want_pretty: Some("Windows Server 2025 Standard 24H2"),
                want_version: Some("10.0"),
                want_build: Some("26100.1742"),
            },
            Case {
                name: "server edition with a windows 10 product name and no installation type",
                values: CurrentVersion {
                    product_name: s("Windows 10 Pro"),
                    edition_id: s("ServerStandard"),
                    installation_type: None,
                    ..win11.clone()
                },
                want_name: Some("Windows 10 Pro"),
                want_pretty: Some("Windows 10 Pro 23H2"),
                want_version: Some("10.0"),
                want_build: Some("22631.2861"),
            },
            Case {
                name: "2012 r2 with only CurrentVersion",
                values: CurrentVersion {
                    product_name: s("Windows Server 2012 R2 Datacenter"),
                    build: s("9600"),
                    ubr: None,
                    display_version: None,
                    edition_id: s("ServerDatacenter"),
                    installation_type: s("Server"),
                    major: None,
                    minor: None,
                    current_version: s("6.3"),
                },
                want_name: Some("Windows Server 2012 R2 Datacenter"),
                want_pretty: Some("Windows Server 2012 R2 Datacenter"),
                want_version: Some("6.3"),
                want_build: Some("9600"),
            },
            Case {
                name: "old windows 10 with ReleaseId read as display version",
                values: CurrentVersion {
                    product_name: s("Windows 10 Pro"),
                    build: s("18363"),
                    display_version: s("1909"),
                    ..win11.clone()
                },
                want_name: Some("Windows 10 Pro"),
                want_pretty: Some("Windows 10 Pro 1909"),
                want_version: Some("10.0"),
                want_build: Some("18363.2861"),
            },
            Case {
                name: "major without minor",
                values: CurrentVersion {
                    minor: None,
                    ..win11.clone()
                },
                want_name: Some("Windows 11 Pro"),
                want_pretty: Some("Windows 11 Pro 23H2"),
                want_version: Some("10.0"),
                want_build: Some("22631.2861"),
            },
            Case {
                name: "non-numeric build is kept but not taken as windows 11",
                values: CurrentVersion {
                    build: s("22631a"),
                    ..win11.clone()
                },
                want_name: Some("Windows 10 Pro"),
                want_pretty: Some("Windows 10 Pro 23H2"),
                want_version: Some("10.0"),
                want_build: Some("22631a.2861"),
            },
            Case {
                name: "ubr without build",
                values: CurrentVersion {
                    ubr: Some(5),
                    ..CurrentVersion::default()
                },
                want_name: None,
                want_pretty: None,
                want_version: None,
                want_build: None,
            },
            Case {
                name: "nothing known",
                values: CurrentVersion::default(),
                want_name: None,
                want_pretty: None,
                want_version: None,
                want_build: None,
            },
        ];
        for c in cases {
            let os = os_info(&c.values, s("HOST"), Some("x86_64"));
            assert_eq!(os.family, OsFamily::Windows, "case {}", c.name);
            assert_eq!(os.id, "windows", "case {}", c.name);
            assert_eq!(os.name.as_deref(), c.want_name, "case {}", c.name);
            assert_eq!(os.pretty_name.as_deref(), c.want_pretty, "case {}", c.name);
            assert_eq!(os.version_id.as_deref(), c.want_version, "case {}", c.name);
            assert_eq!(os.build.as_deref(), c.want_build, "case {}", c.name);
            assert_eq!(os.product_name.as_deref(), c.want_name, "case {}", c.name);
            assert_eq!(
                os.registry_product_name, c.values.product_name,
                "case {}",
                c.name
            );
            assert_eq!(
                os.display_version, c.values.display_version,
                "case {}",
                c.name
            );
            assert_eq!(os.edition, c.values.edition_id, "case {}", c.name);
            assert_eq!(
                os.installation_type, c.values.installation_type,
                "case {}",
                c.name
            );
            assert_eq!(os.hostname.as_deref(), Some("HOST"), "case {}", c.name);
            assert_eq!(os.arch.as_deref(), Some("x86_64"), "case {}", c.name);
            assert_eq!(os.version_codename, None, "case {}", c.name);
            assert_eq!(os.volume, None, "case {}", c.name);
        }
    }

    #[test]
    fn windows_11_renaming() {
        let cases = [
            ("Windows 10 Pro", "Windows 11 Pro"),
            ("Windows 10", "Windows 11"),
            (
                "Windows 10 Pro for Workstations",
                "Windows 11 Pro for Workstations",
            ),
            ("Microsoft Windows 10 Home", "Microsoft Windows 11 Home"),
            ("Windows 100 Pro", "Windows 100 Pro"),
            ("XWindows 10 Pro", "XWindows 10 Pro"),
            ("XWindows 10 Pro, Windows 10", "XWindows 10 Pro, Windows 11"),
            ("Windows 11 Home", "Windows 11 Home"),
            ("Windows 10ü", "Windows 10ü"),
            ("ü Windows 10", "ü Windows 11"),
            ("", ""),
        ];
        for (product, want) in cases {
            assert_eq!(windows_11_name(product), want, "case {product:?}");
        }
    }

    /// A Windows tree whose hives are `software` and `system` (absent when `None`).
    fn windows_tree(software: Option<&[u8]>, system: Option<&[u8]>) -> MemTree {
        let mut tree = MemTree::default()
            .dir("/Windows/System32/config")
            .file("/Windows/System32/cmd.exe", pe(0xaa64))
            .file("/Windows/System32/ntoskrnl.exe", pe(0x8664));
        if let Some(bytes) = software {
            tree = tree.file(SOFTWARE_HIVE, bytes);
        }
        if let Some(bytes) = system {
            tree = tree.file(SYSTEM_HIVE, bytes);
        }
        tree
    }

    /// A valid 4 KiB base block with `root` as the root cell offset
    /// and no hive bins.
    fn base_block(root: u32, seq2: u32) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(b"regf");
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..12].copy_from_slice(&seq2.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // major
        b[0x18..0x1c].copy_from_slice(&5u32.to_le_bytes()); // minor
        b[0x20..0x24].copy_from_slice(&1u32.to_le_bytes()); // file format: memory
        b[0x24..0x28].copy_from_slice(&root.to_le_bytes());
        b[0x2c..0x30].copy_from_slice(&1u32.to_le_bytes()); // clustering factor
        let sum = b[..0x1fc]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .fold(0, |a, d| a ^ d);
        let sum = match sum {
            0 => 1,
            u32::MAX => u32::MAX - 1,
            s => s,
        };
        b[0x1fc..0x200].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// A hive that passes the header checks and whose root key has one subkey, at cell offset
    /// 0xFFFFFFFF (nt-hive 0.3 asserted on it as soon as a subkey was looked up).
    pub(crate) fn hostile_hive() -> Vec<u8> {
        let mut hive = base_block(0x20, 1);
        let mut bins = vec![0u8; 4096];
        bins[..4].copy_from_slice(b"hbin");
        bins[8..12].copy_from_slice(&4096u32.to_le_bytes());
        // Root `nk` cell at 0x20: 4-byte size, 76-byte header, name "ROOT".
        let nk = 0x20;
        bins[nk..nk + 4].copy_from_slice(&(-88i32).to_le_bytes());
        let h = nk + 4;
        bins[h..h + 2].copy_from_slice(b"nk");
        bins[h + 2..h + 4].copy_from_slice(&0x2cu16.to_le_bytes()); // root, no delete, ASCII
        bins[h + 20..h + 24].copy_from_slice(&1u32.to_le_bytes()); // subkey count
        bins[h + 28..h + 32].copy_from_slice(&0x78u32.to_le_bytes()); // subkey list
        for field in [32, 40, 44, 48] {
            // volatile list, values list, security, class name: none
            bins[h + field..h + field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        bins[h + 72..h + 74].copy_from_slice(&4u16.to_le_bytes());
        bins[h + 76..h + 80].copy_from_slice(b"ROOT");
        // `lf` subkey list at 0x78 with one item pointing at cell 0xFFFFFFFF.
        let lf = 0x78;
        bins[lf..lf + 4].copy_from_slice(&(-16i32).to_le_bytes());
        bins[lf + 4..lf + 6].copy_from_slice(b"lf");
        bins[lf + 6..lf + 8].copy_from_slice(&1u16.to_le_bytes());
        bins[lf + 8..lf + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        bins[lf + 12..lf + 16].copy_from_slice(b"Micr");
        hive.extend_from_slice(&bins);
        hive
    }

    #[test]
    fn hostile_hive_leaves_fields_empty() {
        // nt-hive 0.3 asserted on this hive's subkey at cell 0xFFFFFFFF; the lazy reader calls
        // it corrupt.
        let hive = hostile_hive();
        let fs = Rooted(windows_tree(Some(&hive), Some(&hive)));
        let os = detect(&fs).expect("detect").expect("windows");
        let mut want = OsInfo::new(OsFamily::Windows, "windows");
        want.arch = Some("aarch64".into());
        assert_eq!(os, want);
    }

    #[test]
    fn undescribed_windows_is_still_windows() {
        struct Case {
            name: &'static str,
            software: Option<Vec<u8>>,
            system: Option<Vec<u8>>,
        }
        let random = random_bytes(0x2545_f491_u32, 8192);
        let mut regf_random = random.clone();
        regf_random[..4].copy_from_slice(b"regf");
        let cases = [
            Case {
                name: "no hives",
                software: None,
                system: None,
            },
            Case {
                name: "empty hives",
                software: Some(Vec::new()),
                system: Some(Vec::new()),
            },
            Case {
                name: "random bytes",
                software: Some(random.clone()),
                system: Some(random),
            },
            Case {
                name: "regf then random",
                software: Some(regf_random.clone()),
                system: Some(regf_random),
            },
            Case {
                name: "truncated base block",
                software: Some(b"regf".to_vec()),
                system: Some(base_block(0x20, 1)[..512].to_vec()),
            },
            Case {
                name: "root cell outside the hive",
                software: Some(base_block(0x20, 1)),
                system: Some(base_block(0x7fff_ffff, 1)),
            },
            Case {
                name: "dirty, root cell outside the hive",
                software: Some(base_block(0x20, 2)),
                system: Some(base_block(0x20, 7)),
            },
            // nt-hive 0.3 asserted on this one.
            Case {
                name: "root cell offset 0xffffffff",
                software: Some(base_block(u32::MAX, 1)),
                system: Some(base_block(u32::MAX, 2)),
            },
        ];
        for c in cases {
            let fs = Rooted(windows_tree(c.software.as_deref(), c.system.as_deref()));
            let os = detect(&fs)
                .unwrap_or_else(|e| panic!("case {}: {e}", c.name))
                .unwrap_or_else(|| panic!("case {}: no windows", c.name));
            let mut want = OsInfo::new(OsFamily::Windows, "windows");
            want.arch = Some("aarch64".into());
            assert_eq!(os, want, "case {}", c.name);
        }
    }

    #[test]
    fn not_windows() {
        struct Case {
            name: &'static str,
            tree: MemTree,
        }
        let cases = [
            Case {
                name: "empty volume",
                tree: MemTree::default(),
            },
            Case {
                name: "linux root",
                tree: MemTree::default().file("/etc/os-release", "ID=debian\n"),
            },
            Case {
                name: "config is a file",
                tree: MemTree::default().file("/Windows/System32/config", "x"),
            },
            Case {
                name: "System32 without config",
                tree: MemTree::default().file("/Windows/System32/cmd.exe", pe(0x8664)),
            },
            Case {
                name: "config is a dangling link",
                tree: MemTree::default().symlink("/Windows/System32/config", "/nowhere"),
            },
            Case {
                name: "config is a link loop",
                tree: MemTree::default().symlink("/Windows/System32/config", "config"),
            },
        ];
        for c in cases {
            assert_eq!(detect(&Rooted(c.tree)), Ok(None), "case {}", c.name);
        }
    }

    #[test]
    fn arch_and_links() {
        // cmd.exe missing: ntoskrnl.exe decides. The config directory reached through a link.
        let fs = Rooted(
            MemTree::default()
                .dir("/Windows/System32/real-config")
                .symlink("/Windows/System32/config", "real-config")
                .file("/Windows/System32/ntoskrnl.exe", pe(0x14c)),
        );
        let os = detect(&fs).expect("detect").expect("windows");
        assert_eq!(os.arch.as_deref(), Some("i686"));

        // cmd.exe not a PE file: ntoskrnl.exe decides; neither: no arch.
        let fs = Rooted(
            MemTree::default()
                .dir("/Windows/System32/config")
                .file("/Windows/System32/cmd.exe", "MZ")
                .file("/Windows/System32/ntoskrnl.exe", pe(0x8664)),
        );
        let os = detect(&fs).expect("detect").expect("windows");
        assert_eq!(os.arch.as_deref(), Some("x86_64"));
        let fs = Rooted(MemTree::default().dir("/Windows/System32/config"));
        let os = detect(&fs).expect("detect").expect("windows");
        assert_eq!(os.arch, None);
    }

    #[test]
    fn device_errors_stop_detection_others_do_not() {
        struct Case {
            name: &'static str,
            path: &'static str,
            error: FsError,
            want: Result<bool, &'static str>,
        }
        let io = || FsError::Io("sector 42 unreadable".into());
        let cases = [
            Case {
                name: "io on config",
                path: CONFIG_DIR,
                error: io(),
                want: Err("io"),
            },
            Case {
                name: "timeout on config",
                path: CONFIG_DIR,
                error: FsError::Timeout(5000),
                want: Err("timeout"),
            },
            Case {
                name: "corrupt config",
                path: CONFIG_DIR,
                error: FsError::Corrupt("bad index".into()),
                want: Ok(false),
            },
            Case {
                name: "io on SOFTWARE",
                path: SOFTWARE_HIVE,
                error: io(),
                want: Err("io"),
            },
            Case {
                name: "io on SYSTEM",
                path: SYSTEM_HIVE,
                error: io(),
                want: Err("io"),
            },
            Case {
                name: "io on cmd.exe",
                path: ARCH_PROBES[0],
                error: io(),
                want: Err("io"),
            },
            Case {
                name: "ntoskrnl.exe unread when cmd.exe decides",
                path: ARCH_PROBES[1],
                error: FsError::Timeout(1),
                want: Ok(true),
            },
            Case {
                name: "SOFTWARE too large",
                path: SOFTWARE_HIVE,
                error: FsError::TooLarge {
                    path: SOFTWARE_HIVE.into(),
                    len: u64::MAX,
                    limit: 1 << 30,
                },
                want: Ok(true),
            },
            Case {
                name: "corrupt SOFTWARE",
                path: SOFTWARE_HIVE,
                error: FsError::Corrupt("bad run list".into()),
                want: Ok(true),
            },
            Case {
                name: "unsupported SYSTEM",
                path: SYSTEM_HIVE,
                error: FsError::Unsupported("compressed".into()),
                want: Ok(true),
            },
        ];
        for c in cases {
            let fs = Failing {
                inner: Rooted(windows_tree(Some(b"junk"), Some(b"junk"))),
                path: c.path,
                error: c.error,
            };
            let got = detect(&fs).map(|os| os.is_some()).map_err(|e| e.kind());
            assert_eq!(got, c.want, "case {}", c.name);
        }
    }
}
