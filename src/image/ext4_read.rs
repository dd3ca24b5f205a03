//! Reading an ext4 image (rootpack's, or any) as `ls` and `extract` read an archive: the
//! image is loop-attached read-only and mounted `ro,noload` (no journal replay: nothing is
//! written to it), `nosuid,nodev,noexec`, in a mount namespace of this process's own, so
//! the mount ends with the process whatever happens to it, and the loop device (which
//! clears itself) with the mount. Its tree is then walked as host files are.

use std::io;
use std::path::Path;

use rustix::mount::MountFlags;

use super::loopdev::Loop;
use super::mount::Mount;

/// Whether the file at `path` starts as an ext2/3/4 filesystem does.
pub fn is_ext4(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut magic = [0u8; 2];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 1080).is_ok()
        && magic == [0x53, 0xef]
        && file.metadata().is_ok_and(|m| m.is_file())
}

/// Calls `f` with the image's tree mounted read-only.
pub fn with_tree<T>(image: &Path, f: impl FnOnce(&Path) -> T) -> io::Result<T> {
    if !rustix::process::geteuid().is_root() {
        return Err(io::Error::other(format!(
            "reading an ext4 image needs root (a read-only loop mount); without it: debugfs \
             -R 'rdump / DIR' {}",
            image.display()
        )));
    }
    // SAFETY: a new mount namespace changes no memory of this process; its threads keep
    // the namespace they have, and the ones made later (the extractor's) get this one.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )?;
    let dir = crate::fsutil::TempDir::beside(&std::env::temp_dir().join("rootpack-ext4"))?;
    let lo = Loop::attach(image, true)?;
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let mnt = Mount::new(lo.path(), dir.path(), "ext4", flags, Some(c"noload"))?;
    let out = f(dir.path());
    mnt.unmount()?;
    drop(lo);
    Ok(out)
}
