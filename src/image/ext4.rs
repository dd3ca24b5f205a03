//! ext4 images from a staging tree, by `mke2fs -d` (populate) or by loop device, mount and
//! copy (mount). Both use the same explicit mkfs options: 256-byte inodes even on small
//! images (mke2fs's "small" profile would give 128-byte inodes without sub-second or
//! post-2038 times), 4 KiB blocks but for trees of many small files (1 KiB, see
//! [`Usage::small_files`]), no reserved blocks, a journal sized to the content. The inode
//! and directory tables are not zeroed (lazy init): the image file starts sparse, so they
//! read as zeros anyway, and writing them cost a third of a small-files build.
//!
//! Reproducibility (populate): the UUID and hash seed come from the caller (derived from
//! the recipe digest), `E2FSPROGS_FAKE_TIME` and `SOURCE_DATE_EPOCH` fix mke2fs's own
//! clock; e2fsprogs < 1.47.1 still copies each source inode's atime and ctime (which
//! reading the source changes), so [`super::ext4_inodes`] then sets them on every inode.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use rustix::mount::MountFlags;

use super::loopdev::Loop;
use super::mount::Mount;

const BLOCK: u64 = 4096;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
const INODE_SIZE: u64 = 256;
const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run {tool} (apt-get install e2fsprogs)")]
    Spawn { tool: String, source: io::Error },
    #[error("{what}")]
    Io { what: String, source: io::Error },
    #[error(
        "{dir}: No space left on device: {free} bytes free, the image's content and journal \
         alone take {needed}; free some space or build elsewhere (--out DIR)"
    )]
    NoSpace { dir: String, free: u64, needed: u64 },
    #[error("the content needs {needed} bytes but output.size is {size}")]
    TooSmall { needed: u64, size: u64 },
    #[error("filling the mounted image")]
    Copy { source: BoxError },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Ext4Error {
    let what = what.into();
    move |source| Ext4Error::Io { what, source }
}

/// What the staging tree needs, for sizing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// In 4 KiB blocks.
    pub blocks: u64,
    pub inodes: u64,
    pub files: u64,
    /// Regular files and their bytes.
    pub regular: u64,
    pub bytes: u64,
}

/// From this many files on, a tree whose regular files average under 4 KiB counts as a
/// tree of small files (a small tree builds in no time either way).
const SMALL_FILES_FROM: u64 = 1000;

impl Usage {
    pub fn add_file(&mut self, size: u64) {
        self.files += 1;
        self.inodes += 1;
        self.blocks += size.div_ceil(BLOCK);
        self.regular += 1;
        self.bytes += size;
    }

    /// Many files of under 4 KiB on average (a distribution's /etc and /usr/share, a
    /// source tree): 1 KiB blocks make a third of the writes, and `mke2fs -d` fills the
    /// image faster than the kernel's per-file create and journal (measured: 50,000 files
    /// of 0-300 bytes, 1.1 s against 2.8 s; a 130 MB initrd tree of 93 KB files is the
    /// other way round, 0.4 s with 4 KiB blocks against 0.8 s with 1 KiB).
    pub fn small_files(&self) -> bool {
        self.regular >= SMALL_FILES_FROM && self.bytes / self.regular < BLOCK
    }

    /// The block size for an image of this tree.
    pub fn block_size(&self) -> u64 {
        if self.small_files() { 1024 } else { BLOCK }
    }

    /// A folder: one block (large folders are counted by their size in [`measure`]).
    pub fn add_dir(&mut self) {
        self.files += 1;
        self.inodes += 1;
        self.blocks += 1;
    }

    /// A symlink, device or fifo: an inode, and a block for a symlink too long to live in it.
    pub fn add_other(&mut self, long_symlink: bool) {
        self.files += 1;
        self.inodes += 1;
        self.blocks += u64::from(long_symlink);
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.blocks += o.blocks;
        self.inodes += o.inodes;
        self.files += o.files;
        self.regular += o.regular;
        self.bytes += o.bytes;
    }
}

