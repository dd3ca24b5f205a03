//! Writes archive entries onto a directory, as the kernel builds its rootfs from an
//! initramfs: later entries replace earlier ones, hard links follow cpio's inode identity,
//! directory times and modes are applied last.
//!
//! # Security
//!
//! Every name goes through [`RelPath::parse`] (no `..`, no NUL; absolute names are taken
//! relative to the root) and [`Root::open_dir`] (parents resolved inside the root, symlinks
//! included: `a -> /etc` then `a/passwd` writes `<root>/etc/passwd`, never the host's).
//! Leaves are created with `O_EXCL | O_NOFOLLOW` or an `*at` call that does not follow,
//! after unlinking whatever was there, so a symlink planted by an earlier entry is replaced,
//! never written through (the 3cpio 0.14 bug). Hard links are made with `linkat` without
//! `AT_SYMLINK_FOLLOW` between two paths resolved the same way. Device nodes are made only
//! when running as root; otherwise they are counted and skipped.

mod finish;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::io::{AsFd, OwnedFd};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::recorded::{RecordedTree, record};
use crate::archive::{Entry, EntryData, Kind, LinkKey, Segment, VisitError, Visitor};
use crate::tree::copier::Copier;
use crate::tree::safe_path::{RelPath, Root};

#[derive(Debug, Default, Clone, Copy)]
pub struct ExtractReport {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes not created because we are not root.
    pub skipped_devices: u64,
    /// Entries whose owner could not be kept because we are not root.
    pub ownership_dropped: u64,
    /// Extended attributes not kept: `security.*` and `trusted.*` when we are not root,
    /// or any the target's file system refused.
    pub xattrs_dropped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("unsafe name")]
    Name(#[from] crate::tree::safe_path::BadName),
    #[error("cannot resolve parent folder \"{path}\" inside the root")]
    Parent { path: String, source: io::Error },
    #[error("cannot create: {0}")]
    Create(io::Error),
    #[error("cannot replace the existing non-empty directory")]
    NonEmptyDir,
    #[error("hard link target \"{target}\"")]
    LinkTarget { target: String, source: io::Error },
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("the root of the tree can only be a directory")]
    RootNotDir,
}

#[derive(Clone)]
struct DirMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: crate::xattr::Xattrs,
}

/// The first name of a hard-link set and, for a regular file, the inode made for it.
#[derive(Clone)]
struct Linked {
    path: RelPath,
    inode: Option<(u64, u64)>,
}

/// A visitor that writes entries below a root. `split` puts each segment in its own folder.
pub struct Extractor {
    base: Root,
    split: bool,
    root: Option<Root>,
    privileged: bool,
    links: HashMap<LinkKey, Linked>,
    /// Which link set each recorded first name belongs to, so a replaced name drops its
    /// set and the table stays as small as the tree.
    linked_paths: HashMap<RelPath, LinkKey>,
    /// The last entry for each folder wins, as in the kernel; applied at the end.
    dirs: HashMap<RelPath, DirMeta>,
    /// The last parent directory resolved, reused while entries stay in one folder.
    parent_cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Who creates files here (their owner when nobody changes it) and the umask, so a
    /// chown or chmod that would change nothing is skipped.
    creator: (u32, u32),
    umask: u32,
    /// Whether the cached parent folder is setgid.
    parent_setgid: bool,
    report: ExtractReport,
    /// Started at the first file with a host source.
    copier: Option<Copier>,
    /// Not root, for an image: what each entry should be, by path, for what the tree
    /// cannot hold (owners, set-id bits, device nodes, unreadable modes).
    recorded: Option<RecordedTree>,
    /// Container image layers: an entry of another type replaces a whole folder.
    replace_trees: bool,
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

impl Extractor {
    pub fn new(root: Root, split: bool) -> Extractor {
        Extractor {
            root: None,
            base: root,
            split,
            privileged: rustix::process::geteuid().is_root(),
            creator: (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            ),
            umask: {
                let old = rustix::process::umask(Mode::empty());
                rustix::process::umask(old);
                old.bits()
            },
            parent_setgid: false,
            links: HashMap::new(),
            linked_paths: HashMap::new(),
            dirs: HashMap::new(),
            parent_cache: None,
            report: ExtractReport::default(),
            copier: None,
            recorded: None,
            replace_trees: false,
        }
    }

