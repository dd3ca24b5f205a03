//! `run` of a container image file or layout (`podman save`, `skopeo copy oci:…`,
//! `rootpack build` with format `oci`/`oci-archive`): its layers unpacked into a private
//! temporary folder with a manifest holding the image's config (Cmd, Entrypoint, Env,
//! WorkingDir, User), run as a folder image, and removed after, as podman runs
//! `oci-archive:` images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rootpack::archive::oci;
use rootpack::fsutil::TempDir;
use rootpack::manifest::{Config, Limits, Manifest, Provenance};

/// The unpacked image; removed when dropped.
pub struct Unpacked {
    _dir: TempDir,
    folder: PathBuf,
}

/// When `image` is a container image: unpacked, and `image` made its folder. `kept`: the
/// run would need it to outlive the run (`-d`, `--writable`), which is refused.
pub fn for_run(image: &mut PathBuf, kept: bool, quiet: bool) -> Result<Option<Unpacked>> {
    if !oci::is_image(image) {
        return Ok(None);
    }
    if kept {
        return crate::usage(format!(
            "{}: a container image is unpacked for one foreground run, so --detach and \
             --writable do not apply; build it into an image (a recipe with [[layer]] oci = \
             \"{}\" and format = \"dir\" or \"ext4\") to keep it",
            image.display(),
            image.display()
        ));
    }
    let unpacked = unpack(image, quiet)?;
    image.clone_from(&unpacked.folder);
    Ok(Some(unpacked))
}

fn unpack(image: &Path, quiet: bool) -> Result<Unpacked> {
    let opened = oci::open(image, &oci::Selector::default())
        .with_context(|| format!("run {}", image.display()))?;
    let dir = TempDir::beside(&std::env::temp_dir().join("rootpack-image"))
        .context("a temporary folder for the image")?;
    let folder = dir.path().join("rootfs");
    if !quiet {
        eprintln!(
            "rootpack: unpacking {} ({} layer(s)) for this run; it is removed after",
            image.display(),
            opened.layers.len()
        );
    }
    let opts = rootpack::ops::ExtractOptions::default();
    rootpack::ops::extract(image, &folder, opts, None)
        .with_context(|| format!("unpacking {}", image.display()))?;
    let manifest = Manifest {
        // `app.oci.tar` -> `app`, as its manifest would be named (also the hostname).
        name: rootpack::manifest::path_for(image)
            .file_stem()
            .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned()),
        image: "rootfs".into(),
        format: "dir".into(),
        size: 0,
        sha256: String::new(),
        modified: false,
        config: Config::from_image(&opened.config),
        limits: Limits::default(),
        build: Provenance {
            recipe: String::new(),
            recipe_sha256: String::new(),
            layers: Vec::new(),
            rootpack_version: env!("CARGO_PKG_VERSION").into(),
            source_date_epoch: None,
            files: 0,
            method: None,
            e2fsprogs: None,
            oci_manifest: Some(opened.digest.to_string()),
            key: None,
            kernel: None,
            modules: Vec::new(),
        },
        outputs: Default::default(),
    };
    manifest
        .write(&dir.path().join("rootfs.json"))
        .context("writing the unpacked image's manifest")?;
    Ok(Unpacked { _dir: dir, folder })
}
