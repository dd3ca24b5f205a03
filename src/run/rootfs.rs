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
}

#[derive(Debug, Clone)]
pub struct RootfsSpec {
    pub image: PathBuf,
    pub writable: bool,
    pub volumes: Vec<Volume>,
    pub tmpfs: Vec<RelPath>,
    pub net_host: bool,
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
    finish(spec, false)
}

/// The part that needs the host's privileges: the image on a loop device, mounted, and the
/// overlay on top, at `STAGE/root`, in the current mount namespace (made private first).
/// With `idmap`, the image is mounted id-mapped so that its root-owned files belong to the
/// container's root, and the overlay's writable layer is owned by it.
pub fn mount_image(spec: &RootfsSpec, idmap: Option<IdMap<'_>>) -> io::Result<()> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(io::Error::from)
    .map_err(err("making / private"))?;
    let stage = Path::new(STAGE);
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
    let lo = Loop::attach(&spec.image, !spec.writable)
        .map_err(err(format!("attaching {}", spec.image.display())))?;
    let device = lo.path().to_string_lossy().into_owned();
    let image = stage.join("image");
    std::fs::create_dir(&image)?;
    let access = if spec.writable {
        MountFlags::NODEV
    } else {
        MountFlags::RDONLY | MountFlags::NODEV
    };
    mount(&device, &image, "ext4", access, None)?;
    let base = match &idmap {
        Some(m) => {
            let mapped = stage.join("mapped");
            std::fs::create_dir(&mapped)?;
            idmapped_clone(&image, &mapped, m.userns).map_err(err("id-mapping the image"))?;
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
        mount(
            "overlay",
            &merged,
            "overlay",
            MountFlags::NODEV,
            Some(&options),
        )?;
    }
    // The mount holds the device now; autoclear frees it when the namespace goes.
    drop(lo);
    Ok(())
}

/// The rest, inside the container's namespaces: volumes, tmpfs, /proc, /sys, /dev,
/// `pivot_root` and the masks. In a user namespace device nodes cannot be made, so the
/// host's are bound instead.
pub fn finish(spec: &RootfsSpec, in_userns: bool) -> io::Result<()> {
    let merged = Path::new(STAGE).join("root");
    let root = Root::open(&merged)?;
    for v in &spec.volumes {
        let is_file = !v.host.is_dir();
        let fd = root
            .open_mount_target(&v.target, is_file)
            .map_err(err(format!("volume target /{}", v.target)))?;
        rustix::mount::mount_bind_recursive(&v.host, fd_path(&fd))
            .map_err(io::Error::from)
            .map_err(err(format!("binding {}", v.host.display())))?;
        if v.read_only {
            // The remount must name the new mount: open the target again.
            let fd = root.open_mount_target(&v.target, is_file)?;
            rustix::mount::mount_remount(fd_path(&fd), MountFlags::BIND | MountFlags::RDONLY, c"")
                .map_err(io::Error::from)
                .map_err(err(format!("making /{} read-only", v.target)))?;
        }
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
        // A sysfs for the host's network namespace: bind the host's, read-only.
        let fd =
            root.open_mount_target(&RelPath::parse(b"sys").map_err(io::Error::other)?, false)?;
        rustix::mount::mount_bind_recursive("/sys", fd_path(&fd)).map_err(io::Error::from)?;
        let fd =
            root.open_mount_target(&RelPath::parse(b"sys").map_err(io::Error::other)?, false)?;
        rustix::mount::mount_remount(fd_path(&fd), MountFlags::BIND | MountFlags::RDONLY, c"")
            .map_err(io::Error::from)?;
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
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(&merged.join("dev"), in_userns)?;

    pivot(&merged)?;
    mask_proc();
    Ok(())
}

/// The device nodes, ptys and links every program expects. The folder is our fresh tmpfs,
/// so plain paths are safe here.
fn populate_dev(dev: &Path, bind_host_nodes: bool) -> io::Result<()> {
    use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        if bind_host_nodes {
            std::fs::File::create(&path)?;
            rustix::mount::mount_bind(Path::new("/dev").join(name).as_path(), &path)
                .map_err(io::Error::from)
                .map_err(err(format!("binding /dev/{name}")))?;
            continue;
        }
        mknodat(
            CWD,
            &path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            makedev(major, minor),
        )
        .map_err(io::Error::from)
        .map_err(err(format!("creating /dev/{name}")))?;
        // The umask applied to mknod.
        rustix::fs::chmod(&path, Mode::from_raw_mode(0o666)).map_err(io::Error::from)?;
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

/// Mounts a copy of the mount at `src` on `dst`, seen through `userns`'s id mapping
/// (open_tree + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount; Linux 5.12, ext4 and tmpfs).
fn idmapped_clone(src: &Path, dst: &Path, userns: &OwnedFd) -> io::Result<()> {
    use rustix::mount::{MoveMountFlags, OpenTreeFlags};
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        src,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on a detached tree fd with a valid mount_attr of its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    rustix::mount::move_mount(
        tree,
        c"",
        rustix::fs::CWD,
        dst,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

fn pivot(new_root: &Path) -> io::Result<()> {
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

fn mask_proc() {
    // Paths a kernel does not have are skipped; failures leave the path visible, which the
    // tests catch for the ones that matter.
    for path in MASKED {
        let p = Path::new(path);
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            continue;
        };
        let _ = if meta.is_dir() {
            mount("tmpfs", p, "tmpfs", MountFlags::RDONLY, Some("size=0"))
        } else {
            rustix::mount::mount_bind("/dev/null", p).map_err(io::Error::from)
        };
    }
    for path in READ_ONLY {
        let p = Path::new(path);
        if p.exists() && rustix::mount::mount_bind_recursive(p, p).is_ok() {
            let flags = MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC;
            let _ = rustix::mount::mount_remount(p, flags, c"");
        }
    }
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
