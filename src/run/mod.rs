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
pub mod devices;
pub mod init;
pub mod rlimit;
pub mod rootfs;
pub mod seccomp;
pub mod security;
mod stdio;
mod tty;
pub mod user;
pub mod verify;

use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::manifest::Manifest;
use crate::tree::safe_path::RelPath;
use init::ProcessSpec;
use rootfs::{RootfsSpec, Volume};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// An ext4 image file, or a folder (an image built with `output.format = "dir"`).
    pub image: PathBuf,
    /// Replaces the image's entrypoint and cmd (with `entrypoint`, only the cmd).
    pub command: Vec<String>,
    /// Replaces the image's entrypoint; `command` becomes its arguments.
    pub entrypoint: Option<String>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<(u32, u32)>,
    /// A user (and group) named in the image's `/etc/passwd` and `/etc/group`, looked up
    /// inside the container; wins over `user`.
    pub user_name: Option<user::UserSpec>,
    pub hostname: Option<String>,
    pub writable: bool,
    pub net_host: bool,
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

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((r, w))
}

fn cstring(s: &str, what: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Invalid(format!("{what} {s:?} contains a NUL byte")))
}

/// The manifest beside the image, if there is one; one that cannot be read or parsed is
/// an error, not a silent loss of the image's limits and config.
fn manifest_for(image: &Path) -> Result<Option<Manifest>, RunError> {
    use crate::manifest::ManifestError;
    match crate::manifest::read(&crate::manifest::path_for(image)) {
        Ok(m) => Ok(Some(m)),
        Err(ManifestError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(RunError::Manifest(e)),
    }
}

fn process_spec(
    opts: &RunOptions,
    m: Option<&Manifest>,
    caps: u64,
    console: Option<RawFd>,
    captured: bool,
) -> Result<ProcessSpec, RunError> {
    let config = m.map(|m| m.config.clone()).unwrap_or_default();
    let argv: Vec<String> = if let Some(entrypoint) = &opts.entrypoint {
        std::iter::once(entrypoint.clone())
            .chain(opts.command.iter().cloned())
            .collect()
    } else if opts.command.is_empty() {
        config
            .entrypoint
            .iter()
            .chain(config.cmd.iter())
            .cloned()
            .collect()
    } else {
        opts.command.clone()
    };
    if argv.is_empty() {
        return Err(RunError::Invalid(
            "no command: give one after `--`, or set config.entrypoint in the recipe".into(),
        ));
    }
    let mut env: Vec<(String, String)> = config.env.into_iter().collect();
    env.retain(|(k, _)| !opts.env.iter().any(|(o, _)| o == k));
    env.extend(opts.env.iter().cloned());
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    let (user, user_name) = match (opts.user, &opts.user_name, config.user.as_deref()) {
        (_, Some(n), _) => (None, Some(n.clone())),
        (Some(u), None, _) => (Some(u), None),
        (None, None, Some(u)) => match user::UserSpec::parse(u) {
            Some(spec) => match spec.numeric() {
                Some(ids) => (Some(ids), None),
                None => (None, Some(spec)),
            },
            None => {
                return Err(RunError::Invalid(format!(
                    "config.user {u:?} in the manifest: expected UID[:GID] or NAME[:GROUP]"
                )));
            }
        },
        (None, None, None) => (None, None),
    };
    // A named user's HOME comes from the image's /etc/passwd, once looked up.
    if user_name.is_none() && !env.iter().any(|(k, _)| k == "HOME") {
        let home = if user.is_none_or(|(u, _)| u == 0) {
            "/root"
        } else {
            "/"
        };
        env.push(("HOME".into(), home.into()));
    }
    let interactive = console.is_some() || (!captured && rustix::termios::isatty(std::io::stdin()));
    if interactive && !env.iter().any(|(k, _)| k == "TERM") {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Ok(ProcessSpec {
        argv: argv
            .iter()
            .map(|a| cstring(a, "argument"))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|(k, v)| cstring(&format!("{k}={v}"), "environment variable"))
            .collect::<Result<_, _>>()?,
        workdir: workdir(
            opts.workdir
                .as_deref()
                .or(config.workdir.as_deref())
                .unwrap_or("/"),
        )?,
        user,
        user_name,
        capabilities: caps,
        console,
        path,
        seccomp: seccomp::filter_for(&opts.seccomp, caps).map_err(RunError::Invalid)?,
    })
}

/// The working folder as a path inside the image: absolute, without `..`.
fn workdir(s: &str) -> Result<RelPath, RunError> {
    match RelPath::parse(s.as_bytes()) {
        Ok(p) if s.starts_with('/') => Ok(p),
        _ => Err(RunError::Invalid(format!(
            "workdir {s:?}: an absolute path in the container, without '..'"
        ))),
    }
}

pub use crate::ids::parse_uid_gid as parse_user;

fn image_path(s: &str, what: &str) -> Result<RelPath, RunError> {
    match RelPath::parse(s.as_bytes()) {
        Ok(p) if s.starts_with('/') && !p.is_root() => Ok(p),
        _ => Err(RunError::Invalid(format!(
            "{what} {s:?}: an absolute path in the container, without '..'"
        ))),
    }
}

/// Refuses an image (file or folder) or its manifest (beside `manifest_of`) that other
/// users could change between its check and its use (see [`verify`]).
fn check_writers(
    image: &Path,
    file: Option<&std::fs::File>,
    manifest_of: Option<&PathBuf>,
) -> Result<(), RunError> {
    let meta = match file {
        Some(f) => f.metadata(),
        None => std::fs::metadata(image),
    };
    let meta = meta.map_err(|source| RunError::Image {
        path: image.to_path_buf(),
        source,
    })?;
    verify::check_writers(image, &meta).map_err(RunError::Verify)?;
    if let Some(of) = manifest_of {
        let path = crate::manifest::path_for(of);
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        if let Ok(meta) = std::fs::metadata(&real) {
            verify::check_writers(&real, &meta).map_err(RunError::Verify)?;
        }
    }
    Ok(())
}

/// What `run` can start from: an ext4 image, opened here once (read-write for
/// `--writable`), or a folder (`None`). Anything else is refused with what it is, before
/// any mount is tried (the kernel would only say EINVAL).
fn open_image(
    image: &Path,
    shown: &Path,
    writable: bool,
    m: Option<&Manifest>,
) -> Result<Option<std::fs::File>, RunError> {
    const ACCEPTS: &str = "run takes an ext4 image or an image folder (output.format = \"ext4\" \
        or \"dir\" in the recipe)";
    let image_err = |source| RunError::Image {
        path: shown.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(image).map_err(image_err)?;
    let kind = file.metadata().map_err(image_err)?.file_type();
    if kind.is_dir() {
        return Ok(None);
    }
    let what = if !kind.is_file() {
        "not a regular file".to_string()
    } else {
        let mut head = vec![0u8; 1082];
        // pread: the fd's offset stays at 0 for the digest and the loop device.
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).map_err(image_err)?;
        head.truncate(n);
        // The ext4 superblock starts at byte 1024; its magic is at offset 56.
        if head.get(1080..1082) == Some(&[0x53, 0xef][..]) {
            if !writable {
                return Ok(Some(file));
            }
            // The same inode, for writing: not whatever the path names by now.
            let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
            let rw = std::fs::File::options().read(true).write(true).open(fd);
            return rw.map(Some).map_err(image_err);
        }
        match (m.map(|m| m.format.as_str()), describe(&head)) {
            (Some(f), _) if f != "ext4" => format!("a {f} archive (its manifest says so)"),
            (_, Some(d)) => d,
            _ => "not an ext4 filesystem".to_string(),
        }
    };
    Err(RunError::Invalid(format!(
        "{}: {what}; {ACCEPTS}, so extract an archive first: rootpack extract {} DIR",
        shown.display(),
        shown.display()
    )))
}

/// What the start of a file says it is, for the error above.
fn describe(head: &[u8]) -> Option<String> {
    use crate::archive::Compression;
    if let Some(c) = Compression::detect(head).filter(|c| *c != Compression::None) {
        return Some(format!("a {c}-compressed file, not an ext4 filesystem"));
    }
    if head.starts_with(b"070701") || head.starts_with(b"070702") || head.starts_with(b"070707") {
        return Some("a cpio archive, not an ext4 filesystem".into());
    }
    if head.get(257..262) == Some(&b"ustar"[..]) {
        return Some("a tar archive, not an ext4 filesystem".into());
    }
    None
}

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

/// What the container is started from, after the manifest (if any) is read and checked.
struct Resolved {
    image: PathBuf,
    /// The image file, opened once (`None` for a folder).
    file: Option<std::fs::File>,
    manifest: Option<Manifest>,
}

fn resolve_image(opts: &RunOptions) -> Result<Resolved, RunError> {
    let t0 = std::time::Instant::now();
    let image_err = |source| RunError::Image {
        path: opts.image.clone(),
        source,
    };
    let image = std::fs::canonicalize(&opts.image).map_err(image_err)?;
    let manifest = if opts.no_manifest {
        None
    } else {
        manifest_for(&opts.image)?
    };
    let file = open_image(&image, &opts.image, opts.writable, manifest.as_ref())?;
    if opts.rootless && file.is_some() {
        return Err(RunError::Invalid(format!(
            "{}: without root only a folder can be a container's root",
            opts.image.display()
        )));
    }
    if opts.verify {
        check_writers(
            &image,
            file.as_ref(),
            manifest.as_ref().map(|_| &opts.image),
        )?;
    }
    if let (Some(file), true) = (&file, opts.verify) {
        // A manifest that records no digest has nothing to check against.
        if let Some(m) = manifest.as_ref().filter(|m| !m.sha256.is_empty()) {
            let state = Path::new(verify::STATE_DIR);
            verify::verify(&opts.image, file, m.size, &m.sha256, state)
                .map_err(RunError::Verify)?;
            log::debug!(
                "verified {} against its manifest ({:.1} ms)",
                opts.image.display(),
                ms(t0)
            );
        }
    }
    Ok(Resolved {
        image,
        file,
        manifest,
    })
}

fn rootfs_spec(
    opts: &RunOptions,
    image: PathBuf,
    file: Option<std::fs::File>,
) -> Result<RootfsSpec, RunError> {
    Ok(RootfsSpec {
        image,
        folder: file.is_none(),
        image_file: file.map(std::sync::Arc::new),
        writable: opts.writable,
        volumes: opts
            .volumes
            .iter()
            .map(|(host, ctr, ro)| {
                let host = std::fs::canonicalize(host)
                    .map_err(|e| RunError::Invalid(format!("volume {}: {e}", host.display())))?;
                Ok(Volume {
                    host,
                    target: image_path(ctr, "volume target")?,
                    read_only: *ro,
                })
            })
            .collect::<Result<_, RunError>>()?,
        tmpfs: opts
            .tmpfs
            .iter()
            .map(|t| image_path(t, "--tmpfs"))
            .collect::<Result<_, _>>()?,
        net_host: opts.net_host,
        devices: false,
        stage: opts
            .stage
            .clone()
            .unwrap_or_else(|| PathBuf::from(rootfs::STAGE)),
    })
}

/// Where a captured container's output goes.
type OutputSink<'a> = &'a mut dyn FnMut(&[u8]);

fn start(opts: &RunOptions, output: Option<OutputSink<'_>>) -> Result<Outcome, RunError> {
    let t0 = std::time::Instant::now();
    let Resolved {
        image,
        file,
        manifest,
    } = resolve_image(opts)?;
    let folder = file.is_none();
    let caps =
        security::capability_mask(&opts.cap_add, &opts.cap_drop).map_err(RunError::Invalid)?;
    let mut rootfs = rootfs_spec(opts, image, file)?;
    let limits = limits_for(opts, manifest.as_ref());
    let hostname = hostname_for(opts, manifest.as_ref());
    let console = if opts.tty {
        Some(tty::console_pair().map_err(RunError::Start)?)
    } else {
        None
    };
    let console_fd = console.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    let captured = output.is_some();
    let spec = process_spec(opts, manifest.as_ref(), caps, console_fd, captured)?;
    log::info!(
        "running {:?} in a container from {} ({})",
        spec.argv,
        opts.image.display(),
        if opts.writable {
            "read-write"
        } else {
            "read-only under a tmpfs overlay"
        }
    );

    if opts.stage.is_none() {
        std::fs::create_dir_all(rootfs::STAGE).map_err(RunError::Start)?;
    }
    let id = format!(
        "rootpack-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    // Without root there is no cgroup to make: the PID namespace alone holds the tasks.
    let layout = if opts.rootless {
        cgroup::Layout::None
    } else {
        cgroup::Layout::detect()
    };
    let cg = cgroup::Cgroup::create(&layout, &id, &limits).map_err(RunError::Cgroup)?;
    log::debug!(
        "cgroup {id}: memory {:?}, pids {:?}, cpus {:?} ({:.1} ms)",
        limits.memory,
        limits.pids,
        limits.cpus,
        ms(t0)
    );
    // A user namespace can make no node, and its mounts are nodev whatever we ask.
    rootfs.devices = cg.limits_devices() && !opts.userns && !opts.rootless;
    let watcher = spawn_cgroup_watcher(cg.dirs()).map_err(RunError::Start)?;

    let (go_r, go_w) = pipe().map_err(RunError::Start)?;
    let (ready_r, ready_w) = pipe().map_err(RunError::Start)?;
    let (err_r, err_w) = pipe().map_err(RunError::Start)?;
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
    let set = init::signal_set();
    let mask = RestoreMask(init::block(&set));
    if crate::interrupt::interrupted() {
        // Arrived during setup, before blocking: nothing would forward it now.
        return Err(RunError::Start(io::Error::from(io::ErrorKind::Interrupted)));
    }
    // Read before the clone: the child must not allocate for them.
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    // No thread has been started yet: the relays start after the hand-over.
    let pid = clone_into_namespaces(opts).map_err(RunError::Start)?;
    if pid == 0 {
        drop(go_w);
        drop(ready_r);
        drop(err_r);
        drop(watcher);
        drop(out_r);
        let child = Child {
            rootfs: &rootfs,
            spec: &spec,
            hostname: &hostname,
            layout: &layout,
            opts,
            stdio: &stdio,
            init_exe,
            ready: ready_w,
        };
        child_main(go_r, err_w, child, &mask.0);
    }
    log::debug!(
        "cloned pid {pid} into new namespaces: mount, uts, ipc, pid{}{} ({:.1} ms)",
        if opts.net_host { "" } else { ", net" },
        if opts.userns || opts.rootless {
            ", user"
        } else {
            ""
        },
        ms(t0)
    );
    drop(go_r);
    drop(ready_w);
    drop(err_w);
    let console = console.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });
    let caller = (uid.as_raw(), gid.as_raw());
    if let Err(e) = hand_over(opts, pid, caller, &rootfs, &cg, &ready_r) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let message = read_message(err_r);
        return Err(if message.is_empty() {
            e
        } else {
            RunError::Setup(message)
        });
    }
    // Threads only now: entering the child's mount namespace above needs a process of
    // one thread.
    let relays = stdio.start();
    let _ = rustix::io::write(&go_w, b"1");
    drop(go_w);
    log::debug!("container started ({:.1} ms)", ms(t0));
    let (status, timed_out) =
        wait_for(pid, &set, opts.timeout, out_r.zip(output), console.as_ref())?;
    relays.finish();
    drop(mask);
    let (message, init_signal) = init::split_signal(read_message(err_r));
    // Only when the command itself died of SIGKILL under a memory limit: a helper process
    // killed by the OOM killer while the command went on is not the container's end.
    let oom = limits.memory.is_some() && init::exit_code(status) == 137 && cg.oom_kills() > 0;
    // Removed on drop, retrying briefly while the kernel finishes tearing down.
    drop(cg);
    drop(watcher);
    let exit_code = init::exit_code(status);
    if !message.is_empty() && status != 0 && !oom && exit_code == 125 && !timed_out {
        return Err(RunError::Setup(message));
    }
    log::debug!("container ended with status {exit_code} ({:.1} ms)", ms(t0));
    let notice = match &manifest {
        Some(m) if opts.writable && !folder => record_writes(opts, &rootfs.image, m),
        _ => None,
    };
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
        oom_limit: oom.then_some(limits.memory.unwrap_or(0)),
        notice,
    })
}

