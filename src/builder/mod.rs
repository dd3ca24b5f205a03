//! The build pipeline: recipe -> layers -> staging tree -> injected programs, files and
//! mount points -> image writer -> manifest.
//!
//! Everything is made in a work folder and temporary files beside the outputs, named with
//! the `.rootpack-tmp-PID` marker; guards remove them on any error or interrupt, and the
//! next build removes what a killed one (`kill -9`) left, mounts and loop devices included.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod cached;
mod delta;
mod injected;
mod lock;
mod output;
mod package_files;
pub mod pull;
mod stage;
mod step_tree;
pub mod steps;

use lock::OutputLock;
use stage::Filled;

use crate::archive::ReadError;
use crate::archive::pack::PackError;
use crate::fsutil::{AtomicFile, TempDir};
use crate::image::ext4::{self, Ext4Error, Usage};
use crate::image::ext4_inodes;
use crate::interrupt::interrupted;
use crate::manifest::{LayerRecord, Manifest, Provenance};
use crate::recipe::{Layer, Method, OutputFormat, Recipe};
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
    #[error("layer.oci = {image}: {message}")]
    Pull { image: String, message: String },
    #[error("{}:{line}: [modules]", recipe.display())]
    Modules {
        recipe: PathBuf,
        line: usize,
        source: crate::kernel::ModuleError,
    },
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
    /// The build cache's folder; `None`: no cache, and the image is made even when it is
    /// up to date.
    pub cache: Option<PathBuf>,
    /// Make the image even when its manifest says it is up to date.
    pub force: bool,
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
    /// What the cache gave (`cached: layers, steps 1–2; running step 3`).
    pub notes: Vec<String>,
    /// The image was already there, made from the same inputs: nothing was written.
    pub up_to_date: bool,
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

/// One build under way: what every stage and writer reads.
struct Job<'a> {
    recipe: &'a Recipe,
    opts: &'a BuildOptions,
    sde: Option<i64>,
    work: &'a Path,
    steps: &'a steps::Steps<'a>,
    image: &'a Path,
    started: Instant,
    cache: Option<&'a cached::Cached>,
    inputs: &'a injected::Inputs,
}

/// What a writer made besides the image: its digest (empty for a folder), the file still
/// to be renamed with its manifest, and what the manifest records of how it was made.
#[derive(Default)]
struct Written {
    sha256: String,
    pending: Option<AtomicFile>,
    /// ext4: the method used and the e2fsprogs version.
    method: Option<Method>,
    e2fsprogs: Option<ext4::Version>,
    /// OCI: the image manifest's digest.
    oci_manifest: Option<String>,
    warnings: Vec<String>,
}

/// Builds the image `recipe` describes into `opts.out_dir`.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
    let started = Instant::now();
    let sde = opts.source_date_epoch.or(recipe.source_date_epoch);
    let asked = opts.method.unwrap_or(recipe.output.method);
    let method = resolve_method(asked, sde, !recipe.steps.is_empty());
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(out_err(out))?;
    let _lock = OutputLock::take(out, &recipe.name)?;
    let cleaned = crate::cleanup::remove_stale(out).map_err(out_err(out))?;
    let format = recipe.output.format;
    if format == OutputFormat::Ext4
        && method == Method::Mount
        && !rustix::process::geteuid().is_root()
    {
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
    // A folder image is OUT/NAME, run like `systemd-nspawn -D OUT/NAME`.
    let image = match format {
        OutputFormat::Dir => out.join(&recipe.name),
        _ => out.join(format!("{}.{}", recipe.name, format.extension())),
    };
    log::info!(
        "building {} as {} ({}, method {})",
        recipe.path.display(),
        image.display(),
        format.name(),
        method.name()
    );
    let inputs = injected::inputs(recipe, work.path())?;
    let cache = open_cache(recipe, opts, format, method, sde, &inputs)?;
    if let Some((_, key)) = &cache
        && let Some(built) = up_to_date(recipe, &image, key, opts.force)
    {
        return Ok(Built { cleaned, ..built });
    }
    let job = Job {
        recipe,
        opts,
        sde,
        work: work.path(),
        steps: &steps,
        image: &image,
        started,
        cache: cache.as_ref().map(|(c, _)| c),
        inputs: &inputs,
    };
    let (filled, written) = write_image(&job, asked, method)?;
    drop(steps);
    drop(work);
    log::debug!("image written and hashed ({:.2}s)", secs(started));
    let mut manifest = manifest(recipe, &image, &filled, &written, sde)?;
    manifest.build.key = cache.as_ref().map(|(_, k)| k.clone());
    let manifest_path = commit(&image, &manifest, written.pending)?;
    let mut notes = match cache {
        Some((c, _)) => c.finish(),
        None => Vec::new(),
    };
    notes.extend(removed_note(recipe, &filled.removed));
    Ok(Built {
        image,
        manifest_path,
        manifest,
        cleaned,
        report: filled.report,
        warnings: written.warnings,
        notes,
        up_to_date: false,
    })
}

