//! Container image layers applied onto a tree, as the OCI image spec says: within a layer,
//! `.wh.NAME` removes NAME and `.wh..wh..opq` empties its folder, but only of what lower
//! layers put there; whiteouts never appear in the result; an entry of another type
//! replaces what was there, a folder with all below it; a hard link may name a file of a
//! lower layer. Every write, removal and link goes through the [`Extractor`], so through
//! [`crate::tree::safe_path`]: a layer cannot reach outside the tree, whatever symlinks
//! earlier layers made.
//!
//! Whiteouts usually come first, but a layer may name a file before the marker that hides
//! its folder's lower content; what this layer wrote is remembered, so order does not
//! matter.

use std::collections::HashSet;

use crate::archive::{Entry, EntryData, Segment, VisitError, Visitor};
use crate::tree::extract::{ExtractError, Extractor};
use crate::tree::safe_path::RelPath;

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";

/// Applies one layer's entries through an extractor.
pub struct LayerApplier<'a> {
    x: &'a mut Extractor,
    /// Paths this layer wrote, and their parent folders.
    written: HashSet<Vec<u8>>,
    parents: HashSet<Vec<u8>>,
}

impl<'a> LayerApplier<'a> {
    pub fn new(x: &'a mut Extractor) -> LayerApplier<'a> {
        x.archive_end();
        LayerApplier {
            x,
            written: HashSet::new(),
            parents: HashSet::new(),
        }
    }

    fn ours(&self, path: &[u8]) -> bool {
        self.written.contains(path) || self.parents.contains(path)
    }

    /// Removes what lower layers left in `dir`, keeping what this layer wrote.
    fn make_opaque(&mut self, dir: &[u8]) -> Result<(), ExtractError> {
        let rel = RelPath::parse(if dir.is_empty() { b"." } else { dir })?;
        for name in self.x.children(&rel)? {
            let mut child = dir.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if self.ours(&child) {
                // Kept; but a folder of this layer's may still hold lower content below it
                // (a file has no children: nothing happens).
                self.make_opaque(&child)?;
            } else {
                self.x.remove(&RelPath::parse(&child)?)?;
            }
        }
        Ok(())
    }
}

/// Splits a name into its folder and last component.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[][..], path),
    }
}

impl Visitor for LayerApplier<'_> {
    fn segment_start(&mut self, segment: &Segment) -> Result<(), VisitError> {
        self.x.segment_start(segment)
    }

    fn entry(&mut self, entry: &Entry, data: &mut EntryData<'_>) -> Result<(), VisitError> {
        let path = RelPath::parse(&entry.name).map_err(ExtractError::from)?;
        let bytes = path.as_bytes();
        let (dir, leaf) = split(bytes);
        if leaf == OPAQUE {
            self.make_opaque(dir)?;
            return Ok(());
        }
        if let Some(hidden) = leaf.strip_prefix(WHITEOUT) {
            if hidden.is_empty() {
                return Err("a whiteout without a name (\".wh.\")".into());
            }
            let mut target = dir.to_vec();
            if !target.is_empty() {
                target.push(b'/');
            }
            target.extend_from_slice(hidden);
            if !self.ours(&target) {
                self.x.remove(&RelPath::parse(&target)?)?;
            }
            return Ok(());
        }
        let mut parent = dir;
        while !parent.is_empty() && self.parents.insert(parent.to_vec()) {
            parent = split(parent).0;
        }
        self.written.insert(bytes.to_vec());
        self.x.entry(entry, data)
    }
}

/// The merged tree of an image's layers as a listing, without writing anything: the same
/// rules as [`LayerApplier`] on a map of entries (no data). Feed each layer's entries, then
/// call [`Listing::layer_end`].
#[derive(Default)]
pub struct Listing {
    /// Path -> (entry, the layer that wrote it).
    entries: std::collections::BTreeMap<Vec<u8>, (Entry, usize)>,
    layer: usize,
    written: HashSet<Vec<u8>>,
}

impl Listing {
    /// Ends a layer: later ones may hide what it wrote.
    pub fn layer_end(&mut self) {
        self.layer += 1;
        self.written.clear();
    }

    /// The merged entries in name order.
    pub fn into_entries(self) -> impl Iterator<Item = Entry> {
        self.entries.into_values().map(|(e, _)| e)
    }

    /// Removes the entries below `dir` (not `dir` itself) that `keep` refuses.
    fn remove_below(&mut self, dir: &[u8], keep: impl Fn(&[u8], usize) -> bool) {
        let (from, to) = if dir.is_empty() {
            (Vec::new(), vec![0xff; 1])
        } else {
            ([dir, b"/"].concat(), [dir, b"0"].concat())
        };
        let doomed: Vec<Vec<u8>> = self
            .entries
            .range(from..to)
            .filter(|(k, (_, layer))| !keep(k, *layer))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }
}

