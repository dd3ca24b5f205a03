//! OCI and Docker images: reading an OCI image layout (a folder), an OCI archive (the
//! layout as a tar, as `podman save --format oci-archive` writes it) and a Docker archive
//! (`docker save`: `manifest.json` and layer tars; Docker 25+ also writes the OCI layout
//! beside it), choosing one image by reference and platform, and streaming its layers
//! verified; and writing images (see [`write`]).
//!
//! # Security
//!
//! Every name taken from the image's JSON is either a digest (`sha256:` and 64 hex digits,
//! nothing else, so it cannot be a path) or, in a Docker archive's `manifest.json`, looked
//! up among the archive's own members. Every blob is checked against its descriptor's
//! sha256 and size while it streams, every layer's tar against its diff_id; a blob larger
//! than declared is refused as soon as it passes the size. JSON documents are capped at
//! 16 MiB. Layers are applied by [`crate::tree::layer`], through the same safe-path code
//! as every extraction.

pub mod layer;
pub mod source;
pub mod spec;
pub mod write;

use std::io;
use std::path::{Path, PathBuf};

pub use layer::{Compression, LayerSpec, with_layer};
use source::Source;
use spec::{Descriptor, Digest, DockerEntry, ImageConfig, Index, Manifest};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct OciError {
    pub path: PathBuf,
    pub what: String,
}

/// One layer of a chosen image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The file in the image.
    pub file: String,
    /// The blob's digest and size (unknown for a legacy Docker archive's layer.tar).
    pub digest: Option<(Digest, u64)>,
    pub compression: Option<Compression>,
    /// The descriptor's media type (none in a Docker archive).
    pub media_type: Option<String>,
    pub diff_id: Digest,
}

/// The image chosen from a file.
pub struct Image {
    pub source: Source,
    pub path: PathBuf,
    /// The manifest's digest, or the config's for a legacy Docker archive.
    pub digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Calls `read` with layer `i`'s tar stream, verified (see [`with_layer`]).
    pub fn read_layer<T, E: From<io::Error>>(
        &self,
        i: usize,
        read: impl FnOnce(&mut dyn io::BufRead) -> Result<T, E>,
    ) -> Result<T, E> {
        let l = &self.layers[i];
        let (blob, _) = self.source.open_file(&l.file)?;
        with_layer(
            LayerSpec {
                blob,
                digest: l.digest.clone(),
                expected: l.compression,
                diff_id: l.diff_id.clone(),
            },
            read,
        )
    }

    fn bad(&self, what: impl Into<String>) -> OciError {
        OciError {
            path: self.path.clone(),
            what: what.into(),
        }
    }
}

/// What to pick when a file holds several images.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// `NAME:TAG` (or a bare tag, or a name meaning `:latest`).
    pub reference: Option<String>,
    /// `os/arch[/variant]`; default: the host's.
    pub platform: Option<String>,
}

/// The host's platform in OCI's words.
pub fn host_platform() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux".into(), arch.into())
}

/// Whether `path` looks like an image: a layout folder, or a tar holding `oci-layout` or
/// `manifest.json` at its top. A tar stops being a candidate at its first name that no
/// image holds, so a root filesystem's tar is not read through.
pub fn is_image(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("oci-layout").is_file() || path.join("index.json").is_file();
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = [0u8; 512];
    let read = std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0);
    if read.is_err() || !crate::archive::tar::detect(&head) {
        return false;
    }
    let mut archive = ::tar::Archive::new(&file);
    let Ok(entries) = archive.entries_with_seek() else {
        return false;
    };
    for entry in entries.raw(true) {
        let Ok(entry) = entry else { return false };
        use ::tar::EntryType as T;
        if matches!(
            entry.header().entry_type(),
            T::XHeader | T::XGlobalHeader | T::GNULongName | T::GNULongLink
        ) {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
        let name = name.trim_start_matches("./");
        if matches!(name, "oci-layout" | "manifest.json" | "index.json") {
            return true;
        }
        let first = name.split('/').next().unwrap_or("");
        let hexish = |s: &str| s.len() >= 64 && s[..64].bytes().all(|b| b.is_ascii_hexdigit());
        if !(first.is_empty() || first == "blobs" || first == "repositories" || hexish(first)) {
            return false;
        }
    }
    false
}

