//! The built-in inventory end to end, on the fixture disks read natively: the Debian image's
//! packages must be exactly what `dpkg-query` says about the same debootstrap tree, the
//! Windows 11 image's programs exactly what its builder registered, the Alpine image's exactly
//! its `installed` database, the rpm images' exactly what `rpm -qa` lists on the same roots
//! (sqlite, and BerkeleyDB through Debian's read-only `bdb_ro` backend). Also checks one SBOM's
//! shape. The Debian, Windows and rpm images need root to build (debootstrap, loop devices,
//! ntfs-3g, `rpm --root`); those tests are skipped with a note otherwise.

use std::collections::BTreeSet;

use snapscan::detect::{self, OsInfo};
use snapscan::disk::probe::FsKind;
use snapscan::disk::reader::{Budget, Disk};
use snapscan::fs::{btrfs, ext4, ntfs, xfs};
use snapscan::inspect::{self, Options};
use snapscan::inventory::{self, Ecosystem, Inventory, SbomMeta};
use snapscan_tests::expect::{self, Triple};
use snapscan_tests::images::rpm::{rpm_root, RpmDb};
use snapscan_tests::images::{self, is_root};
use snapscan_tests::windows::{self, WindowsFlavor};

/// Inspect fixture `name`, open its OS volume natively, detect the OS and collect the
/// inventory.
fn scan(name: &str) -> (OsInfo, Inventory) {
    let img = images::image(name).expect("fixture");
    let report = inspect::inspect(&img, &Options::default()).expect("inspect");
    let os_volume = report
        .os
        .as_ref()
        .and_then(|os| os.volume)
        .unwrap_or_else(|| panic!("{name}: no OS found"));
    let v = &report.volumes[os_volume];
    let disk = Disk::open(&img).expect("open");
    let volume = disk
        .volume(v.start_bytes, v.size_bytes, Budget::new(u64::MAX))
        .expect("volume");
    let run = |fs: &dyn snapscan::fs::RootFs| {
        let os = detect::detect(fs).expect("detect").expect("an OS");
        let inv = inventory::collect(fs, &os).expect("collect");
        (os, inv)
    };
    match v.filesystem {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => run(&ext4::open(volume).expect("ext4")),
        FsKind::Xfs => run(&xfs::open(volume).expect("xfs")),
        FsKind::Btrfs => run(&btrfs::open(volume).expect("btrfs")),
        FsKind::Ntfs => run(&ntfs::open(volume).expect("ntfs")),
        other => panic!("{name}: OS on {other:?}, not read natively"),
    }
}

fn triples(inv: &Inventory) -> BTreeSet<Triple> {
    inv.packages
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.version.clone().unwrap_or_default(),
                p.arch.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn debian_packages_equal_dpkg_query() {
    if !is_root() {
        snapscan_tests::skip("the Debian image needs root to build (debootstrap, loop devices)");
        return;
    }
    let (os, inv) = scan("debian-ext4-gpt");
    assert_eq!(inv.sources, ["/var/lib/dpkg/status"]);
    assert_eq!(inv.warnings, Vec::<String>::new());
    assert!(inv.packages.iter().all(|p| p.ecosystem == Ecosystem::Deb));

    let want = expect::debian_packages();
    let got = triples(&inv);
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    println!("debian: {} packages identical to dpkg-query", got.len());

    // The SBOM's shape.
    let meta = SbomMeta {
        serial_number: "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79".into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        subject: "debian-ext4-gpt".into(),
    };
    let bom = serde_json::to_value(inventory::sbom(&inv, &os, &meta)).expect("json");
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["serialNumber"], meta.serial_number.as_str());
    let md = &bom["metadata"];
    assert_eq!(md["component"]["type"], "operating-system");
    assert_eq!(md["component"]["name"], "debian");
    assert_eq!(md["component"]["version"], "12");
    assert_eq!(md["tools"]["components"][0]["name"], "snapscan");
    let components = bom["components"].as_array().expect("components");
    assert_eq!(components.len(), inv.packages.len());
    let mut refs = BTreeSet::new();
    for c in components {
        let purl = c["purl"].as_str().expect("purl");
        assert!(purl.starts_with("pkg:deb/debian/"), "{purl}");
        assert!(purl.ends_with("distro=debian-12"), "{purl}");
        assert_eq!(c["type"], "library");
        assert_eq!(c["bom-ref"], purl);
        assert!(refs.insert(purl.to_owned()), "duplicate {purl}");
    }
    assert_eq!(
        bom["dependencies"][0]["dependsOn"].as_array().map(Vec::len),
        Some(components.len())
    );
}

