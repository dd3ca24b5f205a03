//! Walking a host folder in archive order, shared by `pack` (archive) and injection and
//! staging (tree, build).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Walks a host folder in a stable order (sorted by name, parents first, symlinks not
/// followed), giving each entry with its archive name: "." for the folder itself, else
/// its path below it. An error comes with the path it concerns.
pub fn walk_named(
    dir: &Path,
) -> impl Iterator<Item = Result<(Vec<u8>, walkdir::DirEntry), (PathBuf, std::io::Error)>> + '_ {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .map(move |entry| {
            let entry = entry.map_err(|e| (e.path().unwrap_or(dir).to_path_buf(), e.into()))?;
            let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
            let name = if rel.as_os_str().is_empty() {
                b".".to_vec()
            } else {
                rel.as_os_str().as_bytes().to_vec()
            };
            Ok((name, entry))
        })
}
