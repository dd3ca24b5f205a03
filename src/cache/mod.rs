//! The build cache: trees a recipe reached after its layers and after each `[[run]]` step,
//! each stored as rootpack's own framed zstd tar (tar: it carries extended attributes)
//! under the key of everything that made it (see `builder::cached`), so a rebuild starts
//! from the longest prefix that did not change.
//!
//! The folder is an OCI image layout in shape: `blobs/sha256/HEX` holds the archives by
//! their digest and never changes once renamed into place; `states/KEY.json` says which
//! blob a key has, its parent, what it is and its size, and its mtime is the last use.
//! Writers hold `lock` shared, `prune` exclusive, so a blob renamed in but not yet named by
//! its state is never taken for garbage. Everything is 0600 under a 0700 folder: a state
//! is a whole root filesystem.

pub mod key;
pub mod transfer;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::digest::Hashing;
use serde::{Deserialize, Serialize};

/// The cap a cache is pruned to after each build, unless `ROOTPACK_CACHE_MAX` says
/// otherwise.
pub const DEFAULT_MAX: u64 = 10 << 30;

/// One cached tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub key: String,
    /// The state this one was made from (a step's: the one before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `layers` (the whole tree) or `step` (what one step changed, with whiteouts).
    pub kind: String,
    /// For people: the recipe and what the state is of.
    pub label: String,
    /// The archive's sha256 (its blob) and size.
    pub blob: String,
    pub size: u64,
    pub created: i64,
    /// What the build needs besides the tree (a layers state: the layer records and the
    /// container images' config).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub meta: serde_json::Value,
    /// Last use, from the state file's mtime (not stored).
    #[serde(skip)]
    pub used: i64,
}

pub struct Cache {
    dir: PathBuf,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Where builds keep their cache by default: `/var/cache/rootpack` for root, else
/// `$XDG_CACHE_HOME/rootpack` or `~/.cache/rootpack`.
pub fn default_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/cache/rootpack");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rootpack-cache-{}", uid())));
    base.join("rootpack")
}

/// The cache a command uses: `given` (`--cache`), else `ROOTPACK_CACHE` (`off`: none),
/// else [`default_dir`].
pub fn chosen_dir(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = given {
        return Some(dir.to_path_buf());
    }
    match std::env::var_os("ROOTPACK_CACHE") {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(default_dir()),
    }
}

fn uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The cap from `ROOTPACK_CACHE_MAX` (`20G`, `500M`, bytes), else [`DEFAULT_MAX`].
pub fn max_size() -> Result<u64, String> {
    match std::env::var("ROOTPACK_CACHE_MAX") {
        Ok(v) => crate::recipe::parse_size(&v)
            .ok_or_else(|| format!("ROOTPACK_CACHE_MAX={v}: not a size (20G, 500M, bytes)")),
        Err(_) => Ok(DEFAULT_MAX),
    }
}

