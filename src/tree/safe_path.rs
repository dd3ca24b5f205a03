//! The one place where untrusted paths (archive entries, layer entries, recipe targets)
//! become places on the host.
//!
//! # Security
//!
//! An archive is hostile until proven otherwise. A name may be absolute or contain `..`
//! (CVE-2001-1267, GNU tar), a symlink entry may point anywhere and be followed by an entry
//! written "through" it (`a -> /etc`, then `a/passwd`: CVE-2018-20482-style escapes, and the
//! bug 3cpio 0.14 has), or the tree may change under us between a check and a use.
//! So nothing here compares strings after canonicalizing: the root is opened once as a
//! directory fd, every parent directory is resolved relative to it with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` — the kernel interprets every symlink
//! as if the root were `/`, so no lookup can leave it — and the leaf is created relative to
//! that parent fd with `O_EXCL | O_NOFOLLOW` (or the `*at` call that never follows).
//! On kernels without openat2 (< 5.6) the walk is done one component at a time with
//! `O_NOFOLLOW`, which refuses symlinked parents instead of resolving them.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Why an entry name cannot be used as a path inside the root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("empty name")]
    Empty,
    #[error("name contains a NUL byte")]
    Nul,
    #[error("name contains a '..' component")]
    DotDot,
}

/// A validated path relative to a root: no empty, `.` or `..` components, no NUL.
/// The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Turns an archive name into a relative path: leading `/` and `./` are dropped (the
    /// kernel unpacks relative to `/`), `.` components vanish, `..` is refused.
    pub fn parse(name: &[u8]) -> Result<RelPath, BadName> {
        if name.is_empty() {
            return Err(BadName::Empty);
        }
        if name.contains(&0) {
            return Err(BadName::Nul);
        }
        let mut out = Vec::with_capacity(name.len());
        for part in name.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err(BadName::DotDot),
                _ => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(part);
                }
            }
        }
        Ok(RelPath(out))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() {
            0
        } else {
            1 + self.0.iter().filter(|&&b| b == b'/').count()
        }
    }

    /// The parent path and the last component (`None` for the root).
    pub fn split_leaf(&self) -> Option<(&[u8], &OsStr)> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], OsStr::from_bytes(&self.0[i + 1..])),
            None => (&[][..], OsStr::from_bytes(&self.0)),
        })
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || (self.0.starts_with(&other.0)
                && (self.0.len() == other.0.len() || self.0[other.0.len()] == b'/'))
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            write!(f, "{}", self.0.escape_ascii())
        }
    }
}

/// A directory that untrusted paths are resolved inside.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty())?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `rel` (empty: the root), resolving symlinks as if the root
    /// were `/`. With `create`, missing directories are made (mode 0755).
    pub fn open_dir(&self, rel: &[u8], create: bool) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return Ok(rustix::io::dup(&self.fd)?);
        }
        match self.resolve_dir(rel) {
            Err(Errno::NOENT) if create => {}
            other => return Ok(other?),
        }
        let (parent, leaf) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&[][..], rel),
        };
        let parent_fd = self.open_dir(parent, true)?;
        match rustix::fs::mkdirat(&parent_fd, leaf, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(rustix::fs::openat(
            &parent_fd,
            leaf,
            DIR_FLAGS,
            Mode::empty(),
        )?)
    }

    /// Opens a place to mount on: parents resolved inside the root (created if missing),
    /// the leaf itself never followed. A missing leaf is created as a folder, or as an
    /// empty file with `file`. A leaf that is a symlink is refused: mounting "through" an
    /// image's `/proc -> /` would cover a host path.
    pub fn open_mount_target(&self, rel: &RelPath, file: bool) -> io::Result<OwnedFd> {
        let Some((parent, leaf)) = rel.split_leaf() else {
            return Ok(rustix::io::dup(&self.fd)?);
        };
        let dir = self.open_dir(parent, true)?;
        let created = if file {
            let flags =
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&dir, leaf, flags, Mode::from_raw_mode(0o644)).map(drop)
        } else {
            rustix::fs::mkdirat(&dir, leaf, Mode::from_raw_mode(0o755))
        };
        match created {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, leaf, flags, Mode::empty())?;
        let ft = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        match ft {
            rustix::fs::FileType::Symlink => {
                Err(io::Error::other("is a symlink; refusing to mount over it"))
            }
            rustix::fs::FileType::Directory if file => {
                Err(io::Error::other("is a folder, a file is mounted here"))
            }
            rustix::fs::FileType::Directory => Ok(fd),
            _ if !file => Err(io::Error::other("is not a folder")),
            _ => Ok(fd),
        }
    }

    fn resolve_dir(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        // The last component may be a symlink too: RESOLVE_IN_ROOT contains it, so no
        // O_NOFOLLOW here (it would refuse every symlinked folder).
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = DIR_FLAGS.difference(OFlags::NOFOLLOW);
        match rustix::fs::openat2(&self.fd, rel, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS) => self.walk_nofollow(rel),
            // A symlink whose in-root target is missing or a loop: report it as absent or
            // as not a directory; it is never followed out of the root either way.
            other => other,
        }
    }

    /// Fallback for kernels without openat2: every component must be a real directory.
    fn walk_nofollow(&self, rel: &[u8]) -> Result<OwnedFd, Errno> {
        let mut fd = rustix::io::dup(&self.fd)?;
        for part in rel.split(|&b| b == b'/') {
            fd = rustix::fs::openat(&fd, part, DIR_FLAGS, Mode::empty())?;
        }
        Ok(fd)
    }
}

