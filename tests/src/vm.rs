//! The VM test's scanner VM: a Debian 12 guest (debootstrap with a kernel, systemd and the
//! runtime packages, cached) into which `image/install.sh` installs snapscan exactly as an image
//! build does, booted under QEMU (TCG: no KVM here) the way GCE runs a scanner VM:
//!
//! - disks on a virtio-scsi controller as `scsi-hd` with vendor `Google`, product
//!   `PersistentDisk` and serial = device name; READ_ONLY ones are read-only drives;
//! - the metadata server at `169.254.169.254:80`, the upload receiver at
//!   `169.254.169.100:8080` and the Compute API at `169.254.169.101:8080` (when the test runs
//!   one), forwarded to the host's fakes by QEMU's user network
//!   (`guestfwd`, one `socat` per connection: a plain chardev would multiplex every guest
//!   connection onto one host socket);
//! - the console on the first serial port; on the second, the agent's journal as JSON, written
//!   by a test-only unit when the guest shuts down ([`Vm::power_down`], ACPI through QMP);
//! - disks the fake Compute API attaches while the VM runs are hot-plugged through QMP
//!   (`blockdev-add` + `device_add` of the same `scsi-hd`; `device_del` + `blockdev-del`):
//!   [`Hotplug`], a [`DiskBus`].
//!
//! The guest's settings for the test: the QFlow sink and the Compute API at the forwarded
//! addresses and the QFlow token (`/etc/snapscan/agent.d/90-vmtest.toml`,
//! `/etc/snapscan/agent.env`), DHCP by
//! systemd-networkd. Everything else is what the image ships.
//!
//! Not here: the fakes themselves, the assertions (`tests/tests/vm.rs`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::gce::DiskBus;

use crate::images::cmd::{run, tool};
use crate::images::roots::debootstrap_cached;

/// Bump to rebuild the cached guest tree.
pub const GUEST_REV: u32 = 2;
/// The guest's packages beyond minbase: a kernel and systemd to boot, what the image installs.
const GUEST_PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "ntfs-3g",
    "xfsprogs",
    "btrfs-progs",
    "lvm2",
    "nvme-cli",
    "e2fsprogs",
    // For the Packer build of the same image: it provisions over ssh with sudo.
    "openssh-server",
    "sudo",
];
/// Where the guest reaches the upload receiver.
pub const GUEST_QFLOW: &str = "169.254.169.100:8080";
/// Where the guest reaches the Compute API.
pub const GUEST_COMPUTE: &str = "169.254.169.101:8080";

/// A bootable guest: its root filesystem image (a whole-disk ext4, booted directly with the
/// kernel and initrd, no boot loader).
pub struct Guest {
    /// Holds the files of a guest built here (none for [`Guest::with_image`]).
    _dir: Option<tempfile::TempDir>,
    kernel: PathBuf,
    initrd: PathBuf,
    image: PathBuf,
}

impl Guest {
    /// Build the guest with the `snapscan` binary installed by `image/install.sh`, uploading
    /// with `qflow_token`.
    ///
    /// # Errors
    ///
    /// debootstrap, the install script or mkfs failed.
    pub fn build(snapscan: &Path, qflow_token: &str) -> anyhow::Result<Guest> {
        Guest::make(qflow_token, |root| {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            run(
                tool("sh")
                    .arg(repo.join("image/install.sh"))
                    .arg("--root")
                    .arg(root)
                    .arg("--binary")
                    .arg(snapscan)
                    .arg("--no-packages"),
                None,
            )
            .context("image/install.sh failed")
            .map(drop)
        })
    }

