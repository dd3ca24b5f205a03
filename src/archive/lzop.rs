//! The lzop container (initramfs-tools `COMPRESS=lzop`): a header, then blocks of
//! LZO1X data with per-block sizes and optional Adler-32/CRC-32 checksums, ending with a
//! zero-length block. Blocks are decoded by [`lzo1x_decompress`], our own bounds-checked
//! LZO1X decoder: the GPL LZO bindings do not fit a permissively licensed project, and
//! `lzokay-native` 0.1 (pure Rust, MIT), used before, panics on a back-reference that
//! points before the start of the block (found by fuzzing; `tests/fixtures/fuzz/`).

use std::io::{self, BufRead, Read};

use super::compression::{read_full, read_u32};
use super::input::Input;

pub const MAGIC: [u8; 9] = [0x89, b'L', b'Z', b'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
const F_ADLER32_D: u32 = 0x1;
const F_ADLER32_C: u32 = 0x2;
const F_H_EXTRA_FIELD: u32 = 0x40;
const F_CRC32_D: u32 = 0x100;
const F_CRC32_C: u32 = 0x200;
const F_H_FILTER: u32 = 0x800;
/// lzop's own MAX_BLOCK_SIZE.
const MAX_BLOCK: u32 = 64 << 20;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("lzop: {}", msg.into()))
}

