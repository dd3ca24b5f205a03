//! `rootpack run`: a container straight from an image.
//!
//! The parent (in the host's namespaces) creates the cgroup, clones the child into new
//! mount, UTS, IPC, PID and network namespaces, moves it into the cgroup, and lets it go.
//! The child enters a new cgroup namespace, builds the root filesystem (see [`rootfs`]),
//! sets the hostname, and becomes the container's init (see [`init`]). The parent forwards
//! signals and reports the command's status; a small watcher process removes the cgroup
//! even if the parent is killed, and the child dies with the parent (PDEATHSIG), which
//! tears down its namespaces, mounts and loop device.

mod capture;
pub mod cgroup;
mod child;
pub mod devices;
mod handover;
mod image;
pub mod init;
mod network;
pub mod rlimit;
pub mod rootfs;
pub mod seccomp;
pub mod security;
mod spec;
mod stdio;
pub(crate) mod tty;
pub mod user;
pub mod verify;
pub(crate) mod wait;
mod watcher;

use std::io::{self, Read};
use std::os::unix::io::OwnedFd;
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// An ext4 image file, or a folder (an image built with `output.format = "dir"`).
    pub image: PathBuf,
    /// Replaces the image's cmd; the entrypoint stays (see `entrypoint`).
    pub command: Vec<String>,
    /// Replaces the image's entrypoint (`""` clears it) and resets its cmd; `command`
    /// becomes its arguments.
    pub entrypoint: Option<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<(u32, u32)>,
    /// A user (and group) named in the image's `/etc/passwd` and `/etc/group`, looked up
    /// inside the container; wins over `user`.
    pub user_name: Option<user::UserSpec>,
    pub hostname: Option<String>,
    pub writable: bool,
    /// `--read-only`: the root read-only (volumes, tmpfs mounts and /dev stay writable).
    pub read_only: bool,
    /// `--network`; `Container` must be resolved to `Join` by the caller.
    pub network: crate::net::Network,
    /// `-p`: published ports of a private network.
    pub ports: Vec<crate::net::PortMapping>,
    /// A name for the container's address in its `/etc/hosts` (besides its hostname).
    pub name: Option<String>,
    pub volumes: Vec<(PathBuf, String, bool)>,
    pub tmpfs: Vec<String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_init: bool,
    pub tty: bool,
    /// `--ulimit`s, over the default open-files limit ([`rlimit::DEFAULT_NOFILE`]).
    pub ulimits: Vec<rlimit::Ulimit>,
    /// A user namespace: root in the container is [`USERNS_BASE`] outside.
    pub userns: bool,
    pub seccomp: seccomp::Seccomp,
    /// `--security-opt no-new-privileges[=…]`; `None`: the manifest's
    /// `config.no_new_privileges`, else off (as in Docker: set-id programs and file
    /// capabilities work, within the bounding set).
    pub no_new_privileges: Option<bool>,
    /// `--sysctl`s: written in the container over the manifest's and the defaults.
    pub sysctls: Vec<(String, String)>,
    /// Check the image against its manifest's sha256 before mounting it.
    pub verify: bool,
    /// Read no manifest beside the image (a tree being built has none yet): no config,
    /// limits or digest from it, and nothing recorded in one afterwards.
    pub no_manifest: bool,
    /// Kill the container, its whole PID namespace, after this long
    /// ([`Outcome::timed_out`]).
    pub timeout: Option<std::time::Duration>,
    /// Where the root is put together before `pivot_root`; default [`rootfs::STAGE`]. It
    /// is only a mount point: the container mounts a tmpfs of its own on it.
    pub stage: Option<PathBuf>,
    /// Started without root: a user namespace maps only the caller's uid and gid, as
    /// root; no cgroup and no loop device, so only a folder can be the root.
    pub rootless: bool,
    /// Written once the container runs: its init's pid on the host and that process's
    /// start time ("PID START"), for a detached container's record.
    pub pid_file: Option<PathBuf>,
    /// Closed once the container runs (after `pid_file` is written): a caller waiting for
    /// its end of the pipe learns that it started.
    pub started: Option<std::os::unix::io::RawFd>,
}

