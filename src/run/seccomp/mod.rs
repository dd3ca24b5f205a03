//! The container's system call filter: Docker's default profile unless told otherwise,
//! resolved against the container's capabilities and the running kernel, compiled to BPF
//! once in rootpack, and loaded by the command's process: with no_new_privs (asked for, and
//! in build steps), as the last step before `execve`, needing no privilege; without it (the
//! default, as in Docker), before the ids and capabilities change, while CAP_SYS_ADMIN is
//! still held (runc's order), so that what is left runs under it.
//!
//! # Security
//!
//! - Default action EPERM; what the profile does not allow fails. Numbers above the
//!   highest the profile knows get ENOSYS, so a libc newer than the profile falls back.
//! - Namespaces stay out of reach: `unshare` and `setns` need CAP_SYS_ADMIN, `clone` is
//!   allowed only without namespace flags, and `clone3` (whose flags sit in memory a
//!   filter cannot read) gets ENOSYS so glibc falls back to `clone`. Without this a
//!   container made a user namespace, mounted cgroupfs in it and lifted its own limits.
//! - The kernel keyring (`keyctl`, `add_key`, `request_key`), `perf_event_open`,
//!   `quotactl`, `kcmp`, `bpf`, module loading and the rest of Docker's refusals.
//! - `socket(AF_VSOCK)` (not isolated by network namespaces) and `socket(AF_ALG)`.
//! - The x86_64 ABI, and i386 (32-bit programs, `int 0x80`) with the same profile resolved
//!   for "x86" and its own numbers, as Docker allows it. i386 reaches sockets through
//!   `socketcall`, whose arguments sit in memory: there the address-family rule cannot
//!   apply, as under Docker. An x32 call, or any other architecture's, kills the process.
//! - `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)`, which push characters into a terminal's
//!   input, are refused with EPERM (CVE-2017-5226; Docker leaves this to the kernel).
//! - Conditions within one rule are ANDed, rules for one call ORed; an unknown system
//!   call name in a profile is an error, never silently skipped (a typo would weaken it).

mod bpf;
pub mod default;
pub mod docker;
pub mod profile;
mod syscalls;
mod syscalls_i386;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use bpf::{Insn, Outcome};
#[cfg(test)]
use profile::Action;
use profile::{Profile, Rule};

/// Which filter a container gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile.
    #[default]
    Default,
    /// `--security-opt seccomp=unconfined`: no filter.
    Unconfined,
    /// `--security-opt seccomp=FILE.json`: a Docker-format profile.
    File(PathBuf),
}

/// A compiled filter, ready to load.
#[derive(Debug, Clone)]
pub struct Filter(Vec<Insn>);

impl Filter {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Loads the filter on the calling thread. Needs no_new_privs (or CAP_SYS_ADMIN).
    pub fn install(&self) -> io::Result<()> {
        #[repr(C)]
        struct Program {
            len: u16,
            filter: *const Insn,
        }
        let prog = Program {
            len: self.0.len() as u16,
            filter: self.0.as_ptr(),
        };
        const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
        // SAFETY: seccomp(2) reads `len` instructions from a live vector.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                0 as libc::c_ulong,
                &prog as *const Program,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The filter for a container with capability mask `caps`, or `None` when unconfined.
pub fn filter_for(choice: &Seccomp, caps: u64) -> Result<Option<Filter>, String> {
    let profile = match choice {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => {
            let mut p = default::docker_default();
            p.rules.extend(default::terminal_injection());
            p
        }
        Seccomp::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("seccomp profile {}: {e}", path.display()))?;
            docker::parse(&text).map_err(|e| format!("seccomp profile {}: {e}", path.display()))?
        }
    };
    let kernel = running_kernel().unwrap_or((0, 0));
    let what = match choice {
        Seccomp::File(path) => format!("seccomp profile {}", path.display()),
        _ => "the default seccomp profile".into(),
    };
    compile(&profile, caps, kernel)
        .map(Some)
        .map_err(|e| format!("{what}: {e}"))
}

/// Compiles `profile` for the running kernel, without capability conditions (a profile in
/// the OCI form has none).
pub fn compile_here(profile: &Profile) -> Result<Filter, String> {
    compile(profile, 0, running_kernel().unwrap_or((0, 0)))
}

