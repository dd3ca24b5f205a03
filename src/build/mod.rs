//! The build pipeline: recipe -> layers -> staging tree -> injected programs, files and
//! mount points -> image writer -> manifest.
//!
//! Everything is made in a work folder and temporary files beside the outputs, named with
//! the `.rootpack-tmp-PID` marker; guards remove them on any error or interrupt, and the
//! next build removes what a killed one (`kill -9`) left, mounts and loop devices included.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod stage;

use crate::archive::ReadError;
use crate::archive::pack::{PackError, PackOptions, pack};
use crate::digest::hex;
use crate::fsutil::{AtomicFile, TempDir};
use crate::image::ext4::{self, Ext4Error, MkfsOptions};
use crate::interrupt::interrupted;
use crate::manifest::{Manifest, Provenance};
use crate::recipe::{Method, OutputFormat, Recipe, Size};
use crate::tree::elf::ElfError;
use crate::tree::extract::ExtractError;
use crate::tree::inject::InjectError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{path}")]
    Output { path: PathBuf, source: io::Error },
    #[error("layer {path}")]
    Layer { path: PathBuf, source: ReadError },
    #[error("layer {path}")]
    LayerDir { path: PathBuf, source: InjectError },
    #[error("binary {path}")]
    Binary { path: PathBuf, source: ElfError },
    #[error("injecting into the tree")]
    Inject(#[from] InjectError),
    #[error("staging tree")]
    Staging(#[from] ExtractError),
    #[error("ext4 image")]
    Image(#[from] Ext4Error),
    #[error("archive image")]
    Pack(PackError),
    #[error("output.method = \"mount\" needs root (loop devices and mounts)")]
    MountNeedsRoot,
    #[error("interrupted")]
    Interrupted,
}

pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// From the environment; wins over the recipe's value.
    pub source_date_epoch: Option<i64>,
    /// Overrides the recipe's output.method.
    pub method: Option<Method>,
    pub progress: bool,
}

pub struct Built {
    pub image: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    /// Leftovers of killed builds removed before this one.
    pub cleaned: Vec<PathBuf>,
    /// What unpacking the layers had to leave out (not running as root).
    pub report: crate::tree::extract::ExtractReport,
    /// Things the user should know that did not stop the build.
    pub warnings: Vec<String>,
}

impl From<PackError> for BuildError {
    fn from(e: PackError) -> Self {
        match e {
            PackError::Interrupted => BuildError::Interrupted,
            e => BuildError::Pack(e),
        }
    }
}

impl BuildError {
    /// A layer archive that could not be read; an interrupt is reported as one.
    fn layer(path: &Path, source: crate::archive::ReadError) -> BuildError {
        match source {
            crate::archive::ReadError::Interrupted => BuildError::Interrupted,
            source => BuildError::Layer {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

fn out_err(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Output {
        path: path.to_path_buf(),
        source,
    }
}

fn check_interrupt() -> Result<(), BuildError> {
    if interrupted() {
        return Err(BuildError::Interrupted);
    }
    Ok(())
}

/// The method `auto` stands for: `populate` when the build must be reproducible (a source
/// date epoch is set) or we are not root, else `mount`, which measured faster.
fn resolve_method(asked: Method, sde: Option<i64>) -> Method {
    match asked {
        Method::Auto if sde.is_some() || !rustix::process::geteuid().is_root() => Method::Populate,
        Method::Auto => Method::Mount,
        other => other,
    }
}

/// Builds the image `recipe` describes into `opts.out_dir`.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
    let sde = opts.source_date_epoch.or(recipe.source_date_epoch);
    let method = resolve_method(opts.method.unwrap_or(recipe.output.method), sde);
    let ext4 = recipe.output.format == OutputFormat::Ext4;
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(out_err(out))?;
    let cleaned = crate::cleanup::remove_stale(out).map_err(out_err(out))?;
    if ext4 && method == Method::Mount && !rustix::process::geteuid().is_root() {
        return Err(BuildError::MountNeedsRoot);
    }
    let work = TempDir::beside(&out.join(&recipe.name)).map_err(out_err(out))?;
    let extension = recipe.output.format.extension();
    let image = out.join(format!("{}.{extension}", recipe.name));
    // The e2fsprogs version mke2fs reports, for the manifest and the time fix-up.
    let mut version = None;
    let mut warnings = Vec::new();

    let (layers, report, usage, sha256) = if ext4 && method == Method::Mount {
        // The mounted image is the staging tree: the data is written once.
        // Sized (or a fixed size checked) before anything is written.
        let closures = stage::closures(recipe)?;
        let usage = stage::estimate(recipe, &closures)?;
        let file = AtomicFile::create(&image).map_err(out_err(&image))?;
        version = ext4::mkfs(
            file.temp_path(),
            &mkfs_options(recipe, &usage, &recipe.sha256, sde)?,
            None,
        )?;
        let mnt = work.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(out_err(&mnt))?;
        let mut filled = None;
        ext4::populate_by_mount(file.temp_path(), &mnt, &mut |target| {
            filled = Some(stage::fill(recipe, &closures, target, sde, opts.progress)?);
            Ok(())
        })?;
        let (layers, report, usage) = filled.ok_or(BuildError::Interrupted)?;
        let sha256 = commit_hashing(file, &image)?;
        (layers, report, usage, sha256)
    } else {
        let staging = work.path().join("staging");
        std::fs::create_dir(&staging).map_err(out_err(&staging))?;
        let closures = stage::closures(recipe)?;
        let (layers, report, usage) = stage::fill(recipe, &closures, &staging, sde, opts.progress)?;
        let sha256 = match recipe.output.format {
            OutputFormat::Ext4 => {
                let seed = layers
                    .iter()
                    .filter_map(|l| l.sha256.clone())
                    .fold(recipe.sha256.clone(), |a, b| a + &b);
                let file = AtomicFile::create(&image).map_err(out_err(&image))?;
                version = ext4::mkfs(
                    file.temp_path(),
                    &mkfs_options(recipe, &usage, &seed, sde)?,
                    Some(&staging),
                )?;
                // Unknown versions get the fix-up too: it is harmless where not needed.
                if let Some(t) = sde
                    && version.is_none_or(|v| v < (1, 47, 1))
                {
                    let skipped = ext4::fix_times(file.temp_path(), &staging, work.path(), t)?;
                    if skipped > 0 {
                        warnings.push(format!(
                            "{skipped} name(s) with a newline keep their source atime/ctime: \
                             the image is not byte-reproducible"
                        ));
                    }
                }
                check_interrupt()?;
                commit_hashing(file, &image)?
            }
            OutputFormat::Archive(format, compression) => {
                let mut file = AtomicFile::create(&image).map_err(out_err(&image))?;
                let pack_opts = PackOptions {
                    clamp_mtime: sde,
                    ..PackOptions::new(format, compression)
                };
                let bar = crate::progress::bytes_bar(0, !opts.progress, "packing");
                pack(
                    &staging,
                    file.file(),
                    &pack_opts,
                    bar.as_ref(),
                    &interrupted,
                )?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                commit_hashing(file, &image)?
            }
            OutputFormat::Dir => {
                // Swap in one step, then drop the old tree: a failure keeps the old one.
                if std::fs::symlink_metadata(&image).is_ok() {
                    let old = work.path().join("previous");
                    std::fs::rename(&image, &old).map_err(out_err(&image))?;
                    if let Err(e) = std::fs::rename(&staging, &image) {
                        let _ = std::fs::rename(&old, &image);
                        return Err(out_err(&image)(e));
                    }
                } else {
                    std::fs::rename(&staging, &image).map_err(out_err(&image))?;
                }
                String::new()
            }
        };
        (layers, report, usage, sha256)
    };
    drop(work);

    let size = match recipe.output.format {
        OutputFormat::Dir => usage.blocks * 4096,
        _ => std::fs::metadata(&image).map_err(out_err(&image))?.len(),
    };
    let manifest = Manifest {
        name: recipe.name.clone(),
        image: image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format: extension,
        size,
        sha256,
        modified: false,
        config: recipe.config.clone(),
        limits: recipe.limits.clone(),
        build: Provenance {
            recipe: recipe.path.display().to_string(),
            recipe_sha256: recipe.sha256.clone(),
            layers,
            rootpack_version: env!("CARGO_PKG_VERSION").to_string(),
            source_date_epoch: sde,
            files: usage.files.saturating_sub(1),
            method: ext4.then(|| method.name().to_string()),
            e2fsprogs: version.map(|v| format!("{}.{}.{}", v.0, v.1, v.2)),
        },
    };
    let manifest_path = crate::manifest::path_for(&image);
    manifest
        .write(&manifest_path)
        .map_err(out_err(&manifest_path))?;
    Ok(Built {
        image,
        manifest_path,
        manifest,
        cleaned,
        report,
        warnings,
    })
}

fn mkfs_options(
    recipe: &Recipe,
    usage: &ext4::Usage,
    seed: &str,
    sde: Option<i64>,
) -> Result<MkfsOptions, BuildError> {
    let (auto, inodes) = ext4::auto_size(usage);
    let size = match recipe.output.size {
        Size::Auto => auto,
        Size::Bytes(b) if b < auto => {
            return Err(ext4::Ext4Error::TooSmall {
                needed: auto,
                size: b,
            }
            .into());
        }
        Size::Bytes(b) => b,
    };
    Ok(MkfsOptions {
        size,
        journal_mib: ext4::journal_mib(usage.blocks * 4096),
        // A fixed size gets one inode per 16 KiB (mke2fs's default), or more if needed.
        inodes: if recipe.output.size == Size::Auto {
            inodes
        } else {
            (size / 16384).max(inodes)
        },
        label: recipe
            .output
            .label
            .clone()
            .unwrap_or_else(|| recipe.name.chars().take(16).collect()),
        uuid: derived_uuid("uuid", seed),
        hash_seed: derived_uuid("hash_seed", seed),
        source_date_epoch: sde,
    })
}

/// Renames the finished image into place after fsync, hashing it on a second thread
/// meanwhile (the hash reads the page cache while the disk writes).
fn commit_hashing(file: AtomicFile, image: &Path) -> Result<String, BuildError> {
    let reader = File::open(file.temp_path()).map_err(out_err(image))?;
    let (committed, digest) = std::thread::scope(|scope| {
        // If no thread can be had, the closure runs here, after the commit.
        let hashing = std::thread::Builder::new()
            .spawn_scoped(scope, || crate::digest::digest_reader(&reader));
        let committed = file.commit();
        let digest = match hashing {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("hashing thread panicked"))),
            Err(_) => crate::digest::digest_reader(&reader),
        };
        (committed, digest)
    });
    committed.map_err(out_err(image))?;
    Ok(digest.map_err(out_err(image))?.1)
}

/// A UUID-formatted value derived from the build inputs, so two builds of the same recipe
/// on the same inputs get the same filesystem UUID and directory hash seed.
fn derived_uuid(purpose: &str, input: &str) -> String {
    let d = Sha256::digest(format!("rootpack {purpose} {input}").as_bytes());
    let h = hex(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
