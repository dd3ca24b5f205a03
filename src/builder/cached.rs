//! A build through the cache: the keys of the tree's states (after the layers, after the
//! injected programs and files, after each `[[run]]` step), the longest cached prefix
//! restored, and each state computed here stored for the next build.
//!
//! The layers state is the whole tree; a step's is what the step changed (new and changed
//! entries, whiteouts for what it removed), so storing one costs what the step wrote. The
//! injection state is not stored: it is made again from the recipe in milliseconds.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{BuildError, out_err};
use crate::archive::pack::{PackFormat, PackOptions, RecordedTree, pack};
use crate::archive::{Compression, read_archive};
use crate::cache::key::{Digests, Key};
use crate::cache::{Cache, State};
use crate::interrupt::interrupted;
use crate::manifest::{Config, LayerRecord};
use crate::recipe::{FileSource, Layer, Recipe, RunStep};
use crate::tree::extract::Extractor;
use crate::tree::layer::LayerApplier;

/// The cache a build uses, with its states' keys.
pub(super) struct Cached {
    pub cache: Cache,
    pub keys: Keys,
    /// What the build should say: which states came from the cache, which did not store.
    pub notes: std::cell::RefCell<Vec<String>>,
    failed: std::cell::Cell<bool>,
}

/// The keys of a recipe's states, each over the one before.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub layers: String,
    pub inject: String,
    pub steps: Vec<String>,
    /// The tree the image is written from: the files placed after the steps, over them.
    pub last: String,
}

/// What a layers state keeps besides the tree.
#[derive(serde::Serialize, serde::Deserialize)]
struct LayersMeta {
    layers: Vec<LayerRecord>,
    config: Config,
}

/// The keys of `recipe`'s states. `record`: the tree records what it cannot hold (a
/// rootless image), which the stored archives then carry.
pub(super) fn keys(
    recipe: &Recipe,
    inputs: &super::injected::Inputs,
    sde: Option<i64>,
    record: bool,
    digests: &mut Digests,
) -> Result<Keys, BuildError> {
    let mut k = Key::new("layers", None);
    // Recording changes nothing for root: ext4 and archive builds share root's states.
    let rootless = !rustix::process::geteuid().is_root();
    k.field("rootless", &[rootless as u8]);
    k.field("record", &[(record && rootless) as u8]);
    for layer in &recipe.layers {
        k.text("layer", layer.kind());
        let path = layer.path();
        let err = out_err(path);
        match layer {
            Layer::Dir(dir) => digests.tree(dir, &mut k).map_err(err)?,
            Layer::Initramfs(f) | Layer::Tar(f) => {
                k.text("sha256", &digests.file(f).map_err(err)?);
            }
            Layer::Oci {
                path,
                reference,
                platform,
                pull,
            } => {
                match (pull, path.is_dir()) {
                    // A pulled image by its digest: the cache's shared layout holds others.
                    (Some(_), _) => {
                        let sel = crate::archive::oci::Selector {
                            reference: reference.clone(),
                            platform: platform.clone(),
                        };
                        let image = crate::archive::oci::open(path, &sel)?;
                        k.text("image", &image.digest.to_string());
                    }
                    (None, true) => digests.tree(path, &mut k).map_err(err)?,
                    (None, false) => {
                        k.text("sha256", &digests.file(path).map_err(err)?);
                    }
                }
                k.text("ref", reference.as_deref().unwrap_or(""));
                k.text("platform", platform.as_deref().unwrap_or(""));
            }
        }
    }
    let layers = k.finish();
    let inject = inject_key(recipe, inputs, sde, &layers, digests)?;
    let mut steps = Vec::new();
    let mut parent = inject.clone();
    for step in &recipe.steps {
        parent = step_key(recipe, step, &parent, digests)?;
        steps.push(parent.clone());
    }
    let mut k = Key::new("after-steps", Some(&parent));
    files_key(recipe, true, &mut k, digests)?;
    Ok(Keys {
        layers,
        inject,
        steps,
        last: k.finish(),
    })
}

