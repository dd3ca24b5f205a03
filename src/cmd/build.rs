//! `build`: recipes to images, what a build says, and the output folder's checks.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::io;

use anyhow::{Context, Result, bail};

use crate::cli::{BuildArgs, MethodArg};
use crate::{human_size, source_date_epoch, warn_left_out};
use rootpack::builder;
use rootpack::recipe::{self, Method};

/// The output folder exists (made if missing) and can be written, or an error that says
/// which of these failed.
fn prepare_out_dir(out: &Path) -> Result<()> {
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "output folder {}: exists and is not a folder (pick another with --out)",
            out.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(out)
            .with_context(|| format!("cannot create the output folder {}", out.display()))?,
        Err(e) => {
            return Err(e).with_context(|| format!("output folder {}", out.display()));
        }
    }
    let writable = rustix::fs::access(
        out,
        rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK,
    );
    writable.map_err(io::Error::from).with_context(|| {
        format!(
            "cannot write into the output folder {} (pick another with --out)",
            out.display()
        )
    })
}

pub fn build(args: &BuildArgs, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let path = &args.recipe;
    let mut recipe = recipe::load(path)?;
    if args.untrusted {
        recipe::confine::Confinement::new(&recipe, &args.allow)?.apply(&mut recipe)?;
    }
    prepare_out_dir(&args.out)?;
    let opts = builder::BuildOptions {
        out_dir: args.out.clone(),
        source_date_epoch: source_date_epoch()?,
        method: args.method.map(|m| match m {
            MethodArg::Auto => Method::Auto,
            MethodArg::Populate => Method::Populate,
            MethodArg::Mount => Method::Mount,
        }),
        progress: !quiet,
        step_output: (!quiet).then(|| {
            std::sync::Arc::new(|n: usize, line: &str| eprintln!("run {n}| {line}"))
                as builder::steps::StepSink
        }),
        cache: build_cache(args),
        force: args.force,
    };
    let pulled = builder::pull::pull_layers(&mut recipe, opts.cache.as_deref(), args.pull)
        .with_context(|| format!("building {}", path.display()))?;
    if !quiet {
        for n in &pulled.notes {
            eprintln!("rootpack: {n}");
        }
    }
    let formats = match args.formats.is_empty() {
        true => vec![recipe.output.format],
        false => args.formats.clone(),
    };
    let mut reproducible = true;
    for format in formats {
        recipe.output.format = format;
        let built = builder::build(&recipe, &opts)
            .with_context(|| format!("building {}", path.display()))?;
        report_built(args, &built, started, quiet);
        reproducible &= built.manifest.build.source_date_epoch.is_some();
    }
    if !quiet && !reproducible {
        eprintln!(
            "rootpack: note: no source date epoch, so a rebuild will not give the same bytes; \
             set source_date_epoch in the recipe, or SOURCE_DATE_EPOCH=$(git log -1 \
             --format=%ct)"
        );
    }
    Ok(())
}

/// The cache folder: `--cache`, else `ROOTPACK_CACHE` (`off`: none), else the default.
fn build_cache(args: &BuildArgs) -> Option<PathBuf> {
    match args.no_cache {
        true => None,
        false => rootpack::cache::chosen_dir(args.cache.as_deref()),
    }
}

/// What a build says: what it cleaned and warns of, what it wrote, the manifest with --json.
fn report_built(args: &BuildArgs, built: &builder::Built, started: Instant, quiet: bool) {
    if !quiet {
        for p in &built.cleaned {
            eprintln!(
                "rootpack: removed {} left by an interrupted build",
                p.display()
            );
        }
        for w in &built.warnings {
            eprintln!("rootpack: warning: {w}");
        }
        warn_left_out(&built.report);
        for n in &built.notes {
            eprintln!("rootpack: {n}");
        }
        if built.up_to_date {
            eprintln!(
                "rootpack: {} is up to date ({})",
                built.image.display(),
                built.manifest_path.display()
            );
            return emit_built_json(args, built);
        }
        eprintln!(
            "rootpack: built {} ({}, {} files) and {} in {:.2}s",
            built.image.display(),
            human_size(built.manifest.size),
            built.manifest.build.files,
            built.manifest_path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    emit_built_json(args, built);
}

fn emit_built_json(args: &BuildArgs, built: &builder::Built) {
    if !built.manifest.sha256.is_empty() {
        log::info!("sha256 {}", built.manifest.sha256);
    }
    if args.json {
        print!("{}", built.manifest.to_json());
    }
}
