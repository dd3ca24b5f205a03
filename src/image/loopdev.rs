//! Loop devices as guards, attached with autoclear so the kernel frees the device once
//! the last user (our fd, a mount) is gone.
//!
//! Our own ioctls rather than `loopdev-3`: it configures a device with LOOP_SET_FD then
//! LOOP_SET_STATUS64, and the second freezes the live queue, which took 18 ms of a 30 ms
//! container start here; LOOP_CONFIGURE (Linux 5.8) sets everything in one call before the
//! device goes live. It also spares the build a libclang dependency (bindgen). Older
//! kernels get the two-call path. `LOOP_CTL_GET_FREE` does not reserve the device it
//! returns, so another process may take it first: configuring then fails with EBUSY and
//! we ask again.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const ATTEMPTS: usize = 50;

#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// The result of an ioctl: its value, or the error it set.
fn checked(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One typed wrapper per loop ioctl: each passes the argument its request takes, so no
/// caller hands the kernel an integer where it reads a pointer.
mod ioctl {
    use super::{LoopConfig, LoopInfo64, checked};
    use std::fs::File;
    use std::io;
    use std::os::unix::io::AsRawFd;

    /// The number of a free loop device (LOOP_CTL_GET_FREE on `/dev/loop-control`).
    pub fn get_free(control: &File) -> io::Result<libc::c_int> {
        // SAFETY: the request takes no argument.
        checked(unsafe { libc::ioctl(control.as_raw_fd(), super::LOOP_CTL_GET_FREE, 0) })
    }

    /// LOOP_CONFIGURE: backing file, flags and size in one call (Linux 5.8).
    pub fn configure(device: &File, config: &LoopConfig) -> io::Result<libc::c_int> {
        // SAFETY: the kernel reads a `struct loop_config` that outlives the call.
        checked(unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                super::LOOP_CONFIGURE,
                config as *const LoopConfig,
            )
        })
    }

    /// LOOP_SET_FD: binds `backing` (before LOOP_CONFIGURE existed).
    pub fn set_fd(device: &File, backing: &File) -> io::Result<libc::c_int> {
        // SAFETY: the request takes an fd number, open for the call.
        checked(unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                super::LOOP_SET_FD,
                backing.as_raw_fd() as libc::c_ulong,
            )
        })
    }

    /// LOOP_SET_STATUS64: the flags, after LOOP_SET_FD.
    pub fn set_status(device: &File, info: &LoopInfo64) -> io::Result<libc::c_int> {
        // SAFETY: the kernel reads a `struct loop_info64` that outlives the call.
        checked(unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                super::LOOP_SET_STATUS64,
                info as *const LoopInfo64,
            )
        })
    }

    /// LOOP_CLR_FD: unbinds the backing file (or, once mounted, leaves it to autoclear).
    pub fn clear(device: &File) -> io::Result<libc::c_int> {
        // SAFETY: the request takes no argument.
        checked(unsafe { libc::ioctl(device.as_raw_fd(), super::LOOP_CLR_FD, 0) })
    }
}

pub struct Loop {
    device: File,
    path: PathBuf,
}

impl Loop {
    /// Attaches `file` to a free loop device, read-only if asked, with autoclear.
    pub fn attach(file: &Path, read_only: bool) -> io::Result<Loop> {
        let backing = File::options()
            .read(true)
            .write(!read_only)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)?;
        Loop::attach_file(&backing, read_only)
    }

    /// Attaches the open `backing` file (opened for writing unless `read_only`): the very
    /// file a caller has checked, whatever its path names by now.
    pub fn attach_file(backing: &File, read_only: bool) -> io::Result<Loop> {
        let control = File::options()
            .read(true)
            .write(true)
            .open("/dev/loop-control")?;
        let mut info: LoopInfo64 = unsafe_zeroed();
        info.flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let n = ioctl::get_free(&control)?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let device = File::options()
                .read(true)
                .write(!read_only)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)?;
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            let configured = match ioctl::configure(&device, &config) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) => {
                    // Before Linux 5.8: bind, then set the flags.
                    ioctl::set_fd(&device, backing).and_then(|_| {
                        ioctl::set_status(&device, &info).inspect_err(|_| {
                            let _ = ioctl::clear(&device);
                        })
                    })
                }
                other => other,
            };
            match configured {
                Ok(_) => return Ok(Loop { device, path }),
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
        // Once mounted this only confirms autoclear; unmounted, it frees the device now.
        let _ = ioctl::clear(&self.device);
    }
}

/// Detaches the loop device at `path` (used to clean up after a killed build).
pub fn detach(path: &Path) -> io::Result<()> {
    let device = File::open(path)?;
    ioctl::clear(&device).map(drop)
}

fn unsafe_zeroed() -> LoopInfo64 {
    // SAFETY: LoopInfo64 is plain integers and byte arrays; all zeros is valid.
    unsafe { std::mem::zeroed() }
}