fn inject_key(
    recipe: &Recipe,
    inputs: &super::injected::Inputs,
    sde: Option<i64>,
    parent: &str,
    digests: &mut Digests,
) -> Result<String, BuildError> {
    let mut k = Key::new("inject", Some(parent));
    // Injected entries are given this time (the build's time without one: never equal).
    k.text("sde", &format!("{sde:?}"));
    for (b, files) in recipe.binaries.iter().zip(&inputs.programs) {
        k.text("binary", &format!("{:?} {:?} {:?}", b.host, b.to, b.links));
        for f in files {
            k.field("file", f.as_os_str().as_bytes());
            k.text("sha256", &digests.file(f).map_err(out_err(f))?);
        }
    }
    if let Some((set, _)) = &inputs.modules {
        k.text(
            "modules",
            &format!(
                "{} {:?}",
                set.version,
                recipe.modules.as_ref().map(|m| &m.names)
            ),
        );
        for f in &set.files {
            let p = set.dir.join(f);
            k.text(f, &digests.file(&p).map_err(out_err(&p))?);
        }
        for (p, name) in &set.firmware {
            k.text(name, &digests.file(p).map_err(out_err(p))?);
        }
    }
    for d in &recipe.dirs {
        k.text("dir", &format!("{d:?}"));
    }
    for m in &recipe.mountpoints {
        k.field("mountpoint", m.as_bytes());
    }
    files_key(recipe, false, &mut k, digests)?;
    for s in &recipe.symlinks {
        k.text("symlink", &format!("{s:?}"));
    }
    Ok(k.finish())
}

/// The `[[file]]` entries placed before the steps, or after them.
fn files_key(
    recipe: &Recipe,
    after_steps: bool,
    k: &mut Key,
    digests: &mut Digests,
) -> Result<(), BuildError> {
    for f in recipe.files.iter().filter(|f| f.after_steps == after_steps) {
        k.text(
            "file",
            &format!("{:?} {:o} {} {}", f.to, f.mode, f.uid, f.gid),
        );
        match &f.source {
            FileSource::Inline(bytes) => k.field("content", bytes),
            FileSource::Host(p) => k.text("sha256", &digests.file(p).map_err(out_err(p))?),
        };
    }
    Ok(())
}

/// A step's key: everything it is given. A read-write mount's content does not enter it
/// (a cache folder changes with every build, as BuildKit's cache mounts do not count);
/// a read-only one's does.
fn step_key(
    recipe: &Recipe,
    step: &RunStep,
    parent: &str,
    digests: &mut Digests,
) -> Result<String, BuildError> {
    let mut k = Key::new("step", Some(parent));
    k.text("command", &format!("{:?}", step.command));
    k.text("env", &format!("{:?} {:?}", recipe.config.env, step.env));
    k.text("workdir", &format!("{:?}", step.workdir));
    k.text("user", &format!("{:?}", step.user));
    k.text("network", &format!("{:?}", step.network));
    k.text("timeout", &format!("{:?}", step.timeout));
    for m in &step.mounts {
        k.text(
            "mount",
            &format!("{:?} {:?} {}", m.host, m.target, m.read_only),
        );
        if m.read_only {
            match m.host.is_dir() {
                true => digests.tree(&m.host, &mut k),
                false => digests.file(&m.host).map(|d| {
                    k.text("sha256", &d);
                }),
            }
            .map_err(out_err(&m.host))?;
        }
    }
    Ok(k.finish())
}

/// What the cache holds of a recipe: its layers state, and the steps' states that follow
/// it without a gap, each checked against its digest (a bad one is dropped, with a note).
pub(super) struct Prefix {
    pub layers: Option<State>,
    pub steps: Vec<State>,
}

impl Cached {
    pub fn new(cache: Cache, keys: Keys) -> Cached {
        Cached {
            cache,
            keys,
            notes: Default::default(),
            failed: Default::default(),
        }
    }

    /// Keeps the cache under its cap; gives what the build should say.
    pub fn finish(self) -> Vec<String> {
        match crate::cache::max_size() {
            Ok(max) => {
                if let Err(e) = self.cache.prune(Some(max), None) {
                    self.note(format!("warning: pruning the cache: {e}"));
                }
            }
            Err(e) => self.note(format!("warning: {e}")),
        }
        self.notes.into_inner()
    }

    fn note(&self, s: String) {
        self.notes.borrow_mut().push(s);
    }

    /// A state, verified; a corrupt or missing blob drops it, with a warning.
    fn verified(&self, key: &str) -> Option<State> {
        let state = self.cache.get(key)?;
        match crate::cache::verify(&self.cache.blob_path(&state.blob), &state.blob) {
            Ok(true) => Some(state),
            _ => {
                self.note(format!(
                    "warning: cache entry {} ({}) is corrupt: dropped, and made again",
                    &key[..12],
                    state.label
                ));
                self.cache.remove(key);
                None
            }
        }
    }

    pub fn prefix(&self) -> Prefix {
        let Some(layers) = self.verified(&self.keys.layers) else {
            return Prefix {
                layers: None,
                steps: Vec::new(),
            };
        };
        let mut steps = Vec::new();
        for key in &self.keys.steps {
            match self.verified(key) {
                Some(s) => steps.push(s),
                None => break,
            }
        }
        Prefix {
            layers: Some(layers),
            steps,
        }
    }

