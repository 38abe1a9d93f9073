//! Roots with a real rpm database, for the rpm inventory fixtures `rhel9-rpm-sqlite`,
//! `rhel7-rpm-bdb`, `rhel9-rpm-xfs` and `rhel9-rpm-btrfs-subvol`.
//!
//! [`rpm_root`] builds (once, cached under [`crate::cache_dir`], root only because
//! `rpm --root` chroots) a RHEL root whose packages are really installed by Debian's `rpm`:
//! four tiny packages made by `rpmbuild` from the spec files below ([`SPECS`]: one with an
//! `Epoch`, a `libfoo` whose source package is `foo`, a noarch one with a description long
//! enough that its header spans several BerkeleyDB pages) plus a `gpg-pubkey` pseudo-package
//! from `rpm --import` of a fresh ed25519 key, which the inventory must leave out.
//!
//! - [`RpmDb::Sqlite`]: the synthetic `rhel9` root with the packages installed into
//!   `var/lib/rpm/rpmdb.sqlite` (Debian's rpm 4.18 writes sqlite), as on RHEL 9.
//! - [`RpmDb::Bdb`]: the same files with RHEL 7.9 release files, and instead of the sqlite
//!   database a BerkeleyDB hash `var/lib/rpm/Packages` made by `db_load` from the sqlite
//!   database's header blobs ([`bdb_dump`]: keys are the 4-byte little-endian header numbers,
//!   key 0 holds the last one, as rpm's BerkeleyDB backend writes them). Debian's rpm cannot
//!   write BerkeleyDB, but reads it (`_db_backend bdb_ro`), which [`rpm_qa`] uses.
//!
//! Nothing here is a complete system: no scriptlets run (`--noscripts`), dependencies are not
//! checked. Needs the Debian packages `rpm`, `db5.3-util` (db_load) and `sqlite3`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use super::cache_subdir;
use super::cmd::{run, tool};
use super::disk::{assemble, Partition, Table, MIB};
use super::fs::{build_fs, FsKind};
use super::guard::{lock_file, LoopDevice, Mount};
use super::roots::write_synthetic_root;

/// Bump to rebuild the cached rpm roots (and the images made from them).
pub const RPM_REV: u32 = 1;

/// Which database the root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpmDb {
    /// `var/lib/rpm/rpmdb.sqlite` (RHEL 9).
    Sqlite,
    /// `var/lib/rpm/Packages`, BerkeleyDB hash (RHEL 7).
    Bdb,
}

impl RpmDb {
    fn name(self) -> &'static str {
        match self {
            RpmDb::Sqlite => "sqlite",
            RpmDb::Bdb => "bdb",
        }
    }
}

/// The spec files built and installed: (file name, content).
pub const SPECS: [(&str, &str); 3] = [
    (
        "hello.spec",
        "Name: hello\nVersion: 1.0\nRelease: 1.el9\nEpoch: 2\nSummary: greeting\n\
         License: MIT\nVendor: Snapscan Test\nBuildArch: noarch\n\
         %description\nSays hello.\n\
         %install\nmkdir -p %{buildroot}/usr/share/hello\n\
         echo hello > %{buildroot}/usr/share/hello/hello.txt\n\
         %files\n/usr/share/hello/hello.txt\n",
    ),
    (
        "foo.spec",
        "Name: foo\nVersion: 3.2.1\nRelease: 7.el9_2\nSummary: foo tools\nLicense: BSD\n\
         BuildArch: x86_64\n\
         %description\nThe foo tools.\n\
         %package -n libfoo\nSummary: foo library\n\
         %description -n libfoo\nThe foo library.\n\
         %install\nmkdir -p %{buildroot}/usr/bin %{buildroot}/usr/lib64\n\
         echo foo > %{buildroot}/usr/bin/foo\necho lib > %{buildroot}/usr/lib64/libfoo.so.3\n\
         %files\n/usr/bin/foo\n%files -n libfoo\n/usr/lib64/libfoo.so.3\n",
    ),
    (
        "bigdoc.spec",
        "Name: bigdoc\nVersion: 0.9~beta2\nRelease: 0.3.el9\nSummary: long description\n\
         License: CC0\nBuildArch: noarch\n\
         %description\n@LONG@\n\
         %install\nmkdir -p %{buildroot}/usr/share/doc/bigdoc\n\
         for i in $(seq 1 200); do echo $i > %{buildroot}/usr/share/doc/bigdoc/page-$i.txt; done\n\
         %files\n/usr/share/doc/bigdoc\n",
    ),
];