/// Forks into new mount, UTS, IPC and PID namespaces (network unless `--net host`, user
/// with `--userns` or without root): 0 in the child, its pid in the parent.
///
/// The process must be single-threaded (checked): the child is a copy of this one
/// thread, and a lock another thread held (the allocator's) would stay locked in it.
fn clone_into_namespaces(opts: &RunOptions) -> io::Result<i32> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "rootpack runs {threads} threads; a container is cloned from one"
        )));
    }
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
    if !opts.net_host {
        flags |= libc::CLONE_NEWNET;
    }
    if opts.userns || opts.rootless {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: clone without CLONE_VM behaves as fork; we are single-threaded (above).
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

/// The cgroup limits: the options', else the manifest's.
fn limits_for(opts: &RunOptions, m: Option<&Manifest>) -> cgroup::Limits {
    let from = m.map(|m| m.limits.clone()).unwrap_or_default();
    cgroup::Limits {
        memory: opts.memory.or(from.memory),
        pids: opts.pids.or(from.pids),
        cpus: opts.cpus.or(from.cpus),
    }
}

fn hostname_for(opts: &RunOptions, m: Option<&Manifest>) -> String {
    opts.hostname
        .clone()
        .or_else(|| m.and_then(|m| m.config.hostname.clone()))
        .or_else(|| m.map(|m| m.name.clone()))
        .unwrap_or_else(|| "rootpack".into())
}

/// What must happen between the clone and the container's first instruction, while the
/// child builds its root: its ids mapped (and, in a user namespace, its image mounted for
/// it), its move into the cgroup, and once its root is built (its loop device and mounts
/// opened) the device allow list. If the child already failed, its own message says why.
fn hand_over(
    opts: &RunOptions,
    pid: i32,
    (uid, gid): (u32, u32),
    rootfs: &RootfsSpec,
    cg: &cgroup::Cgroup,
    ready: &OwnedFd,
) -> Result<(), RunError> {
    if opts.rootless {
        map_caller_as_root(pid, uid, gid).map_err(|e| RunError::Setup(e.to_string()))?;
    } else if opts.userns {
        prepare_userns(pid, rootfs).map_err(|e| RunError::Setup(e.to_string()))?;
    }
    cg.add(pid as u32).map_err(RunError::Cgroup)?;
    if !(opts.userns || opts.rootless || wait_ready(ready)?) {
        return Err(RunError::Setup("setting up the container".into()));
    }
    cg.limit_devices()
        .map_err(|e| RunError::Setup(format!("setting the device cgroup: {e}")))
}

/// Waits for the child to say its root is built (false: it failed first). Our signals
/// are blocked meanwhile, so a root that never gets built (a hung mount) must not hold
/// us: a SIGINT, SIGTERM or SIGHUP that arrives is left pending for the caller, and the
/// wait ends.
fn wait_ready(ready: &OwnedFd) -> Result<bool, RunError> {
    let mut pfd = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll on one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
            let mut byte = [0u8; 1];
            return Ok(rustix::io::read(ready, &mut byte) == Ok(1));
        }
        // SAFETY: sigpending into a local set, which sigismember then reads.
        let stopping = unsafe {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
                .iter()
                .any(|&sig| libc::sigismember(&pending, sig) == 1)
        };
        if stopping {
            return Err(RunError::Start(io::Error::from(io::ErrorKind::Interrupted)));
        }
    }
}

