//! Compression on every core: the archive's byte stream is cut into independent frames
//! (zstd frames, gzip members, xz streams, lz4 legacy streams), each compressed by a
//! worker of its own, and written in order.
//!
//! Cuts fall only where the caller says an entry ends ([`FramedWriter::entry_end`]), once a
//! frame holds at least the frame size: the kernel's initramfs unpacker is then between
//! two entries whenever one decompressor call ends, and carries on with the next frame.
//! Where the cuts fall depends on the frame size and the archive's bytes only, and each
//! frame is compressed alone with fixed parameters, so the output is the same whatever the
//! number of cores.
//!
//! Memory stays bounded: the producer hands a frame to its worker in 1 MiB chunks through
//! a channel that holds one frame (a larger one, made by a large entry, waits for its
//! worker), each worker hands its compressed output to the writing thread through a small
//! channel, and the number of frames between the producer and the writer is capped
//! (workers + 1), so a slow disk holds the producer back instead of piling up frames:
//! about (workers + 2) × frame size in all.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::compression::{Compression, Encoder};

/// The unit handed from the producer to a worker and from a worker to the writer.
const CHUNK: usize = 1 << 20;
/// Input chunks waiting for a worker, per frame, past the frame size: a whole frame fits,
/// so the producer hands it over and goes on to the next one while it is compressed.
const INPUT_SLACK: usize = 2;
/// Compressed chunks waiting for the writer, per frame.
const OUTPUT_CHUNKS: usize = 4;
/// The most workers used, whatever the machine has.
const MAX_WORKERS: usize = 16;

/// How a stream is compressed: codec, level and frame size.
#[derive(Debug, Clone, Copy)]
pub struct FrameOptions {
    pub compression: Compression,
    pub level: Option<u32>,
    /// Bytes of input per frame, at least; 0 keeps one frame.
    pub frame_size: u64,
    /// Compressing threads; 0 picks the number of cores.
    pub threads: usize,
}

impl FrameOptions {
    fn workers(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = if self.threads == 0 {
            cores
        } else {
            self.threads
        };
        if self.frame_size == 0 {
            1
        } else {
            wanted.clamp(1, MAX_WORKERS)
        }
    }
}

type Compressed = io::Result<Vec<u8>>;

/// Where frames are cut and how they are sealed, besides the codec's options.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// Cut only where an entry ends (archives the kernel unpacks), or else every
    /// `frame_size` bytes wherever that falls.
    at_entry_ends: bool,
    /// zstd frames carry their content checksum.
    zstd_checksum: bool,
}

/// One frame in flight: its input (from the producer) and output (to the writer).
struct Job {
    input: Receiver<Vec<u8>>,
    output: SyncSender<Compressed>,
}

/// The producer's end: a `Write` that also learns where entries end.
pub struct FramedWriter {
    frame_size: u64,
    at_entry_ends: bool,
    /// Bytes written into the current frame (0: no frame open).
    in_frame: u64,
    chunk: Vec<u8>,
    /// The current frame's input; `None` between frames.
    current: Option<SyncSender<Vec<u8>>>,
    jobs: SyncSender<Job>,
    order: SyncSender<Receiver<Compressed>>,
    frames: u64,
}

/// Where entries end: the only places a frame may be cut.
pub trait EntrySink: Write {
    /// Called after each complete entry (header, name, data and padding).
    fn entry_end(&mut self) -> io::Result<()>;
}

/// A writer with no frames (uncompressed output): entry ends are nothing to it.
pub struct Unframed<W: Write>(pub W);

impl<W: Write> Write for Unframed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> EntrySink for Unframed<W> {
    fn entry_end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn pipeline_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "compression pipeline stopped")
}

impl FramedWriter {
    fn send_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            self.open_frame()?;
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        match &self.current {
            Some(tx) => tx.send(chunk).map_err(|_| pipeline_closed()),
            None => Err(pipeline_closed()),
        }
    }

    fn open_frame(&mut self) -> io::Result<()> {
        let chunks = usize::try_from(self.frame_size.div_ceil(CHUNK as u64)).unwrap_or(0);
        let (in_tx, in_rx) = mpsc::sync_channel(chunks.min(1 << 10) + INPUT_SLACK);
        let (out_tx, out_rx) = mpsc::sync_channel(OUTPUT_CHUNKS);
        // The writer learns the frame's place first, then a worker gets it: frames are
        // taken in order, so the oldest unwritten frame always has a worker.
        self.order.send(out_rx).map_err(|_| pipeline_closed())?;
        self.jobs
            .send(Job {
                input: in_rx,
                output: out_tx,
            })
            .map_err(|_| pipeline_closed())?;
        self.current = Some(in_tx);
        self.frames += 1;
        Ok(())
    }

    fn close_frame(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        self.current = None;
        self.in_frame = 0;
        Ok(())
    }
}

