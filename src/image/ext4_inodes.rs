//! One pass of our own over a finished ext4 image's inodes, after `mke2fs -d`: what the
//! staging tree could not hold goes into the image here.
//!
//! - **Times.** e2fsprogs < 1.47.1 copies each source inode's atime and ctime, which
//!   reading the source changes. With a source date epoch, every inode of the tree gets it
//!   as atime, ctime and crtime, and no mtime is later than it. (This replaces one
//!   `debugfs sif` per field per inode: 40 s for 50,000 files, against milliseconds.)
//! - **Owners, modes and devices of a rootless build.** An unprivileged build cannot chown,
//!   set set-id bits on foreign files or mknod; the extractor records what each entry
//!   should be ([`crate::tree::recorded`], by path) and this pass writes it into the inodes, turning
//!   device placeholders (empty regular files) into device nodes, with their directory
//!   entries' types. Inodes nothing was recorded for (folders made on the way) are root's,
//!   as they are when root builds.
//!
//! Every inode changed gets its metadata_csum checksum again, every directory block changed
//! its tail checksum; the image stays `e2fsck -fn` clean. Only what `mke2fs -d` writes is
//! read: extents (no block maps), no inline data. Anything else is an error, not a guess.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::tree::recorded::{Recorded, RecordedTree};

/// What to change: times, and for a rootless build the recorded metadata.
#[derive(Debug, Default)]
pub struct Fixes<'a> {
    pub time: Option<i64>,
    pub recorded: Option<&'a RecordedTree>,
}

#[derive(Debug, thiserror::Error)]
pub enum InodeError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {what}")]
    Format { path: String, what: String },
}

const SB_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const EXTENTS_FL: u32 = 0x0008_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
const ROOT_INO: u32 = 2;
const BG_INODE_UNINIT: u16 = 0x1;

