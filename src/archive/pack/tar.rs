//! The tar writer of [`super::pack`]: GNU headers, long names and links, PAX records for
//! extended attributes.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use indicatif::ProgressBar;

use super::{
    Item, Links, PackError, PackOptions, PackSummary, clamp, number_inodes, open_exact,
    write_entries,
};
use crate::archive::frame_writer::EntrySink;

pub(super) fn write_tar(
    items: &[Item],
    out: &mut dyn EntrySink,
    opts: &PackOptions,
    summary: &mut PackSummary,
    progress: Option<&ProgressBar>,
    interrupted: &dyn Fn() -> bool,
) -> Result<(), PackError> {
    let links = number_inodes(items);
    let mut builder = ::tar::Builder::new(out);
    write_entries(
        items,
        &mut builder,
        summary,
        progress,
        interrupted,
        |b| b.get_mut().entry_end(),
        |b, i, summary| tar_entry(b, items, i, &links, opts, summary),
    )?;
    builder.into_inner().map_err(PackError::Write)?;
    Ok(())
}

/// Writes `items[i]`; false for a socket, which tar cannot hold.
fn tar_entry(
    builder: &mut ::tar::Builder<&mut dyn EntrySink>,
    items: &[Item],
    i: usize,
    links: &Links,
    opts: &PackOptions,
    summary: &mut PackSummary,
) -> Result<bool, PackError> {
    use ::tar::{EntryType, Header};
    let it = &items[i];
    let kind = it.kind();
    let name = if it.name == b"." {
        &b"./"[..]
    } else {
        &it.name
    };
    let path = Path::new(OsStr::from_bytes(name));
    let mut h = Header::new_gnu();
    h.set_mode(it.is.mode & 0o7777);
    h.set_uid(it.is.uid as u64);
    h.set_gid(it.is.gid as u64);
    h.set_mtime(clamp(it.meta.mtime(), opts) as u64);
    h.set_size(0);
    let read_err = |source| PackError::Read {
        path: it.path.clone(),
        source,
    };
    // A hard link's attributes are its first name's: the inode's.
    if links.first[i].is_none() && !it.is.xattrs.is_empty() {
        append_xattrs(builder, &it.is.xattrs).map_err(PackError::Write)?;
    }
    let result = if let Some(first) = links.first[i] {
        h.set_entry_type(EntryType::Link);
        let target = Path::new(OsStr::from_bytes(&items[first].name));
        builder.append_link(&mut h, path, target)
    } else if kind == libc::S_IFLNK {
        h.set_entry_type(EntryType::Symlink);
        let target = std::fs::read_link(&it.path).map_err(read_err)?;
        // Byte for byte: the crate's `set_link_name` rewrites a target as a path
        // ("a/." -> "a", "a//b" -> "a/b", "a/" -> "a"). Longer ones go into a GNU long
        // link entry, which it writes unchanged.
        let bytes = target.as_os_str().as_bytes();
        if bytes.len() < 100 {
            h.set_link_name_literal(bytes).map_err(read_err)?;
            builder.append_data(&mut h, path, io::empty())
        } else {
            builder.append_link(&mut h, path, target)
        }
    } else if kind == libc::S_IFREG {
        h.set_entry_type(EntryType::Regular);
        h.set_size(it.meta.len());
        summary.data_bytes += it.meta.len();
        builder.append_data(&mut h, path, open_exact(it)?)
    } else if kind == libc::S_IFDIR {
        h.set_entry_type(EntryType::Directory);
        builder.append_data(&mut h, path, io::empty())
    } else if kind == libc::S_IFIFO {
        h.set_entry_type(EntryType::Fifo);
        builder.append_data(&mut h, path, io::empty())
    } else if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
        h.set_entry_type(if kind == libc::S_IFCHR {
            EntryType::Char
        } else {
            EntryType::Block
        });
        h.set_device_major(it.is.rdev.0).map_err(read_err)?;
        h.set_device_minor(it.is.rdev.1).map_err(read_err)?;
        builder.append_data(&mut h, path, io::empty())
    } else {
        summary.skipped_sockets += 1;
        return Ok(false);
    };
    result.map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => read_err(e),
        _ => PackError::Write(e),
    })?;
    Ok(true)
}

/// A PAX extended header with the next entry's attributes as `SCHILY.xattr.NAME` records,
/// the value's bytes as they are: what GNU tar, containerd and podman write and read.
fn append_xattrs(
    builder: &mut ::tar::Builder<&mut dyn EntrySink>,
    xattrs: &crate::xattr::Xattrs,
) -> io::Result<()> {
    let mut data = Vec::new();
    for (name, value) in xattrs {
        // "LEN KEY=VALUE\n", where LEN counts its own digits.
        let rest = b" SCHILY.xattr.=\n".len() + name.len() + value.len();
        let mut len = rest + 1;
        while rest + len.to_string().len() != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len} SCHILY.xattr.").as_bytes());
        data.extend_from_slice(name);
        data.push(b'=');
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = ::tar::Header::new_ustar();
    h.set_path("././@PaxHeader")?;
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_entry_type(::tar::EntryType::XHeader);
    h.set_cksum();
    builder.append(&h, &data[..])
}
