//! The build pipeline: recipe -> layers -> staging tree -> injected programs, files and
//! mount points -> image writer -> manifest.
//!
//! Everything is made in a work folder and temporary files beside the outputs, named with
//! the `.rootpack-tmp-PID` marker; guards remove them on any error or interrupt, and the
//! next build removes what a killed one (`kill -9`) left, mounts and loop devices included.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::archive::pack::{PackError, PackOptions, pack};
use crate::archive::{Kind, ReadError, read_archive};
use crate::fsutil::{AtomicFile, TempDir};
use crate::image::ext4::{self, Ext4Error, MkfsOptions};
use crate::interrupt::interrupted;
use crate::manifest::{LayerRecord, Manifest, Provenance};
use crate::recipe::{FileSource, Layer, Method, OutputFormat, Recipe, Size, hex};
use crate::tree::elf::{self, ElfError};
use crate::tree::extract::{ExtractError, Extractor};
use crate::tree::inject::{self, InjectError};
use crate::tree::safe_path::Root;

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
    Pack(#[from] PackError),
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
    pub ownership_dropped: u64,
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

/// Builds the image `recipe` describes into `opts.out_dir`.
pub fn build(recipe: &Recipe, opts: &BuildOptions) -> Result<Built, BuildError> {
    let sde = opts.source_date_epoch.or(recipe.source_date_epoch);
    let method = opts.method.unwrap_or(recipe.output.method);
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(out_err(out))?;
    let cleaned = crate::cleanup::remove_stale(out).map_err(out_err(out))?;
    if recipe.output.format == OutputFormat::Ext4
        && method == Method::Mount
        && !rustix::process::geteuid().is_root()
    {
        return Err(BuildError::MountNeedsRoot);
    }

    let work = TempDir::beside(&out.join(&recipe.name)).map_err(out_err(out))?;
    let staging = work.path().join("staging");
    std::fs::create_dir(&staging).map_err(out_err(&staging))?;
    let root = Root::open(&staging).map_err(out_err(&staging))?;
    let mut x = Extractor::new(root, false);

    let layers = apply_layers(recipe, &mut x, opts.progress)?;
    inject_all(recipe, &mut x, sde)?;
    let report = x.finish()?;
    if let Some(t) = sde {
        clamp_times(&staging, t).map_err(out_err(&staging))?;
    }
    check_interrupt()?;

    let extension = recipe.output.format.extension();
    let image = out.join(format!("{}.{extension}", recipe.name));
    let usage = ext4::measure(&staging).map_err(out_err(&staging))?;
    let mut e2fsprogs = None;
    match recipe.output.format {
        OutputFormat::Ext4 => {
            let version = ext4::e2fsprogs_version()?;
            e2fsprogs = Some(format!("{}.{}.{}", version.0, version.1, version.2));
            let seed_input = layers
                .iter()
                .filter_map(|l| l.sha256.clone())
                .fold(recipe.sha256.clone(), |a, b| a + &b);
            write_ext4(
                recipe,
                method,
                &staging,
                work.path(),
                &image,
                &usage,
                &seed_input,
                sde,
                version,
            )?;
        }
        OutputFormat::Archive(format, compression) => {
            let mut file = AtomicFile::create(&image).map_err(out_err(&image))?;
            {
                let mut w = io::BufWriter::with_capacity(1 << 20, file.file());
                let opts = PackOptions {
                    format,
                    compression,
                    level: None,
                    clamp_mtime: sde,
                    early: None,
                };
                pack(&staging, &mut w, &opts, &interrupted)?;
                io::Write::flush(&mut w).map_err(out_err(&image))?;
            }
            file.commit().map_err(out_err(&image))?;
        }
        OutputFormat::Dir => {
            if image.exists() {
                std::fs::remove_dir_all(&image).map_err(out_err(&image))?;
            }
            std::fs::rename(&staging, &image).map_err(out_err(&image))?;
        }
    }
    drop(work);

    let (size, sha256) = if recipe.output.format == OutputFormat::Dir {
        (usage.blocks * 4096, String::new())
    } else {
        digest_file(&image).map_err(out_err(&image))?
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
        config: recipe.config.clone(),
        limits: recipe.limits.clone(),
        build: Provenance {
            recipe: recipe.path.display().to_string(),
            recipe_sha256: recipe.sha256.clone(),
            layers,
            rootpack_version: env!("CARGO_PKG_VERSION").to_string(),
            source_date_epoch: sde,
            files: usage.files.saturating_sub(1),
            method: (recipe.output.format == OutputFormat::Ext4).then(|| match method {
                Method::Populate => "populate".into(),
                Method::Mount => "mount".into(),
            }),
            e2fsprogs,
        },
    };
    let manifest_path = crate::manifest::path_for(&image);
    let mut file = AtomicFile::create(&manifest_path).map_err(out_err(&manifest_path))?;
    io::Write::write_all(file.file(), manifest.to_json().as_bytes())
        .map_err(out_err(&manifest_path))?;
    file.commit().map_err(out_err(&manifest_path))?;
    Ok(Built {
        image,
        manifest_path,
        manifest,
        cleaned,
        ownership_dropped: report.ownership_dropped,
    })
}

fn apply_layers(
    recipe: &Recipe,
    x: &mut Extractor,
    progress: bool,
) -> Result<Vec<LayerRecord>, BuildError> {
    let mut records = Vec::new();
    for layer in &recipe.layers {
        check_interrupt()?;
        let path = layer.path();
        let sha256 = match layer {
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
                read_archive(&f, x, bar.clone(), &interrupted).map_err(|source| match source {
                    ReadError::Interrupted => BuildError::Interrupted,
                    source => BuildError::Layer {
                        path: file.clone(),
                        source,
                    },
                })?;
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                Some(digest_file(file).map_err(out_err(file))?.1)
            }
        };
        records.push(LayerRecord {
            kind: layer.kind().into(),
            path: path.display().to_string(),
            sha256,
        });
    }
    Ok(records)
}

