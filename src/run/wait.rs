//! Waiting for the container's init, on rootpack's side: taking a step's output, with a
//! timeout, or forwarding signals and relaying a pty.

use std::os::unix::io::OwnedFd;

use super::{OutputSink, RunError, capture, pipe, tty};

/// Waits for the container's init: taking a step's output, with a timeout, or relaying
/// its pty; returns the wait status and whether the timeout killed it.
pub(super) fn wait_for(
    pid: i32,
    set: &libc::sigset_t,
    timeout: Option<std::time::Duration>,
    captured: Option<(OwnedFd, OutputSink<'_>)>,
    console: Option<&OwnedFd>,
) -> Result<(libc::c_int, bool), RunError> {
    if let Some((out_r, output)) = captured {
        return capture::wait(pid, set, &out_r, timeout, output).map_err(RunError::Start);
    }
    if timeout.is_some() {
        return capture::wait(pid, set, &io_null()?, timeout, &mut |_| {}).map_err(RunError::Start);
    }
    let pty = console.and_then(tty::receive_master);
    let relay = pty.as_ref().map(|p| p.relay());
    let status = wait_forwarding(pid, set, pty.as_ref());
    if let Some(relay) = relay {
        relay.finish();
    }
    Ok((status, false))
}

/// A pipe's read end that no one writes to, for a wait with a timeout but no output.
pub(super) fn io_null() -> Result<OwnedFd, RunError> {
    let (r, _w) = pipe().map_err(RunError::Start)?;
    Ok(r)
}

/// Waits for the container's init, passing on the signals we receive.
pub(crate) fn wait_forwarding(
    pid: i32,
    set: &libc::sigset_t,
    pty: Option<&tty::Pty>,
) -> libc::c_int {
    loop {
        // SAFETY: sigwaitinfo on a blocked set.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(set, &mut info)
        };
        if sig == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: reaping our own child without blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return status;
            }
        } else if sig > 0 {
            if sig == libc::SIGWINCH
                && let Some(p) = pty
            {
                p.copy_window_size();
            }
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
}
