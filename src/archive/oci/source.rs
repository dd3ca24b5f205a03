//! Where an image's files are: an OCI layout folder, or a tar (an OCI archive, a Docker
//! archive) indexed once so that each file is read in place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A JSON document larger than this is refused, not read into memory.
pub const MAX_JSON: u64 = 16 << 20;

pub enum Source {
    Layout(PathBuf),
    Archive {
        file: File,
        /// Name (no leading "./") -> (data offset, size) or a symlink target.
        entries: HashMap<String, Stored>,
    },
}

#[derive(Debug, Clone)]
pub enum Stored {
    Data { offset: u64, size: u64 },
    Symlink(String),
}

fn clean(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_end_matches('/')
        .to_string()
}

impl Source {
    pub fn open(path: &Path) -> io::Result<Source> {
        if path.is_dir() {
            return Ok(Source::Layout(path.to_path_buf()));
        }
        let file = File::open(path)?;
        let mut archive = tar::Archive::new(&file);
        let mut entries = HashMap::new();
        // Raw: extension headers are not read into memory (no name in an image is long).
        for entry in archive.entries_with_seek()?.raw(true) {
            let entry = entry?;
            let header = entry.header();
            let name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
            let stored = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Stored::Data {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                tar::EntryType::Symlink => Stored::Symlink(
                    String::from_utf8_lossy(&header.link_name_bytes().unwrap_or_default())
                        .into_owned(),
                ),
                _ => continue,
            };
            entries.insert(clean(&name), stored);
        }
        Ok(Source::Archive { file, entries })
    }

    /// Whether the image holds a file by this name.
    pub fn has(&self, name: &str) -> bool {
        match self {
            Source::Layout(dir) => dir.join(name).is_file(),
            Source::Archive { .. } => self.locate(name).is_ok(),
        }
    }

    /// An archive member's data, following symlinks inside the archive (Docker archives
    /// link `ID/layer.tar` to `DIGEST.tar`).
    fn locate(&self, name: &str) -> io::Result<(u64, u64)> {
        let Source::Archive { entries, .. } = self else {
            return Err(io::Error::other("not an archive"));
        };
        let mut name = clean(name);
        for _ in 0..8 {
            match entries.get(&name) {
                Some(Stored::Data { offset, size }) => return Ok((*offset, *size)),
                Some(Stored::Symlink(target)) => {
                    let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                    name = normalize(&base.join(target)).ok_or_else(|| {
                        io::Error::other(format!("{name}: link leaves the archive"))
                    })?;
                }
                None => break,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: not in the image"),
        ))
    }

    /// Opens a file of the image for streaming, with its size.
    pub fn open_file(&self, name: &str) -> io::Result<(Box<dyn Read + Send + '_>, u64)> {
        match self {
            Source::Layout(dir) => {
                let rel = normalize(Path::new(name)).ok_or_else(|| {
                    io::Error::other(format!("{name}: not a path inside the image"))
                })?;
                let f = File::open(dir.join(&rel))
                    .map_err(|e| io::Error::new(e.kind(), format!("{rel}: {e}")))?;
                let size = f.metadata()?.len();
                Ok((Box::new(f), size))
            }
            Source::Archive { file, .. } => {
                let (offset, size) = self.locate(name)?;
                let mut f = file.try_clone()?;
                f.seek(SeekFrom::Start(offset))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// A whole small file (a JSON document), capped at [`MAX_JSON`].
    pub fn read_small(&self, name: &str) -> io::Result<Vec<u8>> {
        let (r, size) = self.open_file(name)?;
        if size > MAX_JSON {
            return Err(io::Error::other(format!(
                "{name}: {size} bytes, too large for a JSON document"
            )));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(MAX_JSON).read_to_end(&mut buf)?;
        Ok(buf)
    }
}

/// A relative path without `..` escaping its start, as a '/'-joined string.
fn normalize(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}
