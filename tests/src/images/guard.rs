//! RAII guards for the kernel resources the builders borrow: loop devices, kernel mounts, ntfs-3g
//! (FUSE) mounts, and a sweep that unmounts whatever a tool (debootstrap) left mounted under a
//! directory.
//!
//! Each guard has an explicit `detach`/`unmount(self) -> Result` for the happy path, and a `Drop`
//! that tries again a few times and only prints on failure, so a failing or panicking builder
//! leaves no loop device or mount behind. They need root; nothing here runs in a private mount
//! namespace, so every mount is visible on the host while it lasts (briefly, under the cache
//! directory).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::cmd::{describe, run, tool};

/// How often a failed unmount or detach is retried before giving up.
const RETRIES: u32 = 5;
/// Pause between retries.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Run `make()` until it succeeds, at most [`RETRIES`] times.
fn retry(mut make: impl FnMut() -> Command) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..RETRIES {
        if attempt > 0 {
            std::thread::sleep(RETRY_PAUSE);
        }
        match run(&mut make(), None) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}

/// A loop device over (part of) a file; detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    dev: Option<PathBuf>,
}

impl LoopDevice {
    /// Attach `file` from byte `offset`, limited to `size` bytes when given.
    pub fn attach(
        file: &Path,
        offset: u64,
        size: Option<u64>,
        read_only: bool,
    ) -> anyhow::Result<LoopDevice> {
        let mut cmd = tool("losetup");
        cmd.arg("--find").arg("--show");
        if offset > 0 {
            cmd.arg("--offset").arg(offset.to_string());
        }
        if let Some(size) = size {
            cmd.arg("--sizelimit").arg(size.to_string());
        }
        if read_only {
            cmd.arg("--read-only");
        }
        cmd.arg(file);
        let dev = run(&mut cmd, None)
            .with_context(|| format!("failed to attach a loop device to '{}'", file.display()))?;
        let dev = dev.trim();
        if !dev.starts_with("/dev/") {
            bail!(
                "losetup printed no device for '{}': {dev:?}",
                file.display()
            );
        }
        Ok(LoopDevice {
            dev: Some(PathBuf::from(dev)),
        })
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        // OK: `dev` is only `None` after `detach`, which consumes `self`.
        self.dev
            .as_deref()
            .unwrap_or_else(|| Path::new("/dev/null"))
    }

    /// Detach now, reporting failure.
    pub fn detach(mut self) -> anyhow::Result<()> {
        match self.dev.take() {
            Some(dev) => detach(&dev),
            None => Ok(()),
        }
    }
}

