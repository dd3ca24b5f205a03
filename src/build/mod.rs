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
pub mod steps;

use stage::TreeFor;

use crate::archive::ReadError;
use crate::archive::oci;
use crate::archive::pack::{PackError, PackOptions, pack};
use crate::digest::hex;
use crate::fsutil::{AtomicFile, TempDir};
use crate::image::ext4::{self, Ext4Error, MkfsOptions};
use crate::image::ext4_inodes::{self, Fixes};
use crate::interrupt::interrupted;
use crate::manifest::{LayerRecord, Manifest, Provenance};
use crate::recipe::{Layer, Method, OutputFormat, Recipe, Size};
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
    #[error("ext4 image")]
    Inodes(#[from] ext4_inodes::InodeError),
    #[error("archive image")]
    Pack(#[source] PackError),
    #[error("output.method = \"mount\" needs root (loop devices and mounts)")]
    MountNeedsRoot,
    #[error(
        "{path}: cannot be read without root, and an image without it would not be the one root builds"
    )]
    Unreadable { path: PathBuf },
    #[error(transparent)]
    Oci(#[from] crate::archive::oci::OciError),
    #[error("OCI image")]
    OciWrite(#[from] crate::archive::oci::write::WriteError),
    #[error("layer {path}: image layer {index} ({digest})")]
    OciLayer {
        path: PathBuf,
        index: usize,
        digest: String,
        source: ReadError,
    },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Step(#[from] steps::StepError),
}

pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// From the environment; wins over the recipe's value.
    pub source_date_epoch: Option<i64>,
    /// Overrides the recipe's output.method.
    pub method: Option<Method>,
    pub progress: bool,
    /// Where the lines `[[run]]` steps print go; `None`: nowhere (they are still in the
    /// error of a step that fails).
    pub step_output: Option<steps::StepSink>,
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
    /// A container image's layer `i` that could not be read or applied.
    fn oci_layer(image: &crate::archive::oci::Image, i: usize, source: ReadError) -> BuildError {
        if let ReadError::Interrupted = source {
            return BuildError::Interrupted;
        }
        let l = &image.layers[i];
        BuildError::OciLayer {
            path: image.path.clone(),
            index: i + 1,
            digest: l.digest.as_ref().map_or(&l.diff_id, |d| &d.0).to_string(),
            source,
        }
    }

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

/// The method `auto` stands for, before the tree's shape is known: `populate` when the
/// build must be reproducible (a source date epoch is set) or we are not root, else
/// `mount`, which measured faster, unless the tree turns out to be one of many small files
/// (see [`ext4::Usage::small_files`]).
fn resolve_method(asked: Method, sde: Option<i64>, steps: bool) -> Method {
    match asked {
        // Steps change the tree in ways no estimate foresees: the image is sized after.
        Method::Auto if sde.is_some() || steps || !rustix::process::geteuid().is_root() => {
            Method::Populate
        }
        Method::Auto => Method::Mount,
        other => other,
    }
}

/// Builds the image `recipe` describes into `opts.out_dir`.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
    let t = std::time::Instant::now();
    let sde = opts.source_date_epoch.or(recipe.source_date_epoch);
    let asked = opts.method.unwrap_or(recipe.output.method);
    let mut method = resolve_method(asked, sde, !recipe.steps.is_empty());
    let ext4 = recipe.output.format == OutputFormat::Ext4;
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(out_err(out))?;
    let _lock = OutputLock::take(out, &recipe.name)?;
    let cleaned = crate::cleanup::remove_stale(out).map_err(out_err(out))?;
    if ext4 && method == Method::Mount && !rustix::process::geteuid().is_root() {
        return Err(BuildError::MountNeedsRoot);
    }
    let work = TempDir::beside(&out.join(&recipe.name)).map_err(out_err(out))?;
    let steps = steps::Steps {
        recipe,
        sde,
        work: work.path(),
        sink: opts.step_output.clone(),
        progress: opts.progress,
    };
    let extension = recipe.output.format.extension();
    // A folder image is OUT/NAME, run like `systemd-nspawn -D OUT/NAME`.
    let image = match recipe.output.format {
        OutputFormat::Dir => out.join(&recipe.name),
        _ => out.join(format!("{}.{extension}", recipe.name)),
    };
    log::info!(
        "building {} as {} ({}, method {})",
        recipe.path.display(),
        image.display(),
        recipe.output.format.name(),
        method.name()
    );
    // The e2fsprogs version mke2fs reports, for the manifest and the time fix-up.
    let mut version = None;
    let mut warnings = Vec::new();
    // An OCI output: its image manifest's digest.
    let mut oci_manifest = None;

    // For the mount method, the image is sized (or a fixed size checked) before anything
    // is written; the same estimate tells `auto` the tree's shape.
    let mut planned = None;
    if ext4 && method == Method::Mount {
        let closures = stage::closures(recipe)?;
        let usage = stage::estimate(recipe, &closures)?;
        if asked == Method::Auto && usage.small_files() {
            method = Method::Populate;
        }
        planned = Some((closures, usage));
    }

    let (layers, image_config, report, usage, (sha256, pending)) =
        if let Some((closures, usage)) = planned.take_if(|_| method == Method::Mount) {
            // The mounted image is the staging tree: the data is written once.
            let file = AtomicFile::create(&image).map_err(out_err(&image))?;
            version = ext4::mkfs(
                file.temp_path(),
                &mkfs_options(recipe, &usage, &recipe.sha256, sde)?,
                None,
            )?;
            let mnt = work.path().join("mnt");
            std::fs::create_dir(&mnt).map_err(out_err(&mnt))?;
            let mut filled = None;
            let mut step_failed = None;
            let populated = ext4::populate_by_mount(file.temp_path(), &mnt, &mut |target| {
                let f = stage::fill(
                    recipe,
                    &closures,
                    target,
                    sde,
                    opts.progress,
                    TreeFor::Itself,
                    &steps,
                );
                match f {
                    Ok(f) => filled = Some(f),
                    // Said as it is, not as a failure to fill the image.
                    Err(BuildError::Step(e)) => {
                        step_failed = Some(e);
                        return Err("a run step failed".into());
                    }
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            });
            if let Some(e) = step_failed {
                return Err(BuildError::Step(e));
            }
            populated?;
            let filled = filled.ok_or(BuildError::Interrupted)?;
            log::debug!(
                "image filled: {} files ({:.2}s)",
                filled.usage.files,
                secs(t)
            );
            let sha256 = sync_hashing(file, &image)?;
            (
                filled.layers,
                filled.image_config,
                filled.report,
                filled.usage,
                sha256,
            )
        } else {
            // A recipe that only names a folder is written from the folder itself; anything
            // else is put together in a staging tree first.
            let fast =
                unchanged_dir_layer(recipe).filter(|_| recipe.output.format != OutputFormat::Dir);
            let (tree, filled) = match fast {
                Some(dir) => {
                    let usage = match planned {
                        Some((_, usage)) => usage,
                        None => ext4::measure(dir).map_err(out_err(dir))?,
                    };
                    if ext4
                        && !rustix::process::geteuid().is_root()
                        && let Some(path) = ext4::first_unreadable(dir).map_err(out_err(dir))?
                    {
                        return Err(BuildError::Unreadable { path });
                    }
                    let layers = vec![LayerRecord {
                        kind: "dir".into(),
                        path: dir.display().to_string(),
                        sha256: None,
                        image: None,
                        layers: Vec::new(),
                    }];
                    let filled = stage::Filled {
                        layers,
                        image_config: Default::default(),
                        report: Default::default(),
                        usage,
                        recorded: None,
                        base: None,
                    };
                    (dir.to_path_buf(), filled)
                }
                None => {
                    let staging = work.path().join("staging");
                    std::fs::create_dir(&staging).map_err(out_err(&staging))?;
                    let closures = match planned {
                        Some((closures, _)) => closures,
                        None => stage::closures(recipe)?,
                    };
                    let tree_for = match recipe.output.format {
                        OutputFormat::Ext4 => TreeFor::Populate,
                        OutputFormat::Archive(..) => TreeFor::Archive,
                        OutputFormat::Oci | OutputFormat::OciArchive => TreeFor::Image,
                        OutputFormat::Dir => TreeFor::Itself,
                    };
                    let filled = stage::fill(
                        recipe,
                        &closures,
                        &staging,
                        sde,
                        opts.progress,
                        tree_for,
                        &steps,
                    )?;
                    log::debug!(
                        "staging tree: {} files ({:.2}s)",
                        filled.usage.files,
                        secs(t)
                    );
                    (staging, filled)
                }
            };
            let sha256 = match recipe.output.format {
                OutputFormat::Ext4 => {
                    let seed = filled
                        .layers
                        .iter()
                        .filter_map(|l| l.sha256.clone())
                        .fold(recipe.sha256.clone(), |a, b| a + &b);
                    let file = AtomicFile::create(&image).map_err(out_err(&image))?;
                    let fixes = Fixes {
                        time: sde,
                        recorded: filled.recorded.as_ref(),
                    };
                    version = populate(
                        file.temp_path(),
                        recipe,
                        &filled.usage,
                        &seed,
                        &tree,
                        &fixes,
                        sde,
                    )?;
                    check_interrupt()?;
                    sync_hashing(file, &image)?
                }
                OutputFormat::Archive(format, compression) => {
                    let mut file = AtomicFile::create(&image).map_err(out_err(&image))?;
                    let pack_opts = PackOptions {
                        clamp_mtime: sde,
                        ..PackOptions::new(format, compression)
                    };
                    let bar = crate::progress::bytes_bar(0, !opts.progress, "packing");
                    pack(&tree, file.file(), &pack_opts, bar.as_ref(), &interrupted)?;
                    if let Some(bar) = bar {
                        bar.finish_and_clear();
                    }
                    sync_hashing(file, &image)?
                }
                OutputFormat::Dir => {
                    swap_into_place(&tree, &image, work.path())?;
                    (String::new(), None)
                }
                OutputFormat::Oci | OutputFormat::OciArchive => {
                    let layout = work.path().join("layout");
                    let config = recipe.config.over(&filled.image_config);
                    // The base image's layers as they are, when nothing replaced them.
                    let mut base = None;
                    let mut layer_tree = tree.clone();
                    if let Some(b) = &filled.base {
                        let delta = work.path().join("delta");
                        match stage::delta_over_base(&tree, b, &delta).map_err(out_err(&tree))? {
                        Ok(()) => {
                            let sel = oci::Selector {
                                reference: b.reference.clone(),
                                platform: b.platform.clone(),
                            };
                            base = Some(oci::open(&b.path, &sel)?);
                            layer_tree = delta;
                        }
                        Err(why) => warnings.push(format!(
                            "wrote one flattened layer, not the base image's layers plus one: {why}"
                        )),
                    }
                    }
                    let written = oci::write::write_layout(
                        &layer_tree,
                        base.as_ref(),
                        &layout,
                        &image_options(recipe, &config, sde),
                        &interrupted,
                    )?;
                    oci_manifest = Some(written.manifest.to_string());
                    check_interrupt()?;
                    if recipe.output.format == OutputFormat::Oci {
                        swap_into_place(&layout, &image, work.path())?;
                        (String::new(), None)
                    } else {
                        let mut file = AtomicFile::create(&image).map_err(out_err(&image))?;
                        oci::write::archive_layout(&layout, file.file(), sde.unwrap_or(0))?;
                        sync_hashing(file, &image)?
                    }
                }
            };
            (
                filled.layers,
                filled.image_config,
                filled.report,
                filled.usage,
                sha256,
            )
        };
    drop(steps);
    drop(work);
    log::debug!("image written and hashed ({:.2}s)", secs(t));

    let size = match recipe.output.format {
        OutputFormat::Dir => usage.blocks * 4096,
        OutputFormat::Oci => crate::fsutil::tree_size(&image).map_err(out_err(&image))?,
        _ => match &pending {
            Some(file) => std::fs::metadata(file.temp_path()),
            None => std::fs::metadata(&image),
        }
        .map_err(out_err(&image))?
        .len(),
    };
    let manifest = Manifest {
        name: recipe.name.clone(),
        image: image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format: recipe.output.format.name(),
        size,
        sha256,
        modified: false,
        // The recipe's config over its container images' config, key by key.
        config: recipe.config.over(&image_config),
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
            oci_manifest,
        },
    };
    let manifest_path = crate::manifest::path_for(&image);
    let mut manifest_file = AtomicFile::create(&manifest_path).map_err(out_err(&manifest_path))?;
    io::Write::write_all(manifest_file.file(), manifest.to_json().as_bytes())
        .map_err(out_err(&manifest_path))?;
    match pending {
        Some(image_file) => crate::fsutil::commit_together(image_file, manifest_file),
        None => manifest_file.commit(),
    }
    .map_err(out_err(&image))?;
    Ok(Built {
        image,
        manifest_path,
        manifest,
        cleaned,
        report,
        warnings,
    })
}

/// Puts the folder `new` at `target` in one rename, then drops the old one: a failure
/// keeps the old one.
fn swap_into_place(new: &Path, target: &Path, work: &Path) -> Result<(), BuildError> {
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

/// What an OCI output carries besides the tree: tag, config, time, compression.
fn image_options(
    recipe: &Recipe,
    config: &crate::recipe::Config,
    sde: Option<i64>,
) -> oci::write::ImageOptions {
    let env: Vec<String> = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    oci::write::ImageOptions {
        tag: recipe
            .output
            .tag
            .clone()
            .unwrap_or_else(|| format!("{}:latest", recipe.name.to_ascii_lowercase())),
        config: oci::spec::ContainerConfig {
            user: config.user.clone(),
            env: (!env.is_empty()).then_some(env),
            entrypoint: some(&config.entrypoint),
            cmd: some(&config.cmd),
            working_dir: config.workdir.clone(),
            labels: (!config.labels.is_empty()).then(|| config.labels.clone()),
        },
        created: sde.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        }),
        compression: if recipe.output.layer_zstd {
            oci::Compression::Zstd
        } else {
            oci::Compression::Gzip
        },
        history: format!("rootpack build {}", recipe.name),
        clamp_mtime: sde,
    }
}

