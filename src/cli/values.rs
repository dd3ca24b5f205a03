//! Option values of the command line, checked as clap parses them: a bad one is a usage
//! error (exit 2) that says what was expected.

use std::path::PathBuf;

/// `-v HOST:CONTAINER[:ro]`: (host path, container path, read-only).
pub type VolumeArg = (PathBuf, String, bool);

/// One `--security-opt`.
#[derive(Debug, Clone)]
pub enum SecurityOpt {
    SeccompUnconfined,
    SeccompProfile(PathBuf),
    NoNewPrivileges(bool),
    /// `apparmor=unconfined`, `label=disable`: what rootpack does anyway, since it gives
    /// `run`'s containers no AppArmor profile and no SELinux label.
    NoLsm,
}

/// `KEY=VALUE`, or a bare `KEY` taking rootpack's own value (`None` when it has none:
/// the variable is then left out, as Docker leaves it out).
pub fn parse_env(s: &str) -> Result<(String, Option<String>), String> {
    let bad = || "expected KEY=VALUE or KEY, like -e LANG=C.UTF-8".to_string();
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Some(v.to_string()))),
        Some(_) => Err(bad()),
        None if s.is_empty() || s.contains(char::is_whitespace) => Err(bad()),
        None => Ok((s.to_string(), std::env::var(s).ok())),
    }
}

/// The `-e` variables that have a value.
pub fn env_values(env: &[(String, Option<String>)]) -> impl Iterator<Item = (String, String)> + '_ {
    env.iter()
        .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
}

pub(super) fn parse_volume(s: &str) -> Result<VolumeArg, String> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts[..] {
        [host, ctr] if !host.is_empty() && !ctr.is_empty() => {
            Ok((host.into(), ctr.to_string(), false))
        }
        [host, ctr, mode @ ("ro" | "rw")] if !host.is_empty() && !ctr.is_empty() => {
            Ok((host.into(), ctr.to_string(), mode == "ro"))
        }
        _ => Err("expected HOST:CONTAINER[:ro], like -v /srv/data:/data:ro".into()),
    }
}

pub(super) fn parse_memory(s: &str) -> Result<u64, String> {
    match rootpack::recipe::parse_size(s) {
        Some(b) if b >= 1 << 20 => Ok(b),
        _ => Err("expected a size of at least 1M, like 256M or 1G".into()),
    }
}

pub(super) fn parse_cpus(s: &str) -> Result<f64, String> {
    // SAFETY: sysconf reads a constant of the system.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as f64;
    match s.parse::<f64>() {
        // Docker's check and wording.
        Ok(c) if c > online => Err(format!(
            "range of CPUs is from 0.01 to {online:.2}, as there are only {online} CPUs available"
        )),
        Ok(c) if c > 0.0 && c.is_finite() => Ok(c),
        _ => Err("expected a positive number of CPUs, like 0.5 or 2".into()),
    }
}

/// One `--mount`: a bind (as a volume) or a tmpfs.
#[derive(Debug, Clone)]
pub enum MountArg {
    Bind(VolumeArg),
    Tmpfs(String),
}

pub(super) fn parse_mount(s: &str) -> Result<MountArg, String> {
    let (mut kind, mut source, mut target, mut read_only) = ("volume", None, None, false);
    for field in s.split(',') {
        match field.split_once('=') {
            Some(("type", v)) => kind = v,
            Some(("source" | "src", v)) => source = Some(v),
            Some(("target" | "dst" | "destination", v)) => target = Some(v),
            Some(("readonly" | "ro", v)) => read_only = v != "false" && v != "0",
            None if field == "readonly" || field == "ro" => read_only = true,
            _ => {
                return Err(format!(
                    "{field:?}: rootpack takes type, source, target and readonly"
                ));
            }
        }
    }
    let target = target.ok_or("no target=: where in the container to mount")?;
    match (kind, source) {
        ("bind", Some(src)) => Ok(MountArg::Bind((src.into(), target.to_string(), read_only))),
        ("bind", None) => Err("a bind needs source=HOST_PATH".into()),
        ("tmpfs", _) => Ok(MountArg::Tmpfs(target.to_string())),
        (other, _) => Err(format!(
            "type={other}: rootpack has no named volumes; use type=bind with a host folder, or type=tmpfs"
        )),
    }
}

