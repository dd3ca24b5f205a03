//! An ext4 image, by one of two methods: `mount` makes the file system first and fills it
//! through a loop mount (the data is written once), `populate` stages a tree and has
//! `mke2fs -d` copy it, then sets in the inodes what the tree could not hold.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::sync_hashing;
use crate::builder::stage::{self, Filled, TreeFor};
use crate::builder::{BuildError, Job, Written, check_interrupt, out_err, secs, stage_tree};
use crate::digest::hex;
use crate::fsutil::AtomicFile;
use crate::image::ext4::{self, MkfsOptions, Usage};
use crate::image::ext4_inodes::{self, Fixes};
use crate::recipe::{Free, Method, Recipe, Size};

/// Writes the image with `method`; `auto` (`asked`) turns `mount` into `populate` for a
/// tree of many small files, which the estimate made first tells.
pub(in crate::builder) fn write(
    job: &Job<'_>,
    asked: Method,
    mut method: Method,
) -> Result<(Filled, Written), BuildError> {
    // For the mount method, the image is sized (or a fixed size checked) before anything
    // is written; the same estimate tells `auto` the tree's shape.
    let mut planned = None;
    if method == Method::Mount {
        let usage = stage::estimate(job.recipe, job.inputs)?;
        if asked == Method::Auto && usage.small_files() {
            method = Method::Populate;
        }
        planned = Some(usage);
    }
    let (filled, mut written) = match planned.take_if(|_| method == Method::Mount) {
        Some(usage) => by_mount(job, &usage)?,
        None => by_populate(job, planned)?,
    };
    written.method = Some(method);
    Ok((filled, written))
}

/// The mounted image is the staging tree: the data is written once.
fn by_mount(job: &Job<'_>, usage: &Usage) -> Result<(Filled, Written), BuildError> {
    let recipe = job.recipe;
    let file = AtomicFile::create(job.image).map_err(out_err(job.image))?;
    let e2fsprogs = ext4::mkfs(
        file.temp_path(),
        &mkfs_options(recipe, usage, &recipe.sha256, job.sde)?,
        None,
    )?;
    let mnt = job.work.join("mnt");
    std::fs::create_dir(&mnt).map_err(out_err(&mnt))?;
    let mut filled = None;
    let mut step_failed = None;
    let populated = ext4::populate_by_mount(file.temp_path(), &mnt, &mut |target| {
        let f = stage::fill(
            recipe,
            job.inputs,
            target,
            job.sde,
            job.opts.progress,
            TreeFor::Itself,
            job.steps,
            None,
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
        secs(job.started)
    );
    Ok((filled, synced(job, file, e2fsprogs)?))
}

/// `mke2fs -d` from a staging tree (or the recipe's only folder); `planned` is the
/// estimate already made for a `mount` that `auto` turned into this.
fn by_populate(job: &Job<'_>, planned: Option<Usage>) -> Result<(Filled, Written), BuildError> {
    let recipe = job.recipe;
    let (tree, mut filled) = stage_tree(job, planned)?;
    let seed = filled
        .layers
        .iter()
        .filter_map(|l| l.sha256.clone())
        .fold(recipe.sha256.clone(), |a, b| a + &b);
    let file = AtomicFile::create(job.image).map_err(out_err(job.image))?;
    let fixes = Fixes {
        time: job.sde,
        recorded: filled.recorded.as_ref(),
    };
    let e2fsprogs = populate(
        file.temp_path(),
        recipe,
        &filled.usage,
        &seed,
        &tree,
        &fixes,
        job.sde,
    )?;
    check_interrupt()?;
    // The manifest counts the image's entries, as the mount method does, measuring the
    // image itself: mke2fs made `lost+found` when the tree had none.
    if std::fs::symlink_metadata(tree.join("lost+found")).is_err() {
        filled.usage.files += 1;
    }
    Ok((filled, synced(job, file, e2fsprogs)?))
}

/// The image synced and hashed, and what the manifest records of it.
fn synced(
    job: &Job<'_>,
    file: AtomicFile,
    e2fsprogs: Option<ext4::Version>,
) -> Result<Written, BuildError> {
    let (sha256, pending) = sync_hashing(file, job.image)?;
    Ok(Written {
        sha256,
        pending,
        e2fsprogs,
        ..Written::default()
    })
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

fn mkfs_options(
    recipe: &Recipe,
    usage: &ext4::Usage,
    seed: &str,
    sde: Option<i64>,
) -> Result<MkfsOptions, BuildError> {
    let (auto, inodes) = ext4::auto_size(usage);
    let (with_free, more_inodes) = with_free(usage, recipe.output.free);
    let size = match recipe.output.size {
        Size::Auto => with_free,
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
        // What surely gets written: the content and the journal (the image is sparse).
        fills: usage.blocks * 4096 + (ext4::journal_mib(usage.blocks * 4096) << 20),
        block: usage.block_size(),
        journal_mib: ext4::journal_mib(usage.blocks * 4096),
        // A fixed size gets one inode per 16 KiB (mke2fs's default), or more if needed.
        inodes: if recipe.output.size == Size::Auto {
            more_inodes
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

/// The size and inode count of an image of `size = "auto"` with `free` left free once the
/// content is in: a root file system nearly full after `apt-get install` fails the next
/// one. The free room gets inodes in proportion, for files like those already there.
fn with_free(usage: &Usage, free: Free) -> (u64, u64) {
    let (needed, inodes) = ext4::auto_size(usage);
    let grown = |n: u64| -> u64 {
        match free {
            Free::Percent(p) => {
                let n = u128::from(n) * 100;
                u64::try_from(n.div_ceil(u128::from(100 - p.min(90)))).unwrap_or(u64::MAX)
            }
            Free::Bytes(b) => n.saturating_add(b),
        }
    };
    let inodes = u128::from(inodes) * u128::from(grown(needed)) / u128::from(needed.max(1));
    let inodes = u64::try_from(inodes).unwrap_or(u64::MAX);
    // The added inodes' tables take room too: counted before the free share is added.
    let size = grown(ext4::size_for(usage, inodes));
    (size.div_ceil(1 << 20).saturating_mul(1 << 20), inodes)
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
