//! Between the clone and the container's first instruction, on rootpack's side: the
//! child's ids mapped (and in a user namespace its image mounted for it), its move into
//! the cgroup, and, once its root is built, the device allow list.

use std::io;
use std::os::unix::io::{AsRawFd, OwnedFd};

use super::rootfs::{self, RootfsSpec};
use super::{RunError, RunOptions, USERNS_BASE, USERNS_SIZE, cgroup};

/// What must happen between the clone and the container's first instruction, while the
/// child builds its root: its ids mapped (and, in a user namespace, its image mounted for
/// it), its move into the cgroup, and once its root is built (its loop device and mounts
/// opened) the device allow list. If the child already failed, its own message says why.
pub(super) fn hand_over(
    opts: &RunOptions,
    pid: i32,
    (uid, gid): (u32, u32),
    rootfs: &RootfsSpec,
    cg: &cgroup::Cgroup,
    ready: &OwnedFd,
) -> Result<(), RunError> {
    if opts.rootless {
        map_caller_as_root(pid, uid, gid).map_err(|e| RunError::Setup(e.to_string()))?;
    } else if opts.userns {
        prepare_userns(pid, rootfs).map_err(|e| RunError::Setup(e.to_string()))?;
    }
    cg.add(pid as u32).map_err(RunError::Cgroup)?;
    if !(opts.userns || opts.rootless || wait_ready(ready)?) {
        return Err(RunError::Setup("setting up the container".into()));
    }
    cg.limit_devices()
        .map_err(|e| RunError::Setup(format!("setting the device cgroup: {e}")))
}

/// Waits for the child to say its root is built (false: it failed first). Our signals
/// are blocked meanwhile, so a root that never gets built (a hung mount) must not hold
/// us: a SIGINT, SIGTERM or SIGHUP that arrives is left pending for the caller, and the
/// wait ends.
pub(super) fn wait_ready(ready: &OwnedFd) -> Result<bool, RunError> {
    let mut pfd = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
            let mut byte = [0u8; 1];
            return Ok(rustix::io::read(ready, &mut byte) == Ok(1));
        }
        // SAFETY: sigpending into a local set, which sigismember then reads.
        let stopping = unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
                .iter()
                .any(|&sig| libc::sigismember(&pending, sig) == 1)
        };
        if stopping {
            return Err(RunError::Start(io::Error::from(io::ErrorKind::Interrupted)));
        }
    }
}

/// For a child in a user namespace of its own (a rootless start): the caller's uid and
/// gid become its root, the only ids it has. Unprivileged, `setgroups` must be refused
/// first.
pub(super) fn map_caller_as_root(pid: i32, uid: u32, gid: u32) -> io::Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {file}: {e}")))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// For a child in a new user namespace: maps its ids, then mounts the image (which needs
/// the host's privileges) inside its mount namespace, id-mapped so that the image's root
/// is the container's root, and comes back to ours.
pub(super) fn prepare_userns(pid: i32, spec: &RootfsSpec) -> io::Result<()> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    use std::os::unix::io::AsFd;
    let map = format!("0 {USERNS_BASE} {USERNS_SIZE}\n");
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), &map)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {file}: {e}")))?;
    }
    let ours = std::fs::File::open("/proc/self/ns/mnt")?;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let userns = OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/user"))?);
    let cwd = std::env::current_dir()?;
    move_into_link_name_space(theirs.as_fd(), Some(LinkNameSpaceType::Mount))?;
    let mounted = rootfs::mount_image(
        spec,
        Some(rootfs::IdMap {
            userns: &userns,
            root_uid: USERNS_BASE,
        }),
    );
    if let Err(e) = move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::Mount)) {
        // Stuck in the container's mount namespace: nothing sane can follow.
        eprintln!("rootpack: cannot return to our mount namespace: {e}");
        std::process::abort();
    }
    std::env::set_current_dir(cwd)?;
    mounted.map_err(|e| io::Error::new(e.kind(), format!("setting up the container: {e}")))
}
