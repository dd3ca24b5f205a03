//! Classic BPF for seccomp, generated from resolved rules.
//!
//! The program checks the architecture (x86_64, and i386 with its own numbers and rules,
//! as Docker allows it; x32 calls and any other architecture are killed), answers ENOSYS for
//! numbers above the highest the profile knows (as runc does, so that a newer libc falls
//! back to an older call instead of seeing EPERM), then finds the call's number by binary
//! search over ranges of numbers that share one outcome: a handful of jumps per call,
//! whatever the profile's size. A call with argument rules ends in a block that tries its
//! rules in order. BPF only jumps forward, conditional jumps by at most 255: every branch
//! of the search is a short conditional jump over one long `ja`.

use super::profile::{Action, Cond, Op};

/// What one system call number leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Always(Action),
    /// Rules tried in order (each an AND of its conditions), then the fallback.
    Rules(Vec<(Vec<Cond>, Action)>, Action),
}

pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_BIT: u32 = 0x4000_0000;

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_low(i: u8) -> u32 {
    16 + 8 * i as u32
}

pub fn ret_value(a: Action) -> u32 {
    match a {
        Action::KillThread => 0,
        Action::KillProcess => 0x8000_0000,
        Action::Trap => 0x0003_0000,
        Action::Errno(e) => 0x0005_0000 | e as u32,
        Action::Log => 0x7ffc_0000,
        Action::Allow => 0x7fff_0000,
    }
}

/// A kernel `sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// The kernel refuses longer programs.
const MAX_INSNS: usize = 4096;

#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

#[derive(Clone, Copy)]
enum Item {
    Ld(u32),
    And(u32),
    Jump(u16, u32, To, To),
    Ja(usize),
    Ret(u32),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn put(&mut self, i: Item) {
        self.items.push(i);
    }
    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.put(Item::Jump(code, k, jt, jf));
    }

    /// Resolves labels into offsets.
    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pos = 0;
        for item in &self.items {
            match item {
                Item::Label(l) => at[*l] = pos,
                _ => pos += 1,
            }
        }
        if pos > MAX_INSNS {
            return Err(format!(
                "the filter needs {pos} instructions; the kernel takes at most {MAX_INSNS}"
            ));
        }
        let mut out = Vec::with_capacity(pos);
        for item in &self.items {
            let here = out.len();
            let offset = |to: To| -> Result<u8, String> {
                match to {
                    To::Next => Ok(0),
                    To::Label(l) => u8::try_from(at[l] - here - 1)
                        .map_err(|_| "a rule has too many conditions to jump over".to_string()),
                }
            };
            let insn = |code, jt, jf, k| Insn { code, jt, jf, k };
            out.push(match *item {
                Item::Label(_) => continue,
                Item::Ld(off) => insn(LD_W_ABS, 0, 0, off),
                Item::And(k) => insn(ALU_AND_K, 0, 0, k),
                Item::Jump(code, k, jt, jf) => insn(code, offset(jt)?, offset(jf)?, k),
                Item::Ja(l) => insn(JA, 0, 0, (at[l] - here - 1) as u32),
                Item::Ret(k) => insn(RET_K, 0, 0, k),
            });
        }
        Ok(out)
    }
}

/// One architecture's part of a filter: its calls' outcomes by number, all at most
/// `max_nr`.
pub struct ArchPart<'a> {
    pub arch: u32,
    pub outcomes: &'a std::collections::BTreeMap<u32, Outcome>,
    pub max_nr: u32,
}

/// Compiles a filter for x86_64 alone (the tests' form of [`compile_arches`]).
#[cfg(test)]
pub fn compile(
    outcomes: &std::collections::BTreeMap<u32, Outcome>,
    default: Action,
    max_nr: u32,
) -> Result<Vec<Insn>, String> {
    let native = ArchPart {
        arch: AUDIT_ARCH_X86_64,
        outcomes,
        max_nr,
    };
    compile_arches(&[native], default)
}

