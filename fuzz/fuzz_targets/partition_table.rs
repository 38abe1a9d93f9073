//! Fuzz the partition-table parser (GPT, MBR with logical partitions) over arbitrary disks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::disk::partition::read_table;
use snapscan::disk::reader::{Budget, Disk};

fuzz_target!(|data: &[u8]| {
    let disk = Disk::from_bytes("fuzz", data.to_vec());
    if let Ok(whole) = disk.volume(0, disk.size(), Budget::new(64 << 20)) {
        let _ = read_table(&whole, 512);
    }
});
