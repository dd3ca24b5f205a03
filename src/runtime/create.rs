//! `create`: a container's process made from a bundle, with everything set up, waiting on
//! its exec fifo for `start`.
//!
//! The runtime process joins the container's cgroup (so the clone starts in it, and a new
//! cgroup namespace is rooted there), joins the namespaces the spec names by path, and
//! clones the process into the new ones. The process waits for the maps and hooks, builds
//! its root, reports ready, and blocks opening the fifo; then the runtime writes the state
//! and the pid file and exits, leaving the process to the caller (its subreaper).

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxDeviceCgroup;

use super::plan::{Plan, load_spec, plan};
use super::state::{self, Container, Saved};
use super::{Error, Global, cgroups, hooks, mounts};
use crate::run::cgroup::Layout;

/// `create`'s arguments, as runc takes them.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub id: String,
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub no_pivot: bool,
    #[arg(long)]
    pub no_new_keyring: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
}

pub fn create(g: &Global, args: &CreateArgs) -> Result<(), Error> {
    let bundle = fs::canonicalize(&args.bundle)
        .map_err(|e| Error::Other(format!("bundle {}: {e}", args.bundle.display())))?;
    state::check_id(&args.id)?;
    let spec = load_spec(&bundle)?;
    let plan = plan(spec, &bundle, args)?;
    let root = state::open_root(&g.root)?;
    let container = Container::create(&root, &args.id)?;
    let made = Made::default();
    match create_in(g, args, &bundle, plan, &container, made) {
        Ok(()) => Ok(()),
        Err((e, made)) => {
            made.undo();
            let _ = container.remove();
            Err(e)
        }
    }
}

/// What a failed create must take back.
#[derive(Default)]
struct Made {
    pid: Option<i32>,
    groups: Vec<PathBuf>,
    own_groups: Vec<PathBuf>,
}

impl Made {
    fn undo(self) {
        if let Some(pid) = self.pid {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        // Out of the container's groups before removing them.
        for dir in &self.own_groups {
            let _ = fs::write(dir.join("cgroup.procs"), std::process::id().to_string());
        }
        let _ = cgroups::remove(&self.groups);
    }
}

type Failed = (Error, Made);

fn create_in(
    g: &Global,
    args: &CreateArgs,
    bundle: &Path,
    plan: Plan,
    container: &Container,
    mut made: Made,
) -> Result<(), Failed> {
    macro_rules! try_ {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err((e, made)),
            }
        };
    }
    try_!(state_files(bundle, container));
    let linux = plan.spec.linux().clone().unwrap_or_default();
    let layout = Layout::detect();
    let console = match &args.console_socket {
        Some(path) => Some(try_!(connect(path))),
        None => None,
    };
    let (groups, mnt_join) = try_!(enter(g, args, &plan, &layout, &mut made));
    let state_dir: OwnedFd =
        try_!(fs::File::open(&container.dir).map_err(other("state folder"))).into();
    let (ready_r, ready_w) = try_!(crate::run::pipe().map_err(other("pipe")));
    let (go_r, go_w) = try_!(crate::run::pipe().map_err(other("pipe")));
    let cgroup_view = cgroup_view(&layout, &groups);
    let pid = try_!(
        crate::run::single_threaded()
            .and_then(|()| crate::run::clone_checked(plan.clone_flags))
            .map_err(other("clone"))
    );
    if pid == 0 {
        drop(ready_r);
        drop(go_w);
        let child = super::child::Child {
            plan: &plan,
            go: go_r,
            ready: ready_w,
            state_dir,
            console,
            mnt_join,
            cgroups: cgroup_view,
            preserve_fds: args.preserve_fds,
            no_pivot: args.no_pivot,
            new_keyring: !args.no_new_keyring,
        };
        child.main();
    }
    made.pid = Some(pid);
    drop(ready_w);
    drop(go_r);
    for dir in &made.own_groups {
        let _ = fs::write(dir.join("cgroup.procs"), std::process::id().to_string());
    }
    if plan.clone_flags & libc::CLONE_NEWUSER != 0 {
        try_!(write_id_maps(pid, &linux));
    }
    let saved = saved_state(args, bundle, &plan, pid, &groups);
    try_!(create_hooks(&plan, &saved));
    let _ = rustix::io::write(&go_w, b"1");
    drop(go_w);
    try_!(wait_ready(ready_r));
    try_!(groups.set_devices(&device_rules(&linux, &plan.devices)));
    try_!(container.save(&saved));
    if let Some(path) = &args.pid_file {
        try_!(write_pid_file(path, pid));
    }
    std::mem::forget(made);
    Ok(())
}

