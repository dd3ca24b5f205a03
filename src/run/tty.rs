//! `-t`: a pseudo-terminal for the command, relayed to ours in raw mode; and handing the
//! terminal back after a command that took the foreground.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};

pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    pub fn open() -> io::Result<Pty> {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty with valid out-pointers; the fds are then owned.
        let r = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fds from openpty.
        let pty = unsafe {
            Pty {
                master: OwnedFd::from_raw_fd(master),
                slave: OwnedFd::from_raw_fd(slave),
            }
        };
        pty.copy_window_size();
        Ok(pty)
    }

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
    pub fn relay(&self) -> RawMode {
        let raw = RawMode::enter();
        let master = self.master.as_raw_fd();
        // SAFETY: duplicating fds the threads will own.
        let (to_pty, from_pty) = unsafe { (libc::dup(master), libc::dup(master)) };
        std::thread::spawn(move || copy(0, to_pty));
        std::thread::spawn(move || copy(from_pty, 1));
        raw
    }
}

fn copy(from: i32, to: i32) {
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: read/write on fds owned by this thread.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut done = 0;
        while done < n as usize {
            // SAFETY: writing the bytes just read.
            let w = unsafe { libc::write(to, buf[done..].as_ptr().cast(), n as usize - done) };
            if w <= 0 {
                return;
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

/// After a command that made itself the terminal's foreground group, makes ours the
/// foreground again (with SIGTTOU ignored, as a shell does).
pub fn take_terminal_back() {
    // SAFETY: signal disposition and tcsetpgrp on stdin.
    unsafe {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, libc::getpgrp());
        libc::signal(libc::SIGTTOU, old);
    }
}
