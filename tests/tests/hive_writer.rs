//! The test hive writer (`snapscan_tests::hive`) and the synthetic Windows roots
//! (`snapscan_tests::windows`), read back by independent readers: hivex (`hivexget` and
//! `hivexml` from Debian's libhivex-bin) and the `nt-hive` crate, and by snapscan's own lazy
//! reader (`snapscan::registry`), which must agree with them.
//!
//! Every value is checked with every reader, so a hive that only one of them accepts fails.
//! Beyond that: big-data values, deleted keys left as free cells, a dirty hive whose `.LOG1`
//! holds newer pages (hivex, which does not replay logs, sees the old value; snapscan the new
//! one), real-size `SOFTWARE`/`SYSTEM` hives cross-checked with hivexget, and a Windows image
//! carrying them, inspected within a read budget. When the hivex tools are missing, the hivex
//! half is skipped with a printed note; the rest always runs.

use std::path::Path;
use std::process::Command;

use nt_hive::{KeyNode, KeyValueDataType};
use snapscan::fs::host::HostTree;
use snapscan::fs::Rooted;
use snapscan::registry::{self, HiveError};
use snapscan_tests::hive::{realistic, Data, Hive, MAX_VALUE_DATA};
use snapscan_tests::images;
use snapscan_tests::windows::{expected, programs, write_root, WindowsFlavor};

/// Whether the hivex tools are installed; prints a note when they are not.
fn have_hivex() -> bool {
    let found = Command::new("hivexml").arg("--help").output().is_ok();
    if !found {
        snapscan_tests::skip("hivexml/hivexget not found (Debian libhivex-bin): no hivex checks");
    }
    found
}

/// `hivexget FILE KEY VALUE`: the value as hivexget prints it.
///
/// # Panics
/// If hivexget fails or complains on stderr.
fn hivexget(file: &Path, key: &str, value: &str) -> Vec<u8> {
    let out = Command::new("hivexget")
        .arg(file)
        .arg(key)
        .arg(value)
        .output()
        .expect("failed to run hivexget");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "hivexget {} '{key}' '{value}' failed ({}): {stderr}",
        file.display(),
        out.status
    );
    out.stdout
}

/// `hivexml FILE` walks the whole hive (every key, value and cell); it must succeed cleanly.
fn hivexml(file: &Path) -> String {
    let out = Command::new("hivexml")
        .arg(file)
        .output()
        .expect("failed to run hivexml");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "hivexml {} failed ({}): {stderr}",
        file.display(),
        out.status
    );
    String::from_utf8(out.stdout).expect("hivexml prints UTF-8")
}

/// What hivexget prints for `data`: strings and (signed) numbers with a newline, one line per
/// REG_MULTI_SZ entry plus an empty one, binary data raw.
fn hivexget_form(data: &Data) -> Vec<u8> {
    match data {
        Data::Sz(s) | Data::ExpandSz(s) => format!("{s}\n").into_bytes(),
        // hivexsh prints numbers as signed integers.
        Data::Dword(v) => format!("{}\n", i32::from_le_bytes(v.to_le_bytes())).into_bytes(),
        Data::Qword(v) => format!("{}\n", i64::from_le_bytes(v.to_le_bytes())).into_bytes(),
        // hivex reads the list's final NUL as one more, empty, entry: since 1.3.x it keeps empty
        // entries, which Windows itself stores (PendingFileRenameOperations).
        Data::MultiSz(list) => list
            .iter()
            .map(|s| format!("{s}\n"))
            .chain([String::from("\n")])
            .collect::<String>()
            .into(),
        Data::Binary(b) => b.clone(),
    }
}

