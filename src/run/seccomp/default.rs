//! Docker's default seccomp profile (moby's profiles/seccomp/default.json), as rules in our own form.
//! A call no rule lets through fails with EPERM. Without the matching capability it refuses
//! the kernel keyring, mounts and new namespaces (clone3 gets ENOSYS so that libc falls back
//! to clone, whose namespace flags are checked), module loading, reboot, setting the clock,
//! tracing and profiling (bpf, perf_event_open, ptrace before Linux 4.8), io_uring,
//! userfaultfd, kexec and swap; it allows `socket` only for the address families that moby
//! lists, which leaves out AF_ALG, AF_VSOCK and the families the kernel no longer has.
//!
//! Source: moby/profiles `seccomp/default.json` at 02e898b137aed1024e232d59bcb05e6179b72177
//! (the profile moved out of moby/moby into github.com/moby/profiles, which moby vendors).
//! One `Rule` per entry of its `syscalls`, in its order, with its names in its order.
use super::profile::{Action, Op, Profile, Rule};

/// The namespace flags `clone` may not carry without CAP_SYS_ADMIN (moby's mask, 0x7e020000).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Moby's `excludes.arches`, which the builders do not cover.
fn except_on_arches(mut rule: Rule, arches: &[&str]) -> Rule {
    rule.excludes.arches = arches.iter().map(|a| a.to_string()).collect();
    rule
}

/// `socket` allowed for domains below `end` (moby's one open range from AF_UNIX up).
fn socket_below(end: u32) -> Rule {
    Rule::allow(&["socket"]).with_int_arg(0, Op::Lt, end)
}

/// `socket` allowed for this one domain.
fn socket_of(domain: u32) -> Rule {
    Rule::allow(&["socket"]).with_int_arg(0, Op::Eq, domain)
}

/// Ours, added to Docker's: no typing into a terminal's input (TIOCSTI, and TIOCLINUX,
/// whose subcommands paste a selection), which a command could use on a terminal it was
/// given to have its text run by the caller's shell (CVE-2017-5226). The request is an
/// `unsigned int`: compared over 32 bits.
pub fn terminal_injection() -> Vec<Rule> {
    [libc::TIOCSTI, libc::TIOCLINUX]
        .into_iter()
        .map(|request| {
            Rule::new(Action::Errno(libc::EPERM as u16), &["ioctl"]).with_int_arg(
                1,
                Op::Eq,
                request as u32,
            )
        })
        .collect()
}

