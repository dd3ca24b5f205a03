//! Kernel parameters a container may set for itself: only those the kernel keeps per
//! namespace, so that a value written for one container changes nothing of the host's or
//! another container's. The one list `run --sysctl`, a recipe's `[config] sysctl` and the
//! runtime's `linux.sysctl` are checked against.
//!
//! # Security
//!
//! A key becomes a path under `/proc/sys`: keys are dot-separated names of letters,
//! digits, `_` and `-`, so no `/`, `..` or empty part can lead out of the parameter named.

/// The namespace a parameter belongs to; the container must have its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Net,
    /// `kernel.domainname` and `kernel.hostname`: OCI specs may set them (runc's rule);
    /// `run` has `--hostname` and takes neither, as Docker does not.
    Uts,
}

/// The System V IPC parameters (with `fs.mqueue.*`) the IPC namespace holds.
const IPC: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace of `key`, or why it cannot be set in a container (one line naming it).
///
/// ```
/// use rootpack::sysctl::{namespace_of, Namespace};
/// assert_eq!(namespace_of("net.ipv4.ping_group_range"), Ok(Namespace::Net));
/// assert!(namespace_of("vm.swappiness").is_err());
/// ```
pub fn namespace_of(key: &str) -> Result<Namespace, String> {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !key.split('.').all(part) {
        return Err(format!(
            "{key:?}: not a kernel parameter name (dot-separated parts of letters, digits, _ and -)"
        ));
    }
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Ok(Namespace::Ipc)
    } else if key.starts_with("net.") {
        Ok(Namespace::Net)
    } else if key == "kernel.domainname" || key == "kernel.hostname" {
        Ok(Namespace::Uts)
    } else {
        Err(format!(
            "{key}: not a namespaced kernel parameter; a container may set kernel.msgmax, \
             kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, kernel.shmmax, \
             kernel.shmmni, kernel.shm_rmid_forced, fs.mqueue.* and net.*"
        ))
    }
}

/// The namespace of `key` when `run` is to set it: Docker's list, so not the UTS names
/// (the hostname is `--hostname`'s, `config.hostname`'s).
pub fn namespace_for_run(key: &str) -> Result<Namespace, String> {
    match namespace_of(key)? {
        Namespace::Uts => Err(format!(
            "{key}: not one a container may set here (the hostname is --hostname's)"
        )),
        ns => Ok(ns),
    }
}

/// Writes `value` to the parameter `key` (checked by [`namespace_of`]) of the calling
/// process's namespaces, through `/proc/sys`.
pub fn write(key: &str, value: &str) -> std::io::Result<()> {
    namespace_of(key).map_err(std::io::Error::other)?;
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_keys_only_and_no_way_out_of_proc_sys() {
        assert_eq!(namespace_of("kernel.shmmax"), Ok(Namespace::Ipc));
        assert_eq!(namespace_of("fs.mqueue.msg_max"), Ok(Namespace::Ipc));
        assert_eq!(namespace_of("net.ipv4.ip_forward"), Ok(Namespace::Net));
        assert_eq!(
            namespace_of("net.ipv6.conf.all.forwarding"),
            Ok(Namespace::Net)
        );
        assert_eq!(namespace_of("kernel.domainname"), Ok(Namespace::Uts));
        assert!(namespace_for_run("kernel.hostname").is_err());
        assert_eq!(namespace_for_run("kernel.sem"), Ok(Namespace::Ipc));
        for bad in [
            "vm.swappiness",
            "kernel.core_pattern",
            "kernel.shmmax.",
            "net..ipv4",
            "net.ipv4/../../kernel/core_pattern",
            "net.ipv4.conf.a b",
            "",
            "fs.mqueue",
        ] {
            let e = namespace_of(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
