//! The container's standard input, output and error.
//!
//! # Security
//!
//! Through `/proc/self/fd/N` a process reopens the very inode an fd of its names. A
//! container handed the caller's `>> app.log` could chmod it set-uid, chown it, or read
//! back what it held before; handed the host's `/dev/null`, change its mode for the whole
//! host; handed the caller's terminal, make `/dev/pts/N` readable by every user (and read
//! what is typed there next). So the caller's fds reach the container only when reopening
//! them gives nothing: anonymous pipes and sockets, whose inodes live in no folder.
//! Anything else (a terminal, a file, a device, a named FIFO) is relayed through a pipe by
//! a thread of ours, as Docker's shim gives containers pipes and copies; `-t` gives the
//! command a terminal of its own instead.
//!
//! A terminal on stdin is read only while rootpack is the terminal's foreground job (a
//! background `rootpack run … &` gives the container an empty stdin rather than being
//! stopped by SIGTTIN). A regular file on stdin is left where the container stopped
//! reading it, so `while read x; do rootpack run …; done < list` goes on with the next
//! line, as it would with the file itself.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

/// What the container gets as fds 0, 1 and 2, and what we copy for it.
pub struct Stdio {
    /// Put on fds 0..3 in the child; `None`: the caller's fd as it is.
    pub child: [Option<OwnedFd>; 3],
    input: Option<Input>,
    outputs: Vec<(File, File)>,
}

/// Our stdin, relayed into the pipe the container reads.
struct Input {
    from: File,
    to: File,
    /// Where a regular file was when the container started: put back to where it
    /// stopped reading afterwards.
    start: Option<u64>,
}

const PIPEFS_MAGIC: i64 = 0x5049_5045;
const SOCKFS_MAGIC: i64 = 0x534F_434B;

/// Whether the container may have this fd itself: an anonymous pipe or a socket.
fn may_pass(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let fs = rustix::fs::fstatfs(fd)?;
    Ok([PIPEFS_MAGIC, SOCKFS_MAGIC].contains(&(fs.f_type as i64)))
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Our standard fd `n` (0, 1 or 2), if it is open: a closed one stays closed in the
/// container, with nothing to reopen.
fn standard(n: i32) -> Option<BorrowedFd<'static>> {
    // SAFETY: only borrowed after fcntl says it is open; rootpack never closes 0-2.
    let fd = unsafe { BorrowedFd::borrow_raw(n) };
    rustix::io::fcntl_getfd(fd).is_ok().then_some(fd)
}

