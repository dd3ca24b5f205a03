//! Copying file data from host files on a second thread, so creating the next files and
//! copying the data of the previous ones overlap on two cores (a folder layer, injected
//! programs). Data moves in the kernel with copy_file_range where the filesystems allow.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rustix::fs::{Mode, Timespec, Timestamps};

/// A file whose data is still to be copied and whose metadata follows the data.
pub struct Job {
    pub src: File,
    pub dst: File,
    pub len: u64,
    pub meta: FileMeta,
    /// For messages.
    pub name: String,
}

/// What to set on a regular file once its data is written: only what would change.
pub struct FileMeta {
    pub owner: Option<(u32, u32)>,
    /// Applied after chown, which clears set-id bits.
    pub mode: Option<u32>,
    pub mtime: i64,
    /// Set last: a chown clears `security.capability`.
    pub xattrs: crate::xattr::Xattrs,
}

impl FileMeta {
    /// Gives how many extended attributes the file system refused.
    pub fn apply(&self, fd: impl std::os::fd::AsFd) -> io::Result<u64> {
        let fd = fd.as_fd();
        if let Some((uid, gid)) = self.owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )?;
        }
        if let Some(mode) = self.mode {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
        }
        let t = Timespec {
            tv_sec: self.mtime,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            fd,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )?;
        crate::xattr::set_fd(fd, &self.xattrs)
    }
}

pub struct Copier {
    tx: Option<SyncSender<Job>>,
    worker: Option<JoinHandle<io::Result<u64>>>,
    cancel: Arc<AtomicBool>,
}

impl Copier {
    pub fn start() -> io::Result<Copier> {
        let (tx, rx) = sync_channel(64);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let worker = std::thread::Builder::new()
            .name("copy".into())
            .spawn(move || work(rx, &flag))?;
        Ok(Copier {
            tx: Some(tx),
            worker: Some(worker),
            cancel,
        })
    }

    /// Queues a job; fails if the worker already stopped on an error (`finish` says which).
    pub fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Waits for every queued job; the first error, if any, else how many extended
    /// attributes the file system refused.
    pub fn finish(mut self) -> io::Result<u64> {
        self.tx = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the copy thread panicked")),
            None => Ok(0),
        }
    }
}

impl Drop for Copier {
    /// Abandoned (an error or an interrupt elsewhere): stop early, but never leave the
    /// thread writing into a tree that is about to be unmounted or removed.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn work(rx: Receiver<Job>, cancel: &AtomicBool) -> io::Result<u64> {
    let mut refused = 0;
    for job in rx {
        if cancel.load(Ordering::Relaxed) {
            return Ok(refused);
        }
        refused +=
            apply(&job).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", job.name)))?;
    }
    Ok(refused)
}

fn apply(job: &Job) -> io::Result<u64> {
    copy_range(&job.src, &job.dst, job.len)?;
    job.meta.apply(&job.dst)
}

/// Copies `len` bytes from the start of `src` into `dst` in the kernel (copy_file_range;
/// reflinks or splices where the filesystems allow), else through a buffer. A source that
/// is shorter than `len` now is an error, never a silently short copy.
pub fn copy_range(src: &File, dst: &File, len: u64) -> io::Result<()> {
    use rustix::io::Errno;
    let mut off = 0u64;
    while off < len {
        let mut src_off = off;
        let chunk = (len - off).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut src_off), dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => off += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                use std::io::{Read, Seek};
                let mut s = src;
                s.seek(io::SeekFrom::Start(off))?;
                off += io::copy(&mut s.take(len - off), &mut &*dst)?;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if off != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("changed size while copied ({off} of {len} bytes)"),
        ));
    }
    Ok(())
}
