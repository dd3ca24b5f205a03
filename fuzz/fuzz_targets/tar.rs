//! Tar archives: the input is made a ustar header's worth long and given the ustar magic,
//! so every input takes the tar path (GNU long names, PAX records, links, devices), then it
//! is listed (mapped and piped) and extracted with the same checks as cpio.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rootpack_fuzz::sandbox();
    let mut tar = data.to_vec();
    if tar.len() < 512 {
        tar.resize(512, 0);
    }
    tar[257..262].copy_from_slice(b"ustar");
    rootpack_fuzz::list_both_ways(&tar);
    rootpack_fuzz::extract_checked(&tar, false);
});
