//! The container's filesystem, built inside its new mount namespace: the image attached
//! read-only and mounted, an overlay with a tmpfs upper (or the image read-write), volumes,
//! `/proc`, `/sys`, a fresh `/dev`, then `pivot_root` and the `/proc` masks.
//!
//! # Security
//!
//! - `/` is made recursively private first, so nothing mounted here propagates to the host
//!   and the host's mountinfo is unchanged.
//! - Every mount target inside the image is opened with [`Root::open_mount_target`]:
//!   parents resolved inside the root, the leaf never followed, a symlinked leaf refused;
//!   the mount is then made on that fd (`/proc/self/fd/N`). An image whose `/proc` is a
//!   symlink to `/` cannot redirect a mount onto the host (CVE-2019-16884-style races and
//!   runc's symlink-exchange bugs, CVE-2021-30465).
//! - `/proc` paths that leak host information or allow host changes are masked or made
//!   read-only as runc's default spec does; `/sys` is read-only.
//! - The image mount and the loop device live only in this namespace: when its last
//!   process exits, the kernel unmounts them and autoclear frees the device, even if
//!   rootpack itself was killed.

use std::ffi::CString;
use std::io;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use crate::image::loopdev::Loop;
use crate::tree::safe_path::{RelPath, Root};

/// Where the image and overlay are put together before `pivot_root` (inside a tmpfs that
/// exists only in the container's mount namespace).
pub const STAGE: &str = "/run/rootpack";

#[derive(Debug, Clone)]
pub struct Volume {
    pub host: PathBuf,
    pub target: RelPath,
    pub read_only: bool,
    /// A file the runtime provides (`/etc/resolv.conf`, `/etc/hosts`): where the image has
    /// a symlink there (to systemd-resolved's stub file, say), it is bound where the link
    /// leads, inside the root, as Docker does. A user's volume is never bound through one.
    pub through_link: bool,
}

#[derive(Debug, Clone)]
pub struct RootfsSpec {
    pub image: PathBuf,
    /// The image file, opened once: checked, then attached as it is (see
    /// [`super::verify`]). `None`: `image` is a folder (like `systemd-nspawn -D`), bound
    /// instead of loop-mounted.
    pub image_file: Option<std::sync::Arc<std::fs::File>>,
    pub writable: bool,
    /// `--read-only`: the root mount (only it) made read-only after `pivot_root`.
    pub read_only_root: bool,
    pub volumes: Vec<Volume>,
    pub tmpfs: Vec<RelPath>,
    pub net_host: bool,
    /// A device cgroup is in force (see [`super::devices`]): the image and `/dev` may
    /// hold device nodes, which open only as it allows, and `/dev`'s nodes are made, not
    /// bound from the host. Without it (a user namespace, no cgroup), everything the
    /// container can write is `nodev`.
    pub devices: bool,
    /// An empty folder to assemble the root on (a tmpfs is mounted there first, inside
    /// the container's mount namespace); usually [`STAGE`].
    pub stage: PathBuf,
    /// Kernel parameters of the container's namespaces, written in its `/proc/sys` before
    /// that is made read-only.
    pub sysctl: Vec<(String, String)>,
}

fn err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    let what = what.to_string();
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    log::debug!(
        "mount {fstype} {source} on {} ({flags:?}{}{})",
        target.display(),
        if data.is_some() { ", " } else { "" },
        data.unwrap_or("")
    );
    let data = data.map(|d| CString::new(d).unwrap_or_default());
    rustix::mount::mount(source, target, fstype, flags, data.as_deref())
        .map_err(io::Error::from)
        .map_err(err(format!("mounting {fstype} on {}", target.display())))
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Mounts `fstype` on `target` inside the new root, safely.
fn mount_in(
    root: &Root,
    target: &str,
    fstype: &str,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let rel = RelPath::parse(target.as_bytes()).map_err(io::Error::other)?;
    let fd = root
        .open_mount_target(&rel, false)
        .map_err(err(format!("/{target} in the image")))?;
    mount(fstype, &fd_path(&fd), fstype, flags, data).map_err(err(format!("/{target}")))
}