    /// For container image layers (`on`): an entry replacing a folder replaces all of it,
    /// as a changed type does in a layered image. Off, that is an error, as in the kernel's
    /// initramfs unpacker.
    pub fn set_replacing_trees(&mut self, on: bool) {
        self.replace_trees = on;
    }

    /// Removes whatever is at `path`, a folder with everything below it (a whiteout).
    /// Parents are resolved inside the root; nothing is followed out of it.
    pub fn remove(&mut self, path: &RelPath) -> Result<(), ExtractError> {
        let Some((parent, leaf)) = path.split_leaf() else {
            return Err(ExtractError::RootNotDir);
        };
        let dir = match self.root().open_dir(parent, false) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(()),
            Err(source) => {
                return Err(ExtractError::Parent {
                    path: parent.escape_ascii().to_string(),
                    source,
                });
            }
        };
        self.parent_cache = None;
        crate::tree::safe_path::remove_all_at(dir.as_fd(), leaf).map_err(ExtractError::Create)
    }

    /// The names in the folder at `path` (none if it is not a folder).
    pub fn children(&self, path: &RelPath) -> Result<Vec<Vec<u8>>, ExtractError> {
        let Ok(fd) = self.open_dir_leaf(path) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd).map_err(io_err(ExtractError::Create))? {
            let name = entry
                .map_err(io_err(ExtractError::Create))?
                .file_name()
                .to_bytes()
                .to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// When not running as root: records every entry's owner, mode and device number (see
    /// [`Extractor::finish_recorded`]), writes device nodes as empty placeholder files, and
    /// keeps every file and folder readable by us, so that an image made from the tree can
    /// be given exactly what root's build would have. As root it changes nothing.
    pub fn record_metadata(mut self) -> Extractor {
        if !self.privileged {
            self.recorded = Some(HashMap::new());
        }
        self
    }

    /// Applies the deferred directory metadata; call once all entries are written.
    pub fn finish(self) -> Result<ExtractReport, ExtractError> {
        Ok(self.finish_recorded()?.0)
    }

    /// [`Extractor::finish`], also giving what [`Extractor::record_metadata`] recorded, by
    /// path below the root.
    pub fn finish_recorded(
        mut self,
    ) -> Result<(ExtractReport, Option<RecordedTree>), ExtractError> {
        if let Some(c) = self.copier.take() {
            self.report.xattrs_dropped += c.finish().map_err(ExtractError::Write)?;
        }
        self.report.xattrs_dropped += self.apply_dir_metadata()?;
        Ok((self.report, self.recorded))
    }

    /// Finishes what is under way (files being copied, folders' metadata) so the tree can
    /// be read as it is now; the folders' metadata is applied again by the last
    /// [`Extractor::finish_recorded`], after whatever comes next.
    pub fn settle(&mut self) -> Result<(), ExtractError> {
        if let Some(c) = self.copier.take() {
            self.report.xattrs_dropped += c.finish().map_err(ExtractError::Write)?;
        }
        let dirs = self.dirs.clone();
        // Counted when applied for good, by `finish_recorded`.
        self.apply_dir_metadata()?;
        self.dirs = dirs;
        self.parent_cache = None;
        Ok(())
    }

    /// What [`Extractor::record_metadata`] has recorded so far.
    pub fn recorded(&self) -> Option<&RecordedTree> {
        self.recorded.as_ref()
    }

    /// Whether something (anything, even a dangling symlink) is at `path` in the tree.
    pub fn exists(&self, path: &RelPath) -> bool {
        let Some((parent, leaf)) = path.split_leaf() else {
            return true;
        };
        self.root()
            .open_dir(parent, false)
            .is_ok_and(|dir| rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW).is_ok())
    }

