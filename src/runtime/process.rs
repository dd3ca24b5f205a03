//! The container's process from `process` of a spec (or an `exec --process` file): read
//! and checked in the parent, applied in the child right before `execve`.

use std::ffi::CString;
use std::io;
use std::os::unix::io::RawFd;

use oci_spec::runtime::{Capability, LinuxCapabilities, Process};

use super::Error;
use crate::run::rlimit::Ulimit;
use crate::run::seccomp::Filter;
use crate::run::security::cap_number;

/// The five capability sets as masks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// PATH of `env`, where a bare program name is looked up.
    pub path: String,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: Caps,
    pub no_new_privs: bool,
    pub rlimits: Vec<Ulimit>,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    pub seccomp: Option<Filter>,
    pub apparmor: Option<String>,
    pub selinux: Option<String>,
}

fn cstring(s: &str, key: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Other(format!("{key}: {s:?} contains a NUL byte")))
}

fn mask(set: &Option<std::collections::HashSet<Capability>>, key: &str) -> Result<u64, Error> {
    let mut m = 0u64;
    for cap in set.iter().flatten() {
        let name = cap.to_string();
        let n = cap_number(&name)
            .ok_or_else(|| Error::Other(format!("{key}: unknown capability {name}")))?;
        m |= 1 << n;
    }
    Ok(m)
}

fn caps(c: Option<&LinuxCapabilities>) -> Result<Caps, Error> {
    let Some(c) = c else {
        return Ok(Caps::default());
    };
    Ok(Caps {
        bounding: mask(c.bounding(), "process.capabilities.bounding")?,
        effective: mask(c.effective(), "process.capabilities.effective")?,
        permitted: mask(c.permitted(), "process.capabilities.permitted")?,
        inheritable: mask(c.inheritable(), "process.capabilities.inheritable")?,
        ambient: mask(c.ambient(), "process.capabilities.ambient")?,
    })
}

pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

/// Reads `process` (and the spec's seccomp, which applies to it).
pub fn plan(p: &Process, seccomp: Option<Filter>) -> Result<Plan, Error> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::Other("process.args: no command".into()));
    }
    let env = p.env().clone().unwrap_or_default();
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_string();
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(Error::Other(format!(
            "process.cwd {cwd:?}: must be an absolute path"
        )));
    }
    let rlimits = p
        .rlimits()
        .iter()
        .flatten()
        .map(|r| {
            let name = format!("{:?}", r.typ()).to_ascii_lowercase();
            let name = name.trim_start_matches("rlimit").to_string();
            Ulimit::parse(&format!("{name}={}:{}", r.soft(), r.hard()))
                .map_err(|e| Error::Other(format!("process.rlimits {:?}: {e}", r.typ())))
        })
        .collect::<Result<_, _>>()?;
    let apparmor = p.apparmor_profile().clone().filter(|s| !s.is_empty());
    if apparmor.is_some() && !apparmor_enabled() {
        return Err(Error::Other(
            "process.apparmorProfile: AppArmor is not enabled on this host".into(),
        ));
    }
    let selinux = p.selinux_label().clone().filter(|s| !s.is_empty());
    if selinux.is_some() && !selinux_enabled() {
        return Err(Error::Other(
            "process.selinuxLabel: SELinux is not enabled on this host".into(),
        ));
    }
    let user = p.user();
    Ok(Plan {
        args: args
            .iter()
            .map(|a| cstring(a, "process.args"))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring(e, "process.env"))
            .collect::<Result<_, _>>()?,
        path,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps: caps(p.capabilities().as_ref())?,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        rlimits,
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        seccomp,
        apparmor,
        selinux,
    })
}

/// The program to execute, checked the way runc reports it (engines map these words to
/// 127 and 126): found in PATH, a file, executable.
pub fn find_program(plan: &Plan) -> Result<CString, String> {
    let name = plan.args[0].to_string_lossy().into_owned();
    let Some(found) = crate::run::init::find_program(&plan.args[0], &plan.path) else {
        return Err(format!(
            "exec: {name:?}: executable file not found in $PATH"
        ));
    };
    let shown = found.to_string_lossy().into_owned();
    match std::fs::metadata(&shown) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "exec: {name:?}: stat {shown}: no such file or directory"
        )),
        Err(e) => Err(format!("exec: {name:?}: {e}")),
        // SAFETY: access(2) on a C string.
        Ok(m) if m.is_dir() || unsafe { libc::access(found.as_ptr(), libc::X_OK) } != 0 => {
            Err(format!("exec: {name:?}: permission denied"))
        }
        Ok(_) => Ok(found),
    }
}

