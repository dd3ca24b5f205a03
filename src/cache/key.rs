//! Cache keys: a sha256 over named, length-prefixed fields, and the content digests of the
//! host files and folders that go into them, remembered by file identity as git's index
//! does, so an unchanged 100 MB layer costs a `stat`, not a read.

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when what a state holds, or how keys are made, changes.
const FORMAT: &str = "rootpack-cache-2";

pub struct Key(Sha256);

impl Key {
    /// A key of the given kind (`layers`, `inject`, `step`, `output`) over `parent`.
    pub fn new(kind: &str, parent: Option<&str>) -> Key {
        let mut k = Key(Sha256::new());
        k.field("format", FORMAT.as_bytes());
        k.field("kind", kind.as_bytes());
        k.field("parent", parent.unwrap_or("").as_bytes());
        k
    }

    /// One named field; lengths keep `("ab", "c")` and `("a", "bc")` apart.
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Key {
        for part in [name.as_bytes(), value] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn text(&mut self, name: &str, value: &str) -> &mut Key {
        self.field(name, value.as_bytes())
    }

    pub fn finish(self) -> String {
        crate::digest::hex(&self.0.finalize())
    }
}

/// What identifies a file's version without reading it: if none of these changed, its
/// content did not (a write changes mtime and ctime, which no one but root can set back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    /// Changed less than a second ago: a write in the same clock tick would not show in
    /// the times, so the digest is not remembered.
    fn fresh(&self) -> bool {
        let now = super::now();
        self.mtime.0 >= now - 1 || self.ctime.0 >= now - 1
    }
}

/// Content digests of host files, remembered by identity in `digests.json`.
#[derive(Default)]
pub struct Digests {
    path: Option<PathBuf>,
    known: HashMap<Identity, String>,
    used: HashMap<Identity, String>,
}

#[derive(Serialize, Deserialize)]
struct Remembered {
    id: Identity,
    sha256: String,
}

impl Digests {
    /// The digests remembered in `dir` (none if it cannot be read).
    pub fn load(dir: &Path) -> Digests {
        let path = dir.join("digests.json");
        let known = std::fs::read(&path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Vec<Remembered>>(&t).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.id, r.sha256))
            .collect();
        Digests {
            path: Some(path),
            known,
            used: HashMap::new(),
        }
    }

    /// Remembers the digests this build used (only those: deleted files fall out).
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        if self.used.len() == self.known.len()
            && self.used.keys().all(|k| self.known.contains_key(k))
        {
            return;
        }
        let list: Vec<Remembered> = self
            .used
            .iter()
            .map(|(id, d)| Remembered {
                id: *id,
                sha256: d.clone(),
            })
            .collect();
        let Ok(json) = serde_json::to_vec(&list) else {
            return;
        };
        let temp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = super::private_file(&temp, true)
            .and_then(|mut f| io::Write::write_all(&mut f, &json))
            .and_then(|()| std::fs::rename(&temp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
    }

    /// The sha256 of the file at `path` (followed).
    pub fn file(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path)?;
        self.file_with(path, &meta)
    }

    fn file_with(&mut self, path: &Path, meta: &std::fs::Metadata) -> io::Result<String> {
        let id = Identity::of(meta);
        let digest = match self.known.get(&id) {
            Some(d) => d.clone(),
            None => crate::digest::digest_file(path)?.1,
        };
        if !id.fresh() {
            self.used.insert(id, digest.clone());
        }
        Ok(digest)
    }

    /// Adds a folder to `key`: every entry's path, type, owner, mode, size, mtime, link
    /// target, device number and content, in name order.
    pub fn tree(&mut self, dir: &Path, key: &mut Key) -> io::Result<()> {
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walk {
            let entry = entry.map_err(io::Error::from)?;
            let meta = entry.metadata().map_err(io::Error::from)?;
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            key.field("path", rel.as_os_str().as_bytes());
            let fields = [
                meta.mode() as u64,
                meta.uid() as u64,
                meta.gid() as u64,
                meta.rdev(),
                meta.mtime() as u64,
                meta.mtime_nsec() as u64,
            ];
            for (i, f) in fields.iter().enumerate() {
                key.field(&i.to_string(), &f.to_le_bytes());
            }
            for (name, value) in crate::xattr::read_path(entry.path())? {
                key.field("xattr", &name).field("value", &value);
            }
            let ft = meta.file_type();
            if ft.is_symlink() {
                key.field(
                    "link",
                    std::fs::read_link(entry.path())?.as_os_str().as_bytes(),
                );
            } else if ft.is_file() {
                let d = self.file_with(entry.path(), &meta)?;
                key.text("sha256", &d);
            }
        }
        Ok(())
    }
}