/// The `prestart` and `createRuntime` hooks, given the state as it is being created.
fn create_hooks(plan: &Plan, saved: &Saved) -> Result<(), Error> {
    let state_json = super::report_json(saved, state::Status::Creating);
    if let Some(h) = plan.spec.hooks() {
        hooks::run("prestart", h.prestart().as_ref(), &state_json)?;
        hooks::run("createRuntime", h.create_runtime().as_ref(), &state_json)?;
    }
    Ok(())
}

fn other(what: &str) -> impl FnOnce(io::Error) -> Error {
    let what = what.to_string();
    move |e| Error::Other(format!("{what}: {e}"))
}

/// The bundle's config.json kept in the state folder, and the fifo `start` opens.
fn state_files(bundle: &Path, container: &Container) -> Result<(), Error> {
    fs::copy(
        bundle.join("config.json"),
        container.dir.join("config.json"),
    )
    .map_err(other("config.json"))?;
    let fifo = CString::new(
        container
            .dir
            .join(state::EXEC_FIFO)
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap_or_default();
    // SAFETY: mkfifo with a C string.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) } < 0 {
        return Err(other("exec.fifo")(io::Error::last_os_error()));
    }
    Ok(())
}

/// The container's cgroups made and limited, and this process moved into them (so the
/// clone starts there; `made` says where it came from) and into the namespaces to join
/// but the mount namespace, which the child enters: given back with the groups.
fn enter(
    g: &Global,
    args: &CreateArgs,
    plan: &Plan,
    layout: &Layout,
    made: &mut Made,
) -> Result<(cgroups::Groups, Option<OwnedFd>), Error> {
    let linux = plan.spec.linux().clone().unwrap_or_default();
    let cg_path = cgroups::path_for(linux.cgroups_path().as_deref(), &args.id, g.systemd_cgroup)?;
    let groups = cgroups::create(layout, &cg_path)?;
    made.groups = groups.dirs.clone();
    if let Some(r) = linux.resources() {
        groups.set(r)?;
    }
    let joins = open_namespaces(&plan.join)?;
    made.own_groups = own_groups(layout);
    groups.add(std::process::id() as i32)?;
    for (flag, fd) in joins.iter().filter(|(f, _)| *f != libc::CLONE_NEWNS) {
        // SAFETY: setns on a namespace fd we opened; affects only this short-lived process.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } < 0 {
            return Err(other("joining a namespace")(io::Error::last_os_error()));
        }
    }
    let mnt_join = joins
        .into_iter()
        .find(|(f, _)| *f == libc::CLONE_NEWNS)
        .map(|(_, fd)| fd);
    Ok((groups, mnt_join))
}

/// What `state.json` keeps of a container just made.
fn saved_state(
    args: &CreateArgs,
    bundle: &Path,
    plan: &Plan,
    pid: i32,
    groups: &cgroups::Groups,
) -> Saved {
    Saved {
        id: args.id.clone(),
        pid,
        start_time: state::start_time(pid).unwrap_or(0),
        bundle: bundle.to_path_buf(),
        rootfs: plan.rootfs.clone(),
        created: crate::time_format::rfc3339_now(),
        annotations: plan
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        owner: String::new(),
        cgroup_paths: groups.dirs.clone(),
        freezer: groups.freezer.clone(),
    }
}

/// The spec's device rules, then what every container may use (runc's allowed devices:
/// making any node, null, zero, full, random, urandom, tty, console, ptmx and the ptys),
/// then the nodes it makes.
fn device_rules(
    linux: &oci_spec::runtime::Linux,
    made: &[oci_spec::runtime::LinuxDevice],
) -> Vec<LinuxDeviceCgroup> {
    use oci_spec::runtime::LinuxDeviceType as T;
    let mut rules: Vec<LinuxDeviceCgroup> = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    if rules.is_empty() {
        return rules;
    }
    let rule = |typ, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true)
            .set_typ(Some(typ))
            .set_major(major)
            .set_minor(minor)
            .set_access(Some(access.into()));
        r
    };
    rules.push(rule(T::C, None, None, "m"));
    rules.push(rule(T::B, None, None, "m"));
    let allowed = [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
    ];
    for (major, minor) in allowed {
        rules.push(rule(T::C, Some(major), minor, "rwm"));
    }
    for d in made {
        rules.push(rule(d.typ(), Some(d.major()), Some(d.minor()), "rwm"));
    }
    rules
}

/// The pid file, written whole (a reader never sees it half-written), as runc does.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<(), Error> {
    PidFile::open(path)?.write(pid)
}

