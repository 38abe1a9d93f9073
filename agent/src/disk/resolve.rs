//! Find the block device of an attached GCE disk by its `deviceName`, and check that it really is
//! that disk.
//!
//! The way Google's PD CSI driver does it: try the udev links `<by-id>/google-<name>`, then
//! `<by-id>/scsi-0Google_PersistentDisk_<name>`, resolve the link, and **verify** that the device
//! it points to reports `<name>` as its serial (links go stale after detach and re-attach: udev
//! is known to miss events). When no link checks out, scan `<sys>/block` (`sd*`, `vd*`,
//! `nvme*n*`, and `loop*` for tests) for the device whose serial is the name.
//!
//! Serials: SCSI disks from the binary VPD page 0x80 in sysfs (`device/vpd_pg80`), else the text
//! attribute `device/serial` or `serial` (virtio-blk); NVMe disks from the JSON GCE puts in the
//! vendor-specific bytes 384.. of the Identify Namespace data, read with nvme-cli
//! (`nvme id-ns -b`, bounded by a timeout; without nvme-cli NVMe devices are skipped). Both
//! parsers ([`parse_vpd_pg80`], [`nvme_device_name`]) are pure and never panic.
//!
//! The device name is joined into paths, so it is validated first: never empty, no `/`, no `..`,
//! no NUL, only ASCII letters, digits, `-`, `_` and `.`.
//!
//! Only nvme-cli opens devices (read-only, to identify them), and never one that [`Unopened`]
//! rules out from what `instance/disks/` says: the devices the by-id links of refused disks (the
//! boot disk, READ_WRITE ones) point at, a device holding filesystems mounted on this system, and,
//! when the disk is attached READ_ONLY, a device the kernel shows writable. SCSI and virtio disks
//! are identified from sysfs alone.
//!
//! What this module does not do: attach or detach disks, trigger udev, mount anything, or set the
//! device read-only (that is [`super::loopdev`] and `crate::mount`). It opens no block device
//! itself; it reads links, sysfs attributes, mountinfo and nvme-cli's output, and reports the
//! kernel's read-only flag and size as it finds them.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Prefix of the links Google's udev rule makes (`65-gce-disk-naming.rules`).
const GOOGLE_PREFIX: &str = "google-";
/// Prefix of the links systemd's stock rules make for GCE SCSI persistent disks.
const SCSI_PREFIX: &str = "scsi-0Google_PersistentDisk_";
/// Longest device name accepted. GCE allows 63 characters; this is lenient but keeps the link
/// names far below `NAME_MAX`.
const MAX_NAME_LEN: usize = 128;
/// Pause between attempts of [`Resolver::resolve`].
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Default bound on one run of nvme-cli.
const NVME_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read from a sysfs attribute.
const ATTR_LIMIT: u64 = 64 * 1024;
/// Most bytes read from nvme-cli's output (the structure is 4096 bytes).
const NVME_OUTPUT_LIMIT: u64 = 64 * 1024;
/// Offset of the vendor-specific area in the NVMe Identify Namespace data.
const NVME_VS_OFFSET: usize = 384;
/// Size of the NVMe Identify Namespace data.
const NVME_ID_NS_LEN: usize = 4096;
/// `ETXTBSY`: an executable was still open for writing when spawned (a race with another thread
/// forking while the file was written); retried a few times.
const ETXTBSY: i32 = 26;

/// Where to look for disks. [`Default`] gives the real system paths.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Directory of the udev `by-id` links (default `/dev/disk/by-id`).
    pub by_id_dir: PathBuf,
    /// Where sysfs is mounted (default `/sys`).
    pub sys_dir: PathBuf,
    /// Directory of the device nodes (default `/dev`).
    pub dev_dir: PathBuf,
    /// nvme-cli's `nvme`; `None`: looked up on `PATH` and in the usual `sbin` directories. A
    /// path that is not a file counts as no nvme-cli.
    pub nvme_command: Option<PathBuf>,
    /// Bound on one run of nvme-cli (default 5 s); a run that takes longer is killed and that
    /// device skipped.
    pub nvme_timeout: Duration,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            by_id_dir: PathBuf::from("/dev/disk/by-id"),
            sys_dir: PathBuf::from("/sys"),
            dev_dir: PathBuf::from("/dev"),
            nvme_command: None,
            nvme_timeout: NVME_TIMEOUT,
        }
    }
}

/// What a lookup leaves unopened, decided from `instance/disks/` before it starts. The default
/// leaves out only devices with filesystems mounted on this system.
#[derive(Debug, Clone, Default)]
pub struct Unopened {
    /// Device names of the attached disks that are refused (the boot disk, READ_WRITE ones):
    /// the devices their by-id links point at are not opened.
    pub refused: Vec<String>,
    /// The disk looked for is attached READ_ONLY: a device whose kernel read-only flag is clear
    /// is not it, and is not opened.
    pub read_only: bool,
}

/// [`Unopened`] with the refused disks' links followed, for one attempt.
struct Guard {
    /// (device name, the device its link points at).
    refused: Vec<(String, PathBuf)>,
    read_only: bool,
}

/// How a device was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Through the link `google-<name>` (the path of the link).
    ById(PathBuf),
    /// Through the link `scsi-0Google_PersistentDisk_<name>` (the path of the link).
    ScsiId(PathBuf),
    /// By scanning `<sys>/block` for the serial (no link, or only stale ones).
    SerialScan,
}

