//! Kernel modules for an image: the ones a recipe names, found through the kernel's
//! `modules.dep`, `modules.alias`, `modules.builtin` and `modules.softdep`, with everything
//! they depend on and the firmware they name, laid out as `lib/modules/RELEASE` with its
//! `modules.*` index made for that subset by `depmod -b`.
//!
//! A kernel package unpacked but never installed has no `modules.dep` (its postinst makes
//! it): the index is then made by `depmod -b` in a folder of the build's own, whose
//! `kernel/` is a symlink to the package's; the kernel's folder is only ever read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::recipe::Modules;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {name}: not a module of kernel {version} ({dir}), nor built into it")]
    Missing {
        name: String,
        version: String,
        dir: PathBuf,
    },
    #[error("module {name} needs {needed}, which is not in {dir}")]
    MissingFile {
        name: String,
        needed: String,
        dir: PathBuf,
    },
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("depmod -b {root}: {message}")]
    Depmod { root: PathBuf, message: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ModuleError + '_ {
    move |source| ModuleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The modules an image gets, by path below the module folder (`kernel/fs/ext4/ext4.ko`).
#[derive(Debug, Clone, Default)]
pub struct ModuleSet {
    pub version: String,
    pub dir: PathBuf,
    pub files: BTreeSet<String>,
    /// Names asked for that are built into the kernel.
    pub builtin: Vec<String>,
    /// Modules taken as soft dependencies: loaded by name before the ones asked for,
    /// since not every modprobe follows soft dependencies (busybox's does not).
    pub soft: Vec<String>,
    /// Firmware files found, as (host path, path below `lib/firmware`).
    pub firmware: Vec<(PathBuf, String)>,
}

/// A kernel's module index.
struct Index {
    /// Module name -> (its path, the paths it depends on).
    deps: HashMap<String, (String, Vec<String>)>,
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
    /// Module name -> the names (or aliases) it softly depends on, before and after.
    softdeps: HashMap<String, Vec<String>>,
}

/// `ext4`, `crc32c-intel` -> `crc32c_intel`; a path's file name without `.ko[.xz|.zst|.gz]`.
pub fn module_name(s: &str) -> String {
    let file = s.rsplit('/').next().unwrap_or(s);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl Index {
    fn load(dir: &Path) -> Result<Index, ModuleError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(io_at(&p))
        };
        let mut deps = HashMap::new();
        for line in read("modules.dep")?.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            let needs = rest.split_whitespace().map(str::to_string).collect();
            deps.insert(module_name(path), (path.to_string(), needs));
        }
        let aliases = read("modules.alias")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "alias").then_some(())?;
                Some((w.next()?.to_string(), module_name(w.next()?)))
            })
            .collect();
        let builtin = read("modules.builtin")
            .unwrap_or_default()
            .lines()
            .map(module_name)
            .collect();
        let mut softdeps: HashMap<String, Vec<String>> = HashMap::new();
        for l in read("modules.softdep").unwrap_or_default().lines() {
            let mut w = l.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(name) = w.next() else { continue };
            let names = w.filter(|t| !t.ends_with(':')).map(str::to_string);
            softdeps.entry(module_name(name)).or_default().extend(names);
        }
        Ok(Index {
            deps,
            aliases,
            builtin,
            softdeps,
        })
    }

    /// The modules a name stands for: itself, or what an alias matches (all of them, as
    /// modprobe loads them); `None` when it is built in; empty when unknown.
    fn lookup(&self, name: &str) -> Option<Vec<String>> {
        let n = module_name(name);
        if self.deps.contains_key(&n) {
            return Some(vec![n]);
        }
        if self.builtin.contains(&n) {
            return None;
        }
        let mut found: Vec<String> = self
            .aliases
            .iter()
            .filter(|(pattern, _)| glob(pattern.as_bytes(), name.as_bytes()))
            .map(|(_, m)| m.clone())
            .filter(|m| self.deps.contains_key(m) || self.builtin.contains(m))
            .collect();
        found.sort();
        found.dedup();
        if found.iter().any(|m| self.builtin.contains(m)) {
            return None;
        }
        Some(found)
    }
}

/// fnmatch(3) for modules.alias patterns: `*`, `?` and `[...]` classes.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                return !s.is_empty() && s[0] == b'[' && glob(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let class = &p[1..end];
            let (negate, class) = match class.first() {
                Some(b'!' | b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&p[end + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

/// The folder whose `modules.*` index describes the kernel at `m.dir`: the folder itself
/// when it has `modules.dep`, else one made under `work` by `depmod -b`.
fn index_dir(m: &Modules, work: &Path) -> Result<PathBuf, ModuleError> {
    if m.dir.join("modules.dep").is_file() {
        return Ok(m.dir.clone());
    }
    let root = work.join("kernel-index");
    let dir = root.join("lib/modules").join(&m.version);
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let kernel = m.dir.join("kernel");
    std::os::unix::fs::symlink(&kernel, dir.join("kernel")).map_err(io_at(&dir))?;
    copy_kernel_lists(&m.dir, &dir)?;
    depmod(&root, &m.version)?;
    Ok(dir)
}

/// The lists depmod reads besides the modules: what is built in, and the load order.
fn copy_kernel_lists(from: &Path, to: &Path) -> Result<(), ModuleError> {
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), to.join(f)).map_err(io_at(to))?;
        }
    }
    Ok(())
}