const RHEL7_OS_RELEASE: &str = r#"NAME="Red Hat Enterprise Linux Server"
VERSION="7.9 (Maipo)"
ID="rhel"
ID_LIKE="fedora"
VARIANT="Server"
VARIANT_ID="server"
VERSION_ID="7.9"
PRETTY_NAME="Red Hat Enterprise Linux Server 7.9 (Maipo)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:redhat:enterprise_linux:7.9:GA:server"
HOME_URL="https://www.redhat.com/"
"#;

/// The host name of the RHEL 7 root (the RHEL 9 one keeps `rhel9-web`).
pub const RHEL7_HOSTNAME: &str = "rhel7-db";

/// `rpm` with the options every call here needs: Debian's rpm defaults to `~/.rpmdb`.
fn rpm(root: &Path, db: RpmDb) -> std::process::Command {
    let mut cmd = tool("rpm");
    cmd.arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm"]);
    if db == RpmDb::Bdb {
        cmd.args(["--define", "_db_backend bdb_ro"]);
    }
    cmd
}

/// The cached root holding `db` (built on first use; root only). Safe to call from several
/// threads and processes at once.
pub fn rpm_root(db: RpmDb) -> anyhow::Result<PathBuf> {
    let name = format!("rpm-root-{}.r{RPM_REV}", db.name());
    let dir = crate::cache_dir().join(&name);
    let done = dir.join("etc/hostname");
    if done.is_file() {
        return Ok(dir);
    }
    let _lock = lock_file(&cache_subdir("locks")?.join(format!("{name}.lock")))?;
    if done.is_file() {
        return Ok(dir);
    }
    super::require_root("an rpm root (rpm --root chroots)")?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .tempdir_in(cache_subdir("tmp")?)
        .context("failed to create a work directory for an rpm root")?;
    let target = work.path().join("root");
    match db {
        RpmDb::Sqlite => sqlite_root(work.path(), &target)?,
        RpmDb::Bdb => bdb_root(work.path(), &target)?,
    }
    fs::rename(&target, &dir).with_context(|| {
        format!(
            "failed to move the rpm root into place at '{}'",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// The RHEL 9 root with the packages installed into its sqlite database.
fn sqlite_root(work: &Path, target: &Path) -> anyhow::Result<()> {
    let rpms = build_packages(work)?;
    let staging = work.join("staging");
    fs::create_dir_all(&staging)?;
    write_synthetic_root("rhel9", &staging)?;
    // etc/hostname marks a finished root: write it back last.
    let hostname = fs::read(staging.join("etc/hostname"))?;
    fs::remove_file(staging.join("etc/hostname"))?;
    let mut cmd = rpm(&staging, RpmDb::Sqlite);
    cmd.args([
        "-i",
        "--nodeps",
        "--noscripts",
        "--ignorearch",
        "--ignoreos",
    ])
    .args(&rpms);
    run(&mut cmd, None).context("failed to install the test packages")?;
    let key = signing_key(work)?;
    run(rpm(&staging, RpmDb::Sqlite).arg("--import").arg(&key), None)
        .context("failed to import the signing key")?;
    fs::write(staging.join("etc/hostname"), hostname)?;
    fs::rename(&staging, target)
        .with_context(|| format!("failed to move '{}'", staging.display()))?;
    Ok(())
}

/// The RHEL 7 root: the sqlite root's files, RHEL 7 release files, a BerkeleyDB `Packages`.
fn bdb_root(work: &Path, target: &Path) -> anyhow::Result<()> {
    let sqlite = rpm_root(RpmDb::Sqlite)?;
    let staging = work.join("staging");
    run(tool("cp").arg("-a").arg(&sqlite).arg(&staging), None)?;
    fs::remove_file(staging.join("etc/hostname"))?;
    let dbdir = staging.join("var/lib/rpm");
    let dump = bdb_dump(&dbdir.join("rpmdb.sqlite"), work)?;
    for entry in fs::read_dir(&dbdir)? {
        fs::remove_file(entry?.path())?;
    }
    db_load(&dump, &dbdir.join("Packages"), &[])?;
    fs::write(staging.join("usr/lib/os-release"), RHEL7_OS_RELEASE)?;
    fs::write(
        staging.join("etc/redhat-release"),
        "Red Hat Enterprise Linux Server release 7.9 (Maipo)\n",
    )?;
    fs::write(staging.join("etc/hostname"), format!("{RHEL7_HOSTNAME}\n"))?;
    fs::rename(&staging, target)
        .with_context(|| format!("failed to move '{}'", staging.display()))?;
    Ok(())
}

/// Build the packages of [`SPECS`] in `work`; their paths.
fn build_packages(work: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let top = work.join("rpmbuild");
    let long: String = (0..400)
        .map(|i| format!("Line {i} of a description long enough to need overflow pages.\n"))
        .collect();
    for (file, spec) in SPECS {
        let path = work.join(file);
        fs::write(&path, spec.replace("@LONG@", &long))?;
        let mut cmd = tool("rpmbuild");
        cmd.arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "debug_package %{nil}"])
            .args(["--define", "_build_id_links none"])
            .arg("-bb")
            .arg(&path);
        run(&mut cmd, None).with_context(|| format!("failed to build {file}"))?;
    }
    let mut rpms = Vec::new();
    for arch in fs::read_dir(top.join("RPMS"))? {
        for rpm in fs::read_dir(arch?.path())? {
            rpms.push(rpm?.path());
        }
    }
    rpms.sort();
    ensure!(
        rpms.len() == 4,
        "expected 4 packages, rpmbuild made {rpms:?}"
    );
    Ok(rpms)
}

/// A fresh ed25519 public key, ASCII-armoured, made by gpg in a private home.
fn signing_key(work: &Path) -> anyhow::Result<PathBuf> {
    let home = work.join("gnupg");
    fs::create_dir_all(&home)?;
    fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let gpg = || {
        let mut cmd = tool("gpg");
        cmd.arg("--homedir").arg(&home).args(["--batch", "--quiet"]);
        cmd
    };
    run(
        gpg().args([
            "--passphrase",
            "",
            "--quick-gen-key",
            "Snapscan Test <test@snapscan.invalid>",
            "ed25519",
            "sign",
            "never",
        ]),
        None,
    )?;
    let key = run(gpg().args(["--armor", "--export"]), None)?;
    // Stop the agent gpg started for this home.
    let _ = run(
        tool("gpgconf")
            .arg("--homedir")
            .arg(&home)
            .args(["--kill", "all"]),
        None,
    );
    let path = work.join("key.asc");
    fs::write(&path, key)?;
    Ok(path)
}

/// A `db_load` bytevalue dump of the header blobs in the sqlite rpm database `db` (copied to
/// `work` first, so that the original, WAL included, is left as it is).
pub fn bdb_dump(db: &Path, work: &Path) -> anyhow::Result<String> {
    let copy = work.join("dump-source.sqlite");
    fs::copy(db, &copy).with_context(|| format!("failed to copy '{}'", db.display()))?;
    let wal = db.with_extension("sqlite-wal");
    if wal.is_file() {
        fs::copy(&wal, copy.with_extension("sqlite-wal"))?;
    }
    let rows = run(
        tool("sqlite3")
            .arg(&copy)
            .arg("SELECT hnum, lower(hex(blob)) FROM Packages ORDER BY hnum"),
        None,
    )?;
    let mut out =
        String::from("VERSION=3\nformat=bytevalue\ntype=hash\ndb_pagesize=4096\nHEADER=END\n");
    let mut last = 0u32;
    let mut body = String::new();
    for line in rows.lines() {
        let (hnum, blob) = line
            .split_once('|')
            .with_context(|| format!("unexpected sqlite3 output {line:?}"))?;
        let hnum: u32 = hnum.parse().context("bad hnum")?;
        last = last.max(hnum);
        body.push_str(&format!(" {}\n {blob}\n", hex::encode(hnum.to_le_bytes())));
    }
    // Key 0: the last header number, as rpm's BerkeleyDB backend keeps it.
    out.push_str(&format!(
        " 00000000\n {}\n",
        hex::encode(last.to_le_bytes())
    ));
    out.push_str(&body);
    out.push_str("DATA=END\n");
    Ok(out)
}

/// `db_load` `dump` into a new BerkeleyDB file `out`, with extra options (`-t btree`,
/// `-c db_lorder=4321`...).
pub fn db_load(dump: &str, out: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let _ = fs::remove_file(out);
    run(tool("db_load").args(extra).arg(out), Some(dump.as_bytes()))
        .with_context(|| format!("failed to write '{}' with db_load", out.display()))?;
    Ok(())
}

/// (name, `[EPOCH:]VERSION-RELEASE`, arch) of installed packages.
pub type Nevra = BTreeSet<(String, String, String)>;

/// Every package `rpm -qa` lists in `root`, leaving out `gpg-pubkey` as the inventory does; the
/// second value says whether a `gpg-pubkey` was there to leave out.
pub fn rpm_qa(root: &Path, db: RpmDb) -> anyhow::Result<(Nevra, bool)> {
    let out = run(
        rpm(root, db).args([
            "-qa",
            "--qf",
            "%{NAME}|%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}|%{ARCH}\\n",
        ]),
        None,
    )?;
    let mut set = BTreeSet::new();
    let mut gpg = false;
    for line in out.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let [name, evr, arch] = f[..] else {
            anyhow::bail!("unexpected rpm -qa line {line:?}");
        };
        if name == "gpg-pubkey" {
            gpg = true;
            continue;
        }
        set.insert((name.to_owned(), evr.to_owned(), arch.to_owned()));
    }
    Ok((set, gpg))
}

/// Build fixture image `out`: a GPT disk with one partition holding the `db` root, laid out as
/// `layout` says.
pub fn rpm_image(work: &Path, out: &Path, db: RpmDb, layout: RootLayout) -> anyhow::Result<()> {
    let root = rpm_root(db)?;
    let fs_image = work.join("root.fs");
    let fs_mib = match layout {
        RootLayout::Ext4 => {
            build_fs(FsKind::Ext4, 32 * MIB, Some("root"), Some(&root), &fs_image)?;
            32
        }
        // mkfs.xfs makes nothing smaller.
        RootLayout::Xfs => {
            build_fs(FsKind::Xfs, 300 * MIB, Some("root"), Some(&root), &fs_image)?;
            300
        }
        RootLayout::BtrfsSubvolumes => {
            btrfs_subvolumes(work, &root, &fs_image)?;
            BTRFS_MIB
        }
    };
    assemble(
        Table::Gpt,
        None,
        &[Partition {
            size_bytes: fs_mib * MIB,
            type_code: "8304",
            name: "root",
            logical: false,
            content: Some(&fs_image),
        }],
        out,
    )?;
    Ok(())
}

/// Size of the Btrfs of [`RootLayout::BtrfsSubvolumes`].
const BTRFS_MIB: u64 = 160;

/// How the root filesystem of an rpm image is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootLayout {
    /// The whole root on ext4.
    Ext4,
    /// The whole root on XFS (as RHEL, Rocky, Oracle Linux and Amazon Linux install).
    Xfs,
    /// Fedora's Btrfs layout: the top level (the default subvolume) holds the subvolumes `root`
    /// (the system, named by its own `etc/fstab` as `subvol=root`) and `home`. Everything is
    /// written with `compress-force=zstd`, and `usr/share/compressed/{zlib,lzo}` again with
    /// zlib and LZO, so every compressed extent kind is read.
    BtrfsSubvolumes,
}

