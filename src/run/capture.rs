//! Waiting for a container whose output rootpack takes (a build step), with a deadline:
//! one thread, one `poll` over a signalfd (the blocked signals: the init's end, and the
//! ones to pass on) and the output pipe. No second thread: the container is cloned by a
//! raw `clone`, which is only sound in a single-threaded process.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Signals that end the caller's work (Ctrl-C, `kill`): the container is killed at once,
/// and the signal is left pending for the caller's own handler once it unblocks them.
const ENDING: &[libc::c_int] = &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Waits for the container's init `pid`, passing what it writes on `out` to `output` and
/// killing it when `timeout` passes. Returns its wait status and whether it timed out.
pub fn wait(
    pid: i32,
    set: &libc::sigset_t,
    out: &OwnedFd,
    timeout: Option<Duration>,
    output: &mut dyn FnMut(&[u8]),
) -> io::Result<(libc::c_int, bool)> {
    // SAFETY: a signalfd over signals that are blocked in this thread.
    let sfd = unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if sfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sfd = unsafe { OwnedFd::from_raw_fd(sfd) };
    set_nonblocking(out)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let mut out_open = true;
    let mut ending = None;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let wait_ms = match deadline {
            Some(d) if !timed_out => {
                let left = d.saturating_duration_since(Instant::now());
                left.as_millis().min(i32::MAX as u128) as i32
            }
            _ => -1,
        };
        if wait_ms == 0 && !timed_out {
            // The PID namespace ends with its init: every process of the step dies.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            timed_out = true;
            continue;
        }
        let mut fds = [
            libc::pollfd {
                fd: sfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if out_open { out.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            kill_and_reap(pid);
            return Err(e);
        }
        if fds[1].revents != 0 {
            out_open = drain(out, &mut buf, output);
        }
        if fds[0].revents & libc::POLLIN != 0
            && let Some(status) = take_signals(pid, &sfd, &mut ending)
        {
            // Every process of the namespace is gone with the init, and with them every
            // writer of the pipe: what is left in it is all there is.
            while out_open && drain(out, &mut buf, output) {}
            if let Some(sig) = ending {
                // SAFETY: raising a blocked signal leaves it pending for the caller.
                unsafe { libc::raise(sig) };
            }
            return Ok((status, timed_out));
        }
    }
}

/// Reads what is in the pipe now; false at its end (or on an error).
fn drain(out: &OwnedFd, buf: &mut [u8], output: &mut dyn FnMut(&[u8])) -> bool {
    loop {
        match rustix::io::read(out, &mut *buf) {
            Ok(0) => return false,
            Ok(n) => output(&buf[..n]),
            Err(rustix::io::Errno::AGAIN) => return true,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Handles the pending signals: passes each on to the init, or kills it for an ending
/// one; returns the init's status once it has exited.
fn take_signals(pid: i32, sfd: &OwnedFd, ending: &mut Option<libc::c_int>) -> Option<libc::c_int> {
    let mut exited = None;
    loop {
        // SAFETY: reading whole signalfd_siginfo records into a zeroed one.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: the buffer is one record long.
        let n = unsafe {
            libc::read(
                sfd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            break;
        }
        let sig = info.ssi_signo as libc::c_int;
        if sig == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: reaping our own child without blocking.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                exited = Some(status);
            }
        } else if ENDING.contains(&sig) {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            *ending = Some(sig);
        } else {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
    // A SIGCHLD may have been merged with an earlier one already taken.
    if exited.is_none() {
        let mut status = 0;
        // SAFETY: as above.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            exited = Some(status);
        }
    }
    exited
}

fn kill_and_reap(pid: i32) {
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}