impl Visitor for Listing {
    fn entry(&mut self, entry: &Entry, _: &mut EntryData<'_>) -> Result<(), VisitError> {
        let path = RelPath::parse(&entry.name).map_err(ExtractError::from)?;
        let bytes = path.as_bytes().to_vec();
        let (dir, leaf) = split(&bytes);
        let layer = self.layer;
        if leaf == OPAQUE {
            let dir = dir.to_vec();
            let written = std::mem::take(&mut self.written);
            self.remove_below(&dir, |k, l| l == layer && written.contains(k));
            self.written = written;
            return Ok(());
        }
        if let Some(hidden) = leaf.strip_prefix(WHITEOUT) {
            if hidden.is_empty() {
                return Err("a whiteout without a name (\".wh.\")".into());
            }
            let target = if dir.is_empty() {
                hidden.to_vec()
            } else {
                [dir, b"/", hidden].concat()
            };
            if !self.written.contains(&target) {
                self.entries.remove(&target);
                self.remove_below(&target, |_, _| false);
            }
            return Ok(());
        }
        if entry.kind != crate::archive::Kind::Dir {
            self.remove_below(&bytes, |_, _| false);
        }
        // Folders on the way that no entry made, as extraction makes them.
        let mut parent = dir;
        while !parent.is_empty() {
            self.written.insert(parent.to_vec());
            if !self.entries.contains_key(parent) {
                let mut made = entry.clone();
                made.name = parent.to_vec();
                made.kind = crate::archive::Kind::Dir;
                made.mode = 0o755;
                made.size = 0;
                made.link_key = None;
                self.entries.insert(parent.to_vec(), (made, layer));
            }
            parent = split(parent).0;
        }
        let mut e = entry.clone();
        e.name = bytes.clone();
        self.written.insert(bytes.clone());
        self.entries.insert(bytes, (e, layer));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Kind;
    use crate::tree::safe_path::Root;

    fn entry(name: &str, kind: Kind) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            kind,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            size: 0,
            link_key: None,
            offset: 0,
            xattrs: Vec::new(),
        }
    }

    /// Random layers over a small tree (folders, files, a name that changes type, a
    /// whiteout or an opaque marker anywhere, before or after the layer's own entries):
    /// the tree the applier writes is the listing the model gives.
    #[test]
    fn applying_layers_matches_the_whiteout_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for case in 0..200 {
            let dir = tempfile::tempdir().unwrap();
            let mut x = Extractor::new(Root::open(dir.path()).unwrap(), false);
            x.set_replacing_trees(true);
            let mut model = Listing::default();
            for _ in 0..1 + next(4) {
                let mut layer: Vec<Entry> = Vec::new();
                let mut whited: Vec<String> = Vec::new();
                let t_is_dir = next(2) == 0;
                for (path, kind) in [
                    ("d1", Kind::Dir),
                    ("d1/f", Kind::File),
                    ("d1/d2", Kind::Dir),
                    ("d1/d2/g", Kind::File),
                    ("f0", Kind::File),
                    ("t", if t_is_dir { Kind::Dir } else { Kind::File }),
                    ("t/x", Kind::File),
                ] {
                    if path == "t/x" && !t_is_dir {
                        continue;
                    }
                    // A layer never both hides a path and writes it (or below it).
                    if whited
                        .iter()
                        .any(|w: &String| path == w || path.starts_with(&format!("{w}/")))
                    {
                        continue;
                    }
                    let (parent, leaf) = path.rsplit_once('/').unwrap_or(("", path));
                    let prefix = if parent.is_empty() {
                        String::new()
                    } else {
                        format!("{parent}/")
                    };
                    match next(6) {
                        0..=2 => {
                            if !parent.is_empty() {
                                layer.push(entry(parent, Kind::Dir));
                            }
                            layer.push(entry(path, kind.clone()));
                        }
                        3 => {
                            layer.push(entry(&format!("{prefix}.wh.{leaf}"), Kind::File));
                            whited.push(path.to_string());
                        }
                        4 if kind == Kind::Dir => {
                            layer.push(entry(path, Kind::Dir));
                            layer.push(entry(&format!("{path}/.wh..wh..opq"), Kind::File));
                        }
                        _ => {}
                    }
                }
                // Whiteouts may come anywhere in a layer.
                if next(2) == 0 {
                    layer.reverse();
                    layer.sort_by_key(|e| e.name.iter().filter(|&&b| b == b'/').count());
                }
                let mut applier = LayerApplier::new(&mut x);
                for e in &layer {
                    let mut empty = std::io::empty();
                    let mut data = EntryData::new(&mut empty, 0, false);
                    applier.entry(e, &mut data).unwrap();
                    let mut data = EntryData::new(&mut empty, 0, false);
                    model.entry(e, &mut data).unwrap();
                }
                model.layer_end();
            }
            x.finish().unwrap();
            let mut written: Vec<String> = walkdir::WalkDir::new(dir.path())
                .min_depth(1)
                .into_iter()
                .map(|e| {
                    let e = e.unwrap();
                    let rel = e
                        .path()
                        .strip_prefix(dir.path())
                        .unwrap()
                        .display()
                        .to_string();
                    format!("{rel} {}", if e.file_type().is_dir() { "d" } else { "f" })
                })
                .collect();
            written.sort();
            let mut modelled: Vec<String> = model
                .into_entries()
                .map(|e| {
                    let kind = if e.kind == Kind::Dir { "d" } else { "f" };
                    format!("{} {kind}", String::from_utf8_lossy(&e.name))
                })
                .collect();
            modelled.sort();
            assert_eq!(written, modelled, "case {case}");
        }
    }
}
