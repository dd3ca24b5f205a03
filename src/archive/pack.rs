//! `pack`: a directory tree into a newc cpio (optionally after an uncompressed early
//! segment, as microcode initramfs do) or a tar archive, compressed or not.
//!
//! Reproducible: entries are sorted by name, inode numbers renumbered from 1, device
//! numbers zeroed, mtimes clamped to `SOURCE_DATE_EPOCH`, hard links kept.
//!
//! Compressed output is cut into independent frames at entry ends and compressed on every
//! core ([`super::frame_writer`]); the bytes do not depend on the number of cores.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use super::compression::Compression;
use super::cpio::{NewcHeader, NewcWriter};
use super::frame_writer::{EntrySink, FrameOptions, Unframed, compress_frames};

mod tar;
use tar::write_tar;

/// The default frame size: the input bytes compressed as one frame, at least (frames are
/// cut at the first entry end past it). Chosen by measurement on a Debian initrd
/// (docs/performance.md): the archive stays within a fraction of a percent of one frame at
/// zstd's default level, and 130 MB still make 16 frames to share between cores.
pub const DEFAULT_FRAME_SIZE: u64 = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackFormat {
    Cpio,
    Tar,
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub format: PackFormat,
    /// What entries should be that the tree could not hold (a rootless build's owners,
    /// set-id bits and device nodes): written instead of what the files show.
    pub recorded: Option<std::sync::Arc<RecordedTree>>,
    pub compression: Compression,
    pub level: Option<u32>,
    /// Upper bound for every mtime (`SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<i64>,
    /// A tree written first as an uncompressed cpio segment.
    pub early: Option<PathBuf>,
    /// Input bytes per compressed frame, at least ([`DEFAULT_FRAME_SIZE`]); 0 makes one
    /// frame.
    pub frame_size: u64,
    /// Compressing threads; 0 uses every core. The output is the same either way.
    pub threads: usize,
}

impl PackOptions {
    /// `format` compressed with `compression` at its default level, in default frames.
    pub fn new(format: PackFormat, compression: Compression) -> PackOptions {
        PackOptions {
            format,
            recorded: None,
            compression,
            level: None,
            clamp_mtime: None,
            early: None,
            frame_size: DEFAULT_FRAME_SIZE,
            threads: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}")]
    Walk { path: PathBuf, source: io::Error },
    #[error("{path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("writing the archive: {0}")]
    Write(io::Error),
    #[error("interrupted")]
    Interrupted,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PackSummary {
    pub entries: u64,
    pub data_bytes: u64,
    /// Sockets cannot be stored in tar and are left out.
    pub skipped_sockets: u64,
    /// Entries whose extended attributes a cpio archive could not carry.
    pub xattrs_left_out: u64,
    /// Compressed frames of the main segment (0 when it is not compressed).
    pub frames: u64,
    /// Bytes written, every segment included.
    pub written: u64,
}

/// What the archive could not hold, one line each, for a warning.
pub fn left_out(summary: &PackSummary) -> Vec<String> {
    let entries = |n: u64| match n {
        1 => "1 entry".to_string(),
        n => format!("{n} entries"),
    };
    let mut lines = Vec::new();
    if summary.skipped_sockets > 0 {
        lines.push(format!(
            "{} left out: tar cannot store sockets",
            match summary.skipped_sockets {
                1 => "1 socket".to_string(),
                n => format!("{n} sockets"),
            }
        ));
    }
    if summary.xattrs_left_out > 0 {
        lines.push(format!(
            "extended attributes of {} left out: cpio cannot carry them (file capabilities, \
             ACLs; a tar or ext4 image keeps them)",
            entries(summary.xattrs_left_out)
        ));
    }
    lines
}

/// What an entry of the tree should be in an image when the tree itself cannot hold it:
/// owner, full mode (type and permission bits), for a device its number, and the
/// extended attributes (which an unprivileged process cannot set in `security.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub rdev: (u32, u32),
    pub xattrs: crate::xattr::Xattrs,
}

/// Recorded metadata by path (relative to the root, the root itself as the empty path).
pub type RecordedTree = HashMap<Vec<u8>, Recorded>;

/// One tree entry, in archive order.
struct Item {
    /// Name in the archive: "." for the root, else relative without "./".
    name: Vec<u8>,
    path: PathBuf,
    meta: std::fs::Metadata,
    /// Owner, mode (with the type) and device number as written: recorded, or the file's.
    is: Recorded,
}

impl Item {
    fn kind(&self) -> u32 {
        self.is.mode & libc::S_IFMT
    }
}

fn walk(dir: &Path, recorded: Option<&RecordedTree>) -> Result<Vec<Item>, PackError> {
    let mut items = Vec::new();
    let mut found = Vec::new();
    for item in crate::walk::walk_named(dir) {
        let (name, entry) = item.map_err(|(path, source)| PackError::Walk { path, source })?;
        let meta = entry.metadata().map_err(|e| PackError::Walk {
            path: entry.path().to_path_buf(),
            source: e.into(),
        })?;
        let key: &[u8] = if name == b"." { b"" } else { &name };
        let is = match recorded.and_then(|r| r.get(key)) {
            Some(r) => r.clone(),
            None => Recorded {
                uid: meta.uid(),
                gid: meta.gid(),
                mode: meta.mode(),
                rdev: (libc::major(meta.rdev()), libc::minor(meta.rdev())),
                xattrs: crate::xattr::read_path(entry.path()).map_err(|source| {
                    PackError::Read {
                        path: entry.path().to_path_buf(),
                        source,
                    }
                })?,
            },
        };
        found.push(recorded.is_some_and(|r| r.contains_key(key)));
        items.push(Item {
            name,
            path: entry.into_path(),
            is,
            meta,
        });
    }
    if recorded.is_some() {
        apply_to_unrecorded(&mut items, &found);
    }
    Ok(items)
}

/// For a recorded tree, the entries nothing was recorded for: a hard link's other names
/// get what its inode's recorded name has; the rest (folders made on the way, the root)
/// are root's, as in the ext4 inode pass.
fn apply_to_unrecorded(items: &mut [Item], found: &[bool]) {
    let mut by_inode: HashMap<(u64, u64), Recorded> = HashMap::new();
    for (it, _) in items.iter().zip(found).filter(|(_, f)| **f) {
        if it.meta.nlink() > 1 {
            by_inode.insert((it.meta.dev(), it.meta.ino()), it.is.clone());
        }
    }
    for (it, _) in items.iter_mut().zip(found).filter(|(_, f)| !**f) {
        match by_inode.get(&(it.meta.dev(), it.meta.ino())) {
            Some(r) => it.is = r.clone(),
            None => (it.is.uid, it.is.gid) = (0, 0),
        }
    }
}

/// Hard-link groups: for every item that shares its inode with another, the new inode
/// number and the index of the group's last member (newc stores the data there).
struct Links {
    ino: Vec<u32>,
    nlink: Vec<u32>,
    last: Vec<bool>,
    first: Vec<Option<usize>>,
}

fn number_inodes(items: &[Item]) -> Links {
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        if !it.meta.is_dir() && it.meta.nlink() > 1 {
            groups
                .entry((it.meta.dev(), it.meta.ino()))
                .or_default()
                .push(i);
        }
    }
    let n = items.len();
    let mut links = Links {
        ino: vec![0; n],
        nlink: vec![1; n],
        last: vec![true; n],
        first: vec![None; n],
    };
    let mut next = 1u32;
    let mut assigned: HashMap<(u64, u64), u32> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        let key = (it.meta.dev(), it.meta.ino());
        match groups.get(&key) {
            Some(members) => {
                links.ino[i] = *assigned.entry(key).or_insert_with(|| {
                    next += 1;
                    next - 1
                });
                links.nlink[i] = members.len() as u32;
                links.last[i] = members.last() == Some(&i);
                links.first[i] = Some(members[0]).filter(|&f| f != i);
            }
            None => {
                links.ino[i] = next;
                next += 1;
                if it.meta.is_dir() {
                    links.nlink[i] = 2;
                }
            }
        }
    }
    links
}