// Inode field offsets.
const I_MODE: usize = 0x00;
const I_UID: usize = 0x02;
const I_SIZE: usize = 0x04;
const I_ATIME: usize = 0x08;
const I_CTIME: usize = 0x0C;
const I_MTIME: usize = 0x10;
const I_GID: usize = 0x18;
const I_LINKS: usize = 0x1A;
const I_FLAGS: usize = 0x20;
const I_BLOCK: usize = 0x28;
const I_GENERATION: usize = 0x64;
const I_UID_HIGH: usize = 0x78;
const I_GID_HIGH: usize = 0x7A;
const I_CSUM_LO: usize = 0x7C;
const I_EXTRA_ISIZE: usize = 0x80;
const I_CSUM_HI: usize = 0x82;
const I_CTIME_EXTRA: usize = 0x84;
const I_MTIME_EXTRA: usize = 0x88;
const I_ATIME_EXTRA: usize = 0x8C;
const I_CRTIME: usize = 0x90;
const I_CRTIME_EXTRA: usize = 0x94;

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// ext4's crc32c: the raw CRC register, no inversion on the way in or out.
fn crc32c_raw(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

struct Fs {
    file: File,
    path: String,
    block: u64,
    inode_size: usize,
    inodes_per_group: u32,
    first_ino: u32,
    /// Each group's inode table (block number) and whether it is unused.
    tables: Vec<(u64, bool)>,
    csum_seed: Option<u32>,
}

impl Fs {
    fn open(image: &Path) -> Result<Fs, InodeError> {
        let path = image.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(|source| InodeError::Io {
                path: path.clone(),
                source,
            })?;
        let mut fs = Fs {
            file,
            path,
            block: 0,
            inode_size: 0,
            inodes_per_group: 0,
            first_ino: 0,
            tables: Vec::new(),
            csum_seed: None,
        };
        let sb = fs.read(SB_OFFSET, 1024)?;
        if le16(&sb, 0x38) != EXT4_MAGIC {
            return Err(fs.format("not an ext4 image (no superblock magic)"));
        }
        let log = le32(&sb, 0x18);
        if log > 6 {
            return Err(fs.format(format!("block size 1024 << {log}")));
        }
        fs.block = 1024 << log;
        fs.inodes_per_group = le32(&sb, 0x28);
        fs.first_ino = le32(&sb, 0x54);
        fs.inode_size = le16(&sb, 0x58) as usize;
        let incompat = le32(&sb, 0x60);
        let ro_compat = le32(&sb, 0x64);
        if incompat & INCOMPAT_INLINE_DATA != 0 {
            return Err(fs.format("inline data is not supported"));
        }
        if fs.inode_size < 256 || fs.inodes_per_group == 0 {
            return Err(fs.format(format!(
                "inode size {} / {} per group",
                fs.inode_size, fs.inodes_per_group
            )));
        }
        if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            fs.csum_seed = Some(if incompat & INCOMPAT_CSUM_SEED != 0 {
                le32(&sb, 0x270)
            } else {
                crc32c_raw(!0, &sb[0x68..0x78])
            });
        }
        let blocks = u64::from(le32(&sb, 0x04))
            | if incompat & INCOMPAT_64BIT != 0 {
                u64::from(le32(&sb, 0x150)) << 32
            } else {
                0
            };
        let first_data = u64::from(le32(&sb, 0x14));
        let per_group = u64::from(le32(&sb, 0x20)).max(1);
        let groups = (blocks - first_data.min(blocks)).div_ceil(per_group);
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            le16(&sb, 0xFE) as usize
        } else {
            32
        };
        if !(32..=1024).contains(&desc_size) {
            return Err(fs.format(format!("group descriptor size {desc_size}")));
        }
        let gdt = fs.read((first_data + 1) * fs.block, groups as usize * desc_size)?;
        for g in 0..groups as usize {
            let d = &gdt[g * desc_size..(g + 1) * desc_size];
            let mut table = u64::from(le32(d, 0x08));
            if desc_size >= 64 {
                table |= u64::from(le32(d, 0x28)) << 32;
            }
            fs.tables
                .push((table, le16(d, 0x12) & BG_INODE_UNINIT != 0));
        }
        Ok(fs)
    }

    fn format(&self, what: impl Into<String>) -> InodeError {
        InodeError::Format {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn io(&self, source: io::Error) -> InodeError {
        InodeError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>, InodeError> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| self.io(e))?;
        Ok(buf)
    }

    fn write(&self, at: u64, buf: &[u8]) -> Result<(), InodeError> {
        self.file.write_all_at(buf, at).map_err(|e| self.io(e))
    }

    fn inode_at(&self, ino: u32) -> Result<u64, InodeError> {
        let (group, index) = (
            ((ino - 1) / self.inodes_per_group) as usize,
            u64::from((ino - 1) % self.inodes_per_group),
        );
        let (table, _) = self
            .tables
            .get(group)
            .ok_or_else(|| self.format(format!("inode {ino} beyond the last group")))?;
        Ok(table * self.block + index * self.inode_size as u64)
    }

    fn read_inode(&self, ino: u32) -> Result<Vec<u8>, InodeError> {
        self.read(self.inode_at(ino)?, self.inode_size)
    }

    fn write_inode(&self, ino: u32, inode: &mut [u8]) -> Result<(), InodeError> {
        self.seal_inode(ino, inode);
        self.write(self.inode_at(ino)?, inode)
    }

    /// Sets an inode's checksum, as the kernel computes it: over the inode number, its
    /// generation and the inode with both checksum fields as zero.
    fn seal_inode(&self, ino: u32, inode: &mut [u8]) {
        let Some(seed) = self.csum_seed else { return };
        let extra = le16(inode, I_EXTRA_ISIZE) as usize;
        let has_hi = 128 + extra >= I_CSUM_HI + 2;
        put16(inode, I_CSUM_LO, 0);
        if has_hi {
            put16(inode, I_CSUM_HI, 0);
        }
        let mut crc = crc32c_raw(seed, &ino.to_le_bytes());
        crc = crc32c_raw(crc, &inode[I_GENERATION..I_GENERATION + 4]);
        crc = crc32c_raw(crc, inode);
        put16(inode, I_CSUM_LO, crc as u16);
        if has_hi {
            put16(inode, I_CSUM_HI, (crc >> 16) as u16);
        }
    }

    /// The physical blocks of an extent-mapped inode, in logical order.
    fn data_blocks(&self, ino: u32, inode: &[u8]) -> Result<Vec<u64>, InodeError> {
        if le32(inode, I_FLAGS) & EXTENTS_FL == 0 {
            return Err(self.format(format!("inode {ino}: not extent-mapped")));
        }
        let mut out = Vec::new();
        self.walk_extents(ino, &inode[I_BLOCK..I_BLOCK + 60], 0, &mut out)?;
        Ok(out)
    }

    fn walk_extents(
        &self,
        ino: u32,
        node: &[u8],
        level: u32,
        out: &mut Vec<u64>,
    ) -> Result<(), InodeError> {
        let bad = |what: &str| self.format(format!("inode {ino}: extent tree: {what}"));
        if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC || level > 5 {
            return Err(bad("bad header"));
        }
        let (entries, depth) = (le16(node, 2) as usize, le16(node, 6));
        if 12 + entries * 12 > node.len() {
            return Err(bad("more entries than fit"));
        }
        for e in node[12..12 + entries * 12].chunks_exact(12) {
            if depth == 0 {
                let len = u64::from(le16(e, 4));
                let start = u64::from(le32(e, 8)) | u64::from(le16(e, 6)) << 32;
                // Over 32768: an unwritten extent, which reads as zeros.
                let len = if len > 32768 { 0 } else { len };
                if out.len() as u64 + len > 1 << 20 {
                    return Err(bad("a folder of over a million blocks"));
                }
                out.extend(start..start + len);
            } else {
                let leaf = u64::from(le32(e, 4)) | u64::from(le16(e, 8)) << 32;
                let child = self.read(leaf * self.block, self.block as usize)?;
                self.walk_extents(ino, &child, level + 1, out)?;
            }
        }
        Ok(())
    }
}

