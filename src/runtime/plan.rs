//! A bundle's `config.json` worked out into what `create` does: the root folder, the
//! namespaces to make and to join, the mounts, devices, sysctls, process and root
//! propagation, every field honoured or refused before anything is made.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::create::CreateArgs;
use super::{Error, mounts, process};

/// Everything the child needs, worked out before the clone.
pub(super) struct Plan {
    pub(super) spec: Spec,
    pub(super) rootfs: PathBuf,
    pub(super) mounts: Vec<mounts::Entry>,
    pub(super) devices: Vec<oci_spec::runtime::LinuxDevice>,
    /// New namespaces (clone flags) and ones to join (flag, path).
    pub(super) clone_flags: libc::c_int,
    pub(super) join: Vec<(libc::c_int, PathBuf)>,
    pub(super) process: process::Plan,
    pub(super) hostname: Option<String>,
    pub(super) domainname: Option<String>,
    pub(super) sysctl: Vec<(String, String)>,
    pub(super) masked: Vec<String>,
    pub(super) read_only: Vec<String>,
    pub(super) read_only_root: bool,
    pub(super) propagation: libc::c_ulong,
    pub(super) shared_root: Option<libc::c_ulong>,
}

fn ns_flag(t: LinuxNamespaceType) -> Result<libc::c_int, Error> {
    Ok(match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => {
            return Err(Error::Other(
                "linux.namespaces: the time namespace is not supported".into(),
            ));
        }
    })
}

/// The namespace (as a clone flag) a sysctl needs of the container's own: the namespaced
/// ones only (runc's rule; [`crate::sysctl`] holds the list).
fn sysctl_namespace(key: &str) -> Result<libc::c_int, Error> {
    use crate::sysctl::Namespace;
    match crate::sysctl::namespace_of(key) {
        Ok(Namespace::Ipc) => Ok(libc::CLONE_NEWIPC),
        Ok(Namespace::Net) => Ok(libc::CLONE_NEWNET),
        Ok(Namespace::Uts) => Ok(libc::CLONE_NEWUTS),
        Err(e) => Err(Error::Other(format!("linux.sysctl {e}"))),
    }
}

pub(super) fn load_spec(bundle: &Path) -> Result<Spec, Error> {
    let path = bundle.join("config.json");
    let spec = Spec::load(&path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    if !spec.version().starts_with("1.") {
        return Err(Error::Other(format!(
            "{}: ociVersion {} is not 1.x",
            path.display(),
            spec.version()
        )));
    }
    Ok(spec)
}

pub(super) fn plan(spec: Spec, bundle: &Path, args: &CreateArgs) -> Result<Plan, Error> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::Other("root: missing".into()))?;
    let rootfs = checked_rootfs(&bundle.join(root.path()))?;
    let linux = spec.linux().clone().unwrap_or_default();
    let (clone_flags, join) = namespaces(&linux)?;
    let has = |flag| clone_flags & flag != 0;
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| mounts::parse(i, m, bundle))
        .collect::<Result<Vec<_>, _>>()?;
    let dev_bound = mounts.iter().any(|m| m.dest.as_bytes() == b"dev" && m.bind);
    let mut devices = if dev_bound {
        Vec::new()
    } else {
        mounts::default_devices()
    };
    devices.extend(linux.devices().iter().flatten().cloned());
    let sysctl = sysctls(&linux, clone_flags, &join)?;
    if spec.hostname().is_some() && !has(libc::CLONE_NEWUTS) {
        return Err(Error::Other("hostname: needs a new UTS namespace".into()));
    }
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(super::seccomp::filter)
        .transpose()?;
    let proc_spec = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Other("process: missing".into()))?;
    let process = process::plan(proc_spec, seccomp)?;
    if process.terminal && args.console_socket.is_none() {
        return Err(Error::Other(
            "process.terminal needs --console-socket".into(),
        ));
    }
    refuse_unsupported(&spec)?;
    let (propagation, shared_root) = root_propagation(&linux)?;
    Ok(Plan {
        rootfs,
        mounts,
        devices,
        clone_flags,
        join,
        process,
        hostname: spec.hostname().clone(),
        domainname: spec.domainname().clone(),
        sysctl,
        masked: linux.masked_paths().clone().unwrap_or_default(),
        read_only: linux.readonly_paths().clone().unwrap_or_default(),
        read_only_root: root.readonly().unwrap_or(false),
        propagation,
        shared_root,
        spec,
    })
}