/// The value `name` of the key at `path` as nt-hive reads it, in the writer's terms.
fn nt_hive_value(root: &KeyNode<&[u8]>, path: &str, name: &str) -> Data {
    let key = root
        .subpath(path)
        .unwrap_or_else(|| panic!("nt-hive: no key '{path}'"))
        .unwrap_or_else(|e| panic!("nt-hive: key '{path}': {e}"));
    let value = key
        .value(name)
        .unwrap_or_else(|| panic!("nt-hive: no value '{name}' in '{path}'"))
        .unwrap_or_else(|e| panic!("nt-hive: value '{name}' in '{path}': {e}"));
    let ok = |e: nt_hive::NtHiveError| format!("nt-hive: data of '{path}' '{name}': {e}");
    match value
        .data_type()
        .map_err(ok)
        .unwrap_or_else(|e| panic!("{e}"))
    {
        KeyValueDataType::RegSZ => Data::Sz(value.string_data().map_err(ok).expect("REG_SZ")),
        KeyValueDataType::RegExpandSZ => {
            Data::ExpandSz(value.string_data().map_err(ok).expect("REG_EXPAND_SZ"))
        }
        KeyValueDataType::RegBinary => Data::Binary(
            value
                .data()
                .and_then(|d| d.into_vec())
                .map_err(ok)
                .expect("REG_BINARY"),
        ),
        KeyValueDataType::RegDWord => {
            Data::Dword(value.dword_data().map_err(ok).expect("REG_DWORD"))
        }
        KeyValueDataType::RegQWord => {
            Data::Qword(value.qword_data().map_err(ok).expect("REG_QWORD"))
        }
        KeyValueDataType::RegMultiSZ => Data::MultiSz(
            value
                .multi_string_data()
                .and_then(|lines| lines.collect::<Result<Vec<String>, _>>())
                .map_err(ok)
                .expect("REG_MULTI_SZ"),
        ),
        other => panic!("nt-hive: '{path}' '{name}' has unexpected type {other:?}"),
    }
}

/// The names of the subkeys of the key at `path`, in stored order, as nt-hive reads them.
fn nt_hive_subkeys(root: &KeyNode<&[u8]>, path: &str) -> Vec<String> {
    let key = root
        .subpath(path)
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("nt-hive: no key '{path}'"));
    let Some(subkeys) = key.subkeys() else {
        return Vec::new();
    };
    subkeys
        .expect("nt-hive: subkey list")
        .map(|k| {
            k.and_then(|k| k.name().map(|n| n.to_string_lossy()))
                .expect("nt-hive: subkey name")
        })
        .collect()
}

/// Parse `bytes` with nt-hive, validating the base block, and run `check` on the root key.
fn with_nt_hive(bytes: &[u8], check: impl FnOnce(&KeyNode<&[u8]>)) {
    let hive = nt_hive::Hive::new(bytes).expect("nt-hive rejects the hive");
    assert_eq!((hive.major_version(), hive.minor_version()), (1, 5));
    let root = hive.root_key_node().expect("nt-hive: root key");
    check(&root);
}

