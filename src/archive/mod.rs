//! Archive formats in and out: initramfs (cpio segments, any compression) and tar.
//!
//! Reading is push-based and streaming: [`read_archive`] walks every segment and hands each
//! entry, with a reader over its data, to a [`Visitor`]. Nothing holds a whole file.

pub mod compression;
pub mod cpio;
mod frame_reader;
pub mod frame_writer;
mod input;
mod lz4_legacy;
mod lzop;
pub mod oci;
pub mod pack;
mod reader;
pub mod tar;

use std::fmt;
use std::io::{self, BufRead, Read};

pub use compression::Compression;
pub use reader::{SegmentSummary, read_archive};

/// What an entry is. Symlink targets are carried here, not as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    /// A tar hard link to an earlier entry's name (cpio links use [`Entry::link_key`]).
    HardLink(Vec<u8>),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl Kind {
    pub fn type_char(&self) -> char {
        match self {
            Kind::File | Kind::HardLink(_) => '-',
            Kind::Dir => 'd',
            Kind::Symlink(_) => 'l',
            Kind::CharDevice { .. } => 'c',
            Kind::BlockDevice { .. } => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }
}

/// The identity cpio uses to tie hard links together: entries with `nlink >= 2` and the same
/// key are one inode. The kernel keys on device, inode and file type; so do we.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkKey {
    pub dev: u64,
    pub ino: u64,
    pub file_type: u32,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The name exactly as stored: raw bytes, possibly absolute, possibly hostile.
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// Bytes of data that follow (regular files only).
    pub size: u64,
    pub link_key: Option<LinkKey>,
    /// Offset of the header in its (decompressed) stream, for messages.
    pub offset: u64,
    /// The extended attributes an image keeps ([`crate::xattr::kept`]), sorted by name.
    pub xattrs: crate::xattr::Xattrs,
}

/// Where a segment starts in the archive file and how it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// 1-based.
    pub index: usize,
    pub offset: u64,
    pub compression: Compression,
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Newc,
    Crc,
    Odc,
    Tar,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Newc => "newc",
            Format::Crc => "crc",
            Format::Odc => "odc",
            Format::Tar => "tar",
        })
    }
}

/// An error a visitor returns; the reader adds the entry and offset.
pub type VisitError = Box<dyn std::error::Error + Send + Sync>;

/// Receives the archive's segments and entries in order.
pub trait Visitor {
    fn segment_start(&mut self, _segment: &Segment) -> Result<(), VisitError> {
        Ok(())
    }
    /// `data` yields exactly `entry.size` bytes; what the visitor leaves unread is skipped.
    fn entry(&mut self, entry: &Entry, data: &mut EntryData<'_>) -> Result<(), VisitError>;
    /// The end of one cpio archive (`TRAILER!!!`): hard-link identities reset here.
    fn archive_end(&mut self) {}
    fn segment_end(&mut self, _summary: &SegmentSummary) -> Result<(), VisitError> {
        Ok(())
    }
}

/// The data of one entry: a buffered reader limited to the entry's size.
pub struct EntryData<'a> {
    inner: &'a mut dyn BufRead,
    remaining: u64,
    /// The sum of all bytes read, for the crc format's checksum.
    sum: Option<u32>,
    /// The host file the data comes from, when there is one, for in-kernel copies.
    source: Option<&'a std::fs::File>,
}

impl<'a> EntryData<'a> {
    pub(crate) fn new(inner: &'a mut dyn BufRead, size: u64, checksum: bool) -> Self {
        EntryData {
            inner,
            remaining: size,
            sum: checksum.then_some(0),
            source: None,
        }
    }

    /// Data read from `file` (at its start) through `inner`; writers may copy from the
    /// file directly instead, with [`EntryData::take_source`].
    pub(crate) fn from_file(
        inner: &'a mut dyn BufRead,
        file: &'a std::fs::File,
        size: u64,
    ) -> Self {
        EntryData {
            source: Some(file),
            ..EntryData::new(inner, size, false)
        }
    }

