//! The container's root from its spec: `mounts` in order, `linux.devices` and the default
//! nodes, `pivot_root`, masked and read-only paths, a read-only root.
//!
//! Every destination is resolved inside the root (its parents with RESOLVE_IN_ROOT, a
//! symlink as the last component refused), so no spec or image can mount over a host path.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount};

use super::Error;
use crate::tree::safe_path::{RelPath, Root};

/// One of `mounts`, checked and parsed in the parent, applied in the child.
#[derive(Debug, Clone)]
pub struct Entry {
    /// "mounts[3]", for messages.
    pub key: String,
    pub dest: RelPath,
    pub fstype: String,
    pub source: Option<PathBuf>,
    /// MS_* flags to set.
    pub flags: libc::c_ulong,
    pub propagation: Vec<libc::c_ulong>,
    pub data: String,
    pub bind: bool,
    pub recursive: bool,
    /// `tmpcopyup`: a tmpfs that starts with what the image has at its destination.
    pub copy_up: bool,
    /// A bind of a file, not a folder.
    pub file: bool,
}

const FLAGS: &[(&str, bool, libc::c_ulong)] = &[
    ("ro", true, libc::MS_RDONLY),
    ("rw", false, libc::MS_RDONLY),
    ("nosuid", true, libc::MS_NOSUID),
    ("suid", false, libc::MS_NOSUID),
    ("nodev", true, libc::MS_NODEV),
    ("dev", false, libc::MS_NODEV),
    ("noexec", true, libc::MS_NOEXEC),
    ("exec", false, libc::MS_NOEXEC),
    ("sync", true, libc::MS_SYNCHRONOUS),
    ("async", false, libc::MS_SYNCHRONOUS),
    ("dirsync", true, libc::MS_DIRSYNC),
    ("mand", true, libc::MS_MANDLOCK),
    ("nomand", false, libc::MS_MANDLOCK),
    ("noatime", true, libc::MS_NOATIME),
    ("atime", false, libc::MS_NOATIME),
    ("nodiratime", true, libc::MS_NODIRATIME),
    ("diratime", false, libc::MS_NODIRATIME),
    ("relatime", true, libc::MS_RELATIME),
    ("norelatime", false, libc::MS_RELATIME),
    ("strictatime", true, libc::MS_STRICTATIME),
    ("lazytime", true, libc::MS_LAZYTIME),
    ("nolazytime", false, libc::MS_LAZYTIME),
    ("remount", true, libc::MS_REMOUNT),
];

/// Mount propagation by name, as `mounts[].options` and `linux.rootfsPropagation` give it.
pub fn propagation(name: &str) -> Option<libc::c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// Checks and parses `mounts[i]`; bind sources are resolved on the host (relative ones
/// against the bundle) and must exist.
pub fn parse(i: usize, m: &Mount, bundle: &Path) -> Result<Entry, Error> {
    let key = format!("mounts[{i}]");
    let bad = |what: String| Error::Other(format!("{key}: {what}"));
    let dest_text = m.destination().to_string_lossy().into_owned();
    let dest = RelPath::parse(dest_text.as_bytes()).map_err(|_| {
        bad(format!(
            "destination {dest_text:?}: a path in the container without '..'"
        ))
    })?;
    let fstype = m.typ().clone().unwrap_or_default();
    let mut e = Entry {
        key: key.clone(),
        dest,
        bind: fstype == "bind",
        fstype,
        source: m.source().clone(),
        flags: 0,
        propagation: Vec::new(),
        data: String::new(),
        recursive: false,
        copy_up: false,
        file: false,
    };
    let mut data = Vec::new();
    for o in m.options().iter().flatten() {
        if let Some((_, set, flag)) = FLAGS.iter().find(|(n, _, _)| n == o) {
            if *set {
                e.flags |= flag;
            } else {
                e.flags &= !flag;
            }
        } else if let Some(p) = propagation(o) {
            e.propagation.push(p);
        } else {
            match o.as_str() {
                "bind" => e.bind = true,
                "rbind" => (e.bind, e.recursive) = (true, true),
                "tmpcopyup" => e.copy_up = true,
                "notmpcopyup" => e.copy_up = false,
                // SELinux relabelling: nothing to relabel on a host without SELinux.
                "z" | "Z" if !super::process::selinux_enabled() => {}
                "idmap" | "ridmap" | "z" | "Z" | "copy-symlink" | "rro" | "rrw" | "rnosuid"
                | "rsuid" | "rnodev" | "rdev" | "rnoexec" | "rexec" | "nosymfollow"
                | "rnosymfollow" => {
                    return Err(bad(format!("option {o:?} is not supported")));
                }
                _ => data.push(o.as_str()),
            }
        }
    }
    e.data = data.join(",");
    if e.bind {
        let source = e
            .source
            .clone()
            .ok_or_else(|| bad("a bind mount without a source".into()))?;
        let source = bundle.join(source);
        let meta = std::fs::metadata(&source)
            .map_err(|err| bad(format!("source {}: {err}", source.display())))?;
        e.file = !meta.is_dir();
        e.source = Some(source);
    }
    if e.copy_up && e.fstype != "tmpfs" {
        return Err(bad("tmpcopyup is for tmpfs mounts".into()));
    }
    Ok(e)
}

