//! The recipe as the build uses it: every path checked, every value parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RunStep;
use crate::archive::Compression;
use crate::archive::pack::PackFormat;
use crate::tree::safe_path::RelPath;

/// Defaults for `run`, recorded in the manifest.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Config {
    /// `self` over `base`, key by key; env and labels merged by name.
    pub fn over(&self, base: &Config) -> Config {
        let mut env = base.env.clone();
        env.extend(self.env.clone());
        let mut labels = base.labels.clone();
        labels.extend(self.labels.clone());
        let pick =
            |a: &Vec<String>, b: &Vec<String>| if a.is_empty() { b.clone() } else { a.clone() };
        Config {
            entrypoint: pick(&self.entrypoint, &base.entrypoint),
            cmd: pick(&self.cmd, &base.cmd),
            env,
            workdir: self.workdir.clone().or_else(|| base.workdir.clone()),
            hostname: self.hostname.clone().or_else(|| base.hostname.clone()),
            user: self.user.clone().or_else(|| base.user.clone()),
            labels,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Limits {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    Initramfs(PathBuf),
    Tar(PathBuf),
    Dir(PathBuf),
    /// An OCI layout, OCI archive or Docker archive, and which image in it.
    Oci {
        path: PathBuf,
        reference: Option<String>,
        platform: Option<String>,
    },
}

impl Layer {
    pub fn path(&self) -> &Path {
        match self {
            Layer::Initramfs(p) | Layer::Tar(p) | Layer::Dir(p) | Layer::Oci { path: p, .. } => p,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Initramfs(_) => "initramfs",
            Layer::Tar(_) => "tar",
            Layer::Dir(_) => "dir",
            Layer::Oci { .. } => "oci",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Binary {
    pub host: PathBuf,
    /// Where it goes in the image; default: the same path as on the host.
    pub to: Option<RelPath>,
    /// Symlinks to the program (busybox applets, `sh -> bash`).
    pub links: Vec<RelPath>,
}

#[derive(Debug, Clone)]
pub enum FileSource {
    Inline(Vec<u8>),
    Host(PathBuf),
}

#[derive(Debug, Clone)]
pub struct FileItem {
    pub to: RelPath,
    pub source: FileSource,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct DirItem {
    pub path: RelPath,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct SymlinkItem {
    pub path: RelPath,
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Ext4,
    Archive(PackFormat, Compression),
    Dir,
    /// An OCI image layout folder, `NAME.oci`.
    Oci,
    /// The layout as a tar with Docker's manifest.json, `NAME.oci.tar`.
    OciArchive,
}

impl OutputFormat {
    /// Every format a recipe may ask for: the one list names, extensions and the
    /// manifest's path come from.
    pub const ALL: [OutputFormat; 13] = {
        use Compression as C;
        use PackFormat::{Cpio, Tar};
        [
            OutputFormat::Ext4,
            OutputFormat::Archive(Cpio, C::None),
            OutputFormat::Archive(Cpio, C::Gzip),
            OutputFormat::Archive(Cpio, C::Zstd),
            OutputFormat::Archive(Cpio, C::Xz),
            OutputFormat::Archive(Cpio, C::Lz4),
            OutputFormat::Archive(Tar, C::None),
            OutputFormat::Archive(Tar, C::Gzip),
            OutputFormat::Archive(Tar, C::Zstd),
            OutputFormat::Archive(Tar, C::Xz),
            OutputFormat::Dir,
            OutputFormat::Oci,
            OutputFormat::OciArchive,
        ]
    };

    /// The image file's extension: `ext4`, `cpio.zst`, ...
    pub fn extension(&self) -> String {
        match self {
            OutputFormat::Ext4 => "ext4".into(),
            OutputFormat::Dir => "d".into(),
            OutputFormat::Oci => "oci".into(),
            OutputFormat::OciArchive => "oci.tar".into(),
            OutputFormat::Archive(f, c) => {
                let base = match f {
                    PackFormat::Cpio => "cpio",
                    PackFormat::Tar => "tar",
                };
                match c {
                    Compression::None => base.into(),
                    Compression::Gzip => format!("{base}.gz"),
                    Compression::Zstd => format!("{base}.zst"),
                    Compression::Xz => format!("{base}.xz"),
                    Compression::Lz4 => format!("{base}.lz4"),
                    // Not in ALL: no recipe can ask for these.
                    other => format!("{base}.{other}"),
                }
            }
        }
    }

    /// The name `output.format` takes: the extension, but `dir` for a folder.
    pub fn name(&self) -> String {
        match self {
            OutputFormat::Dir => "dir".into(),
            OutputFormat::OciArchive => "oci-archive".into(),
            other => other.extension(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Auto,
    Bytes(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `populate` when reproducibility is asked for (a source date epoch) or without
    /// root, else `mount`, which measured faster.
    Auto,
    /// `mke2fs -d`: no loop device, no mount; reproducible.
    Populate,
    /// Sparse file, mkfs, loop device, mount, copy.
    Mount,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Populate => "populate",
            Method::Mount => "mount",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Output {
    pub format: OutputFormat,
    pub size: Size,
    pub method: Method,
    pub label: Option<String>,
    /// OCI outputs: `NAME:TAG` (default `NAME:latest`).
    pub tag: Option<String>,
    /// OCI outputs: the layer's compression, gzip (default) or zstd.
    pub layer_zstd: bool,
}

#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    pub sha256: String,
    pub name: String,
    pub source_date_epoch: Option<i64>,
    pub layers: Vec<Layer>,
    pub binaries: Vec<Binary>,
    pub files: Vec<FileItem>,
    pub dirs: Vec<DirItem>,
    pub symlinks: Vec<SymlinkItem>,
    pub mountpoints: Vec<RelPath>,
    pub config: Config,
    pub limits: Limits,
    pub output: Output,
    /// `[[run]]` steps, in recipe order.
    pub steps: Vec<RunStep>,
}