/// The bundle's root folder, itself not a symlink, as a canonical path.
fn checked_rootfs(rootfs: &Path) -> Result<PathBuf, Error> {
    let meta = fs::symlink_metadata(rootfs)
        .map_err(|e| Error::Other(format!("root.path {}: {e}", rootfs.display())))?;
    if !meta.is_dir() {
        return Err(Error::Other(format!(
            "root.path {}: not a folder (a symlink is refused)",
            rootfs.display()
        )));
    }
    fs::canonicalize(rootfs).map_err(|e| Error::Other(format!("root.path: {e}")))
}

/// The namespaces to clone (flags) and those to join (flag, path); a mount namespace is
/// one or the other.
type Namespaces = (libc::c_int, Vec<(libc::c_int, PathBuf)>);

fn namespaces(linux: &oci_spec::runtime::Linux) -> Result<Namespaces, Error> {
    let (mut clone_flags, mut join) = (0, Vec::new());
    for ns in linux.namespaces().iter().flatten() {
        let flag = ns_flag(ns.typ())?;
        match ns.path() {
            Some(p) if !p.as_os_str().is_empty() => join.push((flag, p.clone())),
            _ => clone_flags |= flag,
        }
    }
    if clone_flags & libc::CLONE_NEWNS == 0 && !join.iter().any(|(f, _)| *f == libc::CLONE_NEWNS) {
        return Err(Error::Other(
            "linux.namespaces: a mount namespace is required".into(),
        ));
    }
    Ok((clone_flags, join))
}

/// `linux.sysctl`, each allowed only with the namespace it belongs to (made or joined).
fn sysctls(
    linux: &oci_spec::runtime::Linux,
    clone_flags: libc::c_int,
    join: &[(libc::c_int, PathBuf)],
) -> Result<Vec<(String, String)>, Error> {
    let mut sysctl = Vec::new();
    for (k, v) in linux.sysctl().iter().flatten() {
        let ns = sysctl_namespace(k)?;
        if clone_flags & ns == 0 && !join.iter().any(|(f, _)| *f == ns) {
            return Err(Error::Other(format!(
                "linux.sysctl {k}: needs the container's own namespace for it"
            )));
        }
        sysctl.push((k.clone(), v.clone()));
    }
    Ok(sysctl)
}

/// `linux.rootfsPropagation`: the root's propagation, and for a shared root the flag the
/// mounts below it are made shared with.
fn root_propagation(
    linux: &oci_spec::runtime::Linux,
) -> Result<(libc::c_ulong, Option<libc::c_ulong>), Error> {
    let name = linux.rootfs_propagation().clone().unwrap_or_default();
    Ok(match name.as_str() {
        "" => (libc::MS_SLAVE, None),
        "shared" | "rshared" => (libc::MS_SLAVE, mounts::propagation(&name)),
        other => (
            mounts::propagation(other).ok_or_else(|| {
                Error::Other(format!("linux.rootfsPropagation {other:?}: unknown"))
            })? & !libc::MS_REC,
            None,
        ),
    })
}

fn refuse_unsupported(spec: &Spec) -> Result<(), Error> {
    let linux = spec.linux().clone().unwrap_or_default();
    if linux.intel_rdt().is_some() {
        return Err(Error::Other("linux.intelRdt: not supported".into()));
    }
    if linux.personality().is_some() {
        return Err(Error::Other("linux.personality: not supported".into()));
    }
    if linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()) && !process::selinux_enabled() {
        return Err(Error::Other(
            "linux.mountLabel: SELinux is not enabled on this host".into(),
        ));
    }
    if let Some(h) = spec.hooks() {
        for (name, hooks) in [
            ("createContainer", h.create_container()),
            ("startContainer", h.start_container()),
        ] {
            if hooks.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(Error::Other(format!("hooks.{name}: not supported")));
            }
        }
    }
    Ok(())
}