/// Open `dir/name` with snapscan's lazy reader (replaying `name.LOG1`/`.LOG2` if present) and
/// run `check` on it.
fn with_snapscan(dir: &Path, name: &str, check: impl FnOnce(&registry::Hive<'_>)) {
    let fs = Rooted(HostTree::new(dir));
    let hive = registry::Hive::open_path(&fs, name).expect("snapscan: open the hive");
    check(&hive);
}

/// The value `name` of the key at `path` as snapscan reads it, decoded like `like` (raw bytes for
/// REG_BINARY); `None` for REG_MULTI_SZ, which snapscan does not decode.
fn snapscan_value(hive: &registry::Hive<'_>, path: &str, name: &str, like: &Data) -> Option<Data> {
    fn failed<'a, T>(path: &'a str, name: &'a str) -> impl FnOnce(HiveError) -> T + 'a {
        move |e| panic!("snapscan: '{path}' '{name}': {e}")
    }
    let key = hive
        .key(path)
        .unwrap_or_else(failed(path, name))
        .unwrap_or_else(|| panic!("snapscan: no key '{path}'"));
    let value = key
        .value(name)
        .unwrap_or_else(failed(path, name))
        .unwrap_or_else(|| panic!("snapscan: no value '{name}' in '{path}'"));
    assert_eq!(
        value.data_type(),
        like.type_code(),
        "snapscan: type of {path} {name}"
    );
    let string = || {
        value
            .string(1 << 20)
            .unwrap_or_else(failed(path, name))
            .expect("a string")
    };
    Some(match like {
        Data::Sz(_) => Data::Sz(string()),
        Data::ExpandSz(_) => Data::ExpandSz(string()),
        Data::Dword(_) => Data::Dword(
            value
                .dword()
                .unwrap_or_else(failed(path, name))
                .expect("a dword"),
        ),
        Data::Qword(_) => Data::Qword(
            value
                .qword()
                .unwrap_or_else(failed(path, name))
                .expect("a qword"),
        ),
        Data::Binary(_) => Data::Binary(value.data(1 << 20).unwrap_or_else(failed(path, name))),
        Data::MultiSz(_) => return None,
    })
}

/// The names of the subkeys of the key at `path`, in stored order, as snapscan reads them.
fn snapscan_subkeys(hive: &registry::Hive<'_>, path: &str) -> Vec<String> {
    hive.key(path)
        .expect("snapscan: lookup")
        .unwrap_or_else(|| panic!("snapscan: no key '{path}'"))
        .subkeys(usize::MAX)
        .expect("snapscan: subkey list")
        .iter()
        .map(|k| k.name().expect("snapscan: subkey name"))
        .collect()
}

/// One value the writer test sets and reads back.
struct Case {
    key: &'static str,
    value: &'static str,
    data: Data,
}

fn cases() -> Vec<Case> {
    let ramp: Vec<u8> = (0..=255u8).cycle().take(MAX_VALUE_DATA).collect();
    let case = |key, value, data| Case { key, value, data };
    vec![
        case(
            r"Software\Vendor\App",
            "Name",
            Data::Sz("Snapscan test app".into()),
        ),
        case(r"Software\Vendor\App", "Empty", Data::Sz(String::new())),
        // 1 character + NUL = 4 bytes: stored inline in the vk cell.
        case(r"Software\Vendor\App", "Short", Data::Sz("A".into())),
        case(
            r"Software\Vendor\App",
            "Ümlaut",
            Data::Sz("grüße, 世界".into()),
        ),
        case(
            r"Software\Vendor\App",
            "",
            Data::Sz("the default value".into()),
        ),
        case(
            r"Software\Vendor\App",
            "Path",
            Data::ExpandSz(r"%SystemRoot%\system32".into()),
        ),
        case(r"Software\Vendor\App", "Count", Data::Dword(0xDEAD_BEEF)),
        case(r"Software\Vendor\App", "Zero", Data::Dword(0)),
        case(
            r"Software\Vendor\App",
            "Big",
            Data::Qword(0x0123_4567_89AB_CDEF),
        ),
        case(
            r"Software\Vendor\App",
            "Lines",
            Data::MultiSz(vec!["first".into(), "second line".into(), "drittë".into()]),
        ),
        case(r"Software\Vendor\App", "Tiny", Data::Binary(vec![1, 2, 3])),
        case(r"Software\Vendor\App", "NoBytes", Data::Binary(Vec::new())),
        // Bigger than one 4 KiB hbin: the writer opens a larger bin for it.
        case(r"Software\Vendor\App\Blobs", "Largest", Data::Binary(ramp)),
        case(
            r"Software\Vendor\App\Blobs",
            "Small",
            Data::Binary(b"\0\xff\n\r".to_vec()),
        ),
        // Over one cell: big data (db), three segments.
        case(
            r"Software\Vendor\App\Blobs",
            "Huge",
            Data::Binary((0..40_000u32).map(|i| (i % 253) as u8).collect()),
        ),
        case(
            r"Software\Vendor\App\Blobs",
            "LongText",
            Data::Sz("0123456789".repeat(2_000)),
        ),
        case(r"Software\Ключ\Deep\Deeper\Deepest", "Wert", Data::Dword(7)),
        case("TopLevel", "Flag", Data::Qword(1)),
    ]
}

#[test]
fn all_value_types_read_back_alike_by_hivex_and_nt_hive() {
    let mut hive = Hive::new();
    for c in cases() {
        hive.key(c.key).set(c.value, c.data.clone());
    }
    // Many subkeys, added in an order unlike the sorted one and in mixed case, so the lh list
    // must be sorted and the hive spans several hbins.
    let many: Vec<String> = (0..300)
        .rev()
        .map(|i| format!("Sub{:03}-{}", i * 7 % 300, ["x", "Y"][i % 2]))
        .collect();
    for name in &many {
        hive.key(&format!(r"Software\Many\{name}"))
            .dword("Index", 1);
    }
    // Case-insensitive paths reach the same key; set() replaces a value of the same name.
    hive.key(r"SOFTWARE\vendor\APP").sz("name", "replaced");
    hive.key(r"Software\Vendor\App")
        .sz("Name", "Snapscan test app");

    let bytes = hive.to_bytes().expect("to_bytes");
    assert_eq!(bytes.len() % 4096, 0);
    assert!(
        bytes.len() > 3 * 4096,
        "expected several hbins, got {} bytes",
        bytes.len()
    );

    let mut sorted = many.clone();
    sorted.sort_by_key(|s| s.to_uppercase());
    with_nt_hive(&bytes, |root| {
        for c in cases() {
            assert_eq!(
                nt_hive_value(root, c.key, c.value),
                c.data,
                "{} {}",
                c.key,
                c.value
            );
        }
        assert_eq!(nt_hive_subkeys(root, r"Software\Many"), sorted);
        // Lookups by binary search find every subkey, in any case.
        for name in &many {
            let path = format!(r"software\many\{}", name.to_lowercase());
            assert_eq!(
                nt_hive_value(root, &path, "Index"),
                Data::Dword(1),
                "{path}"
            );
        }
        assert_eq!(nt_hive_subkeys(root, ""), ["Software", "TopLevel"]);
    });
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("test.hive"), &bytes).expect("write hive");
    with_snapscan(dir.path(), "test.hive", |hive| {
        for c in cases() {
            if let Some(got) = snapscan_value(hive, c.key, c.value, &c.data) {
                assert_eq!(got, c.data, "snapscan: {} {}", c.key, c.value);
            }
        }
        assert_eq!(snapscan_subkeys(hive, r"Software\Many"), sorted);
        for name in &many {
            let path = format!(r"software\many\{}", name.to_lowercase());
            assert!(
                hive.key(&path).expect("lookup").is_some(),
                "snapscan: {path}"
            );
        }
    });

    if !have_hivex() {
        return;
    }
    let file = dir.path().join("test.hive");
    // hivexml visits every key: the root, each distinct path prefix of the cases, Software\Many
    // and its subkeys.
    let mut prefixes = std::collections::BTreeSet::new();
    for c in cases() {
        let parts: Vec<String> = c.key.split('\\').map(str::to_uppercase).collect();
        for n in 1..=parts.len() {
            prefixes.insert(parts[..n].join("\\"));
        }
    }
    let keys = 1 + prefixes.len() + 1 + many.len();
    assert_eq!(
        hivexml(&file).matches("<node ").count(),
        keys,
        "keys hivexml walked"
    );
    for c in cases() {
        // hivexsh splits its command line at spaces; the cases avoid them in value names.
        let name = if c.value.is_empty() { "@" } else { c.value };
        assert_eq!(
            hivexget(&file, c.key, name),
            hivexget_form(&c.data),
            "hivexget {} {name}",
            c.key
        );
    }
}

