//! The cloned process of `create`, until `execve`: it waits for the runtime's go, builds
//! its root from the plan, reports ready (or why not), blocks on the exec fifo until
//! `start`, and becomes the container's process.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::plan::Plan;
use super::{Error, mounts, process, state};
use crate::tree::safe_path::Root;

/// The cloned process until `execve`.
pub(super) struct Child<'a> {
    pub(super) plan: &'a Plan,
    pub(super) go: OwnedFd,
    pub(super) ready: OwnedFd,
    pub(super) state_dir: OwnedFd,
    pub(super) console: Option<OwnedFd>,
    pub(super) mnt_join: Option<OwnedFd>,
    pub(super) cgroups: mounts::CgroupView,
    pub(super) preserve_fds: u32,
    pub(super) no_pivot: bool,
    pub(super) new_keyring: bool,
}

impl Child<'_> {
    pub(super) fn main(self) -> ! {
        // The runtime's other fds (the state folder's lock above all) are not the
        // process's to hold while it waits.
        let mut keep: Vec<RawFd> = (3..3 + self.preserve_fds as RawFd).collect();
        keep.extend([
            self.go.as_raw_fd(),
            self.ready.as_raw_fd(),
            self.state_dir.as_raw_fd(),
        ]);
        keep.extend(
            self.console
                .iter()
                .chain(&self.mnt_join)
                .map(|fd| fd.as_raw_fd()),
        );
        crate::run::security::close_fds_except(&keep);
        // Until it is ready, it dies with the runtime.
        crate::run::security::die_with_parent();
        let mut byte = [0u8; 1];
        if !matches!(rustix::io::read(&self.go, &mut byte), Ok(1)) {
            // SAFETY: leaving the forked copy without running the parent's destructors.
            unsafe { libc::_exit(1) };
        }
        let program = match self.setup() {
            Ok(program) => program,
            Err(e) => self.fail(&e.to_string()),
        };
        // SAFETY: prctl with integer arguments: no longer tied to the runtime, which exits.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
        let _ = rustix::io::write(&self.ready, &[0]);
        drop(self.ready);
        // Blocks until `start` opens the fifo for reading.
        let fifo = rustix::fs::openat(
            &self.state_dir,
            state::EXEC_FIFO,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        );
        match fifo {
            Ok(fd) => {
                let _ = rustix::io::write(&fd, b"0");
            }
            // SAFETY: as above.
            Err(_) => unsafe { libc::_exit(1) },
        }
        drop(self.state_dir);
        process::exec(&self.plan.process, &program, self.preserve_fds)
    }

    fn fail(&self, message: &str) -> ! {
        let _ = rustix::io::write(&self.ready, message.as_bytes());
        // SAFETY: as above.
        unsafe { libc::_exit(1) }
    }

    /// Everything between the clone and the wait for `start`; the program found.
    fn setup(&self) -> Result<CString, Error> {
        let p = self.plan;
        let io_err = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| Error::Other(format!("{what}: {e}"))
        };
        if let Some(fd) = &self.mnt_join {
            // SAFETY: setns on an fd we own.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) } < 0 {
                return Err(io_err("joining the mount namespace")(
                    io::Error::last_os_error(),
                ));
            }
        }
        if self.new_keyring {
            crate::run::security::join_new_session_keyring().map_err(io_err("session keyring"))?;
        }
        if p.clone_flags & libc::CLONE_NEWUSER != 0 {
            crate::run::security::switch_ids(0, 0)
                .map_err(io_err("becoming root in the user namespace"))?;
        }
        if p.clone_flags & libc::CLONE_NEWNET != 0 {
            crate::run::rootfs::loopback_up().map_err(io_err("bringing lo up"))?;
        }
        self.build_root()?;
        for (k, v) in &p.sysctl {
            crate::sysctl::write(k, v).map_err(io_err("linux.sysctl"))?;
        }
        if let Some(h) = &p.hostname {
            rustix::system::sethostname(h.as_bytes()).map_err(|e| io_err("hostname")(e.into()))?;
        }
        if let Some(d) = &p.domainname {
            rustix::system::setdomainname(d.as_bytes())
                .map_err(|e| io_err("domainname")(e.into()))?;
        }
        self.finish_root()?;
        if let Some(adj) = p.process.oom_score_adj {
            fs::write("/proc/self/oom_score_adj", adj.to_string())
                .map_err(io_err("process.oomScoreAdj"))?;
        }
        if let Some(sock) = &self.console {
            process::attach_console(sock.as_raw_fd(), true).map_err(io_err("process.terminal"))?;
        }
        // The cwd is made if missing, as runc does; the program must be there now.
        let cwd = crate::tree::safe_path::RelPath::parse(p.process.cwd.as_bytes())
            .map_err(|_| Error::Other(format!("process.cwd {:?}: bad path", p.process.cwd)))?;
        Root::open(Path::new("/"))
            .and_then(|r| r.open_dir(cwd.as_bytes(), true))
            .map_err(io_err("process.cwd"))?;
        process::find_program(&p.process).map_err(Error::Other)
    }

    fn build_root(&self) -> Result<(), Error> {
        let p = self.plan;
        let userns = p.clone_flags & libc::CLONE_NEWUSER != 0;
        mounts::prepare_root(&p.rootfs, p.propagation)?;
        let root = Root::open(&p.rootfs).map_err(|e| Error::Other(format!("root.path: {e}")))?;
        mounts::apply(&root, &p.mounts, &self.cgroups, userns)?;
        mounts::make_devices(&root, &p.devices, userns)?;
        mounts::dev_symlinks(&root)?;
        drop(root);
        mounts::enter_root(&p.rootfs, self.no_pivot)?;
        if let Some(shared) = p.shared_root {
            mounts::mount(None, Path::new("/"), None, shared, "")
                .map_err(|e| Error::Other(format!("linux.rootfsPropagation: {e}")))?;
        }
        Ok(())
    }

    /// After the sysctls are written: read-only and masked paths, a read-only root.
    fn finish_root(&self) -> Result<(), Error> {
        let p = self.plan;
        crate::run::rootfs::read_only_paths(&p.read_only)
            .map_err(|e| Error::Other(format!("linux.readonlyPaths: {e}")))?;
        crate::run::rootfs::mask_paths(&p.masked)
            .map_err(|e| Error::Other(format!("linux.maskedPaths: {e}")))?;
        if p.read_only_root {
            mounts::read_only_root()?;
        }
        Ok(())
    }
}
