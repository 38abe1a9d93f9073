//! Fuzz the qcow2 (v2/v3, compressed clusters, backing files refused) image reader: open the input as one, read from its virtual disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::disk::image::Format;

fuzz_target!(|data: &[u8]| snapscan_fuzz::image(Format::Qcow2, data));