/// Applies `fixes` to the image. Returns how many inodes were changed.
pub fn fix(image: &Path, fixes: &Fixes<'_>) -> Result<u64, InodeError> {
    let mut fs = Fs::open(image)?;
    let mut changed = 0;
    if let Some(recorded) = fixes.recorded {
        let (n, xattrs) = apply_recorded(&fs, recorded)?;
        changed += n;
        if !xattrs.is_empty() {
            fs.file.sync_data().map_err(|e| fs.io(e))?;
            drop(fs);
            super::ext4_xattrs::set(image, &xattrs)?;
            changed += xattrs.len() as u64;
            fs = Fs::open(image)?;
        }
    }
    if let Some(t) = fixes.time {
        changed += set_times(&fs, t)?;
    }
    fs.file.sync_data().map_err(|e| fs.io(e))?;
    Ok(changed)
}

/// Every in-use inode of the tree (the root, and from the first non-reserved one on):
/// atime, ctime and crtime `t`, mtime at most `t`. One read and write per inode table.
fn set_times(fs: &Fs, t: i64) -> Result<u64, InodeError> {
    let t32 = t as u32;
    // The extra words hold nanoseconds and the epoch bits beyond 32-bit seconds.
    let epoch = ((t >> 32) & 3) as u32;
    let mut changed = 0;
    for (g, &(table, unused)) in fs.tables.iter().enumerate() {
        if unused {
            continue;
        }
        let at = table * fs.block;
        let mut buf = fs.read(at, fs.inode_size * fs.inodes_per_group as usize)?;
        let mut dirty = false;
        for (i, inode) in buf.chunks_exact_mut(fs.inode_size).enumerate() {
            let ino = g as u32 * fs.inodes_per_group + i as u32 + 1;
            if (ino < fs.first_ino && ino != ROOT_INO) || le16(inode, I_LINKS) == 0 {
                continue;
            }
            let before = inode.to_vec();
            let extra = le16(inode, I_EXTRA_ISIZE) as usize;
            let fits = |end: usize| 128 + extra >= end;
            for field in [I_ATIME, I_CTIME] {
                put32(inode, field, t32);
            }
            for field in [I_ATIME_EXTRA, I_CTIME_EXTRA, I_CRTIME_EXTRA] {
                if fits(field + 4) {
                    put32(inode, field, epoch);
                }
            }
            if fits(I_CRTIME + 4) {
                put32(inode, I_CRTIME, t32);
            }
            let mtime = i64::from(le32(inode, I_MTIME) as i32);
            let (mtime, mtime_extra) = if fits(I_MTIME_EXTRA + 4) {
                let x = le32(inode, I_MTIME_EXTRA);
                // Epoch bits extend the signed 32-bit seconds.
                (mtime + (i64::from(x & 3) << 32), x >> 2)
            } else {
                (mtime, 0)
            };
            if mtime > t || (mtime == t && mtime_extra != 0) {
                put32(inode, I_MTIME, t32);
                if fits(I_MTIME_EXTRA + 4) {
                    put32(inode, I_MTIME_EXTRA, epoch);
                }
            }
            if *inode != before[..] {
                fs.seal_inode(ino, inode);
                dirty = true;
                changed += 1;
            }
        }
        if dirty {
            fs.write(at, &buf)?;
        }
    }
    Ok(changed)
}