/// The host uid (and gid) the container's root becomes with `--userns`; the container's
/// ids 0..65535 map to this range, like the usual /etc/subuid allocation.
pub const USERNS_BASE: u32 = 100_000;
const USERNS_SIZE: u32 = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}")]
    Image { path: PathBuf, source: io::Error },
    #[error("creating the cgroup")]
    Cgroup(#[source] io::Error),
    #[error("starting the container")]
    Start(#[source] io::Error),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Manifest(crate::manifest::ManifestError),
    #[error(transparent)]
    Verify(verify::VerifyError),
}

/// How the container ended.
#[derive(Debug)]
pub struct Outcome {
    /// The command's status; 128+N when signal N killed it.
    pub exit_code: i32,
    /// The signal that killed the command, if one did.
    pub signal: Option<i32>,
    /// Killed because [`RunOptions::timeout`] passed.
    pub timed_out: bool,
    /// Why the command could not be started (with status 126 or 127).
    pub message: Option<String>,
    /// Killed by the memory limit: the limit in bytes.
    pub oom_limit: Option<u64>,
    /// Something the caller should hear about that did not stop the run.
    pub notice: Option<String>,
}

pub(crate) use crate::fsutil::pipe;

pub use crate::ids::parse_uid_gid as parse_user;

/// Starts the container and waits for it. The command's stdin, stdout and stderr are
/// rootpack's own.
pub fn run(opts: &RunOptions) -> Result<Outcome, RunError> {
    start(opts, None)
}

/// Starts the container with stdin from `/dev/null` and stdout and stderr into one pipe,
/// whose bytes go to `output` as they come, and waits for it. Nothing is printed. A
/// SIGINT, SIGTERM or SIGHUP that reaches rootpack meanwhile kills the container and is
/// left pending for the caller (see [`crate::interrupt`]).
pub fn run_with_output(
    opts: &RunOptions,
    output: &mut dyn FnMut(&[u8]),
) -> Result<Outcome, RunError> {
    start(opts, Some(output))
}

/// Whether the container's processes get no_new_privs: as `--security-opt` says, else
/// as the image's manifest says (off without one). For what `exec` joins it with.
pub fn no_new_privileges(opts: &RunOptions) -> bool {
    opts.no_new_privileges.unwrap_or_else(|| {
        !opts.no_manifest
            && crate::manifest::read(&crate::manifest::path_for(&opts.image))
                .is_ok_and(|m| m.config.no_new_privileges)
    })
}

/// An error and its causes on one line, each said once.
pub fn error_line(e: &RunError) -> String {
    let mut line = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        source = s.source();
    }
    line
}

/// Where a captured container's output goes.
type OutputSink<'a> = &'a mut dyn FnMut(&[u8]);

fn start(opts: &RunOptions, output: Option<OutputSink<'_>>) -> Result<Outcome, RunError> {
    let t0 = std::time::Instant::now();
    let captured = output.is_some();
    let spec::Plan {
        manifest,
        mut rootfs,
        limits,
        hostname,
        console,
        spec,
    } = spec::plan(opts, captured)?;
    let (layout, cg) = make_cgroup(opts, &limits, t0)?;
    // A user namespace can make no node, and its mounts are nodev whatever we ask.
    rootfs.devices = cg.limits_devices() && !opts.userns && !opts.rootless;
    let network = network::prepare(opts, &hostname, &mut rootfs, t0)?;
    let join = network::open_joined(opts)?;
    let watcher = watcher::spawn(cg.dirs(), network.as_ref()).map_err(RunError::Start)?;

    let (go_r, go_w) = pipe().map_err(RunError::Start)?;
    let (ready_r, ready_w) = pipe().map_err(RunError::Start)?;
    let (err_r, err_w) = pipe().map_err(RunError::Start)?;
    let (out_r, stdio, init_exe) = prepare_io(opts, captured)?;
    let (set, mask) = block_signals()?;
    // Read before the clone: the child must not allocate for them.
    let caller = security::caller_ids();
    // Our ends of the pipes, the watcher's and the output's: closed in the child with
    // every other fd it does not keep (`security::close_fds_except`).
    let child = child::Child {
        rootfs: &rootfs,
        spec: &spec,
        hostname: &hostname,
        layout: &layout,
        opts,
        stdio: &stdio,
        init_exe,
        ready: ready_w,
    };
    // No thread has been started yet: the relays start after the hand-over.
    let pid = clone_child(opts, join.as_ref(), child, go_r, err_w, &mask.0)?;
    log::debug!(
        "cloned pid {pid} into {} ({:.1} ms)",
        namespaces(opts),
        ms(t0)
    );
    let console = console.map(|(ours, _theirs)| ours);
    let handed = network::around_hand_over(network, watcher.as_ref(), pid, t0, || {
        handover::hand_over(opts, pid, caller, &rootfs, &cg, &ready_r)
    });
    let attachment = match handed {
        Ok(a) => a,
        Err(e) => return Err(abandon(pid, err_r, e)),
    };
    // Threads only now: entering the child's mount namespace above needs a process of
    // one thread.
    let relays = stdio.start();
    let _ = rustix::io::write(&go_w, b"1");
    drop(go_w);
    log::debug!("container started ({:.1} ms)", ms(t0));
    announce_start(opts, pid);
    let (status, timed_out) =
        wait::wait_for(pid, &set, opts.timeout, out_r.zip(output), console.as_ref())?;
    relays.finish();
    drop(mask);
    network::detach(attachment, watcher.is_some());
    let ended = ended(status, timed_out, read_message(err_r), limits.memory, &cg);
    // Removed on drop, retrying briefly while the kernel finishes tearing down.
    drop(cg);
    drop(watcher);
    let mut outcome = ended?;
    log::debug!(
        "container ended with status {} ({:.1} ms)",
        outcome.exit_code,
        ms(t0)
    );
    if opts.writable && rootfs.image_file.is_some() {
        outcome.notice = image::record_writes(opts, &rootfs.image, manifest.as_ref());
    }
    Ok(outcome)
}

