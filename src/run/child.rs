//! The cloned child, which becomes the container: its stdio, a new session, its root
//! built (or, in a user namespace, finished over what rootpack mounted), the cgroup
//! namespace, hostname, keyring, lo and rlimits, then PID 1 or the command itself.

use std::io;
use std::os::unix::io::{AsRawFd, OwnedFd};

use super::init::{self, ProcessSpec};
use super::rootfs::{self, RootfsSpec};
use super::{RunOptions, cgroup, rlimit, security, stdio};

/// What the cloned child sets up.
pub(super) struct Child<'a> {
    pub(super) rootfs: &'a RootfsSpec,
    pub(super) spec: &'a ProcessSpec,
    pub(super) hostname: &'a str,
    pub(super) layout: &'a cgroup::Layout,
    pub(super) opts: &'a RunOptions,
    pub(super) stdio: &'a stdio::Stdio,
    /// The sealed init (`None` with `--no-init`).
    pub(super) init_exe: Option<OwnedFd>,
    /// Written to once the root is built, before the device cgroup closes.
    pub(super) ready: OwnedFd,
}

/// The cloned child: becomes the container. Never returns.
pub(super) fn child_main(
    go: OwnedFd,
    err: OwnedFd,
    child: Child<'_>,
    old_mask: &libc::sigset_t,
) -> ! {
    let Child {
        rootfs,
        spec,
        hostname,
        layout,
        opts,
        stdio,
        init_exe,
        ready,
    } = child;
    let err_fd = err.as_raw_fd();
    std::mem::forget(err);
    if stdio.install().is_err() {
        init::fail(
            err_fd,
            125,
            "setting up the container: its stdin, stdout and stderr",
        );
    }
    // Before any path from the user or the manifest is resolved: no fd of the caller's
    // (a leaked host folder, CVE-2024-21626) survives into the container.
    let mut keep = vec![go.as_raw_fd(), err_fd];
    keep.extend(spec.console);
    keep.extend(init_exe.as_ref().map(|e| e.as_raw_fd()));
    keep.push(ready.as_raw_fd());
    keep.extend(rootfs.image_file.as_ref().map(|f| f.as_raw_fd()));
    security::close_fds_except(&keep);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> io::Result<()> {
        security::die_with_parent();
        // A new session, without a controlling terminal: `/dev/tty` opens nothing, and a
        // terminal on its stdin is not its own to type into (TIOCSTI needs the caller's
        // controlling terminal, CVE-2017-5226). Ctrl-C reaches rootpack, which forwards
        // it; `-t` gives the command a terminal of its own.
        rustix::process::setsid().map_err(io::Error::from)?;
        // The filesystem is built while rootpack moves us into the cgroup (a v1 move
        // waits for an RCU grace period); nothing runs in the container before both. In a
        // user namespace rootpack mounts the image for us first.
        if !opts.userns && !opts.rootless {
            rootfs::setup(rootfs)?;
            rustix::io::write(&ready, b"1")?;
        }
        let mut byte = [0u8; 1];
        if rustix::io::read(&go, &mut byte)? == 0 {
            // SAFETY: the parent is gone; leave quietly.
            unsafe { libc::_exit(125) };
        }
        drop(go);
        if opts.rootless {
            // Mapped now: we are the namespace's root, which owns every mount made here.
            rootfs::setup(rootfs)?;
        } else if opts.userns {
            // Cloned with the host's root ids, which the new namespace does not map: become
            // its root (host uid USERNS_BASE) before touching any file.
            security::switch_ids(0, 0)?;
            rootfs::finish(rootfs)?;
        }
        finish_process(opts, layout, hostname)
    }));
    // `ready` closes only now, or with our exit after the message: rootpack, seeing it
    // closed, must find the message already written.
    match result {
        Ok(Ok(())) => drop(ready),
        Ok(Err(e)) => init::fail(err_fd, 125, &format!("setting up the container: {e}")),
        Err(_) => init::fail(err_fd, 125, "setting up the container: internal error"),
    }
    match init_exe {
        Some(exe) => init::run_init(spec, err_fd, old_mask, &exe),
        None => init::exec_command(spec, err_fd, old_mask, None),
    }
}

/// What the container's processes share besides the root: a cgroup namespace (and its
/// view of the groups), the hostname, a session keyring of its own, `lo` up in its own
/// network, and the resource limits.
fn finish_process(opts: &RunOptions, layout: &cgroup::Layout, hostname: &str) -> io::Result<()> {
    // SAFETY: a new cgroup namespace changes no memory this process shares.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
        .map_err(io::Error::from)?;
    cgroup::mount_view(layout)?;
    rustix::system::sethostname(hostname.as_bytes()).map_err(io::Error::from)?;
    security::join_new_session_keyring()
        .map_err(|e| io::Error::new(e.kind(), format!("joining a session keyring: {e}")))?;
    if opts.network.new_namespace() {
        rootfs::loopback_up()
            .map_err(|e| io::Error::new(e.kind(), format!("bringing lo up: {e}")))?;
    }
    rlimit::apply(&opts.ulimits)
}
