//! A whole file mapped read-only: archive readers decode from it and the digest hashes it
//! straight from the page cache, letting pages go behind them.

use std::fs::File;
use std::io;

/// A read-only private mapping of a whole file.
pub struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
    /// The file mapped, for reads that should not fault pages in (headers far ahead).
    file: File,
}

// SAFETY: the mapping is read-only and owned; sharing the pointer across threads only
// allows reads.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `file`, or `None` when it cannot be mapped (a pipe, an empty file).
    pub fn new(file: &File) -> Option<Mapping> {
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        let file = file.try_clone().ok()?;
        use rustix::mm::{MapFlags, ProtFlags};
        // SAFETY: a fresh private read-only mapping; if the file is truncated while we
        // read it, access past the new end raises SIGBUS, as for every mmap reader.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                &file,
                0,
            )
        }
        .ok()?;
        // SAFETY: advice on our own mapping.
        let _ = unsafe { rustix::mm::madvise(ptr, len, rustix::mm::Advice::Sequential) };
        Some(Mapping { ptr, len, file })
    }

    /// Reads from the file at `offset` without touching the mapping.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `len` bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Drops the pages of `start..end` from our address space (they stay in the page
    /// cache); reading them again faults them back in.
    pub fn release(&self, start: usize, end: usize) {
        let page = 4096;
        let start = start.div_ceil(page) * page;
        let end = end / page * page;
        if end > start {
            // SAFETY: the range lies inside our mapping and page-aligned.
            let _ = unsafe {
                rustix::mm::madvise(
                    (self.ptr as *mut u8).add(start) as *mut _,
                    end - start,
                    rustix::mm::Advice::LinuxDontNeed,
                )
            };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what we mapped, once.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}
