//! rootpack's own detached containers (`run -d`): each is a folder under the state root
//! holding its record, its init's pid once it runs, its output (capped), and its exit
//! status once it ends. A monitor process (see [`monitor`]) runs the container as a
//! foreground `run` would, and writes the rest.

pub mod monitor;

use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such container: {0}")]
    Missing(String),
    /// Bad input from the command line (exit status 2).
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

fn other(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::Other(format!("{what}: {e}"))
}

/// What a container was started as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub image: PathBuf,
    pub command: Vec<String>,
    pub created: String,
    /// `--rm`: the folder goes when the container ends.
    pub auto_remove: bool,
    /// The environment, working folder and user `exec` starts from.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<(u32, u32)>,
    /// Its published ports, as `HOSTIP:HOST->CONTAINER/PROTO`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The container's no_new_privs, which `exec` follows.
    #[serde(default)]
    pub no_new_privileges: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Its monitor is setting it up.
    Starting,
    Up {
        pid: i32,
    },
    Exited(i32),
    /// Its monitor was killed before it could record the end.
    Dead,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Starting => write!(f, "Starting"),
            Status::Up { .. } => write!(f, "Up"),
            Status::Exited(code) => write!(f, "Exited ({code})"),
            Status::Dead => write!(f, "Dead"),
        }
    }
}

/// The state root: `/run/rootpack-containers` for root, else under `$XDG_RUNTIME_DIR`.
pub fn state_root() -> PathBuf {
    crate::fsutil::runtime_state_dir("rootpack-containers")
}

fn open_root(root: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(other(root.display()))
}

/// A container's folder and record.
#[derive(Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

/// "PID START" from a pid file, when that process is still the one that started.
fn live_pid(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let pid: i32 = parts.next()?.parse().ok()?;
    let start: u64 = parts.next()?.parse().ok()?;
    (crate::ids::process_start_time(pid) == Some(start)).then_some(pid)
}

impl Container {
    fn load(dir: PathBuf) -> Option<Container> {
        let text = fs::read(dir.join("record.json")).ok()?;
        let record = serde_json::from_slice(&text).ok()?;
        Some(Container { dir, record })
    }

    pub fn status(&self) -> Status {
        if let Ok(text) = fs::read_to_string(self.dir.join("exit")) {
            return Status::Exited(text.trim().parse().unwrap_or(-1));
        }
        if let Some(pid) = live_pid(&self.dir.join("pid")) {
            return Status::Up { pid };
        }
        // Recorded just now, or the monitor was killed.
        match live_pid(&self.dir.join("monitor")) {
            Some(_) if !self.dir.join("pid").exists() => Status::Starting,
            Some(_) => Status::Up { pid: 0 },
            None if fs::read_to_string(self.dir.join("exit")).is_ok() => self.status(),
            None => Status::Dead,
        }
    }

