//! The recipe's own entries, placed in the tree after its layers: programs with their
//! libraries, kernel modules, folders, mount points, files and symlinks; and the files
//! that go in once the `[[run]]` steps are done.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::{BuildError, check_interrupt, out_err};
use crate::archive::Kind;
use crate::recipe::{FileSource, Recipe};
use crate::tree::elf;
use crate::tree::extract::Extractor;
use crate::tree::inject;
use crate::tree::recorded::RecordedTree;
use crate::tree::safe_path::Root;

/// What the recipe takes from the host besides its layers and files, found once for the
/// cache's keys, sizing and injecting alike.
pub(super) struct Inputs {
    /// Each of the recipe's programs with its library closure, in recipe order.
    pub programs: Vec<Vec<PathBuf>>,
    /// `[modules]`: the set, and the folder it is laid out in (`lib/modules/RELEASE`, …).
    pub modules: Option<(crate::kernel::ModuleSet, PathBuf)>,
}

/// Finds the recipe's [`Inputs`], laying its modules out in `work`.
pub(super) fn inputs(recipe: &Recipe, work: &Path) -> Result<Inputs, BuildError> {
    let modules = match &recipe.modules {
        Some(m) => {
            let set = crate::kernel::resolve(m, work).map_err(|e| BuildError::Modules {
                recipe: recipe.path.clone(),
                line: m.line,
                source: e,
            })?;
            let root = work.join("modules");
            crate::kernel::lay_out(&set, &m.names, &root).map_err(|e| BuildError::Modules {
                recipe: recipe.path.clone(),
                line: m.line,
                source: e,
            })?;
            Some((set, root))
        }
        None => None,
    };
    Ok(Inputs {
        programs: closures(recipe)?,
        modules,
    })
}

/// Each of the recipe's programs with its library closure, in recipe order (one read of
/// `/etc/ld.so.cache`).
fn closures(recipe: &Recipe) -> Result<Vec<Vec<PathBuf>>, BuildError> {
    let cache = elf::LdCache::load(Path::new("/etc/ld.so.cache"));
    recipe
        .binaries
        .iter()
        .map(|b| {
            elf::closure_with_cache(&b.host, &cache).map_err(|source| BuildError::Binary {
                path: b.host.clone(),
                source,
            })
        })
        .collect()
}

/// The `[[binary]]` programs with their libraries (from `closures`), and their links.
fn inject_binaries(
    recipe: &Recipe,
    closures: &[Vec<PathBuf>],
    x: &mut Extractor,
    now: i64,
) -> Result<(), BuildError> {
    let mut seen = HashSet::new();
    for (b, files) in recipe.binaries.iter().zip(closures) {
        check_interrupt()?;
        for (i, file) in files.iter().enumerate() {
            match (&b.to, i) {
                (Some(to), 0) => inject::inject_host_file_at(x, file, to)?,
                _ => inject::inject_host_path(x, file, &mut seen)?,
            }
        }
        log::debug!(
            "injected {} with {} other file(s): {}",
            b.host.display(),
            files.len().saturating_sub(1),
            files
                .iter()
                .skip(1)
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let program = match &b.to {
            Some(to) => format!("/{}", to.as_bytes().escape_ascii()),
            None => b.host.display().to_string(),
        };
        for link in &b.links {
            let kind = Kind::Symlink(program.clone().into_bytes());
            let e = inject::synthetic(link, kind, 0o777, 0, 0, now, 0);
            inject::write_entry(x, &e, &mut io::empty())?;
        }
    }
    Ok(())
}

pub(super) fn inject_all(
    recipe: &Recipe,
    inputs: &Inputs,
    x: &mut Extractor,
    sde: Option<i64>,
) -> Result<(), BuildError> {
    let now = now(sde);
    inject_binaries(recipe, &inputs.programs, x, now)?;
    if let Some((_, dir)) = &inputs.modules {
        inject::add_tree(x, dir).map_err(|source| BuildError::LayerDir {
            path: dir.clone(),
            source,
        })?;
    }
    for d in &recipe.dirs {
        let e = inject::synthetic(&d.path, Kind::Dir, d.mode, d.uid, d.gid, now, 0);
        inject::write_entry(x, &e, &mut io::empty())?;
    }
    for m in &recipe.mountpoints {
        // /tmp is world-writable with the sticky bit everywhere.
        let mode = if m.as_bytes() == b"tmp" {
            0o1777
        } else {
            0o755
        };
        if !x.exists(m) {
            let e = inject::synthetic(m, Kind::Dir, mode, 0, 0, now, 0);
            inject::write_entry(x, &e, &mut io::empty())?;
        }
    }
    inject_files(recipe, x, now, false)?;
    for s in &recipe.symlinks {
        let kind = Kind::Symlink(s.target.as_bytes().to_vec());
        let e = inject::synthetic(&s.path, kind, 0o777, 0, 0, now, 0);
        inject::write_entry(x, &e, &mut io::empty())?;
    }
    Ok(())
}

/// The build's time for what it adds: the source date epoch, else now.
fn now(sde: Option<i64>) -> i64 {
    sde.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    })
}

/// The `[[file]]` entries placed before the steps, or (`after_steps`) once they are done.
fn inject_files(
    recipe: &Recipe,
    x: &mut Extractor,
    now: i64,
    after_steps: bool,
) -> Result<(), BuildError> {
    for f in recipe.files.iter().filter(|f| f.after_steps == after_steps) {
        match &f.source {
            FileSource::Inline(bytes) => {
                let e = inject::synthetic(
                    &f.to,
                    Kind::File,
                    f.mode,
                    f.uid,
                    f.gid,
                    now,
                    bytes.len() as u64,
                );
                inject::write_entry(x, &e, &mut &bytes[..])?;
            }
            FileSource::Host(path) => {
                let file = File::open(path).map_err(out_err(path))?;
                let len = file.metadata().map_err(out_err(path))?.len();
                let e = inject::synthetic(&f.to, Kind::File, f.mode, f.uid, f.gid, now, len);
                inject::write_entry(x, &e, &mut BufReader::new(file))?;
            }
        }
    }
    Ok(())
}

/// Places the files that go in after the steps, recording what the tree cannot hold.
pub(super) fn inject_after_steps(
    recipe: &Recipe,
    root: &Path,
    recorded: Option<&mut RecordedTree>,
    sde: Option<i64>,
) -> Result<(), BuildError> {
    if !recipe.files.iter().any(|f| f.after_steps) {
        return Ok(());
    }
    let mut x = Extractor::new(Root::open(root).map_err(out_err(root))?, false);
    if recorded.is_some() {
        x = x.record_metadata();
    }
    inject_files(recipe, &mut x, now(sde), true)?;
    if let (Some(recorded), (_, Some(new))) = (recorded, x.finish_recorded()?) {
        recorded.extend(new);
    }
    Ok(())
}
