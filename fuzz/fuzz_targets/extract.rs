//! Extraction of hostile archives onto a folder: whatever the names, links, devices and
//! modes, nothing is written outside the destination (checked against a canary folder
//! beside it, on a read-only host), there is no panic, and every error names a byte offset.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rootpack_fuzz::sandbox();
    // The last byte picks one folder per segment (`extract --split`) or one tree.
    let split = data.last().is_some_and(|b| b & 1 == 1);
    rootpack_fuzz::extract_checked(data, split);
});