    /// The folders of its init's cgroups, from `/proc/PID/cgroup`.
    pub fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        match crate::run::cgroup::Layout::from_proc(&mountinfo, &cgroup) {
            crate::run::cgroup::Layout::V1(hs) => hs.into_iter().map(|h| h.dir).collect(),
            crate::run::cgroup::Layout::V2(mnt) => {
                let own = cgroup
                    .lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .unwrap_or("/");
                vec![mnt.join(own.trim_start_matches('/'))]
            }
            crate::run::cgroup::Layout::None => Vec::new(),
        }
    }

    /// Sends `sig` to its init (which passes SIGTERM, SIGINT, SIGHUP… on to the command;
    /// SIGKILL ends the whole container).
    pub fn signal(&self, sig: i32) -> Result<(), Error> {
        let Status::Up { pid } = self.status() else {
            return Err(Error::Other(format!(
                "container {} is not running",
                self.record.name
            )));
        };
        // SAFETY: kill(2) on the init this container's pid file names, alive just now.
        if pid > 0 && unsafe { libc::kill(pid, sig) } < 0 {
            return Err(other(&self.record.name)(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Waits until it has ended (its exit status recorded), up to `patience`.
    pub fn wait_ended(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        loop {
            match self.status() {
                Status::Exited(_) | Status::Dead => return true,
                _ if Instant::now() > deadline => return false,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, as `docker stop`.
    pub fn stop(&self, grace: Duration) -> Result<(), Error> {
        if !matches!(self.status(), Status::Up { .. }) {
            return Ok(());
        }
        self.signal(libc::SIGTERM)?;
        if self.wait_ended(grace) {
            return Ok(());
        }
        let _ = self.signal(libc::SIGKILL);
        if self.wait_ended(Duration::from_secs(10)) {
            Ok(())
        } else {
            Err(Error::Other(format!(
                "container {} did not stop",
                self.record.name
            )))
        }
    }

    /// Removes an ended container (`force`: stops it first, with SIGKILL).
    pub fn remove(self, force: bool) -> Result<(), Error> {
        match self.status() {
            Status::Up { .. } | Status::Starting if !force => {
                return Err(Error::Other(format!(
                    "container {} is running: stop it first, or rm -f",
                    self.record.name
                )));
            }
            Status::Up { .. } | Status::Starting => {
                let _ = self.signal(libc::SIGKILL);
                if !self.wait_ended(Duration::from_secs(10)) {
                    return Err(Error::Other(format!(
                        "container {} did not stop",
                        self.record.name
                    )));
                }
            }
            _ => {}
        }
        match fs::remove_dir_all(&self.dir) {
            // An `--rm` container's monitor got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| Error::Other(format!("{}: {e}", self.dir.display()))),
        }
    }

    /// Writes its output so far (the rotated part first); with `follow`, goes on until
    /// it has ended.
    pub fn logs(&self, out: &mut dyn Write, follow: bool) -> Result<(), Error> {
        let old = self.dir.join("log.1");
        if let Ok(mut f) = fs::File::open(&old) {
            io::copy(&mut f, out).map_err(other("log"))?;
        }
        let path = self.dir.join("log");
        let ended = || matches!(self.status(), Status::Exited(_) | Status::Dead);
        let mut f = loop {
            match fs::File::open(&path) {
                Ok(f) => break f,
                // Nothing written yet: with `follow`, wait for the first output.
                Err(e) if e.kind() == io::ErrorKind::NotFound && follow && !ended() => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(other(path.display())(e)),
            }
        };
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf).map_err(other("log"))?;
            if n > 0 {
                out.write_all(&buf[..n]).map_err(other("output"))?;
                continue;
            }
            let _ = out.flush();
            if !follow || ended() {
                // One last read: what was written just before the end.
                let n = f.read(&mut buf).map_err(other("log"))?;
                out.write_all(&buf[..n]).map_err(other("output"))?;
                return Ok(());
            }
            // Rotated under us: carry on in the new file.
            if fs::metadata(&path).map(|m| m.len()).unwrap_or(0) < f.stream_position().unwrap_or(0)
            {
                f = fs::File::open(&path).map_err(other(path.display()))?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every container, oldest first.
pub fn list(root: &Path) -> Vec<Container> {
    let mut all: Vec<Container> = fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter_map(|e| Container::load(e.path()))
                .collect()
        })
        .unwrap_or_default();
    all.sort_by(|a, b| a.record.created.cmp(&b.record.created));
    all
}

/// A container by its name, its id, or a prefix of its id that only it has.
pub fn find(root: &Path, key: &str) -> Result<Container, Error> {
    let all = list(root);
    let mut found: Vec<Container> = Vec::new();
    for c in all {
        if c.record.name == key || c.record.id == key {
            return Ok(c);
        }
        if !key.is_empty() && c.record.id.starts_with(key) {
            found.push(c);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Missing(key.to_string())),
        n => Err(Error::Usage(format!(
            "{key:?} is the start of {n} containers' ids: give more of it"
        ))),
    }
}