fn inject_all(recipe: &Recipe, x: &mut Extractor, sde: Option<i64>) -> Result<(), BuildError> {
    let now = sde.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let mut seen = HashSet::new();
    for b in &recipe.binaries {
        check_interrupt()?;
        let files = elf::closure(&b.host).map_err(|source| BuildError::Binary {
            path: b.host.clone(),
            source,
        })?;
        for (i, file) in files.iter().enumerate() {
            match (&b.to, i) {
                (Some(to), 0) => inject::inject_host_file_at(x, file, to)?,
                _ => inject::inject_host_path(x, file, &mut seen)?,
            }
        }
        let program = match &b.to {
            Some(to) => format!("/{}", to.as_bytes().escape_ascii()),
            None => b.host.display().to_string(),
        };
        for link in &b.links {
            let kind = Kind::Symlink(program.clone().into_bytes());
            let e = inject::synthetic(link, kind, 0o777, 0, 0, now, 0);
            inject::write_entry(x, &e, &mut io::empty())?;
        }
    }
    for d in &recipe.dirs {
        let e = inject::synthetic(&d.path, Kind::Dir, d.mode, d.uid, d.gid, now, 0);
        inject::write_entry(x, &e, &mut io::empty())?;
    }
    for m in &recipe.mountpoints {
        // /tmp is world-writable with the sticky bit everywhere.
        let mode = if m.as_bytes() == b"tmp" {
            0o1777
        } else {
            0o755
        };
        if !x.exists(m) {
            let e = inject::synthetic(m, Kind::Dir, mode, 0, 0, now, 0);
            inject::write_entry(x, &e, &mut io::empty())?;
        }
    }
    for f in &recipe.files {
        match &f.source {
            FileSource::Inline(bytes) => {
                let e = inject::synthetic(
                    &f.to,
                    Kind::File,
                    f.mode,
                    f.uid,
                    f.gid,
                    now,
                    bytes.len() as u64,
                );
                inject::write_entry(x, &e, &mut &bytes[..])?;
            }
            FileSource::Host(path) => {
                let file = File::open(path).map_err(out_err(path))?;
                let len = file.metadata().map_err(out_err(path))?.len();
                let e = inject::synthetic(&f.to, Kind::File, f.mode, f.uid, f.gid, now, len);
                inject::write_entry(x, &e, &mut BufReader::new(file))?;
            }
        }
    }
    for s in &recipe.symlinks {
        let kind = Kind::Symlink(s.target.as_bytes().to_vec());
        let e = inject::synthetic(&s.path, kind, 0o777, 0, 0, now, 0);
        inject::write_entry(x, &e, &mut io::empty())?;
    }
    Ok(())
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

#[allow(clippy::too_many_arguments)]
fn write_ext4(
    recipe: &Recipe,
    method: Method,
    staging: &Path,
    work: &Path,
    image: &Path,
    usage: &ext4::Usage,
    seed_input: &str,
    sde: Option<i64>,
    version: (u32, u32, u32),
) -> Result<(), BuildError> {
    let (auto, inodes) = ext4::auto_size(usage);
    let size = match recipe.output.size {
        Size::Auto => auto,
        Size::Bytes(b) => {
            ext4::needed_size(b, usage)?;
            b
        }
    };
    let uuid = derived_uuid("uuid", seed_input);
    let hash_seed = derived_uuid("hash_seed", seed_input);
    let opts = MkfsOptions {
        size,
        inodes,
        label: recipe
            .output
            .label
            .as_deref()
            .or(Some(&recipe.name[..recipe.name.len().min(16)])),
        uuid: &uuid,
        hash_seed: &hash_seed,
        source_date_epoch: sde,
    };
    let file = AtomicFile::create(image).map_err(out_err(image))?;
    match method {
        Method::Populate => {
            ext4::mkfs(file.temp_path(), &opts, Some(staging))?;
            if let Some(t) = sde
                && version < (1, 47, 1)
            {
                ext4::fix_times(file.temp_path(), staging, t)?;
            }
        }
        Method::Mount => {
            ext4::mkfs(file.temp_path(), &opts, None)?;
            let mnt = work.join("mnt");
            std::fs::create_dir(&mnt).map_err(out_err(&mnt))?;
            ext4::populate_by_mount(file.temp_path(), &mnt, &mut |target| {
                let mut x = Extractor::new(Root::open(target)?, false);
                inject::copy_tree(&mut x, staging)?;
                x.finish()?;
                Ok(())
            })?;
        }
    }
    check_interrupt()?;
    file.commit().map_err(out_err(image))?;
    Ok(())
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

/// Size and sha256 of a file, streamed.
pub fn digest_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}
