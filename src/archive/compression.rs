//! Compression formats: detection by magic bytes, in-process decoders that stop exactly at
//! the end of their stream (another initramfs segment may follow), and encoders.

use std::fmt;
use std::io::{self, BufRead, Read, Write};

use super::input::Input;
use super::{lz4_legacy, lzop};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
    Lzma,
    Bzip2,
    Lzop,
    Lz4,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lzop => "lzop",
            Compression::Lz4 => "lz4",
        }
    }

    /// Recognizes a compressed stream from its first bytes (at least 6 are needed for xz and
    /// lzma). `None` means "not compressed data we know".
    pub fn detect(magic: &[u8]) -> Option<Compression> {
        let starts = |m: &[u8]| magic.starts_with(m);
        if starts(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else if starts(b"BZh") {
            Some(Compression::Bzip2)
        } else if starts(&lzop::MAGIC[..4]) {
            Some(Compression::Lzop)
        } else if starts(&lz4_legacy::MAGIC.to_le_bytes()) {
            Some(Compression::Lz4)
        } else if starts(&[0x5d, 0x00, 0x00]) {
            // The .lzma header: lc/lp/pb properties byte 0x5d (the only one the kernel and
            // xz --format=lzma use), then a little-endian dictionary size.
            Some(Compression::Lzma)
        } else {
            None
        }
    }

    /// The compression a file name asks for: `x.cpio.zst` -> Zstd.
    pub fn from_extension(name: &str) -> Option<Compression> {
        let ext = name.rsplit('.').next()?;
        SUFFIXES
            .iter()
            .find(|(_, names)| names.contains(&ext))
            .map(|(c, _)| *c)
    }

    /// The suffix a compressed file gets (`zst`); none for no compression.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            c => SUFFIXES.iter().find(|(s, _)| *s == c).map(|(_, n)| n[0]),
        }
    }

    /// What rootpack writes, as well as reads.
    pub fn writable(self) -> bool {
        matches!(
            self,
            Compression::None
                | Compression::Gzip
                | Compression::Zstd
                | Compression::Xz
                | Compression::Lz4
        )
    }
}

/// File name suffixes: the one rootpack writes first, then others read as the same.
const SUFFIXES: &[(Compression, &[&str])] = &[
    (Compression::Gzip, &["gz", "tgz"]),
    (Compression::Zstd, &["zst", "zstd"]),
    (Compression::Xz, &["xz"]),
    (Compression::Lzma, &["lzma"]),
    (Compression::Bzip2, &["bz2"]),
    (Compression::Lzop, &["lzo"]),
    (Compression::Lz4, &["lz4"]),
    (Compression::None, &["cpio", "tar", "img"]),
];

/// The most an xz or lzma decoder may allocate: `xz -9e` needs 65 MiB; a header asking
/// for more is refused instead of allocated.
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// zstd's content checksum (the low half of XXH64 over the frame's output), checked by
/// whoever reads the decoded bytes instead of by the decoder: decoding a frame is
/// sequential and the slowest step of reading an initramfs, so hashing (about 6 % of it)
/// is better done on the thread that waits for the decoder.
pub struct ContentChecksum(xxhash_rust::xxh64::Xxh64);

impl ContentChecksum {
    /// For the zstd frame starting `head` (at least its first 5 bytes), if it has one.
    pub fn of_zstd_frame(head: &[u8]) -> Option<ContentChecksum> {
        // Frame header descriptor, bit 2: Content_Checksum_flag.
        let flagged = head.len() > 4 && head[4] & 0x04 != 0;
        flagged.then(|| ContentChecksum(xxhash_rust::xxh64::Xxh64::new(0)))
    }

    pub fn update(&mut self, decoded: &[u8]) {
        self.0.update(decoded);
    }

    /// Compares with the frame's last 4 bytes.
    pub fn verify(&self, trailer: &[u8]) -> io::Result<()> {
        if trailer == (self.0.digest() as u32).to_le_bytes() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "content checksum mismatch: the decoded data is corrupt",
            ))
        }
    }
}

