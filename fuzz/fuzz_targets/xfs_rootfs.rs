//! Fuzz the xfs RootFs (lamxfs behind our in-volume resolution) and Linux detection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::fs::xfs;

fuzz_target!(|data: &[u8]| {
    let Some(fs) = snapscan_fuzz::volume(data).and_then(|v| xfs::open(v).ok()) else {
        return;
    };
    snapscan_fuzz::exercise(&fs);
});
