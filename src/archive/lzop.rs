//! The lzop container (initramfs-tools `COMPRESS=lzop`): a header, then blocks of
//! LZO1X data with per-block sizes and optional Adler-32/CRC-32 checksums, ending with a
//! zero-length block. Blocks are decoded by `lzokay-native` (pure Rust, MIT); the GPL LZO
//! bindings do not fit a permissively licensed project.

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
            lzokay_native::decompress_all(&self.block, Some(dst_len as usize))
                .map_err(|e| invalid(format!("corrupt block: {e:?}")))?
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
    fn adler32_matches_zlib() {
        assert_eq!(super::adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(super::adler32(&[]), 1);
    }
}
