//! Loop devices as guards: attached with autoclear, so the kernel frees the device once
//! the last user (our fd, a mount) is gone, and detached explicitly on drop.
//!
//! `loopdev-3` (the maintained fork of `loopdev`) does the ioctls. Its `next_free()` does
//! not reserve the device it returns, so another process may take it first: attaching then
//! fails with EBUSY and we ask again.

use std::io;
use std::path::{Path, PathBuf};

use loopdev::{LoopControl, LoopDevice};

const ATTEMPTS: usize = 20;

pub struct Loop {
    device: LoopDevice,
    path: PathBuf,
}

impl Loop {
    /// Attaches `file` to a free loop device.
    pub fn attach(file: &Path, read_only: bool) -> io::Result<Loop> {
        let control = LoopControl::open()?;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let device = control.next_free()?;
            match device
                .with()
                .read_only(read_only)
                .autoclear(true)
                .attach(file)
            {
                Ok(()) => {
                    let path = device
                        .path()
                        .ok_or_else(|| io::Error::other("loop device without a path"))?;
                    return Ok(Loop { device, path });
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free loop device")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // With autoclear this only marks the device; it is freed once unmounted.
        let _ = self.device.detach();
    }
}
