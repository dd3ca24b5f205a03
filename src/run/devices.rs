//! The device cgroup: which device nodes the container may open, as Docker allows them.
//!
//! Any node may be made (`mknod`, with CAP_MKNOD), but only these open: null, zero,
//! full, random, urandom, tty, console, ptmx and the ptys. So the container's `/dev` can
//! hold nodes of its own (made, not bound from the host), and a node it makes of the
//! host's disk does not open. On cgroup v1 the `devices` controller takes the rules as
//! text; on cgroup v2 they are a small eBPF program attached to the group
//! (BPF_CGROUP_DEVICE), as runc and crun write it.

use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// (type, major, minor; `None` for any) of the nodes that open, read and write.
const ALLOWED: &[(char, u32, Option<u32>)] = &[
    ('c', 1, Some(3)), // null
    ('c', 1, Some(5)), // zero
    ('c', 1, Some(7)), // full
    ('c', 1, Some(8)), // random
    ('c', 1, Some(9)), // urandom
    ('c', 5, Some(0)), // tty
    ('c', 5, Some(1)), // console
    ('c', 5, Some(2)), // ptmx
    ('c', 136, None),  // pts/*
];

/// The v1 rules, in the order they are written: deny all, then allow.
pub fn v1_rules() -> Vec<String> {
    let mut rules = vec!["c *:* m".to_string(), "b *:* m".to_string()];
    for (kind, major, minor) in ALLOWED {
        let minor = minor.map_or("*".to_string(), |m| m.to_string());
        rules.push(format!("{kind} {major}:{minor} rwm"));
    }
    rules
}

/// Writes the policy into a v1 `devices` group.
pub fn apply_v1(dir: &Path) -> io::Result<()> {
    let write = |file: &str, value: &str| {
        std::fs::write(dir.join(file), value)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(file).display())))
    };
    write("devices.deny", "a")?;
    for rule in v1_rules() {
        write("devices.allow", &rule)?;
    }
    Ok(())
}

/// One eBPF instruction.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// eBPF opcodes used here.
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV_REG: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const EXIT: u8 = 0x95;

const ACC_MKNOD: i32 = 1;
const DEV_CHAR: i32 = 2;

/// Loads the context into r2 = access, r3 = the node's type, r4 = major, r5 = minor.
fn prologue() -> Vec<Insn> {
    vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV_REG, 3, 2, 0, 0),
        insn(AND_K, 3, 0, 0, 0xffff),
        insn(RSH_K, 2, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ]
}

/// The v2 program over `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32
/// minor; }` (access in the high 16 bits, the node's type in the low): 1 allows, 0
/// refuses.
pub fn program() -> Vec<Insn> {
    let mut p = prologue();
    // Making any node is allowed: access is MKNOD alone.
    let mut jumps_to_allow = vec![p.len()];
    p.push(insn(JEQ_K, 2, 0, 0, ACC_MKNOD));
    // Anything but a character device: refused.
    let to_deny = p.len();
    p.push(insn(JNE_K, 3, 0, 0, DEV_CHAR));
    for (_, major, minor) in ALLOWED {
        match minor {
            Some(minor) => {
                // if major != M skip 1; if minor == m allow
                p.push(insn(JNE_K, 4, 0, 1, *major as i32));
                jumps_to_allow.push(p.len());
                p.push(insn(JEQ_K, 5, 0, 0, *minor as i32));
            }
            None => {
                jumps_to_allow.push(p.len());
                p.push(insn(JEQ_K, 4, 0, 0, *major as i32));
            }
        }
    }
    let deny = p.len();
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    let allow = p.len();
    p.push(insn(MOV_K, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p[to_deny].off = (deny - to_deny - 1) as i16;
    for at in jumps_to_allow {
        p[at].off = (allow - at - 1) as i16;
    }
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// Loads [`program`] into the kernel (checked by its verifier): done when the group is
/// made, so that a host without BPF for cgroups is known before the container is built.
pub fn load_v2() -> io::Result<OwnedFd> {
    load_program(&program())
}

/// One rule of an OCI spec's `linux.resources.devices`: later rules win over earlier ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// 'c' or 'b'; `None` for every type.
    pub kind: Option<char>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// The letters of "rwm" the rule covers.
    pub access: String,
}

impl Rule {
    /// The v1 form: "c 1:3 rwm", "a".
    pub fn v1(&self) -> String {
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        match self.kind {
            None if self.major.is_none() && self.minor.is_none() => "a".into(),
            kind => format!(
                "{} {}:{} {}",
                kind.unwrap_or('a'),
                num(self.major),
                num(self.minor),
                self.access
            ),
        }
    }

    /// BPF_DEVCG_ACC_* bits: mknod 1, read 2, write 4.
    fn access_bits(&self) -> i32 {
        self.access.chars().fold(0, |bits, c| {
            bits | match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => 0,
            }
        })
    }
}

/// Writes OCI rules into a v1 `devices` group, in order.
pub fn apply_v1_rules(dir: &Path, rules: &[Rule]) -> io::Result<()> {
    for rule in rules {
        let file = dir.join(if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        });
        std::fs::write(&file, rule.v1())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    }
    Ok(())
}