/// Removes the names of calls this build does not know from `profile` and returns them:
/// libseccomp skips a name it cannot resolve, and profiles list calls newer than ours.
pub fn drop_unknown(profile: &mut Profile) -> Vec<String> {
    let mut dropped = Vec::new();
    for rule in &mut profile.rules {
        rule.names.retain(|n| {
            let known = [Abi::X86_64, Abi::I386]
                .iter()
                .any(|abi| abi.number(n).is_some())
                || FOREIGN.contains(&n.as_str());
            if !known {
                dropped.push(n.clone());
            }
            known
        });
    }
    profile.rules.retain(|r| !r.names.is_empty());
    dropped
}

/// Resolves `profile` for these capabilities and kernel, and compiles it.
///
/// As libseccomp does, a call's rules with conditions are tried first, in order, and its
/// first rule without conditions decides when none matches (the profile's default when it
/// has none): `ioctl` allowed, but refused for TIOCSTI.
pub fn compile(profile: &Profile, caps: u64, kernel: (u32, u32)) -> Result<Filter, String> {
    for name in profile.rules.iter().flat_map(|r| &r.names) {
        let known = [Abi::X86_64, Abi::I386]
            .iter()
            .any(|abi| abi.number(name).is_some());
        if !known && !FOREIGN.contains(&name.as_str()) {
            return Err(format!("unknown system call {name:?}"));
        }
    }
    let native = resolve(profile, caps, kernel, Abi::X86_64);
    let i386 = resolve(profile, caps, kernel, Abi::I386);
    let parts = [
        bpf::ArchPart {
            arch: bpf::AUDIT_ARCH_X86_64,
            outcomes: &native,
            max_nr: Abi::X86_64.max_nr(),
        },
        bpf::ArchPart {
            arch: bpf::AUDIT_ARCH_I386,
            outcomes: &i386,
            max_nr: Abi::I386.max_nr(),
        },
    ];
    bpf::compile_arches(&parts, profile.default).map(Filter)
}

/// The two ABIs a container's programs may use: x86_64, and i386 (`int 0x80`, 32-bit
/// programs), whose calls have their own numbers. x32 is refused, as Docker refuses it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Abi {
    X86_64,
    I386,
}

impl Abi {
    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Abi::X86_64 => syscalls::X86_64,
            Abi::I386 => syscalls_i386::I386,
        }
    }

    fn number(self, name: &str) -> Option<u32> {
        let table = self.table();
        table
            .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| table[i].1)
    }

    fn max_nr(self) -> u32 {
        self.table().iter().map(|(_, n)| *n).max().unwrap_or(0)
    }

    /// Profile names for it (moby's and libseccomp's).
    fn names(self) -> &'static [&'static str] {
        match self {
            Abi::X86_64 => &["amd64", "x86_64", "SCMP_ARCH_X86_64"],
            Abi::I386 => &["x86", "i386", "SCMP_ARCH_X86"],
        }
    }
}

/// The outcome of each call `abi` numbers, under these capabilities and kernel. As
/// libseccomp does, a call's rules with conditions are tried first, in order, and its
/// first rule without conditions decides when none matches (the profile's default when it
/// has none): `ioctl` allowed, but refused for TIOCSTI.
fn resolve(profile: &Profile, caps: u64, kernel: (u32, u32), abi: Abi) -> BTreeMap<u32, Outcome> {
    type Conditional = Vec<(Vec<profile::Cond>, profile::Action)>;
    let mut calls: BTreeMap<u32, (Conditional, Option<profile::Action>)> = BTreeMap::new();
    for rule in profile
        .rules
        .iter()
        .filter(|r| applies(r, caps, kernel, abi))
    {
        // A name the ABI does not have (arch_prctl on i386) is no call of it.
        for nr in rule.names.iter().filter_map(|n| abi.number(n)) {
            let (conditional, fallback) = calls.entry(nr).or_default();
            if rule.args.is_empty() {
                fallback.get_or_insert(rule.action);
            } else {
                conditional.push((rule.args.clone(), rule.action));
            }
        }
    }
    calls
        .into_iter()
        .map(|(nr, (conditional, fallback))| {
            let fallback = fallback.unwrap_or(profile.default);
            let outcome = if conditional.iter().all(|(_, a)| *a == fallback) {
                Outcome::Always(fallback)
            } else {
                Outcome::Rules(conditional, fallback)
            };
            (nr, outcome)
        })
        .collect()
}

