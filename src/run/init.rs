//! The container's PID 1 and the command it starts.
//!
//! PID 1 of a PID namespace gets no signal it has no handler for and must reap every
//! orphan, so a plain program makes a poor PID 1. Our init forks the command, keeps the
//! forwarded signals blocked and takes them with `sigwaitinfo` (no async handler), passes
//! each to the command, reaps whatever exits, and leaves with the command's status
//! (128+N when it was killed by signal N).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};

use super::seccomp::Filter;
use super::security;
use crate::tree::safe_path::{RelPath, Root};

/// What to execute and how.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// Inside the container's root; resolved there, never through a magic link.
    pub workdir: RelPath,
    pub user: Option<(u32, u32)>,
    /// A user named in the image: looked up in its /etc/passwd and /etc/group once the
    /// root is the container's; wins over `user`.
    pub user_name: Option<super::user::UserSpec>,
    pub capabilities: u64,
    /// Set no_new_privs: set-id programs and file capabilities gain nothing.
    pub no_new_privs: bool,
    /// `-t`: the socket to send a new pty's master through (see [`super::tty`]).
    pub console: Option<RawFd>,
    /// PATH to search when argv[0] has no slash.
    pub path: String,
    /// Loaded right before `execve`; `None` when unconfined.
    pub seccomp: Option<Filter>,
}

/// The signals rootpack and the init pass on to the command.
pub const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The forwarded signals plus SIGCHLD, as a set.
pub fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED.iter().chain([libc::SIGCHLD].iter()) {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks `set` (to be taken by `sigwaitinfo`), returning the previous mask.
pub fn block(set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: sigprocmask with valid pointers.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, set, &mut old);
        old
    }
}

/// The exit status a shell would report for a wait status.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// What the init writes on the error pipe when the command was killed by a signal (the
/// init's own status can only say 128+N, as an exit code).
const SIGNALED: &str = "\0killed by signal ";

/// Splits the error pipe's text into the message and the signal the init reported.
pub fn split_signal(mut message: String) -> (String, Option<i32>) {
    match message.find(SIGNALED) {
        Some(at) => {
            let signal = message[at + SIGNALED.len()..].trim().parse().ok();
            message.truncate(at);
            (message, signal)
        }
        None => (message, None),
    }
}

/// Writes a one-line error to the parent and exits with `code`. Never returns.
pub fn fail(err_fd: RawFd, code: i32, message: &str) -> ! {
    let mut f = std::mem::ManuallyDrop::new(unsafe_file(err_fd));
    let _ = f.write_all(message.as_bytes());
    // SAFETY: _exit skips destructors and atexit handlers, which belong to the parent.
    unsafe { libc::_exit(code) }
}

fn unsafe_file(fd: RawFd) -> std::fs::File {
    use std::os::unix::io::FromRawFd;
    // SAFETY: the caller owns `fd`; the File is never dropped (ManuallyDrop).
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// The pointer array execve takes: each string's pointer, then NULL.
pub(crate) fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

pub(crate) fn find_program(name: &CString, path: &str) -> Option<CString> {
    let bytes = name.as_bytes();
    if bytes.contains(&b'/') {
        return Some(name.clone());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = CString::new(format!("{dir}/{}", String::from_utf8_lossy(bytes))).ok()?;
        // SAFETY: access on a valid C string.
        (unsafe { libc::access(candidate.as_ptr(), libc::X_OK) } == 0).then_some(candidate)
    })
}