pub(super) fn parse_capability(s: &str) -> Result<String, String> {
    if s.eq_ignore_ascii_case("ALL") || rootpack::run::security::cap_number(s).is_some() {
        Ok(s.to_string())
    } else {
        Err("expected a capability name, like NET_ADMIN or CAP_SYS_TIME, or ALL".into())
    }
}

pub(super) fn parse_user_arg(s: &str) -> Result<String, String> {
    rootpack::ids::UserSpec::parse(s)
        .map(|_| s.to_string())
        .ok_or_else(|| "expected UID[:GID] or NAME[:GROUP], like 1000:1000 or nobody".into())
}

/// Docker's spellings: `KEY=VALUE`, or the older `KEY:VALUE`; a bare no-new-privileges.
pub(super) fn parse_security_opt(s: &str) -> Result<SecurityOpt, String> {
    match s.split_once(['=', ':']) {
        Some(("seccomp", "unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
        Some(("seccomp", file)) if !file.is_empty() => Ok(SecurityOpt::SeccompProfile(file.into())),
        Some(("no-new-privileges", "true")) => Ok(SecurityOpt::NoNewPrivileges(true)),
        Some(("no-new-privileges", "false")) => Ok(SecurityOpt::NoNewPrivileges(false)),
        None if s == "no-new-privileges" => Ok(SecurityOpt::NoNewPrivileges(true)),
        Some(("apparmor", "unconfined")) | Some(("label", "disable")) => Ok(SecurityOpt::NoLsm),
        Some(("apparmor" | "label", _)) => Err(format!(
            "{s}: rootpack gives run's containers no AppArmor profile and no SELinux label \
             (apparmor=unconfined and label=disable are what it does)"
        )),
        _ => Err(format!(
            "{s}: rootpack takes no-new-privileges[=true|false], seccomp=unconfined, \
             seccomp=FILE.json, apparmor=unconfined and label=disable"
        )),
    }
}

/// `--sysctl KEY=VALUE`: a kernel parameter of the container's own namespaces, one of
/// those Docker's `run` takes.
pub(super) fn parse_sysctl(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected KEY=VALUE, like kernel.shmmax=1073741824"))?;
    rootpack::sysctl::namespace_for_run(key)?;
    Ok((key.to_string(), value.to_string()))
}

pub(super) fn parse_network(text: &str) -> Result<rootpack::net::Network, String> {
    text.parse()
}

pub(super) fn parse_port(text: &str) -> Result<rootpack::net::PortMapping, String> {
    text.parse()
}

pub(super) fn parse_output_format(text: &str) -> Result<rootpack::format::OutputFormat, String> {
    use rootpack::format::OutputFormat;
    OutputFormat::ALL
        .into_iter()
        .find(|f| f.name() == text)
        .ok_or_else(|| {
            let names: Vec<String> = OutputFormat::ALL.iter().map(OutputFormat::name).collect();
            format!("one of {}", names.join(", "))
        })
}

/// `--frame-size`: bytes, from a number of MiB or a size with its unit.
pub(super) fn parse_frame_size(s: &str) -> Result<u64, String> {
    let bytes = match s.parse::<u64>() {
        Ok(mib) => mib.checked_mul(1 << 20),
        Err(_) => rootpack::recipe::parse_size(s),
    };
    bytes.ok_or_else(|| "expected a size, like 8 (MiB), 512K or 1M".into())
}

/// A cache size: `5G`, `500M`, bytes.
pub(super) fn parse_size_arg(s: &str) -> Result<u64, String> {
    rootpack::recipe::parse_size(s).ok_or_else(|| "expected a size like 5G, 500M or bytes".into())
}

/// An age: `30d`, `12h`, `90m`, `45s`, seconds.
pub(super) fn parse_age(s: &str) -> Result<u64, String> {
    let bad = || "expected an age like 30d, 12h, 90m or seconds".to_string();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().map_err(|_| bad())?;
    let unit = match &s[digits..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

/// A duration: `90s`, `10m`, `1h`, seconds.
pub(super) fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    rootpack::recipe::parse_duration(s)
        .ok_or_else(|| "expected a duration like 90s, 10m or 1h".into())
}
