//! A cache carried between machines as an OCI image layout: one artifact manifest per
//! state, its config the state's record and its one layer the state's archive, named in
//! `index.json` by the state's key. A CI system's cache folder keeps the layout as it is;
//! `skopeo copy oci:DIR docker://…` takes it to a registry and back.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde_json::{Value, json};

use super::{Cache, State};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const STATE: &str = "application/vnd.rootpack.cache.state.v1+json";
const TREE: &str = "application/vnd.rootpack.cache.tree.v1.cpio+zstd";
const REF: &str = "org.opencontainers.image.ref.name";

fn descriptor(media: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media,
        "digest": format!("sha256:{}", crate::digest::sha256_hex(bytes)),
        "size": bytes.len(),
    })
}

fn blob_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = blob_path(dir, &crate::digest::sha256_hex(bytes));
    if !path.exists() {
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, bytes)?;
        std::fs::rename(&temp, &path)?;
    }
    Ok(())
}

/// Writes every state of `cache` into the layout at `dir` (made if absent; states already
/// there stay). Gives how many were written.
pub fn export(cache: &Cache, dir: &Path) -> io::Result<usize> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(
        dir.join("oci-layout"),
        b"{\"imageLayoutVersion\":\"1.0.0\"}",
    )?;
    let mut index = read_index(dir).unwrap_or_default();
    let _lock = cache.lock(false)?;
    let states = cache.states()?;
    for s in &states {
        let target = blob_path(dir, &s.blob);
        if !target.exists() {
            let temp = target.with_extension("tmp");
            let from = cache.blob_path(&s.blob);
            if std::fs::hard_link(&from, &temp).is_err() {
                std::fs::copy(&from, &temp)?;
            }
            std::fs::rename(&temp, &target)?;
        }
        let config = serde_json::to_vec(s).map_err(io::Error::other)?;
        write_blob(dir, &config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": STATE,
            "config": descriptor(STATE, &config),
            "layers": [{
                "mediaType": TREE,
                "digest": format!("sha256:{}", s.blob),
                "size": s.size,
            }],
            "annotations": { "org.opencontainers.image.title": s.label },
        });
        let manifest = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
        write_blob(dir, &manifest)?;
        let mut d = descriptor(MANIFEST, &manifest);
        d["annotations"] = json!({ REF: s.key });
        index.insert(s.key.clone(), d);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index.into_values().collect::<Vec<_>>(),
    });
    let temp = dir.join("index.json.tmp");
    std::fs::write(
        &temp,
        serde_json::to_vec_pretty(&index).map_err(io::Error::other)?,
    )?;
    std::fs::rename(&temp, dir.join("index.json"))?;
    Ok(states.len())
}

/// The layout's manifests by ref name.
fn read_index(dir: &Path) -> io::Result<BTreeMap<String, Value>> {
    let text = std::fs::read(dir.join("index.json"))?;
    let index: Value = serde_json::from_slice(&text).map_err(io::Error::other)?;
    Ok(index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["annotations"][REF].as_str()?.to_string(), d.clone())))
        .collect())
}

/// A blob of the layout, checked against its digest.
fn read_blob(dir: &Path, digest: &str) -> io::Result<Vec<u8>> {
    let bytes = std::fs::read(blob_path(dir, digest))?;
    if format!("sha256:{}", crate::digest::sha256_hex(&bytes)) != digest {
        return Err(io::Error::other(format!(
            "blob {digest} does not match its digest"
        )));
    }
    Ok(bytes)
}

/// Adds the states of the layout at `dir` to `cache`, each blob checked against its
/// digest; a bad one is skipped with its reason. Gives (imported, skipped reasons).
pub fn import(cache: &Cache, dir: &Path) -> io::Result<(usize, Vec<String>)> {
    let index = read_index(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: not a cache layout: {e}", dir.display()),
        )
    })?;
    let mut done = 0;
    let mut skipped = Vec::new();
    for (key, d) in index {
        match import_one(cache, dir, &key, &d) {
            Ok(()) => done += 1,
            Err(e) => skipped.push(format!("state {}: {e}", &key[..key.len().min(12)])),
        }
    }
    Ok((done, skipped))
}

fn import_one(cache: &Cache, dir: &Path, key: &str, d: &Value) -> io::Result<()> {
    let bad = |what: &str| io::Error::other(what.to_string());
    let manifest: Value = serde_json::from_slice(&read_blob(
        dir,
        d["digest"]
            .as_str()
            .ok_or_else(|| bad("no manifest digest"))?,
    )?)
    .map_err(io::Error::other)?;
    let config = read_blob(
        dir,
        manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| bad("no config"))?,
    )?;
    let state: State = serde_json::from_slice(&config).map_err(io::Error::other)?;
    let layer = manifest["layers"][0]["digest"].as_str().unwrap_or_default();
    if state.key != key || layer != format!("sha256:{}", state.blob) {
        return Err(bad("its record does not match its name or its archive"));
    }
    if cache.get(key).is_some() {
        return Ok(());
    }
    let mut from = std::fs::File::open(blob_path(dir, layer))?;
    let stored = cache.put(state.clone(), &mut |out| io::copy(&mut from, out).map(drop))?;
    if stored.blob != state.blob {
        cache.remove(key);
        return Err(bad("its archive does not match its digest"));
    }
    Ok(())
}
