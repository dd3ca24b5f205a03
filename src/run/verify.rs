//! The image is checked against its manifest's sha256 before it is mounted: a changed
//! data block must not run silently. A successful check is remembered, keyed by the
//! image's device, inode, size, mtime and ctime, in a root-only state folder, so only the
//! first run after a change pays for reading the image. Rewriting the image and its
//! manifest together is out of scope: this is integrity, not a signature.
//!
//! # Security
//!
//! The file checked is the file mounted: `run` opens the image once, hashes through that
//! fd and attaches the loop device to the same fd, so a path swapped after the check
//! changes nothing. Blocks rewritten in place after the check would; so an image that a
//! user other than the caller and root can write (through its mode, its owner, or a folder
//! on its path they could rename it in) is refused before any check, unless
//! `--no-verify` says the caller accepts it.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where successful checks are remembered.
pub const STATE_DIR: &str = "/var/lib/rootpack/verified";

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path}: other users can write {what}, so it could change between its check and its mount (chmod go-w, or --no-verify runs it anyway)"
    )]
    Writable { path: PathBuf, what: String },
    #[error(
        "{path}: sha256 mismatch: the image is not the one its manifest describes (--no-verify runs it anyway)"
    )]
    Mismatch { path: PathBuf },
}

/// What identifies one version of a file: if any of these changed, so may its bytes.
fn fingerprint(m: &std::fs::Metadata) -> String {
    format!(
        "{} {}.{} {}.{}",
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// Refuses `path` (canonical: an image file or folder, or its manifest; `meta` its
/// metadata) when a user other than the caller and root could write it, or replace it
/// through a folder on its path. A folder with the sticky bit (`/tmp`) lets others add
/// files but not rename or remove ours.
pub fn check_writers(path: &Path, meta: &std::fs::Metadata) -> Result<(), VerifyError> {
    let caller = rustix::process::geteuid().as_raw();
    let foreign = |m: &std::fs::Metadata, sticky_ok: bool| {
        let writable = m.mode() & 0o022 != 0 && !(sticky_ok && m.mode() & 0o1000 != 0);
        writable || (m.uid() != caller && m.uid() != 0)
    };
    let refuse = |what: String| VerifyError::Writable {
        path: path.to_path_buf(),
        what,
    };
    if foreign(meta, false) {
        return Err(refuse(format!(
            "it (owner {}, mode {:04o})",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    for dir in path.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|source| VerifyError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        if foreign(&m, true) {
            return Err(refuse(format!(
                "the folder {} on its path (owner {}, mode {:04o})",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Checks `file` (the image at `image`) against `sha256` (hex), unless a check of this
/// very file version has passed before (recorded under `state`).
pub fn verify(
    image: &Path,
    file: &File,
    size: u64,
    sha256: &str,
    state: &Path,
) -> Result<(), VerifyError> {
    let read_err = |source| VerifyError::Read {
        path: image.to_path_buf(),
        source,
    };
    let before = file.metadata().map_err(read_err)?;
    let record = state.join(format!("{:x}-{}", before.dev(), before.ino()));
    let entry = format!("{} {sha256}\n", fingerprint(&before));
    if std::fs::read_to_string(&record).is_ok_and(|r| r == entry) {
        return Ok(());
    }
    let (got_size, got) = crate::digest::digest_reader(file).map_err(read_err)?;
    if got != sha256 || got_size != size {
        return Err(VerifyError::Mismatch {
            path: image.to_path_buf(),
        });
    }
    // Changed while we read it: what we hashed may not be what is there now.
    let after = file.metadata().map_err(read_err)?;
    if fingerprint(&after) == fingerprint(&before) {
        // Only a cache: failing to write it costs the next run a check, nothing more.
        let _ = remember(state, &record, &entry);
    }
    Ok(())
}

/// After `run --writable` changed `image`: waits until the kernel has let go of it (its
/// loop device is freed once the container's mount namespace is gone), then records its
/// new size and sha256 in the manifest, marked as modified, and remembers the check.
pub fn record_changes(
    image: &Path,
    manifest_path: &Path,
    manifest: &crate::manifest::Manifest,
    state: &Path,
) -> io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while backs_a_loop_device(image) {
        if std::time::Instant::now() > deadline {
            return Err(io::Error::other("its loop device was not released"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let file = File::open(image)?;
    let before = file.metadata()?;
    let (size, sha256) = crate::digest::digest_reader(&file)?;
    if size == manifest.size && sha256 == manifest.sha256 {
        return Ok(());
    }
    let mut changed = manifest.clone();
    changed.size = size;
    changed.sha256 = sha256;
    changed.modified = true;
    changed.write(manifest_path)?;
    let record = state.join(format!("{:x}-{}", before.dev(), before.ino()));
    let _ = remember(
        state,
        &record,
        &format!("{} {}\n", fingerprint(&before), changed.sha256),
    );
    Ok(())
}

fn backs_a_loop_device(image: &Path) -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    devices.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("loop/backing_file"))
            .is_ok_and(|b| Path::new(b.trim_end()) == image)
    })
}

fn remember(state: &Path, record: &Path, entry: &str) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)?;
    let temp = record.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, entry)?;
    std::fs::rename(&temp, record).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_once_then_remembers_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        let state = dir.path().join("state");
        std::fs::write(&image, b"image bytes").unwrap();
        let (size, sha) = crate::digest::digest_file(&image).unwrap();
        let check = || verify(&image, &File::open(&image).unwrap(), size, &sha, &state);
        check().unwrap();
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
        // Same size, new bytes, new mtime: checked again, and refused.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&image, b"image byteZ").unwrap();
        let err = check().unwrap_err();
        assert!(err.to_string().contains("sha256 mismatch"), "{err}");
        // A remembered entry for another version is not trusted either.
        assert!(check().is_err());
    }
}
