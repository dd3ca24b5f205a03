//! The recipe as the build uses it: every path checked, every value parsed.

use std::path::{Path, PathBuf};

use super::RunStep;
pub use crate::format::OutputFormat;
pub use crate::manifest::{Config, Limits};
use crate::tree::safe_path::RelPath;

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
        /// `docker://NAME[:TAG]`: fetched by skopeo into the build cache before the build,
        /// which then sets `path` and `reference` to the copy there.
        pull: Option<Pull>,
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
    /// Placed once the `[[run]]` steps are done (which then do not see it), so a change to
    /// it does not run them again from the cache.
    pub after_steps: bool,
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
pub enum Size {
    Auto,
    Bytes(u64),
}

/// `[output] free`: room an `auto`-sized ext4 image keeps free after the build, so that a
/// package manager run in it later does not fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Free {
    /// A share of the file system, in percent (at most 90).
    Percent(u8),
    Bytes(u64),
}

/// `[output] package_files`: what is done, after the last `[[run]]` step, with what package
/// managers leave (see `builder::package_files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageFiles {
    /// Removed: what depends on the clock or the host (logs, binary caches).
    Clean,
    /// That, and the downloaded packages and package lists.
    CleanAll,
    /// Left as the steps left them.
    Keep,
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
    /// ext4 of `size = "auto"`: what stays free (default 10 %).
    pub free: Free,
    pub package_files: PackageFiles,
}

/// Where a `docker://` layer comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pull {
    pub source: String,
    /// `layer.tls_verify = false`: a registry without HTTPS (one on 127.0.0.1).
    pub tls_verify: bool,
}

/// `[modules]`: kernel modules with what they need, from one kernel's module folder.
#[derive(Debug, Clone)]
pub struct Modules {
    /// The kernel's release (`6.1.0-57-amd64`).
    pub version: String,
    /// Its module folder (`/lib/modules/VERSION`, or one under a root the recipe names).
    pub dir: PathBuf,
    pub names: Vec<String>,
    /// Take the firmware the modules name, where the kernel's root has it.
    pub firmware: bool,
    /// The `[modules]` line, for errors.
    pub line: usize,
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
    pub modules: Option<Modules>,
}
