//! Extended attributes as part of an entry: read from host files, set on the staging tree,
//! and the one rule for which names an image keeps.
//!
//! Kept: `security.*` (file capabilities, SELinux and IMA labels), `user.*`, `trusted.*`
//! (which only root can read or set) and the POSIX ACLs `system.posix_acl_access` and
//! `system.posix_acl_default`. Other `system.*` names are a file system's own (ext4's
//! `system.data`, NFS ACLs) and not the file's.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// An entry's attributes: (name, value) sorted by name, so images are reproducible.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The most one value may hold (the kernel's `XATTR_SIZE_MAX`).
pub const MAX_VALUE: usize = 64 << 10;

/// Whether an image keeps an attribute of this name.
pub fn kept(name: &[u8]) -> bool {
    name.starts_with(b"security.")
        || name.starts_with(b"user.")
        || name.starts_with(b"trusted.")
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// The kept attributes of the file at `path` itself (a symlink's own, not its target's);
/// none where the file system has none.
pub fn read_path(path: &std::path::Path) -> io::Result<Xattrs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    read_with(
        |buf| unsafe {
            // SAFETY: `c` is a NUL-terminated path; the buffer pointer and length match.
            libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        },
        |name, buf| unsafe {
            // SAFETY: as above; `name` is NUL-terminated.
            libc::lgetxattr(
                c.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        },
    )
}

fn read_with(
    list: impl Fn(&mut [u8]) -> isize,
    get: impl Fn(&CStr, &mut [u8]) -> isize,
) -> io::Result<Xattrs> {
    let names = grow(|buf| list(buf))?;
    let mut out = Xattrs::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !kept(name) {
            continue;
        }
        let c = std::ffi::CString::new(name).expect("split at NUL");
        match grow(|buf| get(&c, buf)) {
            Ok(value) => out.push((name.to_vec(), value)),
            // Removed between the listing and the read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Calls `f` with a buffer until it fits: `f` returns the length, or -1 with `errno`.
/// A file system without attributes gives none.
fn grow(f: impl Fn(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = f(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if buf.len() < MAX_VALUE * 2 => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
}

/// Whether an unprivileged process can set an attribute of this name on its own files:
/// `security.*` and `trusted.*` need capabilities in the file system's user namespace.
pub fn settable_unprivileged(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name.starts_with(b"system.posix_acl_")
}

/// Sets `xattrs` on an open file (not `O_PATH`). Gives how many the file system refused
/// (it keeps none, or not that namespace): those are counted, not errors.
pub fn set_fd(fd: BorrowedFd<'_>, xattrs: &Xattrs) -> io::Result<u64> {
    let fd = fd.as_raw_fd();
    set_with(xattrs, |name, value| unsafe {
        // SAFETY: `fd` is open for the call; the name is NUL-terminated; the value pointer
        // and length match.
        libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    })
}

/// Sets `xattrs` on the file `name` in the folder `dir` itself (a symlink, not its
/// target): `dir` was opened safely and `name` is one component the caller just made.
pub fn set_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr, xattrs: &Xattrs) -> io::Result<u64> {
    if xattrs.is_empty() {
        return Ok(0);
    }
    let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW;
    let leaf = rustix::fs::openat(dir, name, flags | rustix::fs::OFlags::CLOEXEC, 0.into())?;
    // An `O_PATH` fd takes no `fsetxattr`; its magic link in /proc is followed by
    // `setxattr` to the very inode, a symlink included, without resolving `name` again.
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", leaf.as_raw_fd()))
        .expect("no NUL in a number");
    set_with(xattrs, |name, value| unsafe {
        // SAFETY: both strings are NUL-terminated; the value pointer and length match.
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

fn set_with(xattrs: &Xattrs, set: impl Fn(&CStr, &[u8]) -> libc::c_int) -> io::Result<u64> {
    let mut refused = 0;
    for (name, value) in xattrs {
        let c = std::ffi::CString::new(name.as_slice())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))?;
        if set(&c, value) != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Not kept by this file system, not ours to set, refused by an LSM, or
                // not for this kind of file (a capability on a folder).
                Some(libc::EOPNOTSUPP | libc::EPERM | libc::EACCES | libc::EINVAL) => refused += 1,
                _ => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("extended attribute {}: {e}", name.escape_ascii()),
                    ));
                }
            }
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_namespaces_images_carry() {
        for name in [
            &b"security.capability"[..],
            b"security.selinux",
            b"user.mime_type",
            b"trusted.overlay.opaque",
            b"system.posix_acl_access",
            b"system.posix_acl_default",
        ] {
            assert!(kept(name), "{}", name.escape_ascii());
        }
        for name in [&b"system.data"[..], b"system.nfs4_acl", b"other.x", b"user"] {
            assert!(!kept(name), "{}", name.escape_ascii());
        }
    }

    #[test]
    fn reads_back_what_was_set_sorted() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        let want: Xattrs = vec![
            (b"user.a".to_vec(), b"1".to_vec()),
            (b"user.b".to_vec(), vec![0, 1, 2]),
        ];
        let mut reversed = want.clone();
        reversed.reverse();
        let name = std::ffi::OsStr::new("f");
        assert_eq!(
            set_at(std::os::fd::AsFd::as_fd(&fd), name, &reversed).unwrap(),
            0
        );
        assert_eq!(read_path(&file).unwrap(), want);
    }
}