/// Where a directory entry lives, to change its file type.
struct DirentAt {
    dir_ino: u32,
    block: u64,
    offset: usize,
}

/// Walks the tree from the root, giving each inode its recorded metadata (or root's
/// ownership when nothing was recorded for it). An inode with several names (hard links)
/// takes the record of any name that has one: a tar link entry records nothing itself.
/// Gives how many inodes changed, and the recorded extended attributes by inode, which
/// e2fsprogs writes ([`super::ext4_xattrs`]): in the inode or an attribute block.
fn apply_recorded(
    fs: &Fs,
    recorded: &RecordedTree,
) -> Result<(u64, Vec<(u32, crate::xattr::Xattrs)>), InodeError> {
    // Per inode: a name, its record if any, its directory entry.
    type Named = (Vec<u8>, Option<Recorded>, Option<DirentAt>);
    let mut inodes: HashMap<u32, Named> = HashMap::new();
    let mut queue: Vec<(Vec<u8>, u32, Option<DirentAt>)> = vec![(Vec::new(), ROOT_INO, None)];
    while let Some((path, ino, dirent)) = queue.pop() {
        let want = recorded.get(&path).cloned();
        match inodes.get_mut(&ino) {
            Some(seen) => {
                if seen.1.is_none() && want.is_some() {
                    *seen = (path, want, dirent);
                }
                continue;
            }
            None => {
                inodes.insert(ino, (path.clone(), want, dirent));
            }
        }
        let inode = fs.read_inode(ino)?;
        if u32::from(le16(&inode, I_MODE)) & S_IFMT == S_IFDIR {
            for (name, child, at) in read_dir(fs, ino, &inode)? {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&name);
                queue.push((p, child, Some(at)));
            }
        }
    }
    let mut order: Vec<_> = inodes.into_iter().collect();
    order.sort_unstable_by_key(|(ino, _)| *ino);
    let mut changed = 0;
    let mut xattrs = Vec::new();
    for (ino, (path, want, dirent)) in order {
        let mut inode = fs.read_inode(ino)?;
        let mode = u32::from(le16(&inode, I_MODE));
        let (uid, gid) = want.as_ref().map_or((0, 0), |r| (r.uid, r.gid));
        let before = inode.clone();
        put16(&mut inode, I_UID, uid as u16);
        put16(&mut inode, I_UID_HIGH, (uid >> 16) as u16);
        put16(&mut inode, I_GID, gid as u16);
        put16(&mut inode, I_GID_HIGH, (gid >> 16) as u16);
        if let Some(r) = want {
            if !r.xattrs.is_empty() {
                xattrs.push((ino, r.xattrs.clone()));
            }
            let kind = r.mode & S_IFMT;
            if matches!(kind, S_IFCHR | S_IFBLK) && mode & S_IFMT == S_IFREG {
                make_device(fs, &path, &mut inode, &r, dirent.as_ref())?;
            } else if kind != mode & S_IFMT {
                return Err(fs.format(format!(
                    "/{}: recorded as mode {:o}, the image has {:o}",
                    path.escape_ascii(),
                    r.mode,
                    mode
                )));
            }
            put16(&mut inode, I_MODE, r.mode as u16);
        }
        if inode != before {
            fs.write_inode(ino, &mut inode)?;
            changed += 1;
        }
    }
    Ok((changed, xattrs))
}

