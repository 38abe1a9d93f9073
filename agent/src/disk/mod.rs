//! Disks: block access ([`reader`]), VM image formats ([`image`]) and their decoded bytes shown to
//! the kernel ([`fuse`]), partition tables ([`partition`]) and superblock probes
//! ([`probe`]).
//!
//! Everything here reads through a [`reader::Volume`] window and nothing here writes.

pub mod fuse;
pub mod image;
mod ioctl;
pub mod loopdev;
pub mod lvm;
pub mod partition;
pub mod probe;
pub mod reader;
pub mod resolve;