/// A reader that fails unless the file yields exactly `size` bytes: a file that changed
/// while being packed must not produce an archive whose headers lie.
struct Exact<'a> {
    inner: File,
    remaining: u64,
    path: &'a Path,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let changed = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: file changed size while being packed",
                    self.path.display()
                ),
            )
        };
        if self.remaining == 0 {
            return match self.inner.read(&mut [0u8; 1])? {
                0 => Ok(0),
                _ => Err(changed()),
            };
        }
        let max = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(changed());
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn open_exact(it: &Item) -> Result<Exact<'_>, PackError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&it.path)
        .map_err(|source| PackError::Read {
            path: it.path.clone(),
            source,
        })?;
    Ok(Exact {
        inner: file,
        remaining: it.meta.len(),
        path: &it.path,
    })
}

fn clamp(mtime: i64, opts: &PackOptions) -> i64 {
    opts.clamp_mtime.map_or(mtime, |c| mtime.min(c)).max(0)
}

/// Packs `dir` into `out` as `opts` says. `progress`, when given, gets the bytes of file
/// data as its length and advances as they are packed.
pub fn pack(
    dir: &Path,
    out: &mut (dyn Write + Send),
    opts: &PackOptions,
    progress: Option<&ProgressBar>,
    interrupted: &dyn Fn() -> bool,
) -> Result<PackSummary, PackError> {
    let mut summary = PackSummary::default();
    if let Some(early) = &opts.early {
        if opts.format == PackFormat::Tar {
            return Err(PackError::Unsupported {
                path: early.clone(),
                what: "an early segment needs the cpio format",
            });
        }
        let items = walk(early, None)?;
        let mut counted = Counting {
            inner: &mut *out,
            bytes: 0,
        };
        write_buffered(&mut counted, |w| {
            write_cpio(&items, w, opts, &mut summary, None, interrupted)
        })?;
        summary.written += counted.bytes;
    }
    let items = walk(dir, opts.recorded.as_deref())?;
    if let Some(bar) = progress {
        bar.set_length(data_size(&items));
    }
    let mut entries = |w: &mut dyn EntrySink| match opts.format {
        PackFormat::Cpio => write_cpio(&items, w, opts, &mut summary, progress, interrupted),
        PackFormat::Tar => write_tar(&items, w, opts, &mut summary, progress, interrupted),
    };
    if opts.compression == Compression::None {
        let mut counted = Counting {
            inner: out,
            bytes: 0,
        };
        write_buffered(&mut counted, entries)?;
        summary.written += counted.bytes;
        return Ok(summary);
    }
    let frames = FrameOptions {
        compression: opts.compression,
        level: opts.level,
        frame_size: opts.frame_size,
        threads: opts.threads,
    };
    let ((), written) = compress_frames(out, &frames, |w| entries(w), PackError::Write)?;
    summary.frames = written.frames;
    summary.written += written.bytes;
    Ok(summary)
}

