//! The recipe file as written: serde structs mirroring the TOML, every value a resolver
//! may reject kept with its span so the error can name its line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::run_step::RunSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecipeFile {
    pub name: Spanned<String>,
    pub source_date_epoch: Option<Spanned<i64>>,
    #[serde(default, rename = "layer")]
    pub layers: Vec<Spanned<LayerSpec>>,
    #[serde(default, rename = "binary")]
    pub binaries: Vec<BinarySpec>,
    #[serde(default, rename = "file")]
    pub files: Vec<Spanned<FileSpec>>,
    #[serde(default, rename = "dir")]
    pub dirs: Vec<DirSpec>,
    #[serde(default, rename = "symlink")]
    pub symlinks: Vec<SymlinkSpec>,
    #[serde(default)]
    pub mountpoints: Vec<Spanned<String>>,
    #[serde(default)]
    pub config: ConfigSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default)]
    pub output: OutputSpec,
    #[serde(default, rename = "run")]
    pub steps: Vec<Spanned<RunSpec>>,
    pub modules: Option<Spanned<ModulesSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModulesSpec {
    pub kernel: Spanned<String>,
    pub names: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    pub firmware: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayerSpec {
    pub initramfs: Option<Spanned<String>>,
    pub tar: Option<Spanned<String>>,
    pub dir: Option<Spanned<String>>,
    pub oci: Option<Spanned<String>>,
    #[serde(rename = "ref")]
    pub reference: Option<Spanned<String>>,
    pub platform: Option<Spanned<String>>,
    pub tls_verify: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BinarySpec {
    pub path: Spanned<String>,
    pub to: Option<Spanned<String>>,
    #[serde(default)]
    pub links: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    pub to: Spanned<String>,
    pub content: Option<String>,
    pub from: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub after_steps: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirSpec {
    pub path: Spanned<String>,
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SymlinkSpec {
    pub path: Spanned<String>,
    pub target: String,
}

/// `[config]`: the keys and their order are those of [`super::Config`], so serde's
/// "expected one of" lists read the same.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigSpec {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub sysctl: BTreeMap<Spanned<String>, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSpec {
    pub memory: Option<Spanned<String>>,
    pub cpus: Option<Spanned<f64>>,
    pub pids: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutputSpec {
    pub format: Option<Spanned<String>>,
    pub size: Option<Spanned<String>>,
    pub method: Option<Spanned<String>>,
    pub label: Option<Spanned<String>>,
    pub tag: Option<Spanned<String>>,
    pub layer_compression: Option<Spanned<String>>,
    pub free: Option<Spanned<String>>,
    pub package_files: Option<Spanned<String>>,
}