impl Write for FramedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Chunks are cut at fixed sizes so that what a worker sees never depends on how
        // the producer's writes happened to be split.
        let mut n = buf.len().min(CHUNK - self.chunk.len());
        let fixed = !self.at_entry_ends && self.frame_size > 0;
        if fixed {
            n = n.min(usize::try_from(self.frame_size - self.in_frame).unwrap_or(usize::MAX));
        }
        self.chunk.extend_from_slice(&buf[..n]);
        self.in_frame += n as u64;
        if self.chunk.len() == CHUNK {
            self.send_chunk()?;
        }
        if fixed && self.in_frame == self.frame_size {
            self.close_frame()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl EntrySink for FramedWriter {
    fn entry_end(&mut self) -> io::Result<()> {
        if self.at_entry_ends && self.frame_size > 0 && self.in_frame >= self.frame_size {
            self.close_frame()?;
        }
        Ok(())
    }
}

/// What [`compress_frames`] wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct FramesWritten {
    pub frames: u64,
    pub bytes: u64,
}

/// Runs `produce` with a [`FramedWriter`] whose frames are compressed on `opts.workers()`
/// threads and written to `out` in order.
pub fn compress_frames<T, E>(
    out: &mut (dyn Write + Send),
    opts: &FrameOptions,
    produce: impl FnOnce(&mut FramedWriter) -> Result<T, E>,
    write_error: impl Fn(io::Error) -> E,
) -> Result<(T, FramesWritten), E> {
    let framing = Framing {
        at_entry_ends: true,
        zstd_checksum: true,
    };
    compress(out, opts, framing, produce, write_error)
}

/// As [`compress_frames`], for a stream no kernel unpacks (an OCI layer): a frame every
/// `opts.frame_size` bytes wherever entries end, zstd frames without a checksum and no
/// frame for an empty stream. That is the shape rootpack's layers have always had, so
/// their digests stay what they were.
pub fn compress_blocks<T, E>(
    out: &mut (dyn Write + Send),
    opts: &FrameOptions,
    produce: impl FnOnce(&mut FramedWriter) -> Result<T, E>,
    write_error: impl Fn(io::Error) -> E,
) -> Result<(T, FramesWritten), E> {
    let framing = Framing {
        at_entry_ends: false,
        zstd_checksum: false,
    };
    compress(out, opts, framing, produce, write_error)
}

fn compress<T, E>(
    out: &mut (dyn Write + Send),
    opts: &FrameOptions,
    framing: Framing,
    produce: impl FnOnce(&mut FramedWriter) -> Result<T, E>,
    write_error: impl Fn(io::Error) -> E,
) -> Result<(T, FramesWritten), E> {
    let workers = opts.workers();
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
    let (order_tx, order_rx) = mpsc::sync_channel::<Receiver<Compressed>>(workers + 1);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("write".into())
            .spawn_scoped(scope, || write_in_order(out, order_rx, &stop));
        let writer = match writer {
            Ok(w) => w,
            Err(e) => return Err(write_error(e)),
        };
        for i in 0..workers {
            let job_rx = Arc::clone(&job_rx);
            let stop = &stop;
            let spawned = std::thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn_scoped(scope, move || compress_jobs(&job_rx, opts, framing, stop));
            if let Err(e) = spawned {
                stop.store(true, Ordering::Relaxed);
                return Err(write_error(e));
            }
        }
        let mut w = FramedWriter {
            frame_size: opts.frame_size,
            at_entry_ends: framing.at_entry_ends,
            in_frame: 0,
            chunk: Vec::with_capacity(CHUNK),
            current: None,
            jobs: job_tx,
            order: order_tx,
            frames: 0,
        };
        let produced = produce(&mut w);
        let closed = match &produced {
            Ok(_) if w.frames == 0 && w.chunk.is_empty() && framing.at_entry_ends => {
                // An empty stream is still one (empty) frame, so the output is valid.
                w.open_frame().and_then(|()| w.close_frame())
            }
            Ok(_) => w.close_frame(),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                Ok(())
            }
        };
        let frames = w.frames;
        // Closing the channels ends the workers and, once drained, the writer.
        drop(w);
        let written = match writer.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // A failed write or compression is the first cause: the producer then only saw
        // its channels close. Otherwise the producer's own error is the one to report.
        match (produced, written, closed) {
            (_, Err(e), _) => Err(write_error(e)),
            (Err(e), Ok(_), _) => Err(e),
            (Ok(_), Ok(_), Err(e)) => Err(write_error(e)),
            (Ok(value), Ok(bytes), Ok(())) => Ok((value, FramesWritten { frames, bytes })),
        }
    })
}

