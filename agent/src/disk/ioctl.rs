//! The two block-device ioctls the reader needs: size in bytes and logical sector size.
//!
//! This is the only place in the crate that calls into the kernel through `unsafe`; it parses
//! nothing. Read-only enforcement (`BLKROSET`) belongs to the scan pipeline, not here.
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