pub struct Decoder<'a, 'b> {
    input: &'a mut Input<'b>,
    flags: Option<u32>,
    block: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<'a, 'b> Decoder<'a, 'b> {
    pub fn new(input: &'a mut Input<'b>) -> Self {
        Decoder {
            input,
            flags: None,
            block: Vec::new(),
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    fn read_header(&mut self) -> io::Result<u32> {
        let r: &mut dyn BufRead = self.input;
        let mut magic = [0u8; 9];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(invalid("bad magic"));
        }
        let u16be = |r: &mut dyn BufRead| -> io::Result<u16> {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            Ok(u16::from_be_bytes(b))
        };
        let u8 = |r: &mut dyn BufRead| -> io::Result<u8> {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            Ok(b[0])
        };
        let version = u16be(r)?;
        let _lib_version = u16be(r)?;
        if version >= 0x0940 {
            let _needed = u16be(r)?;
        }
        let method = u8(r)?;
        if !(1..=3).contains(&method) {
            return Err(invalid(format!("unsupported method {method}")));
        }
        if version >= 0x0940 {
            let _level = u8(r)?;
        }
        let flags = read_u32(r, true)?;
        if flags & F_H_FILTER != 0 {
            return Err(invalid("filters are not supported"));
        }
        let _mode = read_u32(r, true)?;
        let _mtime = read_u32(r, true)?;
        if version >= 0x0940 {
            let _mtime_high = read_u32(r, true)?;
        }
        let name_len = u8(r)? as usize;
        let mut name = [0u8; 255];
        r.read_exact(&mut name[..name_len])?;
        let _header_checksum = read_u32(r, true)?;
        if flags & F_H_EXTRA_FIELD != 0 {
            let len = read_u32(r, true)? as u64;
            io::copy(&mut r.take(len), &mut io::sink())?;
            let _checksum = read_u32(r, true)?;
        }
        Ok(flags)
    }

    fn next_block(&mut self) -> io::Result<bool> {
        let flags = match self.flags {
            Some(f) => f,
            None => {
                let flags = self.read_header()?;
                self.flags = Some(flags);
                flags
            }
        };
        let r: &mut dyn BufRead = self.input;
        let dst_len = read_u32(r, true)?;
        if dst_len == 0 {
            return Ok(false);
        }
        if dst_len > MAX_BLOCK {
            return Err(invalid(format!("block of {dst_len} bytes is too large")));
        }
        let src_len = read_u32(r, true)?;
        if src_len > dst_len {
            return Err(invalid("compressed block larger than its output"));
        }
        let adler = (flags & F_ADLER32_D != 0)
            .then(|| read_u32(r, true))
            .transpose()?;
        let crc = (flags & F_CRC32_D != 0)
            .then(|| read_u32(r, true))
            .transpose()?;
        if src_len < dst_len {
            for flag in [F_ADLER32_C, F_CRC32_C] {
                if flags & flag != 0 {
                    read_u32(r, true)?;
                }
            }
        }
        self.block.resize(src_len as usize, 0);
        if read_full(r, &mut self.block)? < src_len as usize {
            return Err(invalid("truncated block"));
        }
        self.out = if src_len == dst_len {
            std::mem::take(&mut self.block)
        } else {
            lzo1x_decompress(&self.block, dst_len as usize)
                .map_err(|e| invalid(format!("corrupt block: {e}")))?
        };
        if self.out.len() != dst_len as usize {
            return Err(invalid("block decompressed to the wrong size"));
        }
        if adler.is_some_and(|a| a != adler32(&self.out)) {
            return Err(invalid("Adler-32 mismatch"));
        }
        if crc.is_some_and(|c| {
            let mut h = flate2::Crc::new();
            h.update(&self.out);
            c != h.sum()
        }) {
            return Err(invalid("CRC-32 mismatch"));
        }
        self.pos = 0;
        Ok(true)
    }
}

impl Read for Decoder<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done || !self.next_block()? {
                self.done = true;
                return Ok(0);
            }
        }
        let n = (self.out.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decodes one LZO1X block (any of LZO1X-1, -1_15, -999: one format) of exactly `size`
/// bytes of output, as liblzo2's `lzo1x_decompress_safe`: every read of the input, every
/// back-reference and the output size are checked.
fn lzo1x_decompress(src: &[u8], size: usize) -> Result<Vec<u8>, &'static str> {
    struct Lzo<'a> {
        src: &'a [u8],
        ip: usize,
        out: Vec<u8>,
        size: usize,
    }
    impl Lzo<'_> {
        fn byte(&mut self) -> Result<usize, &'static str> {
            let b = *self.src.get(self.ip).ok_or("input overrun")?;
            self.ip += 1;
            Ok(b as usize)
        }
        /// A length continued in zero bytes (255 each) and a last byte, plus `base`.
        fn long_length(&mut self, base: usize) -> Result<usize, &'static str> {
            let mut n = 0usize;
            loop {
                match self.byte()? {
                    0 => n = n.checked_add(255).ok_or("length overflow")?,
                    b => return Ok(n + base + b),
                }
            }
        }
        fn literals(&mut self, n: usize) -> Result<(), &'static str> {
            let end = self.ip.checked_add(n).ok_or("input overrun")?;
            let bytes = self.src.get(self.ip..end).ok_or("input overrun")?;
            if self.out.len() + n > self.size {
                return Err("output overrun");
            }
            self.out.extend_from_slice(bytes);
            self.ip = end;
            Ok(())
        }
        /// Copies `n` bytes from `distance` back (the copy may overlap what it writes).
        fn copy(&mut self, distance: usize, n: usize) -> Result<(), &'static str> {
            if distance == 0 || distance > self.out.len() {
                return Err("lookbehind overrun");
            }
            if self.out.len() + n > self.size {
                return Err("output overrun");
            }
            let start = self.out.len() - distance;
            if distance >= n {
                self.out.extend_from_within(start..start + n);
            } else {
                // Overlapping: each byte may be one this copy wrote.
                for i in start..start + n {
                    self.out.push(self.out[i]);
                }
            }
            Ok(())
        }
        /// The low two bits of the byte two back: literals that follow a match.
        fn trailing(&self) -> usize {
            (self.src[self.ip - 2] & 3) as usize
        }
    }
    let mut z = Lzo {
        src,
        ip: 0,
        out: Vec::with_capacity(size),
        size,
    };
    // `after` is the literal count of the instruction just done: 0 (none: a literal run
    // comes next), 1-3 (a match comes next, M1 is 2 bytes near), or 4 (a long literal run
    // was just copied, M1 is 3 bytes from 2-3 KiB back).
    let mut after;
    let first = *src.first().ok_or("input overrun")? as usize;
    if first > 17 {
        z.ip = 1;
        z.literals(first - 17)?;
        after = if first - 17 < 4 { first - 17 } else { 4 };
    } else {
        after = 0;
    }
    loop {
        let t = z.byte()?;
        if t < 16 {
            match after {
                0 => {
                    let n = if t == 0 { z.long_length(15)? } else { t };
                    z.literals(n + 3)?;
                    after = 4;
                    continue;
                }
                4 => {
                    let h = z.byte()?;
                    z.copy(1 + 0x800 + (t >> 2) + (h << 2), 3)?;
                }
                _ => {
                    let h = z.byte()?;
                    z.copy(1 + (t >> 2) + (h << 2), 2)?;
                }
            }
        } else if t >= 64 {
            let h = z.byte()?;
            z.copy(1 + ((t >> 2) & 7) + (h << 3), (t >> 5) + 1)?;
        } else if t >= 32 {
            let n = if t & 31 == 0 {
                z.long_length(31)?
            } else {
                t & 31
            };
            let d = z.byte()? >> 2;
            let d = d + (z.byte()? << 6);
            z.copy(1 + d, n + 2)?;
        } else {
            let n = if t & 7 == 0 { z.long_length(7)? } else { t & 7 };
            let d = z.byte()? >> 2;
            let d = d + (z.byte()? << 6) + ((t & 8) << 11);
            if d == 0 {
                // The end marker.
                if z.ip != src.len() {
                    return Err("input not consumed");
                }
                if z.out.len() != size {
                    return Err("output underrun");
                }
                return Ok(z.out);
            }
            z.copy(d + 0x4000, n + 2)?;
        }
        after = z.trailing();
        z.literals(after)?;
    }
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the largest n with 255n(n+1)/2 + (n+1)(MOD-1) < 2^32 (zlib's NMAX).
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    #[test]
    fn lzo1x_blocks_decode_and_bad_references_are_errors() {
        use super::lzo1x_decompress as d;
        let end = [0x11, 0, 0];
        assert_eq!(d(&end, 0).unwrap(), b"");
        // 4 literals, then 8 bytes from 4 back (an overlapping copy), then the end.
        let block = [
            &[21, b'a', b'b', b'c', b'd', (7 << 5) | (3 << 2), 0][..],
            &end,
        ]
        .concat();
        assert_eq!(d(&block, 12).unwrap(), b"abcdabcdabcd");
        assert_eq!(d(&block, 11).unwrap_err(), "output overrun");
        assert_eq!(d(&block, 13).unwrap_err(), "output underrun");
        // The same from 5 back: before the start of the block.
        let block = [
            &[21, b'a', b'b', b'c', b'd', (7 << 5) | (4 << 2), 0][..],
            &end,
        ]
        .concat();
        assert_eq!(d(&block, 12).unwrap_err(), "lookbehind overrun");
        assert_eq!(d(&[21, b'a'], 4).unwrap_err(), "input overrun");
        assert_eq!(d(&[0x11, 0, 0, 0], 0).unwrap_err(), "input not consumed");
        assert_eq!(d(&[], 0).unwrap_err(), "input overrun");
    }

    #[test]
    fn adler32_matches_zlib() {
        assert_eq!(super::adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(super::adler32(&[]), 1);
    }
}