fn errno(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn c(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// mount(2) with plain arguments.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let source = source.map(c).transpose()?;
    let target = c(target)?;
    let fstype = fstype
        .map(CString::new)
        .transpose()
        .map_err(io::Error::other)?;
    let data = CString::new(data).map_err(io::Error::other)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: mount(2) with NUL-terminated strings (or NULL) that outlive the call.
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The flags a remount of `path` must keep: those locked on it (in a user namespace a
/// mount's nosuid, nodev, noexec and read-only cannot be cleared).
fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(st) = rustix::fs::statvfs(path) else {
        return 0;
    };
    use rustix::fs::StatVfsMountFlags as F;
    let mut flags = 0;
    for (f, ms) in [
        (F::NOSUID, libc::MS_NOSUID),
        (F::NODEV, libc::MS_NODEV),
        (F::NOEXEC, libc::MS_NOEXEC),
        (F::RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag.contains(f) {
            flags |= ms;
        }
    }
    flags
}

/// The cgroup groups a `cgroup` mount shows: (host folder, name under the mount).
pub type CgroupView = Vec<(PathBuf, String)>;

/// Applies `entries` below `root`, in order.
pub fn apply(
    root: &Root,
    entries: &[Entry],
    cgroups: &CgroupView,
    userns: bool,
) -> Result<(), Error> {
    for e in entries {
        apply_one(root, e, cgroups, userns)
            .map_err(|err| Error::Other(format!("{} ({}): {err}", e.key, e.dest)))?;
    }
    Ok(())
}

fn apply_one(root: &Root, e: &Entry, cgroups: &CgroupView, userns: bool) -> io::Result<()> {
    let target = root.open_mount_target(&e.dest, e.file)?;
    let at = fd_path(&target);
    let settable = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if e.bind {
        let source = e.source.as_deref();
        let rec = if e.recursive { libc::MS_REC } else { 0 };
        mount(source, &at, None, libc::MS_BIND | rec, "").map_err(errno("bind"))?;
        if e.flags & !libc::MS_REMOUNT != 0 {
            let again = root.open_mount_target(&e.dest, e.file)?;
            let at = fd_path(&again);
            let flags = libc::MS_BIND
                | libc::MS_REMOUNT
                | (e.flags & !libc::MS_REMOUNT)
                | locked_flags(&at);
            mount(None, &at, None, flags, "").map_err(errno("remounting the bind"))?;
        }
    } else if e.fstype == "cgroup" || e.fstype == "cgroup2" {
        mount_cgroups(root, e, cgroups)?;
    } else if e.copy_up {
        copy_up(root, e, &target)?;
    } else {
        let source = e.source.clone().unwrap_or_else(|| PathBuf::from(&e.fstype));
        let r = mount(Some(&source), &at, Some(&e.fstype), e.flags, &e.data);
        match (r, e.fstype.as_str()) {
            (Ok(()), _) => {}
            // In a user namespace that does not own the network (or IPC) namespace, a
            // fresh sysfs (or mqueue) is refused: the host's is bound instead, as runc does.
            (Err(err), "sysfs" | "mqueue") if userns && err.raw_os_error() == Some(libc::EPERM) => {
                let host = if e.fstype == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                mount(
                    Some(Path::new(host)),
                    &at,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    "",
                )
                .map_err(errno(format!("binding the host's {host}")))?;
                let again = root.open_mount_target(&e.dest, false)?;
                let at = fd_path(&again);
                let flags =
                    libc::MS_BIND | libc::MS_REMOUNT | (e.flags & settable) | locked_flags(&at);
                mount(None, &at, None, flags, "").map_err(errno("remounting"))?;
            }
            (Err(err), _) => return Err(errno(format!("mounting {}", e.fstype))(err)),
        }
    }
    if !e.propagation.is_empty() {
        let again = root.open_mount_target(&e.dest, e.file)?;
        for p in &e.propagation {
            mount(None, &fd_path(&again), None, *p, "").map_err(errno("setting propagation"))?;
        }
    }
    Ok(())
}

/// A `cgroup` mount: the container's own groups, bound from the host (so it sees them as
/// its own whether or not it has a cgroup namespace), under a tmpfs on v1.
fn mount_cgroups(root: &Root, e: &Entry, cgroups: &CgroupView) -> io::Result<()> {
    let ro = e.flags & libc::MS_RDONLY;
    let plain = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let target = root.open_mount_target(&e.dest, false)?;
    let v2_only = cgroups.len() == 1 && cgroups[0].1.is_empty();
    if v2_only {
        let (dir, _) = &cgroups[0];
        mount(Some(dir), &fd_path(&target), None, libc::MS_BIND, "")
            .map_err(errno("binding the cgroup"))?;
        let again = root.open_mount_target(&e.dest, false)?;
        let flags = libc::MS_BIND | libc::MS_REMOUNT | plain | ro;
        return mount(None, &fd_path(&again), None, flags, "")
            .map_err(errno("remounting the cgroup"));
    }
    mount(
        Some(Path::new("tmpfs")),
        &fd_path(&target),
        Some("tmpfs"),
        plain,
        "mode=755",
    )
    .map_err(errno("a tmpfs for the cgroups"))?;
    for (dir, name) in cgroups {
        let rel = format!("{}/{name}", e.dest);
        let rel =
            RelPath::parse(rel.as_bytes()).map_err(|_| io::Error::other("bad cgroup name"))?;
        let at = root.open_mount_target(&rel, false)?;
        mount(Some(dir), &fd_path(&at), None, libc::MS_BIND, "")
            .map_err(errno(format!("binding {}", dir.display())))?;
        let again = root.open_mount_target(&rel, false)?;
        mount(
            None,
            &fd_path(&again),
            None,
            libc::MS_BIND | libc::MS_REMOUNT | plain | ro,
            "",
        )
        .map_err(errno("remounting a cgroup"))?;
        // A joint hierarchy by each controller's name too: cpu -> cpu,cpuacct.
        if name.contains(',') {
            let base = root.open_dir(e.dest.as_bytes(), false)?;
            for ctrl in name.split(',').filter(|c| !c.starts_with("name=")) {
                let _ = rustix::fs::symlinkat(name.as_str(), &base, ctrl);
            }
        }
    }
    if ro != 0 {
        let again = root.open_mount_target(&e.dest, false)?;
        mount(
            None,
            &fd_path(&again),
            None,
            libc::MS_REMOUNT | plain | ro,
            "mode=755",
        )
        .map_err(errno("making the cgroup tmpfs read-only"))?;
    }
    Ok(())
}

/// A tmpfs that starts with the folder's contents: mounted on a detached scratch place,
/// filled, then moved over the folder.
fn copy_up(root: &Root, e: &Entry, target: &OwnedFd) -> io::Result<()> {
    let scratch = tempdir_in_run()?;
    mount(
        Some(Path::new("tmpfs")),
        &scratch,
        Some("tmpfs"),
        e.flags & !libc::MS_RDONLY,
        &e.data,
    )
    .map_err(errno("mounting the tmpfs"))?;
    let from = fd_path(target);
    copy_tree(&from, &scratch).map_err(errno("copying the folder up"))?;
    mount(Some(&scratch), &from, None, libc::MS_MOVE, "").map_err(errno("moving the tmpfs"))?;
    let _ = std::fs::remove_dir(&scratch);
    if e.flags & libc::MS_RDONLY != 0 {
        let again = root.open_mount_target(&e.dest, false)?;
        mount(
            None,
            &fd_path(&again),
            None,
            libc::MS_REMOUNT | e.flags,
            &e.data,
        )
        .map_err(errno("remounting"))?;
    }
    Ok(())
}

fn tempdir_in_run() -> io::Result<PathBuf> {
    let dir = PathBuf::from(format!(
        "/run/rootpack-runtime-copyup-{}",
        std::process::id()
    ));
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(dir),
    }
}

/// Copies a tree with modes and owners, symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let dst = to.join(entry.file_name());
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&entry.path(), &dst)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &dst)?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&dst, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    let meta = std::fs::metadata(from)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

