//! The shared-library closure of a program, found the way `ld.so` finds it, without running
//! the program (which `ldd` does, and which is unsafe on untrusted binaries): PT_INTERP,
//! DT_NEEDED searched through DT_RPATH (when there is no DT_RUNPATH, inherited from the
//! loading chain), DT_RUNPATH, `/etc/ld.so.cache` and the default folders; `$ORIGIN` is the
//! folder of the object with symlinks resolved. Candidates of another ELF class or machine
//! are skipped, as `ld.so` skips them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use goblin::elf::Elf;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an ELF file we can read: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: a script for {interpreter}, which is not found on this host")]
    Interpreter { path: PathBuf, interpreter: String },
    #[error("{path}: needs {name}, which is not found (searched {searched})")]
    NotFound {
        path: PathBuf,
        name: String,
        searched: String,
    },
}

/// What one ELF file says about loading.
struct Object {
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    class64: bool,
    machine: u16,
}

fn read_object(path: &Path) -> Result<Option<Object>, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.starts_with(b"\x7fELF") {
        // A script: its interpreter is the user's business, not a library.
        return Ok(None);
    }
    let elf = Elf::parse(&bytes).map_err(|e| ElfError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    Ok(Some(Object {
        interp: elf.interpreter.map(String::from),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
        class64: elf.is_64,
        machine: elf.header.e_machine,
    }))
}

/// The ELF class and machine of a file, if it is an ELF file.
fn elf_kind(path: &Path) -> Option<(bool, u16)> {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    if !head.starts_with(b"\x7fELF") {
        return None;
    }
    let class64 = head[4] == 2;
    let machine = if head[5] == 1 {
        u16::from_le_bytes([head[18], head[19]])
    } else {
        u16::from_be_bytes([head[18], head[19]])
    };
    Some((class64, machine))
}

/// `/etc/ld.so.cache` (glibc's "glibc-ld.so.cache1.1" format): library name -> paths.
pub struct LdCache {
    /// Library name -> paths, in the cache's order of preference.
    entries: HashMap<String, Vec<PathBuf>>,
}

impl LdCache {
    pub fn load(path: &Path) -> LdCache {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| Self::parse(&b))
            .unwrap_or_default();
        LdCache { entries }
    }

    fn parse(data: &[u8]) -> Option<HashMap<String, Vec<PathBuf>>> {
        const NEW: &[u8] = b"glibc-ld.so.cache1.1";
        // An old-format table may precede the new one; offsets count from the new header.
        let start = data.windows(NEW.len()).position(|w| w == NEW)?;
        let d = &data[start..];
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
        };
        let count = u32_at(20)? as usize;
        let header = 48;
        let cstr = |o: usize| -> Option<String> {
            let s = d.get(o..)?;
            let end = s.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&s[..end]).into_owned())
        };
        let mut out: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for i in 0..count {
            let e = header + i * 24;
            let key = cstr(u32_at(e + 4)? as usize)?;
            let value = cstr(u32_at(e + 8)? as usize)?;
            out.entry(key).or_default().push(PathBuf::from(value));
        }
        Some(out)
    }

    fn lookup<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Path> + 'a {
        self.entries
            .get(name)
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

