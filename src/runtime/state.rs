//! A container's state folder under the state root: `state.json`, the spec it was created
//! from, and the `exec.fifo` its process waits on between `create` and `start`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;

/// Where containers live unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/run/rootpack-runtime";

/// The rendezvous between `create` and `start`: the process blocks opening it for writing
/// until `start` opens it for reading.
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        write!(f, "{}", s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

/// What is kept of a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// Its process on the host, and that process's start time (in clock ticks since boot,
    /// `/proc/PID/stat` field 22), so that a recycled pid is not taken for it.
    pub pid: i32,
    pub start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub owner: String,
    /// One folder per hierarchy (v1) or one (v2); empty without cgroups.
    #[serde(default)]
    pub cgroup_paths: Vec<PathBuf>,
    /// Its freezer: `freezer.state` (v1) or `cgroup.freeze` (v2).
    #[serde(default)]
    pub freezer: Option<PathBuf>,
}

/// The JSON `state` prints, as the OCI runtime spec and runc have it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: Status,
    pub pid: i32,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: &'a BTreeMap<String, String>,
    pub owner: &'a str,
}

/// A container id: what runc accepts (letters, digits, `_`, `+`, `-`, `.`), not `.` or
/// `..`, at most 1024 bytes, so that it is always one plain folder name.
pub fn check_id(id: &str) -> Result<(), Error> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_+-.".contains(c);
    if id.is_empty() || id == "." || id == ".." || id.len() > 1024 || !id.chars().all(allowed) {
        let shown: String = id.chars().take(64).collect();
        return Err(Error::Usage(format!(
            "invalid container id {shown:?}: letters, digits, '_', '+', '-' and '.', at most 1024 bytes"
        )));
    }
    Ok(())
}

/// The state root: made 0700 (and made so again if it was not), so that nothing in it
/// is another user's to read or replace.
pub fn open_root(root: &Path) -> Result<PathBuf, Error> {
    let ctx = |e: io::Error| Error::Other(format!("state root {}: {e}", root.display()));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(ctx)?;
    let meta = fs::symlink_metadata(root).map_err(ctx)?;
    if !meta.is_dir() {
        return Err(ctx(io::Error::other("not a folder")));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(ctx)?;
    }
    Ok(root.to_path_buf())
}

/// A container's folder, locked (`flock`) for as long as this lives, so that two commands
/// on one container take turns.
pub struct Container {
    pub dir: PathBuf,
    pub id: String,
    _lock: OwnedFd,
}

impl Container {
    /// Makes the folder of a new container; an existing one is an error.
    pub fn create(root: &Path, id: &str) -> Result<Container, Error> {
        check_id(id)?;
        let dir = root.join(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Other(format!(
                    "container with id {id} already exists"
                )));
            }
            Err(e) => return Err(Error::Other(format!("{}: {e}", dir.display()))),
        }
        Container::lock(dir, id)
    }

    /// An existing container.
    pub fn open(root: &Path, id: &str) -> Result<Container, Error> {
        check_id(id)?;
        let dir = root.join(id);
        if !dir.join("state.json").exists() {
            return Err(Error::Missing(id.to_string()));
        }
        Container::lock(dir, id)
    }

    fn lock(dir: PathBuf, id: &str) -> Result<Container, Error> {
        let ctx = |e: io::Error| Error::Other(format!("{}: {e}", dir.display()));
        let fd: OwnedFd = fs::File::open(&dir).map_err(ctx)?.into();
        // SAFETY: flock on our own fd.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ctx(io::Error::last_os_error()));
        }
        Ok(Container {
            dir,
            id: id.to_string(),
            _lock: fd,
        })
    }

    pub fn load(&self) -> Result<Saved, Error> {
        let path = self.dir.join("state.json");
        let text = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::Missing(self.id.clone()),
            _ => Error::Other(format!("{}: {e}", path.display())),
        })?;
        serde_json::from_slice(&text).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    pub fn save(&self, saved: &Saved) -> Result<(), Error> {
        let path = self.dir.join("state.json");
        let tmp = self.dir.join(".state.json");
        let text = serde_json::to_vec(saved).map_err(|e| Error::Other(e.to_string()))?;
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    /// Where it is in its life: from its process, the fifo and the freezer.
    pub fn status(&self, saved: &Saved) -> Status {
        if !alive(saved.pid, saved.start_time) {
            return Status::Stopped;
        }
        if self.dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if saved.freezer.as_deref().is_some_and(frozen) {
            return Status::Paused;
        }
        Status::Running
    }

    /// The spec it was created from, kept for `exec` and the poststop hooks.
    pub fn spec(&self) -> Result<oci_spec::runtime::Spec, Error> {
        let path = self.dir.join("config.json");
        oci_spec::runtime::Spec::load(&path)
            .map_err(|e| Error::Other(format!("{}: {e}", path.display())))
    }

    /// Removes the folder (and the lock with it).
    pub fn remove(self) -> Result<(), Error> {
        fs::remove_dir_all(&self.dir)
            .map_err(|e| Error::Other(format!("{}: {e}", self.dir.display())))
    }
}

fn frozen(path: &Path) -> bool {
    let text = fs::read_to_string(path).unwrap_or_default();
    matches!(text.trim(), "FROZEN" | "FREEZING" | "1")
}

pub use crate::ids::process_start_time as start_time;

/// Whether `pid` is still the process that started at `started` (and not a zombie).
pub fn alive(pid: i32, started: u64) -> bool {
    pid > 0 && start_time(pid) == Some(started)
}

/// Every container's id under the root, sorted.
pub fn ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("state.json").exists())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}
