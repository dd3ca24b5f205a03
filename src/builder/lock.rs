//! One build of an output at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{BuildError, check_interrupt, out_err};

/// `OUT/.NAME.lock`, locked (`flock`) for the whole build: builds of one output wait for
/// each other, so the image and the manifest left are those of one build. The file is
/// removed when the build ends, still locked; a waiter that then holds a removed file
/// tries again on the one now there.
pub(super) struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    pub(super) fn take(out: &Path, name: &str) -> Result<OutputLock, BuildError> {
        use rustix::fs::FlockOperation;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = out.join(format!(".{name}.lock"));
        let mut said = false;
        loop {
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(out_err(&path))?;
            // Polled rather than blocking, so Ctrl-C still ends a waiting build.
            while let Err(e) = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                if e != rustix::io::Errno::WOULDBLOCK && e != rustix::io::Errno::INTR {
                    return Err(out_err(&path)(e.into()));
                }
                if !said {
                    log::warn!(
                        "waiting for another build of {name} in {} to finish",
                        out.display()
                    );
                    said = true;
                }
                check_interrupt()?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let held = file.metadata().map_err(out_err(&path))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(OutputLock { path, _file: file });
                }
                _ => continue,
            }
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Before the file is closed, so no other build holds the name meanwhile.
        let _ = std::fs::remove_file(&self.path);
    }
}
