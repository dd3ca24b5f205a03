//! The recipe: a TOML file kept in version control that says what goes into an image.
//! Parsing is strict (unknown keys are errors); every error names the recipe file, the
//! line and the key. Relative paths are relative to the recipe's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::archive::Compression;
use crate::archive::pack::PackFormat;
use crate::tree::safe_path::RelPath;

pub mod confine;
mod run_step;
pub use run_step::{RunStep, StepCommand, StepMount, StepNetwork, parse_duration};

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    name: Spanned<String>,
    source_date_epoch: Option<Spanned<i64>>,
    #[serde(default, rename = "layer")]
    layers: Vec<Spanned<LayerSpec>>,
    #[serde(default, rename = "binary")]
    binaries: Vec<BinarySpec>,
    #[serde(default, rename = "file")]
    files: Vec<Spanned<FileSpec>>,
    #[serde(default, rename = "dir")]
    dirs: Vec<DirSpec>,
    #[serde(default, rename = "symlink")]
    symlinks: Vec<SymlinkSpec>,
    #[serde(default)]
    mountpoints: Vec<Spanned<String>>,
    #[serde(default)]
    config: Config,
    #[serde(default)]
    limits: LimitsSpec,
    #[serde(default)]
    output: OutputSpec,
    #[serde(default, rename = "run")]
    steps: Vec<Spanned<run_step::RunSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerSpec {
    initramfs: Option<Spanned<String>>,
    tar: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
    oci: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    reference: Option<Spanned<String>>,
    platform: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BinarySpec {
    path: Spanned<String>,
    to: Option<Spanned<String>>,
    #[serde(default)]
    links: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    to: Spanned<String>,
    content: Option<String>,
    from: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSpec {
    path: Spanned<String>,
    mode: Option<Spanned<String>>,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SymlinkSpec {
    path: Spanned<String>,
    target: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSpec {
    memory: Option<Spanned<String>>,
    cpus: Option<Spanned<f64>>,
    pids: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSpec {
    format: Option<Spanned<String>>,
    size: Option<Spanned<String>>,
    method: Option<Spanned<String>>,
    label: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    layer_compression: Option<Spanned<String>>,
}

// ---- the recipe as the build uses it ----

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

/// Parses "256M", "1G", "4096", "512MiB" into bytes (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

fn parse_format(s: &str) -> Option<OutputFormat> {
    OutputFormat::ALL.into_iter().find(|f| f.name() == s)
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    dir: PathBuf,
    kernel: String,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, RecipeError> {
        Err(RecipeError::At {
            path: self.path.to_path_buf(),
            line: self.line(span.start),
            message: message.into(),
        })
    }

    /// A host path from the recipe: `{kernel}` and `{latest}` expanded, relative to the
    /// recipe, must exist.
    fn host_path(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf, RecipeError> {
        let mut expanded = value.get_ref().replace("{kernel}", &self.kernel);
        if expanded.contains("{latest}") {
            expanded = crate::recipe_hints::expand_latest(&self.dir, &expanded)
                .or_else(|message| self.err(value.span(), format!("{key}: {message}")))?;
        }
        let path = self.dir.join(&expanded);
        if std::fs::symlink_metadata(&path).is_err() {
            return self.err(
                value.span(),
                format!("{key} = \"{expanded}\": {} does not exist", path.display()),
            );
        }
        Ok(path)
    }

    /// A path inside the image: absolute, no `..`.
    fn image_path(&self, key: &str, value: &Spanned<String>) -> Result<RelPath, RecipeError> {
        let v = value.get_ref();
        if !v.starts_with('/') {
            return self.err(
                value.span(),
                format!("{key} = \"{v}\": must be an absolute path in the image"),
            );
        }
        match RelPath::parse(v.as_bytes()) {
            Ok(p) if !p.is_root() => Ok(p),
            Ok(_) => self.err(
                value.span(),
                format!("{key} = \"{v}\": cannot be the root folder"),
            ),
            Err(e) => self.err(value.span(), format!("{key} = \"{v}\": {e}")),
        }
    }

    fn mode(
        &self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: u32,
    ) -> Result<u32, RecipeError> {
        let Some(v) = value else { return Ok(default) };
        match u32::from_str_radix(v.get_ref().trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 => Ok(m),
            _ => self.err(
                v.span(),
                format!(
                    "{key} = \"{}\": not an octal mode like \"0644\"",
                    v.get_ref()
                ),
            ),
        }
    }
}

/// Reads, validates and resolves a recipe file.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let bytes = std::fs::read(path).map_err(|source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| RecipeError::At {
        path: path.to_path_buf(),
        line: 1,
        message: "not UTF-8 text".into(),
    })?;
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let ctx = Ctx {
        path,
        text,
        // Absolute, so host paths in the recipe mean the same from any working folder.
        dir: std::path::absolute(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .map_err(|source| RecipeError::Read {
            path: path.to_path_buf(),
            source,
        })?,
        kernel,
    };
    let file: RecipeFile = toml::from_str(text).map_err(|e| RecipeError::At {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| ctx.line(s.start)),
        message: crate::recipe_hints::explain(text, e.span(), &e.message().replace('\n', " ")),
    })?;

    let name = file.name.get_ref();
    let valid_name = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid_name {
        return ctx.err(
            file.name.span(),
            format!("name = \"{name}\": use letters, digits, '.', '_' and '-'"),
        );
    }

    let mut layers = Vec::new();
    for spec in &file.layers {
        let l = spec.get_ref();
        let given: Vec<_> = [
            ("initramfs", &l.initramfs),
            ("tar", &l.tar),
            ("dir", &l.dir),
            ("oci", &l.oci),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let [(key, value)] = given[..] else {
            return ctx.err(
                spec.span(),
                "[[layer]] needs exactly one of initramfs, tar, dir or oci",
            );
        };
        if key != "oci"
            && let Some(extra) = l.reference.as_ref().or(l.platform.as_ref())
        {
            return ctx.err(
                extra.span(),
                "layer.ref and layer.platform go with layer.oci",
            );
        }
        if let Some(p) = &l.platform
            && p.get_ref().split('/').filter(|s| !s.is_empty()).count() < 2
        {
            return ctx.err(
                p.span(),
                format!(
                    "layer.platform = \"{}\": expected OS/ARCH, like \"linux/amd64\"",
                    p.get_ref()
                ),
            );
        }
        let path = ctx.host_path(&format!("layer.{key}"), value)?;
        layers.push(match key {
            "initramfs" => Layer::Initramfs(path),
            "tar" => Layer::Tar(path),
            "oci" => Layer::Oci {
                path,
                reference: l.reference.as_ref().map(|r| r.get_ref().clone()),
                platform: l.platform.as_ref().map(|p| p.get_ref().clone()),
            },
            _ => Layer::Dir(path),
        });
    }

    let mut binaries = Vec::new();
    for b in &file.binaries {
        let p = b.path.get_ref();
        let host = if p.contains('/') {
            ctx.host_path("binary.path", &b.path)?
        } else {
            match find_in_path(p) {
                Some(found) => found,
                None => {
                    return ctx.err(
                        b.path.span(),
                        format!("binary.path = \"{p}\": not found in PATH"),
                    );
                }
            }
        };
        if let Some(why) = crate::recipe_hints::not_a_program(&host) {
            return ctx.err(
                b.path.span(),
                format!(
                    "binary.path = \"{p}\": {why}; [[binary]] takes programs (ELF or #! \
                     scripts), [[file]] copies other files"
                ),
            );
        }
        let to =
            b.to.as_ref()
                .map(|t| ctx.image_path("binary.to", t))
                .transpose()?;
        let links = b
            .links
            .iter()
            .map(|l| ctx.image_path("binary.links", l))
            .collect::<Result<_, _>>()?;
        binaries.push(Binary { host, to, links });
    }

    let mut files = Vec::new();
    for spec in &file.files {
        let f = spec.get_ref();
        let source = match (&f.content, &f.from) {
            (Some(c), None) => FileSource::Inline(c.clone().into_bytes()),
            (None, Some(from)) => FileSource::Host(ctx.host_path("file.from", from)?),
            _ => return ctx.err(spec.span(), "[[file]] needs exactly one of content or from"),
        };
        files.push(FileItem {
            to: ctx.image_path("file.to", &f.to)?,
            source,
            mode: ctx.mode("file.mode", &f.mode, 0o644)?,
            uid: f.uid,
            gid: f.gid,
        });
    }

    let mut dirs = Vec::new();
    for d in &file.dirs {
        dirs.push(DirItem {
            path: ctx.image_path("dir.path", &d.path)?,
            mode: ctx.mode("dir.mode", &d.mode, 0o755)?,
            uid: d.uid,
            gid: d.gid,
        });
    }
    let symlinks = file
        .symlinks
        .iter()
        .map(|s| {
            Ok(SymlinkItem {
                path: ctx.image_path("symlink.path", &s.path)?,
                target: s.target.clone(),
            })
        })
        .collect::<Result<_, RecipeError>>()?;
    let mountpoints = file
        .mountpoints
        .iter()
        .map(|m| ctx.image_path("mountpoints", m))
        .collect::<Result<_, _>>()?;

    let memory = match &file.limits.memory {
        None => None,
        Some(m) => match parse_size(m.get_ref()) {
            Some(b) if b >= 1 << 20 => Some(b),
            _ => {
                return ctx.err(
                    m.span(),
                    format!(
                        "limits.memory = \"{}\": a size of at least 1M, like \"256M\"",
                        m.get_ref()
                    ),
                );
            }
        },
    };
    let cpus = match &file.limits.cpus {
        Some(c) if !(*c.get_ref() > 0.0 && c.get_ref().is_finite()) => {
            return ctx.err(c.span(), "limits.cpus: must be a positive number");
        }
        c => c.as_ref().map(|c| *c.get_ref()),
    };

    let out = &file.output;
    let format = match &out.format {
        None => OutputFormat::Ext4,
        Some(f) => match parse_format(f.get_ref()) {
            Some(v) => v,
            None => {
                let names: Vec<String> = OutputFormat::ALL.iter().map(OutputFormat::name).collect();
                return ctx.err(
                    f.span(),
                    format!(
                        "output.format = \"{}\": one of {}",
                        f.get_ref(),
                        names.join(", ")
                    ),
                );
            }
        },
    };
    let size =
        match &out.size {
            None => Size::Auto,
            Some(s) if s.get_ref() == "auto" => Size::Auto,
            Some(s) => match parse_size(s.get_ref()) {
                Some(b) if b >= 1 << 20 => Size::Bytes(b),
                _ => return ctx.err(
                    s.span(),
                    format!(
                        "output.size = \"{}\": \"auto\" or a size of at least 1M, like \"512M\"",
                        s.get_ref()
                    ),
                ),
            },
        };
    let method = match out.method.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "auto")) => Method::Auto,
        Some((_, "populate")) => Method::Populate,
        Some((_, "mount")) => Method::Mount,
        Some((m, other)) => {
            return ctx.err(
                m.span(),
                format!("output.method = \"{other}\": one of auto, populate, mount"),
            );
        }
    };
    let label = match &out.label {
        Some(l) if l.get_ref().len() > 16 => {
            return ctx.err(l.span(), "output.label: at most 16 bytes (an ext4 limit)");
        }
        l => l.as_ref().map(|l| l.get_ref().clone()),
    };
    let tag = match &out.tag {
        Some(t) if !valid_tag(t.get_ref()) => {
            return ctx.err(
                t.span(),
                format!(
                    "output.tag = \"{}\": NAME:TAG, like \"{name}:1.0\" (lower-case name; letters, digits, '.', '_', '-' in the tag)",
                    t.get_ref()
                ),
            );
        }
        t => t.as_ref().map(|t| t.get_ref().clone()),
    };
    let layer_zstd = match out
        .layer_compression
        .as_ref()
        .map(|c| (c, c.get_ref().as_str()))
    {
        None | Some((_, "gzip")) => false,
        Some((_, "zstd")) => true,
        Some((c, other)) => {
            return ctx.err(
                c.span(),
                format!("output.layer_compression = \"{other}\": gzip or zstd"),
            );
        }
    };

    let steps = run_step::resolve(&ctx, &file.steps)?;

    Ok(Recipe {
        path: path.to_path_buf(),
        sha256: crate::digest::sha256_hex(&bytes),
        name: name.clone(),
        source_date_epoch: file.source_date_epoch.map(|s| *s.get_ref()),
        layers,
        binaries,
        files,
        dirs,
        symlinks,
        mountpoints,
        config: {
            if let Some(u) = &file.config.user
                && crate::run::user::UserSpec::parse(u).is_none()
            {
                // Find the key's line: the config table is parsed without spans.
                #[derive(Deserialize)]
                struct Spans {
                    config: Option<UserSpan>,
                }
                #[derive(Deserialize)]
                struct UserSpan {
                    user: Option<Spanned<String>>,
                }
                let span = toml::from_str::<Spans>(text)
                    .ok()
                    .and_then(|s| s.config?.user)
                    .map_or(0..0, |u| u.span());
                return ctx.err(
                    span,
                    format!("config.user = \"{u}\": expected UID[:GID] or NAME[:GROUP]"),
                );
            }
            file.config
        },
        limits: Limits {
            memory,
            cpus,
            pids: file.limits.pids,
        },
        output: Output {
            format,
            size,
            method,
            label,
            tag,
            layer_zstd,
        },
        steps,
    })
}

/// An image reference's name and tag: `registry.example:5000/team/app:1.0`.
fn valid_tag(s: &str) -> bool {
    let Some((name, tag)) = s.rsplit_once(':') else {
        return false;
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
        });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.contains('/')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    name_ok && tag_ok
}