fn applies(rule: &Rule, caps: u64, kernel: (u32, u32), abi: Abi) -> bool {
    let has = |c: &u32| *c < 64 && caps & (1 << c) != 0;
    let ours = |arches: &[String]| arches.iter().any(|a| abi.names().contains(&a.as_str()));
    let inc = &rule.includes;
    let exc = &rule.excludes;
    inc.caps.iter().all(has)
        && (inc.arches.is_empty() || ours(&inc.arches))
        && inc.min_kernel.is_none_or(|v| kernel >= v)
        && !exc.caps.iter().any(has)
        && !ours(&exc.arches)
        && exc.min_kernel.is_none_or(|v| kernel < v)
}

/// Names of other architectures' calls, skipped in a profile.
const FOREIGN: &[&str] = &[
    "_llseek",
    "_newselect",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "atomic_barrier",
    "atomic_cmpxchg_32",
    "bdflush",
    "break",
    "breakpoint",
    "cacheflush",
    "cachectl",
    "chown32",
    "clock_adjtime64",
    "clock_getres_time64",
    "clock_gettime64",
    "clock_nanosleep_time64",
    "clock_settime64",
    "fadvise64_64",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat",
    "fstatat64",
    "fstatfs64",
    "ftime",
    "ftruncate64",
    "futex_time64",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getpagesize",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "gtty",
    "idle",
    "io_pgetevents_time64",
    "ipc",
    "lchown32",
    "llseek",
    "lock",
    "lstat64",
    "mmap2",
    "mpx",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "multiplexer",
    "nice",
    "oldfstat",
    "oldlstat",
    "oldolduname",
    "oldstat",
    "olduname",
    "pciconfig_iobase",
    "pciconfig_read",
    "pciconfig_write",
    "ppoll_time64",
    "prof",
    "profil",
    "pselect6_time64",
    "readdir",
    "recv",
    "recvmmsg_time64",
    "riscv_flush_icache",
    "riscv_hwprobe",
    "rt_sigtimedwait_time64",
    "rtas",
    "s390_guarded_storage",
    "s390_pci_mmio_read",
    "s390_pci_mmio_write",
    "s390_runtime_instr",
    "s390_sthyi",
    "sched_rr_get_interval_time64",
    "semtimedop_time64",
    "send",
    "sendfile64",
    "set_tls",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "sgetmask",
    "sigaction",
    "signal",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    "socketcall",
    "spu_create",
    "spu_run",
    "ssetmask",
    "stat64",
    "statfs64",
    "stime",
    "stty",
    "subpage_prot",
    "swapcontext",
    "switch_endian",
    "sync_file_range2",
    "sys_debug_setcontext",
    "sysmips",
    "timer_gettime64",
    "timer_settime64",
    "timerfd",
    "timerfd_gettime64",
    "timerfd_settime64",
    "truncate64",
    "ugetrlimit",
    "ulimit",
    "umount",
    "usr26",
    "usr32",
    "utimensat_time64",
    "vm86",
    "vm86old",
    "waitpid",
];

