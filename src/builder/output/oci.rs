//! An OCI image: a layout folder (`NAME.oci`) or that layout as a tar (`NAME.oci.tar`).
//! A recipe that starts from a container image keeps its layers as they are and adds one
//! with what the recipe changed, when nothing replaced or removed what they hold.

use std::path::{Path, PathBuf};

use super::{swap_into_place, sync_hashing};
use crate::archive::oci;
use crate::builder::delta;
use crate::builder::stage::Filled;
use crate::builder::{BuildError, Job, Written, check_interrupt, out_err};
use crate::fsutil::AtomicFile;
use crate::interrupt::interrupted;
use crate::recipe::{OutputFormat, Recipe};

pub(in crate::builder) fn write(
    job: &Job<'_>,
    tree: &Path,
    filled: &Filled,
) -> Result<Written, BuildError> {
    let recipe = job.recipe;
    let layout = job.work.join("layout");
    let config = recipe.config.over(&filled.image_config);
    let mut written = Written::default();
    let (base, layer_tree) = base_and_delta(job, tree, filled, &mut written.warnings)?;
    let made = oci::write::write_layout(
        &layer_tree,
        base.as_ref(),
        &layout,
        &oci::write::ImageOptions {
            recorded: filled.recorded.clone().map(std::sync::Arc::new),
            ..image_options(recipe, &config, job.sde)
        },
        &interrupted,
    )?;
    written.oci_manifest = Some(made.manifest.to_string());
    check_interrupt()?;
    if recipe.output.format == OutputFormat::Oci {
        swap_into_place(&layout, job.image, job.work)?;
    } else {
        let mut file = AtomicFile::create(job.image).map_err(out_err(job.image))?;
        oci::write::archive_layout(&layout, file.file(), job.sde.unwrap_or(0))?;
        (written.sha256, written.pending) = sync_hashing(file, job.image)?;
    }
    Ok(written)
}

/// The base image's layers as they are and the tree of what the recipe changed over them,
/// or no base and the whole tree (one flattened layer) when the delta cannot be a layer.
fn base_and_delta(
    job: &Job<'_>,
    tree: &Path,
    filled: &Filled,
    warnings: &mut Vec<String>,
) -> Result<(Option<oci::Image>, PathBuf), BuildError> {
    let Some(b) = &filled.base else {
        return Ok((None, tree.to_path_buf()));
    };
    let delta = job.work.join("delta");
    match delta::delta_over_base(tree, b, &delta).map_err(out_err(tree))? {
        Ok(()) => {
            let sel = oci::Selector {
                reference: b.reference.clone(),
                platform: b.platform.clone(),
            };
            Ok((Some(oci::open(&b.path, &sel)?), delta))
        }
        Err(why) => {
            warnings.push(format!(
                "wrote one flattened layer, not the base image's layers plus one: {why}"
            ));
            Ok((None, tree.to_path_buf()))
        }
    }
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
        recorded: None,
    }
}
