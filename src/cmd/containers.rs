//! `ps`, `exec`, `logs`, `stop`, `kill`, `rm`: the detached containers `run -d` starts.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::Usage;
use crate::cli::{ExecArgs, KillArgs, LogsArgs, PsArgs, RmArgs, StopArgs};
use rootpack::containers::{self, Container, Status};
use rootpack::run::RunOptions;

fn find(key: &str) -> Result<Container> {
    Ok(containers::find(&containers::state_root(), key)?)
}

/// The network a run asks for: `-p` alone means private; a detached container's is
/// its network namespace, by path.
pub fn network_for(
    asked: Option<rootpack::net::Network>,
    ports: &[rootpack::net::PortMapping],
) -> Result<rootpack::net::Network> {
    use rootpack::net::Network;
    let network = match asked {
        None if !ports.is_empty() => Network::Private,
        None => Network::None,
        Some(n) => n,
    };
    let Network::Container(key) = &network else {
        return Ok(network);
    };
    let container = find(key).map_err(|e| Usage(format!("--network container:{key}: {e}")))?;
    match container.status() {
        Status::Up { pid } => Ok(Network::Join(format!("/proc/{pid}/ns/net").into())),
        status => Err(Usage(format!(
            "--network container:{key}: the container is not running ({status})"
        ))
        .into()),
    }
}

/// `run -d`: the id once it runs; 125 when it could not be started.
pub fn run_detached(opts: RunOptions, name: Option<String>, auto_remove: bool) -> Result<u8> {
    if opts.tty {
        let m =
            "-t with -d: a detached container has no terminal; use `rootpack exec -it` to enter it";
        return Err(Usage(m.into()).into());
    }
    let image = opts.image.clone();
    match containers::monitor::start(&containers::state_root(), opts, name, auto_remove) {
        Ok(id) => {
            println!("{id}");
            Ok(0)
        }
        Err(containers::Error::Usage(m)) => Err(Usage(m).into()),
        Err(e) => {
            eprintln!("rootpack: run {}: {e}", image.display());
            Ok(125)
        }
    }
}

pub fn ps(args: &PsArgs) -> Result<()> {
    let all = containers::list(&containers::state_root());
    let shown: Vec<(Container, Status)> = all
        .into_iter()
        .map(|c| {
            let status = c.status();
            (c, status)
        })
        .filter(|(_, s)| args.all || matches!(s, Status::Up { .. } | Status::Starting))
        .collect();
    let mut out = io::stdout().lock();
    if args.quiet {
        for (c, _) in &shown {
            writeln!(out, "{}", &c.record.id[..12])?;
        }
        return Ok(());
    }
    if args.json {
        let items: Vec<serde_json::Value> = shown
            .iter()
            .map(|(c, s)| {
                let r = &c.record;
                serde_json::json!({
                    "id": r.id, "name": r.name, "image": r.image, "command": r.command,
                    "created": r.created, "status": s.to_string(),
                    "pid": match s { Status::Up { pid } => Some(*pid), _ => None },
                    "exit_code": match s { Status::Exited(code) => Some(*code), _ => None },
                    "ports": r.ports,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<12}  {:<20}  {:<28}  {:<24}  {:<30}  {:<10}  PORTS",
        "CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED", "STATUS"
    )?;
    for (c, s) in &shown {
        let r = &c.record;
        let command: String = r.command.join(" ").chars().take(24).collect();
        let image = r.image.display().to_string();
        writeln!(
            out,
            "{:<12}  {:<20}  {:<28}  {:<24}  {:<30}  {:<10}  {}",
            &r.id[..12],
            r.name,
            image,
            command,
            r.created,
            s.to_string(),
            r.ports.join(", ")
        )?;
    }
    Ok(())
}

pub fn exec(args: &ExecArgs) -> Result<u8> {
    use rootpack::runtime::process::{Caps, Plan};
    let c = find(&args.container)?;
    let Status::Up { pid } = c.status() else {
        bail!("container {} is not running", c.record.name);
    };
    let r = &c.record;
    let env = exec_env(r, args);
    let (uid, gid) = match &args.user {
        Some(u) => rootpack::ids::parse_uid_gid(u)
            .with_context(|| format!("--user {u:?}: expected UID[:GID]"))?,
        None => r.user.unwrap_or((0, 0)),
    };
    let caps = rootpack::run::security::capability_mask(&[], &[]).map_err(anyhow::Error::msg)?;
    let seccomp =
        rootpack::run::seccomp::filter_for(&rootpack::run::seccomp::Seccomp::Default, caps)
            .map_err(anyhow::Error::msg)?;
    let cstr =
        |s: String| std::ffi::CString::new(s).context("a NUL byte in the command or environment");
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let plan = Plan {
        args: args
            .command
            .iter()
            .cloned()
            .map(cstr)
            .collect::<Result<_>>()?,
        env: env
            .into_iter()
            .map(|(k, v)| cstr(format!("{k}={v}")))
            .collect::<Result<_>>()?,
        path,
        cwd: args
            .workdir
            .clone()
            .or_else(|| r.workdir.clone())
            .unwrap_or_else(|| "/".into()),
        uid,
        gid,
        groups: Vec::new(),
        umask: None,
        caps: Caps {
            bounding: caps,
            effective: caps,
            permitted: caps,
            inheritable: 0,
            ambient: 0,
        },
        no_new_privs: r.no_new_privileges,
        rlimits: Vec::new(),
        oom_score_adj: None,
        terminal: args.tty,
        seccomp,
        apparmor: None,
        selinux: None,
    };
    let ea = rootpack::runtime::exec::ExecArgs {
        tty: args.tty,
        ..Default::default()
    };
    match rootpack::runtime::exec::enter(pid, &Container::cgroup_dirs(pid), &plan, &ea) {
        Ok(code) => Ok(code.clamp(0, 255) as u8),
        Err(rootpack::runtime::Error::Status(code, message)) => {
            eprintln!("rootpack: {message}");
            Ok(code.clamp(0, 255) as u8)
        }
        Err(e) => Err(e.into()),
    }
}

/// The environment of an exec: PATH and HOME, TERM with -t, the container's `run -e`
/// variables, then the exec's own.
fn exec_env(r: &containers::Record, args: &ExecArgs) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
    ];
    if args.tty {
        env.push((
            "TERM".into(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    let given: Vec<(String, String)> = crate::cli::env_values(&args.env).collect();
    for (k, v) in r.env.iter().chain(&given) {
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

pub fn logs(args: &LogsArgs) -> Result<()> {
    let c = find(&args.container)?;
    let mut out = io::stdout().lock();
    match c.logs(&mut out, args.follow) {
        Err(containers::Error::Other(m)) if m.contains("Broken pipe") => Ok(()),
        other => Ok(other?),
    }
}

pub fn stop(args: &StopArgs) -> Result<()> {
    for key in &args.containers {
        let c = find(key)?;
        c.stop(Duration::from_secs(args.time))?;
        println!("{key}");
    }
    Ok(())
}

pub fn kill(args: &KillArgs) -> Result<()> {
    let sig = rootpack::runtime::commands::parse_signal(&args.signal)?;
    for key in &args.containers {
        find(key)?.signal(sig)?;
        println!("{key}");
    }
    Ok(())
}

pub fn rm(args: &RmArgs) -> Result<()> {
    for key in &args.containers {
        find(key)?.remove(args.force)?;
        println!("{key}");
    }
    Ok(())
}