#[test]
fn unsupported_hives_are_refused() {
    let table: Vec<(&str, Hive)> = vec![
        ("empty REG_MULTI_SZ entry", {
            let mut h = Hive::new();
            h.key("K").multi_sz("V", &["a", "", "b"]);
            h
        }),
        ("key name over 255 characters", {
            let mut h = Hive::new();
            h.key(&"k".repeat(256));
            h
        }),
    ];
    for (name, hive) in table {
        assert!(hive.to_bytes().is_err(), "{name}: expected an error");
    }
}

#[test]
fn windows_roots_hold_the_expected_registry_values() {
    for flavor in [WindowsFlavor::Server2022, WindowsFlavor::Windows11] {
        let dir = tempfile::tempdir().expect("temp dir");
        write_root(dir.path(), flavor).expect("write_root");
        let config = dir.path().join("Windows/System32/config");
        let software = config.join("SOFTWARE");
        let system = config.join("SYSTEM");
        let e = expected(flavor);
        let (build, ubr) = e.build.split_once('.').expect("build has a UBR");
        let ubr: u32 = ubr.parse().expect("UBR is a number");

        let cv = r"Microsoft\Windows NT\CurrentVersion";
        let software_values = [
            (cv, "ProductName", Data::Sz(e.product_name.into())),
            (cv, "CurrentBuild", Data::Sz(build.into())),
            (cv, "CurrentBuildNumber", Data::Sz(build.into())),
            (cv, "UBR", Data::Dword(ubr)),
            (cv, "DisplayVersion", Data::Sz(e.display_version.into())),
            (cv, "EditionID", Data::Sz(e.edition.into())),
            (cv, "InstallationType", Data::Sz(e.installation_type.into())),
            (cv, "CurrentVersion", Data::Sz("6.3".into())),
            (cv, "CurrentMajorVersionNumber", Data::Dword(10)),
            (cv, "CurrentMinorVersionNumber", Data::Dword(0)),
        ];
        let params = r"ControlSet001\Services\Tcpip\Parameters";
        let system_values = [
            ("Select", "Current", Data::Dword(1)),
            ("Select", "Default", Data::Dword(1)),
            ("Select", "LastKnownGood", Data::Dword(1)),
            (
                r"ControlSet001\Control\ComputerName\ComputerName",
                "ComputerName",
                Data::Sz(e.hostname.into()),
            ),
            (params, "Hostname", Data::Sz(e.hostname.into())),
            (params, "Domain", Data::Sz(String::new())),
        ];

        // Installed programs, read the way the scan will: every Uninstall subkey with a
        // DisplayName, native view first.
        let views = [
            r"Microsoft\Windows\CurrentVersion\Uninstall",
            r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
        ];
        let software_bytes = std::fs::read(&software).expect("read SOFTWARE");
        let mut found = Vec::new();
        with_nt_hive(&software_bytes, |root| {
            for (key, value, data) in &software_values {
                assert_eq!(
                    &nt_hive_value(root, key, value),
                    data,
                    "{flavor:?} {key} {value}"
                );
            }
            for view in views {
                for sub in nt_hive_subkeys(root, view) {
                    let path = format!(r"{view}\{sub}");
                    let key = root.subpath(&path).and_then(Result::ok).expect("subkey");
                    if key.value("DisplayName").is_none() {
                        continue;
                    }
                    let sz = |name| match nt_hive_value(root, &path, name) {
                        Data::Sz(s) => s,
                        other => panic!("{path} {name} is {other:?}"),
                    };
                    found.push((
                        sz("DisplayName"),
                        sz("DisplayVersion"),
                        sz("Publisher"),
                        view,
                        sub,
                    ));
                }
            }
        });
        let listed: Vec<(String, String, String)> = found
            .iter()
            .map(|(n, v, p, _, _)| (n.clone(), v.clone(), p.clone()))
            .collect();
        let mut want: Vec<(String, String, String)> = programs(flavor)
            .into_iter()
            .map(|(n, v, p)| (n.into(), v.into(), p.into()))
            .collect();
        // programs() lists each view in the writer's order; the hive sorts subkeys by name.
        let mut got_sorted = listed.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want, "{flavor:?}: installed programs");

        let system_bytes = std::fs::read(&system).expect("read SYSTEM");
        with_nt_hive(&system_bytes, |root| {
            for (key, value, data) in &system_values {
                assert_eq!(
                    &nt_hive_value(root, key, value),
                    data,
                    "{flavor:?} {key} {value}"
                );
            }
            assert!(
                root.subkey("CurrentControlSet").is_none(),
                "CurrentControlSet is volatile"
            );
        });

        // The PE headers say x86-64, PE32+.
        for exe in ["cmd.exe", "ntoskrnl.exe"] {
            let pe =
                std::fs::read(dir.path().join("Windows/System32").join(exe)).expect("read exe");
            assert_eq!(&pe[..2], b"MZ");
            let lfanew = usize::try_from(u32::from_le_bytes(
                pe[0x3C..0x40].try_into().expect("4 bytes"),
            ))
            .expect("usize");
            assert_eq!(&pe[lfanew..lfanew + 4], b"PE\0\0", "{exe}");
            assert_eq!(
                u16::from_le_bytes([pe[lfanew + 4], pe[lfanew + 5]]),
                0x8664,
                "{exe}"
            );
            assert_eq!(
                u16::from_le_bytes([pe[lfanew + 24], pe[lfanew + 25]]),
                0x20B,
                "{exe}"
            );
        }
        for path in [
            "Program Files",
            "Program Files (x86)",
            "ProgramData",
            "Users/Public",
            "Windows/System32/drivers/etc/hosts",
        ] {
            assert!(dir.path().join(path).exists(), "{flavor:?}: missing {path}");
        }

        if !have_hivex() {
            continue;
        }
        hivexml(&software);
        hivexml(&system);
        for (file, values) in [
            (&software, &software_values[..]),
            (&system, &system_values[..]),
        ] {
            for (key, value, data) in values {
                assert_eq!(
                    String::from_utf8_lossy(&hivexget(file, key, value)),
                    String::from_utf8_lossy(&hivexget_form(data)),
                    "{flavor:?}: hivexget {key} {value}"
                );
            }
        }
        for (name, version, publisher, view, sub) in &found {
            let key = format!(r"{view}\{sub}");
            for (value, want) in [
                ("DisplayName", name),
                ("DisplayVersion", version),
                ("Publisher", publisher),
            ] {
                assert_eq!(
                    String::from_utf8_lossy(&hivexget(&software, &key, value)),
                    format!("{want}\n"),
                    "{flavor:?}: hivexget {key} {value}"
                );
            }
        }
    }
}

