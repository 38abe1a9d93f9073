//! Disks attached the way a GCE scanner VM sees them, on an ordinary Linux host: each disk image
//! gets a real loop device, a `google-<device name>` link to it in a private `by-id` directory
//! (what Google's udev rule makes), and a private sysfs tree in which that loop device reports
//! the device name as its SCSI serial (VPD page 0x80), its read-only flag and its size. The
//! agent is pointed at both directories (`[agent] by_id_dir`, `sys_dir`), so it resolves and
//! verifies devices exactly as on GCE, and then reads the real loop device. A private `/dev`
//! ([`GceDisks::dev_dir`], `[agent] dev_dir`) holds a node (a link to the loop device) under each
//! disk's kernel name, which a disk shown as an NVMe namespace changes ([`GceDisks::show_as_nvme`]).
//!
//! Both this view and a VM's bus are a [`DiskBus`], where the fake Compute API attaches.
//!
//! Not here: the metadata server's view of the attachments (`instance/disks/`, see
//! [`crate::gce_metadata`]); a test sets both.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::images::guard::LoopDevice;

/// A set of attached disks; detached on drop (their read-only flag cleared first).
pub struct GceDisks {
    dir: tempfile::TempDir,
    loops: Vec<(String, LoopDevice)>,
}

impl GceDisks {
    /// No disk yet.
    ///
    /// # Errors
    ///
    /// No temporary directory.
    pub fn new() -> anyhow::Result<GceDisks> {
        let dir = tempfile::Builder::new().prefix("gce-disks-").tempdir()?;
        std::fs::create_dir_all(dir.path().join("by-id"))?;
        std::fs::create_dir_all(dir.path().join("sys/block"))?;
        std::fs::create_dir_all(dir.path().join("dev"))?;
        Ok(GceDisks {
            dir,
            loops: Vec::new(),
        })
    }

    /// The `by-id` directory.
    pub fn by_id_dir(&self) -> PathBuf {
        self.dir.path().join("by-id")
    }

    /// The sysfs root.
    pub fn sys_dir(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    /// The device nodes, by kernel name.
    pub fn dev_dir(&self) -> PathBuf {
        self.dir.path().join("dev")
    }

    /// Attach `image` as the disk `device_name` (`read_only`: the loop device refuses writes,
    /// as a READ_ONLY attachment does). Returns the loop device.
    ///
    /// # Errors
    ///
    /// `losetup` failed, or the links and files cannot be written.
    pub fn attach(
        &mut self,
        device_name: &str,
        image: &Path,
        read_only: bool,
    ) -> anyhow::Result<PathBuf> {
        let lo = LoopDevice::attach(image, 0, None, read_only)?;
        let dev = lo.path().to_path_buf();
        let kname = dev
            .file_name()
            .and_then(|n| n.to_str())
            .context("loop device without a name")?
            .to_owned();
        let link = self.by_id_dir().join(format!("google-{device_name}"));
        std::os::unix::fs::symlink(&dev, &link)
            .with_context(|| format!("cannot link '{}'", link.display()))?;
        std::os::unix::fs::symlink(&dev, self.dev_dir().join(&kname))?;
        let block = self.sys_dir().join("block").join(&kname);
        std::fs::create_dir_all(block.join("device"))?;
        std::fs::write(block.join("device/vpd_pg80"), vpd_pg80(device_name))?;
        std::fs::write(block.join("device/vendor"), "Google  \n")?;
        std::fs::write(block.join("device/model"), "PersistentDisk  \n")?;
        std::fs::write(block.join("ro"), if read_only { "1\n" } else { "0\n" })?;
        let size = std::fs::metadata(image)?.len();
        std::fs::write(block.join("size"), format!("{}\n", size / 512))?;
        self.loops.push((device_name.to_owned(), lo));
        Ok(dev)
    }

    /// Show the disk `device_name` as the NVMe namespace `kname` (`nvme0n1`...) for the rest of
    /// its attachment: its sysfs entry and node move to that name, and its serial is no longer in
    /// sysfs (an NVMe disk's name is only in its Identify Namespace data, which nvme-cli reads by
    /// opening the device).
    ///
    /// # Errors
    ///
    /// Unknown disk, or the files cannot be moved.
    pub fn show_as_nvme(&self, device_name: &str, kname: &str) -> anyhow::Result<()> {
        let (_, lo) = self
            .loops
            .iter()
            .find(|(n, _)| n == device_name)
            .context("no such disk")?;
        let old = lo
            .path()
            .file_name()
            .context("loop device without a name")?;
        let block = self.sys_dir().join("block");
        std::fs::rename(block.join(old), block.join(kname))?;
        std::fs::remove_file(block.join(kname).join("device/vpd_pg80"))?;
        std::fs::write(block.join(kname).join("device/model"), "nvme_card-pd\n")?;
        std::fs::rename(self.dev_dir().join(old), self.dev_dir().join(kname))?;
        Ok(())
    }

    /// Remove the `google-<device_name>` link, as when udev missed the attach.
    ///
    /// # Errors
    ///
    /// No such link.
    pub fn unlink(&self, device_name: &str) -> anyhow::Result<()> {
        let link = self.by_id_dir().join(format!("google-{device_name}"));
        std::fs::remove_file(&link).with_context(|| format!("cannot remove '{}'", link.display()))
    }

    /// Make the `google-<device_name>` link stale: it points at another disk's device, as after
    /// a detach and re-attach that udev missed.
    ///
    /// # Errors
    ///
    /// Unknown disks, or the link cannot be replaced.
    pub fn make_stale(&self, device_name: &str, points_at: &str) -> anyhow::Result<()> {
        let other = self
            .loops
            .iter()
            .find(|(n, _)| n == points_at)
            .context("no such disk")?;
        let link = self.by_id_dir().join(format!("google-{device_name}"));
        std::fs::remove_file(&link)?;
        std::os::unix::fs::symlink(other.1.path(), &link)?;
        Ok(())
    }
}

impl GceDisks {
    /// Detach the disk `device_name`, as `instances.detachDisk` does: its link, its sysfs entry
    /// and its loop device go (the read-only flag cleared first, see [`Drop`]).
    ///
    /// # Errors
    ///
    /// No such disk.
    pub fn detach(&mut self, device_name: &str) -> anyhow::Result<()> {
        let at = self
            .loops
            .iter()
            .position(|(n, _)| n == device_name)
            .with_context(|| format!("no disk '{device_name}' attached"))?;
        let (_, lo) = self.loops.remove(at);
        let _ = std::fs::remove_file(self.by_id_dir().join(format!("google-{device_name}")));
        if let Some(kname) = lo.path().file_name() {
            let _ = std::fs::remove_dir_all(self.sys_dir().join("block").join(kname));
            let _ = std::fs::remove_file(self.dev_dir().join(kname));
        }
        clear_read_only(lo.path());
        drop(lo);
        Ok(())
    }

