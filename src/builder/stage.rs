//! Filling a tree from a recipe: layers in order, then injected programs, folders, mount
//! points, files and symlinks; and the size estimate for an image filled in place.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use super::cached::{self, Cached};
use super::delta::{self, Base};
use super::injected::{Inputs, inject_after_steps, inject_all};
use super::{BuildError, check_interrupt, out_err};
use crate::archive::oci;
use crate::archive::{Entry, EntryData, Kind, LinkKey, VisitError, Visitor, read_archive};
use crate::digest::digest_file;
use crate::image::ext4::{self, Usage};
use crate::interrupt::interrupted;
use crate::manifest::LayerRecord;
use crate::recipe::{Config, FileSource, Layer, Recipe};
use crate::tree::extract::{ExtractReport, Extractor};
use crate::tree::inject;
use crate::tree::layer::LayerApplier;
use crate::tree::recorded::RecordedTree;
use crate::tree::safe_path::Root;

/// What filling a tree gave.
pub(super) struct Filled {
    pub layers: Vec<LayerRecord>,
    /// The container images' config (Env, Entrypoint, …), for the recipe's to go over.
    pub image_config: Config,
    pub report: ExtractReport,
    pub usage: Usage,
    /// For an image tree filled without root: what each entry should be in the image.
    pub recorded: Option<RecordedTree>,
    /// An OCI output whose recipe starts with a container image.
    pub base: Option<Base>,
    /// What package managers left that was removed after the steps (`/var/log/dpkg.log`).
    pub removed: Vec<String>,
}

/// How the tree will be used.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TreeFor {
    /// As it is (a folder output, or an image filled in place): times clamped here.
    Itself,
    /// By `mke2fs -d`: metadata the tree cannot hold is recorded, and times are fixed in
    /// the image afterwards.
    Populate,
    /// By the archive writer, which clamps times itself.
    Archive,
    /// By the OCI writer: like an archive, and when the recipe starts with a container
    /// image, what that image put in the tree is remembered, so that its layers can be
    /// shipped as they are if nothing later removes or replaces them.
    Image,
}

/// Fills the folder `root` as the recipe says, its host inputs from `inputs`; through
/// `cache` when given (the longest cached prefix of states restored, the others stored).
#[allow(clippy::too_many_arguments)]
pub(super) fn fill(
    recipe: &Recipe,
    inputs: &Inputs,
    root: &Path,
    sde: Option<i64>,
    progress: bool,
    tree_for: TreeFor,
    steps: &super::steps::Steps<'_>,
    cache: Option<&Cached>,
) -> Result<Filled, BuildError> {
    let mut x = Extractor::new(Root::open(root).map_err(out_err(root))?, false);
    if records(tree_for) {
        x = x.record_metadata();
    }
    let keep_base = tree_for == TreeFor::Image;
    let prefix = cache.map(|c| c.prefix());
    let (layers, image_config, base) = match (cache, &prefix) {
        (Some(c), Some(p)) => layers_through(c, p, recipe, &mut x, progress, keep_base, root)?,
        _ => apply_layers(recipe, &mut x, progress, keep_base, root)?,
    };
    // Applied afresh, the layers give the tree their state holds: the steps' states apply.
    let restored = prefix.as_ref().map_or(&[][..], |p| &p.steps[..]);
    if let (Some(c), Some(p)) = (cache, &prefix) {
        c.say_prefix(p, recipe.steps.len());
    }
    inject_all(recipe, inputs, &mut x, sde)?;
    let (report, mut recorded) = x.finish_recorded()?;
    if let (Some(c), false) = (cache, restored.is_empty()) {
        c.restore_steps(restored, root, recorded.as_mut())?;
    }
    // After everything else is in place; before times are clamped and the tree measured.
    let mut before = match cache {
        Some(_) if restored.len() < recipe.steps.len() => {
            Some(cached::snapshot(root).map_err(out_err(root))?)
        }
        _ => None,
    };
    steps.run_all(root, recorded.as_mut(), restored.len(), &mut |n, rec| {
        if let (Some(c), Some(b)) = (cache, before.as_ref()) {
            before = Some(c.store_step(recipe, n, root, b, rec, steps.work)?);
        }
        Ok(())
    })?;
    // After the steps, run or restored: cached and uncached builds get the same tree.
    let removed = match recipe.steps.is_empty() {
        true => Vec::new(),
        false => {
            let tree = Root::open(root).map_err(out_err(root))?;
            super::package_files::clean(&tree, recipe.output.package_files, recorded.as_mut())
                .map_err(out_err(root))?
        }
    };
    inject_after_steps(recipe, root, recorded.as_mut(), sde)?;
    if let Some(t) = sde
        && tree_for == TreeFor::Itself
    {
        clamp_times(root, t).map_err(out_err(root))?;
    }
    check_interrupt()?;
    let usage = ext4::measure(root).map_err(out_err(root))?;
    Ok(Filled {
        layers,
        image_config,
        report,
        usage,
        recorded,
        base,
        removed,
    })
}