/// Drops privileges as the spec says and executes the command. Never returns: on failure
/// it reports to `err_fd` and exits 126 (cannot execute) or 127 (not found).
///
/// With a `gate`, waits for it to close before `execve` (and before the filter, with
/// no_new_privs): nothing of the container runs until then (see [`run_init`]), while
/// everything before it overlaps the init's own exec.
pub fn exec_command(
    spec: &ProcessSpec,
    err_fd: RawFd,
    old_mask: &libc::sigset_t,
    gate: Option<OwnedFd>,
) -> ! {
    let step = |r: io::Result<()>| {
        if let Err(e) = r {
            fail(err_fd, 125, &format!("preparing the command: {e}"));
        }
    };
    if let Some(socket) = spec.console
        && let Err(e) = super::tty::attach_console(socket)
    {
        fail(err_fd, 125, &format!("allocating a terminal: {e}"));
    }
    if let Err(e) = enter_workdir(&spec.workdir, true) {
        fail(err_fd, 125, &format!("workdir /{}: {e}", spec.workdir));
    }
    let mut env = spec.env.clone();
    let user = command_user(spec, &mut env, err_fd);
    drop_privileges(spec, user, err_fd);
    step(security::cloexec_from_3());
    let program = program_or_fail(spec, err_fd);
    let argv = null_terminated(&spec.argv);
    let envp = null_terminated(&env);
    // SAFETY: restoring default dispositions (Rust ignores SIGPIPE) and the signal mask
    // the command should start with.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
    }
    if let Some(gate) = gate {
        let mut byte = [0u8; 1];
        // EOF: the init has become the sealed copy (or died, and so will we).
        while let Err(rustix::io::Errno::INTR) = rustix::io::read(&gate, &mut byte) {}
    }
    // With no_new_privs (which lets it load without CAP_SYS_ADMIN), last, so that nothing
    // of ours runs under a profile that may refuse it.
    if spec.no_new_privs {
        load_filter(spec, err_fd);
    }
    // SAFETY: execve with NUL-terminated arrays that outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    fail(
        err_fd,
        code,
        &format!("executing {}: {e}", program.to_string_lossy()),
    );
}

/// The command's privileges: the bounding set cut to its capabilities (what a set-id
/// program or a file's capabilities can give it at most), its ids, its capability sets
/// (a user other than root holds none, as in Docker), then no_new_privs if asked for.
///
/// Without no_new_privs, loading the filter needs CAP_SYS_ADMIN, held only until the ids
/// and capabilities change: it is loaded before them, as runc does, and what is left of
/// the preparation runs under it (Docker's profile allows all of it).
fn drop_privileges(spec: &ProcessSpec, user: Option<(u32, u32)>, err_fd: RawFd) {
    let step = |r: io::Result<()>| {
        if let Err(e) = r {
            fail(err_fd, 125, &format!("preparing the command: {e}"));
        }
    };
    step(security::limit_bounding_set(spec.capabilities));
    if !spec.no_new_privs {
        load_filter(spec, err_fd);
    }
    if let Some((uid, gid)) = user
        && let Err(e) = security::switch_ids(uid, gid)
    {
        fail(err_fd, 125, &format!("switching to user {uid}:{gid}: {e}"));
    }
    if user.is_none_or(|(uid, _)| uid == 0) {
        step(security::set_capabilities(spec.capabilities));
    } else {
        // The id change emptied effective and permitted; the inheritable set goes too, so
        // that a file's inheritable capabilities find nothing to take over.
        step(security::set_capability_sets(0, 0, 0));
    }
    if spec.no_new_privs {
        step(security::set_no_new_privs());
    }
}

fn load_filter(spec: &ProcessSpec, err_fd: RawFd) {
    if let Some(filter) = &spec.seccomp
        && let Err(e) = filter.install()
    {
        fail(err_fd, 125, &format!("loading the seccomp filter: {e}"));
    }
}

/// The ids the command runs as: a named user looked up in the image (its HOME added to
/// `env` unless set), or the numeric ones. A name the image lacks fails the start.
fn command_user(spec: &ProcessSpec, env: &mut Vec<CString>, err_fd: RawFd) -> Option<(u32, u32)> {
    let Some(name) = &spec.user_name else {
        return spec.user;
    };
    match lookup_user(name) {
        Ok(found) => {
            if !env.iter().any(|e| e.as_bytes().starts_with(b"HOME=")) {
                let home = found.home.as_deref().unwrap_or("/");
                env.extend(CString::new(format!("HOME={home}")).ok());
            }
            Some((found.uid, found.gid))
        }
        Err(e) => fail(err_fd, 125, &format!("--user: {e}")),
    }
}

/// The program to execute, found in PATH unless it has a slash; exit 127 when missing.
fn program_or_fail(spec: &ProcessSpec, err_fd: RawFd) -> CString {
    if let Some(program) = spec.argv.first().and_then(|a| find_program(a, &spec.path)) {
        return program;
    }
    let name = spec
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    fail(
        err_fd,
        127,
        &format!(
            "{name}: command not found in the image (PATH={})",
            spec.path
        ),
    )
}

/// Resolves a named user in the container's own `/etc/passwd` and `/etc/group` (we are
/// in its root now; a missing `/etc/group` only matters when a group is named).
fn lookup_user(name: &super::user::UserSpec) -> Result<super::user::Resolved, String> {
    let read = |path: &str| -> Result<String, String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut text = String::new();
        // Non-blocking and capped: the image is not trusted to make it a small file.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match opened {
            Ok(f) => f
                .take(4 << 20)
                .read_to_string(&mut text)
                .map(|_| text)
                .map_err(|e| format!("reading the image's {path}: {e}")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(format!("reading the image's {path}: {e}")),
        }
    };
    name.resolve(&read("/etc/passwd")?, &read("/etc/group")?)
}