/// A block device whose serial was checked to be the disk's device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The device node, e.g. `/dev/sdb` (the link's target, or `<dev>/<kernel name>`).
    pub device: PathBuf,
    /// The kernel's name of the device, e.g. `sdb` or `nvme0n2`.
    pub kernel_name: String,
    /// How it was found.
    pub via: Via,
    /// The serial the device reports (the device name, possibly in a `0Google PersistentDisk`
    /// form).
    pub serial: String,
    /// The kernel's read-only flag (`<sys>/block/<dev>/ro`), when readable.
    pub read_only: Option<bool>,
    /// Size in bytes (`<sys>/block/<dev>/size` × 512), when readable.
    pub size_bytes: Option<u64>,
    /// SCSI vendor (`device/vendor`, trimmed; `Google` on GCE), when present.
    pub vendor: Option<String>,
    /// Model (`device/model`, trimmed; `PersistentDisk` for GCE SCSI disks), when present.
    pub model: Option<String>,
}

/// Why no device was found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No device reports the name as its serial.
    #[error("no block device for disk '{device_name}' (tried: {})", .tried.join("; "))]
    NotFound {
        /// The device name asked for.
        device_name: String,
        /// What was looked at and what was found there.
        tried: Vec<String>,
    },
    /// The device name is not one that can be looked up safely.
    #[error("invalid disk device name {name:?}: {reason}")]
    InvalidName {
        /// The name given (for display only).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Waiting was cancelled.
    #[error("cancelled while waiting for disk '{device_name}'")]
    Cancelled {
        /// The device name asked for.
        device_name: String,
    },
    /// A directory that must be readable was not.
    #[error("failed to {what}")]
    Io {
        /// What was attempted, naming the path.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl ResolveError {
    /// A short stable label for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            ResolveError::NotFound { .. } => "not_found",
            ResolveError::InvalidName { .. } => "invalid_name",
            ResolveError::Cancelled { .. } => "cancelled",
            ResolveError::Io { .. } => "io",
        }
    }
}