fn expand_origin(dir: &str, origin: &Path) -> PathBuf {
    let o = origin.to_string_lossy();
    PathBuf::from(dir.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
}

/// The program itself (as given), its interpreter and every shared library it loads, in
/// the order found. Paths are as the loader finds them (not with symlinks resolved), so
/// they match `ldd` and the symlink chains can be copied.
pub fn closure(program: &Path) -> Result<Vec<PathBuf>, ElfError> {
    closure_with_cache(program, &LdCache::load(Path::new("/etc/ld.so.cache")))
}

///
/// For a `#!` script, its interpreter's closure follows (for `#!/usr/bin/env NAME`, NAME's
/// too, found in PATH), as the kernel would need them to run it.
pub fn closure_with_cache(program: &Path, cache: &LdCache) -> Result<Vec<PathBuf>, ElfError> {
    script_closure(program, cache, 0)
}

/// The kernel follows at most a few interpreters that are scripts themselves.
const MAX_SCRIPT_DEPTH: usize = 4;

fn script_closure(program: &Path, cache: &LdCache, depth: usize) -> Result<Vec<PathBuf>, ElfError> {
    let mut found = elf_closure(program, cache)?;
    if depth >= MAX_SCRIPT_DEPTH {
        return Ok(found);
    }
    for interpreter in script_interpreters(program)? {
        for f in script_closure(&interpreter, cache, depth + 1)? {
            if !found.contains(&f) {
                found.push(f);
            }
        }
    }
    Ok(found)
}

/// What a `#!` line needs: the interpreter, and for `env NAME` the program NAME in PATH.
/// Empty for anything that is not a script.
fn script_interpreters(path: &Path) -> Result<Vec<PathBuf>, ElfError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(path)
        .and_then(|f| f.take(256).read_to_end(&mut head))
        .map_err(|source| ElfError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let Some(line) = head.strip_prefix(b"#!") else {
        return Ok(Vec::new());
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else {
        return Ok(Vec::new());
    };
    let missing = |name: &str| ElfError::Interpreter {
        path: path.to_path_buf(),
        interpreter: name.to_string(),
    };
    let interp = PathBuf::from(interpreter);
    if !interp.is_file() {
        return Err(missing(interpreter));
    }
    let mut needed = vec![interp];
    if interpreter.rsplit('/').next() == Some("env")
        && let Some(name) = words.find(|w| !w.starts_with('-') && !w.contains('='))
    {
        let path_var =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let program = std::env::split_paths(&path_var)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| missing(name))?;
        needed.push(program);
    }
    Ok(needed)
}

fn elf_closure(program: &Path, cache: &LdCache) -> Result<Vec<PathBuf>, ElfError> {
    let mut found = vec![program.to_path_buf()];
    let mut seen: HashSet<PathBuf> = HashSet::new();
    seen.insert(canonical(program));
    // (object path, RPATHs of the objects that loaded it)
    let mut queue: Vec<(PathBuf, Vec<PathBuf>)> = vec![(program.to_path_buf(), Vec::new())];
    let mut first = true;
    while let Some((path, inherited)) = queue.pop() {
        let Some(obj) = read_object(&path)? else {
            continue;
        };
        if first {
            if let Some(interp) = &obj.interp {
                let interp = PathBuf::from(interp);
                if seen.insert(canonical(&interp)) {
                    found.push(interp);
                }
            }
            first = false;
        }
        let origin = canonical(&path)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let own_rpath: Vec<PathBuf> = obj
            .rpath
            .iter()
            .map(|d| expand_origin(d, &origin))
            .collect();
        let runpath: Vec<PathBuf> = obj
            .runpath
            .iter()
            .map(|d| expand_origin(d, &origin))
            .collect();
        let mut search: Vec<PathBuf> = Vec::new();
        if runpath.is_empty() {
            search.extend(own_rpath.iter().cloned());
            search.extend(inherited.iter().cloned());
        }
        search.extend(runpath.iter().cloned());
        let mut chain = inherited.clone();
        if runpath.is_empty() {
            chain.extend(own_rpath.iter().cloned());
        }
        for name in &obj.needed {
            let lib =
                find_library(name, &search, cache, obj.class64, obj.machine).ok_or_else(|| {
                    ElfError::NotFound {
                        path: path.clone(),
                        name: name.clone(),
                        searched: search
                            .iter()
                            .map(|p| p.display().to_string())
                            .chain(["ld.so.cache".into(), DEFAULT_DIRS.join(", ")])
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                })?;
            if seen.insert(canonical(&lib)) {
                found.push(lib.clone());
                queue.insert(0, (lib, chain.clone()));
            }
        }
    }
    Ok(found)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn find_library(
    name: &str,
    search: &[PathBuf],
    cache: &LdCache,
    class64: bool,
    machine: u16,
) -> Option<PathBuf> {
    let fits = |p: &Path| elf_kind(p) == Some((class64, machine));
    if name.contains('/') {
        let p = PathBuf::from(name);
        return fits(&p).then_some(p);
    }
    search
        .iter()
        .map(|d| d.join(name))
        .find(|p| fits(p))
        .or_else(|| cache.lookup(name).find(|p| fits(p)).map(Path::to_path_buf))
        .or_else(|| {
            DEFAULT_DIRS
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| fits(p))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_of_this_host_knows_libc() {
        let cache = LdCache::load(Path::new("/etc/ld.so.cache"));
        assert!(cache.lookup("libc.so.6").next().is_some());
    }

    #[test]
    fn bash_needs_libc_and_an_interpreter() {
        let found = closure(Path::new("/bin/bash")).unwrap();
        assert_eq!(found[0], Path::new("/bin/bash"));
        assert!(
            found
                .iter()
                .any(|p| p.to_string_lossy().contains("ld-linux")),
            "{found:?}"
        );
        assert!(found.iter().any(|p| p.ends_with("libc.so.6")), "{found:?}");
    }
}