/// Makes `workdir` (inside the root, created if missing, as Docker does) the current
/// folder. Resolved with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `/proc/self/fd/N` names
/// a magic link and is refused, so a leaked host folder cannot become the cwd
/// (CVE-2024-21626); `..` and absolute symlinks stay inside the root.
pub(crate) fn enter_workdir(workdir: &RelPath, create: bool) -> io::Result<()> {
    let root = Root::open(std::path::Path::new("/"))?;
    let dir = root.open_dir(workdir.as_bytes(), create)?;
    rustix::process::fchdir(&dir)?;
    Ok(())
}

/// The name PID 1 runs under in the container (`ps`, `/proc/1/cmdline`).
pub const INIT_NAME: &str = "rootpack-init";

/// The init proper, `pid1.c` compiled by the build script: static and freestanding.
const PID1: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pid1"));

/// The init as a sealed in-memory file (no write, grow or shrink, and no more seals), for
/// [`run_init`] to execute: made in rootpack before the clone, a few kilobytes.
pub fn sealed_init() -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Executable asked for explicitly: hosts with vm.memfd_noexec set make memfds
    // non-executable by default (Linux 6.3); older kernels know no such flag.
    let fd = match rustix::fs::memfd_create(INIT_NAME, flags | MemfdFlags::EXEC) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create(INIT_NAME, flags)?,
        other => other?,
    };
    let mut file = std::fs::File::from(fd);
    file.write_all(PID1)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(file.into())
}

/// Runs as PID 1: starts the command, then replaces itself with the sealed init `exe`
/// ([`sealed_init`]), which forwards signals, reaps, and exits with the command's status
/// (see `pid1.c`). Never returns.
///
/// # Security
///
/// A process cloned from rootpack shows rootpack's host binary as `/proc/1/exe`; a
/// container with CAP_SYS_PTRACE could open it and rewrite the host's rootpack once it is
/// no longer running (CVE-2019-5736, runc's binary). After the exec, `/proc/1/exe` is a
/// sealed memfd that exists nowhere else. The command prepares itself meanwhile and
/// waits, right before its filter and `execve`, at a gate (a pipe that the init's exec
/// closes), so that nothing of the container runs before that.
pub fn run_init(spec: &ProcessSpec, err_fd: RawFd, old_mask: &libc::sigset_t, exe: &OwnedFd) -> ! {
    let (gate_r, gate_w) = match rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) {
        Ok(p) => p,
        Err(e) => fail(err_fd, 125, &format!("starting the command: {e}")),
    };
    // SAFETY: fork in a single-threaded process.
    let child = unsafe { libc::fork() };
    if child < 0 {
        fail(
            err_fd,
            125,
            &format!("starting the command: {}", io::Error::last_os_error()),
        );
    }
    if child == 0 {
        drop(gate_w);
        exec_command(spec, err_fd, old_mask, Some(gate_r));
    }
    drop(gate_r);
    // SAFETY: closing our copy of the console socket; the command holds its own.
    if let Some(socket) = spec.console {
        unsafe { libc::close(socket) };
    }
    // The init keeps nothing the container could use: after the exec it holds no
    // capability (an exec as root gets what the bounding set and the inheritable set
    // keep: both emptied).
    let _ = security::limit_bounding_set(0);
    let _ = security::set_capabilities(0);
    let exec = || -> io::Result<()> {
        // The error pipe stays open across the exec, to report a signal.
        rustix::io::fcntl_setfd(
            unsafe { std::os::unix::io::BorrowedFd::borrow_raw(err_fd) },
            rustix::io::FdFlags::empty(),
        )?;
        let argv = [
            CString::new(INIT_NAME)?,
            CString::new(child.to_string())?,
            CString::new(err_fd.to_string())?,
        ];
        let argv = null_terminated(&argv);
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: execveat with NUL-terminated arrays that outlive the call.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                exe.as_raw_fd(),
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        Err(io::Error::last_os_error())
    };
    let e = exec().unwrap_err();
    // SAFETY: the command must not start outside the sealed init.
    unsafe { libc::kill(child, libc::SIGKILL) };
    fail(err_fd, 125, &format!("starting the container's init: {e}"))
}
