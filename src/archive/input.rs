//! The archive as a buffered reader that knows its absolute position and can peek ahead,
//! which segment detection and the lz4 legacy decoder need and `BufReader` cannot do.
//!
//! A regular file is memory-mapped: decoders read straight from the page cache with no
//! copy, and pages behind the read position are dropped from our mapping as we go, so the
//! resident size stays flat however large the archive. Anything else (a pipe) is read
//! through a buffer.

use std::io::{self, BufRead, Read};

use indicatif::ProgressBar;

use super::read_buffered;
use crate::mapped::Mapping;

const CAPACITY: usize = 1 << 20;
/// Mapped pages are released in steps of this much consumed input.
const RELEASE_STEP: usize = 8 << 20;
/// The most `fill_buf` hands out at once from memory, so no consumer touches (and keeps
/// resident) more than this between two releases.
const MEMORY_CHUNK: usize = 2 << 20;

enum Source<'a> {
    /// Bytes in memory: a mapping (whose pages are released behind us) or a slice.
    Memory {
        data: &'a [u8],
        map: Option<&'a Mapping>,
        released: usize,
    },
    Buffered {
        inner: Box<dyn Read + Send + 'a>,
        buf: Box<[u8]>,
        start: usize,
        end: usize,
    },
}

pub struct Input<'a> {
    source: Source<'a>,
    /// Absolute position of the next unconsumed byte.
    pos: u64,
    progress: Option<ProgressBar>,
}

impl<'a> Input<'a> {
    pub fn mapped(map: &'a Mapping, progress: Option<ProgressBar>) -> Self {
        Input {
            source: Source::Memory {
                data: map.bytes(),
                map: Some(map),
                released: 0,
            },
            pos: 0,
            progress,
        }
    }

    pub fn slice(data: &'a [u8]) -> Self {
        Input {
            source: Source::Memory {
                data,
                map: None,
                released: 0,
            },
            pos: 0,
            progress: None,
        }
    }

    pub fn reader(inner: impl Read + Send + 'a, progress: Option<ProgressBar>) -> Self {
        Input {
            source: Source::Buffered {
                inner: Box::new(inner),
                buf: vec![0; CAPACITY].into_boxed_slice(),
                start: 0,
                end: 0,
            },
            pos: 0,
            progress,
        }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The `n` bytes just consumed, when the input is in memory; `None` otherwise.
    pub fn just_consumed(&self, n: usize) -> Option<&[u8]> {
        let pos = self.pos as usize;
        match &self.source {
            Source::Memory { data, .. } => Some(&data[pos.checked_sub(n)?..pos]),
            Source::Buffered { .. } => None,
        }
    }

    /// All the input's bytes and the mapping they come from, when the input is in memory.
    pub fn memory(&self) -> Option<(&'a [u8], Option<&'a Mapping>)> {
        match &self.source {
            Source::Memory { data, map, .. } => Some((data, *map)),
            Source::Buffered { .. } => None,
        }
    }

    pub fn in_memory(&self) -> bool {
        matches!(self.source, Source::Memory { .. })
    }

    /// Up to `n` bytes ahead without consuming them; fewer only at end of input.
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let pos = self.pos as usize;
        match &mut self.source {
            Source::Memory { data, .. } => {
                let rest = &data[pos.min(data.len())..];
                Ok(&rest[..n.min(rest.len())])
            }
            Source::Buffered {
                inner,
                buf,
                start,
                end,
            } => {
                let n = n.min(buf.len());
                if *end - *start < n {
                    buf.copy_within(*start..*end, 0);
                    *end -= *start;
                    *start = 0;
                    while *end < n {
                        match inner.read(&mut buf[*end..]) {
                            Ok(0) => break,
                            Ok(got) => *end += got,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(&buf[*start..(*start + n).min(*end)])
            }
        }
    }
}

impl Read for Input<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let pos = self.pos as usize;
        match &mut self.source {
            Source::Memory { data, .. } => {
                let rest = &data[pos.min(data.len())..];
                Ok(&rest[..rest.len().min(MEMORY_CHUNK)])
            }
            Source::Buffered {
                inner,
                buf,
                start,
                end,
            } => {
                if *start == *end {
                    *start = 0;
                    *end = loop {
                        match inner.read(buf) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            other => break other?,
                        }
                    };
                }
                Ok(&buf[*start..*end])
            }
        }
    }

    fn consume(&mut self, n: usize) {
        let n = match &mut self.source {
            Source::Memory {
                data,
                map,
                released,
            } => {
                let n = n.min(data.len() - self.pos as usize);
                let pos = self.pos as usize + n;
                if pos - *released >= RELEASE_STEP {
                    if let Some(map) = map {
                        map.release(*released, pos);
                    }
                    *released = pos;
                    if let Some(pb) = &self.progress {
                        pb.set_position(pos as u64);
                    }
                }
                n
            }
            Source::Buffered { start, end, .. } => {
                let n = n.min(*end - *start);
                *start += n;
                // Once per buffer, not per header read.
                if let (Some(pb), true) = (&self.progress, *start == *end) {
                    pb.set_position(self.pos + n as u64);
                }
                n
            }
        };
        self.pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_spans_reads_and_position_tracks_consumption() {
        // A reader that returns one byte at a time exercises the refill loop.
        struct Trickle(Vec<u8>, usize);
        impl Read for Trickle {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.1 >= self.0.len() || out.is_empty() {
                    return Ok(0);
                }
                out[0] = self.0[self.1];
                self.1 += 1;
                Ok(1)
            }
        }
        let data = b"\0\0\0abcdef";
        for mut input in [
            Input::reader(Trickle(data.to_vec(), 0), None),
            Input::slice(data),
        ] {
            assert!(crate::archive::skip_zeros(&mut input).unwrap());
            assert_eq!(input.position(), 3);
            assert_eq!(input.peek(4).unwrap(), b"abcd");
            let mut two = [0; 2];
            input.read_exact(&mut two).unwrap();
            assert_eq!(&two, b"ab");
            assert_eq!(input.peek(10).unwrap(), b"cdef");
            assert_eq!(input.position(), 5);
        }
    }

    #[test]
    fn a_mapped_file_reads_whole() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; 20 << 20]).unwrap();
        let map = Mapping::new(&f).unwrap();
        let mut input = Input::mapped(&map, None);
        let mut total = 0;
        loop {
            let n = input.fill_buf().unwrap().len().min(1 << 20);
            if n == 0 {
                break;
            }
            total += n;
            input.consume(n);
        }
        assert_eq!(total, 20 << 20);
    }
}