#[test]
fn windows_programs_equal_registered_ones() {
    if !is_root() {
        snapscan_tests::skip("the Windows image needs root to build (loop devices, ntfs-3g)");
        return;
    }
    let (os, inv) = scan("windows-11");
    assert_eq!(inv.sources, ["/Windows/System32/config/SOFTWARE"]);
    assert_eq!(inv.warnings, Vec::<String>::new());
    let got: BTreeSet<(String, String, String)> = inv
        .packages
        .iter()
        .map(|p| {
            assert_eq!(p.ecosystem, Ecosystem::Windows);
            (
                p.name.clone(),
                p.version.clone().unwrap_or_default(),
                p.publisher.clone().unwrap_or_default(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = windows::programs(WindowsFlavor::Windows11)
        .into_iter()
        .map(|(n, v, p)| (n.to_owned(), v.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(inv.packages.len(), want.len());
    // 32-bit installers (WOW6432Node) are x86, the rest the system's x86_64.
    for p in &inv.packages {
        let want_arch = if p.name.contains("(x86)") || p.name == "Google Chrome" {
            "x86"
        } else {
            "x86_64"
        };
        assert_eq!(p.arch.as_deref(), Some(want_arch), "{}", p.name);
    }
    let meta = SbomMeta {
        serial_number: "urn:uuid:00000000-0000-4000-8000-000000000000".into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        subject: "windows-11".into(),
    };
    let bom = serde_json::to_value(inventory::sbom(&inv, &os, &meta)).expect("json");
    for c in bom["components"].as_array().expect("components") {
        assert_eq!(c["type"], "application");
        assert!(c.get("purl").is_none());
        assert!(c["bom-ref"]
            .as_str()
            .is_some_and(|r| r.starts_with("windows-program:")));
    }
}

#[test]
fn alpine_packages_equal_installed_db() {
    let (os, inv) = scan("alpine");
    assert_eq!(os.id, "alpine");
    assert_eq!(inv.sources, ["/lib/apk/db/installed"]);
    assert_eq!(inv.warnings, Vec::<String>::new());
    let want: BTreeSet<Triple> = [
        ("busybox", "1.36.1-r15", "aarch64"),
        ("musl", "1.2.4_git20230717-r4", "aarch64"),
    ]
    .into_iter()
    .map(|(n, v, a)| (n.to_owned(), v.to_owned(), a.to_owned()))
    .collect();
    assert_eq!(triples(&inv), want);
    let meta = SbomMeta {
        serial_number: "urn:uuid:00000000-0000-4000-8000-000000000001".into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        subject: "alpine".into(),
    };
    let bom = serde_json::to_value(inventory::sbom(&inv, &os, &meta)).expect("json");
    let purls: Vec<_> = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["purl"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:apk/alpine/busybox@1.36.1-r15?arch=aarch64&distro=alpine-3.19.1",
            "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=aarch64&distro=alpine-3.19.1",
        ]
    );
}

/// The rpm fixtures' packages, as (name, `[EPOCH:]VERSION-RELEASE`, arch).
fn rpm_triples(packages: &[inventory::Package]) -> BTreeSet<Triple> {
    packages
        .iter()
        .map(|p| {
            assert_eq!(p.ecosystem, Ecosystem::Rpm, "{}", p.name);
            (
                p.name.clone(),
                p.version.clone().unwrap_or_default(),
                p.arch.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// `rpm -qa` on the cached root of `db`, which must list a `gpg-pubkey` (the inventory leaves
/// it out, so must the comparison) and the fixture's four packages at least.
fn rpm_qa(db: RpmDb) -> BTreeSet<Triple> {
    let root = rpm_root(db).expect("rpm root");
    let (want, gpg) = images::rpm::rpm_qa(&root, db).expect("rpm -qa");
    assert!(gpg, "rpm -qa lists no gpg-pubkey in {}", root.display());
    assert!(want.len() >= 4, "only {want:?} from rpm -qa");
    want
}

#[test]
fn rpm_sqlite_packages_equal_rpm_qa() {
    if !is_root() {
        snapscan_tests::skip("the rpm images need root to build (rpm --root chroots)");
        return;
    }
    let (os, inv) = scan("rhel9-rpm-sqlite");
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("rhel", Some("9.3"))
    );
    assert_eq!(inv.sources, ["/var/lib/rpm/rpmdb.sqlite"]);
    assert_eq!(inv.warnings, Vec::<String>::new());
    let want = rpm_qa(RpmDb::Sqlite);
    assert_eq!(rpm_triples(&inv.packages), want);
    println!(
        "rhel9-rpm-sqlite: {} packages identical to rpm -qa",
        want.len()
    );

    // Source package, vendor, and the epoch as a purl qualifier.
    let libfoo = inv
        .packages
        .iter()
        .find(|p| p.name == "libfoo")
        .expect("libfoo");
    assert_eq!(libfoo.source.as_deref(), Some("foo"));
    assert_eq!(libfoo.source_version, None);
    let meta = SbomMeta {
        serial_number: "urn:uuid:00000000-0000-4000-8000-000000000002".into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        subject: "rhel9-rpm-sqlite".into(),
    };
    let bom = serde_json::to_value(inventory::sbom(&inv, &os, &meta)).expect("json");
    let hello = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c["name"] == "hello")
        .expect("hello in the SBOM");
    assert_eq!(
        hello["purl"],
        "pkg:rpm/rhel/hello@1.0-1.el9?arch=noarch&distro=rhel-9.3&epoch=2"
    );
    assert_eq!(hello["version"], "2:1.0-1.el9");
    assert_eq!(hello["publisher"], "Snapscan Test");
}

/// The RHEL root on XFS and in Fedora's Btrfs subvolume layout (zstd-compressed), read with no
/// mount: the same OS and the same packages as `rpm -qa`.
#[test]
fn rpm_packages_on_xfs_and_btrfs_equal_rpm_qa() {
    if !is_root() {
        snapscan_tests::skip("the rpm images need root to build (rpm --root chroots)");
        return;
    }
    let want = rpm_qa(RpmDb::Sqlite);
    for name in ["rhel9-rpm-xfs", "rhel9-rpm-btrfs-subvol"] {
        let (os, inv) = scan(name);
        assert_eq!(
            (os.id.as_str(), os.version_id.as_deref()),
            ("rhel", Some("9.3")),
            "{name}"
        );
        assert_eq!(inv.sources, ["/var/lib/rpm/rpmdb.sqlite"], "{name}");
        assert_eq!(inv.warnings, Vec::<String>::new(), "{name}");
        assert_eq!(rpm_triples(&inv.packages), want, "{name}");
        println!("{name}: {} packages identical to rpm -qa", want.len());
    }
}

#[test]
fn rpm_bdb_packages_equal_rpm_qa_and_the_sqlite_db() {
    if !is_root() {
        snapscan_tests::skip("the rpm images need root to build (rpm --root chroots)");
        return;
    }
    let (os, inv) = scan("rhel7-rpm-bdb");
    assert_eq!(
        (os.id.as_str(), os.version_id.as_deref()),
        ("rhel", Some("7.9"))
    );
    assert_eq!(inv.sources, ["/var/lib/rpm/Packages"]);
    assert_eq!(inv.warnings, Vec::<String>::new());
    let got = rpm_triples(&inv.packages);
    // Debian's rpm reads BerkeleyDB (bdb_ro): the same list as ours.
    assert_eq!(got, rpm_qa(RpmDb::Bdb));
    assert_eq!(got, rpm_qa(RpmDb::Sqlite));

    // The same headers as a big-endian hash and as a btree, both made by db_load.
    let sqlite_root = rpm_root(RpmDb::Sqlite).expect("rpm root");
    let work = tempfile::tempdir().expect("tempdir");
    let dump = images::rpm::bdb_dump(&sqlite_root.join("var/lib/rpm/rpmdb.sqlite"), work.path())
        .expect("dump");
    // The long-description header must span several 4 KiB pages.
    assert!(
        dump.lines().any(|l| l.len() > 2 * 2 * 4096),
        "no header longer than two pages"
    );
    for (name, extra) in [
        ("little-endian hash", &[][..]),
        ("big-endian hash", &["-c", "db_lorder=4321"][..]),
        ("btree", &["-t", "btree"][..]),
        (
            "big-endian btree, 512-byte pages",
            &[
                "-t",
                "btree",
                "-c",
                "db_lorder=4321",
                "-c",
                "db_pagesize=512",
            ][..],
        ),
    ] {
        let file = work.path().join("Packages");
        images::rpm::db_load(&dump, &file, extra).expect("db_load");
        let bytes = std::fs::read(&file).expect("read");
        let values = inventory::rpm::bdb::values(&bytes).expect(name);
        assert_eq!(values.errors, vec![], "{name}");
        let parsed = inventory::rpm::packages(&values.values);
        assert_eq!(parsed.bad, 0, "{name}");
        assert_eq!(rpm_triples(&parsed.packages), got, "{name}");
    }
}