    /// Says what came from the cache and what runs.
    pub fn say_prefix(&self, prefix: &Prefix, total_steps: usize) {
        let done = prefix.steps.len();
        let mut s = match (&prefix.layers, done) {
            (None, _) => "cache: nothing cached".to_string(),
            (Some(_), 0) => "cached: layers".to_string(),
            (Some(_), 1) => "cached: layers, step 1".to_string(),
            (Some(_), n) => format!("cached: layers, steps 1–{n}"),
        };
        if done < total_steps {
            s += &match total_steps - done {
                1 => format!("; running step {}", done + 1),
                _ => format!("; running steps {}–{total_steps}", done + 1),
            };
        }
        self.note(s);
    }

    /// Stores a state unless storing already failed once (a full disk): the build goes on.
    fn store(
        &self,
        state: State,
        write: &mut dyn FnMut(&mut (dyn io::Write + Send)) -> io::Result<()>,
    ) {
        if self.failed.get() {
            return;
        }
        let label = state.label.clone();
        if let Err(e) = self.cache.put(state, write) {
            self.failed.set(true);
            self.note(format!(
                "warning: could not store {label} in the cache {}: {e}; the build goes on without storing",
                self.cache.dir().display()
            ));
        }
    }

    /// Stores the tree after its layers (`x` not finished: its folders' metadata is set
    /// now, and again at the end).
    pub fn store_layers(
        &self,
        recipe: &Recipe,
        x: &mut Extractor,
        root: &Path,
        layers: &[LayerRecord],
        config: &Config,
    ) -> Result<(), BuildError> {
        x.settle()?;
        let meta = LayersMeta {
            layers: layers.to_vec(),
            config: config.clone(),
        };
        let opts = PackOptions {
            recorded: x.recorded().cloned().map(std::sync::Arc::new),
            level: Some(1),
            ..PackOptions::new(PackFormat::Tar, Compression::Zstd)
        };
        let state = State {
            key: self.keys.layers.clone(),
            parent: None,
            kind: "layers".into(),
            label: format!("{}: layers", recipe.name),
            blob: String::new(),
            size: 0,
            created: 0,
            meta: serde_json::to_value(&meta).unwrap_or_default(),
            used: 0,
        };
        let mut interrupted_here = false;
        self.store(state, &mut |out| {
            pack(root, out, &opts, None, &interrupted)
                .map(drop)
                .map_err(|e| {
                    interrupted_here = matches!(e, crate::archive::pack::PackError::Interrupted);
                    io::Error::other(e)
                })
        });
        match interrupted_here {
            true => Err(BuildError::Interrupted),
            false => Ok(()),
        }
    }

    /// Restores the layers state into `x`; gives its layer records and config.
    pub fn restore_layers(
        &self,
        state: &State,
        x: &mut Extractor,
    ) -> Result<(Vec<LayerRecord>, Config), BuildError> {
        let blob = self.cache.blob_path(&state.blob);
        let f = File::open(&blob).map_err(out_err(&blob))?;
        read_archive(&f, x, None, &interrupted).map_err(|e| BuildError::layer(&blob, e))?;
        let meta: LayersMeta = serde_json::from_value(state.meta.clone())
            .map_err(|e| out_err(&blob)(io::Error::other(e)))?;
        Ok((meta.layers, meta.config))
    }

    /// Applies the steps' states in order over the tree at `root` (as its layers and
    /// injected entries left it), and brings `recorded` up to date.
    pub fn restore_steps(
        &self,
        states: &[State],
        root: &Path,
        recorded: Option<&mut RecordedTree>,
    ) -> Result<(), BuildError> {
        let mut x = Extractor::new(
            crate::tree::safe_path::Root::open(root).map_err(out_err(root))?,
            false,
        );
        if recorded.is_some() {
            x = x.record_metadata();
        }
        x.set_replacing_trees(true);
        for s in states {
            let blob = self.cache.blob_path(&s.blob);
            let f = File::open(&blob).map_err(out_err(&blob))?;
            crate::archive::Visitor::archive_end(&mut x);
            let mut applier = LayerApplier::new(&mut x);
            read_archive(&f, &mut applier, None, &interrupted)
                .map_err(|e| BuildError::layer(&blob, e))?;
        }
        let (_, now) = x.finish_recorded()?;
        if let (Some(recorded), Some(now)) = (recorded, now) {
            recorded.extend(now);
            // What the steps removed.
            recorded.retain(|p, _| {
                p.is_empty()
                    || std::fs::symlink_metadata(root.join(std::ffi::OsStr::from_bytes(p))).is_ok()
            });
        }
        Ok(())
    }

