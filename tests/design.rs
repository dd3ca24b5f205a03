//! docs/DESIGN.md's module map names every source file: a file added under src/ without a
//! line there fails here. A row names a file (`src/ops.rs`) or a folder (`src/archive/`)
//! in its first cell, and in its second cell the folder's files by their paths below it
//! (`oci/write.rs`).

use std::collections::BTreeSet;
use std::path::Path;

/// The `backticked` words of a piece of text.
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Every path the module map names, as `src/...`.
fn named(design: &str) -> BTreeSet<String> {
    let map = design
        .split("## Module map")
        .nth(1)
        .expect("DESIGN.md has a \"## Module map\" section");
    let map = map.split("\n## ").next().unwrap_or(map);
    let mut named = BTreeSet::new();
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        let mut cells = row.split(" | ");
        let first = cells.next().unwrap_or("");
        let rest: String = cells.collect::<Vec<_>>().join(" | ");
        for base in quoted(first) {
            if base.ends_with('/') {
                for file in quoted(&rest).into_iter().filter(|f| f.ends_with(".rs")) {
                    named.insert(format!("{base}{file}"));
                }
            } else {
                named.insert(base.to_string());
            }
        }
    }
    named
}

fn rust_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            out.insert(rel.to_str().unwrap().to_string());
        }
    }
}

#[test]
fn the_module_map_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let design = std::fs::read_to_string(root.join("docs/DESIGN.md")).unwrap();
    let named = named(&design);
    let mut files = BTreeSet::new();
    rust_files(root, &root.join("src"), &mut files);
    let missing: Vec<_> = files.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "docs/DESIGN.md's module map does not name {missing:?}"
    );
    let stale: Vec<_> = named
        .iter()
        .filter(|n| n.starts_with("src/") && !root.join(n).exists())
        .collect();
    assert!(
        stale.is_empty(),
        "docs/DESIGN.md's module map names files that do not exist: {stale:?}"
    );
}

#[test]
fn rows_name_files_below_their_folder() {
    let map = "## Module map\n\n| path | owns |\n| --- | --- |\n\
               | `src/a/` | `mod.rs` (x), `b/c.rs` |\n| `src/d.rs`, `src/e.rs` | things |\n";
    let named: Vec<_> = named(map).into_iter().collect();
    assert_eq!(
        named,
        ["src/a/b/c.rs", "src/a/mod.rs", "src/d.rs", "src/e.rs"]
    );
}
