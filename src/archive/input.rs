//! A buffered reader that knows its absolute position and can peek a few bytes ahead,
//! which segment detection and the lz4 legacy decoder need and `BufReader` cannot do.

use std::io::{self, BufRead, Read};

use indicatif::ProgressBar;

const CAPACITY: usize = 1 << 20;

pub struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Absolute position of `buf[start]`.
    pos: u64,
    progress: Option<ProgressBar>,
}

impl<R: Read> Input<R> {
    pub fn new(inner: R, pos: u64, progress: Option<ProgressBar>) -> Self {
        Input {
            inner,
            buf: vec![0; CAPACITY].into_boxed_slice(),
            start: 0,
            end: 0,
            pos,
            progress,
        }
    }

    /// Absolute position of the next unconsumed byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Up to `n` bytes ahead without consuming them; fewer only at end of input.
    pub fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        let n = n.min(self.buf.len());
        if self.end - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < n {
                let got = self.read_more()?;
                if got == 0 {
                    break;
                }
            }
        }
        Ok(&self.buf[self.start..self.end.min(self.start + n)])
    }

    fn read_more(&mut self) -> io::Result<usize> {
        let got = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.end += got;
        if let Some(pb) = &self.progress {
            pb.set_position(self.pos + (self.end - self.start) as u64);
        }
        Ok(got)
    }

    /// Skips zero bytes (the padding between initramfs segments); returns false at EOF.
    pub fn skip_zeros(&mut self) -> io::Result<bool> {
        loop {
            let buf = self.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            match buf.iter().position(|&b| b != 0) {
                Some(i) => {
                    self.consume(i);
                    return Ok(true);
                }
                None => {
                    let n = buf.len();
                    self.consume(n);
                }
            }
        }
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.read_more()?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
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
        let mut input = Input::new(Trickle(b"\0\0\0abcdef".to_vec(), 0), 100, None);
        assert!(input.skip_zeros().unwrap());
        assert_eq!(input.position(), 103);
        assert_eq!(input.peek(4).unwrap(), b"abcd");
        let mut two = [0; 2];
        input.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"ab");
        assert_eq!(input.peek(10).unwrap(), b"cdef");
        assert_eq!(input.position(), 105);
    }
}