#[test]
fn deleted_keys_stay_invisible() {
    let mut hive = Hive::new();
    hive.key(r"Software\Kept").sz("Name", "kept");
    hive.deleted("Removed")
        .sz("Name", "stale")
        .key("Child")
        .dword("Old", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("deleted.hive");
    hive.write(&file).expect("write");
    let bytes = std::fs::read(&file).expect("read");
    assert!(
        bytes.windows(7).any(|w| w == b"Removed"),
        "the stale key data is in the file"
    );
    with_nt_hive(&bytes, |root| {
        assert_eq!(nt_hive_subkeys(root, ""), ["Software"]);
    });
    with_snapscan(dir.path(), "deleted.hive", |hive| {
        assert_eq!(snapscan_subkeys(hive, ""), ["Software"]);
        assert!(hive.key("Removed").expect("lookup").is_none());
        let data = Data::Sz("kept".into());
        assert_eq!(
            snapscan_value(hive, r"Software\Kept", "Name", &data),
            Some(data)
        );
    });
    if have_hivex() {
        assert_eq!(
            hivexml(&file).matches("<node ").count(),
            3,
            "root, Software, Kept"
        );
    }
}

#[test]
fn dirty_hive_is_replayed_from_its_log() {
    let mut old = Hive::new();
    old.key(r"Microsoft\Windows NT\CurrentVersion")
        .sz("ProductName", "Old Windows")
        .dword("UBR", 1);
    let mut new = old.clone();
    new.key(r"Microsoft\Windows NT\CurrentVersion")
        .sz("ProductName", "New Windows")
        .dword("UBR", 2);
    // Enough new keys that the hive bins data grows: the log's size must be used.
    for i in 0..200 {
        new.key(&format!(r"Microsoft\Added\Key{i}"))
            .sz("Text", &"x".repeat(100));
    }
    let (primary, log) = old.dirty_with_log(&new).expect("dirty_with_log");
    assert!(new.to_bytes().expect("to_bytes").len() > primary.len());
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("SOFTWARE"), &primary).expect("write primary");
    let cv = r"Microsoft\Windows NT\CurrentVersion";
    let name = Data::Sz(String::new());
    // Without the log: the primary's own (old) values.
    with_snapscan(dir.path(), "SOFTWARE", |hive| {
        assert!(hive.is_dirty());
        assert_eq!(hive.replayed(), 0);
        assert_eq!(
            snapscan_value(hive, cv, "ProductName", &name),
            Some(Data::Sz("Old Windows".into()))
        );
    });
    std::fs::write(dir.path().join("SOFTWARE.LOG1"), &log).expect("write log");
    with_snapscan(dir.path(), "SOFTWARE", |hive| {
        assert_eq!(hive.replayed(), 1);
        assert_eq!(
            snapscan_value(hive, cv, "ProductName", &name),
            Some(Data::Sz("New Windows".into()))
        );
        assert_eq!(
            snapscan_value(hive, cv, "UBR", &Data::Dword(0)),
            Some(Data::Dword(2))
        );
        assert_eq!(snapscan_subkeys(hive, r"Microsoft\Added").len(), 200);
    });
    // Detection over a Windows tree carrying the dirty hive reports the replayed values.
    let config = dir.path().join("Windows/System32/config");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(config.join("SOFTWARE"), &primary).expect("write primary");
    std::fs::write(config.join("SOFTWARE.LOG1"), &log).expect("write log");
    let os = snapscan::detect::detect(&Rooted(HostTree::new(dir.path())))
        .expect("detect")
        .expect("windows");
    assert_eq!(os.registry_product_name.as_deref(), Some("New Windows"));
    if have_hivex() {
        // hivex does not replay logs: it reads the primary as it is.
        let file = dir.path().join("SOFTWARE");
        assert_eq!(hivexget(&file, cv, "ProductName"), b"Old Windows\n");
    }
}

