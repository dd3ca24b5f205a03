//! `-t`: a pseudo-terminal for the command, relayed to ours in raw mode.

//! The pty comes from the container's own devpts instance (so `tty` and `ttyname` work
//! inside), opened by the command's process before exec; its master is passed to us over
//! a socket pair with SCM_RIGHTS, as runc's console socket does.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A connected pair: ours receives the master, the container's sends it.
pub fn console_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair with a valid array; the fds are then owned.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the container, before exec: opens a pty of the container's devpts, sends the master
/// through `socket`, and makes the slave the controlling terminal and stdio.
pub fn attach_console(socket: RawFd) -> io::Result<()> {
    /// An fd just returned by open(2), owned from here (closed on drop).
    fn opened(fd: RawFd) -> io::Result<OwnedFd> {
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: open(2) of a C string.
    let master = opened(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) })?;
    let mut name = [0 as libc::c_char; 64];
    // SAFETY: unlockpt and ptsname_r on our master, into a buffer of its stated size.
    unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0
            || libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: open(2) of the NUL-terminated name ptsname_r wrote.
    let slave = opened(unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) })?;
    send_fd(socket, master.as_raw_fd())?;
    drop(master);
    // SAFETY: setsid, TIOCSCTTY and dup2 on our own fds; the session leader (already one,
    // as the container's init, when there is no init of ours) takes the terminal.
    unsafe {
        libc::setsid();
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..3 {
            libc::dup2(slave.as_raw_fd(), fd);
        }
    }
    // A slave that landed on 0-2 stays open there as the copy dup2 left in place.
    if slave.as_raw_fd() <= 2 {
        std::mem::forget(slave);
    }
    Ok(())
}

/// A message header carrying one byte and room for one fd.
struct FdMessage {
    byte: [u8; 1],
    iov: libc::iovec,
    control: Vec<u8>,
    msg: libc::msghdr,
}

impl FdMessage {
    fn new() -> Box<FdMessage> {
        // SAFETY: CMSG_SPACE is a pure size computation; msghdr is plain data.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        let mut m = Box::new(FdMessage {
            byte: [0],
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 1,
            },
            control: vec![0u8; space],
            msg: unsafe { std::mem::zeroed() },
        });
        m.iov.iov_base = m.byte.as_mut_ptr().cast();
        m.msg.msg_iov = &mut m.iov;
        m.msg.msg_iovlen = 1;
        m.msg.msg_control = m.control.as_mut_ptr().cast();
        m.msg.msg_controllen = space;
        m
    }
}

fn send_fd(socket: RawFd, fd: RawFd) -> io::Result<()> {
    let m = FdMessage::new();
    // SAFETY: the control buffer has room for one SCM_RIGHTS header and fd.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&m.msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
        if libc::sendmsg(socket, &m.msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for the master the container sends; `None` if it ended without sending one.
pub fn receive_master(socket: &OwnedFd) -> Option<Pty> {
    let mut m = FdMessage::new();
    // SAFETY: recvmsg into the message's buffers; a received fd is then owned.
    unsafe {
        if libc::recvmsg(socket.as_raw_fd(), &mut m.msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&m.msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        let pty = Pty {
            master: OwnedFd::from_raw_fd(fd),
        };
        pty.copy_window_size();
        Some(pty)
    }
}

pub struct Pty {
    pub master: OwnedFd,
}

impl Pty {
    /// Gives the pty our terminal's size.
    pub fn copy_window_size(&self) {
        // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a winsize on the stack.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
            }
        }
    }

    /// Puts our terminal in raw mode and copies bytes both ways until the command's side
    /// closes. The returned guard restores the terminal.
    ///
    /// When our stdin is not a terminal (`echo x | rootpack run -t …`), the pty does not
    /// echo the input back (the terminal it stands for never typed it), and the end of
    /// the input reaches the command as the terminal's end-of-file character, as if
    /// typed: without it a command reading the terminal would wait forever.
    pub fn relay(&self) -> Relay {
        let raw = RawMode::enter();
        // SAFETY: isatty on our stdin.
        let piped = unsafe { libc::isatty(0) } == 0;
        let eof = if piped { self.stop_echo() } else { None };
        // One duplicate of the master per thread, closed when the thread ends. Without
        // them (no fd left) or without threads the command runs unrelayed.
        let (Ok(to_pty), Ok(from_pty)) = (self.master.try_clone(), self.master.try_clone()) else {
            return Relay {
                _raw: raw,
                output: None,
            };
        };
        // Input may block forever on our stdin: that thread is left to die with us.
        let _ = std::thread::Builder::new().spawn(move || {
            let last = copy(0, to_pty.as_raw_fd());
            if let Some(eof) = eof {
                // At the start of a line one EOF character ends the input; after a
                // partial line the first one only hands that line over.
                let n = if matches!(last, None | Some(b'\n')) {
                    1
                } else {
                    2
                };
                for _ in 0..n {
                    let _ = rustix::io::write(&to_pty, &[eof]);
                }
            }
        });
        let output = std::thread::Builder::new()
            .spawn(move || {
                let _ = copy(from_pty.as_raw_fd(), 1);
            })
            .ok();
        Relay { _raw: raw, output }
    }
}

impl Pty {
    /// Turns the pty's echo off and returns its end-of-file character (None if the pty's
    /// settings cannot be read).
    fn stop_echo(&self) -> Option<u8> {
        // SAFETY: tcgetattr/tcsetattr on the master with a termios on the stack.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(self.master.as_raw_fd(), &mut t) != 0 {
                return None;
            }
            t.c_lflag &= !(libc::ECHO | libc::ECHONL);
            libc::tcsetattr(self.master.as_raw_fd(), libc::TCSANOW, &t);
            Some(t.c_cc[libc::VEOF])
        }
    }
}

/// The running relay; [`Relay::finish`] waits until the container's output is drained.
pub struct Relay {
    _raw: RawMode,
    output: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Once the container is gone its slave side is closed and reading the master ends
    /// (EIO), so this returns as soon as the last output is written.
    pub fn finish(mut self) {
        if let Some(t) = self.output.take() {
            let _ = t.join();
        }
    }
}

/// Copies until `from` ends or `to` fails; returns the last byte copied.
fn copy(from: i32, to: i32) -> Option<u8> {
    let mut buf = [0u8; 8192];
    let mut last = None;
    loop {
        // SAFETY: read/write on fds owned by this thread.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return last;
        }
        last = Some(buf[n as usize - 1]);
        let mut done = 0;
        while done < n as usize {
            // SAFETY: writing the bytes just read.
            let w = unsafe { libc::write(to, buf[done..].as_ptr().cast(), n as usize - done) };
            if w <= 0 {
                return last;
            }
            done += w as usize;
        }
    }
}

/// Our terminal in raw mode while it lives.
pub struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios on the stack.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restoring the saved attributes.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}