/// "6.1.0-18-amd64" -> (6, 1).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn running_kernel() -> Option<(u32, u32)> {
    let uname = rustix::system::uname();
    parse_kernel_version(&uname.release().to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::security::capability_mask;

    const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;
    const ALLOW: u32 = 0x7fff_0000;
    const X86_64: u32 = 0xC000_003E;

    fn number(name: &str) -> Option<u32> {
        Abi::X86_64.number(name)
    }

    fn call(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
        bpf::interpret(&f.0, X86_64, number(name).unwrap(), args)
    }

    #[test]
    fn syscall_table_is_sorted_and_unique() {
        let t = syscalls::X86_64;
        assert!(t.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()));
        assert_eq!(number("read"), Some(0));
        assert_eq!(number("clone3"), Some(435));
        assert_eq!(number("no_such_call"), None);
    }

    #[test]
    fn default_profile_under_default_capabilities() {
        let caps = capability_mask(&[], &[]).unwrap();
        let f = compile(&default::docker_default(), caps, (6, 1)).unwrap();
        for name in [
            "read",
            "write",
            "execve",
            "futex",
            "clone",
            "exit_group",
            "openat",
        ] {
            assert_eq!(call(&f, name, [0; 6]), ALLOW, "{name}");
        }
        for name in [
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "perf_event_open",
            "quotactl",
            "kcmp",
            "mount",
            "bpf",
            "init_module",
            "reboot",
        ] {
            assert_eq!(call(&f, name, [0; 6]), EPERM, "{name}");
        }
        assert_eq!(call(&f, "clone3", [0; 6]), ENOSYS);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(call(&f, "clone", [newuser, 0, 0, 0, 0, 0]), EPERM);
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(call(&f, "clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
        let socket = |family: u64| call(&f, "socket", [family, 1, 0, 0, 0, 0]);
        assert_eq!(socket(libc::AF_INET as u64), ALLOW);
        assert_eq!(socket(libc::AF_VSOCK as u64), EPERM);
        assert_eq!(socket(libc::AF_ALG as u64), EPERM);
        assert_eq!(socket(0xffff_0000_0000_0000 | libc::AF_VSOCK as u64), EPERM);
        let persona = |p: u64| call(&f, "personality", [p, 0, 0, 0, 0, 0]);
        assert_eq!(persona(0), ALLOW);
        assert_eq!(persona(0xffff_ffff), ALLOW);
        assert_eq!(persona(0x0040000), EPERM, "ADDR_NO_RANDOMIZE");
        // Beyond the table: ENOSYS, for libc fallbacks.
        assert_eq!(bpf::interpret(&f.0, X86_64, 1000, [0; 6]), ENOSYS);
    }

    #[test]
    fn i386_calls_get_the_profile_for_x86_under_their_own_numbers() {
        let caps = capability_mask(&[], &[]).unwrap();
        let f = compile(&default::docker_default(), caps, (6, 1)).unwrap();
        const I386: u32 = bpf::AUDIT_ARCH_I386;
        let i386 =
            |name: &str, args| bpf::interpret(&f.0, I386, Abi::I386.number(name).unwrap(), args);
        assert_eq!(i386("getpid", [0; 6]), ALLOW);
        assert_eq!(i386("socketcall", [0; 6]), ALLOW);
        assert_eq!(i386("keyctl", [0; 6]), EPERM);
        assert_eq!(i386("unshare", [0; 6]), EPERM);
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(i386("clone", [newuser, 0, 0, 0, 0, 0]), EPERM);
        assert_eq!(i386("clone", [0, 0, 0, 0, 0, 0]), ALLOW);
        // i386 numbers are not x86_64's: 20 is getpid there, writev here.
        assert_eq!(Abi::I386.number("getpid"), Some(20));
        assert_eq!(bpf::interpret(&f.0, I386, 5000, [0; 6]), ENOSYS);
        // x32, and any other architecture, are killed.
        let kill = 0x8000_0000;
        assert_eq!(bpf::interpret(&f.0, X86_64, 0x4000_0027, [0; 6]), kill);
        assert_eq!(bpf::interpret(&f.0, 0xC000_00B7, 172, [0; 6]), kill);
    }

    #[test]
    fn terminal_injection_is_refused_and_other_ioctls_pass() {
        let caps = capability_mask(&["SYS_ADMIN".into()], &[]).unwrap();
        let mut profile = default::docker_default();
        profile.rules.extend(default::terminal_injection());
        let f = compile(&profile, caps, (6, 1)).unwrap();
        let ioctl = |request: u64| call(&f, "ioctl", [0, request, 0, 0, 0, 0]);
        assert_eq!(ioctl(libc::TIOCSTI), EPERM);
        assert_eq!(ioctl(libc::TIOCLINUX), EPERM);
        // The request is 32 bits: high bits do not get around the rule.
        assert_eq!(ioctl(0xffff_ffff_0000_0000 | libc::TIOCSTI), EPERM);
        assert_eq!(ioctl(libc::TIOCGWINSZ), ALLOW);
        assert_eq!(ioctl(libc::FIONREAD), ALLOW);
    }

    #[test]
    fn capabilities_unlock_their_calls() {
        let caps = capability_mask(&["SYS_ADMIN".into(), "SYS_PTRACE".into()], &[]).unwrap();
        let f = compile(&default::docker_default(), caps, (6, 1)).unwrap();
        for name in ["unshare", "setns", "mount", "kcmp", "clone3"] {
            assert_eq!(call(&f, name, [0; 6]), ALLOW, "{name}");
        }
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(call(&f, "clone", [newuser, 0, 0, 0, 0, 0]), ALLOW);
    }

    #[test]
    fn unknown_names_are_errors_foreign_ones_are_skipped() {
        let profile = |names: &[&str]| Profile {
            default: Action::Errno(1),
            rules: vec![Rule::allow(names)],
        };
        assert!(compile(&profile(&["read", "socketcall", "_llseek"]), 0, (6, 1)).is_ok());
        let err = compile(&profile(&["read", "raed"]), 0, (6, 1)).unwrap_err();
        assert!(err.contains("\"raed\""), "{err}");
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_version("x"), None);
    }
}