/// The values of `key` that both hivexget and snapscan must read alike in the real-size hives.
fn real_size_values(flavor: WindowsFlavor) -> Vec<(&'static str, &'static str, Data)> {
    let e = expected(flavor);
    let (build, ubr) = e.build.split_once('.').expect("build has a UBR");
    let cv = r"Microsoft\Windows NT\CurrentVersion";
    let (big_key, big_name, _) = realistic::BIG_VALUE;
    vec![
        (cv, "ProductName", Data::Sz(e.product_name.into())),
        (cv, "CurrentBuild", Data::Sz(build.into())),
        (cv, "UBR", Data::Dword(ubr.parse().expect("UBR"))),
        (cv, "DisplayVersion", Data::Sz(e.display_version.into())),
        (cv, "EditionID", Data::Sz(e.edition.into())),
        (cv, "InstallationType", Data::Sz(e.installation_type.into())),
        (cv, "CurrentMajorVersionNumber", Data::Dword(10)),
        (cv, "InstallTime", Data::Qword(133_485_408_000_000_000)),
        (big_key, big_name, Data::Sz(realistic::big_value_text())),
    ]
}

#[test]
fn real_size_hives_read_alike_by_hivex_and_snapscan() {
    let flavor = WindowsFlavor::Server2022;
    let dir = tempfile::tempdir().expect("temp dir");
    let software = dir.path().join("SOFTWARE");
    let system = dir.path().join("SYSTEM");
    realistic::software(flavor, realistic::FIXTURE_PROGRAMS, 110)
        .write(&software)
        .expect("write SOFTWARE");
    realistic::system(flavor, 20)
        .write(&system)
        .expect("write SYSTEM");
    let size = |p: &Path| std::fs::metadata(p).expect("stat").len();
    assert!(
        size(&software) > 100 << 20,
        "SOFTWARE is {} bytes",
        size(&software)
    );
    assert!(
        size(&system) > 10 << 20,
        "SYSTEM is {} bytes",
        size(&system)
    );

    let values = real_size_values(flavor);
    let views = [
        (r"Microsoft\Windows\CurrentVersion\Uninstall", false),
        (
            r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
            true,
        ),
    ];
    // (view, subkey, DisplayName, DisplayVersion, Publisher) as snapscan lists them.
    let mut listed = Vec::new();
    with_snapscan(dir.path(), "SOFTWARE", |hive| {
        for (key, name, data) in &values {
            assert_eq!(
                snapscan_value(hive, key, name, data).as_ref(),
                Some(data),
                "{key} {name}"
            );
        }
        for (view, _) in views {
            for sub in snapscan_subkeys(hive, view) {
                let path = format!(r"{view}\{sub}");
                let key = hive.key(&path).expect("lookup").expect("subkey");
                let sz = |name| {
                    key.value(name)
                        .expect("value")
                        .map(|v| v.string(4096).expect("string").expect("REG_SZ"))
                };
                if let Some(display) = sz("DisplayName") {
                    listed.push((
                        view,
                        sub,
                        display,
                        sz("DisplayVersion").unwrap_or_default(),
                        sz("Publisher").unwrap_or_default(),
                    ));
                }
            }
        }
    });
    let mut got: Vec<_> = listed
        .iter()
        .filter(|l| l.2 != "Connection Manager")
        .map(|(view, _, n, v, p)| (n.clone(), v.clone(), p.clone(), view.contains("WOW6432")))
        .collect();
    got.sort();
    let mut want = realistic::programs(realistic::FIXTURE_PROGRAMS);
    want.sort();
    assert_eq!(got, want, "Uninstall entries");
    with_snapscan(dir.path(), "SYSTEM", |hive| {
        let params = r"ControlSet001\Services\Tcpip\Parameters";
        let host = Data::Sz(expected(flavor).hostname.into());
        assert_eq!(snapscan_value(hive, params, "Hostname", &host), Some(host));
    });

    if !have_hivex() {
        return;
    }
    for (key, name, data) in &values {
        assert_eq!(
            String::from_utf8_lossy(&hivexget(&software, key, name)),
            String::from_utf8_lossy(&hivexget_form(data)),
            "hivexget {key} {name}"
        );
    }
    // Every 25th program, in both views, read back by hivexget.
    let programs = listed.iter().filter(|l| l.2 != "Connection Manager");
    for (view, sub, name, version, publisher) in programs.step_by(25) {
        let key = format!(r"{view}\{sub}");
        assert_eq!(
            hivexget(&software, &key, "DisplayName"),
            format!("{name}\n").as_bytes()
        );
        assert_eq!(
            hivexget(&software, &key, "DisplayVersion"),
            format!("{version}\n").as_bytes()
        );
        assert_eq!(
            hivexget(&software, &key, "Publisher"),
            format!("{publisher}\n").as_bytes()
        );
    }
    assert_eq!(
        hivexget(
            &system,
            r"ControlSet001\Services\Tcpip\Parameters",
            "Hostname"
        ),
        format!("{}\n", expected(flavor).hostname).as_bytes()
    );
}