    /// The device names attached.
    pub fn attached(&self) -> Vec<String> {
        self.loops.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Where the fake Compute API attaches disks: this host's GCE-style view ([`GceDisks`]) or a
/// running VM's SCSI bus ([`crate::vm::Hotplug`]).
pub trait DiskBus: Send {
    /// Attach `image` as the disk `device_name`, read-only or not.
    ///
    /// # Errors
    ///
    /// The disk cannot be attached.
    fn plug(&mut self, device_name: &str, image: &Path, read_only: bool) -> anyhow::Result<()>;

    /// Detach the disk `device_name`.
    ///
    /// # Errors
    ///
    /// No such disk, or it cannot be detached.
    fn unplug(&mut self, device_name: &str) -> anyhow::Result<()>;
}

impl DiskBus for GceDisks {
    fn plug(&mut self, device_name: &str, image: &Path, read_only: bool) -> anyhow::Result<()> {
        self.attach(device_name, image, read_only).map(drop)
    }

    fn unplug(&mut self, device_name: &str) -> anyhow::Result<()> {
        self.detach(device_name)
    }
}

fn clear_read_only(dev: &Path) {
    let _ = crate::images::cmd::tool("blockdev")
        .arg("--setrw")
        .arg(dev)
        .status();
}

impl Drop for GceDisks {
    /// The agent sets each disk read-only (`BLKROSET`), and on a loop device that flag outlives
    /// the binding: clear it before the devices are detached and reused by other tests.
    fn drop(&mut self) {
        for (_, lo) in &self.loops {
            clear_read_only(lo.path());
        }
    }
}

/// SCSI VPD page 0x80 (unit serial number) holding `serial`, as sysfs shows it.
fn vpd_pg80(serial: &str) -> Vec<u8> {
    let len = u16::try_from(serial.len()).unwrap_or(u16::MAX);
    let mut page = vec![0u8, 0x80];
    page.extend_from_slice(&len.to_be_bytes());
    page.extend_from_slice(serial.as_bytes());
    page
}