/// `OUT/.NAME.lock`, locked (`flock`) for the whole build: builds of one output wait for
/// each other, so the image and the manifest left are those of one build. The file is
/// removed when the build ends, still locked; a waiter that then holds a removed file
/// tries again on the one now there.
struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    fn take(out: &Path, name: &str) -> Result<OutputLock, BuildError> {
        use rustix::fs::FlockOperation;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = out.join(format!(".{name}.lock"));
        let mut said = false;
        loop {
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(out_err(&path))?;
            // Polled rather than blocking, so Ctrl-C still ends a waiting build.
            while let Err(e) = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                if e != rustix::io::Errno::WOULDBLOCK && e != rustix::io::Errno::INTR {
                    return Err(out_err(&path)(e.into()));
                }
                if !said {
                    log::warn!(
                        "waiting for another build of {name} in {} to finish",
                        out.display()
                    );
                    said = true;
                }
                check_interrupt()?;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let held = file.metadata().map_err(out_err(&path))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(OutputLock { path, _file: file });
                }
                _ => continue,
            }
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Before the file is closed, so no other build holds the name meanwhile.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The recipe's only layer, a folder, when nothing else goes into the tree: an image can
/// then be made from the folder itself.
fn unchanged_dir_layer(recipe: &Recipe) -> Option<&Path> {
    let nothing_added = recipe.binaries.is_empty()
        && recipe.files.is_empty()
        && recipe.dirs.is_empty()
        && recipe.symlinks.is_empty()
        && recipe.mountpoints.is_empty()
        && recipe.steps.is_empty();
    match recipe.layers.as_slice() {
        [Layer::Dir(dir)] if nothing_added => Some(dir),
        _ => None,
    }
}

