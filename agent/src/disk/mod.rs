//! Disks: block access ([`reader`]), partition tables ([`partition`]) and superblock probes
//! ([`probe`]).
//!
//! Everything here reads through a [`reader::Volume`] window and nothing here writes.

mod ioctl;
pub mod loopdev;
pub mod lvm;
pub mod partition;
pub mod probe;
pub mod reader;
pub mod resolve;