/// A duplicate of our fd `n`, as a file a relay thread owns.
fn ours(n: i32) -> io::Result<File> {
    let fd = standard(n).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// Whether our fd `n` is open and must be relayed rather than passed.
fn relayed(n: i32) -> io::Result<bool> {
    match standard(n) {
        Some(fd) => Ok(!may_pass(fd)?),
        None => Ok(false),
    }
}

/// A terminal on stdin that belongs to another job than ours: reading it would stop us.
fn background_terminal(fd: BorrowedFd<'_>) -> bool {
    rustix::termios::isatty(fd)
        && rustix::termios::tcgetpgrp(fd).ok() != Some(rustix::process::getpgrp())
}

impl Stdio {
    /// For a container on the caller's stdin, stdout and stderr.
    pub fn inherit() -> io::Result<Stdio> {
        let mut s = Stdio {
            child: [None, None, None],
            input: None,
            outputs: Vec::new(),
        };
        if relayed(0)? {
            let (r, w) = pipe()?;
            let from = ours(0)?;
            if !background_terminal(from.as_fd()) {
                let start = match from.metadata()?.is_file() {
                    true => rustix::fs::seek(&from, rustix::fs::SeekFrom::Current(0)).ok(),
                    false => None,
                };
                s.input = Some(Input { from, to: w, start });
            }
            s.child[0] = Some(r.into());
        }
        let relay_out = [relayed(1)?, relayed(2)?];
        let same_file = relay_out == [true, true] && same_inode(&ours(1)?, &ours(2)?)?;
        if same_file {
            // `>>log 2>&1`: one pipe, so that the order of the two streams is kept.
            let (r, w) = pipe()?;
            s.outputs.push((r, ours(1)?));
            s.child[2] = Some(w.try_clone()?.into());
            s.child[1] = Some(w.into());
        } else {
            for n in [1, 2] {
                if relay_out[n as usize - 1] {
                    let (r, w) = pipe()?;
                    s.outputs.push((r, ours(n)?));
                    s.child[n as usize] = Some(w.into());
                }
            }
        }
        Ok(s)
    }

    /// For a build step: stdin at its end, stdout and stderr both into `output`.
    pub fn captured(output: OwnedFd) -> io::Result<Stdio> {
        let (r, _) = pipe()?;
        let err = output.try_clone()?;
        Ok(Stdio {
            child: [Some(r.into()), Some(output), Some(err)],
            input: None,
            outputs: Vec::new(),
        })
    }

    /// In the cloned child: puts the fds on 0, 1 and 2. Only async-signal-safe calls.
    pub fn install(&self) -> io::Result<()> {
        for (n, fd) in self.child.iter().enumerate() {
            if let Some(fd) = fd {
                // SAFETY: dup2 onto a standard fd of this single-threaded child.
                if unsafe { libc::dup2(fd.as_raw_fd(), n as i32) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// In rootpack, once the container is cloned: lets go of the container's ends and
    /// starts the copies.
    pub fn start(self) -> Relays {
        drop(self.child);
        let mut outputs = Vec::new();
        for (mut from, mut to) in self.outputs {
            let spawned = std::thread::Builder::new().spawn(move || {
                let _ = io::copy(&mut from, &mut to);
            });
            outputs.extend(spawned.ok());
        }
        let input = self.input.and_then(InputRelay::start);
        Relays { outputs, input }
    }
}

fn same_inode(a: &File, b: &File) -> io::Result<bool> {
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// The running copy of our stdin.
struct InputRelay {
    thread: JoinHandle<()>,
    written: Arc<AtomicU64>,
    /// Our own end of the pipe, kept to count what the container left unread.
    pipe: File,
    /// Our stdin, and where it stood at the start, for a regular file.
    rewind: Option<(File, u64)>,
}

impl InputRelay {
    fn start(input: Input) -> Option<InputRelay> {
        let Input {
            mut from,
            mut to,
            start,
        } = input;
        let pipe = to.try_clone().ok()?;
        let rewind = start.and_then(|at| Some((from.try_clone().ok()?, at)));
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        // Counted write by write: a container gone mid-copy leaves the rest unread.
        let thread = std::thread::Builder::new()
            .spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return,
                    };
                    let mut done = 0;
                    while done < n {
                        match to.write(&buf[done..n]) {
                            Ok(k) if k > 0 => {
                                done += k;
                                count.fetch_add(k as u64, Ordering::Relaxed);
                            }
                            _ => return,
                        }
                    }
                }
            })
            .ok()?;
        Some(InputRelay {
            thread,
            written,
            pipe,
            rewind,
        })
    }

    /// For a regular file, once the container is gone: back to the first byte it did
    /// not read (what we copied, less what still sits in the pipe).
    fn rewind(self) {
        let Some((file, start)) = self.rewind else {
            // A terminal or a device may block our read forever: left to end with us.
            return;
        };
        // The container's end is closed: the copy ends at its next write.
        let _ = self.thread.join();
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD into a local int, on a pipe fd we own.
        if unsafe { libc::ioctl(self.pipe.as_raw_fd(), libc::FIONREAD, &mut unread) } < 0 {
            return;
        }
        let consumed = self.written.load(Ordering::Relaxed) - unread.max(0) as u64;
        let _ = rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(start + consumed));
    }
}

/// The running copies of the container's stdio.
pub struct Relays {
    outputs: Vec<JoinHandle<()>>,
    input: Option<InputRelay>,
}

impl Relays {
    /// Once the container is gone: waits until everything it wrote is copied (its pipes
    /// end with the last of its processes, which die with its init), and leaves a
    /// regular file on stdin where it stopped reading.
    pub fn finish(self) {
        for t in self.outputs {
            let _ = t.join();
        }
        if let Some(input) = self.input {
            input.rewind();
        }
    }
}
