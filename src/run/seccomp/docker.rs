//! Docker-format seccomp profiles (`--security-opt seccomp=FILE.json`), as moby and
//! containers/common write them, read into a [`Profile`].

use serde::Deserialize;

use super::profile::{Action, Cond, Conditions, Op, Profile, Rule};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    syscalls: Vec<Syscall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    #[serde(default)]
    names: Vec<String>,
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    min_kernel: Option<String>,
}

/// Parses a profile; the error says what and where (serde's line and column).
pub fn parse(text: &str) -> Result<Profile, String> {
    let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let default = action(&file.default_action, file.default_errno_ret)
        .map_err(|e| format!("defaultAction: {e}"))?;
    let mut rules = Vec::new();
    for (i, s) in file.syscalls.into_iter().enumerate() {
        rules.extend(rule(s).map_err(|e| format!("syscalls[{i}]: {e}"))?);
    }
    Ok(Profile { default, rules })
}

/// Conditions all on one argument are alternatives, as runc reads them (libseccomp allows
/// one comparison per argument in a rule): one rule each. Otherwise they all must hold.
fn split_alternatives(rule: Rule) -> Vec<Rule> {
    let same_arg = rule.args.len() > 1 && rule.args.iter().all(|c| c.arg == rule.args[0].arg);
    if !same_arg {
        return vec![rule];
    }
    rule.args
        .iter()
        .map(|c| Rule {
            args: vec![*c],
            ..rule.clone()
        })
        .collect()
}

fn rule(s: Syscall) -> Result<Vec<Rule>, String> {
    let mut names = s.names;
    names.extend(s.name);
    if names.is_empty() {
        return Err("no system call names".into());
    }
    let args = s
        .args
        .iter()
        .map(|a| {
            if a.index > 5 {
                return Err(format!("argument index {} (0 to 5)", a.index));
            }
            // libseccomp's masked-equal takes the mask first, the value second.
            let (op, value) = match a.op.as_str() {
                "SCMP_CMP_EQ" => (Op::Eq, a.value),
                "SCMP_CMP_NE" => (Op::Ne, a.value),
                "SCMP_CMP_LT" => (Op::Lt, a.value),
                "SCMP_CMP_LE" => (Op::Le, a.value),
                "SCMP_CMP_GT" => (Op::Gt, a.value),
                "SCMP_CMP_GE" => (Op::Ge, a.value),
                "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(a.value), a.value_two),
                other => return Err(format!("unknown comparison {other:?}")),
            };
            Ok(Cond {
                arg: a.index,
                op,
                value,
                low32: false,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(split_alternatives(Rule {
        names,
        action: action(&s.action, s.errno_ret)?,
        args,
        includes: Conditions {
            caps: caps(&s.includes.caps)?,
            arches: s.includes.arches,
            min_kernel: kernel(s.includes.min_kernel.as_deref())?,
        },
        excludes: Conditions {
            caps: caps(&s.excludes.caps)?,
            arches: s.excludes.arches,
            min_kernel: kernel(s.excludes.min_kernel.as_deref())?,
        },
    }))
}

fn action(name: &str, errno: Option<u32>) -> Result<Action, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => {
            let e = errno.unwrap_or(libc::EPERM as u32);
            Action::Errno(u16::try_from(e).map_err(|_| format!("errnoRet {e} is too large"))?)
        }
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        other => return Err(format!("action {other:?} is not supported")),
    })
}

fn caps(names: &[String]) -> Result<Vec<u32>, String> {
    names
        .iter()
        .map(|n| {
            crate::run::security::cap_number(n).ok_or_else(|| format!("unknown capability {n:?}"))
        })
        .collect()
}

fn kernel(v: Option<&str>) -> Result<Option<(u32, u32)>, String> {
    let Some(v) = v else { return Ok(None) };
    super::parse_kernel_version(v)
        .map(Some)
        .ok_or_else(|| format!("minKernel {v:?}: expected MAJOR.MINOR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_profiles() {
        let p = parse(
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
              "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
              "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}}
              ]}"#,
        )
        .unwrap();
        assert_eq!(p.default, Action::Errno(1));
        assert_eq!(p.rules.len(), 4);
        assert_eq!(p.rules[1].args[0].op, Op::MaskedEq(2114060288));
        assert_eq!(p.rules[1].args[0].value, 0);
        assert_eq!(p.rules[1].excludes.caps, vec![21]);
        assert_eq!(p.rules[2].action, Action::Errno(38));
        assert_eq!(p.rules[3].includes.min_kernel, Some((4, 8)));
        let alternatives = parse(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"],
                "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        assert_eq!(
            alternatives.rules.len(),
            2,
            "one argument's values are ORed"
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let one = |s: &str| {
            parse(&format!(
                r#"{{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{s}]}}"#
            ))
            .unwrap_err()
        };
        assert!(one(r#"{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}"#).contains("NOTIFY"));
        assert!(
            one(r#"{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ODD"}]}"#)
                .contains("ODD")
        );
        assert!(one(r#"{"names": [], "action": "SCMP_ACT_ALLOW"}"#).contains("syscalls[0]"));
        assert!(parse("{").unwrap_err().contains("line 1"));
    }
}
