//! The library's modules are layered, and an import only goes down (or sideways within a
//! layer, without a cycle): a module that reached up would make the layers below it
//! depend on the ones above, which is how cycles start. This reads the `crate::` paths of
//! src/ (outside test modules) and fails on any import upwards, any cycle, and any
//! top-level module this list does not place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// From the top: the binary's modules (`main`, `cli`) are above them all.
const LAYERS: &[&[&str]] = &[
    &["bin"],
    &["runtime", "containers"],
    &["builder", "run", "ops", "cleanup", "vm"],
    &["recipe", "manifest", "image", "net", "cache", "kernel"],
    &["format", "tree"],
    &["archive"],
    &[
        "digest",
        "fsutil",
        "ids",
        "interrupt",
        "mapped",
        "progress",
        "sysctl",
        "time_format",
        "walk",
        "xattr",
    ],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The code of a file without comments and without its `#[cfg(test)]` module (tests may
/// use anything).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c}`: the first name of each item at depth one.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 0 => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module -> the top-level modules it imports.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if ["main", "cli", "cmd", "lib"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let mut names = imports(&code(&text));
        names.remove(&module);
        edges.entry(module).or_default().extend(names);
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<_> = edges()
        .keys()
        .filter(|m| layer_of(m).is_none())
        .cloned()
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS in tests/layering.rs: {unplaced:?}"
    );
}

#[test]
fn no_module_imports_one_above_it() {
    let mut upward = Vec::new();
    for (module, names) in edges() {
        let Some(mine) = layer_of(&module) else {
            continue;
        };
        for name in names {
            if layer_of(&name).is_some_and(|theirs| theirs < mine) {
                upward.push(format!("{module} -> {name}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports upwards: {upward:?}");
}

#[test]
fn no_import_cycles() {
    let edges = edges();
    // Depth-first search; a module met again while still on the path closes a cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if !done.insert(m.to_string()) {
            return None;
        }
        path.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let code = code(
        "use crate::archive::Entry;\nuse crate::{fsutil::AtomicFile, tree::{safe_path, copier}};\n\
         // crate::ops\nlet x = crate::digest::hex(b);\n#[cfg(test)]\nmod tests { use crate::run; }\n",
    );
    let found: Vec<_> = imports(&code).into_iter().collect();
    assert_eq!(found, ["archive", "digest", "fsutil", "tree"]);
}