    /// The base image a Packer `qemu` build starts from: the same guest without snapscan, with
    /// a `packer` user (sudo without password) that logs in with `ssh_public_key`.
    ///
    /// # Errors
    ///
    /// debootstrap, chroot or mkfs failed.
    pub fn build_packer_base(qflow_token: &str, ssh_public_key: &str) -> anyhow::Result<Guest> {
        Guest::make(qflow_token, |root| {
            run(
                tool("chroot")
                    .arg(root)
                    .args(["useradd", "-m", "-s", "/bin/sh", "packer"]),
                None,
            )?;
            let ssh = root.join("home/packer/.ssh");
            std::fs::create_dir_all(&ssh)?;
            std::fs::write(ssh.join("authorized_keys"), ssh_public_key)?;
            run(
                tool("chroot").arg(root).args([
                    "chown",
                    "-R",
                    "packer:packer",
                    "/home/packer/.ssh",
                ]),
                None,
            )?;
            std::fs::write(
                root.join("etc/sudoers.d/packer"),
                "packer ALL=(ALL) NOPASSWD:ALL\n",
            )?;
            Ok(())
        })
    }

    /// The same kernel and initrd with another root image (what `packer build` made from this
    /// base); `self` must outlive it.
    pub fn with_image(&self, image: PathBuf) -> Guest {
        Guest {
            _dir: None,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            image,
        }
    }

    /// The kernel, initrd and command line as QEMU arguments (`-kernel K -initrd I -append A`).
    pub fn boot_args(&self) -> Vec<[String; 2]> {
        vec![
            ["-kernel".into(), self.kernel.display().to_string()],
            ["-initrd".into(), self.initrd.display().to_string()],
            ["-append".into(), KERNEL_ARGS.into()],
        ]
    }

    /// The root filesystem image.
    pub fn image(&self) -> &Path {
        &self.image
    }

    fn make(
        qflow_token: &str,
        install: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Guest> {
        let tree =
            debootstrap_cached("snapscan-vm-guest", GUEST_REV, GUEST_PACKAGES, "scanner-vm")?;
        let dir = tempfile::Builder::new().prefix("snapscan-vm-").tempdir()?;
        let root = dir.path().join("root");
        run(tool("cp").arg("-a").arg(&tree).arg(&root), None)?;
        configure(&root, qflow_token)?;
        install(&root)?;
        let boot = root.join("boot");
        let find = |prefix: &str| -> anyhow::Result<PathBuf> {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect();
            found.sort();
            found
                .pop()
                .with_context(|| format!("no {prefix}* in the guest's /boot"))
        };
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        std::fs::copy(find("vmlinuz-")?, &kernel)?;
        std::fs::copy(find("initrd.img-")?, &initrd)?;
        let image = dir.path().join("root.img");
        std::fs::File::create(&image)?.set_len(3 << 30)?;
        run(
            tool("mkfs.ext4")
                .args(["-q", "-F", "-L", "scanner-root", "-d"])
                .arg(&root)
                .arg(&image),
            None,
        )?;
        std::fs::remove_dir_all(&root)?;
        Ok(Guest {
            _dir: Some(dir),
            kernel,
            initrd,
            image,
        })
    }
}

/// The guest kernel's command line.
const KERNEL_ARGS: &str = "root=/dev/vda rw console=ttyS0 panic=-1";

/// The guest's test settings (see the module docs).
fn configure(root: &Path, qflow_token: &str) -> anyhow::Result<()> {
    let write = |path: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {path} in the guest"))
    };
    let link = |target: &str, at: &str| -> anyhow::Result<()> {
        let p = root.join(at);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p)
            .with_context(|| format!("cannot link {at} in the guest"))
    };
    write("etc/fstab", "/dev/vda / ext4 rw,errors=remount-ro 0 1\n")?;
    write(
        "etc/systemd/network/10-dhcp.network",
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
    )?;
    link(
        "/lib/systemd/system/systemd-networkd.service",
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
    )?;
    link(
        "/lib/systemd/system/systemd-networkd-wait-online.service",
        "etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service",
    )?;
    write(
        "etc/snapscan/agent.d/90-vmtest.toml",
        &format!(
            "# VM test: upload to the host's fake QFlow receiver.\n[upload]\nsink = \"qflow\"\n\
             [upload.qflow]\nurl = \"http://{GUEST_QFLOW}/qflow/snapshot/v1/upload\"\n\
             [compute]\nurl = \"http://{GUEST_COMPUTE}/compute/v1\"\n"
        ),
    )?;
    write(
        "etc/snapscan/agent.env",
        &format!("QFLOW_TOKEN={qflow_token}\n"),
    )?;
    write(
        "etc/systemd/system/snapscan-vmtest-journal.service",
        "[Unit]\nDescription=VM test: the agent's journal to the second serial port at shutdown\n\
         After=snapscan-agent.service\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n\
         ExecStart=/bin/true\n\
         ExecStop=/bin/sh -c 'journalctl -o json -u snapscan-agent.service > /dev/ttyS1'\n\n\
         [Install]\nWantedBy=multi-user.target\n",
    )?;
    link(
        "/etc/systemd/system/snapscan-vmtest-journal.service",
        "etc/systemd/system/multi-user.target.wants/snapscan-vmtest-journal.service",
    )
}

