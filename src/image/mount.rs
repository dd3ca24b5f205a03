//! Mounts as guards: unmounted on drop (lazily if busy), so an error or an interrupt
//! between mount and unmount leaves nothing mounted.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

pub struct Mount {
    target: PathBuf,
    mounted: bool,
}

impl Mount {
    pub fn new(
        source: &Path,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: Option<&std::ffi::CStr>,
    ) -> io::Result<Mount> {
        rustix::mount::mount(source, target, fstype, flags, data)?;
        Ok(Mount {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts now, reporting failure (drop only tries).
    pub fn unmount(mut self) -> io::Result<()> {
        // On failure `mounted` stays set and drop detaches lazily.
        rustix::mount::unmount(&self.target, UnmountFlags::empty())?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted && rustix::mount::unmount(&self.target, UnmountFlags::empty()).is_err() {
            let _ = rustix::mount::unmount(&self.target, UnmountFlags::DETACH);
        }
    }
}