/// A lock on the whole cache: shared while adding, exclusive while pruning.
pub struct CacheLock(#[allow(dead_code)] File);

impl Cache {
    /// Opens (making it, 0700) the cache at `dir`. A folder another user owns, or one
    /// others may write, is refused: its states would go into images unchecked.
    pub fn open(dir: &Path) -> io::Result<Cache> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::metadata(dir)?;
        if meta.uid() != uid() || meta.mode() & 0o022 != 0 {
            return Err(io::Error::other(format!(
                "{}: a cache must be a folder of the user's own that no one else may write",
                dir.display()
            )));
        }
        for sub in ["blobs/sha256", "states", "tmp"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))?;
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn lock(&self, exclusive: bool) -> io::Result<CacheLock> {
        use rustix::fs::FlockOperation;
        let file = private_file(&self.dir.join("lock"), false)?;
        let op = match exclusive {
            true => FlockOperation::LockExclusive,
            false => FlockOperation::LockShared,
        };
        rustix::fs::flock(&file, op)?;
        Ok(CacheLock(file))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest)
    }

    fn state_path(&self, key: &str) -> PathBuf {
        self.dir.join("states").join(format!("{key}.json"))
    }

    /// The state of `key`, if there is one whose blob is there; its use is noted.
    pub fn get(&self, key: &str) -> Option<State> {
        let path = self.state_path(key);
        let state: State = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        if state.key != key || !self.blob_path(&state.blob).is_file() {
            return None;
        }
        let t = std::fs::FileTimes::new().set_modified(SystemTime::now());
        let _ = File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_times(t));
        Some(state)
    }

    /// Stores a state whose archive `write` writes; gives it as stored.
    pub fn put(
        &self,
        mut state: State,
        write: &mut dyn FnMut(&mut (dyn Write + Send)) -> io::Result<()>,
    ) -> io::Result<State> {
        let _lock = self.lock(false)?;
        let temp = Temp::new(&self.dir)?;
        let mut out = Hashing::new(io::BufWriter::with_capacity(
            1 << 20,
            private_file(&temp.0, true)?,
        ));
        write(&mut out)?;
        state.blob = crate::digest::hex(&out.hash());
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        state.size = out.size;
        state.created = now();
        drop(file);
        std::fs::rename(&temp.0, self.blob_path(&state.blob))?;
        let json = serde_json::to_vec_pretty(&state).map_err(io::Error::other)?;
        let meta = Temp::new(&self.dir)?;
        private_file(&meta.0, true)?.write_all(&json)?;
        std::fs::rename(&meta.0, self.state_path(&state.key))?;
        Ok(state)
    }

    /// Forgets a state (a corrupt one): its blob goes when nothing else names it.
    pub fn remove(&self, key: &str) {
        let _ = std::fs::remove_file(self.state_path(key));
        if let Ok(_lock) = self.lock(true) {
            let _ = self.collect_garbage();
        }
    }

    /// Every state, oldest use first.
    pub fn states(&self) -> io::Result<Vec<State>> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("states"))? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().ends_with(".json") {
                continue;
            }
            let Ok(text) = std::fs::read(entry.path()) else {
                continue;
            };
            if let Ok(mut s) = serde_json::from_slice::<State>(&text) {
                s.used = entry.metadata().map_or(0, |m| m.mtime());
                out.push(s);
            }
        }
        out.sort_by(|a, b| (a.used, &a.key).cmp(&(b.used, &b.key)));
        Ok(out)
    }

    /// Removes states least recently used first while the cache is over `keep_size`, and
    /// those unused for `older_than` seconds; gives how many and how many bytes went.
    pub fn prune(
        &self,
        keep_size: Option<u64>,
        older_than: Option<u64>,
    ) -> io::Result<(usize, u64)> {
        let _lock = self.lock(true)?;
        let states = self.states()?;
        let mut total: u64 = states.iter().map(|s| s.size).sum();
        let cutoff = older_than.map(|d| now() - d as i64);
        let mut removed = (0, 0);
        for s in &states {
            let old = cutoff.is_some_and(|c| s.used < c);
            let over = keep_size.is_some_and(|k| total > k);
            if !old && !over {
                continue;
            }
            std::fs::remove_file(self.state_path(&s.key))?;
            total -= s.size;
            removed.0 += 1;
            removed.1 += s.size;
        }
        self.collect_garbage()?;
        Ok(removed)
    }

    /// Removes blobs no state names, and temporary files of writers that died. Under the
    /// exclusive lock.
    fn collect_garbage(&self) -> io::Result<()> {
        let named: std::collections::HashSet<String> =
            self.states()?.into_iter().map(|s| s.blob).collect();
        for entry in std::fs::read_dir(self.dir.join("blobs/sha256"))? {
            let entry = entry?;
            if !named.contains(entry.file_name().to_string_lossy().as_ref()) {
                std::fs::remove_file(entry.path())?;
            }
        }
        for entry in std::fs::read_dir(self.dir.join("tmp"))? {
            std::fs::remove_file(entry?.path())?;
        }
        Ok(())
    }
}

/// A lock file (0600), locked exclusively until the file is dropped.
pub fn lock_file(path: &Path) -> io::Result<File> {
    let file = private_file(path, false)?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(file)
}

/// A 0600 file, new (`create`) or the lock file.
fn private_file(path: &Path, create: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = File::options();
    o.write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    match create {
        true => o.create_new(true),
        false => o.create(true).truncate(false),
    };
    o.open(path)
}

/// A file name under `tmp/`, removed unless renamed away.
struct Temp(PathBuf);

impl Temp {
    fn new(dir: &Path) -> io::Result<Temp> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Ok(Temp(
            dir.join("tmp").join(format!("{}-{n}", std::process::id())),
        ))
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks that the file at `path` has the sha256 `digest`.
pub fn verify(path: &Path, digest: &str) -> io::Result<bool> {
    Ok(crate::digest::digest_file(path)?.1 == digest)
}