#[test]
fn real_size_windows_image_is_read_lazily() {
    if !images::is_root() {
        snapscan_tests::skip("windows-real-hives: building it needs root");
        return;
    }
    let image = images::image("windows-real-hives").expect("windows-real-hives fixture");
    let got = realistic::read_natively(&image).expect("read the image natively");
    let e = expected(WindowsFlavor::Server2022);
    let os = got.os.expect("an OS");
    assert_eq!(os.id, "windows");
    assert_eq!(os.name.as_deref(), Some(e.name));
    assert_eq!(os.build.as_deref(), Some(e.build));
    assert_eq!(os.hostname.as_deref(), Some(e.hostname));
    assert_eq!(os.arch.as_deref(), Some(e.arch));
    let mut found: Vec<_> = got
        .inventory
        .packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone().unwrap_or_default(),
                p.publisher.clone().unwrap_or_default(),
                p.arch.as_deref() == Some("x86"),
            )
        })
        .collect();
    found.sort();
    let mut want = realistic::programs(realistic::FIXTURE_PROGRAMS);
    want.sort();
    assert_eq!(found, want, "programs (the system component is hidden)");
    assert!(
        got.inventory.warnings.is_empty(),
        "{:?}",
        got.inventory.warnings
    );
    assert!(
        got.inspect_bytes < 8 << 20,
        "inspect read {} bytes",
        got.inspect_bytes
    );
    assert!(
        got.inventory_bytes < 32 << 20,
        "the inventory read {} bytes",
        got.inventory_bytes
    );
}