/// Opens `path` and chooses one image in it.
pub fn open(path: &Path, sel: &Selector) -> Result<Image, OciError> {
    let bad = |what: String| OciError {
        path: path.to_path_buf(),
        what,
    };
    let source = Source::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let (os, arch) = match &sel.platform {
        Some(p) => {
            let mut parts = p.split('/');
            match (parts.next(), parts.next()) {
                (Some(os), Some(arch)) if !os.is_empty() && !arch.is_empty() => {
                    (os.to_string(), arch.to_string())
                }
                _ => {
                    return Err(bad(format!(
                        "platform {p:?}: expected OS/ARCH, like linux/amd64"
                    )));
                }
            }
        }
        None => host_platform(),
    };
    let mut image = Image {
        source,
        path: path.to_path_buf(),
        // Set by load_manifest or load_docker before the image is returned.
        digest: Digest::of(b""),
        config: ImageConfig::default(),
        layers: Vec::new(),
    };
    if image.source.has("index.json") {
        let index: Index = read_json(&image, "index.json")?;
        let mut found = Vec::new();
        collect(
            &image,
            &index.manifests,
            None,
            &(os.clone(), arch.clone()),
            0,
            &mut found,
        )?;
        let chosen = choose(&image, found, sel)?;
        load_manifest(&mut image, &chosen)?;
    } else if image.source.has("manifest.json") {
        let entries: Vec<DockerEntry> = read_json(&image, "manifest.json")?;
        load_docker(&mut image, entries, sel)?;
    } else {
        return Err(image.bad("not an image: no index.json (OCI) or manifest.json (Docker)"));
    }
    if !image.config.os.is_empty()
        && !image.config.architecture.is_empty()
        && (image.config.os != os || image.config.architecture != arch)
    {
        return Err(image.bad(format!(
            "the image is for {}/{}, not {os}/{arch} (choose with platform = \"OS/ARCH\")",
            image.config.os, image.config.architecture
        )));
    }
    Ok(image)
}

fn read_json<T: serde::de::DeserializeOwned>(image: &Image, name: &str) -> Result<T, OciError> {
    let bytes = image
        .source
        .read_small(name)
        .map_err(|e| image.bad(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| image.bad(format!("{name}: {e}")))
}

/// A blob named by a descriptor, read whole (JSON), checked against its digest and size.
fn read_blob(image: &Image, d: &Descriptor) -> Result<Vec<u8>, OciError> {
    let digest = parse_digest(image, &d.digest)?;
    let bytes = image
        .source
        .read_small(&digest.blob_path())
        .map_err(|e| image.bad(format!("blob {digest}: {e}")))?;
    if bytes.len() as u64 != d.size {
        return Err(image.bad(format!(
            "blob {digest}: {} bytes where the descriptor says {}",
            bytes.len(),
            d.size
        )));
    }
    let got = crate::digest::sha256_hex(&bytes);
    if got != digest.hex() {
        return Err(image.bad(format!("blob {digest}: the data's sha256 is {got}")));
    }
    Ok(bytes)
}

fn parse_digest(image: &Image, s: &str) -> Result<Digest, OciError> {
    Digest::parse(s).ok_or_else(|| {
        image.bad(format!(
            "digest {s:?}: expected sha256: and 64 lower-case hex digits"
        ))
    })
}

/// A manifest found through the index: its descriptor and the names it goes by.
struct Candidate {
    descriptor: Descriptor,
    names: Vec<String>,
}

/// Walks (nested) indexes for image manifests of the platform. Blobs of other platforms
/// may be missing (Docker saves only one), so they are not opened.
fn collect(
    image: &Image,
    list: &[Descriptor],
    names: Option<&[String]>,
    platform: &(String, String),
    depth: u32,
    out: &mut Vec<Candidate>,
) -> Result<(), OciError> {
    if depth > 4 {
        return Err(image.bad("indexes nested more than four deep"));
    }
    for d in list {
        if let Some(p) = &d.platform
            && (p.os != platform.0 || p.architecture != platform.1)
        {
            continue;
        }
        let mut here: Vec<String> = [spec::CONTAINERD_NAME, spec::REF_NAME]
            .iter()
            .filter_map(|k| d.annotations.get(*k).cloned())
            .collect();
        if here.is_empty() {
            here = names.map(<[String]>::to_vec).unwrap_or_default();
        }
        match d.media_type.as_str() {
            spec::INDEX | spec::DOCKER_LIST => {
                let bytes = read_blob(image, d)?;
                let nested: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| image.bad(format!("index {}: {e}", d.digest)))?;
                collect(
                    image,
                    &nested.manifests,
                    Some(&here),
                    platform,
                    depth + 1,
                    out,
                )?;
            }
            spec::MANIFEST | spec::DOCKER_MANIFEST => out.push(Candidate {
                descriptor: d.clone(),
                names: here,
            }),
            // Attestations and other artifacts are not images.
            _ => {}
        }
    }
    Ok(())
}

/// Whether an image's name matches what the recipe asked for.
fn matches(names: &[String], wanted: &str) -> bool {
    let with_tag = if wanted
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
    {
        wanted.to_string()
    } else {
        format!("{wanted}:latest")
    };
    names.iter().any(|n| {
        n == wanted
            || n == &with_tag
            || n.ends_with(&format!("/{with_tag}"))
            || n.ends_with(&format!("/{wanted}"))
    })
}

fn choose(image: &Image, found: Vec<Candidate>, sel: &Selector) -> Result<Descriptor, OciError> {
    let mut found = found;
    if let Some(r) = &sel.reference {
        found.retain(|c| matches(&c.names, r));
    }
    match found.len() {
        1 => Ok(found.remove(0).descriptor),
        0 => Err(image.bad(match &sel.reference {
            Some(r) => format!("no image named {r:?} for this platform"),
            None => "no image for this platform".into(),
        })),
        _ => {
            let names: Vec<String> = found
                .iter()
                .map(|c| {
                    c.names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| c.descriptor.digest.clone())
                })
                .collect();
            Err(image.bad(format!(
                "holds {} images; choose one with ref = \"...\": {}",
                names.len(),
                names.join(", ")
            )))
        }
    }
}