/// Check a device name before it is joined into paths: non-empty, at most 128 bytes, only ASCII
/// letters, digits, `-`, `_` and `.`, and no `..`. (GCE names are `[a-z]([-a-z0-9]*[a-z0-9])?`,
/// at most 63 characters; this accepts more but nothing that can leave a directory.)
pub fn validate_device_name(name: &str) -> Result<(), ResolveError> {
    let bad = |reason| {
        Err(ResolveError::InvalidName {
            name: name.chars().take(MAX_NAME_LEN + 8).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 128 bytes");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains('\0') {
        return bad("contains NUL");
    }
    if name.contains("..") {
        return bad("contains '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// The unit serial number from a SCSI VPD page 0x80 as sysfs shows it (`vpd_pg80`): byte 1 is
/// the page code 0x80, bytes 2..4 the big-endian page length L, the serial bytes 4..4+L. ASCII
/// spaces and NULs around it are trimmed. `None` for another page, a truncated page or an empty
/// serial.
pub fn parse_vpd_pg80(page: &[u8]) -> Option<String> {
    if *page.get(1)? != 0x80 {
        return None;
    }
    let len = u16::from_be_bytes([*page.get(2)?, *page.get(3)?]);
    let end = 4usize.checked_add(usize::from(len))?;
    let serial = page.get(4..end)?;
    non_empty(trim_text(&String::from_utf8_lossy(serial)))
}

/// The `device_name` GCE puts as JSON (`{"device_name":"…","disk_type":"PERSISTENT"}`) in the
/// vendor-specific bytes 384..4096 of the NVMe Identify Namespace data. NULs around the JSON are
/// ignored, and so is anything after the first JSON value. `None` when there is no such JSON
/// (local SSDs, other clouds) or no non-empty string `device_name` in it.
pub fn nvme_device_name(id_ns: &[u8]) -> Option<String> {
    let end = id_ns.len().min(NVME_ID_NS_LEN);
    let vs = id_ns.get(NVME_VS_OFFSET..end)?;
    let start = vs
        .iter()
        .position(|&b| b != 0 && !b.is_ascii_whitespace())?;
    let vs = vs.get(start..)?;
    let stop = vs.iter().position(|&b| b == 0).unwrap_or(vs.len());
    let json = vs.get(..stop)?;
    let value = serde_json::Deserializer::from_slice(json)
        .into_iter::<serde_json::Value>()
        .next()?
        .ok()?;
    let name = value.get("device_name")?.as_str()?;
    non_empty(name.trim())
}

/// Whether a device's serial names the disk: the serial itself, or the `0Google PersistentDisk
/// <name>` / `0Google_PersistentDisk_<name>` forms of `scsi_id`.
fn serial_names_disk(serial: &str, name: &str) -> bool {
    let serial = serial.trim();
    if serial == name {
        return true;
    }
    if serial.strip_prefix("0Google_PersistentDisk_") == Some(name) {
        return true;
    }
    let words: Vec<&str> = serial.split_whitespace().collect();
    matches!(words.as_slice(), ["0Google", "PersistentDisk", n] if *n == name)
}

/// Which kind of block device a kernel name is, for the scan; `None`: not a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevKind {
    /// `sd*`, `vd*`, `loop*`: serial from sysfs.
    Sysfs,
    /// `nvme<N>n<M>`: serial from the Identify Namespace data.
    Nvme,
}

/// Classify a kernel device name (`sdb`, `vda`, `loop3`, `nvme0n2`).
fn dev_kind(kname: &str) -> Option<DevKind> {
    fn letters(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase())
    }
    fn digits(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
    }
    if let Some(rest) = kname.strip_prefix("nvme") {
        let (ctrl, ns) = rest.split_once('n')?;
        return (digits(ctrl) && digits(ns)).then_some(DevKind::Nvme);
    }
    let sysfs = kname.strip_prefix("sd").is_some_and(letters)
        || kname.strip_prefix("vd").is_some_and(letters)
        || kname.strip_prefix("loop").is_some_and(digits);
    sysfs.then_some(DevKind::Sysfs)
}

/// What is known about one block device in sysfs.
#[derive(Debug, Default)]
struct DevInfo {
    serial: Option<String>,
    /// Why there is no serial, for `tried`.
    no_serial: Option<String>,
    read_only: Option<bool>,
    size_bytes: Option<u64>,
    vendor: Option<String>,
    model: Option<String>,
}

impl Resolver {
    /// Look once for the device of the disk attached as `device_name` (no waiting): the
    /// `google-` link, the `scsi-0Google_PersistentDisk_` link, then a scan of `<sys>/block`.
    /// Every candidate's serial is checked against the name; stale links are logged and skipped.
    ///
    /// Blocking: reads sysfs and may run nvme-cli (each run bounded by
    /// [`Resolver::nvme_timeout`]).
    pub fn resolve_once(
        &self,
        device_name: &str,
        unopened: &Unopened,
    ) -> Result<Resolved, ResolveError> {
        validate_device_name(device_name)?;
        let mut tried = Vec::new();
        let bin = self.nvme_binary();
        let guard = self.guard(unopened);
        let nvme = bin.as_deref().map(|bin| (bin, &guard));

        for (prefix, via) in [
            (GOOGLE_PREFIX, Via::ById as fn(PathBuf) -> Via),
            (SCSI_PREFIX, Via::ScsiId as fn(PathBuf) -> Via),
        ] {
            let link = self.by_id_dir.join(format!("{prefix}{device_name}"));
            if let Some(found) = self.try_link(&link, device_name, nvme, &mut tried) {
                let (device, kname, info, serial) = found;
                return Ok(resolved(device, kname, via(link), serial, info));
            }
        }

        if let Some((kname, info, serial)) = self.scan(device_name, nvme, &mut tried)? {
            let device = self.dev_dir.join(&kname);
            return Ok(resolved(device, kname, Via::SerialScan, serial, info));
        }

        Err(ResolveError::NotFound {
            device_name: device_name.to_owned(),
            tried,
        })
    }

    /// Wait up to `wait` for the disk attached as `device_name` to show up: [`resolve_once`]
    /// every 500 ms (opening nothing `unopened` rules out), plus one last look at the deadline.
    /// Stops at once when `cancel` fires. An invalid name fails at once; otherwise the last
    /// attempt's error is returned at the deadline. An attempt under way at the deadline is
    /// finished (it is bounded: a few sysfs reads and nvme-cli runs), so the total can exceed
    /// `wait` by one attempt.
    ///
    /// [`resolve_once`]: Resolver::resolve_once
    pub async fn resolve(
        &self,
        device_name: &str,
        unopened: &Unopened,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<Resolved, ResolveError> {
        validate_device_name(device_name)?;
        let cancelled = || ResolveError::Cancelled {
            device_name: device_name.to_owned(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let this = self.clone();
            let (name, unopened) = (device_name.to_owned(), unopened.clone());
            let attempt = tokio::task::spawn_blocking(move || this.resolve_once(&name, &unopened));
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(cancelled()),
                joined = attempt => joined.map_err(|e| ResolveError::Io {
                    what: format!("look for disk '{device_name}'"),
                    source: io::Error::other(e.to_string()),
                })?,
            };
            let err = match result {
                Ok(found) => return Ok(found),
                Err(e @ (ResolveError::InvalidName { .. } | ResolveError::Cancelled { .. })) => {
                    return Err(e)
                }
                Err(e) => e,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(err);
            }
            tracing::debug!(device_name, error = %err, "disk not there yet; looking again");
            let pause = RETRY_PAUSE.min(deadline - now);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(cancelled()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Follow one by-id link and check the serial of its device. `None` (with a `tried` entry)
    /// when the link is missing, dangling or stale.
    fn try_link(
        &self,
        link: &Path,
        name: &str,
        nvme: Option<(&Path, &Guard)>,
        tried: &mut Vec<String>,
    ) -> Option<(PathBuf, String, DevInfo, String)> {
        let shown = link.display();
        if std::fs::symlink_metadata(link).is_err() {
            tried.push(format!("{shown}: missing"));
            return None;
        }
        // Relative targets (`../../sdb`) resolve against the link's directory.
        let device = match std::fs::canonicalize(link) {
            Ok(d) => d,
            Err(e) => {
                tried.push(format!("{shown}: cannot resolve ({e})"));
                return None;
            }
        };
        let Some(kname) = device
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            tried.push(format!("{shown} -> {}: no device name", device.display()));
            return None;
        };
        let info = self.dev_info(&kname, &device, nvme);
        match &info.serial {
            Some(serial) if serial_names_disk(serial, name) => {
                let serial = serial.clone();
                Some((device, kname, info, serial))
            }
            Some(serial) => {
                tracing::warn!(
                    link = %shown,
                    device = %device.display(),
                    serial = %serial,
                    device_name = name,
                    "stale by-id link: its device has another serial; scanning instead"
                );
                tried.push(format!(
                    "{shown} -> {}: serial {serial:?} (stale)",
                    device.display()
                ));
                None
            }
            None => {
                let why = info.no_serial.as_deref().unwrap_or("no serial");
                tracing::warn!(
                    link = %shown,
                    device = %device.display(),
                    device_name = name,
                    reason = why,
                    "cannot verify by-id link: no serial for its device; scanning instead"
                );
                tried.push(format!("{shown} -> {}: {why}", device.display()));
                None
            }
        }
    }

    /// Scan `<sys>/block` for the device whose serial names the disk. Only a missing or
    /// unreadable `<sys>/block` is an error; unreadable devices are skipped.
    fn scan(
        &self,
        name: &str,
        nvme: Option<(&Path, &Guard)>,
        tried: &mut Vec<String>,
    ) -> Result<Option<(String, DevInfo, String)>, ResolveError> {
        let block = self.sys_dir.join("block");
        let io_err = |source| ResolveError::Io {
            what: format!("list '{}'", block.display()),
            source,
        };
        let mut knames = Vec::new();
        for entry in std::fs::read_dir(&block).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if let Some(kname) = entry.file_name().to_str() {
                if dev_kind(kname).is_some() {
                    knames.push(kname.to_owned());
                }
            }
        }
        knames.sort();

        let mut seen = Vec::new();
        let mut found: Option<(String, DevInfo, String)> = None;
        for kname in knames {
            let device = self.dev_dir.join(&kname);
            let info = self.dev_info(&kname, &device, nvme);
            let Some(serial) = info.serial.clone() else {
                let why = info.no_serial.as_deref().unwrap_or("no serial");
                seen.push(format!("{kname} ({why})"));
                continue;
            };
            if !serial_names_disk(&serial, name) {
                seen.push(format!("{kname} (serial {serial:?})"));
                continue;
            }
            if std::fs::symlink_metadata(&device).is_err() {
                // The kernel knows it but udev has not made the node yet: look again later.
                seen.push(format!("{kname} (serial matches, no {})", device.display()));
                continue;
            }
            seen.push(format!("{kname} (serial matches)"));
            match &found {
                None => found = Some((kname, info, serial)),
                Some((first, _, _)) => tracing::warn!(
                    device_name = name,
                    chosen = %first,
                    also = %kname,
                    "several block devices report the disk's name as serial; using the first"
                ),
            }
        }
        if found.is_none() {
            let listed = if seen.is_empty() {
                "no candidate devices".to_owned()
            } else {
                seen.join(", ")
            };
            tried.push(format!("scan of {}: {listed}", block.display()));
        }
        Ok(found)
    }

    /// Serial and attributes of `<sys>/block/<kname>`; `device` is the node handed to nvme-cli
    /// (with the guard on what it may open).
    fn dev_info(&self, kname: &str, device: &Path, nvme: Option<(&Path, &Guard)>) -> DevInfo {
        let dir = self.sys_dir.join("block").join(kname);
        let mut info = DevInfo {
            read_only: read_attr(&dir.join("ro")).and_then(|s| match s.as_str() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            }),
            size_bytes: read_attr(&dir.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .and_then(|sectors| sectors.checked_mul(512)),
            vendor: read_attr(&dir.join("device/vendor")),
            model: read_attr(&dir.join("device/model")),
            ..DevInfo::default()
        };
        if !dir.is_dir() {
            info.no_serial = Some(format!("not in {}", self.sys_dir.join("block").display()));
            return info;
        }
        match dev_kind(kname) {
            Some(DevKind::Nvme) => {
                let asked = match nvme {
                    None => Err("no nvme-cli to read NVMe id".to_owned()),
                    Some((bin, guard)) => guard.forbids(device, &info).map_or(Ok(bin), Err),
                };
                match asked {
                    Err(why) => {
                        tracing::debug!(device = %device.display(), reason = %why, "NVMe device skipped");
                        info.no_serial = Some(why);
                    }
                    Ok(bin) => match self.nvme_id_ns(bin, device) {
                        Ok(data) => {
                            info.serial = nvme_device_name(&data);
                            if info.serial.is_none() {
                                info.no_serial = Some("no device_name in NVMe id-ns data".into());
                            }
                        }
                        Err(e) => {
                            tracing::debug!(device = %device.display(), error = %e, "nvme id-ns failed");
                            info.no_serial = Some(format!("nvme id-ns failed: {e}"));
                        }
                    },
                }
            }
            _ => {
                info.serial = read_bounded(&dir.join("device/vpd_pg80"))
                    .ok()
                    .and_then(|page| parse_vpd_pg80(&page))
                    .or_else(|| read_attr(&dir.join("device/serial")).and_then(non_empty))
                    .or_else(|| read_attr(&dir.join("serial")).and_then(non_empty));
                if info.serial.is_none() {
                    info.no_serial = Some("no serial in sysfs".into());
                }
            }
        }
        info
    }

    /// `unopened` with the refused disks' by-id links followed (a refused name that is not a
    /// valid device name has no link to follow).
    fn guard(&self, unopened: &Unopened) -> Guard {
        let mut refused = Vec::new();
        for name in &unopened.refused {
            if validate_device_name(name).is_err() {
                continue;
            }
            for prefix in [GOOGLE_PREFIX, SCSI_PREFIX] {
                if let Ok(dev) =
                    std::fs::canonicalize(self.by_id_dir.join(format!("{prefix}{name}")))
                {
                    refused.push((name.clone(), dev));
                }
            }
        }
        Guard {
            refused,
            read_only: unopened.read_only,
        }
    }

    /// nvme-cli to use, if any.
    fn nvme_binary(&self) -> Option<PathBuf> {
        if let Some(cmd) = &self.nvme_command {
            return cmd.is_file().then(|| cmd.clone());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|d| d.join("nvme"))
            .find(|p| p.is_file())
    }

    /// The raw Identify Namespace data of an NVMe namespace (`nvme id-ns -b <device>`).
    fn nvme_id_ns(&self, bin: &Path, device: &Path) -> io::Result<Vec<u8>> {
        let mut cmd = Command::new(bin);
        cmd.arg("id-ns")
            .arg("-b")
            .arg(device)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let (status, out) = run_bounded(&mut cmd, self.nvme_timeout, NVME_OUTPUT_LIMIT)?;
        if !status.success() {
            return Err(io::Error::other(format!("'{}' {status}", bin.display())));
        }
        Ok(out)
    }
}

impl Guard {
    /// Why `device` (with the sysfs `info` read so far) must not be opened, if it must not.
    fn forbids(&self, device: &Path, info: &DevInfo) -> Option<String> {
        let real = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_owned());
        if let Some((name, _)) = self.refused.iter().find(|(_, d)| *d == real) {
            return Some(format!("the device of refused disk '{name}': not opened"));
        }
        if self.read_only && info.read_only == Some(false) {
            return Some("writable (ro = 0) and the disk is attached READ_ONLY: not opened".into());
        }
        let dev = crate::mount::mountinfo::block_device_number(&real)?;
        let users = crate::mount::mountinfo::users(dev).ok()?;
        let first = users.mounts.first()?;
        Some(format!(
            "holds a filesystem mounted on {}: not opened",
            first.mount_point.display()
        ))
    }
}

/// Assemble the answer.
fn resolved(
    device: PathBuf,
    kernel_name: String,
    via: Via,
    serial: String,
    info: DevInfo,
) -> Resolved {
    Resolved {
        device,
        kernel_name,
        via,
        serial,
        read_only: info.read_only,
        size_bytes: info.size_bytes,
        vendor: info.vendor,
        model: info.model,
    }
}

/// Run a command, keep at most `limit` bytes of its stdout, and kill it after `timeout`.
fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
    limit: u64,
) -> io::Result<(ExitStatus, Vec<u8>)> {
    let mut child = spawn_retrying(cmd)?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        thread::spawn(move || {
            let mut out = Vec::new();
            let result = stdout.take(limit).read_to_end(&mut out).map(|_| out);
            // The receiver may have given up already.
            let _ = tx.send(result);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {} ms", timeout.as_millis()),
            ));
        }
        thread::sleep(Duration::from_millis(10));
    };
    // The process is gone; its output follows at once unless a descendant holds the pipe.
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let out = match rx.recv_timeout(wait) {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::other("output not closed after exit")),
    };
    Ok((status, out))
}