/// Waits for the container's init: taking a step's output, with a timeout, or relaying
/// its pty; returns the wait status and whether the timeout killed it.
fn wait_for(
    pid: i32,
    set: &libc::sigset_t,
    timeout: Option<std::time::Duration>,
    captured: Option<(OwnedFd, OutputSink<'_>)>,
    console: Option<&OwnedFd>,
) -> Result<(libc::c_int, bool), RunError> {
    if let Some((out_r, output)) = captured {
        return capture::wait(pid, set, &out_r, timeout, output).map_err(RunError::Start);
    }
    if timeout.is_some() {
        return capture::wait(pid, set, &io_null()?, timeout, &mut |_| {}).map_err(RunError::Start);
    }
    let pty = console.and_then(tty::receive_master);
    let relay = pty.as_ref().map(|p| p.relay());
    let status = wait_forwarding(pid, set, pty.as_ref());
    if let Some(relay) = relay {
        relay.finish();
    }
    Ok((status, false))
}

/// After a `--writable` run: the image's new digest recorded in its manifest; what went
/// wrong doing so, as a notice (the run itself succeeded).
fn record_writes(opts: &RunOptions, image: &Path, m: &Manifest) -> Option<String> {
    let path = crate::manifest::path_for(&opts.image);
    let state = Path::new(verify::STATE_DIR);
    let e = verify::record_changes(image, &path, m, state).err()?;
    Some(format!(
        "the image changed, but {} could not be updated: {e}",
        path.display()
    ))
}

/// A pipe's read end that no one writes to, for a wait with a timeout but no output.
fn io_null() -> Result<OwnedFd, RunError> {
    let (r, _w) = pipe().map_err(RunError::Start)?;
    Ok(r)
}

/// For a child in a user namespace of its own (a rootless start): the caller's uid and
/// gid become its root, the only ids it has. Unprivileged, `setgroups` must be refused
/// first.
fn map_caller_as_root(pid: i32, uid: u32, gid: u32) -> io::Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {file}: {e}")))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// Milliseconds since `t`, for the verbose timings.
fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// For a child in a new user namespace: maps its ids, then mounts the image (which needs
/// the host's privileges) inside its mount namespace, id-mapped so that the image's root
/// is the container's root, and comes back to ours.
fn prepare_userns(pid: i32, spec: &RootfsSpec) -> io::Result<()> {
    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
    use std::os::unix::io::AsFd;
    let map = format!("0 {USERNS_BASE} {USERNS_SIZE}\n");
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), &map)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {file}: {e}")))?;
    }
    let ours = std::fs::File::open("/proc/self/ns/mnt")?;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let userns = OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/user"))?);
    let cwd = std::env::current_dir()?;
    move_into_link_name_space(theirs.as_fd(), Some(LinkNameSpaceType::Mount))?;
    let mounted = rootfs::mount_image(
        spec,
        Some(rootfs::IdMap {
            userns: &userns,
            root_uid: USERNS_BASE,
        }),
    );
    if let Err(e) = move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::Mount)) {
        // Stuck in the container's mount namespace: nothing sane can follow.
        eprintln!("rootpack: cannot return to our mount namespace: {e}");
        std::process::abort();
    }
    std::env::set_current_dir(cwd)?;
    mounted.map_err(|e| io::Error::new(e.kind(), format!("setting up the container: {e}")))
}