    fn root(&self) -> &Root {
        self.root.as_ref().unwrap_or(&self.base)
    }

    /// The folder at `path`, its parents resolved in the root, itself never followed.
    fn open_dir_leaf(&self, path: &RelPath) -> io::Result<OwnedFd> {
        let Some((parent, leaf)) = path.split_leaf() else {
            return self.root().open_dir(b"", false);
        };
        let dir = self.root().open_dir(parent, false)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(rustix::fs::openat(&dir, leaf, flags, Mode::empty())?)
    }

    fn set_owner_fd(&mut self, fd: &OwnedFd, uid: u32, gid: u32) -> Result<(), ExtractError> {
        if self.privileged {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(io_err(ExtractError::Create))?;
        } else {
            self.count_dropped_owner(uid);
        }
        Ok(())
    }

    /// The parent directory of `path`, created if missing, resolved inside the root.
    fn parent(&mut self, parent: &[u8]) -> Result<Rc<OwnedFd>, ExtractError> {
        if let Some((p, fd)) = &self.parent_cache
            && p == parent
        {
            return Ok(fd.clone());
        }
        let fd = self
            .root()
            .open_dir(parent, true)
            .map_err(|source| ExtractError::Parent {
                path: parent.escape_ascii().to_string(),
                source,
            })?;
        self.parent_setgid = rustix::fs::fstat(&fd).is_ok_and(|st| st.st_mode & 0o2000 != 0);
        let fd = Rc::new(fd);
        self.parent_cache = Some((parent.to_vec(), fd.clone()));
        Ok(fd)
    }