/// Uncompressed output through a 1 MiB buffer, flushed at the end.
fn write_buffered(
    out: &mut dyn Write,
    write: impl FnOnce(&mut dyn EntrySink) -> Result<(), PackError>,
) -> Result<(), PackError> {
    let mut buffered = Unframed(io::BufWriter::with_capacity(1 << 20, out));
    write(&mut buffered)?;
    buffered.0.flush().map_err(PackError::Write)
}

/// Counts what passes to the output.
struct Counting<'a> {
    inner: &'a mut (dyn Write + Send),
    bytes: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The bytes of file data in a walked tree, as the progress bar counts them.
fn data_size(items: &[Item]) -> u64 {
    items
        .iter()
        .filter(|it| it.kind() == libc::S_IFREG)
        .map(|it| it.meta.len())
        .sum()
}

/// The loop both formats share: for each item, stop on an interrupt, write it with
/// `write_one` (false: left out), mark where the entry ends (a frame may be cut there),
/// advance the progress bar by its data and count it.
fn write_entries<W>(
    items: &[Item],
    w: &mut W,
    summary: &mut PackSummary,
    progress: Option<&ProgressBar>,
    interrupted: &dyn Fn() -> bool,
    end_entry: impl Fn(&mut W) -> io::Result<()>,
    mut write_one: impl FnMut(&mut W, usize, &mut PackSummary) -> Result<bool, PackError>,
) -> Result<(), PackError> {
    for (i, it) in items.iter().enumerate() {
        if interrupted() {
            return Err(PackError::Interrupted);
        }
        if !write_one(w, i, summary)? {
            continue;
        }
        end_entry(w).map_err(PackError::Write)?;
        if let Some(bar) = progress.filter(|_| it.kind() == libc::S_IFREG) {
            bar.inc(it.meta.len());
        }
        summary.entries += 1;
    }
    Ok(())
}

fn write_cpio(
    items: &[Item],
    out: &mut dyn EntrySink,
    opts: &PackOptions,
    summary: &mut PackSummary,
    progress: Option<&ProgressBar>,
    interrupted: &dyn Fn() -> bool,
) -> Result<(), PackError> {
    let links = number_inodes(items);
    let mut w = NewcWriter::new(out);
    write_entries(
        items,
        &mut w,
        summary,
        progress,
        interrupted,
        |w| w.get_mut().entry_end(),
        |w, i, summary| cpio_entry(w, &items[i], i, &links, opts, summary).map(|()| true),
    )?;
    w.finish(512).map_err(PackError::Write)?;
    Ok(())
}

fn cpio_entry(
    w: &mut NewcWriter<&mut dyn EntrySink>,
    it: &Item,
    i: usize,
    links: &Links,
    opts: &PackOptions,
    summary: &mut PackSummary,
) -> Result<(), PackError> {
    let kind = it.kind();
    let too_large = |_| PackError::Unsupported {
        path: it.path.clone(),
        what: "larger than the 4 GiB newc allows",
    };
    let mut h = NewcHeader {
        ino: links.ino[i],
        mode: it.is.mode,
        uid: it.is.uid,
        gid: it.is.gid,
        nlink: links.nlink[i],
        mtime: clamp(it.meta.mtime(), opts).min(u32::MAX as i64) as u32,
        ..Default::default()
    };
    if kind == libc::S_IFBLK || kind == libc::S_IFCHR {
        (h.rdev_major, h.rdev_minor) = it.is.rdev;
    }
    if !it.is.xattrs.is_empty() {
        summary.xattrs_left_out += 1;
    }
    let written = if kind == libc::S_IFLNK {
        let target = std::fs::read_link(&it.path).map_err(|source| PackError::Read {
            path: it.path.clone(),
            source,
        })?;
        let target = target.as_os_str().as_bytes();
        h.filesize = target.len() as u32;
        w.append(&h, &it.name, &mut &target[..])
    } else if kind == libc::S_IFREG && links.last[i] {
        h.filesize = u32::try_from(it.meta.len()).map_err(too_large)?;
        summary.data_bytes += it.meta.len();
        w.append(&h, &it.name, &mut open_exact(it)?)
    } else {
        w.append(&h, &it.name, &mut io::empty())
    };
    written.map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => PackError::Read {
            path: it.path.clone(),
            source: e,
        },
        _ => PackError::Write(e),
    })
}
