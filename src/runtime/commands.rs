//! The commands on an existing container: start, state, kill, delete, list, ps, pause,
//! resume, update.

use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::state::{self, Container, Status};
use super::{Error, Global, cgroups, hooks, report_json};

fn open(g: &Global, id: &str) -> Result<(Container, state::Saved, Status), Error> {
    let c = Container::open(&g.root, id)?;
    let saved = c.load()?;
    let status = c.status(&saved);
    Ok((c, saved, status))
}

/// Lets the created process go: opens its fifo for reading and takes its byte.
pub fn start(g: &Global, id: &str) -> Result<(), Error> {
    let (c, saved, status) = open(g, id)?;
    match status {
        Status::Created => {}
        Status::Stopped => {
            return Err(Error::Other(format!(
                "container {id:?}: cannot start a container that has stopped"
            )));
        }
        _ => {
            return Err(Error::Other(format!(
                "container {id:?}: cannot start an already running container"
            )));
        }
    }
    let fifo = c.dir.join(state::EXEC_FIFO);
    let mut file = super::create::open_nonblocking(&fifo)
        .map_err(|e| Error::Other(format!("{}: {e}", fifo.display())))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut byte = [0u8; 1];
    loop {
        let mut fds = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one live pollfd.
        unsafe { libc::poll(&mut fds, 1, 10) };
        match file.read(&mut byte) {
            Ok(1) => break,
            Ok(_) | Err(_) if !state::alive(saved.pid, saved.start_time) => {
                return Err(Error::NotRunning(id.to_string()));
            }
            _ if Instant::now() > deadline => {
                return Err(Error::Other(format!(
                    "container {id:?}: its process did not take the start"
                )));
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&fifo);
    let spec = c.spec()?;
    if let Some(h) = spec.hooks() {
        hooks::run(
            "poststart",
            h.poststart().as_ref(),
            &report_json(&saved, Status::Running),
        )?;
    }
    Ok(())
}

pub fn state(g: &Global, id: &str) -> Result<String, Error> {
    let (_, saved, status) = open(g, id)?;
    Ok(report_json(&saved, status))
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`).
pub fn parse_signal(s: &str) -> Result<i32, Error> {
    if let Ok(n) = s.parse::<i32>()
        && (1..=64).contains(&n)
    {
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let table: &[(&str, i32)] = &[
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("ILL", libc::SIGILL),
        ("TRAP", libc::SIGTRAP),
        ("ABRT", libc::SIGABRT),
        ("IOT", libc::SIGIOT),
        ("BUS", libc::SIGBUS),
        ("FPE", libc::SIGFPE),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("SEGV", libc::SIGSEGV),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("STKFLT", libc::SIGSTKFLT),
        ("CHLD", libc::SIGCHLD),
        ("CONT", libc::SIGCONT),
        ("STOP", libc::SIGSTOP),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("WINCH", libc::SIGWINCH),
        ("IO", libc::SIGIO),
        ("POLL", libc::SIGPOLL),
        ("PWR", libc::SIGPWR),
        ("SYS", libc::SIGSYS),
    ];
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, sig)| *sig)
        .ok_or_else(|| Error::Usage(format!("unknown signal {s:?}")))
}

pub fn kill(g: &Global, id: &str, signal: &str, all: bool) -> Result<(), Error> {
    let sig = parse_signal(signal)?;
    let (_, saved, status) = open(g, id)?;
    if status == Status::Stopped {
        return Err(Error::NotRunning(id.to_string()));
    }
    if all {
        for pid in cgroups::procs(&saved.cgroup_paths) {
            // SAFETY: kill(2) on a task of the container's group.
            unsafe { libc::kill(pid, sig) };
        }
        return Ok(());
    }
    // SAFETY: kill(2) on the container's process, checked alive just above.
    if unsafe { libc::kill(saved.pid, sig) } < 0 {
        return Err(Error::Other(format!(
            "container {id:?}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Waits for the process to be gone (or a zombie), up to `patience`.
fn wait_gone(saved: &state::Saved, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while state::alive(saved.pid, saved.start_time) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

pub fn delete(g: &Global, id: &str, force: bool) -> Result<(), Error> {
    state::check_id(id)?;
    let (c, saved, status) = match open(g, id) {
        Err(Error::Missing(_)) if force => {
            remove_unfinished(g, id);
            return Ok(());
        }
        other => other?,
    };
    match status {
        Status::Stopped | Status::Created => {}
        _ if force => {}
        other => {
            return Err(Error::Other(format!(
                "container {id:?}: cannot delete a container that is not stopped: {other}"
            )));
        }
    }
    if status != Status::Stopped {
        if status == Status::Paused {
            let _ = cgroups::freeze(saved.freezer.as_deref(), false);
        }
        // SAFETY: kill(2) on the container's process, alive just now.
        unsafe { libc::kill(saved.pid, libc::SIGKILL) };
        crate::run::cgroup::kill_tasks(&saved.cgroup_paths);
        if !wait_gone(&saved, Duration::from_secs(10)) {
            return Err(Error::Other(format!(
                "container {id:?}: its process did not die"
            )));
        }
    }
    // What outlived the process in its group (with a shared PID namespace, or after
    // a setsid'ed daemon), then the groups.
    crate::run::cgroup::kill_tasks(&saved.cgroup_paths);
    cgroups::remove(&saved.cgroup_paths)?;
    let spec = c.spec().ok();
    c.remove()?;
    if let Some(h) = spec.as_ref().and_then(|s| s.hooks().as_ref()) {
        hooks::run(
            "poststop",
            h.poststop().as_ref(),
            &report_json(&saved, Status::Stopped),
        )?;
    }
    Ok(())
}

/// What a create killed before it wrote the state left: the folder, and the cgroups its
/// copy of the spec names (with anything still in them).
fn remove_unfinished(g: &Global, id: &str) {
    let dir = g.root.join(id);
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json")).ok();
    let cg_path = spec
        .as_ref()
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.cgroups_path().clone());
    if spec.is_some()
        && let Ok(path) = cgroups::path_for(cg_path.as_deref(), id, false)
    {
        let dirs = cgroups::dirs_for(&crate::run::cgroup::Layout::detect(), &path);
        crate::run::cgroup::kill_tasks(&dirs);
        let _ = cgroups::remove(&dirs);
    }
    let _ = std::fs::remove_dir_all(dir);
}

pub fn list(g: &Global, json: bool, quiet: bool) -> Result<String, Error> {
    let mut rows = Vec::new();
    for id in state::ids(&g.root) {
        let Ok((_, saved, status)) = open(g, &id) else {
            continue;
        };
        rows.push((saved, status));
    }
    if quiet {
        return Ok(rows.iter().map(|(s, _)| format!("{}\n", s.id)).collect());
    }
    if json {
        let items: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, status)| {
                serde_json::json!({
                    "ociVersion": "1.0.2", "id": s.id, "pid": if *status == Status::Stopped { 0 } else { s.pid },
                    "status": status.to_string(), "bundle": s.bundle, "rootfs": s.rootfs,
                    "created": s.created, "owner": s.owner,
                })
            })
            .collect();
        return Ok(serde_json::to_string(&items).unwrap_or_default() + "\n");
    }
    let mut out = format!(
        "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER\n",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for (s, status) in rows {
        let pid = if status == Status::Stopped { 0 } else { s.pid };
        out += &format!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} {}\n",
            s.id,
            pid,
            status.to_string(),
            s.bundle.display(),
            s.created,
            if s.owner.is_empty() { "root" } else { &s.owner }
        );
    }
    Ok(out)
}

/// The container's processes: their pids as JSON, or `ps`'s lines for them.
pub fn ps(g: &Global, id: &str, json: bool, ps_args: &[String]) -> Result<String, Error> {
    let (_, saved, status) = open(g, id)?;
    if status == Status::Stopped {
        return Err(Error::NotRunning(id.to_string()));
    }
    let pids = cgroups::procs(&saved.cgroup_paths);
    if json {
        return Ok(serde_json::to_string(&pids).unwrap_or_default() + "\n");
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Other(format!("ps: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::Other("ps printed no PID column".into()))?;
    let mut result = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            result += line;
            result.push('\n');
        }
    }
    Ok(result)
}

pub fn pause(g: &Global, id: &str, frozen: bool) -> Result<(), Error> {
    let (_, saved, status) = open(g, id)?;
    match (status, frozen) {
        (Status::Running, true) | (Status::Paused, false) => {
            cgroups::freeze(saved.freezer.as_deref(), frozen)
        }
        (Status::Stopped, _) => Err(Error::NotRunning(id.to_string())),
        (other, _) => Err(Error::Other(format!("container {id:?} is {other}"))),
    }
}

/// `update --resources FILE|-`.
pub fn update(g: &Global, id: &str, resources: &Path) -> Result<(), Error> {
    let (_, saved, status) = open(g, id)?;
    if status == Status::Stopped {
        return Err(Error::NotRunning(id.to_string()));
    }
    let text = if resources == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Other(format!("stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(resources)
            .map_err(|e| Error::Other(format!("{}: {e}", resources.display())))?
    };
    let r: oci_spec::runtime::LinuxResources =
        serde_json::from_str(&text).map_err(|e| Error::Other(format!("--resources: {e}")))?;
    let groups = cgroups::reopen(&saved.cgroup_paths, saved.freezer.clone());
    groups.set(&r)?;
    if let Some(d) = r.devices() {
        groups.set_devices(d)?;
    }
    Ok(())
}