/// Who owns the container's root, for a user namespace: the user namespace (an fd of
/// `/proc/PID/ns/user`) whose mapping the image is seen through, and the host uid/gid its
/// root is mapped to.
pub struct IdMap<'a> {
    pub userns: &'a OwnedFd,
    pub root_uid: u32,
}

/// Builds the root filesystem and pivots into it. On return, `/` is the container's.
pub fn setup(spec: &RootfsSpec) -> io::Result<()> {
    mount_image(spec, None)?;
    finish(spec)
}

/// The part that needs the host's privileges: the image on a loop device, mounted, and the
/// overlay on top, at `STAGE/root`, in the current mount namespace (made private first).
/// With `idmap`, the image is mounted id-mapped so that its root-owned files belong to the
/// container's root, and the overlay's writable layer is owned by it.
pub fn mount_image(spec: &RootfsSpec, idmap: Option<IdMap<'_>>) -> io::Result<()> {
    log::debug!("making / private in the new mount namespace");
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(io::Error::from)
    .map_err(err("making / private"))?;
    let stage = spec.stage.as_path();
    mount(
        "tmpfs",
        stage,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some("mode=700"),
    )?;
    let merged = stage.join("root");
    std::fs::create_dir(&merged)?;
    if let Some(m) = &idmap {
        // The container's root reaches its root folder through here.
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(m.root_uid)),
            Some(rustix::fs::Gid::from_raw(m.root_uid)),
        );
        rustix::fs::chown(stage, uid, gid).map_err(io::Error::from)?;
    }
    let image = stage.join("image");
    std::fs::create_dir(&image)?;
    let lo = mount_lower(spec, &image)?;
    let base = match &idmap {
        Some(m) => {
            let mapped = stage.join("mapped");
            std::fs::create_dir(&mapped)?;
            attach_copy(&image, &open_path(&mapped)?, 0, Some(m.userns))
                .map_err(err("id-mapping the image"))?;
            mapped
        }
        None => image,
    };
    if spec.writable {
        rustix::mount::mount_bind(&base, &merged).map_err(io::Error::from)?;
    } else {
        let (upper, work) = (stage.join("upper"), stage.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d)?;
            if let Some(m) = &idmap {
                let id = Some(rustix::fs::Uid::from_raw(m.root_uid));
                let gid = Some(rustix::fs::Gid::from_raw(m.root_uid));
                rustix::fs::chown(d.as_path(), id, gid).map_err(io::Error::from)?;
            }
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.display(),
            upper.display(),
            work.display()
        );
        mount("overlay", &merged, "overlay", nodev(spec), Some(&options))?;
    }
    // The mount holds the device now; autoclear frees it when the namespace goes.
    drop(lo);
    Ok(())
}

/// The image, read-only unless `--writable`, at `at`: a folder bound (all its mounts), or
/// the image file on a loop device, mounted. The loop device is returned to be held until
/// the overlay holds the mount.
fn mount_lower(spec: &RootfsSpec, at: &Path) -> io::Result<Option<Loop>> {
    let Some(file) = &spec.image_file else {
        let attrs = nodev_attr(spec) | if spec.writable { 0 } else { ATTR_RDONLY };
        attach_copy(&spec.image, &open_path(at)?, attrs, None)
            .map_err(err(format!("binding {}", spec.image.display())))?;
        log::debug!("bound folder {} on {}", spec.image.display(), at.display());
        return Ok(None);
    };
    let lo = Loop::attach_file(file, !spec.writable)
        .map_err(err(format!("attaching {}", spec.image.display())))?;
    let device = lo.path().to_string_lossy().into_owned();
    let (access, how) = match spec.writable {
        true => (nodev(spec), "read-write"),
        false => (MountFlags::RDONLY | nodev(spec), "read-only"),
    };
    log::debug!("attached {} to {device} ({how})", spec.image.display());
    mount(&device, at, "ext4", access, None)?;
    Ok(Some(lo))
}

