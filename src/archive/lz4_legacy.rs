//! The lz4 "legacy" framing that the kernel unpacks (`lz4 -l`): a magic number, then
//! chunks of a little-endian compressed size and an lz4 block of at most 8 MiB output.
//!
//! `lz4_flex`'s frame decoder rejects a chunk whose compressed size exceeds 8 MiB (legal
//! when incompressible data grows) and streams concatenated by `cat`, so this loop over the
//! block decoder handles both. The format has no end marker: the stream ends at end of
//! input, at a zero size (padding), or at a size no 8 MiB chunk can have (the next
//! segment's magic), exactly as the kernel's `unlz4` sees it.

use std::io::{self, BufRead, Read, Write};

use super::compression::read_full;
use super::input::Input;

pub const MAGIC: u32 = 0x184C_2102;
const CHUNK: usize = 8 << 20;
/// LZ4_compressBound(8 MiB): the largest compressed chunk.
const MAX_COMPRESSED: usize = CHUNK + CHUNK / 255 + 16;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub struct Decoder<'a, 'b> {
    input: &'a mut Input<'b>,
    compressed: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    len: usize,
    done: bool,
}

impl<'a, 'b> Decoder<'a, 'b> {
    pub fn new(input: &'a mut Input<'b>) -> Self {
        Decoder {
            input,
            compressed: Vec::new(),
            out: Vec::new(),
            pos: 0,
            len: 0,
            done: false,
        }
    }

    /// Decodes the next chunk into `out`; false at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<bool> {
        loop {
            let head = self.input.peek(4)?;
            if head.len() < 4 {
                if !head.is_empty() && head.iter().any(|&b| b != 0) {
                    return Err(invalid("lz4: truncated chunk header".into()));
                }
                return Ok(false);
            }
            let size = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if size == MAGIC {
                self.input.consume(4);
                continue;
            }
            if size == 0 || size as usize > MAX_COMPRESSED {
                return Ok(false);
            }
            self.input.consume(4);
            let size = size as usize;
            self.compressed.resize(size, 0);
            if read_full(self.input, &mut self.compressed)? < size {
                return Err(invalid(format!("lz4: truncated chunk of {size} bytes")));
            }
            self.out.resize(CHUNK, 0);
            self.len = lz4_flex::block::decompress_into(&self.compressed, &mut self.out)
                .map_err(|e| invalid(format!("lz4: corrupt chunk: {e}")))?;
            self.pos = 0;
            return Ok(true);
        }
    }
}

impl Read for Decoder<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.done {
                return Ok(0);
            }
            if !self.next_chunk()? {
                self.done = true;
                return Ok(0);
            }
        }
        let n = (self.len - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes the legacy framing, 8 MiB chunks, as `lz4 -l` does.
pub struct Encoder<W: Write> {
    out: W,
    pending: Vec<u8>,
    compressed: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&MAGIC.to_le_bytes())?;
        Ok(Encoder {
            out,
            pending: Vec::with_capacity(CHUNK),
            compressed: Vec::new(),
        })
    }

    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // lz4_flex asks for more room than LZ4_compressBound; what it writes stays within.
        let room = lz4_flex::block::get_maximum_output_size(self.pending.len());
        self.compressed.resize(room.max(MAX_COMPRESSED), 0);
        let n = lz4_flex::block::compress_into(&self.pending, &mut self.compressed)
            .map_err(io::Error::other)?;
        self.out.write_all(&(n as u32).to_le_bytes())?;
        self.out.write_all(&self.compressed[..n])?;
        self.pending.clear();
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.flush_chunk()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
