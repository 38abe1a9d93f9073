//! The block-device ioctls: size in bytes and logical sector size (for the reader), the read-only
//! flag (`BLKROSET`/`BLKROGET`), and the loop-device ioctls that [`super::loopdev`] builds on.
//!
//! This is the only place in the crate that calls into the kernel through `unsafe`; it parses
//! nothing and decides nothing: each function is one ioctl with a safe signature. When to make a
//! device read-only and how to attach a loop device is [`super::loopdev`]'s business.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(blksszget, 0x1268, libc_int);

#[allow(non_camel_case_types)]
type libc_int = std::ffi::c_int;

/// Size of a block device in bytes (`BLKGETSIZE64`).
pub fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: `file` is an open descriptor for the call's duration and `size` is a valid u64 the
    // kernel writes to.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    Ok(size)
}

/// Logical sector size of a block device (`BLKSSZGET`).
pub fn logical_sector_size(file: &File) -> io::Result<u32> {
    let mut size: libc_int = 0;
    // SAFETY: as above; the kernel writes one int.
    unsafe { blksszget(file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
    u32::try_from(size).map_err(|_| io::Error::other("negative logical sector size"))
}

nix::ioctl_write_ptr_bad!(blkroset, 0x125d, libc_int);
nix::ioctl_read_bad!(blkroget, 0x125e, libc_int);

/// Set (`true`) or clear the kernel's read-only flag of a block device (`BLKROSET`).
pub fn set_block_read_only(file: &File, read_only: bool) -> io::Result<()> {
    let flag: libc_int = libc_int::from(read_only);
    // SAFETY: `file` is open for the call's duration and the kernel reads one int from `&flag`.
    unsafe { blkroset(file.as_raw_fd(), &flag) }.map_err(io::Error::from)?;
    Ok(())
}

/// Whether the kernel's read-only flag of a block device is set (`BLKROGET`).
pub fn is_block_read_only(file: &File) -> io::Result<bool> {
    let mut flag: libc_int = 0;
    // SAFETY: as above; the kernel writes one int.
    unsafe { blkroget(file.as_raw_fd(), &mut flag) }.map_err(io::Error::from)?;
    Ok(flag != 0)
}

/// `LO_FLAGS_READ_ONLY`: the loop device refuses writes.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the loop device detaches itself when its last user closes it.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopInfo64 {
    /// Device number of the backing file's filesystem (`st_dev`), set by the kernel.
    pub lo_device: u64,
    /// Inode number of the backing file, set by the kernel.
    pub lo_inode: u64,
    /// Device number of the loop device, set by the kernel.
    pub lo_rdevice: u64,
    /// First byte of the backing file the loop device shows.
    pub lo_offset: u64,
    /// Bytes shown from `lo_offset` (0: to the end).
    pub lo_sizelimit: u64,
    /// Loop device number, set by the kernel.
    pub lo_number: u32,
    /// Unused (legacy encryption).
    pub lo_encrypt_type: u32,
    /// Unused (legacy encryption).
    pub lo_encrypt_key_size: u32,
    /// `LO_FLAGS_*`.
    pub lo_flags: u32,
    /// The backing file's name, truncated to 63 bytes (informational).
    pub lo_file_name: [u8; 64],
    /// Unused (legacy encryption).
    pub lo_crypt_name: [u8; 64],
    /// Unused (legacy encryption).
    pub lo_encrypt_key: [u8; 32],
    /// Unused (legacy encryption).
    pub lo_init: [u64; 2],
}

impl LoopInfo64 {
    /// All fields zero.
    pub fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// `struct loop_config` from `<linux/loop.h>` (for `LOOP_CONFIGURE`, Linux 5.8+).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LoopConfig {
    /// Descriptor of the backing file.
    pub fd: u32,
    /// Logical block size (0: the default, 512).
    pub block_size: u32,
    /// Offset, size limit and flags.
    pub info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopConfig {
    /// A configuration for backing descriptor `fd` with `info`.
    pub fn new(fd: u32, info: LoopInfo64) -> Self {
        LoopConfig {
            fd,
            block_size: 0,
            info,
            reserved: [0; 8],
        }
    }
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4c82);
nix::ioctl_write_int_bad!(loop_set_fd_raw, 0x4c00);
nix::ioctl_none_bad!(loop_clr_fd_raw, 0x4c01);
nix::ioctl_write_ptr_bad!(loop_set_status64_raw, 0x4c04, LoopInfo64);
nix::ioctl_read_bad!(loop_get_status64_raw, 0x4c05, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_configure_raw, 0x4c0a, LoopConfig);

/// The number of a free loop device, created if needed (`LOOP_CTL_GET_FREE` on
/// `/dev/loop-control`).
pub fn loop_get_free(control: &File) -> io::Result<u32> {
    // SAFETY: `control` is open for the call's duration; the ioctl takes no argument.
    let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(io::Error::from)?;
    u32::try_from(n).map_err(|_| io::Error::other("negative loop device number"))
}

/// Bind loop device `dev` to `backing` with offset, size limit and flags (`LOOP_CONFIGURE`).
pub fn loop_configure(dev: &File, backing: &File, info: &LoopInfo64) -> io::Result<()> {
    let fd = u32::try_from(backing.as_raw_fd())
        .map_err(|_| io::Error::other("negative file descriptor"))?;
    let config = LoopConfig::new(fd, *info);
    // SAFETY: both files are open for the call's duration; the kernel reads one `loop_config`,
    // laid out as in <linux/loop.h>.
    unsafe { loop_configure_raw(dev.as_raw_fd(), &config) }.map_err(io::Error::from)?;
    Ok(())
}

/// Bind loop device `dev` to `backing` with default settings (`LOOP_SET_FD`, the pre-5.8 way).
pub fn loop_set_fd(dev: &File, backing: &File) -> io::Result<()> {
    // SAFETY: both files are open for the call's duration; the argument is a descriptor.
    unsafe { loop_set_fd_raw(dev.as_raw_fd(), backing.as_raw_fd()) }.map_err(io::Error::from)?;
    Ok(())
}

/// Set offset, size limit and flags of a bound loop device (`LOOP_SET_STATUS64`).
pub fn loop_set_status64(dev: &File, info: &LoopInfo64) -> io::Result<()> {
    // SAFETY: `dev` is open for the call's duration; the kernel reads one `loop_info64`.
    unsafe { loop_set_status64_raw(dev.as_raw_fd(), info) }.map_err(io::Error::from)?;
    Ok(())
}

/// Status of a loop device (`LOOP_GET_STATUS64`); fails with `ENXIO` when it is not bound.
pub fn loop_get_status64(dev: &File) -> io::Result<LoopInfo64> {
    let mut info = LoopInfo64::zeroed();
    // SAFETY: `dev` is open for the call's duration; the kernel writes one `loop_info64`.
    unsafe { loop_get_status64_raw(dev.as_raw_fd(), &mut info) }.map_err(io::Error::from)?;
    Ok(info)
}

/// Unbind a loop device (`LOOP_CLR_FD`). While other descriptors hold it open the kernel only
/// marks it auto-clearing and it is detached at the last close.
pub fn loop_clr_fd(dev: &File) -> io::Result<()> {
    // SAFETY: `dev` is open for the call's duration; the ioctl takes no argument.
    unsafe { loop_clr_fd_raw(dev.as_raw_fd()) }.map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_linux_loop_h() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