/// The v2 program for OCI rules: the last rule that matches decides; none refuses.
pub fn program_for(rules: &[Rule]) -> Vec<Insn> {
    // r6: scratch.
    let mut p = prologue();
    for rule in rules.iter().rev() {
        // Each check jumps to the next rule when it fails.
        let mut skips = Vec::new();
        if let Some(kind) = rule.kind {
            skips.push(p.len());
            p.push(insn(JNE_K, 3, 0, 0, if kind == 'b' { 1 } else { DEV_CHAR }));
        }
        p.push(insn(MOV_REG, 6, 2, 0, 0));
        p.push(insn(AND_K, 6, 0, 0, !rule.access_bits() & 7));
        skips.push(p.len());
        p.push(insn(JNE_K, 6, 0, 0, 0));
        for (reg, value) in [(4, rule.major), (5, rule.minor)] {
            if let Some(v) = value {
                skips.push(p.len());
                p.push(insn(JNE_K, reg, 0, 0, v as i32));
            }
        }
        p.push(insn(MOV_K, 0, 0, 0, rule.allow as i32));
        p.push(insn(EXIT, 0, 0, 0, 0));
        let next = p.len();
        for at in skips {
            p[at].off = (next - at - 1) as i16;
        }
    }
    p.push(insn(MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// Loads a device program into the kernel (checked by its verifier).
pub fn load_program(prog: &[Insn]) -> io::Result<OwnedFd> {
    #[repr(C)]
    #[derive(Default)]
    struct Load {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
    }
    let load = Load {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
        ..Load::default()
    };
    // The attr points at `prog` and the licence, both alive for the call.
    let fd = bpf(BPF_PROG_LOAD, &load, "loading the device program")?;
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a program from [`load_v2`] to the v2 group `dir`.
pub fn attach_v2(dir: &Path, prog_fd: &OwnedFd) -> io::Result<()> {
    let group = std::fs::File::open(dir)?;
    #[repr(C)]
    struct Attach {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
    }
    let attach = Attach {
        target_fd: group.as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    let what = format!("attaching the device program to {}", dir.display());
    bpf(BPF_PROG_ATTACH, &attach, &what).map(drop)
}

/// bpf(2) with `attr`, whose size it is given; an error says `what` failed.
fn bpf<T>(cmd: libc::c_long, attr: &T, what: &str) -> io::Result<libc::c_long> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes of a live, initialized `attr`; what
    // it points at is the caller's to keep alive.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one device access, as the kernel would.
    fn decide(access: i32, kind: i32, major: u32, minor: u32) -> u64 {
        run(&program(), access, kind, major, minor)
    }

    fn run(prog: &[Insn], access: i32, kind: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | kind) as u32, major, minor];
        let mut r = [0u64; 11];
        r[1] = 0;
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => r[dst] = ctx[i.off as usize / 4] as u64,
                MOV_REG => r[dst] = r[src] & 0xffff_ffff,
                MOV_K => r[dst] = i.imm as u64,
                AND_K => r[dst] &= i.imm as u64,
                RSH_K => r[dst] >>= i.imm,
                JEQ_K if r[dst] == i.imm as u64 => pc += i.off as usize,
                JNE_K if r[dst] != i.imm as u64 => pc += i.off as usize,
                JEQ_K | JNE_K => {}
                EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn oci_rules_the_last_match_wins() {
        let rule = |allow, kind, major, minor, access: &str| Rule {
            allow,
            kind,
            major,
            minor,
            access: access.into(),
        };
        let rules = [
            rule(false, None, None, None, "rwm"),
            rule(true, Some('c'), Some(1), Some(3), "rwm"),
            rule(true, Some('c'), Some(136), None, "rw"),
            rule(false, Some('c'), Some(136), Some(7), "w"),
        ];
        let prog = program_for(&rules);
        let (r, w, m) = (2, 4, 1);
        assert_eq!(run(&prog, r | w, DEV_CHAR, 1, 3), 1);
        assert_eq!(
            run(&prog, r, 1, 1, 3),
            0,
            "a block device of the same numbers"
        );
        assert_eq!(run(&prog, r, DEV_CHAR, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&prog, r | w, DEV_CHAR, 136, 2), 1);
        assert_eq!(run(&prog, m, DEV_CHAR, 136, 2), 0, "mknod is not in rw");
        assert_eq!(run(&prog, w, DEV_CHAR, 136, 7), 0, "a later deny wins");
        assert_eq!(run(&prog, r, DEV_CHAR, 136, 7), 1);
        assert_eq!(rules[0].v1(), "a");
        assert_eq!(rules[2].v1(), "c 136:* rw");
    }

    /// The kernel verifies and runs the program: in a cgroup2 group of its own, a child
    /// opens /dev/null but not /dev/mem. Root only (skipped otherwise).
    #[test]
    fn the_kernel_enforces_the_program() {
        let Some(base) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.controllers").exists())
        else {
            return;
        };
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let dir = base.join(format!("rootpack-devices-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        attach_v2(&dir, &load_v2().unwrap()).unwrap();
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: the child only makes system calls on prepared data, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                let moved = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                let mem = libc::open(c"/dev/mem".as_ptr(), libc::O_RDONLY);
                let code = if !moved {
                    3
                } else if null < 0 {
                    1
                } else if mem >= 0 {
                    2
                } else {
                    0
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: null refused, 2: mem opened, 3: not moved"
        );
    }

    #[test]
    fn dockers_devices_open_others_are_only_made() {
        const READ: i32 = 2;
        const WRITE: i32 = 4;
        const BLOCK: i32 = 1;
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 7),
        ] {
            assert_eq!(
                decide(READ | WRITE, DEV_CHAR, major, minor),
                1,
                "{major}:{minor}"
            );
        }
        for (kind, major, minor) in [
            (DEV_CHAR, 1, 1),
            (DEV_CHAR, 10, 200),
            (BLOCK, 8, 0),
            (DEV_CHAR, 4, 0),
        ] {
            assert_eq!(decide(READ, kind, major, minor), 0, "{major}:{minor}");
            assert_eq!(
                decide(ACC_MKNOD, kind, major, minor),
                1,
                "mknod {major}:{minor}"
            );
        }
        assert_eq!(decide(ACC_MKNOD | READ, BLOCK, 8, 0), 0);
        assert_eq!(v1_rules()[2], "c 1:3 rwm");
    }
}
