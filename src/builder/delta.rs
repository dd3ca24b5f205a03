//! An OCI output over a base image: what the base put in the tree is remembered, and what
//! the recipe added becomes a tree of its own, the one new layer, unless something of the
//! base was removed or replaced (then the whole tree is one flattened layer).

use std::collections::HashSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A container image the tree started from, and what it put there.
pub(in crate::builder) struct Base {
    pub path: PathBuf,
    pub reference: Option<String>,
    pub platform: Option<String>,
    /// Every path the image made, with what identifies its version (a folder: none).
    pub snapshot: std::collections::HashMap<Vec<u8>, Option<Snap>>,
}

/// A file's identity and version: a later layer or step that replaces or changes it
/// changes one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::builder) struct Snap {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

fn snap(meta: &std::fs::Metadata) -> Option<Snap> {
    use std::os::unix::fs::MetadataExt;
    (!meta.is_dir()).then(|| Snap {
        dev: meta.dev(),
        ino: meta.ino(),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

pub(super) fn snapshot(
    root: &Path,
) -> io::Result<std::collections::HashMap<Vec<u8>, Option<Snap>>> {
    let mut out = std::collections::HashMap::new();
    for walked in crate::walk::walk_named(root) {
        let (name, entry) = walked.map_err(|(_, e)| e)?;
        if name != b"." {
            out.insert(name, snap(&entry.metadata().map_err(io::Error::from)?));
        }
    }
    Ok(out)
}

/// Why what the recipe added cannot be one layer over the base image's.
#[derive(Debug, thiserror::Error)]
pub(in crate::builder) enum NotALayer {
    #[error("/{0} of the base image was replaced or changed")]
    Changed(String),
    #[error("/{0} is a hard link to a file of the base image")]
    HardLinked(String),
    #[error("a file of the base image was removed")]
    Removed,
}

/// What the recipe added over its base image, as a tree of its own in `delta` (files
/// hard-linked from `root`, so their data is not copied), or why the base's layers cannot
/// be kept: something of the base was removed or replaced.
pub(in crate::builder) fn delta_over_base(
    root: &Path,
    base: &Base,
    delta: &Path,
) -> io::Result<Result<(), NotALayer>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base_inodes: HashSet<(u64, u64)> = base
        .snapshot
        .values()
        .flatten()
        .map(|s| (s.dev, s.ino))
        .collect();
    let mut seen = 0usize;
    std::fs::create_dir(delta)?;
    for walked in crate::walk::walk_named(root) {
        let (name, entry) = walked.map_err(|(_, e)| e)?;
        if name == b"." {
            continue;
        }
        let meta = entry.metadata().map_err(io::Error::from)?;
        let shown = String::from_utf8_lossy(&name).into_owned();
        match base.snapshot.get(&name) {
            Some(was) => {
                seen += 1;
                if *was != snap(&meta) {
                    return Ok(Err(NotALayer::Changed(shown)));
                }
                continue;
            }
            None if !meta.is_dir() && base_inodes.contains(&(meta.dev(), meta.ino())) => {
                return Ok(Err(NotALayer::HardLinked(shown)));
            }
            None => {}
        }
        // New: into the delta, with its folders (their current metadata goes over the
        // base's, as an upper layer's folder entry does).
        let target = delta.join(std::ffi::OsStr::from_bytes(&name));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&target)?;
            std::fs::set_permissions(
                &target,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            )?;
        } else {
            std::fs::hard_link(entry.path(), &target)?;
        }
    }
    if seen < base.snapshot.len() {
        return Ok(Err(NotALayer::Removed));
    }
    folder_metadata_from(root, delta)?;
    Ok(Ok(()))
}

/// Gives the folders of `delta`, made on the way to new files, the owner, mode, times and
/// extended attributes their namesakes have in `root`.
pub(super) fn folder_metadata_from(root: &Path, delta: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for walked in crate::walk::walk_named(delta) {
        let (name, entry) = walked.map_err(|(_, e)| e)?;
        if !entry.file_type().is_dir() {
            continue;
        }
        let from = if name == b"." {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&name))
        };
        let meta = std::fs::symlink_metadata(&from)?;
        std::os::unix::fs::chown(entry.path(), Some(meta.uid()), Some(meta.gid())).or_else(
            |e| {
                if rustix::process::geteuid().is_root() {
                    Err(e)
                } else {
                    Ok(())
                }
            },
        )?;
        std::fs::set_permissions(
            entry.path(),
            std::fs::Permissions::from_mode(meta.mode() & 0o7777),
        )?;
        let t = rustix::fs::Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            entry.path(),
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
        let xattrs = crate::xattr::read_path(&from)?;
        if !xattrs.is_empty() {
            let dir = std::fs::File::open(entry.path())?;
            crate::xattr::set_fd(std::os::fd::AsFd::as_fd(&dir), &xattrs)?;
        }
    }
    Ok(())
}