/// `UID[:GID]`, numeric; the gid defaults to the uid.
pub fn parse_uid_gid(s: &str) -> Option<(u32, u32)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// Looks a program up in `PATH`, as a shell would.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| crate::recipe_hints::not_a_program(p).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Recipe, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        load(&path).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "D")
        })
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = load_str("name = \"x\"\n\n[output]\nformatt = \"ext4\"\n").unwrap_err();
        assert!(e.starts_with("D/r.toml:4: unknown field `formatt`"), "{e}");
        let e = load_str("name = \"x\"\n[[layer]]\ntar = \"missing.tar\"\n").unwrap_err();
        assert!(
            e.contains("r.toml:3: layer.tar = \"missing.tar\"") && e.contains("does not exist"),
            "{e}"
        );
        let e = load_str("name = \"x\"\n[limits]\npids = \"many\"\n").unwrap_err();
        assert!(
            e.starts_with("D/r.toml:3: limits.pids: invalid type"),
            "{e}"
        );
        let e =
            load_str("name = \"x\"\n[[file]]\nto = \"etc/motd\"\ncontent = \"\"\n").unwrap_err();
        assert!(
            e.contains(":3: file.to = \"etc/motd\": must be an absolute path"),
            "{e}"
        );
        let e = load_str("name = \"x\"\n[[file]]\nto = \"/a/../b\"\ncontent = \"\"\n").unwrap_err();
        assert!(e.contains("'..'"), "{e}");
        let e = load_str("name = \"../x\"\n").unwrap_err();
        assert!(e.contains(":1: name"), "{e}");
        let e = load_str("name = \"x\"\n[output]\nmethod = \"dd\"\n").unwrap_err();
        assert!(e.contains(":3: output.method = \"dd\""), "{e}");
    }

    #[test]
    fn a_full_recipe_resolves() {
        let r = load_str(
            "name = \"full\"\nsource_date_epoch = 1700000000\nmountpoints = [\"/proc\"]\n\
             [[binary]]\npath = \"sh\"\n[[file]]\nto = \"/etc/motd\"\ncontent = \"hi\"\nmode = \"0600\"\n\
             [config]\nentrypoint = [\"/bin/sh\"]\nenv = { PATH = \"/bin\" }\n\
             [limits]\nmemory = \"64M\"\npids = 10\ncpus = 0.5\n\
             [output]\nformat = \"cpio.zst\"\nsize = \"64M\"\nmethod = \"mount\"\n",
        )
        .unwrap();
        assert_eq!(r.files[0].mode, 0o600);
        assert_eq!(r.limits.memory, Some(64 << 20));
        assert_eq!(r.output.format.extension(), "cpio.zst");
        assert_eq!(r.output.method, Method::Mount);
        assert_eq!(r.mountpoints[0].as_bytes(), b"proc");
        assert!(r.binaries[0].host.ends_with("sh"));
    }
}