/// Clones the child, which becomes the container there; in rootpack, its pid (and the
/// child's ends of the pipes closed).
fn clone_child(
    opts: &RunOptions,
    join: Option<&network::Joined>,
    child: child::Child<'_>,
    go: OwnedFd,
    err: OwnedFd,
    mask: &libc::sigset_t,
) -> Result<i32, RunError> {
    let pid = clone_into_namespaces(opts, join).map_err(RunError::Start)?;
    if pid == 0 {
        child::child_main(go, err, child, mask);
    }
    Ok(pid)
}

/// Our signals blocked (forwarded to the container from now on), unless one already
/// arrived during setup, which nothing would forward now.
fn block_signals() -> Result<(libc::sigset_t, RestoreMask), RunError> {
    let set = init::signal_set();
    let mask = RestoreMask(init::block(&set));
    if crate::interrupt::interrupted() {
        return Err(RunError::Start(io::Error::from(io::ErrorKind::Interrupted)));
    }
    Ok((set, mask))
}

/// The pid file and the started pipe of a detached container.
fn announce_start(opts: &RunOptions, pid: i32) {
    if let Some(path) = &opts.pid_file {
        let start = crate::ids::process_start_time(pid).unwrap_or(0);
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{pid} {start}\n"))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            log::warn!("{}: {e}", path.display());
        }
    }
    if let Some(fd) = opts.started {
        // SAFETY: the caller handed this fd over to be closed here.
        unsafe { libc::close(fd) };
    }
}

/// The namespaces [`clone_into_namespaces`] makes, for the verbose log.
fn namespaces(opts: &RunOptions) -> String {
    let mut names = vec!["new namespaces: mount", "uts", "ipc", "pid"];
    names.extend(opts.network.new_namespace().then_some("net"));
    names.extend((opts.userns || opts.rootless).then_some("user"));
    names.join(", ")
}

/// A child that failed before its start: killed, reaped, and its own message (if it
/// wrote one) returned rather than `e`.
fn abandon(pid: i32, err_r: OwnedFd, e: RunError) -> RunError {
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let message = read_message(err_r);
    if message.is_empty() {
        e
    } else {
        RunError::Setup(message)
    }
}

/// What the child takes besides its spec: its stdio (and our end of a step's output
/// pipe), and the sealed init unless `--no-init`.
type ChildIo = (Option<OwnedFd>, stdio::Stdio, Option<OwnedFd>);

fn prepare_io(opts: &RunOptions, captured: bool) -> Result<ChildIo, RunError> {
    let (out_r, stdio) = if captured {
        let (r, w) = pipe().map_err(RunError::Start)?;
        (Some(r), stdio::Stdio::captured(w))
    } else {
        (None, stdio::Stdio::inherit())
    };
    let stdio = stdio.map_err(|e| RunError::Setup(format!("setting up stdio: {e}")))?;
    let init_exe = match opts.no_init {
        true => None,
        false => Some(init::sealed_init().map_err(RunError::Start)?),
    };
    Ok((out_r, stdio, init_exe))
}