/// Waits for the container's init, passing on the signals we receive.
fn wait_forwarding(pid: i32, set: &libc::sigset_t, pty: Option<&tty::Pty>) -> libc::c_int {
    loop {
        // SAFETY: sigwaitinfo on a blocked set.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(set, &mut info)
        };
        if sig == libc::SIGCHLD {
            let mut status = 0;
            // SAFETY: reaping our own child without blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                return status;
            }
        } else if sig > 0 {
            if sig == libc::SIGWINCH
                && let Some(p) = pty
            {
                p.copy_window_size();
            }
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, sig) };
        }
    }
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

/// What the cloned child sets up.
struct Child<'a> {
    rootfs: &'a RootfsSpec,
    spec: &'a ProcessSpec,
    hostname: &'a str,
    layout: &'a cgroup::Layout,
    opts: &'a RunOptions,
    stdio: &'a stdio::Stdio,
    /// The sealed init (`None` with `--no-init`).
    init_exe: Option<OwnedFd>,
    /// Written to once the root is built, before the device cgroup closes.
    ready: OwnedFd,
}

/// The cloned child: becomes the container. Never returns.
fn child_main(go: OwnedFd, err: OwnedFd, child: Child<'_>, old_mask: &libc::sigset_t) -> ! {
    let Child {
        rootfs,
        spec,
        hostname,
        layout,
        opts,
        stdio,
        init_exe,
        ready,
    } = child;
    let err_fd = err.as_raw_fd();
    std::mem::forget(err);
    if stdio.install().is_err() {
        init::fail(
            err_fd,
            125,
            "setting up the container: its stdin, stdout and stderr",
        );
    }
    // Before any path from the user or the manifest is resolved: no fd of the caller's
    // (a leaked host folder, CVE-2024-21626) survives into the container.
    let mut keep = vec![go.as_raw_fd(), err_fd];
    keep.extend(spec.console);
    keep.extend(init_exe.as_ref().map(|e| e.as_raw_fd()));
    keep.push(ready.as_raw_fd());
    keep.extend(rootfs.image_file.as_ref().map(|f| f.as_raw_fd()));
    security::close_fds_except(&keep);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> io::Result<()> {
        security::die_with_parent();
        // A new session, without a controlling terminal: `/dev/tty` opens nothing, and a
        // terminal on its stdin is not its own to type into (TIOCSTI needs the caller's
        // controlling terminal, CVE-2017-5226). Ctrl-C reaches rootpack, which forwards
        // it; `-t` gives the command a terminal of its own.
        rustix::process::setsid().map_err(io::Error::from)?;
        // The filesystem is built while rootpack moves us into the cgroup (a v1 move
        // waits for an RCU grace period); nothing runs in the container before both. In a
        // user namespace rootpack mounts the image for us first.
        if !opts.userns && !opts.rootless {
            rootfs::setup(rootfs)?;
            rustix::io::write(&ready, b"1")?;
        }
        let mut byte = [0u8; 1];
        if rustix::io::read(&go, &mut byte)? == 0 {
            // SAFETY: the parent is gone; leave quietly.
            unsafe { libc::_exit(125) };
        }
        drop(go);
        if opts.rootless {
            // Mapped now: we are the namespace's root, which owns every mount made here.
            rootfs::setup(rootfs)?;
        } else if opts.userns {
            // Cloned with the host's root ids, which the new namespace does not map: become
            // its root (host uid USERNS_BASE) before touching any file.
            security::switch_ids(0, 0)?;
            rootfs::finish(rootfs)?;
        }
        // SAFETY: a new cgroup namespace changes no memory this process shares.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
            .map_err(io::Error::from)?;
        cgroup::mount_view(layout)?;
        rustix::system::sethostname(hostname.as_bytes()).map_err(io::Error::from)?;
        security::join_new_session_keyring()
            .map_err(|e| io::Error::new(e.kind(), format!("joining a session keyring: {e}")))?;
        if !opts.net_host {
            rootfs::loopback_up()
                .map_err(|e| io::Error::new(e.kind(), format!("bringing lo up: {e}")))?;
        }
        rlimit::apply(&opts.ulimits)
    }));
    // `ready` closes only now, or with our exit after the message: rootpack, seeing it
    // closed, must find the message already written.
    match result {
        Ok(Ok(())) => drop(ready),
        Ok(Err(e)) => init::fail(err_fd, 125, &format!("setting up the container: {e}")),
        Err(_) => init::fail(err_fd, 125, "setting up the container: internal error"),
    }
    match init_exe {
        Some(exe) => init::run_init(spec, err_fd, old_mask, &exe),
        None => init::exec_command(spec, err_fd, old_mask, None),
    }
}