/// The layers' tree from the cache when it has it, else applied and stored.
fn layers_through(
    c: &Cached,
    prefix: &cached::Prefix,
    recipe: &Recipe,
    x: &mut Extractor,
    progress: bool,
    keep_base: bool,
    root: &Path,
) -> Result<(Vec<LayerRecord>, Config, Option<Base>), BuildError> {
    let first = recipe.layers.first();
    // A base image's layers are kept only when it is the tree's only layer: what it put
    // there is then exactly the restored tree.
    let base_alone = !matches!(first, Some(Layer::Oci { .. })) || recipe.layers.len() == 1;
    match &prefix.layers {
        Some(state) if !keep_base || base_alone => {
            let (layers, config) = c.restore_layers(state, x)?;
            let base = match (keep_base, first) {
                (true, Some(layer)) => base_of(layer, root)?,
                _ => None,
            };
            Ok((layers, config, base))
        }
        cached => {
            let applied = apply_layers(recipe, x, progress, keep_base, root)?;
            if cached.is_none() {
                c.store_layers(recipe, x, root, &applied.0, &applied.1)?;
            }
            Ok(applied)
        }
    }
}

/// How a tree for `format` will be used.
pub(super) fn tree_for(format: crate::recipe::OutputFormat) -> TreeFor {
    use crate::recipe::OutputFormat;
    match format {
        OutputFormat::Ext4 => TreeFor::Populate,
        OutputFormat::Archive(..) => TreeFor::Archive,
        OutputFormat::Oci | OutputFormat::OciArchive => TreeFor::Image,
        OutputFormat::Dir => TreeFor::Itself,
    }
}

/// Whether the tree records what it cannot hold, as mke2fs -d's path does, so every
/// format of a rootless build gets the same owners, modes and devices.
pub(super) fn records(tree_for: TreeFor) -> bool {
    let rootless = !rustix::process::geteuid().is_root();
    tree_for == TreeFor::Populate || (rootless && tree_for != TreeFor::Itself)
}

/// What the recipe will put in the tree, before anything is unpacked: folders are walked,
/// archives listed (decompressed, not written), programs' closures and files stat'ed.
/// Later layers replacing earlier files are counted twice, which errs on the large side.
pub(super) fn estimate(recipe: &Recipe, inputs: &Inputs) -> Result<Usage, BuildError> {
    struct Sizer {
        usage: Usage,
        links: HashSet<LinkKey>,
    }
    impl Visitor for Sizer {
        fn entry(&mut self, e: &Entry, _: &mut EntryData<'_>) -> Result<(), VisitError> {
            if e.link_key.is_some_and(|k| !self.links.insert(k)) {
                self.usage.files += 1;
                return Ok(());
            }
            match &e.kind {
                Kind::File => self.usage.add_file(e.size),
                Kind::Dir => self.usage.add_dir(),
                Kind::Symlink(t) => self.usage.add_other(t.len() >= 60),
                Kind::HardLink(_) => self.usage.files += 1,
                _ => self.usage.add_other(false),
            }
            Ok(())
        }
    }
    let mut sizer = Sizer {
        usage: Usage::default(),
        links: HashSet::new(),
    };
    for layer in &recipe.layers {
        check_interrupt()?;
        match layer {
            Layer::Dir(dir) => sizer.usage += ext4::measure(dir).map_err(out_err(dir))?,
            Layer::Initramfs(file) | Layer::Tar(file) => {
                let f = File::open(file).map_err(out_err(file))?;
                read_archive(&f, &mut sizer, None, &interrupted)
                    .map_err(|e| BuildError::layer(file, e))?;
            }
            Layer::Oci {
                path,
                reference,
                platform,
                ..
            } => {
                let image = open_image(path, reference, platform)?;
                for i in 0..image.layers.len() {
                    check_interrupt()?;
                    image
                        .read_layer(i, |r| {
                            crate::archive::tar::read_entries(r, &mut sizer, &interrupted)
                        })
                        .map_err(|source| BuildError::oci_layer(&image, i, source))?;
                }
            }
        }
    }
    let mut u = sizer.usage;
    if let Some((_, dir)) = &inputs.modules {
        u += ext4::measure(dir).map_err(out_err(dir))?;
    }
    for (b, files) in recipe.binaries.iter().zip(&inputs.programs) {
        for f in files {
            // A few extra inodes and blocks for the symlink chains and folders on the way.
            u.add_file(std::fs::metadata(f).map_err(out_err(f))?.len());
            u.add_dir();
        }
        u.inodes += b.links.len() as u64;
    }
    for f in &recipe.files {
        let len = match &f.source {
            FileSource::Inline(b) => b.len() as u64,
            FileSource::Host(p) => std::fs::metadata(p).map_err(out_err(p))?.len(),
        };
        u.add_file(len);
    }
    for _ in 0..recipe.dirs.len() + recipe.mountpoints.len() {
        u.add_dir();
    }
    for s in &recipe.symlinks {
        u.add_other(s.target.len() >= 60);
    }
    Ok(u)
}

