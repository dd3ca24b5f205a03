//! What `[[run]]` steps need in the tree around them and what is taken away after: mount
//! points the runtime creates (removed if still empty placeholders), a symlinked
//! resolv.conf moved aside, Debian's `policy-rc.d`, and the times of the folders touched.

use std::io::{self, Read, Write};
use std::os::unix::io::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};

use super::steps::rel;
use crate::tree::safe_path::{RelPath, Root};

const POLICY_RC_D: &[u8] =
    b"#!/bin/sh\n# rootpack: no service starts while the image is built.\nexit 101\n";

/// Whether `name` (one component) is a folder in the tree's root, not a symlink.
pub(super) fn is_real_dir(root: &Root, name: &[u8]) -> bool {
    rustix::fs::statat(root.fd(), name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
    })
}

/// The entry at `path` in the tree, parents resolved inside it, the leaf not followed.
pub(super) fn stat_in(root: &Root, path: &RelPath) -> io::Result<rustix::fs::Stat> {
    match path.split_leaf() {
        None => Ok(rustix::fs::fstat(root.fd())?),
        Some((parent, leaf)) => {
            let dir = root.open_dir(parent, false)?;
            Ok(rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW)?)
        }
    }
}

fn parent_of(path: &RelPath) -> RelPath {
    match path.split_leaf() {
        Some((parent, _)) => RelPath::parse(if parent.is_empty() { b"." } else { parent })
            .unwrap_or_else(|_| rel(".")),
        None => rel("."),
    }
}