/// A process outside the container that removes its cgroup once the container is gone,
/// even when rootpack was killed. It waits for the returned pipe end to close.
fn spawn_cgroup_watcher(dirs: &[PathBuf]) -> io::Result<Option<OwnedFd>> {
    if dirs.is_empty() {
        return Ok(None);
    }
    let (r, w) = pipe()?;
    // SAFETY: fork in a single-threaded process; the child only reads, removes folders
    // and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: detaching from our parent's stdio and every other fd (a console socket,
        // a pipe someone waits on for EOF), keeping only our pipe's end, as fd 3.
        unsafe {
            libc::setsid();
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            libc::dup2(r.as_raw_fd(), 3);
            libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
        }
        std::mem::forget(w);
        std::mem::forget(r);
        // SAFETY: fd 3 is the pipe's read end, dup'ed above.
        let r = unsafe { <OwnedFd as std::os::unix::io::FromRawFd>::from_raw_fd(3) };
        // Off the container's start path: what earlier killed runs left beside ours.
        cgroup::remove_stale(dirs);
        let mut byte = [0u8; 1];
        let _ = rustix::io::read(&r, &mut byte);
        // rootpack is gone, so must the container be, whatever survived it.
        cgroup::kill_tasks(dirs);
        // Patient: a container killed with rootpack may take a while to be reaped.
        let _ = cgroup::remove_dirs(dirs, std::time::Duration::from_secs(60));
        // SAFETY: leaving without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(r);
    // The watcher is not our concern any more: let init reap it.
    Ok(Some(w))
}
