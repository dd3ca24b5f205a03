//! Reading a segment of many zstd frames on every core: each frame is decoded by a worker
//! of its own, and the blocks are read in archive order by the thread that parses them.
//!
//! The frames are found before any is decoded, from their headers and block headers only
//! (a few bytes per 128 KiB block, read with `pread` rather than through the mapping, so
//! finding them maps no pages). A frame whose end cannot be found is taken to run to the
//! end of the input; its worker then reports what is wrong with it, in order.
//!
//! Memory stays bounded: a worker holds one frame at a time and hands it over in 1 MiB
//! blocks through a channel of [`BLOCKS_PER_FRAME`], so a fast decoder waits for a slow
//! disk instead of running ahead; the compressed pages behind the reader are released as
//! the blocks are read.

use std::io::{self, BufRead};
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};

use zstd::zstd_safe;

use super::input::Input;
use super::reader::read_stream;
use super::{ReadError, Segment, Visitor, read_buffered};
use crate::mapped::Mapping;

const BLOCK: usize = 1 << 20;
/// Decoded blocks a worker may hold ready per frame (the frames pack writes decode to
/// about 4 MiB, so a worker can finish one ahead of the reader).
const BLOCKS_PER_FRAME: usize = 5;
const MAX_WORKERS: usize = 16;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The largest block a zstd frame may hold.
const MAX_BLOCK: u64 = 128 << 10;

/// Reads `buf.len()` bytes at `pos`: from the file behind the mapping, or from memory.
fn read_at(data: &[u8], map: Option<&Mapping>, pos: u64, buf: &mut [u8]) -> bool {
    match map {
        Some(map) => map.read_exact_at(buf, pos).is_ok(),
        None => {
            let Some(src) = usize::try_from(pos)
                .ok()
                .and_then(|p| data.get(p..p.checked_add(buf.len())?))
            else {
                return false;
            };
            buf.copy_from_slice(src);
            true
        }
    }
}

/// The compressed size of the zstd frame at `pos`, from its headers, if it is whole and
/// ends by `end`.
fn zstd_frame_size(data: &[u8], map: Option<&Mapping>, pos: u64, end: u64) -> Option<u64> {
    let mut head = [0u8; 5];
    if !read_at(data, map, pos, &mut head) || head[..4] != ZSTD_MAGIC {
        return None;
    }
    let descriptor = head[4];
    if descriptor & 0x08 != 0 {
        return None; // reserved bit
    }
    let single_segment = descriptor & 0x20 != 0;
    let window = u64::from(!single_segment);
    let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
    let content_size = match descriptor >> 6 {
        0 => u64::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let mut at = pos + 5 + window + dictionary + content_size;
    loop {
        let mut block = [0u8; 3];
        if !read_at(data, map, at, &mut block) {
            return None;
        }
        let header = u32::from_le_bytes([block[0], block[1], block[2], 0]);
        let size = u64::from(header >> 3);
        let stored = match (header >> 1) & 3 {
            0 | 2 if size <= MAX_BLOCK => size,
            1 => 1,
            _ => return None,
        };
        at = at.checked_add(3 + stored)?;
        if at > end {
            return None;
        }
        if header & 1 == 1 {
            break;
        }
    }
    if descriptor & 0x04 != 0 {
        at += 4;
    }
    (at <= end).then_some(at - pos)
}

/// The back-to-back zstd frames at the input's position, as absolute ranges; empty when
/// the input is not in memory. The last range runs to the end when its frame's end
/// cannot be found (damaged or cut short).
pub(super) fn zstd_frames(input: &Input<'_>) -> Vec<Range<u64>> {
    let Some((data, map)) = input.memory() else {
        return Vec::new();
    };
    let end = data.len() as u64;
    let mut frames = Vec::new();
    let mut pos = input.position();
    let mut magic = [0u8; 4];
    while pos < end && read_at(data, map, pos, &mut magic) && magic == ZSTD_MAGIC {
        match zstd_frame_size(data, map, pos, end) {
            Some(size) => {
                frames.push(pos..pos + size);
                pos += size;
            }
            None => {
                frames.push(pos..end);
                break;
            }
        }
    }
    frames
}

/// What a worker hands the reader for one frame.
enum Message {
    /// Decoded bytes, and how much of the frame's compressed bytes have been used so far.
    Block(Vec<u8>, u64),
    /// The frame decoded whole.
    End,
    /// The frame is corrupt or cut short: where (in the frame) and why.
    Failed(u64, io::Error),
}

/// Where a frame failed, for the error message.
struct FrameFailure {
    pub frame: usize,
    pub frame_offset: u64,
    pub at: u64,
    pub source: io::Error,
}

/// Spare decoded blocks, handed back by the reader so workers do not fault in fresh
/// memory for every block.
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    fn take(&self) -> Vec<u8> {
        let spare = self.0.lock().ok().and_then(|mut p| p.pop());
        let mut buf = spare.unwrap_or_default();
        buf.clear();
        buf.reserve_exact(BLOCK);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut p) = self.0.lock()
            && p.len() < MAX_WORKERS * (BLOCKS_PER_FRAME + 1)
        {
            p.push(buf);
        }
    }
}

