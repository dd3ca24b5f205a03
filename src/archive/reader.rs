//! The initramfs segment loop, as the kernel's `unpack_to_rootfs` walks its buffer: skip
//! zero padding, then either an uncompressed cpio archive or a compressed stream holding
//! one or more archives, until the end of the file.
//!
//! A compressed segment is a run of back-to-back compressed streams of one kind (zstd
//! frames, gzip members, xz streams), decoded as one stream, as the compressor programs and
//! the kernel do: `rootpack pack` cuts its output into such frames at entry ends. One
//! stream is decoded on a second thread and handed over in 1 MiB blocks through a bounded
//! channel, so decompression and writing files overlap on two cores while memory stays
//! flat (a few blocks in flight, whatever the archive size). Several zstd frames in memory
//! are decoded on every core ([`super::frame_reader`]).

use std::fs::File;
use std::io::{self, BufRead};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use indicatif::ProgressBar;

use super::compression::{ContentChecksum, decoder, read_full};
use super::cpio::{self, Counted};
use super::frame_reader::{read_parallel, zstd_frames};
use super::input::Input;
use super::{
    Compression, Format, ReadError, Segment, Visitor, display_name, read_buffered, skip_zeros, tar,
};
use crate::mapped::Mapping;

const BLOCK: usize = 1 << 20;
const BLOCKS_IN_FLIGHT: usize = 4;

/// What one segment held.
#[derive(Debug, Clone)]
pub struct SegmentSummary {
    pub segment: Segment,
    pub entries: u64,
    /// Bytes of cpio/tar data (after decompression).
    pub unpacked: u64,
    /// Bytes the segment occupies in the file.
    pub stored: u64,
}

/// Reads every segment of an initramfs (or one tar archive, compressed or not) from `file`,
/// handing segments and entries to `visitor` in archive order.
pub fn read_archive(
    file: &File,
    visitor: &mut dyn Visitor,
    progress: Option<ProgressBar>,
    interrupted: &dyn Fn() -> bool,
) -> Result<Vec<SegmentSummary>, ReadError> {
    let map = Mapping::new(file);
    let mut input = match &map {
        Some(map) => Input::mapped(map, progress),
        None => Input::reader(file, progress),
    };
    let mut summaries: Vec<SegmentSummary> = Vec::new();
    while skip_zeros(&mut input)? {
        let offset = input.position();
        let head = input.peek(512)?;
        let compression = if cpio::detect(head).is_some() || tar::detect(head) {
            Compression::None
        } else if let Some(c) = Compression::detect(head) {
            c
        } else {
            return Err(ReadError::Malformed {
                offset,
                what: format!(
                    "neither a cpio archive nor a known compression (starts with {:?})",
                    display_name(&head[..head.len().min(6)])
                ),
            });
        };
        let index = summaries.len() + 1;
        let in_segment = |source: ReadError| match source {
            e @ ReadError::Decompress { .. } | e @ ReadError::Interrupted => e,
            source => ReadError::InSegment {
                index,
                compression,
                offset,
                source: Box::new(source),
            },
        };
        let start = Segment {
            index,
            offset,
            compression,
            format: Format::Newc,
        };
        let (segment, entries, unpacked) = if compression == Compression::None {
            read_stream(&mut input, start, true, visitor, interrupted).map_err(in_segment)?
        } else {
            read_compressed(&mut input, start, visitor, interrupted).map_err(in_segment)?
        };
        let summary = SegmentSummary {
            segment,
            entries,
            unpacked,
            stored: input.position() - offset,
        };
        visitor
            .segment_end(&summary)
            .map_err(|e| in_segment(ReadError::Visit(e)))?;
        summaries.push(summary);
        if segment.format == Format::Tar {
            // A tar archive is the whole file; what follows its end-of-archive blocks is
            // ignored, as tar does.
            break;
        }
    }
    if summaries.is_empty() {
        return Err(ReadError::Malformed {
            offset: 0,
            what: "empty archive".into(),
        });
    }
    Ok(summaries)
}

/// Reads the archives in one (decompressed) stream. With `single`, stops after the first
/// cpio trailer (an uncompressed segment: what follows is the next segment); otherwise reads
/// every archive until the stream ends, as the kernel does inside a compressed segment.
pub(super) fn read_stream(
    stream: &mut dyn BufRead,
    mut segment: Segment,
    single: bool,
    visitor: &mut dyn Visitor,
    interrupted: &dyn Fn() -> bool,
) -> Result<(Segment, u64, u64), ReadError> {
    let base = if single { segment.offset } else { 0 };
    let mut r = Counted {
        inner: stream,
        pos: base,
    };
    let head = r.fill_buf()?;
    if head.is_empty() {
        return Err(ReadError::Malformed {
            offset: 0,
            what: "compressed stream holds no data".into(),
        });
    }
    if tar::detect(head) {
        segment.format = Format::Tar;
        visitor.segment_start(&segment).map_err(ReadError::Visit)?;
        let entries = tar::read_entries(&mut r, visitor, interrupted)?;
        // Drain the zero blocks tar leaves after its end marker.
        io::copy(&mut r, &mut io::sink())?;
        return Ok((segment, entries, r.pos - base));
    }
    segment.format = cpio::detect(head).unwrap_or(Format::Newc);
    visitor.segment_start(&segment).map_err(ReadError::Visit)?;
    let mut entries = cpio::read_one(&mut r, visitor, interrupted)?;
    if !single {
        while skip_zeros(&mut r)? {
            entries += cpio::read_one(&mut r, visitor, interrupted)?;
        }
    }
    Ok((segment, entries, r.pos - base))
}

