//! The image writers, one per output format, and what they share: syncing a file while
//! hashing it, and swapping a folder into place.

use std::fs::File;
use std::io;
use std::path::Path;

use super::{BuildError, out_err};
use crate::fsutil::AtomicFile;

pub(super) mod archive;
pub(super) mod ext4;
pub(super) mod folder;
pub(super) mod oci;

/// Puts the folder `new` at `target` in one rename, then drops the old one: a failure
/// keeps the old one.
pub(super) fn swap_into_place(new: &Path, target: &Path, work: &Path) -> Result<(), BuildError> {
    if std::fs::symlink_metadata(target).is_ok() {
        let old = work.join("previous");
        std::fs::rename(target, &old).map_err(out_err(target))?;
        if let Err(e) = std::fs::rename(new, target) {
            let _ = std::fs::rename(&old, target);
            return Err(out_err(target)(e));
        }
    } else {
        std::fs::rename(new, target).map_err(out_err(target))?;
    }
    Ok(())
}

/// Syncs the finished image to disk, hashing it on a second thread meanwhile (the hash
/// reads the page cache while the disk writes); it is renamed into place later, with its
/// manifest.
pub(super) fn sync_hashing(
    file: AtomicFile,
    image: &Path,
) -> Result<(String, Option<AtomicFile>), BuildError> {
    let reader = File::open(file.temp_path()).map_err(out_err(image))?;
    let (synced, digest) = std::thread::scope(|scope| {
        // If no thread can be had, the closure runs here, after the sync.
        let hashing = std::thread::Builder::new()
            .spawn_scoped(scope, || crate::digest::digest_reader(&reader));
        let synced = file.sync();
        let digest = match hashing {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("hashing thread panicked"))),
            Err(_) => crate::digest::digest_reader(&reader),
        };
        (synced, digest)
    });
    synced.map_err(out_err(image))?;
    Ok((digest.map_err(out_err(image))?.1, Some(file)))
}
