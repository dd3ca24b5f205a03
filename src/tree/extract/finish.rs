//! Finishing what the [`Extractor`] writes: a file's data (on the copier thread for large
//! ones), then owner, mode, times and extended attributes (last: a chown clears file
//! capabilities), given without following a leaf; a chown or chmod
//! left out when it would change nothing, set-id bits dropped with an owner that could not
//! be given.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::io::OwnedFd;

use rustix::fs::{AtFlags, Mode};

use super::{DirMeta, ExtractError, Extractor, io_err, timestamps};
use crate::archive::{Entry, EntryData, Kind};
use crate::tree::copier::{Copier, FileMeta, Job};

impl Extractor {
    /// Ownership, mode and times of a non-regular, non-directory leaf, without following it.
    pub(super) fn finish_special(
        &mut self,
        parent: &[u8],
        leaf: &OsStr,
        entry: &Entry,
    ) -> Result<(), ExtractError> {
        let is_symlink = matches!(entry.kind, Kind::Symlink(_));
        let privileged = self.privileged;
        let dir = self.parent(parent)?;
        let skip_owner = privileged && self.owner_is_default(entry.uid, entry.gid);
        if privileged && !skip_owner {
            rustix::fs::chownat(
                &dir,
                leaf,
                Some(rustix::fs::Uid::from_raw(entry.uid)),
                Some(rustix::fs::Gid::from_raw(entry.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io_err(ExtractError::Create))?;
        }
        if !(is_symlink || skip_owner && self.mode_is_exact(entry.mode)) {
            // mknod applied the umask, and chown may have cleared set-id bits. The leaf was
            // just created by us as a non-symlink, so following it is safe.
            rustix::fs::chmodat(
                &dir,
                leaf,
                Mode::from_raw_mode(self.file_mode(entry)),
                AtFlags::empty(),
            )
            .map_err(io_err(ExtractError::Create))?;
        }
        rustix::fs::utimensat(
            &dir,
            leaf,
            &timestamps(entry.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err(ExtractError::Create))?;
        self.count_dropped_owner(entry.uid);
        let xattrs = self.xattrs_to_set(entry);
        self.report.xattrs_dropped +=
            crate::xattr::set_at(dir.as_fd(), leaf, &xattrs).map_err(ExtractError::Create)?;
        Ok(())
    }

    /// The entry's extended attributes this process can set on the tree. A rootless build
    /// for an image sets none: the record keeps them all. Otherwise, not being root, those
    /// only root can set are counted as dropped.
    pub(super) fn xattrs_to_set(&mut self, entry: &Entry) -> crate::xattr::Xattrs {
        if self.recorded.is_some() || entry.xattrs.is_empty() {
            return Vec::new();
        }
        if self.privileged {
            return entry.xattrs.clone();
        }
        let (set, dropped): (Vec<_>, Vec<_>) = entry
            .xattrs
            .iter()
            .cloned()
            .partition(|(name, _)| crate::xattr::settable_unprivileged(name));
        self.report.xattrs_dropped += dropped.len() as u64;
        set
    }

    /// Owner, mode, times and extended attributes of every folder, deferred until what
    /// goes in it is written; gives how many attributes the file system refused.
    pub(super) fn apply_dir_metadata(&mut self) -> Result<u64, ExtractError> {
        let mut refused = 0;
        let mut dirs: Vec<_> = std::mem::take(&mut self.dirs).into_iter().collect();
        // Deepest first, so no later step touches a folder whose times are set.
        dirs.sort_unstable_by_key(|(path, _)| std::cmp::Reverse(path.depth()));
        for (path, d) in &dirs {
            let fd = match self.open_dir_leaf(path) {
                Ok(fd) => fd,
                // Replaced by a later entry (a file, a symlink): nothing to apply.
                Err(_) => continue,
            };
            self.set_owner_fd(&fd, d.uid, d.gid)?;
            let mode = if self.recorded.is_some() {
                d.mode | 0o700
            } else {
                d.mode
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                .map_err(io_err(ExtractError::Create))?;
            rustix::fs::futimens(&fd, &timestamps(d.mtime))
                .map_err(io_err(ExtractError::Create))?;
            refused += crate::xattr::set_fd(fd.as_fd(), &d.xattrs).map_err(ExtractError::Create)?;
        }
        Ok(refused)
    }

    /// Whether chown would change nothing: we are root, the entry's owner is who creates
    /// files here, and the parent is not setgid (which would hand its group down).
    pub(super) fn owner_is_default(&self, uid: u32, gid: u32) -> bool {
        !self.parent_setgid && (uid, gid) == self.creator
    }

    /// Whether creating with `mode & 0o777` already gave the entry's mode.
    pub(super) fn mode_is_exact(&self, mode: u32) -> bool {
        mode & 0o7000 == 0 && mode & self.umask == 0
    }

    /// Writes the data, then owner, mode and times. `fresh`: we just created the file with
    /// the entry's permission bits.
    pub(super) fn finish_file(
        &mut self,
        fd: OwnedFd,
        entry: &Entry,
        data: &mut EntryData<'_>,
        fresh: bool,
    ) -> Result<(), ExtractError> {
        let mut file = File::from(fd);
        if let Some((src, len)) = data.take_source() {
            // The data and then the metadata are written on the copy thread.
            let job = Job {
                src: src.try_clone().map_err(ExtractError::Write)?,
                dst: file,
                len,
                meta: self.file_meta(entry, fresh),
                name: crate::archive::display_name(&entry.name),
            };
            self.report.bytes += len;
            if self.copier.is_none() {
                self.copier = Some(Copier::start().map_err(ExtractError::Write)?);
            }
            if !self.copier.as_ref().is_some_and(|c| c.send(job)) {
                let err = self.copier.take().map(Copier::finish);
                return Err(ExtractError::Write(match err {
                    Some(Err(e)) => e,
                    _ => io::Error::other("the copy thread stopped"),
                }));
            }
            return Ok(());
        }
        loop {
            let buf = data.fill_buf().map_err(ExtractError::Write)?;
            if buf.is_empty() {
                break;
            }
            file.write_all(buf).map_err(ExtractError::Write)?;
            let n = buf.len();
            self.report.bytes += n as u64;
            data.consume(n);
        }
        if data.remaining() > 0 {
            return Err(ExtractError::Write(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("truncated data ({} bytes missing)", data.remaining()),
            )));
        }
        self.report.xattrs_dropped += self
            .file_meta(entry, fresh)
            .apply(&file)
            .map_err(ExtractError::Create)?;
        Ok(())
    }

    /// Owner, mode and mtime for a regular file, leaving out a chown or chmod that would
    /// change nothing. `fresh`: we just created the file with the entry's permission bits.
    pub(super) fn file_meta(&mut self, entry: &Entry, fresh: bool) -> FileMeta {
        let default_owner = self.privileged && self.owner_is_default(entry.uid, entry.gid);
        self.count_dropped_owner(entry.uid);
        FileMeta {
            owner: (self.privileged && !default_owner).then_some((entry.uid, entry.gid)),
            mode: (!(fresh && default_owner && self.mode_is_exact(entry.mode)))
                .then(|| self.file_mode(entry)),
            mtime: entry.mtime,
            xattrs: self.xattrs_to_set(entry),
        }
    }

    /// Counts an owner we could not give (not running as root).
    pub(super) fn count_dropped_owner(&mut self, uid: u32) {
        // Recorded owners are not lost: the image writers apply them.
        if !self.privileged && self.recorded.is_none() && uid != self.creator.0 {
            self.report.ownership_dropped += 1;
        }
    }

    /// The mode to give a non-folder entry. Set-user-id and set-group-id go when the owner
    /// they name could not be set (not running as root): they would grant the ids of
    /// whoever extracts, not the archive's (as tar and libarchive do).
    pub(super) fn file_mode(&self, entry: &Entry) -> u32 {
        let mut mode = entry.mode;
        if self.recorded.is_some() {
            // The record keeps the real mode; the tree stays readable for the image.
            mode |= 0o600;
        }
        if !self.privileged {
            if entry.uid != self.creator.0 {
                mode &= !0o4000;
            }
            if entry.gid != self.creator.1 {
                mode &= !0o2000;
            }
        }
        mode
    }

    pub(super) fn dir_meta(&mut self, entry: &Entry) -> DirMeta {
        DirMeta {
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
            xattrs: self.xattrs_to_set(entry),
        }
    }
}