fn detach(dev: &Path) -> anyhow::Result<()> {
    retry(|| {
        let mut cmd = tool("losetup");
        cmd.arg("--detach").arg(dev);
        cmd
    })
    .with_context(|| format!("failed to detach loop device '{}'", dev.display()))
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(dev) = self.dev.take() {
            if let Err(e) = detach(&dev) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// A kernel mount; unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    target: Option<PathBuf>,
}

impl Mount {
    /// `mount -t fstype -o options source target`.
    pub fn new(source: &Path, target: &Path, fstype: &str, options: &str) -> anyhow::Result<Mount> {
        let mut cmd = tool("mount");
        cmd.arg("-t").arg(fstype);
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        cmd.arg(source).arg(target);
        run(&mut cmd, None).with_context(|| {
            format!(
                "failed to mount '{}' ({fstype}) on '{}'",
                source.display(),
                target.display()
            )
        })?;
        Ok(Mount {
            target: Some(target.to_owned()),
        })
    }

    /// Where it is mounted.
    pub fn target(&self) -> &Path {
        // OK: `target` is only `None` after `unmount`, which consumes `self`.
        self.target
            .as_deref()
            .unwrap_or_else(|| Path::new("/nonexistent"))
    }

    /// Unmount now, reporting failure.
    pub fn unmount(mut self) -> anyhow::Result<()> {
        match self.target.take() {
            Some(target) => unmount(&target),
            None => Ok(()),
        }
    }
}

fn unmount(target: &Path) -> anyhow::Result<()> {
    retry(|| {
        let mut cmd = tool("umount");
        cmd.arg(target);
        cmd
    })
    .with_context(|| format!("failed to unmount '{}'", target.display()))
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(target) = self.target.take() {
            if let Err(e) = unmount(&target) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}

/// Mount points (unescaped) listed in `/proc/self/mountinfo`.
pub fn mount_points() -> anyhow::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("failed to read /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect())
}

/// Undo mountinfo's `\040`-style escapes.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match escape {
            Some(d) => {
                let value = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether something is mounted exactly on `target`.
pub fn is_mounted(target: &Path) -> anyhow::Result<bool> {
    Ok(mount_points()?.iter().any(|p| p == target))
}

/// Unmounts, deepest first, everything mounted at or below `dir` when dropped (or when
/// [`MountSweep::sweep`] is called): for tools such as debootstrap that mount `proc` and `sys`
/// inside their target and may leave them there when they fail.
#[derive(Debug)]
pub struct MountSweep {
    dir: PathBuf,
}

impl MountSweep {
    /// Watch `dir` (made absolute).
    pub fn new(dir: &Path) -> anyhow::Result<MountSweep> {
        // mountinfo lists canonical paths.
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("failed to resolve '{}'", dir.display()))?;
        Ok(MountSweep { dir })
    }

    /// Unmount everything at or below the directory now.
    pub fn sweep(&self) -> anyhow::Result<()> {
        let mut under: Vec<PathBuf> = mount_points()?
            .into_iter()
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        under.dedup();
        for target in under {
            unmount(&target).or_else(|_| {
                // Busy after retries: detach it lazily rather than leave it behind.
                let mut cmd = tool("umount");
                cmd.arg("--lazy").arg(&target);
                run(&mut cmd, None).map(drop)
            })?;
        }
        Ok(())
    }
}

impl Drop for MountSweep {
    fn drop(&mut self) {
        if let Err(e) = self.sweep() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// An ntfs-3g (FUSE) mount of an NTFS image file or device. ntfs-3g runs in the foreground as
/// our child (`-o no_detach`) so that unmounting can wait for it to exit, which is when it has
/// written everything back to the image.
#[derive(Debug)]
pub struct NtfsMount {
    target: PathBuf,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

/// How long ntfs-3g gets to mount, and to exit after unmounting.
const NTFS_WAIT: Duration = Duration::from_secs(30);

impl NtfsMount {
    /// Mount `source` on `target` with ntfs-3g.
    pub fn new(source: &Path, target: &Path, read_only: bool) -> anyhow::Result<NtfsMount> {
        // mountinfo lists canonical paths.
        let target = std::fs::canonicalize(target)
            .with_context(|| format!("failed to resolve '{}'", target.display()))?;
        let log = tempfile::Builder::new()
            .prefix("snapscan-ntfs-3g-")
            .suffix(".log")
            .tempfile()
            .context("failed to create a log file for ntfs-3g")?;
        let mut options = String::from("no_detach");
        if read_only {
            options.push_str(",ro");
        }
        let mut cmd = tool("ntfs-3g");
        cmd.arg("-o")
            .arg(&options)
            .arg(source)
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(log.reopen().context("failed to reopen the ntfs-3g log")?)
            .stderr(log.reopen().context("failed to reopen the ntfs-3g log")?);
        let line = describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{line}` (is ntfs-3g installed?)"))?;
        let mut mount = NtfsMount {
            target,
            child: Some(child),
            log,
        };
        let start = Instant::now();
        loop {
            if is_mounted(&mount.target)? {
                return Ok(mount);
            }
            if let Some(child) = mount.child.as_mut() {
                if let Some(status) = child.try_wait().context("failed to poll ntfs-3g")? {
                    mount.child = None;
                    bail!(
                        "`{line}` exited ({status}) before mounting: {}",
                        mount.log_text()
                    );
                }
            }
            if start.elapsed() > NTFS_WAIT {
                let log = mount.log_text();
                if let Some(mut child) = mount.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                // Drop removes a mount that appeared after all.
                bail!("`{line}` did not mount within {NTFS_WAIT:?}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it is mounted.
    pub fn target(&self) -> &Path {
        &self.target
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path())
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    }

    /// Unmount, then wait for ntfs-3g to finish writing and exit.
    pub fn unmount(mut self) -> anyhow::Result<()> {
        self.finish()
    }

    /// Unmount if mounted, then reap ntfs-3g (killing it if it does not exit in time), then
    /// remove the dead FUSE mount a killed daemon leaves. Idempotent.
    fn finish(&mut self) -> anyhow::Result<()> {
        if is_mounted(&self.target)? {
            unmount(&self.target)?;
        }
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().context("failed to wait for ntfs-3g")? {
                break Some(status);
            }
            if start.elapsed() > NTFS_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if is_mounted(&self.target)? {
            unmount(&self.target)?;
        }
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!(
                "ntfs-3g on '{}' exited with {status}: {}",
                self.target.display(),
                self.log_text()
            ),
            None => bail!(
                "ntfs-3g on '{}' did not exit within {NTFS_WAIT:?}: {}",
                self.target.display(),
                self.log_text()
            ),
        }
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Open (creating) and exclusively lock `path`; the lock lasts as long as the returned file.
pub fn lock_file(path: &Path) -> anyhow::Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("failed to open lock file '{}'", path.display()))?;
    file.lock()
        .with_context(|| format!("failed to lock '{}'", path.display()))?;
    Ok(file)
}