/// A disk attached to the VM.
#[derive(Debug, Clone)]
pub struct VmDisk {
    /// Device name (the SCSI serial).
    pub device_name: String,
    /// The disk image.
    pub image: PathBuf,
    /// Attached READ_ONLY.
    pub read_only: bool,
}

/// A running VM; killed on drop.
pub struct Vm {
    child: Option<Child>,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Vm {
    /// Boot `guest` with `disks`, the metadata server at host port `metadata_port`, the
    /// receiver at `qflow_port` and the Compute API at `compute_port`, if any.
    ///
    /// # Errors
    ///
    /// QEMU cannot start.
    pub fn boot(
        guest: &Guest,
        disks: &[VmDisk],
        metadata_port: u16,
        qflow_port: u16,
        compute_port: Option<u16>,
    ) -> anyhow::Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix("snapscan-vm-run-")
            .tempdir()?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
        ])
        .args(["-display", "none", "-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 panic=-1"])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw",
            guest.image().display()
        ))
        .args(["-device", "virtio-scsi-pci,id=scsi0"]);
        for (i, d) in disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!(
                "file={},if=none,id=d{i},format=raw{}",
                d.image.display(),
                if d.read_only { ",readonly=on" } else { "" }
            ));
            cmd.arg("-device").arg(format!(
                "scsi-hd,drive=d{i},bus=scsi0.0,vendor=Google,product=PersistentDisk,serial={}",
                d.device_name
            ));
        }
        let fwd = |guest_addr: &str, port: u16| {
            format!("guestfwd=tcp:{guest_addr}-cmd:socat STDIO TCP:127.0.0.1:{port}")
        };
        let mut netdev = format!(
            "user,id=n0,net=169.254.169.0/24,{},{}",
            fwd("169.254.169.254:80", metadata_port),
            fwd(GUEST_QFLOW, qflow_port)
        );
        if let Some(port) = compute_port {
            netdev.push(',');
            netdev.push_str(&fwd(GUEST_COMPUTE, port));
        }
        cmd.arg("-netdev").arg(netdev);
        cmd.args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("console.log").display()))
            .arg("-serial")
            .arg(format!("file:{}", dir.path().join("journal.log").display()))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.path().join("qmp.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("qemu.err"))?);
        let child = cmd.spawn().context("cannot start qemu-system-x86_64")?;
        Ok(Vm {
            child: Some(child),
            dir,
            started: Instant::now(),
        })
    }

    /// The console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Time since boot.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// QEMU's own errors, if it exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "qemu exited ({status}): {}",
                std::fs::read_to_string(self.dir.path().join("qemu.err")).unwrap_or_default()
            )),
            _ => None,
        }
    }

    /// Shut the guest down cleanly (ACPI power button) and wait at most `wait`; returns what
    /// the guest wrote to its second serial port (the agent's journal, JSON lines).
    ///
    /// # Errors
    ///
    /// QMP refused, or the guest did not power off in time (it is killed then).
    pub fn power_down(mut self, wait: Duration) -> anyhow::Result<String> {
        Qmp::connect(&self.qmp_socket())?.execute("system_powerdown", json!({}))?;
        let deadline = Instant::now() + wait;
        let mut child = self.child.take().context("no qemu")?;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the guest did not power off within {wait:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(std::fs::read_to_string(self.dir.path().join("journal.log")).unwrap_or_default())
    }
}