/// A worker: compresses whole frames, one at a time, in the order they were opened.
fn compress_jobs(
    jobs: &Mutex<Receiver<Job>>,
    opts: &FrameOptions,
    framing: Framing,
    stop: &AtomicBool,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = compress_one(&job, opts, framing, stop)
            && !stop.load(Ordering::Relaxed)
        {
            // The writer reports it; if it has gone, there is no one left to tell. After a
            // stop, the error is only a consequence: dropping the job ends the frame.
            let _ = job.output.send(Err(e));
        }
    }
}

/// Sends compressed output on in pieces of about a chunk.
struct ChunkedOutput<'a> {
    buf: Vec<u8>,
    output: &'a SyncSender<Compressed>,
}

impl ChunkedOutput<'_> {
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK + CHUNK / 8));
        self.output.send(Ok(full)).map_err(|_| pipeline_closed())
    }
}

impl Write for ChunkedOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn compress_one(
    job: &Job,
    opts: &FrameOptions,
    framing: Framing,
    stop: &AtomicBool,
) -> io::Result<()> {
    let sink = ChunkedOutput {
        buf: Vec::with_capacity(CHUNK + CHUNK / 8),
        output: &job.output,
    };
    let mut enc = Encoder::new(opts.compression, sink, opts.level)?;
    if let Encoder::Zstd(z) = &mut enc
        && !framing.zstd_checksum
    {
        z.include_checksum(false)?;
    }
    for chunk in job.input.iter() {
        if stop.load(Ordering::Relaxed) {
            return Err(pipeline_closed());
        }
        enc.write_all(&chunk)?;
    }
    let mut sink = enc.finish()?;
    if !sink.buf.is_empty() {
        sink.send()?;
    }
    Ok(())
}

