//! The sidecar JSON written beside every image: what it is, how to run it, how it was made.
//! `run` reads its config and limits, `inspect` prints and verifies it, CI archives it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::OutputFormat;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    /// The image file name, relative to the manifest.
    pub image: String,
    pub format: String,
    pub size: u64,
    /// Empty (and left out of the JSON) for a folder image, which has no digest.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Changed by `run --writable` since it was built: `size` and `sha256` describe the
    /// image as that run left it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub modified: bool,
    pub config: Config,
    pub limits: Limits,
    pub build: Provenance,
    /// Every image built from the recipe into this folder, by file name (the one above
    /// included): one recipe built to ext4 and then to an OCI archive keeps both
    /// digests, and `run` checks an image against its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, Output>,
}

/// One image a manifest describes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Output {
    pub format: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub modified: bool,
    /// The build's key (see [`Provenance::key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

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
    /// `run` sets no_new_privs, as Docker's `--security-opt no-new-privileges` does:
    /// set-id programs and file capabilities then gain nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// Namespaced kernel parameters `run` writes in the container (see [`crate::sysctl`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
}

impl Config {
    /// A container image's Env, Entrypoint, Cmd, WorkingDir, User and Labels.
    pub fn from_image(c: &crate::archive::oci::spec::ImageConfig) -> Config {
        let Some(c) = &c.config else {
            return Config::default();
        };
        Config {
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            env: c
                .env
                .iter()
                .flatten()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            workdir: c.working_dir.clone().filter(|w| !w.is_empty()),
            hostname: None,
            user: c.user.clone().filter(|u| !u.is_empty()),
            labels: c.labels.clone().unwrap_or_default(),
            // Not in an image's config: a recipe's own.
            no_new_privileges: false,
            sysctl: BTreeMap::new(),
        }
    }

    /// `self` over `base`, key by key; env and labels merged by name.
    pub fn over(&self, base: &Config) -> Config {
        let mut env = base.env.clone();
        env.extend(self.env.clone());
        let mut labels = base.labels.clone();
        labels.extend(self.labels.clone());
        let mut sysctl = base.sysctl.clone();
        sysctl.extend(self.sysctl.clone());
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
            no_new_privileges: self.no_new_privileges || base.no_new_privileges,
            sysctl,
        }
    }
}

/// Resource limits for `run`: from the recipe, recorded in the manifest, applied by the
/// cgroup.
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    pub recipe: String,
    pub recipe_sha256: String,
    pub layers: Vec<LayerRecord>,
    pub rootpack_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    pub files: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e2fsprogs: Option<String>,
    /// An OCI output: its image manifest's digest (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_manifest: Option<String>,
    /// The digest of everything the image was made from (inputs, recipe, format, options):
    /// a build whose key is this one has nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `[modules]`: the kernel release the image's modules are for, and the names asked
    /// for (their dependencies come with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub kind: String,
    pub path: String,
    /// Absent for folders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A container image: its manifest's digest (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A container image: its layers' digests (or diff_ids where the blob has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a rootpack manifest")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The manifest path for an image: `images/hello.ext4` -> `images/hello.json`,
/// `images/my.app.cpio.zst` -> `images/my.app.json`.
pub fn path_for(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The longest extension that matches: `x.oci.tar` is an OCI archive, not a tar.
    let mut extensions: Vec<String> = OutputFormat::ALL.iter().map(|f| f.extension()).collect();
    extensions.sort_by_key(|e| std::cmp::Reverse(e.len()));
    let stem = extensions
        .iter()
        .find_map(|e| name.strip_suffix(&format!(".{e}")))
        .unwrap_or(&name);
    image.with_file_name(format!("{stem}.json"))
}

pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| ManifestError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

impl Manifest {
    /// The JSON, `outputs` holding the image above as it now is.
    pub fn to_json(&self) -> String {
        let mut m = self.clone();
        m.outputs.insert(m.image.clone(), self.this_output());
        let mut s = serde_json::to_string_pretty(&m).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The image above as an entry of `outputs`.
    fn this_output(&self) -> Output {
        Output {
            format: self.format.clone(),
            size: self.size,
            sha256: self.sha256.clone(),
            modified: self.modified,
            key: self.build.key.clone(),
        }
    }

    /// The manifest as it describes the image file `name`: its format, size and digest
    /// from `outputs` when another build of the recipe was the last to write it.
    pub fn for_image(mut self, name: &str) -> Manifest {
        if self.image != name
            && let Some(o) = self.outputs.get(name).cloned()
        {
            self.image = name.to_string();
            (self.format, self.size, self.sha256, self.modified) =
                (o.format, o.size, o.sha256, o.modified);
            self.build.key = o.key;
        }
        self
    }

    /// Keeps what `previous` (the manifest this one replaces) says of the other images
    /// still in `dir`.
    pub fn keep_other_outputs(&mut self, previous: Manifest, dir: &Path) {
        let top = previous.this_output();
        let mut outputs = previous.outputs;
        outputs.entry(previous.image).or_insert(top);
        for (name, output) in outputs {
            let elsewhere = name != self.image && !name.contains('/');
            if elsewhere && dir.join(&name).exists() {
                self.outputs.entry(name).or_insert(output);
            }
        }
    }

    /// Writes the manifest to `path` atomically (beside, fsynced, renamed).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut file = crate::fsutil::AtomicFile::create(path)?;
        std::io::Write::write_all(file.file(), self.to_json().as_bytes())?;
        file.commit()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifest_beside_image() {
        let p = |s: &str| super::path_for(std::path::Path::new(s));
        assert_eq!(
            p("images/hello.ext4"),
            std::path::Path::new("images/hello.json")
        );
        assert_eq!(
            p("i/my.app.cpio.zst"),
            std::path::Path::new("i/my.app.json")
        );
        assert_eq!(p("i/x.d"), std::path::Path::new("i/x.json"));
        assert_eq!(p("i/x.oci.tar"), std::path::Path::new("i/x.json"));
        assert_eq!(p("i/x.tar"), std::path::Path::new("i/x.json"));
    }
}