/// The nodes every container gets unless its `/dev` is bound from the host, as runc's.
pub fn default_devices() -> Vec<LinuxDevice> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .iter()
    .map(|(path, major, minor)| {
        let mut d = LinuxDevice::default();
        d.set_path(PathBuf::from(path))
            .set_typ(LinuxDeviceType::C)
            .set_major(*major)
            .set_minor(*minor)
            .set_file_mode(Some(0o666))
            .set_uid(Some(0))
            .set_gid(Some(0));
        d
    })
    .collect()
}

/// Makes the device nodes (in a user namespace, which can make none: binds of the host's).
pub fn make_devices(root: &Root, devices: &[LinuxDevice], userns: bool) -> Result<(), Error> {
    for d in devices {
        let name = d.path().to_string_lossy().into_owned();
        make_device(root, d, userns)
            .map_err(|e| Error::Other(format!("linux.devices {name}: {e}")))?;
    }
    Ok(())
}

fn make_device(root: &Root, d: &LinuxDevice, userns: bool) -> io::Result<()> {
    let path = d.path().to_string_lossy().into_owned();
    let rel = RelPath::parse(path.as_bytes())
        .map_err(|_| io::Error::other("not a path in the container"))?;
    let (parent, leaf) = rel
        .split_leaf()
        .ok_or_else(|| io::Error::other("is the root"))?;
    let dir = root.open_dir(parent, true)?;
    let _ = rustix::fs::unlinkat(&dir, leaf, rustix::fs::AtFlags::empty());
    if userns {
        drop(dir);
        let target = root.open_mount_target(&rel, true)?;
        return mount(Some(d.path()), &fd_path(&target), None, libc::MS_BIND, "");
    }
    let kind = match d.typ() {
        LinuxDeviceType::B => libc::S_IFBLK,
        LinuxDeviceType::P => libc::S_IFIFO,
        _ => libc::S_IFCHR,
    };
    let mode = d.file_mode().unwrap_or(0o666) & 0o7777;
    let leaf_c = CString::new(leaf.as_bytes()).map_err(io::Error::other)?;
    let dev = libc::makedev(d.major() as u32, d.minor() as u32);
    // SAFETY: mknodat/fchownat/fchmodat relative to our folder fd, with a C string.
    unsafe {
        if libc::mknodat(dir.as_raw_fd(), leaf_c.as_ptr(), kind | mode, dev) < 0 {
            return Err(io::Error::last_os_error());
        }
        let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
        if libc::fchownat(
            dir.as_raw_fd(),
            leaf_c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        ) < 0
            || libc::fchmodat(dir.as_raw_fd(), leaf_c.as_ptr(), mode, 0) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `/dev/fd`, `/dev/stdin`… and `/dev/ptmx` (to the container's devpts).
pub fn dev_symlinks(root: &Root) -> Result<(), Error> {
    let Ok(dev) = root.open_dir(b"dev", false) else {
        return Ok(());
    };
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    for (name, to) in links {
        if name == "ptmx" {
            let _ = rustix::fs::unlinkat(&dev, name, rustix::fs::AtFlags::empty());
        }
        match rustix::fs::symlinkat(to, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::Other(format!("/dev/{name}: {e}"))),
        }
    }
    Ok(())
}

/// Bind-mounts the rootfs on itself (`pivot_root` needs a mount point) after making every
/// mount a slave (or what `linux.rootfsPropagation` asks), so nothing we mount reaches
/// the host.
pub fn prepare_root(rootfs: &Path, propagation: libc::c_ulong) -> Result<(), Error> {
    let err = |what: &'static str| move |e: io::Error| Error::Other(format!("{what}: {e}"));
    mount(None, Path::new("/"), None, propagation | libc::MS_REC, "")
        .map_err(err("setting / propagation"))?;
    mount(Some(rootfs), rootfs, None, libc::MS_BIND | libc::MS_REC, "")
        .map_err(err("binding the rootfs"))?;
    Ok(())
}

/// `pivot_root` into `rootfs`, or with `--no-pivot` a move and `chroot`.
pub fn enter_root(rootfs: &Path, no_pivot: bool) -> Result<(), Error> {
    let err = |what: &'static str| move |e: io::Error| Error::Other(format!("{what}: {e}"));
    if !no_pivot {
        return crate::run::rootfs::pivot(rootfs).map_err(err("pivot_root"));
    }
    rustix::process::chdir(rootfs).map_err(|e| err("chdir")(e.into()))?;
    mount(Some(rootfs), Path::new("/"), None, libc::MS_MOVE, "").map_err(err("moving the root"))?;
    rustix::process::chroot(".").map_err(|e| err("chroot")(e.into()))?;
    rustix::process::chdir("/").map_err(|e| err("chdir")(e.into()))
}

/// Remounts `/` read-only (`root.readonly`).
pub fn read_only_root() -> Result<(), Error> {
    let at = Path::new("/");
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked_flags(at);
    mount(None, at, None, flags, "").map_err(|e| Error::Other(format!("root.readonly: {e}")))
}