fn check(r: libc::c_long, what: &str) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Bounding set, ids (keeping capabilities across the change), then the other four sets.
fn set_credentials(plan: &Plan) -> io::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    // SAFETY: prctl and credential calls with integer arguments and a valid array.
    unsafe {
        for cap in 0..=last.min(63) {
            if plan.caps.bounding & (1 << cap) == 0 {
                let r = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    check(r.into(), "dropping from the bounding set")?;
                }
            }
        }
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into(),
            "keeping capabilities",
        )?;
        check(
            libc::setgroups(plan.groups.len(), plan.groups.as_ptr()).into(),
            "setgroups",
        )?;
        check(
            libc::setresgid(plan.gid, plan.gid, plan.gid).into(),
            "setgid",
        )?;
        check(
            libc::setresuid(plan.uid, plan.uid, plan.uid).into(),
            "setuid",
        )?;
        check(
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0).into(),
            "keeping capabilities",
        )?;
    }
    let c = plan.caps;
    crate::run::security::set_capability_sets(c.effective, c.permitted, c.inheritable)?;
    for cap in 0..64u32 {
        if plan.caps.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            // Only one also inheritable can be raised; runc goes on without the others.
            if r < 0 {
                log::debug!(
                    "ambient capability {cap} not raised: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

/// Marks every fd from `first` on close-on-exec (the preserved ones below it stay).
fn cloexec_from(first: u32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
}

/// Where the process's last steps go wrong: the message is printed on its stderr (the
/// runtime that started it is gone) and it exits as a shell would.
fn die(code: i32, message: &str) -> ! {
    let line = format!("rootpack-runtime: {message}\n");
    // SAFETY: write(2) of a live buffer to fd 2, then _exit.
    unsafe {
        libc::write(2, line.as_ptr().cast(), line.len());
        libc::_exit(code)
    }
}

/// The last steps, in runc's order: rlimits, the umask and the cwd, the LSM label, the
/// filter (before the ids change when no_new_privs is off, since loading it then needs
/// CAP_SYS_ADMIN), the credentials, no_new_privs, the filter (otherwise), `execve`.
pub fn exec(plan: &Plan, program: &CString, preserve_fds: u32) -> ! {
    let step = |r: io::Result<()>, what: &str| {
        if let Err(e) = r {
            die(1, &format!("{what}: {e}"));
        }
    };
    for r in &plan.rlimits {
        step(r.set(), "process.rlimits");
    }
    if let Some(m) = plan.umask {
        // SAFETY: umask always succeeds.
        unsafe { libc::umask(m as libc::mode_t) };
    }
    step(enter_cwd(&plan.cwd), "process.cwd");
    if let Some(profile) = &plan.apparmor {
        step(
            std::fs::write("/proc/self/attr/apparmor/exec", format!("exec {profile}")),
            "process.apparmorProfile",
        );
    }
    if let Some(label) = &plan.selinux {
        step(
            std::fs::write("/proc/self/attr/exec", label),
            "process.selinuxLabel",
        );
    }
    let load = |f: &Filter| step(f.install(), "linux.seccomp");
    if !plan.no_new_privs
        && let Some(f) = &plan.seccomp
    {
        load(f);
    }
    step(set_credentials(plan), "process.user");
    if plan.no_new_privs {
        step(
            crate::run::security::set_no_new_privs(),
            "process.noNewPrivileges",
        );
        if let Some(f) = &plan.seccomp {
            load(f);
        }
    }
    cloexec_from(3 + preserve_fds);
    let argv = crate::run::init::null_terminated(&plan.args);
    let envp = crate::run::init::null_terminated(&plan.env);
    // SAFETY: default dispositions and an empty mask for the new program; execve with
    // NUL-terminated arrays that outlive the call.
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    let e = io::Error::last_os_error();
    let code = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    die(code, &format!("exec {}: {e}", program.to_string_lossy()))
}

/// The cwd, resolved inside the root without magic links (see
/// [`crate::run::init::enter_workdir`]); it must exist.
fn enter_cwd(cwd: &str) -> io::Result<()> {
    let rel = crate::tree::safe_path::RelPath::parse(cwd.as_bytes())
        .map_err(|_| io::Error::other(format!("{cwd:?}: not a path in the container")))?;
    crate::run::init::enter_workdir(&rel, false)
        .map_err(|e| io::Error::new(e.kind(), format!("{cwd}: {e}")))
}

/// With `terminal`: a pty from the container's devpts, its master sent through the
/// console socket, the slave made stdio and the controlling terminal (and bound on
/// `/dev/console` for a container's first process).
pub fn attach_console(socket: RawFd, bind_console: bool) -> io::Result<()> {
    crate::run::tty::attach_console(socket)?;
    if bind_console {
        let console = std::path::Path::new("/dev/console");
        if !console.exists() {
            std::fs::File::create(console)?;
        }
        super::mounts::mount(
            Some(std::path::Path::new("/proc/self/fd/0")),
            console,
            None,
            libc::MS_BIND,
            "",
        )?;
    }
    Ok(())
}
