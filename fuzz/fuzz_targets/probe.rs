//! Fuzz the superblock probes over arbitrary volumes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = snapscan::disk::probe::probe(data);
});