/// Spawn, retrying briefly on `ETXTBSY` (an executable just written, still open in a forked
/// sibling).
fn spawn_retrying(cmd: &mut Command) -> io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 20 => {
                tries += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Read at most [`ATTR_LIMIT`] bytes of a file.
fn read_bounded(path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)?.take(ATTR_LIMIT).read_to_end(&mut out)?;
    Ok(out)
}

/// A text attribute, trimmed of whitespace and NULs; `None` when unreadable.
fn read_attr(path: &Path) -> Option<String> {
    let bytes = read_bounded(path).ok()?;
    Some(trim_text(&String::from_utf8_lossy(&bytes)).to_owned())
}

/// Trim ASCII whitespace and NULs.
fn trim_text(s: &str) -> &str {
    s.trim_matches(|c: char| c == '\0' || c.is_ascii_whitespace())
}

/// `Some` for a non-empty string.
fn non_empty(s: impl Into<String>) -> Option<String> {
    let s = s.into();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A fake `/dev/disk/by-id`, `/sys` and `/dev` in a temp dir.
    struct Tree {
        tmp: tempfile::TempDir,
        resolver: Resolver,
    }

    impl Tree {
        fn new() -> Tree {
            let tmp = tempfile::tempdir().expect("tempdir");
            let resolver = Resolver {
                by_id_dir: tmp.path().join("by-id"),
                sys_dir: tmp.path().join("sys"),
                dev_dir: tmp.path().join("dev"),
                nvme_command: Some(tmp.path().join("no-nvme")),
                nvme_timeout: Duration::from_secs(5),
            };
            for d in [&resolver.by_id_dir, &resolver.dev_dir] {
                std::fs::create_dir_all(d).expect("mkdir");
            }
            std::fs::create_dir_all(resolver.sys_dir.join("block")).expect("mkdir");
            Tree { tmp, resolver }
        }

        /// A SCSI disk `kname` with serial `serial` in VPD page 0x80, and its device node.
        fn scsi(&self, kname: &str, serial: &str) {
            let dev = self.resolver.sys_dir.join("block").join(kname);
            std::fs::create_dir_all(dev.join("device")).expect("mkdir");
            std::fs::write(dev.join("device/vpd_pg80"), vpd(serial)).expect("write");
            std::fs::write(dev.join("device/vendor"), "Google  \n").expect("write");
            std::fs::write(dev.join("device/model"), "PersistentDisk  \n").expect("write");
            std::fs::write(dev.join("ro"), "1\n").expect("write");
            std::fs::write(dev.join("size"), "20971520\n").expect("write");
            std::fs::write(self.resolver.dev_dir.join(kname), b"").expect("write");
        }

        /// An NVMe namespace `kname` with read-only flag `ro`, its device node, and the Identify
        /// Namespace data naming `name` in `<tmp>/idns-<kname>` (for a fake nvme-cli to print).
        fn nvme(&self, kname: &str, name: &str, ro: &str) {
            let sys = self.resolver.sys_dir.join("block").join(kname);
            std::fs::create_dir_all(&sys).expect("mkdir");
            std::fs::write(sys.join("ro"), ro).expect("write");
            std::fs::write(self.dev(kname), b"").expect("write");
            let json = format!(r#"{{"device_name":"{name}","disk_type":"PERSISTENT"}}"#);
            let idns = self.tmp.path().join(format!("idns-{kname}"));
            std::fs::write(idns, id_ns(&json)).expect("write");
        }

        fn link(&self, name: &str, target: &Path) {
            symlink(target, self.resolver.by_id_dir.join(name)).expect("symlink");
        }

        fn dev(&self, kname: &str) -> PathBuf {
            self.resolver.dev_dir.join(kname)
        }
    }

    /// A VPD page 0x80 with `serial`, padded with spaces like real devices.
    fn vpd(serial: &str) -> Vec<u8> {
        let body = format!("{serial}    ");
        let len = u16::try_from(body.len()).expect("short");
        let mut page = vec![0u8, 0x80];
        page.extend_from_slice(&len.to_be_bytes());
        page.extend_from_slice(body.as_bytes());
        page
    }

    /// Identify Namespace data with `json` at byte 384.
    fn id_ns(json: &str) -> Vec<u8> {
        let mut data = vec![0u8; NVME_ID_NS_LEN];
        data[NVME_VS_OFFSET..NVME_VS_OFFSET + json.len()].copy_from_slice(json.as_bytes());
        data
    }

    #[test]
    fn vpd_pg80_parses_and_survives_garbage() {
        assert_eq!(parse_vpd_pg80(&vpd("data-1")).as_deref(), Some("data-1"));
        let mut nul_padded = vec![0, 0x80, 0, 8];
        nul_padded.extend_from_slice(b"  abc\0\0\0");
        assert_eq!(parse_vpd_pg80(&nul_padded).as_deref(), Some("abc"));
        // Extra bytes after the page are ignored.
        let mut long = vpd("x");
        long.extend_from_slice(b"trailing");
        assert_eq!(parse_vpd_pg80(&long).as_deref(), Some("x"));
        for bad in [
            &b""[..],
            &[0],
            &[0, 0x80],
            &[0, 0x80, 0],
            &[0, 0x80, 0, 0],
            &[0, 0x80, 0, 4, b' ', 0, b' ', 0],
            &[0, 0x83, 0, 1, b'a'],
            &[0, 0x80, 0xff, 0xff, b'a', b'b'],
            &[0, 0x80, 0, 5, b'a', b'b'],
        ] {
            assert_eq!(parse_vpd_pg80(bad), None, "{bad:?}");
        }
        for n in 0..64u8 {
            let garbage: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = parse_vpd_pg80(&garbage);
        }
    }

    #[test]
    fn nvme_device_name_parses_and_survives_garbage() {
        let data = id_ns(r#"{"device_name":"data-1","disk_type":"PERSISTENT"}"#);
        assert_eq!(nvme_device_name(&data).as_deref(), Some("data-1"));
        // Shorter than 4096 bytes, whitespace before, garbage after the JSON value.
        let mut short = vec![0u8; NVME_VS_OFFSET];
        short.extend_from_slice(b"\0\0 {\"disk_type\":\"PERSISTENT\",\"device_name\":\"d2\"}xyz");
        assert_eq!(nvme_device_name(&short).as_deref(), Some("d2"));
        for bad in [
            Vec::new(),
            vec![0u8; 100],
            vec![0u8; NVME_VS_OFFSET],
            vec![0u8; NVME_ID_NS_LEN],
            id_ns("not json"),
            id_ns(r#"{"device_name":42}"#),
            id_ns(r#"{"device_name":""}"#),
            id_ns(r#"{"disk_type":"PERSISTENT"}"#),
            id_ns(r#"["device_name"]"#),
            id_ns(r#"{"device_name":"trunc"#),
        ] {
            assert_eq!(nvme_device_name(&bad), None, "{bad:?}");
        }
        // JSON beyond byte 4096 is not looked at.
        let mut beyond = vec![0u8; NVME_ID_NS_LEN];
        beyond.extend_from_slice(br#"{"device_name":"x"}"#);
        assert_eq!(nvme_device_name(&beyond), None);
    }

    #[test]
    fn names_are_validated() {
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            "a..b",
            "x\0y",
            "with space",
            "é",
            "/abs",
        ] {
            let err = validate_device_name(bad).expect_err(bad);
            assert_eq!(err.kind(), "invalid_name", "{bad:?}");
        }
        assert!(validate_device_name(&"a".repeat(129)).is_err());
        for good in [
            "data-1",
            "a",
            "persistent-disk-0",
            "Scan_Disk.2",
            &"a".repeat(63),
        ] {
            validate_device_name(good).expect(good);
        }
        let tree = Tree::new();
        for bad in ["../x", "a/b", ""] {
            let err = tree
                .resolver
                .resolve_once(bad, &Unopened::default())
                .expect_err(bad);
            assert!(matches!(err, ResolveError::InvalidName { .. }), "{err}");
        }
    }

    #[test]
    fn serial_forms() {
        assert!(serial_names_disk("data-1", "data-1"));
        assert!(serial_names_disk(" data-1 ", "data-1"));
        assert!(serial_names_disk(
            "0Google  PersistentDisk  data-1",
            "data-1"
        ));
        assert!(serial_names_disk("0Google_PersistentDisk_data-1", "data-1"));
        assert!(!serial_names_disk("data-10", "data-1"));
        assert!(!serial_names_disk(
            "0Google PersistentDisk data-1 x",
            "data-1"
        ));
    }

    #[test]
    fn kinds() {
        for (k, want) in [
            ("sda", Some(DevKind::Sysfs)),
            ("sdab", Some(DevKind::Sysfs)),
            ("vdb", Some(DevKind::Sysfs)),
            ("loop12", Some(DevKind::Sysfs)),
            ("nvme0n1", Some(DevKind::Nvme)),
            ("nvme10n22", Some(DevKind::Nvme)),
            ("nvme0c0n1", None),
            ("nvme0n1p1", None),
            ("nvme0", None),
            ("sda1", None),
            ("sd", None),
            ("loop", None),
            ("loop-control", None),
            ("dm-0", None),
            ("sr0", None),
        ] {
            assert_eq!(dev_kind(k), want, "{k}");
        }
    }

    #[test]
    fn found_through_google_link() {
        let tree = Tree::new();
        tree.scsi("sdb", "data-1");
        tree.link("google-data-1", &tree.dev("sdb"));
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("found");
        assert_eq!(r.device, tree.dev("sdb"));
        assert_eq!(r.kernel_name, "sdb");
        assert_eq!(
            r.via,
            Via::ById(tree.resolver.by_id_dir.join("google-data-1"))
        );
        assert_eq!(r.serial, "data-1");
        assert_eq!(r.read_only, Some(true));
        assert_eq!(r.size_bytes, Some(20_971_520 * 512));
        assert_eq!(r.vendor.as_deref(), Some("Google"));
        assert_eq!(r.model.as_deref(), Some("PersistentDisk"));
    }

    #[test]
    fn relative_link_targets_resolve_against_the_link_dir() {
        let tree = Tree::new();
        tree.scsi("sdb", "data-1");
        tree.link("google-data-1", Path::new("../dev/sdb"));
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("found");
        assert_eq!(
            r.device,
            std::fs::canonicalize(tree.dev("sdb")).expect("canonicalize")
        );
        assert!(matches!(r.via, Via::ById(_)));
    }

    #[test]
    fn scsi_id_link_used_when_google_link_missing() {
        let tree = Tree::new();
        tree.scsi("sdc", "data-1");
        tree.link("scsi-0Google_PersistentDisk_data-1", &tree.dev("sdc"));
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("found");
        assert_eq!(r.device, tree.dev("sdc"));
        assert_eq!(
            r.via,
            Via::ScsiId(
                tree.resolver
                    .by_id_dir
                    .join("scsi-0Google_PersistentDisk_data-1")
            )
        );
    }

    #[test]
    fn stale_link_falls_through_to_scan() {
        let tree = Tree::new();
        tree.scsi("sdb", "other-disk");
        tree.scsi("sdc", "data-1");
        tree.scsi("sda", "boot");
        tree.link("google-data-1", &tree.dev("sdb"));
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("found");
        assert_eq!(r.device, tree.dev("sdc"));
        assert_eq!(r.via, Via::SerialScan);
        assert_eq!(r.serial, "data-1");
    }

    #[test]
    fn link_to_a_device_without_sysfs_entry_is_not_trusted() {
        let tree = Tree::new();
        let img = tree.tmp.path().join("disk.img");
        std::fs::write(&img, b"").expect("write");
        tree.link("google-data-1", &img);
        let err = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect_err("unverified");
        assert_eq!(err.kind(), "not_found");
    }

    #[test]
    fn serial_fallbacks_and_virtio() {
        let tree = Tree::new();
        // virtio-blk: `serial` directly under the block device.
        let vdb = tree.resolver.sys_dir.join("block/vdb");
        std::fs::create_dir_all(&vdb).expect("mkdir");
        std::fs::write(vdb.join("serial"), "data-1\n").expect("write");
        std::fs::write(tree.dev("vdb"), b"").expect("write");
        // A device with a text `device/serial` and no VPD page.
        let sdd = tree.resolver.sys_dir.join("block/sdd/device");
        std::fs::create_dir_all(&sdd).expect("mkdir");
        std::fs::write(sdd.join("serial"), "data-2").expect("write");
        std::fs::write(tree.dev("sdd"), b"").expect("write");
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("vdb");
        assert_eq!((r.device, r.via), (tree.dev("vdb"), Via::SerialScan));
        assert_eq!(r.read_only, None);
        let r = tree
            .resolver
            .resolve_once("data-2", &Unopened::default())
            .expect("sdd");
        assert_eq!(r.device, tree.dev("sdd"));
    }

    #[test]
    fn scan_waits_for_the_device_node() {
        let tree = Tree::new();
        tree.scsi("sdb", "data-1");
        std::fs::remove_file(tree.dev("sdb")).expect("rm");
        let err = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect_err("no node");
        assert!(err.to_string().contains("no "), "{err}");
    }

    #[test]
    fn not_found_lists_what_was_tried() {
        let tree = Tree::new();
        tree.scsi("sda", "boot");
        tree.scsi("sdb", "other");
        tree.link("google-data-1", &tree.dev("sdb"));
        let err = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect_err("not found");
        let ResolveError::NotFound { device_name, tried } = &err else {
            panic!("{err}");
        };
        assert_eq!(device_name, "data-1");
        assert_eq!(tried.len(), 3, "{tried:?}");
        assert!(tried[0].contains("google-data-1") && tried[0].contains("stale"));
        assert!(tried[1].contains("scsi-0Google_PersistentDisk_data-1: missing"));
        assert!(tried[2].contains("sda (serial \"boot\")"), "{tried:?}");
        assert!(tried[2].contains("sdb (serial \"other\")"), "{tried:?}");
        assert!(err.to_string().contains("tried:"));
    }

    #[test]
    fn missing_sys_block_is_an_io_error() {
        let tree = Tree::new();
        std::fs::remove_dir(tree.resolver.sys_dir.join("block")).expect("rmdir");
        let err = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect_err("io");
        assert_eq!(err.kind(), "io");
    }

    /// A fake nvme-cli printing `<tmp>/idns-<kname>` for `id-ns -b <dev>/<kname>`.
    fn fake_nvme(tree: &Tree, body: &str) -> PathBuf {
        let script = tree.tmp.path().join("nvme");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        script
    }

    #[test]
    fn nvme_found_through_id_ns() {
        let mut tree = Tree::new();
        let dir = tree.tmp.path().to_owned();
        let script = fake_nvme(
            &tree,
            &format!(
                "[ \"$1\" = id-ns ] && [ \"$2\" = -b ] || exit 2\ncat \"{}/idns-$(basename \"$3\")\"",
                dir.display()
            ),
        );
        tree.resolver.nvme_command = Some(script);
        tree.nvme("nvme0n1", "boot", "0");
        tree.nvme("nvme0n2", "data-1", "0");
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("scan");
        assert_eq!((r.device, r.via), (tree.dev("nvme0n2"), Via::SerialScan));
        assert_eq!(r.read_only, Some(false));
        tree.link("google-data-1", &tree.dev("nvme0n2"));
        let r = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("link");
        assert!(matches!(r.via, Via::ById(_)), "{r:?}");
        assert_eq!(r.kernel_name, "nvme0n2");
    }

    #[test]
    fn devices_ruled_out_are_never_handed_to_nvme_cli() {
        let mut tree = Tree::new();
        let dir = tree.tmp.path().to_owned();
        let script = fake_nvme(
            &tree,
            &format!(
                "echo \"$3\" >> \"{d}/opened\"\ncat \"{d}/idns-$(basename \"$3\")\"",
                d = dir.display()
            ),
        );
        tree.resolver.nvme_command = Some(script);
        // The boot disk (its link names it), a READ_WRITE disk without a link, the READ_ONLY
        // disk looked for, whose link is stale: it points at the boot disk.
        tree.nvme("nvme0n1", "boot", "0");
        tree.nvme("nvme0n2", "decoy", "0");
        tree.nvme("nvme0n3", "data-1", "1");
        tree.link("google-boot", &tree.dev("nvme0n1"));
        tree.link("google-data-1", &tree.dev("nvme0n1"));
        let unopened = Unopened {
            refused: vec!["boot".into(), "decoy".into()],
            read_only: true,
        };
        let r = tree
            .resolver
            .resolve_once("data-1", &unopened)
            .expect("found by the scan");
        assert_eq!(
            (r.kernel_name.as_str(), r.via),
            ("nvme0n3", Via::SerialScan)
        );
        let opened = std::fs::read_to_string(dir.join("opened")).expect("log");
        assert_eq!(
            opened.lines().collect::<Vec<_>>(),
            [tree.dev("nvme0n3").to_string_lossy()]
        );
        // Without the rules, every device is asked.
        std::fs::remove_file(dir.join("opened")).expect("rm");
        tree.resolver
            .resolve_once("data-1", &Unopened::default())
            .expect("found");
        let opened = std::fs::read_to_string(dir.join("opened")).expect("log");
        assert_eq!(opened.lines().count(), 4, "{opened}");
    }

    #[test]
    fn nvme_skipped_without_nvme_cli_or_on_timeout() {
        let mut tree = Tree::new();
        let sys = tree.resolver.sys_dir.join("block/nvme0n2");
        std::fs::create_dir_all(&sys).expect("mkdir");
        std::fs::write(tree.dev("nvme0n2"), b"").expect("write");
        let err = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect_err("no nvme");
        assert!(err.to_string().contains("no nvme-cli"), "{err}");

        tree.resolver.nvme_command = Some(fake_nvme(&tree, "exec sleep 10"));
        tree.resolver.nvme_timeout = Duration::from_millis(200);
        let start = Instant::now();
        let err = tree
            .resolver
            .resolve_once("data-1", &Unopened::default())
            .expect_err("timeout");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn resolve_gives_up_after_the_wait() {
        let tree = Tree::new();
        tree.scsi("sda", "boot");
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let err = tree
            .resolver
            .resolve(
                "data-1",
                &Unopened::default(),
                Duration::from_millis(700),
                &cancel,
            )
            .await
            .expect_err("not found");
        let took = start.elapsed();
        assert_eq!(err.kind(), "not_found");
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!(took < Duration::from_millis(2500), "{took:?}");
    }

    #[tokio::test]
    async fn resolve_returns_when_the_link_appears() {
        let tree = Tree::new();
        tree.scsi("sda", "boot");
        let sys = tree.resolver.sys_dir.join("block/sdb/device");
        let link = tree.resolver.by_id_dir.join("google-data-1");
        let dev = tree.dev("sdb");
        let maker = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            std::fs::create_dir_all(&sys).expect("mkdir");
            std::fs::write(sys.join("vpd_pg80"), vpd("data-1")).expect("write");
            std::fs::write(&dev, b"").expect("write");
            symlink(&dev, &link).expect("symlink");
        });
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let r = tree
            .resolver
            .resolve(
                "data-1",
                &Unopened::default(),
                Duration::from_secs(10),
                &cancel,
            )
            .await
            .expect("found");
        let took = start.elapsed();
        maker.join().expect("maker");
        assert_eq!(r.device, tree.dev("sdb"));
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn resolve_stops_on_cancel() {
        let tree = Tree::new();
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            trigger.cancel();
        });
        let start = Instant::now();
        let err = tree
            .resolver
            .resolve(
                "data-1",
                &Unopened::default(),
                Duration::from_secs(30),
                &cancel,
            )
            .await
            .expect_err("cancelled");
        assert_eq!(err.kind(), "cancelled");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn resolve_rejects_invalid_names_at_once() {
        let tree = Tree::new();
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let err = tree
            .resolver
            .resolve(
                "../etc",
                &Unopened::default(),
                Duration::from_secs(30),
                &cancel,
            )
            .await
            .expect_err("invalid");
        assert_eq!(err.kind(), "invalid_name");
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