fn open_image(
    path: &Path,
    reference: &Option<String>,
    platform: &Option<String>,
) -> Result<oci::Image, BuildError> {
    let sel = oci::Selector {
        reference: reference.clone(),
        platform: platform.clone(),
    };
    Ok(oci::open(path, &sel)?)
}

/// Applies every layer of a container image, and gives its record and its config.
fn apply_image(
    x: &mut Extractor,
    path: &Path,
    reference: &Option<String>,
    platform: &Option<String>,
) -> Result<(LayerRecord, Config), BuildError> {
    let image = open_image(path, reference, platform)?;
    x.set_replacing_trees(true);
    for i in 0..image.layers.len() {
        check_interrupt()?;
        let mut applier = LayerApplier::new(x);
        image
            .read_layer(i, |r| {
                crate::archive::tar::read_entries(r, &mut applier, &interrupted)
            })
            .map_err(|source| BuildError::oci_layer(&image, i, source))?;
        log::debug!("image layer {} of {}", i + 1, image.layers.len());
    }
    x.set_replacing_trees(false);
    let record = LayerRecord {
        kind: "oci".into(),
        path: path.display().to_string(),
        sha256: path
            .is_file()
            .then(|| digest_file(path).map(|d| d.1))
            .transpose()
            .map_err(out_err(path))?,
        image: Some(image.digest.to_string()),
        layers: image
            .layers
            .iter()
            .map(|l| l.digest.as_ref().map_or(&l.diff_id, |d| &d.0).to_string())
            .collect(),
    };
    Ok((record, Config::from_image(&image.config)))
}

/// The base image `layer` is, with what it put in the tree at `root` (nothing for a
/// layer that is not a container image).
fn base_of(layer: &Layer, root: &Path) -> Result<Option<Base>, BuildError> {
    let Layer::Oci {
        path,
        reference,
        platform,
        ..
    } = layer
    else {
        return Ok(None);
    };
    Ok(Some(Base {
        path: path.clone(),
        reference: reference.clone(),
        platform: platform.clone(),
        snapshot: delta::snapshot(root).map_err(out_err(root))?,
    }))
}

/// Applies the recipe's layers in order; gives their records and the config of the
/// container images among them (a later one's keys over an earlier one's).
fn apply_layers(
    recipe: &Recipe,
    x: &mut Extractor,
    progress: bool,
    keep_base: bool,
    root: &Path,
) -> Result<(Vec<LayerRecord>, Config, Option<Base>), BuildError> {
    let mut records = Vec::new();
    let mut config = Config::default();
    let mut base = None;
    for layer in &recipe.layers {
        check_interrupt()?;
        // Hard-link identities (cpio inodes, host inodes) mean nothing across layers.
        x.archive_end();
        let path = layer.path();
        if let Layer::Oci {
            path,
            reference,
            platform,
            pull,
        } = layer
        {
            let (mut record, image) = apply_image(x, path, reference, platform)?;
            if let Some(p) = pull {
                // Where it came from, not the cache's copy.
                record.path = p.source.clone();
                record.sha256 = None;
            }
            config = image.over(&config);
            if keep_base && records.is_empty() {
                base = base_of(layer, root)?;
            }
            records.push(record);
            continue;
        }
        let sha256 = match layer {
            Layer::Oci { .. } => None,
            Layer::Dir(dir) => {
                inject::copy_tree(x, dir).map_err(|source| BuildError::LayerDir {
                    path: dir.clone(),
                    source,
                })?;
                None
            }
            Layer::Initramfs(file) | Layer::Tar(file) => {
                let f = File::open(file).map_err(out_err(file))?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let bar = crate::progress::bytes_bar(len, !progress, "unpacking");
                read_archive(&f, x, bar.clone(), &interrupted)
                    .map_err(|e| BuildError::layer(file, e))?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                Some(digest_file(file).map_err(out_err(file))?.1)
            }
        };
        log::debug!(
            "layer {}: {} {}",
            records.len() + 1,
            layer.kind(),
            path.display()
        );
        records.push(LayerRecord {
            kind: layer.kind().into(),
            path: path.display().to_string(),
            sha256,
            image: None,
            layers: Vec::new(),
        });
    }
    Ok((records, config, base))
}

/// No time in the tree is later than `t` (atime set alongside).
fn clamp_times(tree: &Path, t: i64) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps};
    use std::os::unix::fs::MetadataExt;
    let ts = Timestamps {
        last_access: Timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: t,
            tv_nsec: 0,
        },
    };
    for entry in walkdir::WalkDir::new(tree)
        .follow_links(false)
        .contents_first(true)
    {
        let entry = entry.map_err(io::Error::from)?;
        let meta = entry.metadata().map_err(io::Error::from)?;
        if meta.mtime() > t || (meta.mtime() == t && meta.mtime_nsec() != 0) {
            rustix::fs::utimensat(CWD, entry.path(), &ts, AtFlags::SYMLINK_NOFOLLOW)?;
        }
    }
    Ok(())
}
