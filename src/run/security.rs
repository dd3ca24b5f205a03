//! Privileges of the container's processes: capabilities cut to Docker's default set,
//! no_new_privs when asked for, and no inherited file descriptor but stdio.
//!
//! # Security
//!
//! - The bounding set is cut before anything is executed, so even a setuid-root binary in
//!   the image cannot regain a dropped capability; inheritable and ambient sets are empty,
//!   for root and other users alike, so a file's inheritable capabilities take nothing.
//! - no_new_privs is off by default, as in Docker: a set-uid program or a file's
//!   capabilities give at most the bounding set. When asked for, it stops those gains
//!   altogether.
//! - Every fd above 2 is marked close-on-exec (close_range), so no host file, socket or
//!   directory fd leaks into the container (CVE-2024-21626, runc's leaked cgroup fd).
//! - The init that stays behind runs our host binary: it is made non-dumpable and keeps no
//!   capability, so `/proc/1/exe` cannot be opened from the container to overwrite the
//!   host binary (CVE-2019-5736).

use std::io;
use std::os::unix::io::RawFd;

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The name of capability `n` (`NET_ADMIN`), if it has one.
pub fn cap_name(n: u32) -> Option<&'static str> {
    NAMES.get(n as usize).copied()
}

/// The capability number of a name like `NET_ADMIN`, `cap_net_admin` or `CAP_NET_ADMIN`.
pub fn cap_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as u32)
}

/// The set the container gets: the default minus `drop`, plus `add` ("ALL" allowed in
/// either; `--cap-drop ALL --cap-add X` leaves only X, as in Docker).
pub fn capability_mask(add: &[String], drop: &[String]) -> Result<u64, String> {
    let all = (1u64 << NAMES.len()) - 1;
    let mask_of = |names: &[String]| -> Result<u64, String> {
        names.iter().try_fold(0u64, |m, n| {
            if n.eq_ignore_ascii_case("ALL") {
                return Ok(all);
            }
            cap_number(n)
                .map(|c| m | (1 << c))
                .ok_or_else(|| format!("unknown capability {n:?}"))
        })
    };
    let default = DEFAULT_CAPS
        .iter()
        .map(|n| 1u64 << cap_number(n).unwrap_or(0))
        .fold(0, |a, b| a | b);
    Ok((default & !mask_of(drop)?) | mask_of(add)?)
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn check(ret: libc::c_int, what: &str) -> io::Result<()> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// Removes every capability outside `mask` from the bounding set and empties the ambient
/// set. Needs CAP_SETPCAP, so it runs before any uid change.
pub fn limit_bounding_set(mask: u64) -> io::Result<()> {
    for cap in 0..=last_cap() {
        if cap >= 64 || mask & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                check(r, "dropping a capability from the bounding set")?;
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    check(
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        },
        "clearing ambient capabilities",
    )
}

/// Sets effective and permitted to `mask`, inheritable to nothing.
pub fn set_capabilities(mask: u64) -> io::Result<()> {
    set_capability_sets(mask, mask, 0)
}

/// Sets the effective, permitted and inheritable sets.
pub fn set_capability_sets(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let word = |shift: u32| Data {
        effective: (effective >> shift) as u32,
        permitted: (permitted >> shift) as u32,
        inheritable: (inheritable >> shift) as u32,
    };
    let data = [word(0), word(32)];
    // SAFETY: capset with a v3 header and two data words, as the ABI requires.
    check(
        unsafe {
            libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr())
                as libc::c_int
        },
        "setting capabilities",
    )
}

/// The real uid and gid of this process.
pub fn caller_ids() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        "setting no_new_privs",
    )
}

pub fn set_non_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        "making the process non-dumpable",
    )
}

/// Marks every fd from 3 up close-on-exec.
pub fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Older kernels: walk /proc/self/fd.
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            && fd > 2
        {
            // SAFETY: setting a flag on an fd number; a stale one fails harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    Ok(())
}

/// Closes every fd above 2 but those in `keep`.
pub fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep.into_iter().chain([u32::MAX]) {
        if fd > from {
            // SAFETY: close_range on numbers nobody else in this process uses.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32) };
        }
        from = fd.saturating_add(1);
    }
}

/// Gives the container a new, empty session keyring (as runc does): the keys in the
/// caller's session keyring, and the user keyring it links, are then not possessed by the
/// container's processes, so their payloads stay unreadable even without seccomp.
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a NULL name creates and joins an anonymous keyring.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        // A kernel built without keys has nothing to hide.
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
    }
    Ok(())
}

/// SIGKILL when rootpack dies. The kernel clears this on every change of effective ids,
/// so it is set again after each.
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// Drops supplementary groups and takes `uid`:`gid` as real, effective and saved ids, then
/// re-arms [`die_with_parent`], which the change cleared.
pub fn switch_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: credential syscalls with integer arguments.
    let ok = unsafe {
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setresgid(gid, gid, gid) == 0
            && libc::setresuid(uid, uid, uid) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    die_with_parent();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_from_names() {
        let default = capability_mask(&[], &[]).unwrap();
        assert_eq!(
            default, 0xa80425fb,
            "Docker's default set as runc prints it"
        );
        let more = capability_mask(&["NET_ADMIN".into()], &["cap_chown".into()]).unwrap();
        assert_eq!(more, (default | 1 << 12) & !1);
        assert_eq!(
            capability_mask(&["NET_ADMIN".into()], &["ALL".into()]).unwrap(),
            1 << 12
        );
        assert_eq!(capability_mask(&[], &["ALL".into()]).unwrap(), 0);
        assert!(capability_mask(&["WIZARDRY".into()], &[]).is_err());
    }
}