/// Counts blocks and inodes the tree will take: each file rounded up to blocks, a block per
/// folder (more for large ones) and per symlink too long to live in its inode.
pub fn measure(tree: &Path) -> io::Result<Usage> {
    let mut u = Usage::default();
    let mut seen_links = std::collections::HashSet::new();
    for entry in walkdir::WalkDir::new(tree).follow_links(false) {
        let entry = entry.map_err(io::Error::from)?;
        let meta = entry.metadata().map_err(io::Error::from)?;
        if !meta.is_dir() && meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
            // Another name of an inode already counted: a directory entry, nothing more.
            u.files += 1;
            continue;
        }
        let ft = meta.file_type();
        if ft.is_file() {
            u.add_file(meta.len());
        } else if ft.is_dir() {
            u.add_dir();
            u.blocks += meta.len().div_ceil(BLOCK).saturating_sub(1);
        } else {
            u.add_other(ft.is_symlink() && meta.len() >= 60);
        }
    }
    Ok(u)
}

/// The first file or folder of `tree` that `mke2fs -d` could not read (as we are), if any.
pub fn first_unreadable(tree: &Path) -> io::Result<Option<std::path::PathBuf>> {
    use rustix::fs::{Access, access};
    for entry in walkdir::WalkDir::new(tree).follow_links(false) {
        let entry = entry.map_err(io::Error::from)?;
        let ft = entry.file_type();
        let need = if ft.is_dir() {
            Access::READ_OK | Access::EXEC_OK
        } else if ft.is_file() {
            Access::READ_OK
        } else {
            continue;
        };
        if access(entry.path(), need).is_err() {
            return Ok(Some(entry.into_path()));
        }
    }
    Ok(None)
}

/// The image size for `auto`: content plus 5%, inode tables for the files plus a quarter,
/// the journal, and 4 MiB for superblocks, group descriptors and bitmaps, in whole MiB.
pub fn auto_size(u: &Usage) -> (u64, u64) {
    let inodes = ((u.inodes + 16) * 5 / 4).max(256);
    (size_for(u, inodes), inodes)
}

/// The image size for `u` with `inodes` inodes, as [`auto_size`] counts it.
pub fn size_for(u: &Usage, inodes: u64) -> u64 {
    let content = u.blocks * BLOCK;
    let bytes = content + content / 20 + inodes * INODE_SIZE + journal_mib(content) * MIB + 4 * MIB;
    bytes.div_ceil(MIB) * MIB
}

/// The journal for `content` bytes of data: 1/64 of it, 4 to 64 MiB.
pub fn journal_mib(content: u64) -> u64 {
    (content / 64 / MIB).clamp(4, 64)
}

pub struct MkfsOptions {
    pub size: u64,
    /// What filling the (sparse) image surely takes on the output's filesystem: less free
    /// than this is refused before anything is written.
    pub fills: u64,
    /// 1024 or 4096, see [`Usage::block_size`].
    pub block: u64,
    pub inodes: u64,
    /// See [`journal_mib`].
    pub journal_mib: u64,
    pub label: String,
    pub uuid: String,
    pub hash_seed: String,
    pub source_date_epoch: Option<i64>,
}

/// Up front, rather than an ext4 remounted read-only by I/O errors on the loop device, or
/// mke2fs failing midway: room for what the image will hold beside it.
fn check_space(image: &Path, needed: u64) -> Result<(), Ext4Error> {
    let dir = match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(st) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < needed {
        return Err(Ext4Error::NoSpace {
            dir: dir.display().to_string(),
            free,
            needed,
        });
    }
    Ok(())
}