/// Build the Btrfs of [`RootLayout::BtrfsSubvolumes`] from `root` at `out` (root only: mounts).
fn btrfs_subvolumes(work: &Path, root: &Path, out: &Path) -> anyhow::Result<()> {
    build_fs(FsKind::Btrfs, BTRFS_MIB * MIB, Some("fedora"), None, out)?;
    let mnt = work.join("btrfs-mnt");
    fs::create_dir_all(&mnt)?;
    let lo = LoopDevice::attach(out, 0, None, false)?;
    let top = Mount::new(lo.path(), &mnt, "btrfs", "compress-force=zstd")?;
    for sub in ["root", "home"] {
        run(
            tool("btrfs")
                .args(["subvolume", "create"])
                .arg(mnt.join(sub)),
            None,
        )?;
    }
    let sys = mnt.join("root");
    let mut source = root.as_os_str().to_owned();
    source.push("/.");
    run(tool("cp").arg("-a").arg(&source).arg(&sys), None)?;
    fs::write(
        sys.join("etc/fstab"),
        "UUID=0b7e5f5e-0000-4000-8000-000000000001 / btrfs subvol=root,compress=zstd:1 0 0\n\
         UUID=0b7e5f5e-0000-4000-8000-000000000001 /home btrfs subvol=home,compress=zstd:1 0 0\n",
    )?;
    fs::create_dir_all(mnt.join("home/fedora"))?;
    fs::write(mnt.join("home/fedora/notes.txt"), "a user's file\n")?;
    for algo in ["zlib", "lzo"] {
        run(
            tool("mount")
                .args(["-o", &format!("remount,compress-force={algo}")])
                .arg(&mnt),
            None,
        )?;
        let dir = sys.join("usr/share/compressed").join(algo);
        fs::create_dir_all(&dir)?;
        let text: String = (0..20_000).map(|i| format!("{algo} line {i}\n")).collect();
        fs::write(dir.join("text"), &text)?;
        run(
            tool("cp")
                .arg(sys.join("var/lib/rpm/rpmdb.sqlite"))
                .arg(&dir),
            None,
        )?;
    }
    top.unmount()?;
    lo.detach()
}
