//! Putting host things into the staging tree: folders as layers, programs with their
//! libraries, recipe files, folders, symlinks and mount points. Everything becomes an
//! archive [`Entry`] written by the [`Extractor`], so one code path (and one set of safety
//! rules) writes every tree rootpack builds.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use crate::archive::{Entry, EntryData, Kind, LinkKey, Visitor};
use crate::tree::extract::Extractor;
use crate::tree::safe_path::RelPath;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{path}")]
    Host { path: PathBuf, source: io::Error },
    #[error("{to}")]
    Write {
        to: String,
        source: crate::archive::VisitError,
    },
    #[error("{path}: sockets cannot be copied")]
    Socket { path: PathBuf },
}

fn host_err(path: &Path) -> impl FnOnce(io::Error) -> InjectError + '_ {
    move |source| InjectError::Host {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes one entry, with `data` as its content.
pub fn write_entry(
    x: &mut Extractor,
    entry: &Entry,
    data: &mut dyn io::BufRead,
) -> Result<(), InjectError> {
    let mut data = EntryData::new(data, entry.size, false);
    x.entry(entry, &mut data)
        .map_err(|source| InjectError::Write {
            to: crate::archive::display_name(&entry.name),
            source,
        })
}

/// An entry describing the host file at `path` (not followed), to be written at `name`.
/// `owner_root` maps the owner to 0:0, as injected host files belong to root in the image.
pub fn host_entry(path: &Path, name: Vec<u8>, owner_root: bool) -> Result<Entry, InjectError> {
    let meta = std::fs::symlink_metadata(path).map_err(host_err(path))?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(host_err(path))?;
        Kind::Symlink(target.as_os_str().as_bytes().to_vec())
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() || ft.is_block_device() {
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        if ft.is_char_device() {
            Kind::CharDevice { major, minor }
        } else {
            Kind::BlockDevice { major, minor }
        }
    } else {
        return Err(InjectError::Socket {
            path: path.to_path_buf(),
        });
    };
    let link_key = (!ft.is_dir() && meta.nlink() > 1).then_some(LinkKey {
        dev: meta.dev(),
        ino: meta.ino(),
        file_type: meta.mode() & 0o170000,
    });
    Ok(Entry {
        name,
        size: if kind == Kind::File { meta.len() } else { 0 },
        kind,
        mode: meta.mode() & 0o7777,
        uid: if owner_root { 0 } else { meta.uid() },
        gid: if owner_root { 0 } else { meta.gid() },
        mtime: meta.mtime(),
        link_key,
        offset: 0,
        xattrs: crate::xattr::read_path(path).map_err(host_err(path))?,
    })
}

fn write_host(
    x: &mut Extractor,
    path: &Path,
    name: Vec<u8>,
    owner_root: bool,
) -> Result<(), InjectError> {
    let entry = host_entry(path, name, owner_root)?;
    write_host_entry(x, path, &entry)
}

fn write_host_entry(x: &mut Extractor, path: &Path, entry: &Entry) -> Result<(), InjectError> {
    if entry.kind == Kind::File && entry.size > 0 {
        let file = File::open(path).map_err(host_err(path))?;
        let mut reader = BufReader::with_capacity(64 << 10, &file);
        let mut data = EntryData::from_file(&mut reader, &file, entry.size);
        x.entry(entry, &mut data)
            .map_err(|source| InjectError::Write {
                to: crate::archive::display_name(&entry.name),
                source,
            })
    } else {
        write_entry(x, entry, &mut io::empty())
    }
}

/// Copies the host folder `dir` onto the tree root, keeping owners, modes, times, hard
/// links and special files (a `dir` layer).
pub fn copy_tree(x: &mut Extractor, dir: &Path) -> Result<u64, InjectError> {
    copy(x, dir, false)
}

/// Adds what the host folder `dir` holds to the tree: as [`copy_tree`], but a folder the
/// tree already has, or a symlink in its place (`lib -> usr/lib`), stays as it is and what
/// goes in resolves through it, as [`inject_host_path`] does.
pub fn add_tree(x: &mut Extractor, dir: &Path) -> Result<u64, InjectError> {
    copy(x, dir, true)
}

fn copy(x: &mut Extractor, dir: &Path, keep_folders: bool) -> Result<u64, InjectError> {
    let mut count = 0;
    // Hard links: the data goes with the first name only.
    let mut linked = HashSet::new();
    for walked in crate::walk::walk_named(dir) {
        let (name, item) = walked.map_err(|(path, source)| InjectError::Host { path, source })?;
        if item.file_type().is_socket() {
            continue;
        }
        if keep_folders && item.file_type().is_dir() {
            let kept = name == b"." || RelPath::parse(&name).is_ok_and(|p| x.exists(&p));
            if kept {
                continue;
            }
        }
        let mut entry = host_entry(item.path(), name, false)?;
        if entry.link_key.is_some_and(|k| !linked.insert(k)) {
            entry.size = 0;
        }
        write_host_entry(x, item.path(), &entry)?;
        count += 1;
    }
    Ok(count)
}

/// Lexically normalizes an absolute host path (no filesystem access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Copies a host path into the tree at the same place, the way the host has it: a folder
/// on the way that is a symlink on the host (`/lib -> usr/lib`) becomes the same symlink
/// when the tree has nothing there (a tree that already has a real folder or its own
/// symlink keeps it: writes resolve through it), and a symlinked file brings its whole
/// chain (`libc.so.6 -> libc-2.36.so`).
pub fn inject_host_path(
    x: &mut Extractor,
    host: &Path,
    seen: &mut HashSet<PathBuf>,
) -> Result<(), InjectError> {
    let host = normalize(host);
    if !seen.insert(host.clone()) {
        return Ok(());
    }
    let mut prefix = PathBuf::from("/");
    let components: Vec<_> = host.components().skip(1).collect();
    for c in &components[..components.len().saturating_sub(1)] {
        prefix.push(c);
        let meta = std::fs::symlink_metadata(&prefix).map_err(host_err(&prefix))?;
        if meta.file_type().is_symlink() {
            let rel =
                RelPath::parse(prefix.as_os_str().as_bytes()).map_err(|e| InjectError::Host {
                    path: prefix.clone(),
                    source: io::Error::other(e),
                })?;
            if !x.exists(&rel) {
                inject_host_path(x, &prefix, seen)?;
            }
        }
    }
    write_host(x, &host, host.as_os_str().as_bytes().to_vec(), true)?;
    if let Ok(target) = std::fs::read_link(&host) {
        // Relative targets count from the link's real folder (`..` after a symlinked
        // folder is not textual).
        let parent = host.parent().unwrap_or(Path::new("/"));
        let parent = std::fs::canonicalize(parent).map_err(host_err(parent))?;
        inject_host_path(x, &parent.join(target), seen)?;
    }
    Ok(())
}

/// Copies a host file to `to` in the tree, owned by root (a program placed elsewhere).
pub fn inject_host_file_at(
    x: &mut Extractor,
    host: &Path,
    to: &RelPath,
) -> Result<(), InjectError> {
    let real = std::fs::canonicalize(host).map_err(host_err(host))?;
    write_host(x, &real, to.as_bytes().to_vec(), true)
}

/// A synthetic entry (recipe file, folder, symlink, mount point).
pub fn synthetic(
    name: &RelPath,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        uid,
        gid,
        mtime,
        size,
        link_key: None,
        offset: 0,
        xattrs: Vec::new(),
    }
}
