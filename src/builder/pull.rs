//! `[[layer]] oci = "docker://NAME[:TAG]"`: the image is fetched by skopeo, the registry
//! client users already have (its credentials, mirrors and `registries.conf`), into an OCI
//! layout in the build cache, `images/`, and the layer then reads that copy as any OCI
//! layout. A copy is named after what the recipe asked for (the name and the digest that
//! pins it), so a build whose image is already there needs no network; `build --pull`
//! fetches tags again. Blobs are stored by digest, so images share their layers.

use std::path::Path;
use std::process::Command;

use super::BuildError;
use crate::fsutil::TempDir;
use crate::recipe::{Layer, Recipe};

/// Where the pulled images are, kept as long as the build needs them.
pub struct Pulled {
    /// Without a cache (`--no-cache`): a temporary layout, removed after the build.
    _temp: Option<TempDir>,
    /// What was fetched, for the build to say.
    pub notes: Vec<String>,
}

/// Fetches the recipe's `docker://` layers into `cache`'s `images/` layout (a temporary
/// one without a cache) and points the layers at them.
pub fn pull_layers(
    recipe: &mut Recipe,
    cache: Option<&Path>,
    refresh: bool,
) -> Result<Pulled, BuildError> {
    let mut pulled = Pulled {
        _temp: None,
        notes: Vec::new(),
    };
    if !recipe
        .layers
        .iter()
        .any(|l| matches!(l, Layer::Oci { pull: Some(_), .. }))
    {
        return Ok(pulled);
    }
    let store = match cache {
        Some(dir) => {
            let c = crate::cache::Cache::open(dir).map_err(err_at(dir))?;
            c.dir().join("images")
        }
        None => {
            let t = TempDir::beside(&std::env::temp_dir().join("rootpack-pull"))
                .map_err(err_at(&std::env::temp_dir()))?;
            let store = t.path().join("images");
            pulled._temp = Some(t);
            store
        }
    };
    std::fs::create_dir_all(&store).map_err(err_at(&store))?;
    // One skopeo at a time writes the layout's index.
    let lock = crate::cache::lock_file(&store.with_extension("lock")).map_err(err_at(&store))?;
    for layer in &mut recipe.layers {
        let Layer::Oci {
            path,
            reference,
            platform,
            pull: Some(pull),
        } = layer
        else {
            continue;
        };
        let source = &pull.source;
        let name = copy_name(source, reference.as_deref(), platform.as_deref());
        // A pinned digest never changes; a tag is fetched again only with --pull.
        if !has_ref(&store, &name) || (refresh && reference.is_none()) {
            fetch(
                pull,
                reference.as_deref(),
                platform.as_deref(),
                &store,
                &name,
            )?;
            pulled.notes.push(format!("pulled {source}"));
        }
        *path = store.clone();
        *reference = Some(name);
    }
    drop(lock);
    Ok(pulled)
}

fn err_at(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    super::out_err(path)
}

/// The copy's name in the layout: what was asked for, hashed (a ref name has a grammar
/// that registry names with ports and digests do not all fit).
fn copy_name(source: &str, digest: Option<&str>, platform: Option<&str>) -> String {
    let asked = format!(
        "{source}@{}@{}",
        digest.unwrap_or(""),
        platform.unwrap_or("")
    );
    format!(
        "pulled-{}:latest",
        &crate::digest::sha256_hex(asked.as_bytes())[..20]
    )
}

fn has_ref(store: &Path, name: &str) -> bool {
    std::fs::read_to_string(store.join("index.json"))
        .is_ok_and(|index| index.contains(&format!("\"{name}\"")))
}

/// `skopeo copy` of the image (pinned to `digest` when given) into the layout.
fn fetch(
    pull: &crate::recipe::Pull,
    digest: Option<&str>,
    platform: Option<&str>,
    store: &Path,
    name: &str,
) -> Result<(), BuildError> {
    let source = &pull.source;
    let from = match digest {
        // docker://NAME[:TAG] pinned: docker://NAME@sha256:…, which skopeo verifies.
        Some(d) => format!("docker://{}@{d}", untagged(source)),
        None => source.to_string(),
    };
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy").arg("--quiet");
    if !pull.tls_verify {
        cmd.arg("--src-tls-verify=false");
    }
    if let Some((os, arch)) = platform.and_then(|p| p.split_once('/')) {
        let arch = arch.split('/').next().unwrap_or(arch);
        cmd.args(["--override-os", os, "--override-arch", arch]);
    }
    cmd.arg(&from)
        .arg(format!("oci:{}:{name}", store.display()));
    log::debug!("{cmd:?}");
    let failed = |message: String| BuildError::Pull {
        image: from.clone(),
        message,
    };
    let out = cmd.output().map_err(|e| {
        failed(format!(
            "skopeo: {e} (docker:// layers are fetched with skopeo: apt-get install skopeo)"
        ))
    })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed");
        return Err(failed(format!("skopeo copy: {}", last.trim())));
    }
    Ok(())
}

/// `docker://host:5000/a/b:tag` -> `host:5000/a/b` (a colon in the last component is
/// the tag's; one before a slash is a port's).
fn untagged(source: &str) -> &str {
    let bare = source.trim_start_matches("docker://");
    let bare = bare.split('@').next().unwrap_or(bare);
    let last = bare.rfind('/').map_or(0, |i| i + 1);
    match bare[last..].find(':') {
        Some(c) => &bare[..last + c],
        None => bare,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_come_off_and_ports_stay() {
        assert_eq!(
            super::untagged("docker://127.0.0.1:5000/bb:1"),
            "127.0.0.1:5000/bb"
        );
        assert_eq!(super::untagged("docker://debian"), "debian");
        assert_eq!(super::untagged("docker://quay.io/a/b:v2"), "quay.io/a/b");
    }
}