    /// Removes what is at `leaf` unless it is a directory and `keep_dir`; returns whether a
    /// directory was kept. A non-empty folder is an error, unless layers replace trees.
    fn clear_leaf(
        &self,
        dir: &OwnedFd,
        leaf: &OsStr,
        keep_dir: bool,
    ) -> Result<bool, ExtractError> {
        let st = match rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(ExtractError::Create(e.into())),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            if keep_dir {
                return Ok(true);
            }
            return match rustix::fs::unlinkat(dir, leaf, AtFlags::REMOVEDIR) {
                Ok(()) => Ok(false),
                Err(Errno::NOTEMPTY) | Err(Errno::EXIST) if self.replace_trees => {
                    crate::tree::safe_path::remove_all_at(dir.as_fd(), leaf)
                        .map_err(ExtractError::Create)?;
                    Ok(false)
                }
                Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => Err(ExtractError::NonEmptyDir),
                Err(e) => Err(ExtractError::Create(e.into())),
            };
        }
        rustix::fs::unlinkat(dir, leaf, AtFlags::empty()).map_err(io_err(ExtractError::Create))?;
        Ok(false)
    }

    fn write_entry(&mut self, entry: &Entry, data: &mut EntryData<'_>) -> Result<(), ExtractError> {
        let path = RelPath::parse(&entry.name)?;
        if let Some(recorded) = &mut self.recorded {
            record(recorded, &path, entry);
        }
        let Some((parent, leaf)) = path.split_leaf() else {
            if entry.kind != Kind::Dir {
                return Err(ExtractError::RootNotDir);
            }
            let meta = self.dir_meta(entry);
            self.dirs.insert(path, meta);
            return Ok(());
        };
        let parent = parent.to_vec();
        let leaf = leaf.to_os_string();
        if let Some(key) = self.linked_paths.remove(&path) {
            // Whatever this entry makes replaces the name a link set was recorded under.
            self.links.remove(&key);
        }
        let dir = self.parent(&parent)?;
        let mode = Mode::from_raw_mode(entry.mode);
        match &entry.kind {
            Kind::Dir => return self.write_dir(&dir, &leaf, path, entry),
            Kind::File => return self.write_file(&dir, &parent, &leaf, path, entry, data),
            Kind::HardLink(target) => {
                let target = RelPath::parse(target)?;
                return self.link_to(&target, &parent, &leaf);
            }
            Kind::Symlink(target) => {
                self.create_leaf(&dir, &leaf, |d, l| {
                    rustix::fs::symlinkat(target.as_slice(), d, l)
                })?;
            }
            Kind::CharDevice { .. } | Kind::BlockDevice { .. } if self.recorded.is_some() => {
                // A placeholder; the image gets the node from the record.
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
                let initial = Mode::from_raw_mode(0o600);
                let fd = self.create_leaf(&dir, &leaf, |d, l| {
                    rustix::fs::openat(d, l, flags | OFlags::CLOEXEC, initial)
                })?;
                rustix::fs::futimens(&fd, &timestamps(entry.mtime))
                    .map_err(io_err(ExtractError::Create))?;
                return Ok(());
            }
            Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                if !self.privileged {
                    self.report.skipped_devices += 1;
                    return Ok(());
                }
                let ft = if matches!(entry.kind, Kind::CharDevice { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev = rustix::fs::makedev(*major, *minor);
                self.create_leaf(&dir, &leaf, |d, l| rustix::fs::mknodat(d, l, ft, mode, dev))?;
            }
            Kind::Fifo => {
                self.create_leaf(&dir, &leaf, |d, l| {
                    rustix::fs::mknodat(d, l, FileType::Fifo, mode, 0)
                })?;
            }
            Kind::Socket => {
                self.create_leaf(&dir, &leaf, |d, l| {
                    rustix::fs::mknodat(d, l, FileType::Socket, mode, 0)
                })?;
            }
        }
        if let Some(key) = entry.link_key {
            self.record_link(key, path.clone(), None);
        }
        self.finish_special(&parent, &leaf, entry)
    }

    /// A folder: made, or kept if one is there (anything else there is replaced); its
    /// metadata is applied when the archive ends, after what goes in it.
    fn write_dir(
        &mut self,
        dir: &OwnedFd,
        leaf: &OsStr,
        path: RelPath,
        entry: &Entry,
    ) -> Result<(), ExtractError> {
        match rustix::fs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                if !self.clear_leaf(dir, leaf, true)? {
                    // Not a folder: it was removed, and the tree's shape changed.
                    self.parent_cache = None;
                    rustix::fs::mkdirat(dir, leaf, Mode::from_raw_mode(0o700))
                        .map_err(io_err(ExtractError::Create))?;
                }
            }
            Err(e) => return Err(ExtractError::Create(e.into())),
        }
        let meta = self.dir_meta(entry);
        self.dirs.insert(path, meta);
        Ok(())
    }

    /// A regular file: a new leaf with its data, or another name of a file already
    /// written (a hard link set), whose data this entry may carry.
    fn write_file(
        &mut self,
        dir: &OwnedFd,
        parent: &[u8],
        leaf: &OsStr,
        path: RelPath,
        entry: &Entry,
        data: &mut EntryData<'_>,
    ) -> Result<(), ExtractError> {
        if let Some(first) = entry.link_key.and_then(|k| self.links.get(&k)).cloned() {
            self.link_to(&first.path, parent, leaf)?;
            if entry.size > 0 {
                let dir = self.parent(parent)?;
                let fd = Self::open_linked_file(&dir, leaf, &first)?;
                self.finish_file(fd, entry, data, false)?;
            }
            return Ok(());
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Created with its final permissions where the umask allows (no chmod later); the
        // fd we write through is open whatever they are.
        let initial = Mode::from_raw_mode(entry.mode & 0o777);
        let fd = self.create_leaf(dir, leaf, |d, l| rustix::fs::openat(d, l, flags, initial))?;
        if let Some(key) = entry.link_key {
            let st = rustix::fs::fstat(&fd).map_err(io_err(ExtractError::Create))?;
            self.record_link(key, path, Some((st.st_dev, st.st_ino)));
        }
        self.finish_file(fd, entry, data, true)
    }

    fn record_link(&mut self, key: LinkKey, path: RelPath, inode: Option<(u64, u64)>) {
        if let Some(old) = self.links.insert(
            key,
            Linked {
                path: path.clone(),
                inode,
            },
        ) {
            self.linked_paths.remove(&old.path);
        }
        self.linked_paths.insert(path, key);
    }

    /// Opens for writing a name just linked to the first file of its link set, refusing
    /// anything but that very file: a later entry may have replaced the first name with a
    /// device or a fifo, which the link would now reach.
    fn open_linked_file(
        dir: &OwnedFd,
        leaf: &OsStr,
        first: &Linked,
    ) -> Result<OwnedFd, ExtractError> {
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, leaf, flags, Mode::empty())
            .map_err(io_err(ExtractError::Create))?;
        let st = rustix::fs::fstat(&fd).map_err(io_err(ExtractError::Create))?;
        let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
        if !regular || first.inode != Some((st.st_dev, st.st_ino)) {
            return Err(ExtractError::LinkTarget {
                target: first.path.to_string(),
                source: io::Error::other("no longer the file this hard link was made to"),
            });
        }
        rustix::fs::ftruncate(&fd, 0).map_err(io_err(ExtractError::Create))?;
        Ok(fd)
    }

    fn link_to(
        &mut self,
        target: &RelPath,
        parent: &[u8],
        leaf: &OsStr,
    ) -> Result<(), ExtractError> {
        let link_err = |source: io::Error| ExtractError::LinkTarget {
            target: target.to_string(),
            source,
        };
        let (target_parent, target_leaf) = target
            .split_leaf()
            .ok_or_else(|| link_err(io::Error::from(io::ErrorKind::IsADirectory)))?;
        let target_dir = self
            .root()
            .open_dir(target_parent, false)
            .map_err(link_err)?;
        let dir = self.parent(parent)?;
        let link = |d: &OwnedFd, l: &OsStr| {
            rustix::fs::linkat(&target_dir, target_leaf, d, l, AtFlags::empty())
        };
        match link(&dir, leaf) {
            Err(Errno::EXIST) => {
                self.clear_leaf(&dir, leaf, false)?;
                self.parent_cache = None;
                link(&dir, leaf).map_err(|e| link_err(e.into()))
            }
            other => other.map_err(|e| link_err(e.into())),
        }
    }

    /// Creates a leaf with `create`; if something is in the way, removes it (a non-empty
    /// folder is an error) and tries once more. Trying first saves a stat per entry.
    fn create_leaf<T>(
        &mut self,
        dir: &OwnedFd,
        leaf: &OsStr,
        create: impl Fn(&OwnedFd, &OsStr) -> Result<T, Errno>,
    ) -> Result<T, ExtractError> {
        match create(dir, leaf) {
            Err(Errno::EXIST) => {
                self.clear_leaf(dir, leaf, false)?;
                // The tree's shape changed: a cached parent below this path may be stale.
                self.parent_cache = None;
                create(dir, leaf).map_err(io_err(ExtractError::Create))
            }
            other => other.map_err(io_err(ExtractError::Create)),
        }
    }
}

fn io_err<E: Into<io::Error>>(wrap: fn(io::Error) -> ExtractError) -> impl Fn(E) -> ExtractError {
    move |e| wrap(e.into())
}

impl Visitor for Extractor {
    fn segment_start(&mut self, segment: &Segment) -> Result<(), VisitError> {
        if self.split {
            self.apply_dir_metadata()?;
            let name = format!("segment-{}", segment.index);
            rustix::fs::mkdirat(self.base.fd(), name.as_str(), Mode::from_raw_mode(0o755))?;
            self.root = Some(Root::open(&self.base.path().join(&name))?);
            self.links.clear();
            self.linked_paths.clear();
            self.parent_cache = None;
        }
        Ok(())
    }

    fn entry(&mut self, entry: &Entry, data: &mut EntryData<'_>) -> Result<(), VisitError> {
        self.write_entry(entry, data)?;
        self.report.entries += 1;
        Ok(())
    }

    fn archive_end(&mut self) {
        self.links.clear();
        self.linked_paths.clear();
    }
}
