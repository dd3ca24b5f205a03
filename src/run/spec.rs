//! What a container is to be, worked out before anything is made for it: the image and
//! its manifest, the options over the manifest's config and limits, the root's spec and
//! the process's.

use std::ffi::CString;
use std::os::unix::io::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use super::init::ProcessSpec;
use super::rootfs::{self, RootfsSpec, Volume};
use super::{RunError, RunOptions, cgroup, image, seccomp, security, tty};
use crate::manifest::Manifest;
use crate::tree::safe_path::RelPath;

fn cstring(s: &str, what: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Invalid(format!("{what} {s:?} contains a NUL byte")))
}

fn process_spec(
    opts: &RunOptions,
    m: Option<&Manifest>,
    caps: u64,
    console: Option<RawFd>,
    captured: bool,
) -> Result<ProcessSpec, RunError> {
    let config = m.map(|m| m.config.clone()).unwrap_or_default();
    let argv = command_line(opts, &config)?;
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
        (None, None, Some(u)) => match crate::ids::split_user(Some(u)) {
            (None, None) => {
                return Err(RunError::Invalid(format!(
                    "config.user {u:?} in the manifest: expected UID[:GID] or NAME[:GROUP]"
                )));
            }
            split => split,
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
        no_new_privs: opts.no_new_privileges.unwrap_or(config.no_new_privileges),
        console,
        path,
        seccomp: seccomp::filter_for(&opts.seccomp, caps).map_err(RunError::Invalid)?,
    })
}

/// The command, as Docker, podman and the OCI image spec make it: the entrypoint (the
/// manifest's, or `--entrypoint`'s; `--entrypoint ""` clears it) followed by the command
/// given, else by the manifest's cmd (which `--entrypoint` resets, as Docker's does).
fn command_line(
    opts: &RunOptions,
    config: &crate::manifest::Config,
) -> Result<Vec<String>, RunError> {
    let entrypoint: Vec<String> = match opts.entrypoint.as_deref() {
        Some("") => Vec::new(),
        Some(program) => vec![program.to_string()],
        None => config.entrypoint.clone(),
    };
    let cmd = match (opts.command.is_empty(), &opts.entrypoint) {
        (false, _) => opts.command.clone(),
        (true, Some(_)) => Vec::new(),
        (true, None) => config.cmd.clone(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(RunError::Invalid(
            "no command: give one after the image, or set config.cmd in the recipe".into(),
        ));
    }
    Ok(argv)
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

fn image_path(s: &str, what: &str) -> Result<RelPath, RunError> {
    match RelPath::parse(s.as_bytes()) {
        Ok(p) if s.starts_with('/') && !p.is_root() => Ok(p),
        _ => Err(RunError::Invalid(format!(
            "{what} {s:?}: an absolute path in the container, without '..'"
        ))),
    }
}

fn rootfs_spec(
    opts: &RunOptions,
    image: PathBuf,
    file: Option<std::fs::File>,
    m: Option<&Manifest>,
) -> Result<RootfsSpec, RunError> {
    Ok(RootfsSpec {
        sysctl: sysctls_for(opts, m)?,
        image,
        image_file: file.map(std::sync::Arc::new),
        writable: opts.writable,
        read_only_root: opts.read_only,
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
                    through_link: false,
                })
            })
            .collect::<Result<_, RunError>>()?,
        tmpfs: opts
            .tmpfs
            .iter()
            .map(|t| image_path(t, "--tmpfs"))
            .collect::<Result<_, _>>()?,
        net_host: opts.network == crate::net::Network::Host,
        devices: false,
        stage: match &opts.stage {
            Some(stage) => stage.clone(),
            None => default_stage(opts.rootless).map_err(RunError::Start)?,
        },
    })
}

