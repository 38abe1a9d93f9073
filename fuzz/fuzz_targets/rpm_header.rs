//! Fuzz the rpm header blob parser and the BerkeleyDB `Packages` reader: the input is parsed as
//! one header, then as a BerkeleyDB file whose every value is parsed as a header. Neither may
//! panic or hang; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapscan::inventory::rpm::{bdb, header, packages};

fuzz_target!(|data: &[u8]| {
    let _ = header::parse(data);
    if let Ok(values) = bdb::values(data) {
        let _ = packages(&values.values);
    }
});