/// Reads a segment of several zstd frames (`frames`, from [`zstd_frames`]) with every
/// core, handing its entries to `visitor` in order, as `read_stream` does for one.
pub(super) fn read_parallel(
    input: &mut Input<'_>,
    frames: Vec<Range<u64>>,
    segment: Segment,
    visitor: &mut dyn Visitor,
    interrupted: &dyn Fn() -> bool,
) -> Result<(Segment, u64, u64), ReadError> {
    let Some((data, _)) = input.memory() else {
        return Err(ReadError::Malformed {
            offset: segment.offset,
            what: "parallel decoding needs the archive in memory".into(),
        });
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cores.clamp(1, MAX_WORKERS).min(frames.len());
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..frames.len())
        .map(|_| mpsc::sync_channel::<Message>(BLOCKS_PER_FRAME))
        .unzip();
    // Workers take frames in order, so the frame the reader waits for always has one.
    let queue = Mutex::new(frames.clone().into_iter().zip(senders));
    let order = frames.into_iter().zip(receivers).enumerate();
    let stop = AtomicBool::new(false);
    let pool = Pool(Mutex::new(Vec::new()));
    let (parsed, failure) = std::thread::scope(|scope| {
        for i in 0..workers {
            let (queue, stop, pool) = (&queue, &stop, &pool);
            let spawned = std::thread::Builder::new()
                .name(format!("decode-{i}"))
                .spawn_scoped(scope, move || {
                    // One decoder per worker, reset for each frame: a fresh one would
                    // allocate (and fault in) its window again for every frame.
                    let mut dctx = zstd_safe::DCtx::try_create();
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.next());
                        let Some((range, tx)) = next else { return };
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let bytes = &data[range.start as usize..range.end as usize];
                        decode_frame(dctx.as_mut(), bytes, &tx, pool, stop);
                    }
                });
            if let Err(e) = spawned {
                stop.store(true, Ordering::Relaxed);
                return (Err(ReadError::Io(e)), None);
            }
        }
        let mut reader = FramesReader {
            input: &mut *input,
            frames: order,
            current: None,
            block: Vec::new(),
            pos: 0,
            used: 0,
            failure: None,
            pool: &pool,
        };
        reader.next_frame();
        let parsed = read_stream(&mut reader, segment, false, visitor, interrupted);
        let failure = reader.failure.take();
        stop.store(true, Ordering::Relaxed);
        // Dropping the receivers wakes any worker waiting to hand over a block.
        drop(reader);
        (parsed, failure)
    });
    // A corrupt frame explains whatever the parser saw after it.
    if let Some(f) = failure {
        return Err(ReadError::Decompress {
            index: segment.index,
            compression: segment.compression,
            offset: segment.offset,
            frame: f.frame,
            frame_offset: f.frame_offset,
            at: f.at,
            source: f.source,
        });
    }
    parsed
}

/// A worker's job: decodes one frame into blocks, stopping early if the reader has gone.
fn decode_frame(
    dctx: Option<&mut zstd_safe::DCtx<'static>>,
    bytes: &[u8],
    tx: &SyncSender<Message>,
    pool: &Pool,
    stop: &AtomicBool,
) {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let result = (|| -> Result<bool, (u64, io::Error)> {
        let dctx = dctx.ok_or_else(|| (0, io::Error::other("cannot allocate a zstd decoder")))?;
        // Whatever the last frame left (an error midway included) is forgotten.
        dctx.reset(zstd_safe::ResetDirective::SessionAndParameters)
            .map_err(|code| (0, invalid(zstd_safe::get_error_name(code))))?;
        // The kernel takes windows up to 2^27 (`zstd --long=27`); larger ones are refused.
        dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(27))
            .map_err(|code| (0, invalid(zstd_safe::get_error_name(code))))?;
        let mut input = zstd_safe::InBuffer::around(bytes);
        loop {
            let mut buf = pool.take();
            let mut done = false;
            while buf.len() < buf.capacity() {
                let start = buf.len();
                let mut out = zstd_safe::OutBuffer::around_pos(&mut buf, start);
                let hint = dctx
                    .decompress_stream(&mut out, &mut input)
                    .map_err(|code| {
                        (input.pos() as u64, invalid(zstd_safe::get_error_name(code)))
                    })?;
                let full = out.pos() == out.capacity();
                if hint == 0 {
                    done = true;
                    break;
                }
                if input.pos() == bytes.len() && !full {
                    return Err((
                        input.pos() as u64,
                        invalid("truncated: the frame ends before its last block"),
                    ));
                }
            }
            if tx.send(Message::Block(buf, input.pos() as u64)).is_err() {
                return Ok(false);
            }
            if done {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
        }
        if input.pos() != bytes.len() {
            return Err((
                input.pos() as u64,
                invalid("the frame ends before its stored end"),
            ));
        }
        Ok(true)
    })();
    let last = match result {
        Ok(true) => Message::End,
        Ok(false) => return,
        Err((at, e)) => Message::Failed(at, e),
    };
    let _ = tx.send(last);
}

