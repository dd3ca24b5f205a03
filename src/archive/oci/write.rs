//! Writing a tree as an OCI image: one layer (the tree as a tar, gzip or zstd), its config
//! and manifest, an index naming it by tag, as a layout folder or as an OCI archive (the
//! layout as a tar, plus Docker's `manifest.json` so that `docker load` takes it too).
//!
//! Reproducible: the layer is our own sorted tar with clamped times, compressed in
//! independent members of 4 MiB input (so every core compresses, and the bytes do not
//! depend on how many there are); gzip headers carry no time or name; JSON is written in
//! a fixed key order; the archive's own entries have fixed owners, modes and times.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::layer::Compression;
use super::spec::{
    self, ContainerConfig, Descriptor, Digest, DockerEntry, History, ImageConfig, Index, Manifest,
    Platform, RootFs,
};
use crate::archive::frame_writer::{FrameOptions, compress_blocks};
use crate::archive::pack::{PackError, PackFormat, PackOptions, pack};
use crate::digest::Hashing;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("packing the layer")]
    Pack(#[from] PackError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What goes into the image besides the tree.
pub struct ImageOptions {
    /// `NAME:TAG`, for the index's annotations and Docker's RepoTags.
    pub tag: String,
    pub config: ContainerConfig,
    /// Seconds since the epoch for `created` (the source date epoch, or now).
    pub created: i64,
    pub compression: Compression,
    pub history: String,
    /// Upper bound for the tree's times in the layer.
    pub clamp_mtime: Option<i64>,
    /// What the layer's entries should be that the tree could not hold (see
    /// [`crate::archive::pack::Recorded`]).
    pub recorded: Option<std::sync::Arc<crate::archive::pack::RecordedTree>>,
}

/// What was written.
pub struct Written {
    pub manifest: Digest,
    pub layer: Digest,
    pub diff_id: Digest,
}

/// Input per compressed member: large enough that the ratio stays within a fraction of a
/// percent of one stream, small enough that two cores share a 100 MB layer evenly.
const MEMBER: usize = 4 << 20;

/// A blob store being filled: `blobs/sha256/` under `dir`.
struct Blobs {
    dir: PathBuf,
    written: Vec<(Digest, u64)>,
}

impl Blobs {
    fn new(layout: &Path) -> Result<Blobs, WriteError> {
        let dir = layout.join("blobs/sha256");
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        Ok(Blobs {
            dir,
            written: Vec::new(),
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(Digest, u64), WriteError> {
        let digest = Digest::of(bytes);
        let path = self.dir.join(digest.hex());
        std::fs::write(&path, bytes).map_err(io_at(&path))?;
        self.written.push((digest.clone(), bytes.len() as u64));
        Ok((digest, bytes.len() as u64))
    }

    /// Streams a layer: the tree as a tar, compressed; gives (digest, size, diff_id).
    fn put_layer(
        &mut self,
        tree: &Path,
        opts: &ImageOptions,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<(Digest, u64, Digest), WriteError> {
        let temp = self.dir.join("layer.partial");
        let file = File::create(&temp).map_err(io_at(&temp))?;
        let mut compressed = Hashing::new(io::BufWriter::with_capacity(1 << 20, file));
        let pack_opts = PackOptions {
            clamp_mtime: opts.clamp_mtime,
            recorded: opts.recorded.clone(),
            ..PackOptions::new(
                PackFormat::Tar,
                crate::archive::compression::Compression::None,
            )
        };
        let (diff_id, _) = compress_blocks(
            &mut compressed,
            &layer_frames(opts.compression),
            |w| -> Result<Digest, WriteError> {
                let mut uncompressed = Hashing::new(w);
                pack(tree, &mut uncompressed, &pack_opts, None, interrupted)?;
                Ok(Digest::of_hash(&uncompressed.hash()))
            },
            |e| io_at(&temp)(e),
        )?;
        let (digest, size) = (Digest::of_hash(&compressed.hash()), compressed.size);
        let file = compressed
            .inner
            .into_inner()
            .map_err(|e| io_at(&temp)(e.into_error()))?;
        file.sync_all().map_err(io_at(&temp))?;
        let path = self.dir.join(digest.hex());
        std::fs::rename(&temp, &path).map_err(io_at(&path))?;
        self.written.push((digest.clone(), size));
        Ok((digest, size, diff_id))
    }
}

/// A layer's compression: members of [`MEMBER`] bytes each, at the compressors' default
/// levels, on every core.
fn layer_frames(compression: Compression) -> FrameOptions {
    use crate::archive::compression::Compression as C;
    FrameOptions {
        compression: match compression {
            Compression::Gzip => C::Gzip,
            Compression::Zstd => C::Zstd,
            Compression::None => C::None,
        },
        level: None,
        frame_size: MEMBER as u64,
        threads: 0,
    }
}

fn json<T: serde::Serialize>(value: &T, layout: &Path) -> Result<Vec<u8>, WriteError> {
    serde_json::to_vec(value).map_err(|e| io_at(layout)(io::Error::other(e)))
}

/// Copies a base image's layer blobs byte for byte (checked again on the way: the file may
/// have changed since it was read), giving their descriptors and diff_ids.
fn copy_base_layers(
    blobs: &mut Blobs,
    base: &super::Image,
) -> Result<(Vec<Descriptor>, Vec<String>), WriteError> {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &base.layers {
        let (mut from, size) = base.source.open_file(&l.file).map_err(io_at(&base.path))?;
        let temp = blobs.dir.join("base.partial");
        let mut out = Hashing::new(File::create(&temp).map_err(io_at(&temp))?);
        let mut head = [0u8; 4];
        let n = from.read(&mut head).map_err(io_at(&base.path))?;
        out.write_all(&head[..n]).map_err(io_at(&temp))?;
        io::copy(&mut from, &mut out).map_err(io_at(&base.path))?;
        // A Docker archive names a layer by its uncompressed digest: the diff_id.
        let (want, want_size) = l.digest.clone().unwrap_or((l.diff_id.clone(), size));
        if Digest::of_hash(&out.hash()) != want || out.size != want_size {
            let _ = std::fs::remove_file(&temp);
            return Err(WriteError::Io {
                path: base.path.clone(),
                source: io::Error::other(format!("layer {want} changed since it was read")),
            });
        }
        let path = blobs.dir.join(want.hex());
        std::fs::rename(&temp, &path).map_err(io_at(&path))?;
        let media = l.media_type.clone().unwrap_or_else(|| {
            match super::layer::sniff(&head[..n]) {
                Compression::Gzip => spec::LAYER_GZIP,
                Compression::Zstd => spec::LAYER_ZSTD,
                Compression::None => "application/vnd.oci.image.layer.v1.tar",
            }
            .into()
        });
        descriptors.push(descriptor(&media, &want, want_size));
        diff_ids.push(l.diff_id.to_string());
    }
    Ok((descriptors, diff_ids))
}

/// Writes the tree as an OCI image layout in the (empty or new) folder `layout`: one layer
/// of the tree, over `base`'s own layers when given (the tree then holds only what the
/// recipe added).
pub fn write_layout(
    tree: &Path,
    base: Option<&super::Image>,
    layout: &Path,
    opts: &ImageOptions,
    interrupted: &dyn Fn() -> bool,
) -> Result<Written, WriteError> {
    let mut blobs = Blobs::new(layout)?;
    let (mut layers, mut diff_ids, history) = match base {
        Some(image) => {
            let (descriptors, diff_ids) = copy_base_layers(&mut blobs, image)?;
            (descriptors, diff_ids, image.config.history.clone())
        }
        None => Default::default(),
    };
    let (layer, layer_size, diff_id) = blobs.put_layer(tree, opts, interrupted)?;
    let (os, arch) = super::host_platform();
    diff_ids.push(diff_id.to_string());
    let config = image_config(opts, diff_ids, history, os.clone(), arch.clone());
    let (config_digest, config_size) = blobs.put(&json(&config, layout)?)?;
    let media = match opts.compression {
        Compression::Gzip => spec::LAYER_GZIP,
        Compression::Zstd => spec::LAYER_ZSTD,
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
    };
    layers.push(descriptor(media, &layer, layer_size));
    let docker_layers = layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", l.digest.trim_start_matches("sha256:")))
        .collect();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::MANIFEST.into()),
        config: descriptor(spec::CONFIG, &config_digest, config_size),
        layers,
    };
    let (manifest_digest, manifest_size) = blobs.put(&json(&manifest, layout)?)?;
    let named = descriptor(spec::MANIFEST, &manifest_digest, manifest_size);
    write_index(
        layout,
        opts,
        named,
        (os, arch),
        &config_digest,
        docker_layers,
    )?;
    Ok(Written {
        manifest: manifest_digest,
        layer,
        diff_id,
    })
}

/// The image's config: the base's diff_ids and history (if any) with this layer's.
fn image_config(
    opts: &ImageOptions,
    diff_ids: Vec<String>,
    mut history: Vec<History>,
    os: String,
    arch: String,
) -> ImageConfig {
    // RFC 3339, as the spec asks: "2023-11-14T22:13:20Z".
    let created = format!(
        "{}Z",
        crate::time_format::format_utc(opts.created).replacen(' ', "T", 1)
    );
    history.push(History {
        created: Some(created.clone()),
        created_by: Some(opts.history.clone()),
        comment: None,
        empty_layer: false,
    });
    ImageConfig {
        created: Some(created),
        architecture: arch,
        os,
        config: Some(opts.config.clone()),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        history,
    }
}

/// The layout's `oci-layout`, its `index.json` naming the manifest `named` for this
/// platform and tag, and Docker's `manifest.json` beside them.
fn write_index(
    layout: &Path,
    opts: &ImageOptions,
    mut named: Descriptor,
    (os, arch): (String, String),
    config_digest: &Digest,
    docker_layers: Vec<String>,
) -> Result<(), WriteError> {
    named.platform = Some(Platform {
        architecture: arch,
        os,
        variant: None,
    });
    named.annotations = BTreeMap::from([
        (spec::CONTAINERD_NAME.to_string(), opts.tag.clone()),
        (spec::REF_NAME.to_string(), opts.tag.clone()),
    ]);
    let index = Index {
        schema_version: 2,
        media_type: Some(spec::INDEX.into()),
        manifests: vec![named],
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = layout.join(name);
        std::fs::write(&path, bytes).map_err(io_at(&path))
    };
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write("index.json", &json(&index, layout)?)?;
    // Docker's manifest.json beside the layout: `docker load` takes the archive too.
    let docker = vec![DockerEntry {
        config: config_digest.blob_path(),
        repo_tags: Some(vec![opts.tag.clone()]),
        layers: docker_layers,
    }];
    write("manifest.json", &json(&docker, layout)?)?;
    Ok(())
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// Writes the layout folder `layout` as a tar to `out`: fixed owners, modes and times,
/// the small files first, then the blobs in name order.
pub fn archive_layout(layout: &Path, out: &mut dyn Write, mtime: i64) -> Result<(), WriteError> {
    let mut tar = tar::Builder::new(out);
    let header = |size: u64, dir: bool| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime.max(0) as u64);
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h
    };
    let mut names: Vec<String> = vec![
        "oci-layout".into(),
        "index.json".into(),
        "manifest.json".into(),
    ];
    let blob_dir = layout.join("blobs/sha256");
    let mut blobs: Vec<String> = std::fs::read_dir(&blob_dir)
        .map_err(io_at(&blob_dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io_at(&blob_dir))?;
    blobs.sort();
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, true);
        tar.append_data(&mut h, dir, io::empty())
            .map_err(io_at(layout))?;
    }
    names.extend(blobs.into_iter().map(|b| format!("blobs/sha256/{b}")));
    for name in names {
        let path = layout.join(&name);
        let file = File::open(&path).map_err(io_at(&path))?;
        let len = file.metadata().map_err(io_at(&path))?.len();
        let mut h = header(len, false);
        tar.append_data(&mut h, &name, file).map_err(io_at(&path))?;
    }
    tar.into_inner()
        .map_err(io_at(layout))?
        .flush()
        .map_err(io_at(layout))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn members_decode_as_one_stream_whatever_the_workers() {
        let data: Vec<u8> = (0..(MEMBER * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let mut outputs = Vec::new();
        for threads in [1, 3] {
            let frames = FrameOptions {
                threads,
                ..layer_frames(Compression::Gzip)
            };
            let mut out = Vec::new();
            compress_blocks(&mut out, &frames, |w| w.write_all(&data), |e| e).unwrap();
            outputs.push(out);
        }
        assert_eq!(
            outputs[0], outputs[1],
            "the bytes do not depend on the workers"
        );
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&outputs[0][..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