/// A folder's entries but `.` and `..`: (name, inode, where the entry is).
fn read_dir(fs: &Fs, ino: u32, inode: &[u8]) -> Result<Vec<(Vec<u8>, u32, DirentAt)>, InodeError> {
    let mut out = Vec::new();
    let bs = fs.block as usize;
    for block in fs.data_blocks(ino, inode)? {
        let buf = fs.read(block * fs.block, bs)?;
        let mut off = 0;
        while off + 8 <= bs {
            let child = le32(&buf, off);
            let rec_len = le16(&buf, off + 4) as usize;
            let name_len = buf[off + 6] as usize;
            if rec_len < 8 || off + rec_len > bs || 8 + name_len > rec_len {
                return Err(fs.format(format!(
                    "folder inode {ino}: bad entry at byte {off} of block {block}"
                )));
            }
            let name = &buf[off + 8..off + 8 + name_len];
            if child != 0 && name != b"." && name != b".." {
                out.push((
                    name.to_vec(),
                    child,
                    DirentAt {
                        dir_ino: ino,
                        block,
                        offset: off,
                    },
                ));
            }
            off += rec_len;
        }
    }
    Ok(out)
}

/// Turns an empty regular file (a device's placeholder in a rootless staging tree) into
/// the device node, as mke2fs writes one: no extent tree, the number in i_block, and the
/// directory entry's type.
fn make_device(
    fs: &Fs,
    path: &[u8],
    inode: &mut [u8],
    r: &Recorded,
    dirent: Option<&DirentAt>,
) -> Result<(), InodeError> {
    if le32(inode, I_SIZE) != 0 || le16(inode, I_LINKS) != 1 {
        return Err(fs.format(format!(
            "/{}: a device's placeholder must be an empty file with one name",
            path.escape_ascii()
        )));
    }
    let Some(at) = dirent else {
        return Err(fs.format("the root cannot be a device"));
    };
    put32(inode, I_FLAGS, le32(inode, I_FLAGS) & !EXTENTS_FL);
    inode[I_BLOCK..I_BLOCK + 60].fill(0);
    let (major, minor) = r.rdev;
    if major < 256 && minor < 256 {
        put32(inode, I_BLOCK, major * 256 + minor);
    } else {
        let new = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        put32(inode, I_BLOCK + 4, new);
    }
    // The entry's type: 3 character device, 4 block device.
    let ft = if r.mode & S_IFMT == S_IFCHR { 3 } else { 4 };
    let mut block = fs.read(at.block * fs.block, fs.block as usize)?;
    block[at.offset + 7] = ft;
    seal_dir_block(fs, at.dir_ino, &mut block)?;
    fs.write(at.block * fs.block, &block)
}

/// Recomputes a directory leaf block's tail checksum (metadata_csum).
fn seal_dir_block(fs: &Fs, dir_ino: u32, block: &mut [u8]) -> Result<(), InodeError> {
    let Some(seed) = fs.csum_seed else {
        return Ok(());
    };
    let tail = block.len() - 12;
    if le32(block, tail) != 0 || le16(block, tail + 4) != 12 || block[tail + 7] != 0xDE {
        return Err(fs.format(format!("folder inode {dir_ino}: no checksum tail")));
    }
    let dir = fs.read_inode(dir_ino)?;
    let mut crc = crc32c_raw(seed, &dir_ino.to_le_bytes());
    crc = crc32c_raw(crc, &dir[I_GENERATION..I_GENERATION + 4]);
    crc = crc32c_raw(crc, &block[..tail]);
    put32(block, tail + 8, crc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc32c_matches_the_kernel_convention() {
        // crc32c_le(~0, "123456789") without the final inversion.
        assert_eq!(crc32c_raw(!0, b"123456789"), !0xE306_9283);
        // Chaining equals one pass.
        let one = crc32c_raw(7, b"hello world");
        let two = crc32c_raw(crc32c_raw(7, b"hello "), b"world");
        assert_eq!(one, two);
    }
}