/// Docker's default profile.
pub fn docker_default() -> Profile {
    Profile {
        default: Action::Errno(libc::EPERM as u16),
        rules: vec![
            Rule::allow(&[
                "accept",
                "accept4",
                "access",
                "adjtimex",
                "alarm",
                "bind",
                "brk",
                "cachestat",
                "capget",
                "capset",
                "chdir",
                "chmod",
                "chown",
                "chown32",
                "clock_adjtime",
                "clock_adjtime64",
                "clock_getres",
                "clock_getres_time64",
                "clock_gettime",
                "clock_gettime64",
                "clock_nanosleep",
                "clock_nanosleep_time64",
                "close",
                "close_range",
                "connect",
                "copy_file_range",
                "creat",
                "dup",
                "dup2",
                "dup3",
                "epoll_create",
                "epoll_create1",
                "epoll_ctl",
                "epoll_ctl_old",
                "epoll_pwait",
                "epoll_pwait2",
                "epoll_wait",
                "epoll_wait_old",
                "eventfd",
                "eventfd2",
                "execve",
                "execveat",
                "exit",
                "exit_group",
                "faccessat",
                "faccessat2",
                "fadvise64",
                "fadvise64_64",
                "fallocate",
                "fanotify_mark",
                "fchdir",
                "fchmod",
                "fchmodat",
                "fchmodat2",
                "fchown",
                "fchown32",
                "fchownat",
                "fcntl",
                "fcntl64",
                "fdatasync",
                "fgetxattr",
                "flistxattr",
                "flock",
                "fork",
                "fremovexattr",
                "fsetxattr",
                "fstat",
                "fstat64",
                "fstatat64",
                "fstatfs",
                "fstatfs64",
                "fsync",
                "ftruncate",
                "ftruncate64",
                "futex",
                "futex_requeue",
                "futex_time64",
                "futex_wait",
                "futex_waitv",
                "futex_wake",
                "futimesat",
                "getcpu",
                "getcwd",
                "getdents",
                "getdents64",
                "getegid",
                "getegid32",
                "geteuid",
                "geteuid32",
                "getgid",
                "getgid32",
                "getgroups",
                "getgroups32",
                "getitimer",
                "getpeername",
                "getpgid",
                "getpgrp",
                "getpid",
                "getppid",
                "getpriority",
                "getrandom",
                "getresgid",
                "getresgid32",
                "getresuid",
                "getresuid32",
                "getrlimit",
                "get_robust_list",
                "getrusage",
                "getsid",
                "getsockname",
                "getsockopt",
                "get_thread_area",
                "gettid",
                "gettimeofday",
                "getuid",
                "getuid32",
                "getxattr",
                "getxattrat",
                "inotify_add_watch",
                "inotify_init",
                "inotify_init1",
                "inotify_rm_watch",
                "io_cancel",
                "ioctl",
                "io_destroy",
                "io_getevents",
                "io_pgetevents",
                "io_pgetevents_time64",
                "ioprio_get",
                "ioprio_set",
                "io_setup",
                "io_submit",
                "ipc",
                "kill",
                "landlock_add_rule",
                "landlock_create_ruleset",
                "landlock_restrict_self",
                "lchown",
                "lchown32",
                "lgetxattr",
                "link",
                "linkat",
                "listen",
                "listmount",
                "listxattr",
                "listxattrat",
                "llistxattr",
                "_llseek",
                "lremovexattr",
                "lseek",
                "lsetxattr",
                "lstat",
                "lstat64",
                "madvise",
                "map_shadow_stack",
                "membarrier",
                "memfd_create",
                "memfd_secret",
                "mincore",
                "mkdir",
                "mkdirat",
                "mknod",
                "mknodat",
                "mlock",
                "mlock2",
                "mlockall",
                "mmap",
                "mmap2",
                "mprotect",
                "mq_getsetattr",
                "mq_notify",
                "mq_open",
                "mq_timedreceive",
                "mq_timedreceive_time64",
                "mq_timedsend",
                "mq_timedsend_time64",
                "mq_unlink",
                "mremap",
                "mseal",
                "msgctl",
                "msgget",
                "msgrcv",
                "msgsnd",
                "msync",
                "munlock",
                "munlockall",
                "munmap",
                "name_to_handle_at",
                "nanosleep",
                "newfstatat",
                "_newselect",
                "open",
                "openat",
                "openat2",
                "pause",
                "pidfd_open",
                "pidfd_send_signal",
                "pipe",
                "pipe2",
                "pkey_alloc",
                "pkey_free",
                "pkey_mprotect",
                "poll",
                "ppoll",
                "ppoll_time64",
                "prctl",
                "pread64",
                "preadv",
                "preadv2",
                "prlimit64",
                "process_mrelease",
                "pselect6",
                "pselect6_time64",
                "pwrite64",
                "pwritev",
                "pwritev2",
                "read",
                "readahead",
                "readlink",
                "readlinkat",
                "readv",
                "recv",
                "recvfrom",
                "recvmmsg",
                "recvmmsg_time64",
                "recvmsg",
                "remap_file_pages",
                "removexattr",
                "removexattrat",
                "rename",
                "renameat",
                "renameat2",
                "restart_syscall",
                "riscv_hwprobe",
                "rmdir",
                "rseq",
                "rt_sigaction",
                "rt_sigpending",
                "rt_sigprocmask",
                "rt_sigqueueinfo",
                "rt_sigreturn",
                "rt_sigsuspend",
                "rt_sigtimedwait",
                "rt_sigtimedwait_time64",
                "rt_tgsigqueueinfo",
                "sched_getaffinity",
                "sched_getattr",
                "sched_getparam",
                "sched_get_priority_max",
                "sched_get_priority_min",
                "sched_getscheduler",
                "sched_rr_get_interval",
                "sched_rr_get_interval_time64",
                "sched_setaffinity",
                "sched_setattr",
                "sched_setparam",
                "sched_setscheduler",
                "sched_yield",
                "seccomp",
                "select",
                "semctl",
                "semget",
                "semop",
                "semtimedop",
                "semtimedop_time64",
                "send",
                "sendfile",
                "sendfile64",
                "sendmmsg",
                "sendmsg",
                "sendto",
                "setfsgid",
                "setfsgid32",
                "setfsuid",
                "setfsuid32",
                "setgid",
                "setgid32",
                "setgroups",
                "setgroups32",
                "setitimer",
                "setpgid",
                "setpriority",
                "setregid",
                "setregid32",
                "setresgid",
                "setresgid32",
                "setresuid",
                "setresuid32",
                "setreuid",
                "setreuid32",
                "setrlimit",
                "set_robust_list",
                "setsid",
                "setsockopt",
                "set_thread_area",
                "set_tid_address",
                "setuid",
                "setuid32",
                "setxattr",
                "setxattrat",
                "shmat",
                "shmctl",
                "shmdt",
                "shmget",
                "shutdown",
                "sigaltstack",
                "signalfd",
                "signalfd4",
                "sigprocmask",
                "sigreturn",
                "socketcall",
                "socketpair",
                "splice",
                "stat",
                "stat64",
                "statfs",
                "statfs64",
                "statmount",
                "statx",
                "symlink",
                "symlinkat",
                "sync",
                "sync_file_range",
                "syncfs",
                "sysinfo",
                "tee",
                "tgkill",
                "time",
                "timer_create",
                "timer_delete",
                "timer_getoverrun",
                "timer_gettime",
                "timer_gettime64",
                "timer_settime",
                "timer_settime64",
                "timerfd_create",
                "timerfd_gettime",
                "timerfd_gettime64",
                "timerfd_settime",
                "timerfd_settime64",
                "times",
                "tkill",
                "truncate",
                "truncate64",
                "ugetrlimit",
                "umask",
                "uname",
                "unlink",
                "unlinkat",
                "uretprobe",
                "utime",
                "utimensat",
                "utimensat_time64",
                "utimes",
                "vfork",
                "vmsplice",
                "wait4",
                "waitid",
                "waitpid",
                "write",
                "writev",
            ]),
            Rule::allow(&["process_vm_readv", "process_vm_writev", "ptrace"]).from_kernel(4, 8),
            // socket(2) only for the domains moby allows. Moby's own list now leaves out
            // AF_ALG (38, the kernel crypto API, CVE-2026-31431 "Copy Fail") and AF_VSOCK (40,
            // host/guest sockets) as well as removed families (12 AF_DECnet, 19 AF_ECONET,
            // 20 AF_ATMSVC, 23 AF_IRDA, 25 AF_WANPIPE, 34 AF_ISDN, 37 AF_CAIF) and anything
            // above 45, so refusing AF_ALG needs no condition of ours. The domain is an
            // `int`: compared on its low 32 bits.
            socket_below(12), // AF_UNIX (1) .. AF_ROSE (11)
            socket_of(13),    // AF_NETBEUI
            socket_of(14),    // AF_SECURITY
            socket_of(15),    // AF_KEY
            socket_of(16),    // AF_NETLINK
            socket_of(17),    // AF_PACKET
            socket_of(18),    // AF_ASH
            socket_of(21),    // AF_RDS
            socket_of(22),    // AF_SNA
            socket_of(24),    // AF_PPPOX
            socket_of(26),    // AF_LLC
            socket_of(27),    // AF_IB
            socket_of(28),    // AF_MPLS
            socket_of(29),    // AF_CAN
            socket_of(30),    // AF_TIPC
            socket_of(31),    // AF_BLUETOOTH
            socket_of(32),    // AF_IUCV
            socket_of(33),    // AF_RXRPC
            socket_of(35),    // AF_PHONET
            socket_of(36),    // AF_IEEE802154
            socket_of(39),    // AF_NFC
            socket_of(41),    // AF_KCM
            socket_of(42),    // AF_QIPCRTR
            socket_of(43),    // AF_SMC
            socket_of(44),    // AF_XDP
            socket_of(45),    // AF_MCTP
            // personality(2) only to these personas (PER_LINUX, PER_LINUX32,
            // UNAME26, UNAME26|PER_LINUX32, and 0xffffffff, which only queries).
            Rule::allow(&["personality"]).with_int_arg(0, Op::Eq, 0x0),
            Rule::allow(&["personality"]).with_int_arg(0, Op::Eq, 0x0008),
            Rule::allow(&["personality"]).with_int_arg(0, Op::Eq, 0x20000),
            Rule::allow(&["personality"]).with_int_arg(0, Op::Eq, 0x20008),
            Rule::allow(&["personality"]).with_int_arg(0, Op::Eq, 0xffff_ffff),
            Rule::allow(&["sync_file_range2", "swapcontext"]).on_arches(&["ppc64le"]),
            Rule::allow(&[
                "arm_fadvise64_64",
                "arm_sync_file_range",
                "sync_file_range2",
                "breakpoint",
                "cacheflush",
                "set_tls",
            ])
            .on_arches(&["arm", "arm64"]),
            Rule::allow(&["arch_prctl"]).on_arches(&["amd64", "x32"]),
            Rule::allow(&["modify_ldt"]).on_arches(&["amd64", "x32", "x86"]),
            Rule::allow(&[
                "s390_pci_mmio_read",
                "s390_pci_mmio_write",
                "s390_runtime_instr",
            ])
            .on_arches(&["s390", "s390x"]),
            Rule::allow(&["riscv_flush_icache"]).on_arches(&["riscv64"]),
            Rule::allow(&["open_by_handle_at"]).with_caps(&["DAC_READ_SEARCH"]),
            Rule::allow(&[
                "bpf",
                "clone",
                "clone3",
                "fanotify_init",
                "fsconfig",
                "fsmount",
                "fsopen",
                "fspick",
                "lookup_dcookie",
                "lsm_get_self_attr",
                "lsm_list_modules",
                "lsm_set_self_attr",
                "mount",
                "mount_setattr",
                "move_mount",
                "open_tree",
                "perf_event_open",
                "quotactl",
                "quotactl_fd",
                "setdomainname",
                "sethostname",
                "setns",
                "syslog",
                "umount",
                "umount2",
                "unshare",
            ])
            .with_caps(&["SYS_ADMIN"]),
            // Without CAP_SYS_ADMIN, clone only without namespace flags. The flags are an
            // `unsigned long`: compared over 64 bits. s390 passes them as argument 1.
            except_on_arches(
                Rule::allow(&["clone"])
                    .with_arg(0, Op::MaskedEq(CLONE_NAMESPACES), 0)
                    .without_caps(&["SYS_ADMIN"]),
                &["s390", "s390x"],
            ),
            Rule::allow(&["clone"])
                .with_arg(1, Op::MaskedEq(CLONE_NAMESPACES), 0)
                .on_arches(&["s390", "s390x"])
                .without_caps(&["SYS_ADMIN"]),
            // clone3's flags sit in memory, out of seccomp's reach: ENOSYS makes libc fall
            // back to clone, whose flags the rules above check.
            Rule::new(Action::Errno(libc::ENOSYS as u16), &["clone3"]).without_caps(&["SYS_ADMIN"]),
            Rule::allow(&["reboot"]).with_caps(&["SYS_BOOT"]),
            Rule::allow(&["chroot"]).with_caps(&["SYS_CHROOT"]),
            Rule::allow(&["delete_module", "init_module", "finit_module"])
                .with_caps(&["SYS_MODULE"]),
            Rule::allow(&["acct"]).with_caps(&["SYS_PACCT"]),
            Rule::allow(&[
                "kcmp",
                "pidfd_getfd",
                "process_madvise",
                "process_vm_readv",
                "process_vm_writev",
                "ptrace",
            ])
            .with_caps(&["SYS_PTRACE"]),
            Rule::allow(&["iopl", "ioperm"]).with_caps(&["SYS_RAWIO"]),
            Rule::allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
                .with_caps(&["SYS_TIME"]),
            Rule::allow(&["vhangup"]).with_caps(&["SYS_TTY_CONFIG"]),
            Rule::allow(&[
                "get_mempolicy",
                "mbind",
                "set_mempolicy",
                "set_mempolicy_home_node",
            ])
            .with_caps(&["SYS_NICE"]),
            Rule::allow(&["syslog"]).with_caps(&["SYSLOG"]),
            Rule::allow(&["bpf"]).with_caps(&["BPF"]),
            Rule::allow(&["perf_event_open"]).with_caps(&["PERFMON"]),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile::{Cond, Conditions};
    use super::*;
    use crate::run::security::{DEFAULT_CAPS, cap_number};

    const KERNEL: (u32, u32) = (6, 8);

    fn caps(names: &[&str]) -> Vec<u32> {
        names.iter().map(|n| cap_number(n).unwrap()).collect()
    }

    /// Whether `rule` applies to a container with `caps` on `arch` under [`KERNEL`].
    fn applies(rule: &Rule, caps: &[u32], arch: &str) -> bool {
        let inc = &rule.includes;
        let exc = &rule.excludes;
        inc.caps.iter().all(|c| caps.contains(c))
            && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == arch))
            && inc.min_kernel.is_none_or(|k| KERNEL >= k)
            && !exc.caps.iter().any(|c| caps.contains(c))
            && !exc.arches.iter().any(|a| a == arch)
            && exc.min_kernel.is_none_or(|k| KERNEL < k)
    }

    fn holds(c: &Cond, args: [u64; 6]) -> bool {
        let mut x = args[c.arg as usize];
        if c.low32 {
            x &= 0xffff_ffff;
        }
        let v = c.value;
        match c.op {
            Op::Eq => x == v,
            Op::Ne => x != v,
            Op::Lt => x < v,
            Op::Le => x <= v,
            Op::Gt => x > v,
            Op::Ge => x >= v,
            Op::MaskedEq(m) => x & m == v,
        }
    }

    /// What the call gets: the first applicable rule naming it whose conditions all hold.
    fn outcome(name: &str, args: [u64; 6], caps: &[u32], arch: &str) -> Action {
        let p = docker_default();
        p.rules
            .iter()
            .filter(|r| r.names.iter().any(|n| n == name) && applies(r, caps, arch))
            .find(|r| r.args.iter().all(|c| holds(c, args)))
            .map_or(p.default, |r| r.action)
    }

    fn args0(a: u64) -> [u64; 6] {
        [a, 0, 0, 0, 0, 0]
    }

    #[test]
    fn dangerous_calls_are_not_allowed_without_capabilities() {
        let p = docker_default();
        for names in [&[][..], DEFAULT_CAPS] {
            let held = caps(names);
            for name in [
                "keyctl",
                "add_key",
                "request_key",
                "unshare",
                "perf_event_open",
                "quotactl",
                "kcmp",
                "mount",
                "setns",
                "bpf",
                "userfaultfd",
                "io_uring_setup",
                "kexec_load",
            ] {
                for arch in ["amd64", "x86", "x32", "arm64"] {
                    let allowing = p.rules.iter().find(|r| {
                        r.names.iter().any(|n| n == name)
                            && r.action == Action::Allow
                            && applies(r, &held, arch)
                    });
                    assert!(allowing.is_none(), "{name} allowed on {arch}: {allowing:?}");
                }
            }
        }
        // With the capability they are back.
        let admin = caps(&["SYS_ADMIN"]);
        assert_eq!(outcome("unshare", args0(0), &admin, "amd64"), Action::Allow);
        assert_eq!(
            outcome("kcmp", args0(0), &caps(&["SYS_PTRACE"]), "amd64"),
            Action::Allow
        );
    }

    #[test]
    fn clone3_gets_enosys_without_sys_admin() {
        let enosys = Action::Errno(libc::ENOSYS as u16);
        assert_eq!(outcome("clone3", args0(0), &[], "amd64"), enosys);
        assert_eq!(
            outcome("clone3", args0(0), &caps(DEFAULT_CAPS), "amd64"),
            enosys
        );
        assert_eq!(
            outcome("clone3", args0(0), &caps(&["SYS_ADMIN"]), "amd64"),
            Action::Allow
        );
    }

    #[test]
    fn everyday_calls_are_allowed_unconditionally() {
        let p = docker_default();
        for name in ["read", "write", "execve", "futex"] {
            let rule = p.rules.iter().find(|r| r.names.iter().any(|n| n == name));
            let rule = rule.unwrap_or_else(|| panic!("{name} in no rule"));
            assert_eq!(rule.action, Action::Allow, "{name}");
            assert!(rule.args.is_empty(), "{name}");
            assert_eq!(rule.includes, Conditions::default(), "{name}");
            assert_eq!(rule.excludes, Conditions::default(), "{name}");
        }
    }

    #[test]
    fn socket_refuses_af_alg_and_af_vsock() {
        let ok = |domain: u64| outcome("socket", args0(domain), &[], "amd64") == Action::Allow;
        // AF_UNSPEC (0) falls in moby's `< 12` range too; the kernel refuses it anyway.
        for domain in [0, 1, 2, 10, 16, 17, 39, 44, 45] {
            assert!(ok(domain), "domain {domain} refused");
        }
        for domain in [12, 20, 38, 40, 46, 0xffff_ffff] {
            assert!(!ok(domain), "domain {domain} allowed");
        }
        // An `int`: junk in the upper half does not turn AF_ALG into something else.
        assert!(!ok(0x1_0000_0000 | 38));
        assert!(ok(0x1_0000_0000 | 2));
        assert_eq!(
            outcome("socket", args0(38), &[], "amd64"),
            Action::Errno(libc::EPERM as u16)
        );
    }

    #[test]
    fn personality_only_to_the_listed_personas() {
        for persona in [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                outcome("personality", args0(persona), &[], "amd64"),
                Action::Allow
            );
        }
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC.
        for persona in [0x0040000, 0x0400000] {
            assert_ne!(
                outcome("personality", args0(persona), &[], "amd64"),
                Action::Allow
            );
        }
    }

    #[test]
    fn clone_without_namespace_flags_only() {
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_THREAD) as u64;
        let newuser = libc::CLONE_NEWUSER as u64;
        let none: &[u32] = &[];
        assert_eq!(
            outcome("clone", args0(thread), none, "amd64"),
            Action::Allow
        );
        assert_ne!(
            outcome("clone", args0(thread | newuser), none, "amd64"),
            Action::Allow
        );
        // On s390 the flags are argument 1.
        let s390 = |a0: u64, a1: u64| outcome("clone", [a0, a1, 0, 0, 0, 0], none, "s390x");
        assert_eq!(s390(newuser, thread), Action::Allow);
        assert_ne!(s390(thread, thread | newuser), Action::Allow);
        let admin = caps(&["SYS_ADMIN"]);
        assert_eq!(
            outcome("clone", args0(newuser), &admin, "amd64"),
            Action::Allow
        );
        assert_eq!(CLONE_NAMESPACES, 0x7e02_0000);
    }

    #[test]
    fn rules_are_well_formed() {
        let p = docker_default();
        assert_eq!(p.default, Action::Errno(libc::EPERM as u16));
        assert_eq!(p.rules.len(), 56);
        for r in &p.rules {
            assert!(!r.names.is_empty());
            for (i, n) in r.names.iter().enumerate() {
                assert!(!r.names[..i].contains(n), "{n} twice in one rule");
            }
        }
    }
}
