//! Resource limits of the container's processes: `--ulimit NAME=SOFT[:HARD]` as Docker
//! takes it, over a stated default for open files.
//!
//! Without a default the container would inherit whatever the caller's shell had (20000
//! here, 1024 or a million elsewhere): the same image would behave differently per host.
//! The default is systemd's and today's Docker's (containerd 2): 1024 soft, so that old
//! `select()` programs and loops over every fd stay fast, and 524288 hard, which a program
//! that needs many files raises its own soft limit to. Where rootpack cannot raise the hard
//! limit that far (no CAP_SYS_RESOURCE, or in a user namespace), it keeps the caller's.

use std::io;

/// One limit: which, and its soft and hard values (`RLIM_INFINITY` for unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    pub name: &'static str,
    resource: libc::__rlimit_resource_t,
    pub soft: u64,
    pub hard: u64,
}

/// Docker's names (`docker run --ulimit`), and the resources they set.
const RESOURCES: &[(&str, libc::__rlimit_resource_t)] = &[
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// The default open-files limit (see the module's notes).
pub const DEFAULT_NOFILE: (u64, u64) = (1024, 524_288);

fn value(s: &str) -> Option<u64> {
    match s {
        "unlimited" | "-1" => Some(libc::RLIM_INFINITY),
        _ => s.parse().ok(),
    }
}

impl Ulimit {
    /// `NAME=SOFT[:HARD]`, as `docker run --ulimit`: one value sets both; `unlimited` or
    /// -1 is no limit.
    pub fn parse(s: &str) -> Result<Ulimit, String> {
        let names = || {
            RESOURCES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| "expected NAME=SOFT[:HARD], like nofile=1024:4096".to_string())?;
        let &(name, resource) = RESOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("unknown limit {name:?}: one of {}", names()))?;
        let (soft, hard) = values.split_once(':').unwrap_or((values, values));
        let (Some(soft), Some(hard)) = (value(soft), value(hard)) else {
            return Err(format!(
                "{name}: expected numbers or `unlimited`, like {name}=1024:4096"
            ));
        };
        if soft > hard {
            return Err(format!(
                "{name}: the soft limit {soft} is above the hard limit {hard}"
            ));
        }
        Ok(Ulimit {
            name,
            resource,
            soft,
            hard,
        })
    }

    pub(crate) fn set(&self) -> io::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: self.soft,
            rlim_max: self.hard,
        };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(self.resource, &limit) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn current(resource: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local.
    unsafe { libc::getrlimit(resource, &mut l) };
    l
}

/// Sets the default open-files limit, then `asked` in order, on the calling process (the
/// container's processes inherit them). An asked limit that cannot be set is an error
/// naming it.
pub fn apply(asked: &[Ulimit]) -> io::Result<()> {
    if !asked.iter().any(|u| u.resource == libc::RLIMIT_NOFILE) {
        let (soft, hard) = DEFAULT_NOFILE;
        let default = Ulimit::parse(&format!("nofile={soft}:{hard}")).map_err(io::Error::other)?;
        if default.set().is_err() {
            let hard = current(libc::RLIMIT_NOFILE).rlim_max.min(hard);
            Ulimit {
                soft: soft.min(hard),
                hard,
                ..default
            }
            .set()?;
        }
    }
    for u in asked {
        u.set().map_err(|e| {
            let now = current(u.resource).rlim_max;
            io::Error::new(
                e.kind(),
                format!(
                    "--ulimit {}={}:{}: the hard limit here is {now} ({e})",
                    u.name, u.soft, u.hard
                ),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_forms() {
        let u = Ulimit::parse("nofile=1024:4096").unwrap();
        assert_eq!((u.name, u.soft, u.hard), ("nofile", 1024, 4096));
        let u = Ulimit::parse("nproc=500").unwrap();
        assert_eq!((u.soft, u.hard), (500, 500));
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!(u.hard, libc::RLIM_INFINITY);
        let u = Ulimit::parse("memlock=64:unlimited").unwrap();
        assert_eq!((u.soft, u.hard), (64, libc::RLIM_INFINITY));
        for bad in ["nofile", "nofile=9:8", "bogus=1", "nofile=a", "nofile=1:"] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }
}