type FrameQueue = std::iter::Enumerate<
    std::iter::Zip<std::vec::IntoIter<Range<u64>>, std::vec::IntoIter<Receiver<Message>>>,
>;

/// The decoded segment, frame after frame, as one buffered reader.
struct FramesReader<'a, 'b, 'p> {
    input: &'a mut Input<'b>,
    frames: FrameQueue,
    /// The frame being read: its number (0-based), range and blocks.
    current: Option<(usize, Range<u64>, Receiver<Message>)>,
    block: Vec<u8>,
    pos: usize,
    /// Compressed bytes of the current frame already consumed from the input.
    used: u64,
    failure: Option<FrameFailure>,
    pool: &'p Pool,
}

impl FramesReader<'_, '_, '_> {
    fn next_frame(&mut self) {
        self.current = self.frames.next().map(|(i, (range, rx))| (i, range, rx));
        self.used = 0;
    }

    fn fail(&mut self, frame: usize, frame_offset: u64, at: u64, source: io::Error) -> io::Error {
        self.failure = Some(FrameFailure {
            frame: frame + 1,
            frame_offset,
            at: frame_offset + at,
            source,
        });
        io::Error::new(io::ErrorKind::InvalidData, "corrupt zstd frame")
    }
}

impl io::Read for FramesReader<'_, '_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

impl BufRead for FramesReader<'_, '_, '_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.block.len() {
            let Some((frame, range, rx)) = &self.current else {
                return Ok(&[]);
            };
            let (frame, start, len) = (*frame, range.start, range.end - range.start);
            let message = rx.recv();
            match message {
                Ok(Message::Block(block, used)) => {
                    // Release the compressed pages behind us, and move the progress bar.
                    self.input.consume((used - self.used) as usize);
                    self.used = used;
                    let spent = std::mem::replace(&mut self.block, block);
                    if spent.capacity() > 0 {
                        self.pool.give(spent);
                    }
                    self.pos = 0;
                }
                Ok(Message::End) => {
                    self.input.consume((len - self.used) as usize);
                    self.next_frame();
                }
                Ok(Message::Failed(at, e)) => return Err(self.fail(frame, start, at, e)),
                Err(_) => {
                    let e = io::Error::other("its decoder stopped");
                    return Err(self.fail(frame, start, self.used, e));
                }
            }
        }
        Ok(&self.block[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.block.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8], level: i32, checksum: bool) -> Vec<u8> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).unwrap();
        enc.include_checksum(checksum).unwrap();
        io::Write::write_all(&mut enc, data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn frames_are_found_from_their_headers() {
        let text: Vec<u8> = (0..400_000u32).map(|i| (i % 97) as u8).collect();
        let random: Vec<u8> = (0..300_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let a = frame(&text, 3, true);
        let b = frame(&random, 1, false); // raw blocks
        let c = zstd::bulk::compress(&text, 19).unwrap(); // single segment, content size
        let all = [
            a.clone(),
            b.clone(),
            c.clone(),
            b"\x00\x00\x00\x00070701".to_vec(),
        ]
        .concat();
        let input = Input::slice(&all);
        let frames = zstd_frames(&input);
        let (la, lb, lc) = (a.len() as u64, b.len() as u64, c.len() as u64);
        assert_eq!(frames, vec![0..la, la..la + lb, la + lb..la + lb + lc]);
        // Cut short: the last frame runs to the end, for its decoder to report.
        let cut = &all[..(la + lb / 2) as usize];
        let frames = zstd_frames(&Input::slice(cut));
        assert_eq!(frames, vec![0..la, la..cut.len() as u64]);
    }
}