/// What the build says of the package managers' files removed after the steps.
fn removed_note(recipe: &Recipe, removed: &[String]) -> Option<String> {
    let what = match recipe.output.package_files {
        crate::recipe::PackageFiles::CleanAll => {
            "that depend on the clock or the host, downloaded packages and package lists"
        }
        _ => "that depend on the clock or the host",
    };
    let n = removed.len();
    (n > 0).then(|| {
        format!(
            "removed {n} package manager file{} {what} (-v lists them; keep them: [output] package_files = \"keep\")",
            if n == 1 { "" } else { "s" }
        )
    })
}

/// Fills the tree and writes the image in the recipe's format.
fn write_image(
    job: &Job<'_>,
    asked: Method,
    method: Method,
) -> Result<(Filled, Written), BuildError> {
    let format = job.recipe.output.format;
    if format == OutputFormat::Ext4 {
        return output::ext4::write(job, asked, method);
    }
    let (tree, filled) = stage_tree(job, None)?;
    let written = match format {
        OutputFormat::Archive(f, c) => {
            output::archive::write(job, &tree, f, c, filled.recorded.as_ref())?
        }
        OutputFormat::Dir => output::folder::write(job, &tree)?,
        _ => output::oci::write(job, &tree, &filled)?,
    };
    Ok((filled, written))
}

/// The build's cache and its key, or none (`--no-cache`; a cache that cannot be opened
/// is said once and the build goes on without it).
fn open_cache(
    recipe: &Recipe,
    opts: &BuildOptions,
    format: OutputFormat,
    method: Method,
    sde: Option<i64>,
    inputs: &injected::Inputs,
) -> Result<Option<(cached::Cached, String)>, BuildError> {
    let Some(dir) = &opts.cache else {
        return Ok(None);
    };
    let cache = match crate::cache::Cache::open(dir) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("cache {}: {e}; building without it", dir.display());
            return Ok(None);
        }
    };
    let tree_for = stage::tree_for(format);
    let mut digests = crate::cache::key::Digests::load(cache.dir());
    let keys = cached::keys(recipe, inputs, sde, stage::records(tree_for), &mut digests)?;
    digests.save();
    let mut k = crate::cache::key::Key::new("output", Some(&keys.last));
    k.text("recipe", &recipe.sha256)
        .text("format", &format.name())
        .text("method", method.name())
        .text("sde", &format!("{sde:?}"))
        .text("version", env!("CARGO_PKG_VERSION"));
    Ok(Some((cached::Cached::new(cache, keys), k.finish())))
}

/// The image as its manifest describes it, when that says it was made with `key` and the
/// image is still there as it was written.
fn up_to_date(recipe: &Recipe, image: &Path, key: &str, force: bool) -> Option<Built> {
    let name = image.file_name()?.to_string_lossy().into_owned();
    let manifest_path = crate::manifest::path_for(image);
    let manifest = crate::manifest::read(&manifest_path).ok()?.for_image(&name);
    let meta = std::fs::symlink_metadata(image).ok()?;
    let same = manifest.name == recipe.name
        && manifest.build.key.as_deref() == Some(key)
        && !manifest.modified
        && (meta.is_dir() || meta.len() == manifest.size);
    (same && !force).then(|| Built {
        image: image.to_path_buf(),
        manifest_path,
        manifest,
        cleaned: Vec::new(),
        report: Default::default(),
        warnings: Vec::new(),
        notes: Vec::new(),
        up_to_date: true,
    })
}