fn times_of(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// What rootpack changes in the tree around one step, to be undone after it.
#[derive(Default)]
pub(super) struct Changes {
    /// Paths that did not exist: placeholders the runtime may create; removed, deepest
    /// first, if they are still an empty folder or an empty file.
    created: Vec<RelPath>,
    /// A symlink moved aside (from, to), moved back afterwards.
    moved: Vec<(RelPath, RelPath)>,
    /// Folders whose times were taken before anything changed in them.
    times: Vec<(RelPath, Timestamps)>,
}

impl Changes {
    fn keep_times(&mut self, root: &Root, dir: &RelPath) -> io::Result<()> {
        if self.times.iter().any(|(d, _)| d == dir) {
            return Ok(());
        }
        let st = stat_in(root, dir)?;
        self.times.push((dir.clone(), times_of(&st)));
        Ok(())
    }

    /// Notes every component of `path` that is missing now (the runtime creates them).
    pub(super) fn note_created(&mut self, root: &Root, path: &RelPath) -> io::Result<()> {
        let bytes = path.as_bytes();
        let mut prefixes: Vec<&[u8]> = bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &bytes[..i])
            .collect();
        prefixes.push(bytes);
        for p in prefixes {
            let p = RelPath::parse(p).map_err(io::Error::other)?;
            match stat_in(root, &p) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.keep_times(root, &parent_of(&p))?;
                    // Everything below the first missing component is ours too.
                    let mut q = p.as_bytes().to_vec();
                    self.created.push(p.clone());
                    for c in bytes[q.len()..]
                        .split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                    {
                        q.push(b'/');
                        q.extend_from_slice(c);
                        self.created
                            .push(RelPath::parse(&q).map_err(io::Error::other)?);
                    }
                    return Ok(());
                }
                // Not a folder on the way: the runtime will say so.
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    /// Moves a symlink at `path` aside, so that a file can be mounted there.
    pub(super) fn move_symlink_aside(&mut self, root: &Root, path: &RelPath) -> io::Result<()> {
        let Ok(st) = stat_in(root, path) else {
            return Ok(());
        };
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink {
            return Ok(());
        }
        let Some((parent, leaf)) = path.split_leaf() else {
            return Ok(());
        };
        let parent_rel = parent_of(path);
        self.keep_times(root, &parent_rel)?;
        let dir = root.open_dir(parent, false)?;
        let mut aside = leaf.as_encoded_bytes().to_vec();
        aside.splice(0..0, b".".iter().copied());
        aside.extend_from_slice(b".rootpack-step");
        rustix::fs::renameat(&dir, leaf, &dir, aside.as_slice())?;
        let mut aside_path = parent.to_vec();
        if !aside_path.is_empty() {
            aside_path.push(b'/');
        }
        aside_path.extend_from_slice(&aside);
        self.moved.push((
            RelPath::parse(&aside_path).map_err(io::Error::other)?,
            path.clone(),
        ));
        Ok(())
    }

    /// Removes what was created, moves back what was moved, puts the folders' times back.
    /// Goes on after a failure and reports the first.
    pub(super) fn undo(&mut self, root: &Root) -> io::Result<()> {
        let mut first = Ok(());
        let mut keep = |r: io::Result<()>| {
            if first.is_ok() {
                first = r;
            }
        };
        for path in self.created.drain(..).rev() {
            keep(remove_placeholder(root, &path));
        }
        for (from, to) in self.moved.drain(..) {
            keep(rename_in(root, &from, &to));
        }
        for (dir, times) in self.times.drain(..).rev() {
            keep(
                root.open_dir(dir.as_bytes(), false)
                    .and_then(|fd| Ok(rustix::fs::futimens(&fd, &times)?)),
            );
        }
        first
    }
}

fn remove_placeholder(root: &Root, path: &RelPath) -> io::Result<()> {
    let Some((parent, leaf)) = path.split_leaf() else {
        return Ok(());
    };
    let dir = match root.open_dir(parent, false) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let Ok(st) = rustix::fs::statat(&dir, leaf, AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(());
    };
    use rustix::fs::FileType;
    let r = match FileType::from_raw_mode(st.st_mode) {
        // Not empty: the step put something there, which stays.
        FileType::Directory => rustix::fs::unlinkat(&dir, leaf, AtFlags::REMOVEDIR),
        FileType::RegularFile if st.st_size == 0 => {
            rustix::fs::unlinkat(&dir, leaf, AtFlags::empty())
        }
        _ => Ok(()),
    };
    match r {
        Err(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => Ok(()),
        other => Ok(other?),
    }
}

fn rename_in(root: &Root, from: &RelPath, to: &RelPath) -> io::Result<()> {
    let (Some((fp, fl)), Some((tp, tl))) = (from.split_leaf(), to.split_leaf()) else {
        return Ok(());
    };
    let fdir = root.open_dir(fp, false)?;
    let tdir = root.open_dir(tp, false)?;
    Ok(rustix::fs::renameat(&fdir, fl, &tdir, tl)?)
}

/// Debian's `policy-rc.d` that exits 101, so package scripts start no service, while the
/// steps run on a tree with `/usr/sbin`; only placed where none is, removed afterwards.
#[derive(Default)]
pub(super) struct PolicyRcD {
    placed: Option<(OwnedFd, Timestamps)>,
}

impl PolicyRcD {
    pub(super) fn place(&mut self, root: &Root) -> io::Result<()> {
        if self.placed.is_some() {
            return Ok(());
        }
        let dir = match root.open_dir(b"usr/sbin", false) {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let times = times_of(&rustix::fs::fstat(&dir)?);
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, "policy-rc.d", flags, Mode::from_raw_mode(0o755)) {
            Ok(fd) => fd,
            // The image's own: it stays, and is what package scripts see.
            Err(rustix::io::Errno::EXIST) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut f = std::fs::File::from(fd);
        f.write_all(POLICY_RC_D)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(0o755))?;
        self.placed = Some((dir, times));
        Ok(())
    }

    pub(super) fn remove(&mut self, _root: &Root) -> io::Result<()> {
        let Some((dir, times)) = self.placed.take() else {
            return Ok(());
        };
        // Only ours: a step may have replaced it with the image's own.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut text = Vec::new();
        let ours = rustix::fs::openat(&dir, "policy-rc.d", flags, Mode::empty())
            .map_err(io::Error::from)
            .and_then(|fd| {
                let limit = POLICY_RC_D.len() as u64 + 1;
                std::fs::File::from(fd).take(limit).read_to_end(&mut text)
            })
            .is_ok_and(|_| text == POLICY_RC_D);
        if ours {
            rustix::fs::unlinkat(&dir, "policy-rc.d", AtFlags::empty())?;
        }
        rustix::fs::futimens(&dir, &times)?;
        Ok(())
    }
}
