//! Our own decoders' framing: the kernel's lz4 legacy format (chunk sizes, the magic
//! repeated by `cat`, padding, chunks past 8 MiB) and the lzop container (header fields,
//! extra field, block sizes, Adler-32/CRC-32). The first byte picks the format and the rest
//! follows its magic, so the fuzzer spends its time past the magic. The stream is read as
//! an initramfs segment, through both input paths.
#![no_main]

use libfuzzer_sys::fuzz_target;

const LZ4_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
const LZOP_MAGIC: [u8; 9] = [0x89, b'L', b'Z', b'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a];

fuzz_target!(|data: &[u8]| {
    rootpack_fuzz::sandbox();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let magic: &[u8] = if pick & 1 == 0 {
        &LZ4_MAGIC
    } else {
        &LZOP_MAGIC
    };
    let stream = [magic, rest].concat();
    rootpack_fuzz::list_both_ways(&stream);
});
