//! Fuzz the LVM reader: the input is parsed as LVM text metadata, then as a disk whose first
//! volume is read as a PV (label, metadata area, text) and assembled into volume groups.
//! Neither may panic or hang; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::disk::lvm;
use snapscan::disk::reader::{Budget, Disk};

fuzz_target!(|data: &[u8]| {
    let _ = lvm::metadata::parse(data);
    let disk = Disk::from_bytes("fuzz", data.to_vec());
    if let Ok(volume) = disk.volume(0, disk.size(), Budget::new(16 << 20)) {
        if let Ok(Some(pv)) = lvm::read_pv(&volume) {
            let _ = lvm::assemble(&[(0, pv)]);
        }
    }
});