fn depmod(root: &Path, version: &str) -> Result<(), ModuleError> {
    let failed = |message: String| ModuleError::Depmod {
        root: root.to_path_buf(),
        message,
    };
    let out = Command::new(crate::fsutil::system_tool("depmod"))
        .arg("-b")
        .arg(root)
        .arg(version)
        .output()
        .map_err(|e| failed(format!("{e} (depmod is in Debian's kmod package)")))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; "),
        ));
    }
    Ok(())
}

/// The modules `m` names, with their dependencies, soft dependencies and firmware.
pub fn resolve(m: &Modules, work: &Path) -> Result<ModuleSet, ModuleError> {
    let index = Index::load(&index_dir(m, work)?)?;
    let mut set = ModuleSet {
        version: m.version.clone(),
        dir: m.dir.clone(),
        ..Default::default()
    };
    // (name, asked for, a soft dependency)
    let mut todo: Vec<(String, bool, bool)> =
        m.names.iter().map(|n| (n.clone(), true, false)).collect();
    let mut seen = HashSet::new();
    while let Some((name, asked, soft)) = todo.pop() {
        if !seen.insert(module_name(&name)) {
            continue;
        }
        let found = match index.lookup(&name) {
            None => {
                if asked {
                    set.builtin.push(name);
                }
                continue;
            }
            Some(found) if found.is_empty() && asked => {
                return Err(ModuleError::Missing {
                    name,
                    version: m.version.clone(),
                    dir: m.dir.clone(),
                });
            }
            Some(found) => found,
        };
        for module in found {
            if soft && !set.soft.contains(&module) {
                set.soft.push(module.clone());
            }
            let (path, needs) = &index.deps[&module];
            for p in std::iter::once(path).chain(needs) {
                if !m.dir.join(p).is_file() {
                    return Err(ModuleError::MissingFile {
                        name: module.clone(),
                        needed: p.clone(),
                        dir: m.dir.clone(),
                    });
                }
                set.files.insert(p.clone());
                todo.push((module_name(p), false, false));
            }
            // Soft dependencies are taken where the kernel has them, as modprobe does.
            for soft in index.softdeps.get(&module).into_iter().flatten() {
                todo.push((soft.clone(), false, true));
            }
        }
    }
    if m.firmware {
        set.firmware = firmware(m, &set)?;
    }
    Ok(set)
}

/// The firmware files the modules name (`modinfo -F firmware`) that the kernel's root
/// (`/lib/firmware`, or the one beside an unpacked package's `lib/modules`) has.
fn firmware(m: &Modules, set: &ModuleSet) -> Result<Vec<(PathBuf, String)>, ModuleError> {
    let lib = m.dir.parent().and_then(Path::parent);
    let roots: Vec<PathBuf> = lib
        .map(|l| l.join("firmware"))
        .into_iter()
        .chain([PathBuf::from("/lib/firmware")])
        .collect();
    let mut out = Vec::new();
    for file in &set.files {
        let Ok(o) = Command::new(crate::fsutil::system_tool("modinfo"))
            .args(["-F", "firmware"])
            .arg(m.dir.join(file))
            .output()
        else {
            return Ok(out);
        };
        for name in String::from_utf8_lossy(&o.stdout).lines() {
            let candidates = ["", ".xz", ".zst"].map(|s| format!("{name}{s}"));
            let hit = roots.iter().find_map(|r| {
                candidates
                    .iter()
                    .map(|c| (r.join(c), c.clone()))
                    .find(|(p, _)| p.is_file())
            });
            if let Some(hit) = hit
                && !out.contains(&hit)
            {
                out.push(hit);
            }
        }
    }
    Ok(out)
}

/// Lays the set out under `root` (a folder of the build's own) as `lib/modules/RELEASE`
/// and `lib/firmware`, with the index made for the subset, and the names asked for in
/// `etc/modules-load.d/rootpack.conf` (what an init loads at boot).
pub fn lay_out(set: &ModuleSet, names: &[String], root: &Path) -> Result<(), ModuleError> {
    let dir = root.join("lib/modules").join(&set.version);
    for file in &set.files {
        let to = dir.join(file);
        std::fs::create_dir_all(to.parent().unwrap_or(&dir)).map_err(io_at(&to))?;
        std::fs::copy(set.dir.join(file), &to).map_err(io_at(&to))?;
    }
    std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    copy_kernel_lists(&set.dir, &dir)?;
    depmod(root, &set.version)?;
    for (from, name) in &set.firmware {
        let to = root.join("lib/firmware").join(name);
        std::fs::create_dir_all(to.parent().unwrap_or(root)).map_err(io_at(&to))?;
        std::fs::copy(from, &to).map_err(io_at(&to))?;
    }
    let conf = root.join("etc/modules-load.d");
    std::fs::create_dir_all(&conf).map_err(io_at(&conf))?;
    let list: String = set
        .soft
        .iter()
        .chain(names)
        .map(|n| format!("{n}\n"))
        .collect();
    let path = conf.join("rootpack.conf");
    std::fs::write(&path, list).map_err(io_at(&path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_patterns_match_as_fnmatch_does() {
        assert!(glob(b"crypto-crc32c", b"crypto-crc32c"));
        assert!(glob(b"virtio:d00000002v*", b"virtio:d00000002v00001AF4"));
        assert!(glob(b"fs-ext[234]", b"fs-ext4"));
        assert!(!glob(b"fs-ext[!4]", b"fs-ext4"));
        assert!(glob(b"pci:v*d*sv*", b"pci:v1d2sv3"));
        assert!(!glob(b"a?c", b"ac"));
    }

    #[test]
    fn names_are_normalised() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz"),
            "crc32c_intel"
        );
        assert_eq!(module_name("virtio_blk"), "virtio_blk");
    }
}