/// How the container ended, from its init's wait `status` and what it wrote on the error
/// pipe; a setup failure (125 with a message) is an error instead.
fn ended(
    status: libc::c_int,
    timed_out: bool,
    message: String,
    memory_limit: Option<u64>,
    cg: &cgroup::Cgroup,
) -> Result<Outcome, RunError> {
    let (message, init_signal) = init::split_signal(message);
    let exit_code = init::exit_code(status);
    // Only when the command itself died of SIGKILL under a memory limit: a helper process
    // killed by the OOM killer while the command went on is not the container's end.
    let oom = memory_limit.is_some() && exit_code == 137 && cg.oom_kills() > 0;
    if !message.is_empty() && status != 0 && !oom && exit_code == 125 && !timed_out {
        return Err(RunError::Setup(message));
    }
    let signal = if libc::WIFSIGNALED(status) {
        Some(libc::WTERMSIG(status))
    } else {
        init_signal
    };
    Ok(Outcome {
        exit_code: if oom { 137 } else { exit_code },
        signal,
        timed_out,
        // 126/127: the command could not be started; the caller says why.
        message: (!message.is_empty() && status != 0 && !oom).then_some(message),
        oom_limit: oom.then_some(memory_limit.unwrap_or(0)),
        notice: None,
    })
}

/// The container's cgroup (none without root: the PID namespace alone holds the tasks),
/// named after our pid and the time, and the layout it was made in.
fn make_cgroup(
    opts: &RunOptions,
    limits: &cgroup::Limits,
    t0: std::time::Instant,
) -> Result<(cgroup::Layout, cgroup::Cgroup), RunError> {
    let id = format!(
        "rootpack-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let (layout, limits) = if opts.rootless {
        (cgroup::Layout::None, rootless_limits(opts, limits)?)
    } else {
        (cgroup::Layout::detect(), limits.clone())
    };
    let cg = cgroup::Cgroup::create(&layout, &id, &limits).map_err(RunError::Cgroup)?;
    log::debug!(
        "cgroup {id}: memory {:?}, pids {:?}, cpus {:?} ({:.1} ms)",
        limits.memory,
        limits.pids,
        limits.cpus,
        ms(t0)
    );
    Ok((layout, cg))
}

/// Without root there is no cgroup: limits asked for on the command line are refused,
/// the manifest's are not applied (with a warning, as rootless Docker does on cgroup v1).
fn rootless_limits(opts: &RunOptions, limits: &cgroup::Limits) -> Result<cgroup::Limits, RunError> {
    if opts.memory.is_some() || opts.cpus.is_some() || opts.pids.is_some() {
        return Err(RunError::Invalid(
            "--memory, --cpus and --pids need root: a container started without root has no \
             cgroup"
                .into(),
        ));
    }
    if *limits != cgroup::Limits::default() && !opts.no_manifest {
        log::warn!("the manifest's limits are not applied: a container without root has no cgroup");
    }
    Ok(cgroup::Limits::default())
}

/// Forks into new mount, UTS, IPC and PID namespaces (network unless the host's or a
/// joined one, user with `--userns` or without root): 0 in the child, its pid in the
/// parent. A joined network namespace (`join`) is entered around the clone, so the
/// child starts in it whatever user namespace it gets.
///
/// The process must be single-threaded (checked): the child is a copy of this one
/// thread, and a lock another thread held (the allocator's) would stay locked in it.
fn clone_into_namespaces(opts: &RunOptions, join: Option<&network::Joined>) -> io::Result<i32> {
    single_threaded()?;
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    if opts.network.new_namespace() {
        flags |= libc::CLONE_NEWNET;
    }
    if opts.userns || opts.rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    let Some(join) = join else {
        return clone_checked(flags);
    };
    join.enter()?;
    let pid = clone_checked(flags);
    if pid.as_ref().is_ok_and(|&p| p == 0) {
        return pid;
    }
    join.leave()?;
    pid
}

/// Fails unless the process has one thread: a clone copies the calling thread only, and
/// a lock another thread held (the allocator's) would stay locked in the child. Checked
/// before anything that changes what `/proc` shows us.
pub(crate) fn single_threaded() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "rootpack runs {threads} threads; a container is cloned from one"
        )));
    }
    Ok(())
}

/// clone(2) as a fork into the namespaces of `flags`: 0 in the child, its pid in the
/// parent. The caller has checked [`single_threaded`].
pub(crate) fn clone_checked(flags: libc::c_int) -> io::Result<i32> {
    // SAFETY: clone without CLONE_VM behaves as fork; the caller is single-threaded.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// Milliseconds since `t`, for the verbose timings.
fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The signal mask from before blocking, put back on drop.
struct RestoreMask(libc::sigset_t);

impl Drop for RestoreMask {
    fn drop(&mut self) {
        // SAFETY: restoring our own mask.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// What the child wrote on its error pipe before exiting (empty if nothing).
fn read_message(err: OwnedFd) -> String {
    let mut message = String::new();
    let _ = std::fs::File::from(err).read_to_string(&mut message);
    message
}