fn load_manifest(image: &mut Image, d: &Descriptor) -> Result<(), OciError> {
    let bytes = read_blob(image, d)?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| image.bad(format!("manifest {}: {e}", d.digest)))?;
    image.digest = parse_digest(image, &d.digest)?;
    let config_bytes = read_blob(image, &manifest.config)?;
    image.config = serde_json::from_slice(&config_bytes)
        .map_err(|e| image.bad(format!("config {}: {e}", manifest.config.digest)))?;
    if manifest.layers.len() != image.config.rootfs.diff_ids.len() {
        return Err(image.bad(format!(
            "the manifest has {} layers but the config {} diff_ids",
            manifest.layers.len(),
            image.config.rootfs.diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (l, diff) in manifest.layers.iter().zip(&image.config.rootfs.diff_ids) {
        let digest = parse_digest(image, &l.digest)?;
        let compression = layer::media_compression(&l.media_type).ok_or_else(|| {
            image.bad(format!(
                "layer {digest}: media type {:?} is not a layer",
                l.media_type
            ))
        })?;
        layers.push(Layer {
            file: digest.blob_path(),
            digest: Some((digest, l.size)),
            compression: Some(compression),
            media_type: Some(l.media_type.clone()),
            diff_id: parse_digest(image, diff)?,
        });
    }
    image.layers = layers;
    Ok(())
}

/// A Docker archive: the config is named by its digest (legacy `HEX.json`, or
/// `blobs/sha256/HEX` since Docker 25); layers are checked against the config's diff_ids
/// and, where their name is a blob path, against that digest too.
fn load_docker(
    image: &mut Image,
    entries: Vec<DockerEntry>,
    sel: &Selector,
) -> Result<(), OciError> {
    let found: Vec<Candidate> = entries
        .iter()
        .map(|e| Candidate {
            descriptor: Descriptor {
                media_type: String::new(),
                digest: e.config.clone(),
                size: 0,
                platform: None,
                annotations: Default::default(),
            },
            names: e.repo_tags.clone().unwrap_or_default(),
        })
        .collect();
    let chosen = choose(image, found, sel)?.digest;
    let entry = entries
        .into_iter()
        .find(|e| e.config == chosen)
        .ok_or_else(|| image.bad("manifest.json changed while read"))?;
    let config_digest = digest_of_name(&entry.config).ok_or_else(|| {
        image.bad(format!(
            "config {:?}: not named by its digest",
            entry.config
        ))
    })?;
    let bytes = image
        .source
        .read_small(&entry.config)
        .map_err(|e| image.bad(e.to_string()))?;
    let got = crate::digest::sha256_hex(&bytes);
    if got != config_digest.hex() {
        return Err(image.bad(format!(
            "config {config_digest}: the data's sha256 is {got}"
        )));
    }
    image.digest = config_digest;
    image.config = serde_json::from_slice(&bytes)
        .map_err(|e| image.bad(format!("config {}: {e}", entry.config)))?;
    if entry.layers.len() != image.config.rootfs.diff_ids.len() {
        return Err(image.bad(format!(
            "manifest.json lists {} layers but the config {} diff_ids",
            entry.layers.len(),
            image.config.rootfs.diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (file, diff) in entry.layers.iter().zip(&image.config.rootfs.diff_ids) {
        let diff_id = parse_digest(image, diff)?;
        // Docker 25+: blobs/sha256/HEX, the blob's own digest; size from the archive.
        let digest = file
            .strip_prefix("blobs/sha256/")
            .and_then(Digest::from_hex)
            .map(|d| {
                let (_, size) = image
                    .source
                    .open_file(file)
                    .map_err(|e| image.bad(e.to_string()))?;
                Ok::<_, OciError>((d, size))
            })
            .transpose()?;
        layers.push(Layer {
            file: file.clone(),
            digest,
            compression: None,
            media_type: None,
            diff_id,
        });
    }
    image.layers = layers;
    Ok(())
}

/// `HEX.json` or `blobs/sha256/HEX`: the digest a Docker archive names a config by.
fn digest_of_name(name: &str) -> Option<Digest> {
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))?;
    Digest::from_hex(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_match_as_docker_names_them() {
        let names = vec!["docker.io/library/busybox:1.36".to_string()];
        assert!(matches(&names, "busybox:1.36"));
        assert!(matches(&names, "docker.io/library/busybox:1.36"));
        assert!(!matches(&names, "busybox"));
        let latest = vec!["localhost/rp-test:latest".to_string()];
        assert!(matches(&latest, "rp-test"));
        assert!(matches(&latest, "rp-test:latest"));
        assert!(!matches(&latest, "rp"));
        assert!(matches(&["latest".to_string()], "latest"));
    }
}