fn read_compressed(
    input: &mut Input<'_>,
    segment: Segment,
    visitor: &mut dyn Visitor,
    interrupted: &dyn Fn() -> bool,
) -> Result<(Segment, u64, u64), ReadError> {
    let mut checksum = None;
    if segment.compression == Compression::Zstd && input.in_memory() {
        let frames = zstd_frames(input);
        if frames.len() > 1 {
            return read_parallel(input, frames, segment, visitor, interrupted);
        }
        // The trailer of one mapped zstd frame can be read back once decoded, so its
        // checksum is verified on this thread.
        checksum = ContentChecksum::of_zstd_frame(input.peek(5)?);
    }
    let (tx, rx) = mpsc::sync_channel(BLOCKS_IN_FLIGHT);
    let (recycle_tx, recycle_rx) = mpsc::channel();
    let caller_checks = checksum.is_some();
    let stream_input = &mut *input;
    let (parsed, decoded, checksum) = std::thread::scope(|scope| {
        let decoding = std::thread::Builder::new()
            .name("decode".into())
            .spawn_scoped(scope, move || {
                decode_blocks(
                    stream_input,
                    segment.compression,
                    caller_checks,
                    tx,
                    recycle_rx,
                )
            })?;
        let mut stream = ChannelReader {
            rx,
            recycle: recycle_tx,
            current: Vec::new(),
            pos: 0,
            checksum,
        };
        let mut parsed = read_stream(&mut stream, segment, false, visitor, interrupted);
        if parsed.is_ok() && stream.checksum.is_some() {
            // The parser may stop before padding at the very end: the sum covers it all.
            if let Err(e) = io::copy(&mut stream, &mut io::sink()) {
                parsed = Err(e.into());
            }
        }
        let checksum = stream.checksum.take();
        // Closing our end stops the decoder if we stopped early.
        drop(stream);
        match decoding.join() {
            Ok(decoded) => Ok::<_, ReadError>((parsed, decoded, checksum)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    let corrupt = |f: StreamFailure| ReadError::Decompress {
        index: segment.index,
        compression: segment.compression,
        offset: segment.offset,
        frame: f.frame,
        frame_offset: f.frame_offset,
        at: f.at,
        source: f.source,
    };
    // A corrupt stream explains whatever the parser saw after it.
    decoded.map_err(corrupt)?;
    let parsed = parsed?;
    if let Some(sum) = checksum {
        // The frame ended just after its 4-byte trailer, still in memory.
        let trailer = input.just_consumed(4).unwrap_or_default();
        sum.verify(trailer).map_err(|source| {
            corrupt(StreamFailure {
                frame: 1,
                frame_offset: segment.offset,
                at: input.position(),
                source,
            })
        })?;
    }
    Ok(parsed)
}

/// Where decoding a segment failed: which of its streams, and the input position reached.
struct StreamFailure {
    /// 1-based.
    frame: usize,
    frame_offset: u64,
    at: u64,
    source: io::Error,
}

/// The decoder thread: fills blocks until the segment's streams end or the reader goes
/// away. A stream directly followed by another of the same kind goes on into it (a zstd
/// frame, gzip member or xz stream that `pack` cut at an entry end). With
/// `caller_checks`, a zstd decoder leaves the content checksum to the reader (one frame).
fn decode_blocks(
    input: &mut Input<'_>,
    compression: Compression,
    caller_checks: bool,
    tx: SyncSender<Vec<u8>>,
    recycle: Receiver<Vec<u8>>,
) -> Result<(), StreamFailure> {
    for frame in 1.. {
        let frame_offset = input.position();
        let decoded = (|| {
            let mut dec = decoder(compression, input, caller_checks)?;
            loop {
                let mut buf = recycle.try_recv().unwrap_or_default();
                buf.resize(BLOCK, 0);
                let n = read_full(&mut dec, &mut buf)?;
                buf.truncate(n);
                if n > 0 && tx.send(buf).is_err() {
                    return Ok(false);
                }
                if n < BLOCK {
                    return Ok(true);
                }
            }
        })();
        let fail = |input: &Input<'_>, source| StreamFailure {
            frame,
            frame_offset,
            at: input.position(),
            source,
        };
        match decoded {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(fail(input, e)),
        }
        let at = input.position();
        let next = input.peek(6).map_err(|source| StreamFailure {
            frame,
            frame_offset,
            at,
            source,
        })?;
        if caller_checks || Compression::detect(next) != Some(compression) {
            return Ok(());
        }
    }
    Ok(())
}

struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    recycle: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    /// Fed every block as it arrives.
    checksum: Option<ContentChecksum>,
}

impl io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.current.len() {
            let used = std::mem::take(&mut self.current);
            if used.capacity() > 0 {
                let _ = self.recycle.send(used);
            }
            self.pos = 0;
            if let Ok(next) = self.rx.recv() {
                if let Some(sum) = &mut self.checksum {
                    sum.update(&next);
                }
                self.current = next;
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.current.len());
    }
}