/// A decoder of one stream, reading from `input` and consuming exactly the stream's bytes.
/// With `caller_checks`, a zstd decoder skips the content checksum: the caller verifies
/// it with a [`ContentChecksum`].
pub fn decoder<'a>(
    compression: Compression,
    input: &'a mut Input<'_>,
    caller_checks: bool,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)?.single_frame();
            // The kernel's decoder takes windows up to 2^27 (`zstd --long=27`); a larger
            // one is refused rather than allocated.
            d.window_log_max(27)?;
            if caller_checks {
                d.set_parameter(zstd::zstd_safe::DParameter::ForceIgnoreChecksum(true))?;
            }
            Box::new(d)
        }
        Compression::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Bzip2 => Box::new(bzip2::bufread::BzDecoder::new(input)),
        Compression::Lzop => Box::new(lzop::Decoder::new(input)),
        Compression::Lz4 => Box::new(lz4_legacy::Decoder::new(input)),
    })
}

/// A compressing writer; `finish` writes the stream's end and returns the inner writer.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
    Lz4(lz4_legacy::Encoder<W>),
}

impl<W: Write> Encoder<W> {
    /// `level` None picks each compressor program's own default (gzip 6, zstd 3, xz 6),
    /// which is what 3cpio gives (it runs the programs without a level);
    /// `mkinitramfs` passes zstd `-9`.
    pub fn new(compression: Compression, out: W, level: Option<u32>) -> io::Result<Encoder<W>> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(level.unwrap_or(6).min(9)),
            )),
            Compression::Zstd => {
                let level = level.map_or(3, |l| l.clamp(1, 22) as i32);
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                // As the zstd program does: every frame carries its content checksum.
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
            Compression::Xz => {
                // The kernel's xz decoder verifies CRC32 only (scripts/xz_wrap.sh).
                let stream = liblzma::stream::Stream::new_easy_encoder(
                    level.unwrap_or(6).min(9),
                    liblzma::stream::Check::Crc32,
                )
                .map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Lz4 => Encoder::Lz4(lz4_legacy::Encoder::new(out)?),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("writing {other} is not supported (use gzip, zstd, xz or lz4)"),
                ));
            }
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Lz4(e) => e.finish(),
        }
    }

    fn inner(&mut self) -> &mut dyn Write {
        match self {
            Encoder::None(w) => w,
            Encoder::Gzip(e) => e,
            Encoder::Zstd(e) => e,
            Encoder::Xz(e) => e,
            Encoder::Lz4(e) => e,
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner().flush()
    }
}

/// Reads exactly `buf.len()` bytes unless the stream ends first; returns how many were read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads a big-endian or little-endian u32 from a buffered reader.
pub(crate) fn read_u32(r: &mut dyn BufRead, big_endian: bool) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_every_magic() {
        let cases: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 8, 0, 0, 0], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], Compression::Zstd),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
            (&[0x5d, 0, 0, 0x80, 0, 0xff], Compression::Lzma),
            (b"BZh91A", Compression::Bzip2),
            (&[0x89, b'L', b'Z', b'O', 0, 0x0d], Compression::Lzop),
            (&[0x02, 0x21, 0x4c, 0x18, 0, 0], Compression::Lz4),
        ];
        for (magic, want) in cases {
            assert_eq!(Compression::detect(magic), Some(*want), "{magic:x?}");
        }
        assert_eq!(Compression::detect(b"070701"), None);
    }

    #[test]
    fn every_encoder_round_trips_and_stops_at_its_end() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for c in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Xz,
            Compression::Lz4,
        ] {
            let mut enc = Encoder::new(c, Vec::new(), Some(1)).unwrap();
            enc.write_all(&data).unwrap();
            let mut stream = enc.finish().unwrap();
            let end = stream.len() as u64;
            stream.extend_from_slice(b"\x00\x00\x00\x00070701");
            let mut input = Input::slice(&stream[..]);
            let mut out = Vec::new();
            decoder(c, &mut input, false)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == data, "{c}");
            assert_eq!(input.position(), end, "{c} consumed past its end");
        }
    }
}
