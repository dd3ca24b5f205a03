//! `exec`: a new process in a running container: its cgroups and every namespace it has
//! of its own joined, then the process from `--process` (or the container's, with the
//! arguments and flags given) set up as `create` sets up the first.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::state::{Container, Status};
use super::{Error, Global, process};

/// `exec`'s arguments, as runc takes them.
#[derive(Debug, Default, clap::Args)]
pub struct ExecArgs {
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(short, long)]
    pub env: Vec<String>,
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    #[arg(short, long = "cap")]
    pub caps: Vec<String>,
    #[arg(long)]
    pub no_new_privs: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc's callers; the process runs in the container's groups.
    #[arg(long)]
    pub cgroup: Option<String>,
    pub id: String,
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub args: Vec<String>,
}

/// The namespaces joined, in order: the user namespace's privileges for the others, the
/// mount namespace after those that are named by path.
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

/// The process: `--process FILE`, else the container's own with the arguments and flags.
fn process_for(c: &Container, a: &ExecArgs) -> Result<Process, Error> {
    if let Some(path) = &a.process {
        let text = fs::read(path)
            .map_err(|e| Error::Other(format!("--process {}: {e}", path.display())))?;
        return serde_json::from_slice(&text)
            .map_err(|e| Error::Other(format!("--process {}: {e}", path.display())));
    }
    if a.args.is_empty() {
        return Err(Error::Usage(
            "exec: give a command, or --process FILE".into(),
        ));
    }
    let spec = c.spec()?;
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.args.clone())).set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.into());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(user) = &a.user {
        let (uid, gid) = crate::ids::parse_uid_gid(user)
            .ok_or_else(|| Error::Usage(format!("--user {user:?}: expected UID[:GID]")))?;
        let mut u = p.user().clone();
        u.set_uid(uid).set_gid(gid);
        p.set_user(u);
    }
    if !a.additional_gids.is_empty() {
        let mut u = p.user().clone();
        u.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(u);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.caps {
            let cap: oci_spec::runtime::Capability = name
                .parse()
                .map_err(|_| Error::Usage(format!("--cap {name:?}: unknown capability")))?;
            let add = |s: &Option<oci_spec::runtime::Capabilities>| {
                let mut s = s.clone().unwrap_or_default();
                s.insert(cap);
                Some(s)
            };
            let (b, e, p2) = (
                add(caps.bounding()),
                add(caps.effective()),
                add(caps.permitted()),
            );
            caps.set_bounding(b).set_effective(e).set_permitted(p2);
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// The namespaces of `pid` that differ from ours, opened.
fn namespaces_of(pid: i32) -> Result<Vec<(libc::c_int, OwnedFd)>, Error> {
    let mut out = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{pid}/ns/{name}");
        let (Ok(t), Ok(o)) = (
            fs::metadata(&theirs),
            fs::metadata(format!("/proc/self/ns/{name}")),
        ) else {
            continue;
        };
        if (t.dev(), t.ino()) == (o.dev(), o.ino()) {
            continue;
        }
        let fd = fs::File::open(&theirs).map_err(|e| Error::Other(format!("{theirs}: {e}")))?;
        out.push((*flag, fd.into()));
    }
    Ok(out)
}

/// Runs the exec; returns the exit status to leave with (0 when detached).
pub fn exec(g: &Global, a: &ExecArgs) -> Result<i32, Error> {
    let c = Container::open(&g.root, &a.id)?;
    let saved = c.load()?;
    match c.status(&saved) {
        Status::Running | Status::Created => {}
        Status::Paused => return Err(Error::Other(format!("container {:?} is paused", a.id))),
        _ => return Err(Error::NotRunning(a.id.clone())),
    }
    let spec = c.spec()?;
    let p = process_for(&c, a)?;
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(super::seccomp::filter)
        .transpose()?;
    let plan = process::plan(&p, seccomp)?;
    // Our lock is not the process's: released before it runs.
    drop(c);
    enter(saved.pid, &saved.cgroup_paths, &plan, a)
}

/// Runs `plan` in the cgroups and namespaces of the container whose process is `pid`;
/// the exit status to leave with (0 when detached).
pub fn enter(
    container_pid: i32,
    cgroup_paths: &[PathBuf],
    plan: &process::Plan,
    a: &ExecArgs,
) -> Result<i32, Error> {
    let namespaces = namespaces_of(container_pid)?;
    let console = console(a, plan.terminal)?;
    let pid_file = a
        .pid_file
        .as_deref()
        .map(super::create::PidFile::open)
        .transpose()?;
    crate::run::single_threaded().map_err(|e| Error::Other(format!("exec: {e}")))?;
    for dir in cgroup_paths {
        fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| Error::Other(format!("joining {}: {e}", dir.display())))?;
    }
    for (flag, fd) in &namespaces {
        // SAFETY: setns on an fd we opened.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } < 0 {
            return Err(Error::Other(format!(
                "joining the container's namespaces: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    drop(namespaces);
    let set = crate::run::init::signal_set();
    let old = crate::run::init::block(&set);
    let (ready_r, ready_w) = crate::run::pipe().map_err(|e| Error::Other(format!("pipe: {e}")))?;
    let pid = crate::run::clone_checked(0).map_err(|e| Error::Other(format!("fork: {e}")))?;
    if pid == 0 {
        drop(ready_r);
        child(
            plan,
            console.as_ref().map(|(_, theirs)| theirs),
            ready_w,
            a.preserve_fds,
            &old,
        );
    }
    drop(ready_w);
    let mut message = String::new();
    let _ = fs::File::from(ready_r).read_to_string(&mut message);
    if !message.is_empty() {
        // SAFETY: reaping our own child, which failed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        let code = if message.contains("not found") || message.contains("no such file") {
            127
        } else {
            126
        };
        return Err(Error::Status(code, message));
    }
    if let Some(f) = &pid_file {
        f.write(pid)?;
    }
    if a.detach {
        return Ok(0);
    }
    let pty = console
        .as_ref()
        .and_then(|(ours, _)| ours.as_ref())
        .and_then(crate::run::tty::receive_master);
    let relay = pty.as_ref().map(|p| p.relay());
    let status = crate::run::wait::wait_forwarding(pid, &set, pty.as_ref());
    if let Some(relay) = relay {
        relay.finish();
    }
    Ok(crate::run::init::exit_code(status))
}

/// The console: the caller's socket, or with `-t` in the foreground a pair of our own
/// whose master we relay. (ours to receive on, the child's to send through)
type Console = (Option<OwnedFd>, OwnedFd);

fn console(a: &ExecArgs, terminal: bool) -> Result<Option<Console>, Error> {
    if !terminal {
        return Ok(None);
    }
    if let Some(path) = &a.console_socket {
        let s = std::os::unix::net::UnixStream::connect(path)
            .map_err(|e| Error::Other(format!("--console-socket {}: {e}", path.display())))?;
        return Ok(Some((None, s.into())));
    }
    if a.detach {
        return Err(Error::Usage(
            "--tty with --detach needs --console-socket".into(),
        ));
    }
    let (ours, theirs) =
        crate::run::tty::console_pair().map_err(|e| Error::Other(format!("console: {e}")))?;
    Ok(Some((Some(ours), theirs)))
}

/// The new process: console, program checked (reported on `ready`), then exec.
fn child(
    plan: &process::Plan,
    console: Option<&OwnedFd>,
    ready: OwnedFd,
    preserve_fds: u32,
    old: &libc::sigset_t,
) -> ! {
    let fail = |m: &str| -> ! {
        let _ = rustix::io::write(&ready, m.as_bytes());
        // SAFETY: leaving the forked copy.
        unsafe { libc::_exit(1) }
    };
    if let Some(sock) = console
        && let Err(e) = process::attach_console(sock.as_raw_fd(), false)
    {
        fail(&format!("process.terminal: {e}"));
    }
    let program: CString = match process::find_program(plan) {
        Ok(p) => p,
        Err(e) => fail(&e),
    };
    // SAFETY: our mask back before the program's own is set in exec.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
    drop(ready);
    process::exec(plan, &program, preserve_fds)
}
