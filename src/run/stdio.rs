//! The container's standard input, output and error.
//!
//! # Security
//!
//! Through `/proc/self/fd/N` a process reopens the very inode an fd of its names. A
//! container handed the caller's `>> app.log` could chmod it set-uid, chown it, or read
//! back what it held before; handed the host's `/dev/null`, change its mode for the whole
//! host. So the caller's fds reach the container only when reopening them gives nothing:
//! pipes and sockets (their inodes live in no folder), and terminals, which the container
//! cannot type into (it is a new session without a controlling terminal, and the filter
//! refuses TIOCSTI). Anything else (a regular file, a device, a folder) is relayed
//! through a pipe by a thread of ours, as Docker's shim gives containers pipes and copies.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsFd, AsRawFd, OwnedFd};
use std::thread::JoinHandle;

/// What the container gets as fds 0, 1 and 2, and what we copy for it.
pub struct Stdio {
    /// Put on fds 0..3 in the child; `None`: the caller's fd as it is.
    pub child: [Option<OwnedFd>; 3],
    copies: Vec<Copy>,
}

/// One relay to start once the container is cloned.
enum Copy {
    /// From our stdin into the pipe the container reads.
    In { from: File, to: File },
    /// From the pipe the container writes into our stdout or stderr.
    Out { from: File, to: File },
}

/// Whether the container may have this fd itself (see the module's security notes).
fn may_pass(fd: &impl AsFd) -> io::Result<bool> {
    let fd = fd.as_fd();
    if rustix::termios::isatty(fd) {
        return Ok(true);
    }
    let kind = rustix::fs::fstat(fd)?.st_mode & libc::S_IFMT;
    Ok(kind == libc::S_IFIFO || kind == libc::S_IFSOCK)
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((File::from(r), File::from(w)))
}

/// Our standard fd `n` (0, 1 or 2), if it is open: a closed one stays closed in the
/// container, with nothing to reopen.
fn standard(n: i32) -> Option<std::os::unix::io::BorrowedFd<'static>> {
    // SAFETY: only borrowed after fcntl says it is open; rootpack never closes 0-2.
    let fd = unsafe { std::os::unix::io::BorrowedFd::borrow_raw(n) };
    rustix::io::fcntl_getfd(fd).is_ok().then_some(fd)
}

/// A duplicate of our fd `n`, as a file the relay thread owns.
fn ours(n: i32) -> io::Result<File> {
    let fd = standard(n).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// Whether our fd `n` is open and must be relayed rather than passed.
fn relayed(n: i32) -> io::Result<bool> {
    match standard(n) {
        Some(fd) => Ok(!may_pass(&fd)?),
        None => Ok(false),
    }
}

impl Stdio {
    /// For a container on the caller's stdin, stdout and stderr.
    pub fn inherit() -> io::Result<Stdio> {
        let mut s = Stdio {
            child: [None, None, None],
            copies: Vec::new(),
        };
        if relayed(0)? {
            let (r, w) = pipe()?;
            s.copies.push(Copy::In {
                from: ours(0)?,
                to: w,
            });
            s.child[0] = Some(r.into());
        }
        let relay_out = [relayed(1)?, relayed(2)?];
        let same_file = relay_out == [true, true] && same_inode(&ours(1)?, &ours(2)?)?;
        if same_file {
            // `>>log 2>&1`: one pipe, so that the order of the two streams is kept.
            let (r, w) = pipe()?;
            s.copies.push(Copy::Out {
                from: r,
                to: ours(1)?,
            });
            s.child[2] = Some(w.try_clone()?.into());
            s.child[1] = Some(w.into());
        } else {
            for n in [1, 2] {
                if relay_out[n as usize - 1] {
                    let (r, w) = pipe()?;
                    s.copies.push(Copy::Out {
                        from: r,
                        to: ours(n)?,
                    });
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
            copies: Vec::new(),
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
        for copy in self.copies {
            match copy {
                // Not waited for: our stdin may never end. A container that is gone
                // closes the pipe, and the copy ends at its next write.
                Copy::In { mut from, mut to } => {
                    let _ = std::thread::Builder::new().spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                    });
                }
                Copy::Out { mut from, mut to } => {
                    let spawned = std::thread::Builder::new().spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                    });
                    outputs.extend(spawned.ok());
                }
            }
        }
        Relays { outputs }
    }
}

fn same_inode(a: &File, b: &File) -> io::Result<bool> {
    let (a, b) = (a.metadata()?, b.metadata()?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// The running copies of the container's output.
pub struct Relays {
    outputs: Vec<JoinHandle<()>>,
}

impl Relays {
    /// Waits until everything the container wrote is copied: its pipes end once the
    /// last process holding them (all of them die with its init) is gone.
    pub fn finish(self) {
        for t in self.outputs {
            let _ = t.join();
        }
    }
}