    /// Stores what step `number` changed since `before`, and gives the tree's snapshot now.
    pub fn store_step(
        &self,
        recipe: &Recipe,
        number: usize,
        root: &Path,
        before: &Snapshot,
        recorded: Option<&RecordedTree>,
        work: &Path,
    ) -> Result<Snapshot, BuildError> {
        let after = snapshot(root).map_err(out_err(root))?;
        let delta = work.join(format!("step-delta-{number}"));
        changes_tree(root, before, &after, &delta).map_err(out_err(&delta))?;
        let opts = PackOptions {
            recorded: recorded.cloned().map(std::sync::Arc::new),
            level: Some(1),
            ..PackOptions::new(PackFormat::Tar, Compression::Zstd)
        };
        let key = &self.keys.steps[number - 1];
        let parent = match number {
            1 => &self.keys.inject,
            n => &self.keys.steps[n - 2],
        };
        let state = State {
            key: key.clone(),
            parent: Some(parent.clone()),
            kind: "step".into(),
            label: format!("{}: step {number}", recipe.name),
            blob: String::new(),
            size: 0,
            created: 0,
            meta: serde_json::Value::Null,
            used: 0,
        };
        self.store(state, &mut |out| {
            pack(&delta, out, &opts, None, &interrupted)
                .map(drop)
                .map_err(io::Error::other)
        });
        std::fs::remove_dir_all(&delta).map_err(out_err(&delta))?;
        // Linking into the delta changed the files' ctimes: the next step's changes are
        // measured from now.
        snapshot(root).map_err(out_err(root))
    }
}

/// What identifies each entry's version: its inode, change time, mtime and size.
pub(super) type Snapshot = HashMap<Vec<u8>, (u64, u64, (i64, i64), i64, u64, bool)>;

pub(super) fn snapshot(root: &Path) -> io::Result<Snapshot> {
    let mut out = HashMap::new();
    for walked in crate::walk::walk_named(root) {
        let (name, entry) = walked.map_err(|(_, e)| e)?;
        let m = entry.metadata().map_err(io::Error::from)?;
        out.insert(
            name,
            (
                m.dev(),
                m.ino(),
                (m.ctime(), m.ctime_nsec()),
                m.mtime(),
                m.size(),
                m.is_dir(),
            ),
        );
    }
    Ok(out)
}

/// Makes at `delta` a tree of what changed from `before` to `after` in `root`: changed and
/// new entries (files hard-linked, with every other name of their inode, so links stay
/// links), their folders, and a `.wh.NAME` whiteout for each removed name whose folder is
/// still there.
fn changes_tree(root: &Path, before: &Snapshot, after: &Snapshot, delta: &Path) -> io::Result<()> {
    let mut names_of: HashMap<(u64, u64), Vec<&Vec<u8>>> = HashMap::new();
    for (name, v) in after {
        if !v.5 {
            names_of.entry((v.0, v.1)).or_default().push(name);
        }
    }
    let mut changed: Vec<&Vec<u8>> = Vec::new();
    for (name, v) in after {
        if before.get(name) != Some(v) {
            changed.push(name);
            if !v.5 {
                changed.extend(names_of.get(&(v.0, v.1)).into_iter().flatten());
            }
        }
    }
    changed.sort();
    changed.dedup();
    std::fs::create_dir(delta)?;
    for name in changed {
        if name.as_slice() == b"." {
            continue;
        }
        let target = delta.join(std::ffi::OsStr::from_bytes(name));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match after[name].5 {
            true => std::fs::create_dir_all(&target)?,
            false => std::fs::hard_link(root.join(std::ffi::OsStr::from_bytes(name)), &target)?,
        }
    }
    for name in before.keys().filter(|n| !after.contains_key(*n)) {
        let path = Path::new(std::ffi::OsStr::from_bytes(name));
        let (Some(parent), Some(leaf)) = (path.parent(), path.file_name()) else {
            continue;
        };
        let parent_key = match parent.as_os_str().is_empty() {
            true => b".".to_vec(),
            false => parent.as_os_str().as_bytes().to_vec(),
        };
        if !after.get(&parent_key).is_some_and(|v| v.5) {
            continue;
        }
        let dir = delta.join(parent);
        std::fs::create_dir_all(&dir)?;
        let mut wh = b".wh.".to_vec();
        wh.extend_from_slice(leaf.as_bytes());
        File::create(dir.join(std::ffi::OsStr::from_bytes(&wh)))?;
    }
    super::delta::folder_metadata_from(root, delta)
}
