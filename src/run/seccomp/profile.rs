//! A seccomp profile as rules over system call names, and its resolution against one
//! container: its capabilities, the architecture and the running kernel.
//!
//! The same types hold the built-in default (see [`super::default`]) and a Docker-format
//! JSON profile given with `--security-opt seccomp=FILE.json` (see [`super::docker`]).

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Fail the call with this errno.
    Errno(u16),
    KillThread,
    KillProcess,
    /// SIGSYS to the thread.
    Trap,
    /// Allow, and log it.
    Log,
}

/// How an argument is compared with a rule's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// One condition on one argument. The kernel reads `int` arguments from the low 32 bits of
/// the register only, so those are compared on the low 32 bits (`low32`): otherwise a
/// value with junk in the upper half would pass `!= AF_VSOCK` and still be AF_VSOCK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub op: Op,
    pub value: u64,
    pub low32: bool,
}

/// Capabilities, architectures and a kernel version a rule depends on. As `includes`,
/// the rule applies with every listed capability, on one of the listed architectures (none
/// listed: any), from this kernel on; as `excludes`, it does not apply with any listed
/// capability, on a listed architecture, or from this kernel on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Capability numbers.
    pub caps: Vec<u32>,
    pub arches: Vec<String>,
    pub min_kernel: Option<(u32, u32)>,
}

/// Calls `names` get `action` when every condition in `args` holds (they are ANDed; list
/// the same names in several rules to OR them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    pub args: Vec<Cond>,
    pub includes: Conditions,
    pub excludes: Conditions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// For calls no applicable rule matches.
    pub default: Action,
    pub rules: Vec<Rule>,
}

/// Builders that keep the default profile's table readable.
impl Rule {
    pub fn new(action: Action, names: &[&str]) -> Rule {
        Rule {
            names: names.iter().map(|n| n.to_string()).collect(),
            action,
            args: Vec::new(),
            includes: Conditions::default(),
            excludes: Conditions::default(),
        }
    }

    pub fn allow(names: &[&str]) -> Rule {
        Rule::new(Action::Allow, names)
    }

    /// Adds a condition on argument `arg` (64-bit comparison).
    pub fn with_arg(mut self, arg: u8, op: Op, value: u64) -> Rule {
        self.args.push(Cond {
            arg,
            op,
            value,
            low32: false,
        });
        self
    }

    /// Adds a condition on an `int` argument: only its low 32 bits are compared.
    pub fn with_int_arg(mut self, arg: u8, op: Op, value: u32) -> Rule {
        self.args.push(Cond {
            arg,
            op,
            value: value as u64,
            low32: true,
        });
        self
    }

    /// Applies only with every capability in `caps` (names as in `--cap-add`).
    pub fn with_caps(mut self, caps: &[&str]) -> Rule {
        self.includes.caps = cap_numbers(caps);
        self
    }

    /// Applies only without any capability in `caps`.
    pub fn without_caps(mut self, caps: &[&str]) -> Rule {
        self.excludes.caps = cap_numbers(caps);
        self
    }

    /// Applies only on these architectures (Docker's names: amd64, x86, arm64, ...).
    pub fn on_arches(mut self, arches: &[&str]) -> Rule {
        self.includes.arches = arches.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Applies only from this kernel version on.
    pub fn from_kernel(mut self, major: u32, minor: u32) -> Rule {
        self.includes.min_kernel = Some((major, minor));
        self
    }

    /// Applies only before this kernel version.
    pub fn before_kernel(mut self, major: u32, minor: u32) -> Rule {
        self.excludes.min_kernel = Some((major, minor));
        self
    }
}

fn cap_numbers(caps: &[&str]) -> Vec<u32> {
    caps.iter()
        .map(|c| {
            crate::run::security::cap_number(c)
                .unwrap_or_else(|| panic!("unknown capability {c:?} in a built-in rule"))
        })
        .collect()
}