/// A pid file's folder, opened before the namespaces change what paths mean.
pub struct PidFile {
    dir: OwnedFd,
    name: std::ffi::OsString,
    shown: PathBuf,
}

impl PidFile {
    pub fn open(path: &Path) -> Result<PidFile, Error> {
        let err = |e: io::Error| Error::Other(format!("pid file {}: {e}", path.display()));
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| err(io::Error::other("no file name")))?;
        let dir = fs::File::open(parent).map_err(err)?;
        Ok(PidFile {
            dir: dir.into(),
            name: name.to_os_string(),
            shown: path.to_path_buf(),
        })
    }

    pub fn write(&self, pid: i32) -> Result<(), Error> {
        use rustix::fs::{Mode, OFlags};
        let err =
            |e: rustix::io::Errno| Error::Other(format!("pid file {}: {e}", self.shown.display()));
        let mut tmp = std::ffi::OsString::from(".");
        tmp.push(&self.name);
        tmp.push(".tmp");
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let fd =
            rustix::fs::openat(&self.dir, &tmp, flags, Mode::from_raw_mode(0o644)).map_err(err)?;
        rustix::io::write(&fd, pid.to_string().as_bytes()).map_err(err)?;
        rustix::fs::renameat(&self.dir, &tmp, &self.dir, &self.name).map_err(err)
    }
}

fn own_groups(layout: &Layout) -> Vec<PathBuf> {
    match layout {
        Layout::V1(hs) => hs.iter().map(|h| h.dir.clone()).collect(),
        Layout::V2(mnt) => {
            let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let own = text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            vec![mnt.join(own.trim_start_matches('/'))]
        }
        Layout::None => Vec::new(),
    }
}

fn cgroup_view(layout: &Layout, groups: &cgroups::Groups) -> mounts::CgroupView {
    match layout {
        // The v1 hierarchies, as runc shows them (a hybrid host's cgroup2 one is not).
        Layout::V1(hs) => hs
            .iter()
            .zip(&groups.dirs)
            .filter(|(h, _)| !h.is_v2())
            .map(|(h, dir)| (dir.clone(), h.mount_name.clone()))
            .collect(),
        Layout::V2(_) => groups
            .dirs
            .iter()
            .map(|d| (d.clone(), String::new()))
            .collect(),
        Layout::None => Vec::new(),
    }
}

fn connect(path: &Path) -> Result<OwnedFd, Error> {
    let stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| Error::Other(format!("--console-socket {}: {e}", path.display())))?;
    Ok(stream.into())
}

fn open_namespaces(join: &[(libc::c_int, PathBuf)]) -> Result<Vec<(libc::c_int, OwnedFd)>, Error> {
    let mut fds: Vec<(libc::c_int, OwnedFd)> = join
        .iter()
        .map(|(flag, path)| {
            fs::File::open(path)
                .map(|f| (*flag, f.into()))
                .map_err(|e| Error::Other(format!("linux.namespaces path {}: {e}", path.display())))
        })
        .collect::<Result<_, _>>()?;
    // The user namespace first: the others are joined with its privileges.
    fds.sort_by_key(|(flag, _)| *flag != libc::CLONE_NEWUSER);
    Ok(fds)
}

fn write_id_maps(pid: i32, linux: &oci_spec::runtime::Linux) -> Result<(), Error> {
    let text = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect::<String>()
    };
    for (file, key, maps) in [
        ("uid_map", "uidMappings", linux.uid_mappings()),
        ("gid_map", "gidMappings", linux.gid_mappings()),
    ] {
        let path = format!("/proc/{pid}/{file}");
        let content = text(maps);
        if content.is_empty() {
            return Err(Error::Other(format!(
                "linux.{key}: a new user namespace needs them"
            )));
        }
        fs::write(&path, content).map_err(|e| Error::Other(format!("{path}: {e}")))?;
    }
    Ok(())
}

/// Waits for the child's ready byte; its message, when it failed instead.
fn wait_ready(ready: OwnedFd) -> Result<(), Error> {
    let mut file = fs::File::from(ready);
    let mut first = [0u8; 1];
    match file.read(&mut first) {
        Ok(1) if first[0] == 0 => Ok(()),
        Ok(0) => Err(Error::Other(
            "the container's process died while being set up".into(),
        )),
        Ok(_) => {
            let mut rest = String::new();
            let _ = file.read_to_string(&mut rest);
            Err(Error::Other(format!(
                "{}{}",
                first[0] as char,
                rest.trim_end()
            )))
        }
        Err(e) => Err(Error::Other(format!("waiting for the container: {e}"))),
    }
}

/// Opens a file for reading even if it is a FIFO with no writer yet.
pub fn open_nonblocking(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}
