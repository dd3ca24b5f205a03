//! `build --untrusted`: a recipe from an untrusted source (an outside contribution built
//! by CI) may read only its own folder and the folders the caller allows.
//!
//! # Security
//!
//! By default a recipe is code, like a Makefile: it names host files (`[[file]] from`,
//! layers, programs and their libraries) and binds host folders into steps, and rootpack's
//! own recipes need that (the host's bash and its libraries, `/boot/initrd.img-*`). A
//! recipe that came with a pull request must not copy `/etc/shadow` or a CI secret into an
//! image that is then published, nor write to the host through a step's mount. Confined:
//!
//! - layers, `[[file]] from` and step mounts: inside the recipe's folder or an `--allow`
//!   folder, after resolving symlinks (a link in the checkout to `/etc` is outside; one
//!   that leads nowhere is refused), and the resolved path is the one then read. Nothing
//!   in or holding a `.git` folder, where CI checkouts keep their token;
//! - programs and everything they bring (shared libraries, the ELF interpreter, a script's
//!   `#!` interpreter), which an untrusted program names itself: inside those folders or
//!   the system's program and library folders;
//! - step mounts become read-only, and `network = "host"` or `"private"` is refused (a
//!   step would reach the host's own services, a cloud's metadata endpoint, a local
//!   database).

use std::path::{Path, PathBuf};

use super::{FileSource, Layer, Recipe, StepNetwork};

/// Where programs and their libraries may come from besides the allowed folders.
const SYSTEM: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local/lib",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("{recipe}: {key}: {what} (--untrusted; --allow DIR lets a folder in)")]
    Refused {
        recipe: PathBuf,
        key: String,
        what: String,
    },
    #[error("{what}: {source}")]
    Resolve {
        what: String,
        source: std::io::Error,
    },
}

/// The folders an untrusted recipe may read.
pub struct Confinement {
    roots: Vec<PathBuf>,
}

impl Confinement {
    /// The recipe's folder and `allow`, each resolved to its real path.
    pub fn new(recipe: &Recipe, allow: &[PathBuf]) -> Result<Confinement, ConfineError> {
        let real = std::fs::canonicalize(&recipe.path).map_err(|source| ConfineError::Resolve {
            what: recipe.path.display().to_string(),
            source,
        })?;
        let mut roots = vec![real.parent().unwrap_or(Path::new("/")).to_path_buf()];
        for a in allow {
            let real = std::fs::canonicalize(a).map_err(|source| ConfineError::Resolve {
                what: format!("--allow {}", a.display()),
                source,
            })?;
            roots.push(real);
        }
        Ok(Confinement { roots })
    }

    /// `path` resolved, when it is inside the allowed folders (or, with `system_too`, the
    /// system's): the path to use from then on, so that what was checked is what is read.
    fn confined(&self, path: &Path, system_too: bool) -> Result<PathBuf, String> {
        let real = std::fs::canonicalize(path).map_err(|e| format!("cannot be resolved ({e})"))?;
        if real.components().any(|c| c.as_os_str() == ".git") || real.join(".git").exists() {
            return Err("reaches a .git folder, where CI keeps its credentials".into());
        }
        let system = || {
            SYSTEM
                .iter()
                .any(|s| real.starts_with(std::fs::canonicalize(s).unwrap_or_else(|_| s.into())))
        };
        if self.roots.iter().any(|r| real.starts_with(r)) || (system_too && system()) {
            return Ok(real);
        }
        let also: String = self.roots[1..]
            .iter()
            .map(|r| format!(" and {}", r.display()))
            .collect();
        Err(format!("outside the recipe's folder{also}"))
    }

    /// Checks every host path of `recipe`, puts the resolved ones in their place, and
    /// makes its step mounts read-only.
    pub fn apply(&self, recipe: &mut Recipe) -> Result<(), ConfineError> {
        let recipe_path = recipe.path.clone();
        let refuse = |key: String, path: &Path, why: String| ConfineError::Refused {
            recipe: recipe_path.clone(),
            key: format!("{key} = {path:?}"),
            what: why,
        };
        for layer in &mut recipe.layers {
            let key = format!("layer.{}", layer.kind());
            let (Layer::Initramfs(path)
            | Layer::Tar(path)
            | Layer::Dir(path)
            | Layer::Oci {
                path, pull: None, ..
            }) = layer
            else {
                // Fetched from a registry into the cache: no host path of the recipe's.
                continue;
            };
            *path = self
                .confined(path, false)
                .map_err(|why| refuse(key, path, why))?;
        }
        for file in &mut recipe.files {
            if let FileSource::Host(path) = &mut file.source {
                let key = format!("[[file]] to = \"/{}\": from", file.to);
                *path = self
                    .confined(path, false)
                    .map_err(|why| refuse(key, path, why))?;
            }
        }
        for binary in &recipe.binaries {
            let brought = crate::tree::elf::closure(&binary.host).unwrap_or_default();
            for path in std::iter::once(&binary.host).chain(&brought) {
                if let Err(why) = self.confined(path, true) {
                    let key = format!("binary.path = {:?}, which brings", binary.host);
                    return Err(refuse(key, path, why));
                }
            }
        }
        for step in &mut recipe.steps {
            let line = step.line;
            let key = |what: &str| format!("[[run]] at line {line}: {what}");
            let reach = match step.network {
                StepNetwork::None => None,
                StepNetwork::Host => Some(("host", "would reach the host's own services")),
                StepNetwork::Private => Some((
                    "private",
                    "would reach the host's services on the bridge and a cloud's metadata \
                     endpoint",
                )),
            };
            if let Some((name, what)) = reach {
                return Err(ConfineError::Refused {
                    recipe: recipe_path.clone(),
                    key: key(&format!("network = \"{name}\"")),
                    what: what.into(),
                });
            }
            for mount in &mut step.mounts {
                mount.host = self
                    .confined(&mount.host, false)
                    .map_err(|why| refuse(key("mounts"), &mount.host, why))?;
                mount.read_only = true;
            }
        }
        Ok(())
    }
}
