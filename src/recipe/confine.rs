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
//!   folder, after resolving symlinks (a link in the checkout to `/etc` is outside);
//! - programs and everything they bring (shared libraries, the ELF interpreter, a script's
//!   `#!` interpreter), which an untrusted program names itself: inside those folders or
//!   the system's program and library folders;
//! - step mounts become read-only, and `network = "host"` is refused (a step would reach
//!   the host's own services: a metadata endpoint, a local database).

use std::path::{Path, PathBuf};

use super::{FileSource, Recipe, StepNetwork};

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
    #[error(
        "{recipe}: {key} = {path:?}: outside the recipe's folder{allowed} (--untrusted; --allow DIR lets a folder in)"
    )]
    Outside {
        recipe: PathBuf,
        key: String,
        path: PathBuf,
        allowed: String,
    },
    #[error("{recipe}: {key}: {what} (--untrusted)")]
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

    fn inside(&self, path: &Path, system_too: bool) -> bool {
        let real = canonical(path);
        self.roots.iter().any(|r| real.starts_with(r))
            || (system_too
                && SYSTEM
                    .iter()
                    .any(|s| real.starts_with(canonical(Path::new(s)))))
    }

    /// Checks every host path of `recipe`, and makes its step mounts read-only.
    pub fn apply(&self, recipe: &mut Recipe) -> Result<(), ConfineError> {
        let recipe_path = recipe.path.clone();
        let outside = |key: String, path: &Path| ConfineError::Outside {
            recipe: recipe_path.clone(),
            key,
            path: path.to_path_buf(),
            allowed: self.roots[1..]
                .iter()
                .map(|r| format!(" and {}", r.display()))
                .collect(),
        };
        for layer in &recipe.layers {
            if !self.inside(layer.path(), false) {
                return Err(outside(format!("layer.{}", layer.kind()), layer.path()));
            }
        }
        for file in &recipe.files {
            if let FileSource::Host(path) = &file.source
                && !self.inside(path, false)
            {
                return Err(outside(
                    format!("[[file]] to = \"/{}\": from", file.to),
                    path,
                ));
            }
        }
        for binary in &recipe.binaries {
            let brought = crate::tree::elf::closure(&binary.host).unwrap_or_default();
            for path in std::iter::once(&binary.host).chain(&brought) {
                if !self.inside(path, true) {
                    let key = format!("binary.path = {:?}, which brings", binary.host);
                    return Err(outside(key, path));
                }
            }
        }
        for step in &mut recipe.steps {
            let line = step.line;
            let key = |what: &str| format!("[[run]] at line {line}: {what}");
            if step.network == StepNetwork::Host {
                return Err(ConfineError::Refused {
                    recipe: recipe_path.clone(),
                    key: key("network"),
                    what: "\"host\" would reach the host's own services".into(),
                });
            }
            for mount in &mut step.mounts {
                if !self.inside(&mount.host, false) {
                    return Err(outside(key("mounts"), &mount.host));
                }
                mount.read_only = true;
            }
        }
        Ok(())
    }
}

/// The real path, or the path itself when it does not exist (it is then refused or fails
/// later with its own error).
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