fn run_tool(cmd: &mut Command, tool: &str) -> Result<String, Ext4Error> {
    log::debug!("running {cmd:?}");
    let started = std::time::Instant::now();
    let out = cmd.output().map_err(|source| Ext4Error::Spawn {
        tool: tool.into(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Ext4Error::Tool {
            tool: tool.into(),
            status: out.status.to_string(),
            stderr: stderr.trim().replace('\n', "; "),
        });
    }
    log::debug!("{tool} took {:.2}s", started.elapsed().as_secs_f64());
    Ok(stderr)
}

/// An e2fsprogs version, as (major, minor, patch).
pub type Version = (u32, u32, u32);

/// The version mke2fs prints first on stderr ("mke2fs 1.47.0 (5-Feb-2023)").
fn parse_version(stderr: &str) -> Option<Version> {
    let v = stderr.lines().next()?.strip_prefix("mke2fs ")?;
    let mut parts = v
        .split_whitespace()
        .next()?
        .split('.')
        .map(|n| n.parse().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Runs mke2fs on `image` (a file of `opts.size` bytes is created first), filling it from
/// `tree` when given. Returns the e2fsprogs version it reported, if it could be read.
pub fn mkfs(
    image: &Path,
    opts: &MkfsOptions,
    tree: Option<&Path>,
) -> Result<Option<Version>, Ext4Error> {
    check_space(image, opts.fills)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(io_err(format!("{}", image.display())))?;
    // Sparse: mke2fs writes only metadata, the copy only data.
    file.set_len(opts.size)
        .map_err(io_err(format!("{}", image.display())))?;
    drop(file);
    let journal = opts.journal_mib;
    let mut cmd = Command::new(crate::fsutil::system_tool("mke2fs"));
    cmd.args([
        // Not -q: the version line it prints saves running mke2fs -V as well.
        "-F", "-t", "ext4", "-T", "default", "-I", "256", "-m", "0",
    ])
    .arg("-b")
    .arg(opts.block.to_string())
    .arg("-N")
    .arg(opts.inodes.to_string())
    .arg("-J")
    .arg(format!("size={journal}"))
    .arg("-U")
    .arg(&opts.uuid)
    .arg("-E")
    .arg(format!("hash_seed={},root_owner=0:0", opts.hash_seed));
    if !opts.label.is_empty() {
        cmd.arg("-L").arg(&opts.label);
    }
    if let Some(dir) = tree {
        cmd.arg("-d").arg(dir);
    }
    if let Some(t) = opts.source_date_epoch {
        cmd.env("E2FSPROGS_FAKE_TIME", t.to_string())
            .env("SOURCE_DATE_EPOCH", t.to_string());
    }
    cmd.arg(image).env("MKE2FS_CONFIG", "/etc/mke2fs.conf");
    Ok(parse_version(&run_tool(&mut cmd, "mke2fs")?))
}

/// The classic path: mkfs an empty image, attach it to a loop device, mount it, copy the
/// tree with `copy` (given the mount point), unmount, detach. Guards undo every step on
/// error.
pub fn populate_by_mount(
    image: &Path,
    mountpoint: &Path,
    copy: &mut dyn FnMut(&Path) -> Result<(), BoxError>,
) -> Result<(), Ext4Error> {
    let lo = Loop::attach(image, false).map_err(io_err(format!(
        "attaching {} to a loop device",
        image.display()
    )))?;
    // nosuid, nodev: the tree being built may hold untrusted setuid files and devices.
    let flags = MountFlags::NOATIME | MountFlags::NOSUID | MountFlags::NODEV;
    // nobarrier: every cache flush ext4 sends (at each journal commit, and a 4 MiB journal
    // commits often while filling) makes the loop device fsync the whole backing file.
    // Nothing relies on the image surviving a crash before it is complete: it is a
    // temporary file, fsynced once when finished, before it is renamed into place. This
    // takes about a quarter off the build. Kernels without the option get the default.
    let mnt = Mount::new(lo.path(), mountpoint, "ext4", flags, Some(c"nobarrier"))
        .or_else(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => Mount::new(lo.path(), mountpoint, "ext4", flags, None),
            _ => Err(e),
        })
        .map_err(io_err(format!("mounting {}", lo.path().display())))?;
    copy(mountpoint).map_err(|source| Ext4Error::Copy { source })?;
    mnt.unmount()
        .map_err(io_err(format!("unmounting {}", mountpoint.display())))?;
    drop(lo);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_mke2fs_first_line() {
        assert_eq!(
            parse_version("mke2fs 1.47.0 (5-Feb-2023)\nDiscarding device blocks: done\n"),
            Some((1, 47, 0))
        );
        assert_eq!(parse_version("mke2fs 1.47 (x)\n"), Some((1, 47, 0)));
        assert_eq!(parse_version("Warning: something\n"), None);
    }
}