impl Vm {
    fn qmp_socket(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }
}

/// One QMP session (capabilities negotiated).
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(socket: &Path) -> anyhow::Result<Qmp> {
        let stream = UnixStream::connect(socket).context("cannot connect to QMP")?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        qmp.next_message()?; // the greeting
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn next_message(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP closed");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP said {line}"))
    }

    /// Run `command`; its `return`. Events before the answer are skipped.
    fn execute(&mut self, command: &str, arguments: Value) -> anyhow::Result<Value> {
        writeln!(
            self.writer,
            "{}",
            json!({"execute": command, "arguments": arguments})
        )?;
        loop {
            let m = self.next_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                bail!("QMP {command}: {e}");
            }
        }
    }

    /// Wait for the event `name` whose `data.device` is `device`.
    fn wait_event(&mut self, name: &str, device: &str, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let m = self.next_message()?;
            if m["event"] == name && m["data"]["device"] == device {
                return Ok(());
            }
        }
        bail!("no {name} for {device} within {wait:?}")
    }
}

/// A VM's SCSI bus as the fake Compute API's [`DiskBus`]: a disk is a `scsi-hd` hot-plugged
/// with vendor `Google`, product `PersistentDisk` and serial = device name, as at boot. Made
/// before the VM (the fake's address is part of its command line), bound to it once booted.
#[derive(Default)]
pub struct Hotplug {
    qmp: Option<PathBuf>,
    /// Device name and QMP node/device number.
    plugged: Vec<(String, u32)>,
    next: u32,
}

impl Hotplug {
    /// Plug into `vm` from now on.
    pub fn bind(&mut self, vm: &Vm) {
        self.qmp = Some(vm.qmp_socket());
    }

    fn session(&self) -> anyhow::Result<Qmp> {
        Qmp::connect(self.qmp.as_deref().context("no VM bound yet")?)
    }
}

impl DiskBus for Hotplug {
    fn plug(&mut self, device_name: &str, image: &Path, read_only: bool) -> anyhow::Result<()> {
        let n = self.next;
        self.next += 1;
        let mut qmp = self.session()?;
        qmp.execute(
            "blockdev-add",
            json!({"driver": "raw", "node-name": format!("hp{n}"), "read-only": read_only,
                   "file": {"driver": "file", "filename": image, "read-only": read_only}}),
        )?;
        qmp.execute(
            "device_add",
            json!({"driver": "scsi-hd", "id": format!("hpd{n}"), "drive": format!("hp{n}"),
                   "bus": "scsi0.0", "vendor": "Google", "product": "PersistentDisk",
                   "serial": device_name}),
        )?;
        self.plugged.push((device_name.to_owned(), n));
        Ok(())
    }

    fn unplug(&mut self, device_name: &str) -> anyhow::Result<()> {
        let at = self
            .plugged
            .iter()
            .position(|(d, _)| d == device_name)
            .with_context(|| format!("no disk '{device_name}' plugged"))?;
        let (_, n) = self.plugged.remove(at);
        let mut qmp = self.session()?;
        qmp.execute("device_del", json!({"id": format!("hpd{n}")}))?;
        // The guest lets go of the device first; then the drive can go.
        qmp.wait_event(
            "DEVICE_DELETED",
            &format!("hpd{n}"),
            Duration::from_secs(60),
        )?;
        qmp.execute("blockdev-del", json!({"node-name": format!("hp{n}")}))?;
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
