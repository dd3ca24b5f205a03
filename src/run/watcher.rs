//! The watcher: a process outside the container that outlives a killed rootpack. It
//! removes the container's cgroup and its network once rootpack is done or gone, and it
//! runs the network's CNI ADD for rootpack, so that an ADD interrupted by rootpack's
//! death is finished, then undone, rather than half-made and forgotten (a plugin left
//! running would add its rules after any cleanup). ADD runs while the container builds
//! its root; DEL runs after rootpack has returned, which does not wait for it.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use super::{cgroup, pipe};
use crate::net::{self, Addresses};

/// Rootpack's ends of the pipes to the watcher; dropping it says rootpack is done.
pub(super) struct Watcher {
    _done: OwnedFd,
    /// A pid to connect goes in, one reply line comes back.
    request: Option<(OwnedFd, OwnedFd)>,
}

/// The watcher's fds: the done pipe, the requests, the replies.
const DONE: i32 = 3;
const REQUEST: i32 = 4;
const REPLY: i32 = 5;

/// Starts the watcher for the cgroup `dirs` and the prepared network, if there are any.
pub(super) fn spawn(
    dirs: &[PathBuf],
    network: Option<&net::Prepared>,
) -> io::Result<Option<Watcher>> {
    let job = network.and_then(net::Prepared::cni_job);
    let net_dir = network.map(|n| n.dir().to_path_buf());
    if dirs.is_empty() && job.is_none() {
        return Ok(None);
    }
    let (done_r, done_w) = pipe()?;
    let (req_r, req_w) = pipe()?;
    let (reply_r, reply_w) = pipe()?;
    // SAFETY: fork in a single-threaded process; the child runs plugins, removes folders
    // and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: detaching from our parent's stdio and every other fd (a console socket,
        // a pipe someone waits on for EOF, the attachment's lock), keeping our pipes'
        // ends as fds 3-5. A reply nobody reads must not kill us.
        unsafe {
            libc::setsid();
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            for (fd, to) in [(&done_r, DONE), (&req_r, REQUEST), (&reply_w, REPLY)] {
                libc::dup2(fd.as_raw_fd(), to);
            }
            libc::syscall(libc::SYS_close_range, 6u32, u32::MAX, 0u32);
        }
        for fd in [done_r, done_w, req_r, req_w, reply_r, reply_w] {
            std::mem::forget(fd);
        }
        watch(dirs, job, net_dir);
    }
    // The watcher is not our concern any more: let init reap it.
    Ok(Some(Watcher {
        _done: done_w,
        request: Some((req_w, reply_r)),
    }))
}

impl Watcher {
    /// Has the watcher connect the container `pid` (see [`net::CniJob::add`]) while
    /// rootpack goes on; [`Watcher::reply`] says how it went.
    pub(super) fn request(&self, pid: i32) -> Result<(), String> {
        let Some((req, _)) = &self.request else {
            return Err("no network to attach".into());
        };
        rustix::io::write(req, &pid.to_ne_bytes())
            .map(drop)
            .map_err(|e| format!("asking the watcher to attach the network: {e}"))
    }

    /// The addresses of the network [`Watcher::request`] asked for, once attached.
    pub(super) fn reply(&self) -> Result<Addresses, String> {
        let Some((_, reply)) = &self.request else {
            return Err("no network to attach".into());
        };
        let mut line = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(reply, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    line.extend_from_slice(&buf[..n]);
                    if line.ends_with(b"\n") {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("the watcher's reply: {e}")),
            }
        }
        parse_reply(&String::from_utf8_lossy(&line))
    }
}

fn parse_reply(line: &str) -> Result<Addresses, String> {
    let line = line.trim_end();
    if let Some(message) = line.strip_prefix("err ") {
        return Err(message.to_string());
    }
    let mut words = line
        .strip_prefix("ok ")
        .ok_or("the watcher ended")?
        .split(' ');
    let mut ip = || words.next().and_then(|w| w.parse().ok());
    Ok((ip(), ip()))
}

fn format_reply(reply: &Result<Addresses, String>) -> String {
    let show = |ip: Option<std::net::IpAddr>| ip.map_or("-".to_string(), |ip| ip.to_string());
    match reply {
        Ok((address, host)) => format!("ok {} {}\n", show(*address), show(*host)),
        Err(e) => format!("err {}\n", e.replace('\n', " ")),
    }
}

/// The watcher's life: ADD when asked, then, once rootpack is done or dead, the
/// container's leftovers killed, its cgroups and its network removed.
fn watch(dirs: &[PathBuf], job: Option<net::CniJob>, net_dir: Option<PathBuf>) -> ! {
    // SAFETY: the fds were set up by `spawn`.
    let (done, request, reply) = unsafe {
        (
            OwnedFd::from_raw_fd(DONE),
            OwnedFd::from_raw_fd(REQUEST),
            OwnedFd::from_raw_fd(REPLY),
        )
    };
    // Off the container's start path: what earlier killed runs left beside ours.
    let mut stale_left = true;
    if job.is_none() {
        cgroup::remove_stale(dirs);
        stale_left = false;
    }
    let mut asking = job.is_some();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: done.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: request.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let n = if asking { 2 } else { 1 };
        // SAFETY: poll on valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), n, -1) } < 0 {
            continue;
        }
        if asking && fds[1].revents != 0 {
            let mut pid = [0u8; 4];
            match rustix::io::read(&request, &mut pid) {
                Ok(4) => {
                    let added = job
                        .as_ref()
                        .map_or(Err("no network".into()), |j| j.add(i32::from_ne_bytes(pid)));
                    let _ = rustix::io::write(&reply, format_reply(&added).as_bytes());
                }
                _ => asking = false,
            }
            if stale_left {
                cgroup::remove_stale(dirs);
                net::sweep();
                stale_left = false;
            }
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    // rootpack is gone, so must the container be, whatever survived it.
    cgroup::kill_tasks(dirs);
    // The network first: DEL needs no empty cgroup, and the next start may want the port.
    if let Some(dir) = net_dir {
        net::teardown_orphan(&dir);
    }
    // Patient: a container killed with rootpack may take a while to be reaped.
    let _ = cgroup::remove_dirs(dirs, std::time::Duration::from_secs(60));
    // SAFETY: leaving without running the parent's destructors.
    unsafe { libc::_exit(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip() {
        let ok: Result<Addresses, String> = Ok((Some("10.99.0.2".parse().unwrap()), None));
        assert_eq!(parse_reply(&format_reply(&ok)), ok);
        let err: Result<Addresses, String> = Err("CNI plugin bridge:\nno".into());
        assert_eq!(
            parse_reply(&format_reply(&err)),
            Err("CNI plugin bridge: no".into())
        );
        assert_eq!(parse_reply(""), Err("the watcher ended".into()));
    }
}