/// The rest, inside the container's namespaces: volumes, tmpfs, /proc, /sys, /dev,
/// `pivot_root`, the sysctls and the masks.
pub fn finish(spec: &RootfsSpec) -> io::Result<()> {
    let merged = spec.stage.join("root");
    let root = Root::open(&merged)?;
    for v in &spec.volumes {
        let is_file = !v.host.is_dir();
        let target = match v.through_link {
            true => link_target(&root, &v.target).unwrap_or_else(|| v.target.clone()),
            false => v.target.clone(),
        };
        let fd = root
            .open_mount_target(&target, is_file)
            .map_err(err(format!("volume target /{target}")))?;
        // nodev everywhere the container can write: with MKNOD in its capabilities, a
        // device node it makes must not open (Docker relies on a device cgroup instead).
        let attrs = ATTR_NODEV | if v.read_only { ATTR_RDONLY } else { 0 };
        attach_copy(&v.host, &fd, attrs, None)
            .map_err(err(format!("binding {}", v.host.display())))?;
        log::debug!(
            "bound volume {} on /{}{}",
            v.host.display(),
            v.target,
            if v.read_only { " (read-only)" } else { "" }
        );
    }
    for t in &spec.tmpfs {
        let name = t.to_string();
        mount_in(
            &root,
            &name,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            Some("mode=1777"),
        )?;
    }
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount_in(&root, "proc", "proc", nosuid_nodev_noexec, None)?;
    if spec.net_host {
        // A sysfs for the host's network namespace: the host's, read-only all the way down.
        let fd =
            root.open_mount_target(&RelPath::parse(b"sys").map_err(io::Error::other)?, false)?;
        let attrs = ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC;
        attach_copy(Path::new("/sys"), &fd, attrs, None).map_err(err("binding /sys"))?;
    } else {
        mount_in(
            &root,
            "sys",
            "sysfs",
            nosuid_nodev_noexec | MountFlags::RDONLY,
            None,
        )?;
    }
    mount_in(
        &root,
        "dev",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NOEXEC | nodev(spec),
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(&merged.join("dev"), spec.devices)?;

    log::debug!("pivot_root into {}", merged.display());
    pivot(&merged)?;
    if spec.read_only_root {
        set_read_only(Path::new("/")).map_err(err("making the root read-only"))?;
    }
    for (key, value) in &spec.sysctl {
        crate::sysctl::write(key, value)?;
    }
    mask_proc()
}

/// Where the symlink at `rel` leads, as a path in the root (`..` stops at the root), or
/// `None` when `rel` is no symlink.
fn link_target(root: &Root, rel: &RelPath) -> Option<RelPath> {
    let (parent, leaf) = rel.split_leaf()?;
    let dir = root.open_dir(parent, false).ok()?;
    let link = rustix::fs::readlinkat(&dir, leaf, Vec::new()).ok()?;
    let link = link.as_bytes();
    let mut parts: Vec<&[u8]> = match link.first() {
        Some(b'/') => Vec::new(),
        _ => parent
            .split(|&b| b == b'/')
            .filter(|p| !p.is_empty())
            .collect(),
    };
    for part in link.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    RelPath::parse(&parts.join(&b'/')).ok()
}

/// `nodev`, unless a device cgroup decides which nodes open.
fn nodev(spec: &RootfsSpec) -> MountFlags {
    if spec.devices {
        MountFlags::empty()
    } else {
        MountFlags::NODEV
    }
}

fn nodev_attr(spec: &RootfsSpec) -> u64 {
    if spec.devices { 0 } else { ATTR_NODEV }
}

/// The nodes every program expects, as (name, major, minor).
const NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// The device nodes, ptys and links every program expects. The folder is our fresh tmpfs,
/// so plain paths are safe here.
fn populate_dev(dev: &Path, make: bool) -> io::Result<()> {
    for &(name, major, minor) in NODES {
        let path = dev.join(name);
        if make {
            // The container's own nodes, as runc makes them: what it does to them stays
            // in its /dev.
            use rustix::fs::{FileType, Mode};
            let mode = Mode::from_raw_mode(0o666);
            let device = rustix::fs::makedev(major, minor);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                FileType::CharacterDevice,
                mode,
                device,
            )
            .map_err(io::Error::from)
            .map_err(err(format!("making /dev/{name}")))?;
            rustix::fs::chmod(&path, mode).map_err(io::Error::from)?;
            continue;
        }
        // Without a device cgroup, bound from the host rather than made: /dev is nodev
        // (see the volumes), and a user namespace cannot mknod anyway. Read-only binds:
        // the device still reads and writes, but its inode, the host's, cannot be
        // chmod'ed, chown'ed or touched from here (a plain bind let a container make the
        // host's /dev/null mode 000).
        std::fs::File::create(&path)?;
        attach_copy(
            &Path::new("/dev").join(name),
            &open_path(&path)?,
            ATTR_RDONLY | ATTR_NOSUID | ATTR_NOEXEC,
            None,
        )
        .map_err(err(format!("binding /dev/{name}")))?;
    }
    std::fs::create_dir(dev.join("pts"))?;
    mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    // POSIX message queues of the container's own IPC namespace, as Docker mounts them.
    std::fs::create_dir(dev.join("mqueue"))?;
    mount(
        "mqueue",
        &dev.join("mqueue"),
        "mqueue",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )?;
    std::fs::create_dir(dev.join("shm"))?;
    mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))?;
    }
    Ok(())
}