/// The tree an image is written from: the recipe's only folder when nothing is added to
/// it (and the output is not that folder), else a staging tree filled in the work folder.
/// `planned` is an estimate already made.
fn stage_tree(job: &Job<'_>, planned: Option<Usage>) -> Result<(PathBuf, Filled), BuildError> {
    let recipe = job.recipe;
    let format = recipe.output.format;
    if let Some(dir) = unchanged_dir_layer(recipe).filter(|_| format != OutputFormat::Dir) {
        let usage = match planned {
            Some(usage) => usage,
            None => ext4::measure(dir).map_err(out_err(dir))?,
        };
        if format == OutputFormat::Ext4
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
        let filled = Filled {
            layers,
            image_config: Default::default(),
            report: Default::default(),
            usage,
            recorded: None,
            base: None,
            removed: Vec::new(),
        };
        return Ok((dir.to_path_buf(), filled));
    }
    let staging = job.work.join("staging");
    std::fs::create_dir(&staging).map_err(out_err(&staging))?;
    let filled = stage::fill(
        recipe,
        job.inputs,
        &staging,
        job.sde,
        job.opts.progress,
        stage::tree_for(format),
        job.steps,
        job.cache,
    )?;
    log::debug!(
        "staging tree: {} files ({:.2}s)",
        filled.usage.files,
        secs(job.started)
    );
    Ok((staging, filled))
}

/// The manifest of a written image.
fn manifest(
    recipe: &Recipe,
    image: &Path,
    filled: &Filled,
    written: &Written,
    sde: Option<i64>,
) -> Result<Manifest, BuildError> {
    let size = match recipe.output.format {
        OutputFormat::Dir => filled.usage.blocks * 4096,
        OutputFormat::Oci => crate::fsutil::tree_size(image).map_err(out_err(image))?,
        _ => match &written.pending {
            Some(file) => std::fs::metadata(file.temp_path()),
            None => std::fs::metadata(image),
        }
        .map_err(out_err(image))?
        .len(),
    };
    Ok(Manifest {
        name: recipe.name.clone(),
        image: image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format: recipe.output.format.name(),
        size,
        sha256: written.sha256.clone(),
        modified: false,
        // The recipe's config over its container images' config, key by key.
        config: recipe.config.over(&filled.image_config),
        limits: recipe.limits.clone(),
        build: Provenance {
            recipe: recipe
                .path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            recipe_sha256: recipe.sha256.clone(),
            layers: relative_to_recipe(&filled.layers, &recipe.path),
            rootpack_version: env!("CARGO_PKG_VERSION").to_string(),
            source_date_epoch: sde,
            files: filled.usage.files.saturating_sub(1),
            method: written.method.map(|m| m.name().to_string()),
            e2fsprogs: written
                .e2fsprogs
                .map(|v| format!("{}.{}.{}", v.0, v.1, v.2)),
            oci_manifest: written.oci_manifest.clone(),
            key: None,
            kernel: recipe.modules.as_ref().map(|m| m.version.clone()),
            modules: recipe
                .modules
                .iter()
                .flat_map(|m| m.names.clone())
                .collect(),
        },
        outputs: Default::default(),
    })
}

/// The layers' paths as the recipe names them, relative to its folder (a host path
/// outside it stays absolute): two checkouts of one commit give the same manifest.
fn relative_to_recipe(layers: &[LayerRecord], recipe: &Path) -> Vec<LayerRecord> {
    let base = recipe.parent().and_then(|d| std::fs::canonicalize(d).ok());
    layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            let full = std::fs::canonicalize(&l.path).unwrap_or_else(|_| PathBuf::from(&l.path));
            if let Some(rel) = base.as_ref().and_then(|b| full.strip_prefix(b).ok()) {
                l.path = match rel.as_os_str().is_empty() {
                    true => ".".into(),
                    false => rel.display().to_string(),
                };
            }
            l
        })
        .collect()
}

/// Writes the manifest beside the image and renames both into place together (the image
/// is already in place for folders and OCI layouts). Returns the manifest's path.
fn commit(
    image: &Path,
    manifest: &Manifest,
    pending: Option<AtomicFile>,
) -> Result<PathBuf, BuildError> {
    let manifest_path = crate::manifest::path_for(image);
    // The recipe's other images in the folder keep their entries (and digests).
    let mut manifest = manifest.clone();
    if let Ok(previous) = crate::manifest::read(&manifest_path)
        && previous.name == manifest.name
        && let Some(dir) = image.parent()
    {
        manifest.keep_other_outputs(previous, dir);
    }
    let mut manifest_file = AtomicFile::create(&manifest_path).map_err(out_err(&manifest_path))?;
    io::Write::write_all(manifest_file.file(), manifest.to_json().as_bytes())
        .map_err(out_err(&manifest_path))?;
    match pending {
        Some(image_file) => crate::fsutil::commit_together(image_file, manifest_file),
        None => manifest_file.commit(),
    }
    .map_err(out_err(image))?;
    Ok(manifest_path)
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

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
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