/// The kernel parameters written in the container: in a network namespace of its own,
/// Docker's default that lets its users ping without CAP_NET_RAW (`ping_group_range`);
/// then the manifest's, then `--sysctl`'s, each over the ones before. Only namespaced
/// parameters, and `net.*` only in a network namespace of the container's own.
fn sysctls_for(opts: &RunOptions, m: Option<&Manifest>) -> Result<Vec<(String, String)>, RunError> {
    let own_network = opts.network.new_namespace();
    let mut all = std::collections::BTreeMap::new();
    if own_network {
        all.insert("net.ipv4.ping_group_range".to_string(), ping_groups(opts));
    }
    let written = m.into_iter().flat_map(|m| &m.config.sysctl);
    let written = written.map(|(k, v)| ("config.sysctl in the manifest:", k, v));
    let given = opts.sysctls.iter().map(|(k, v)| ("--sysctl", k, v));
    for (source, key, value) in written.chain(given) {
        let ns = crate::sysctl::namespace_for_run(key)
            .map_err(|e| RunError::Invalid(format!("{source} {e}")))?;
        if ns == crate::sysctl::Namespace::Net && !own_network {
            let whose = match opts.network {
                crate::net::Network::Host => "the host's (--network host)",
                _ => "another container's",
            };
            return Err(RunError::Invalid(format!(
                "{source} {key}: the container's network namespace is {whose}; net.* is set \
                 only in one of its own"
            )));
        }
        all.insert(key.clone(), value.clone());
    }
    Ok(all.into_iter().collect())
}

/// Every group the container's user namespace maps: all of them without one (the kernel
/// refuses a range with a group the namespace does not map).
fn ping_groups(opts: &RunOptions) -> String {
    let last = if opts.rootless {
        0
    } else if opts.userns {
        super::USERNS_SIZE - 1
    } else {
        i32::MAX as u32
    };
    format!("0 {last}")
}

/// The empty folder a root is assembled on: [`rootfs::STAGE`], or without root (which
/// cannot make that) a folder of the caller's own under the temporary folder.
fn default_stage(rootless: bool) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let stage = match rootless {
        false => PathBuf::from(rootfs::STAGE),
        true => std::env::temp_dir().join(format!(
            "rootpack-stage-{}",
            rustix::process::getuid().as_raw()
        )),
    };
    let at = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", stage.display()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&stage)
        .map_err(at)?;
    // In a shared temporary folder: someone else's folder (or link) there is not ours.
    let meta = std::fs::symlink_metadata(&stage).map_err(at)?;
    let uid = rustix::process::getuid().as_raw();
    if rootless && (!meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != uid) {
        return Err(at(std::io::Error::other(
            "not a folder of the caller's own",
        )));
    }
    Ok(stage)
}

/// What a container is to be, before anything is made for it.
pub(super) struct Plan {
    pub(super) manifest: Option<Manifest>,
    pub(super) rootfs: RootfsSpec,
    pub(super) limits: cgroup::Limits,
    pub(super) hostname: String,
    /// With `-t`: ours and the container's end of the console socket.
    pub(super) console: Option<(OwnedFd, OwnedFd)>,
    pub(super) spec: ProcessSpec,
}

/// The image checked and its manifest read, and what the options and the manifest ask
/// for: root, limits, hostname, console, process.
pub(super) fn plan(opts: &RunOptions, captured: bool) -> Result<Plan, RunError> {
    let image::Resolved {
        image,
        file,
        manifest,
    } = image::resolve_image(opts)?;
    let caps =
        security::capability_mask(&opts.cap_add, &opts.cap_drop).map_err(RunError::Invalid)?;
    let rootfs = rootfs_spec(opts, image, file, manifest.as_ref())?;
    let console = match opts.tty {
        true => Some(tty::console_pair().map_err(RunError::Start)?),
        false => None,
    };
    let console_fd = console.as_ref().map(|(_, theirs)| theirs.as_raw_fd());
    let spec = process_spec(opts, manifest.as_ref(), caps, console_fd, captured)?;
    log::info!(
        "running {:?} in a container from {} ({})",
        spec.argv,
        opts.image.display(),
        match opts.writable {
            true => "read-write",
            false => "read-only under a tmpfs overlay",
        }
    );
    Ok(Plan {
        limits: limits_for(opts, manifest.as_ref()),
        hostname: hostname_for(opts, manifest.as_ref()),
        manifest,
        rootfs,
        console,
        spec,
    })
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