const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
const ATTR_IDMAP: u64 = 0x0010_0000;

/// Mounts a recursive copy of the mounts at `src` on `dst` with `attrs` set on every one
/// of them (a plain remount would change only the top one), seen through `userns`'s id
/// mapping if given: open_tree + mount_setattr(AT_RECURSIVE) + move_mount (Linux 5.12).
fn attach_copy(src: &Path, dst: &OwnedFd, attrs: u64, userns: Option<&OwnedFd>) -> io::Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )?;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: attrs | if userns.is_some() { ATTR_IDMAP } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr on a detached tree fd with a valid mount_attr of its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let both_fds =
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    rustix::mount::move_mount(tree, c"", dst, c"", both_fds)?;
    Ok(())
}

/// An `O_PATH` handle on a place we trust (our staging tmpfs, the kernel's /proc).
fn open_path(path: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

pub(crate) fn pivot(new_root: &Path) -> io::Result<()> {
    rustix::process::chdir(new_root).map_err(io::Error::from)?;
    // pivot_root(".", "."): the old root ends up stacked under the new one, then detached.
    rustix::process::pivot_root(".", ".")
        .map_err(io::Error::from)
        .map_err(err("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .map_err(io::Error::from)
        .map_err(err("detaching the old root"))?;
    rustix::process::chdir("/").map_err(io::Error::from)?;
    Ok(())
}

/// runc's default masked and read-only paths.
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Masks and read-only paths; a path the kernel has but we fail to cover is an error.
fn mask_proc() -> io::Result<()> {
    mask_paths(MASKED)?;
    read_only_paths(READ_ONLY)
}

/// Covers each path that exists: a folder with an empty read-only tmpfs, anything else
/// with `/dev/null`.
pub(crate) fn mask_paths<S: AsRef<str>>(paths: &[S]) -> io::Result<()> {
    for path in paths {
        let path = path.as_ref();
        let p = Path::new(path);
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        if meta.is_dir() {
            mount("tmpfs", p, "tmpfs", MountFlags::RDONLY, Some("size=0"))?;
        } else {
            rustix::mount::mount_bind("/dev/null", p)
                .map_err(io::Error::from)
                .map_err(err(format!("masking {path}")))?;
        }
    }
    Ok(())
}

/// Makes the mount at `path` read-only, its other flags and the mounts below it as they
/// are (a remount would have to restate the flags a user namespace locks).
fn set_read_only(path: &Path) -> io::Result<()> {
    let at =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let attr: [u64; 4] = [ATTR_RDONLY, 0, 0, 0];
    // SAFETY: mount_setattr on a path with a valid mount_attr (set, clr, propagation,
    // userns_fd) of its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            at.as_ptr(),
            0,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes each path that exists a read-only copy of itself.
pub(crate) fn read_only_paths<S: AsRef<str>>(paths: &[S]) -> io::Result<()> {
    for path in paths {
        let path = path.as_ref();
        let p = Path::new(path);
        if p.exists() {
            let attrs = ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC;
            attach_copy(p, &open_path(p)?, attrs, None)
                .map_err(err(format!("making {path} read-only")))?;
        }
    }
    Ok(())
}

/// Brings the loopback interface up in a new network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a socket, an ifreq on the stack and two ioctls on it.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        let e = io::Error::last_os_error();
        libc::close(sock);
        if r < 0 { Err(e) } else { Ok(()) }
    }
}