/// The writing thread: each frame's output in the order the frames were opened.
fn write_in_order(
    out: &mut (dyn Write + Send),
    order: Receiver<Receiver<Compressed>>,
    stop: &AtomicBool,
) -> io::Result<u64> {
    let mut bytes = 0u64;
    let result = (|| {
        for frame in order.iter() {
            for piece in frame.iter() {
                let piece = piece?;
                out.write_all(&piece)?;
                bytes += piece.len() as u64;
            }
        }
        out.flush()
    })();
    if result.is_err() {
        // Stop the workers early; the producer sees its channels close.
        stop.store(true, Ordering::Relaxed);
    }
    result.map(|()| bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::compression::decoder;
    use crate::archive::input::Input;
    use std::io::Read;

    /// Writes `entries` (each one "entry") through the framed writer.
    fn framed(entries: &[Vec<u8>], opts: FrameOptions) -> (Vec<u8>, FramesWritten) {
        let mut out = Vec::new();
        let ((), written) = compress_frames(
            &mut out,
            &opts,
            |w| -> io::Result<()> {
                for e in entries {
                    w.write_all(e)?;
                    w.entry_end()?;
                }
                Ok(())
            },
            |e| e,
        )
        .unwrap();
        (out, written)
    }

    fn entries() -> Vec<Vec<u8>> {
        (0..40u32)
            .map(|i| {
                let len = 50_000 + (i as usize * 7919) % 300_000;
                (0..len)
                    .map(|j| ((j as u32 * 31 + i) % 253) as u8)
                    .collect()
            })
            .collect()
    }

    fn opts(compression: Compression, frame_size: u64, threads: usize) -> FrameOptions {
        FrameOptions {
            compression,
            level: Some(1),
            frame_size,
            threads,
        }
    }

    /// Decodes back-to-back streams, returning the data and where each stream ended.
    fn decode_all(c: Compression, data: &[u8]) -> (Vec<u8>, Vec<u64>) {
        let mut input = Input::slice(data);
        let mut out = Vec::new();
        let mut ends = Vec::new();
        while input.position() < data.len() as u64 {
            decoder(c, &mut input, false)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            ends.push(input.position());
        }
        (out, ends)
    }

    #[test]
    fn blocks_are_cut_every_frame_size_bytes_and_the_same_on_any_number_of_threads() {
        let plain: Vec<u8> = entries().concat();
        let frame = 1u64 << 20;
        let blocks = |threads| {
            let mut out = Vec::new();
            let ((), written) = compress_blocks(
                &mut out,
                &opts(Compression::Zstd, frame, threads),
                |w| w.write_all(&plain),
                |e| e,
            )
            .unwrap();
            (out, written)
        };
        let (one, w1) = blocks(1);
        let (four, w4) = blocks(4);
        assert!(one == four, "output depends on the number of threads");
        assert_eq!(w1.frames, w4.frames);
        assert_eq!(w1.frames, (plain.len() as u64).div_ceil(frame));
        let mut input = Input::slice(&one);
        let mut decoded = Vec::new();
        for i in 0..w1.frames {
            let mut part = Vec::new();
            decoder(Compression::Zstd, &mut input, false)
                .unwrap()
                .read_to_end(&mut part)
                .unwrap();
            if i + 1 < w1.frames {
                assert_eq!(part.len() as u64, frame, "frame {i}");
            }
            decoded.extend(part);
        }
        assert!(decoded == plain, "round trip");
        // No content checksum: the frame header's descriptor has bit 2 clear.
        assert_eq!(one[4] & 0x04, 0);
        let mut empty = Vec::new();
        compress_blocks(
            &mut empty,
            &opts(Compression::Gzip, frame, 2),
            |_| Ok(()),
            |e| e,
        )
        .unwrap();
        assert!(empty.is_empty(), "an empty stream is no frame at all");
    }

    #[test]
    fn frames_are_cut_at_entry_ends_and_the_same_on_any_number_of_threads() {
        let entries = entries();
        let plain: Vec<u8> = entries.concat();
        // Where entries end in the plain stream: every frame must end at one of them.
        let mut ends = vec![];
        let mut pos = 0u64;
        for e in &entries {
            pos += e.len() as u64;
            ends.push(pos);
        }
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Xz,
            Compression::Lz4,
        ] {
            let (one, w1) = framed(&entries, opts(c, 1 << 20, 1));
            let (four, w4) = framed(&entries, opts(c, 1 << 20, 4));
            assert!(one == four, "{c}: output depends on the number of threads");
            assert_eq!(w1.frames, w4.frames);
            assert!(w1.frames >= 5, "{c}: only {} frames", w1.frames);
            assert_eq!(w1.bytes, one.len() as u64);
            if c == Compression::Lz4 {
                // Concatenated legacy streams decode as one.
                let (decoded, _) = decode_all(c, &one);
                assert!(decoded == plain, "{c}");
                continue;
            }
            let (decoded, frame_ends) = decode_all(c, &one);
            assert!(decoded == plain, "{c}: round trip");
            assert_eq!(frame_ends.len() as u64, w1.frames, "{c}");
            // Each frame's decoded length ends at an entry end, at least 1 MiB in.
            let mut input = Input::slice(&one);
            let mut at = 0u64;
            let mut last = 0u64;
            for _ in 0..w1.frames {
                let mut part = Vec::new();
                decoder(c, &mut input, false)
                    .unwrap()
                    .read_to_end(&mut part)
                    .unwrap();
                at += part.len() as u64;
                assert!(ends.contains(&at), "{c}: frame ends mid-entry at {at}");
                assert!(at == plain.len() as u64 || at - last >= 1 << 20, "{c}");
                last = at;
            }
        }
    }

    #[test]
    fn frame_size_zero_is_one_frame_and_an_empty_stream_is_valid() {
        let entries = entries();
        let (one, w) = framed(&entries, opts(Compression::Zstd, 0, 4));
        assert_eq!(w.frames, 1);
        let (decoded, ends) = decode_all(Compression::Zstd, &one);
        assert_eq!(ends.len(), 1);
        assert!(decoded == entries.concat());
        let (empty, w) = framed(&[], opts(Compression::Zstd, 1 << 20, 2));
        assert_eq!(w.frames, 1);
        assert!(zstd::decode_all(&empty[..]).unwrap().is_empty());
    }

    #[test]
    fn a_failing_output_is_reported_and_stops_the_producer() {
        struct Full(u64);
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk full"));
                }
                let n = (buf.len() as u64).min(self.0);
                self.0 -= n;
                Ok(n as usize)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let entries = entries();
        let mut out = Full(100_000);
        let mut produced = 0;
        let err = compress_frames(
            &mut out,
            &opts(Compression::Zstd, 1 << 20, 2),
            |w| -> io::Result<()> {
                for _ in 0..1000 {
                    for e in &entries {
                        w.write_all(e)?;
                        w.entry_end()?;
                        produced += 1;
                    }
                }
                Ok(())
            },
            |e| e,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        // Bounded: the producer was held back long before the end.
        assert!(produced < 2000, "{produced} entries produced");
    }
}
