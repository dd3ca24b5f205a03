//! What a container starts from: the image file (opened once, its writers and digest
//! checked, see [`super::verify`]) or an image folder, and the manifest beside it.

use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{RunError, RunOptions, ms, verify};
use crate::manifest::Manifest;

/// The manifest beside the image, if there is one; one that cannot be read or parsed is
/// an error, not a silent loss of the image's limits and config.
fn manifest_for(image: &Path) -> Result<Option<Manifest>, RunError> {
    use crate::manifest::ManifestError;
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    match crate::manifest::read(&crate::manifest::path_for(image)) {
        Ok(m) => Ok(Some(m.for_image(&name))),
        Err(ManifestError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(RunError::Manifest(e)),
    }
}

/// What the container is started from, after the manifest (if any) is read and checked.
pub(super) struct Resolved {
    pub image: PathBuf,
    /// The image file, opened once (`None` for a folder).
    pub file: Option<std::fs::File>,
    pub manifest: Option<Manifest>,
}

pub(super) fn resolve_image(opts: &RunOptions) -> Result<Resolved, RunError> {
    let t0 = std::time::Instant::now();
    let image_err = |source| RunError::Image {
        path: opts.image.clone(),
        source,
    };
    let image = std::fs::canonicalize(&opts.image).map_err(image_err)?;
    let manifest = if opts.no_manifest {
        None
    } else {
        manifest_for(&opts.image)?
    };
    let file = open_image(&image, &opts.image, opts.writable, manifest.as_ref())?;
    if opts.rootless && file.is_some() {
        return Err(RunError::Invalid(format!(
            "{}: without root only a folder can be a container's root",
            opts.image.display()
        )));
    }
    if opts.verify {
        check_writers(
            &image,
            file.as_ref(),
            manifest.as_ref().map(|_| &opts.image),
        )?;
    }
    if let (Some(file), true) = (&file, opts.verify) {
        // A manifest that records no digest has nothing to check against.
        if let Some(m) = manifest.as_ref().filter(|m| !m.sha256.is_empty()) {
            let state = Path::new(verify::STATE_DIR);
            verify::verify(&opts.image, file, m.size, &m.sha256, state)
                .map_err(RunError::Verify)?;
            log::debug!(
                "verified {} against its manifest ({:.1} ms)",
                opts.image.display(),
                ms(t0)
            );
        }
    }
    Ok(Resolved {
        image,
        file,
        manifest,
    })
}

/// Refuses an image (file or folder) or its manifest (beside `manifest_of`) that other
/// users could change between its check and its use (see [`verify`]).
fn check_writers(
    image: &Path,
    file: Option<&std::fs::File>,
    manifest_of: Option<&PathBuf>,
) -> Result<(), RunError> {
    let meta = match file {
        Some(f) => f.metadata(),
        None => std::fs::metadata(image),
    };
    let meta = meta.map_err(|source| RunError::Image {
        path: image.to_path_buf(),
        source,
    })?;
    verify::check_writers(image, &meta).map_err(RunError::Verify)?;
    if let Some(of) = manifest_of {
        let path = crate::manifest::path_for(of);
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        if let Ok(meta) = std::fs::metadata(&real) {
            verify::check_writers(&real, &meta).map_err(RunError::Verify)?;
        }
    }
    Ok(())
}

/// What `run` can start from: an ext4 image, opened here once (read-write for
/// `--writable`), or a folder (`None`). Anything else is refused with what it is, before
/// any mount is tried (the kernel would only say EINVAL).
fn open_image(
    image: &Path,
    shown: &Path,
    writable: bool,
    m: Option<&Manifest>,
) -> Result<Option<std::fs::File>, RunError> {
    const ACCEPTS: &str = "run takes an ext4 image or an image folder (output.format = \"ext4\" \
        or \"dir\" in the recipe)";
    let image_err = |source| RunError::Image {
        path: shown.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(image).map_err(image_err)?;
    let kind = file.metadata().map_err(image_err)?.file_type();
    if kind.is_dir() {
        return Ok(None);
    }
    let what = if !kind.is_file() {
        "not a regular file".to_string()
    } else {
        let mut head = vec![0u8; 1082];
        // pread: the fd's offset stays at 0 for the digest and the loop device.
        let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0).map_err(image_err)?;
        head.truncate(n);
        // The ext4 superblock starts at byte 1024; its magic is at offset 56.
        if head.get(1080..1082) == Some(&[0x53, 0xef][..]) {
            if !writable {
                return Ok(Some(file));
            }
            // The same inode, for writing: not whatever the path names by now.
            let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
            let rw = std::fs::File::options().read(true).write(true).open(fd);
            return rw.map(Some).map_err(image_err);
        }
        match (m.map(|m| m.format.as_str()), describe(&head)) {
            (Some(f), _) if f != "ext4" => {
                format!("{} (its manifest says so)", crate::format::describe(f))
            }
            (_, Some(d)) => d,
            _ => "not an ext4 filesystem".to_string(),
        }
    };
    Err(RunError::Invalid(format!(
        "{}: {what}; {ACCEPTS}, so extract an archive first: rootpack extract {} DIR",
        shown.display(),
        shown.display()
    )))
}

/// What the start of a file says it is, for the error above.
fn describe(head: &[u8]) -> Option<String> {
    use crate::archive::Compression;
    if let Some(c) = Compression::detect(head).filter(|c| *c != Compression::None) {
        return Some(format!("a {c}-compressed file, not an ext4 filesystem"));
    }
    if head.starts_with(b"070701") || head.starts_with(b"070702") || head.starts_with(b"070707") {
        return Some("a cpio archive, not an ext4 filesystem".into());
    }
    if head.get(257..262) == Some(&b"ustar"[..]) {
        return Some("a tar archive, not an ext4 filesystem".into());
    }
    None
}

/// After a `--writable` run: the image's new digest recorded in its manifest; what went
/// wrong doing so, as a notice (the run itself succeeded).
pub(super) fn record_writes(
    opts: &RunOptions,
    image: &Path,
    m: Option<&Manifest>,
) -> Option<String> {
    let m = m?;
    let path = crate::manifest::path_for(&opts.image);
    let state = Path::new(verify::STATE_DIR);
    let e = verify::record_changes(image, &path, m, state).err()?;
    Some(format!(
        "the image changed, but {} could not be updated: {e}",
        path.display()
    ))
}