/// Compiles `parts` into one filter: a call of any other architecture (and an x32 call,
/// which reports x86_64 with bit 30 of its number set) kills the process. Numbers not
/// listed get `default`; numbers above a part's `max_nr` get ENOSYS unless `default`
/// allows.
pub fn compile_arches(parts: &[ArchPart<'_>], default: Action) -> Result<Vec<Insn>, String> {
    let mut a = Asm::default();
    let kill = ret_value(Action::KillProcess);
    let starts: Vec<usize> = parts.iter().map(|_| a.label()).collect();
    a.put(Item::Ld(OFF_ARCH));
    for (part, start) in parts.iter().zip(&starts) {
        // A short test over one long jump: the part's code may be far.
        let other = a.label();
        a.jump(JEQ_K, part.arch, To::Next, To::Label(other));
        a.put(Item::Ja(*start));
        a.put(Item::Label(other));
    }
    a.put(Item::Ret(kill));
    for (part, start) in parts.iter().zip(starts) {
        a.put(Item::Label(start));
        a.put(Item::Ld(OFF_NR));
        if part.arch == AUDIT_ARCH_X86_64 {
            let not_x32 = a.label();
            a.jump(JGE_K, X32_BIT, To::Next, To::Label(not_x32));
            a.put(Item::Ret(kill));
            a.put(Item::Label(not_x32));
        }
        if !matches!(default, Action::Allow | Action::Log) {
            let known = a.label();
            a.jump(JGT_K, part.max_nr, To::Next, To::Label(known));
            a.put(Item::Ret(ret_value(Action::Errno(libc::ENOSYS as u16))));
            a.put(Item::Label(known));
        }
        let ranges = ranges(part.outcomes, default, part.max_nr);
        search(&mut a, &ranges);
    }
    a.finish()
}

/// Maximal runs of numbers with the same outcome, as (first number, outcome), covering
/// 0..=max_nr.
fn ranges(
    outcomes: &std::collections::BTreeMap<u32, Outcome>,
    default: Action,
    max_nr: u32,
) -> Vec<(u32, Outcome)> {
    let fallback = Outcome::Always(default);
    let mut out: Vec<(u32, Outcome)> = Vec::new();
    for nr in 0..=max_nr {
        let o = outcomes.get(&nr).unwrap_or(&fallback);
        // Rule blocks stay apart: one per call keeps each block's conditions its own.
        let joins = matches!(o, Outcome::Always(_)) && out.last().is_some_and(|(_, l)| l == o);
        if !joins {
            out.push((nr, o.clone()));
        }
    }
    out
}

/// The binary search; the accumulator holds the call number on entry.
fn search(a: &mut Asm, ranges: &[(u32, Outcome)]) {
    if let [(_, outcome)] = ranges {
        return leaf(a, outcome);
    }
    let mid = ranges.len() / 2;
    let upper = a.label();
    let lower = a.label();
    // nr >= first of the upper half: the `ja`; else skip it.
    a.jump(JGE_K, ranges[mid].0, To::Next, To::Label(lower));
    a.put(Item::Ja(upper));
    a.put(Item::Label(lower));
    search(a, &ranges[..mid]);
    a.put(Item::Label(upper));
    search(a, &ranges[mid..]);
}

fn leaf(a: &mut Asm, outcome: &Outcome) {
    match outcome {
        Outcome::Always(action) => a.put(Item::Ret(ret_value(*action))),
        Outcome::Rules(rules, fallback) => {
            for (conds, action) in rules {
                let next = a.label();
                for c in conds {
                    condition(a, c, next);
                }
                a.put(Item::Ret(ret_value(*action)));
                a.put(Item::Label(next));
            }
            a.put(Item::Ret(ret_value(*fallback)));
        }
    }
}

/// Falls through when `c` holds, jumps to `fail` when not. Clobbers the accumulator.
fn condition(a: &mut Asm, c: &Cond, fail: usize) {
    let (lo_off, hi_off) = (off_arg_low(c.arg), off_arg_low(c.arg) + 4);
    let (vh, vl) = ((c.value >> 32) as u32, c.value as u32);
    let fail = To::Label(fail);
    let next = To::Next;
    // Compares one 32-bit word already in the accumulator.
    let word = |a: &mut Asm, op: Op, v: u32| match op {
        Op::Eq | Op::MaskedEq(_) => a.jump(JEQ_K, v, next, fail),
        Op::Ne => a.jump(JEQ_K, v, fail, next),
        Op::Gt => a.jump(JGT_K, v, next, fail),
        Op::Ge => a.jump(JGE_K, v, next, fail),
        Op::Lt => a.jump(JGE_K, v, fail, next),
        Op::Le => a.jump(JGT_K, v, fail, next),
    };
    if c.low32 {
        a.put(Item::Ld(lo_off));
        if let Op::MaskedEq(m) = c.op {
            a.put(Item::And(m as u32));
        }
        return word(a, c.op, vl);
    }
    match c.op {
        Op::Eq | Op::MaskedEq(_) => {
            let mask = match c.op {
                Op::MaskedEq(m) => Some(m),
                _ => None,
            };
            a.put(Item::Ld(hi_off));
            if let Some(m) = mask {
                a.put(Item::And((m >> 32) as u32));
            }
            a.jump(JEQ_K, vh, next, fail);
            a.put(Item::Ld(lo_off));
            if let Some(m) = mask {
                a.put(Item::And(m as u32));
            }
            a.jump(JEQ_K, vl, next, fail);
        }
        Op::Ne => {
            let pass = a.label();
            a.put(Item::Ld(hi_off));
            a.jump(JEQ_K, vh, next, To::Label(pass));
            a.put(Item::Ld(lo_off));
            a.jump(JEQ_K, vl, fail, next);
            a.put(Item::Label(pass));
        }
        Op::Gt | Op::Ge => {
            // hi > vh: holds; hi < vh: fails; equal: the low word decides.
            let pass = a.label();
            a.put(Item::Ld(hi_off));
            a.jump(JGT_K, vh, To::Label(pass), next);
            a.jump(JEQ_K, vh, next, fail);
            a.put(Item::Ld(lo_off));
            word(a, c.op, vl);
            a.put(Item::Label(pass));
        }
        Op::Lt | Op::Le => {
            let pass = a.label();
            a.put(Item::Ld(hi_off));
            a.jump(JGT_K, vh, fail, next);
            a.jump(JEQ_K, vh, next, To::Label(pass));
            a.put(Item::Ld(lo_off));
            word(a, c.op, vl);
            a.put(Item::Label(pass));
        }
    }
}

/// Runs a filter on one call, as the kernel would: a reference interpreter for tests.
#[cfg(test)]
pub fn interpret(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            o if (16..64).contains(&o) => {
                let i = ((o - 16) / 8) as usize;
                if (o - 16) % 8 == 0 {
                    args[i] as u32
                } else {
                    (args[i] >> 32) as u32
                }
            }
            o => panic!("load at {o}"),
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => acc = word(i.k),
            ALU_AND_K => acc &= i.k,
            JA => pc += i.k as usize,
            RET_K => return i.k,
            code => {
                let taken = match code {
                    JEQ_K => acc == i.k,
                    JGT_K => acc > i.k,
                    JGE_K => acc >= i.k,
                    _ => panic!("opcode {code:#x}"),
                };
                pc += if taken { i.jt } else { i.jf } as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const ALLOW: u32 = 0x7fff_0000;
    const EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
    const ENOSYS: u32 = 0x0005_0000 | libc::ENOSYS as u32;

    fn cond(arg: u8, op: Op, value: u64) -> Cond {
        Cond {
            arg,
            op,
            value,
            low32: false,
        }
    }

    #[test]
    fn search_gives_every_number_its_outcome() {
        let mut o = BTreeMap::new();
        // Scattered allows, runs and gaps.
        for nr in (0..300).filter(|n| n % 7 == 0 || (100..140).contains(n)) {
            o.insert(nr, Outcome::Always(Action::Allow));
        }
        let deny = Action::Errno(libc::EPERM as u16);
        let prog = compile(&o, deny, 299).unwrap();
        for nr in 0..400 {
            let want = if nr >= 300 {
                ENOSYS
            } else if o.contains_key(&nr) {
                ALLOW
            } else {
                EPERM
            };
            assert_eq!(
                interpret(&prog, AUDIT_ARCH_X86_64, nr, [0; 6]),
                want,
                "{nr}"
            );
        }
        let kill = ret_value(Action::KillProcess);
        assert_eq!(interpret(&prog, 0x4000_0003, 0, [0; 6]), kill, "i386");
        assert_eq!(interpret(&prog, AUDIT_ARCH_X86_64, X32_BIT, [0; 6]), kill);
    }

    #[test]
    fn conditions_are_anded_and_rules_ored_over_64_bits() {
        let values = [
            0u64,
            1,
            5,
            6,
            7,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0005,
            0x5_0000_0000,
            u64::MAX,
        ];
        let ops = [
            (Op::Eq, 5u64),
            (Op::Ne, 5),
            (Op::Gt, 5),
            (Op::Ge, 5),
            (Op::Lt, 5),
            (Op::Le, 5),
            (Op::Gt, 0x1_0000_0000),
            (Op::Lt, 0x1_0000_0005),
            (Op::MaskedEq(0xff00_0000_00ff), 0x0500_0000_0005),
        ];
        let holds = |op: Op, v: u64, x: u64| match op {
            Op::Eq => x == v,
            Op::Ne => x != v,
            Op::Gt => x > v,
            Op::Ge => x >= v,
            Op::Lt => x < v,
            Op::Le => x <= v,
            Op::MaskedEq(m) => x & m == v,
        };
        for (op, v) in ops {
            // Two conditions ANDed: arg0 and arg2; a second rule: arg1 == 7.
            let rules = vec![
                (vec![cond(0, op, v), cond(2, Op::Ne, 6)], Action::Allow),
                (vec![cond(1, Op::Eq, 7)], Action::Log),
            ];
            let deny = Action::Errno(libc::EPERM as u16);
            let o = BTreeMap::from([(3, Outcome::Rules(rules, deny))]);
            let prog = compile(&o, deny, 10).unwrap();
            for &x in &values {
                for &z in &[6u64, 0x1_0000_0006] {
                    for &y in &[7u64, 8] {
                        let got = interpret(&prog, AUDIT_ARCH_X86_64, 3, [x, y, z, 0, 0, 0]);
                        let want = if holds(op, v, x) && z != 6 {
                            ALLOW
                        } else if y == 7 {
                            ret_value(Action::Log)
                        } else {
                            EPERM
                        };
                        assert_eq!(got, want, "{op:?} {v:#x} on {x:#x}, z {z:#x}, y {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn low32_conditions_ignore_the_upper_half() {
        let rule = Cond {
            arg: 0,
            op: Op::Ne,
            value: 40,
            low32: true,
        };
        let deny = Action::Errno(libc::EPERM as u16);
        let o = BTreeMap::from([(41, Outcome::Rules(vec![(vec![rule], Action::Allow)], deny))]);
        let prog = compile(&o, deny, 100).unwrap();
        let run = |x| interpret(&prog, AUDIT_ARCH_X86_64, 41, [x, 0, 0, 0, 0, 0]);
        assert_eq!(run(40), EPERM);
        assert_eq!(run(0xdead_0000_0028), EPERM, "junk above an int");
        assert_eq!(run(2), ALLOW);
    }
}