/// Removes `leaf` of the folder `dir` and, when it is a folder, everything below it,
/// never following a symlink (each level is opened `O_NOFOLLOW` relative to its parent).
/// A missing leaf is not an error.
pub fn remove_all_at(dir: BorrowedFd<'_>, leaf: &OsStr) -> io::Result<()> {
    remove_all_below(dir, leaf, 0)
}

fn remove_all_below(dir: BorrowedFd<'_>, leaf: &OsStr, depth: u32) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, leaf, rustix::fs::AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e.into()),
    }
    if depth > 4096 {
        return Err(io::Error::other("folders nested more than 4096 deep"));
    }
    let fd = rustix::fs::openat(dir, leaf, DIR_FLAGS, Mode::empty())?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    for name in names {
        remove_all_below(fd.as_fd(), OsStr::from_bytes(&name), depth + 1)?;
    }
    rustix::fs::unlinkat(dir, leaf, rustix::fs::AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalizes_and_refuses_dotdot() {
        let p = |s: &[u8]| RelPath::parse(s).map(|p| p.0);
        assert_eq!(p(b"/usr//bin/./sh"), Ok(b"usr/bin/sh".to_vec()));
        assert_eq!(p(b"./"), Ok(Vec::new()));
        assert_eq!(p(b"."), Ok(Vec::new()));
        assert_eq!(p(b"a/../b"), Err(BadName::DotDot));
        assert_eq!(p(b"../etc"), Err(BadName::DotDot));
        assert_eq!(p(b""), Err(BadName::Empty));
        assert_eq!(p(b"a\0b"), Err(BadName::Nul));
        assert_eq!(p(b"..."), Ok(b"...".to_vec()));
    }

    #[test]
    fn split_leaf_and_prefix() {
        let p = RelPath::parse(b"usr/bin/sh").unwrap();
        let (parent, leaf) = p.split_leaf().unwrap();
        assert_eq!((parent, leaf.as_bytes()), (&b"usr/bin"[..], &b"sh"[..]));
        assert!(p.starts_with(&RelPath::parse(b"usr").unwrap()));
        assert!(!p.starts_with(&RelPath::parse(b"us").unwrap()));
        assert!(RelPath::parse(b"/").unwrap().split_leaf().is_none());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir_all(root_path.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root_path.join("a")).unwrap();
        std::os::unix::fs::symlink("../../../..", root_path.join("up")).unwrap();
        let root = Root::open(&root_path).unwrap();
        // `a -> /etc` means <root>/etc, never the host's /etc.
        let fd = root.open_dir(b"a", false).unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        let inside = std::fs::metadata(root_path.join("etc")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(st.st_ino, inside.ino());
        // `..` through a symlink stops at the root.
        let fd = root.open_dir(b"up/new", true).unwrap();
        drop(fd);
        assert!(root_path.join("new").is_dir());
        assert!(!dir.path().join("new").exists());
    }
}