    /// The source file and the bytes to copy from it; the data then counts as consumed.
    pub fn take_source(&mut self) -> Option<(&'a std::fs::File, u64)> {
        let file = self.source.take()?;
        let len = std::mem::take(&mut self.remaining);
        Some((file, len))
    }

    pub(crate) fn checksum(&self) -> Option<u32> {
        self.sum
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads and discards the rest; returns false if the input ended first.
    pub(crate) fn skip_rest(&mut self) -> io::Result<bool> {
        while self.remaining > 0 {
            let n = self.fill_buf()?.len();
            if n == 0 {
                return Ok(false);
            }
            self.consume(n);
        }
        Ok(true)
    }
}

impl Read for EntryData<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

impl BufRead for EntryData<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let buf = self.inner.fill_buf()?;
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        Ok(&buf[..n])
    }

    fn consume(&mut self, n: usize) {
        let n = (n as u64).min(self.remaining) as usize;
        if let Some(sum) = &mut self.sum
            && let Ok(buf) = self.inner.fill_buf()
        {
            *sum = buf[..n.min(buf.len())]
                .iter()
                .fold(*sum, |s, &b| s.wrapping_add(b as u32));
        }
        self.inner.consume(n);
        self.remaining -= n as u64;
    }
}

/// Why reading an archive failed, with the place it failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("byte {offset}: truncated archive ({what})")]
    Truncated { offset: u64, what: &'static str },
    #[error("byte {offset}: {what}")]
    Malformed { offset: u64, what: String },
    #[error(
        "entry \"{name}\" at byte {offset}: checksum mismatch (header {expected:#x}, data {actual:#x})"
    )]
    Checksum {
        name: String,
        offset: u64,
        expected: u32,
        actual: u32,
    },
    #[error(
        "segment {index} ({compression} at byte {offset}), frame {frame} at byte {frame_offset}: \
         corrupt compressed data near byte {at}"
    )]
    Decompress {
        index: usize,
        compression: Compression,
        offset: u64,
        /// 1-based: the frame (zstd), member (gzip) or stream (xz) of the segment.
        frame: usize,
        frame_offset: u64,
        at: u64,
        source: io::Error,
    },
    #[error("segment {index} ({compression} at byte {offset})")]
    InSegment {
        index: usize,
        compression: Compression,
        offset: u64,
        source: Box<ReadError>,
    },
    #[error("entry \"{name}\" at byte {offset}")]
    Entry {
        name: String,
        offset: u64,
        source: VisitError,
    },
    #[error(transparent)]
    Visit(VisitError),
    #[error("tar: {0}")]
    Tar(io::Error),
    #[error("interrupted")]
    Interrupted,
}

/// `Read::read` for a type that is a `BufRead`: copy from what `fill_buf` holds.
pub(crate) fn read_buffered(r: &mut impl BufRead, out: &mut [u8]) -> io::Result<usize> {
    let buf = r.fill_buf()?;
    let n = buf.len().min(out.len());
    out[..n].copy_from_slice(&buf[..n]);
    r.consume(n);
    Ok(n)
}

/// Skips zero bytes (the padding between initramfs segments and archives); false at the
/// end of the input.
pub(crate) fn skip_zeros(r: &mut dyn BufRead) -> io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let (n, len) = (buf.iter().position(|&b| b != 0), buf.len());
        r.consume(n.unwrap_or(len));
        if n.is_some() {
            return Ok(true);
        }
    }
}

/// Hands one entry to the visitor, then skips what it left of the data; the entry and
/// offset go into any error.
pub(crate) fn deliver(
    visitor: &mut dyn Visitor,
    entry: &Entry,
    data: &mut EntryData<'_>,
) -> Result<(), ReadError> {
    visitor
        .entry(entry, data)
        .map_err(|source| ReadError::Entry {
            name: display_name(&entry.name),
            offset: entry.offset,
            source,
        })?;
    if !data.skip_rest()? {
        return Err(ReadError::Truncated {
            offset: entry.offset,
            what: "file data",
        });
    }
    Ok(())
}

/// A name for messages: printable, escaped where it is not.
pub fn display_name(name: &[u8]) -> String {
    name.escape_ascii().to_string()
}
