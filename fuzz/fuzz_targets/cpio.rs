//! Initramfs segments through the reader that detects every compression: any bytes are
//! read as the kernel would (zero padding, cpio newc/crc/odc, gzip, zstd, xz, lzma, bzip2,
//! lzop, lz4 legacy, or one tar), through the mapped and the piped input. No panic, the
//! two paths agree, and every error names a byte offset.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rootpack_fuzz::sandbox();
    rootpack_fuzz::list_both_ways(data);
});