/// `mke2fs -d tree` into `image`, then the inode pass for what the tree could not hold.
/// Returns the e2fsprogs version.
fn populate(
    image: &Path,
    recipe: &Recipe,
    usage: &ext4::Usage,
    seed: &str,
    tree: &Path,
    fixes: &Fixes<'_>,
    sde: Option<i64>,
) -> Result<Option<ext4::Version>, BuildError> {
    let version = ext4::mkfs(image, &mkfs_options(recipe, usage, seed, sde)?, Some(tree))?;
    check_interrupt()?;
    if fixes.time.is_some() || fixes.recorded.is_some() {
        ext4_inodes::fix(image, fixes)?;
    }
    Ok(version)
}

fn secs(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64()
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
        block: usage.block_size(),
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

/// Syncs the finished image to disk, hashing it on a second thread meanwhile (the hash
/// reads the page cache while the disk writes); it is renamed into place later, with its
/// manifest.
fn sync_hashing(
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

#[cfg(test)]
mod tests {
    #[test]
    fn every_error_keeps_its_cause() {
        use std::error::Error;
        let pack = super::BuildError::from(crate::archive::pack::PackError::Write(
            std::io::Error::other("output is too small"),
        ));
        let cause = pack.source().map(|e| e.to_string()).unwrap_or_default();
        assert!(cause.contains("output is too small"), "{cause:?}");
    }
}
