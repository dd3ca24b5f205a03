//! The recipe: a TOML file kept in version control that says what goes into an image.
//! Parsing is strict (unknown keys are errors); every error names the recipe file, the
//! line and the key. Relative paths are relative to the recipe's folder.
//!
//! `written` is the file as serde reads it (every value spanned), `sections` and `output`
//! resolve it one section at a time, `types` is what the build gets.

use std::path::{Path, PathBuf};

pub mod confine;
mod context;
pub mod hints;
mod output;
mod run_step;
mod sections;
mod types;
mod units;
mod written;

use context::Ctx;
pub use run_step::{RunStep, StepCommand, StepMount, StepNetwork, parse_duration};
pub use types::*;
pub use units::parse_size;

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads, validates and resolves a recipe file.
pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let bytes = std::fs::read(path).map_err(|source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| RecipeError::At {
        path: path.to_path_buf(),
        line: 1,
        message: "not UTF-8 text".into(),
    })?;
    let ctx = context(path, text)?;
    let file: written::RecipeFile = toml::from_str(text).map_err(|e| RecipeError::At {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| ctx.line(s.start)),
        message: hints::explain(text, e.span(), &e.message().replace('\n', " ")),
    })?;
    // This order decides which error a recipe with several shows first; keep it.
    let name = sections::name(&ctx, &file.name)?;
    let layers = sections::layers(&ctx, &file.layers)?;
    let binaries = sections::binaries(&ctx, &file.binaries)?;
    let files = sections::files(&ctx, &file.files)?;
    let dirs = sections::dirs(&ctx, &file.dirs)?;
    let symlinks = sections::symlinks(&ctx, &file.symlinks)?;
    let mountpoints = sections::image_paths(&ctx, "mountpoints", &file.mountpoints)?;
    let limits = sections::limits(&ctx, &file.limits)?;
    let output = output::resolve(&ctx, &file.output, &name)?;
    let steps = run_step::resolve(&ctx, &file.steps)?;
    let config = sections::config(&ctx, file.config)?;
    let modules = file
        .modules
        .as_ref()
        .map(|m| sections::modules(&ctx, m))
        .transpose()?;
    Ok(Recipe {
        path: path.to_path_buf(),
        sha256: crate::digest::sha256_hex(&bytes),
        name,
        source_date_epoch: file.source_date_epoch.map(|s| *s.get_ref()),
        layers,
        binaries,
        files,
        dirs,
        symlinks,
        mountpoints,
        config,
        limits,
        output,
        steps,
        modules,
    })
}

/// The context for resolving the recipe at `path`: its folder made absolute, so host paths
/// in the recipe mean the same from any working folder, and the running kernel's release.
fn context<'a>(path: &'a Path, text: &'a str) -> Result<Ctx<'a>, RecipeError> {
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = std::path::absolute(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
    .map_err(|source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Ctx {
        path,
        text,
        dir,
        kernel,
    })
}

/// Looks a program up in `PATH`, as a shell would.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| hints::not_a_program(p).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Recipe, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        std::fs::write(&path, text).unwrap();
        load(&path).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "D")
        })
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let e = load_str("name = \"x\"\n\n[output]\nformatt = \"ext4\"\n").unwrap_err();
        assert!(e.starts_with("D/r.toml:4: unknown field `formatt`"), "{e}");
        let e = load_str("name = \"x\"\n[[layer]]\ntar = \"missing.tar\"\n").unwrap_err();
        assert!(
            e.contains("r.toml:3: layer.tar = \"missing.tar\"") && e.contains("does not exist"),
            "{e}"
        );
        let e = load_str("name = \"x\"\n[limits]\npids = \"many\"\n").unwrap_err();
        assert!(
            e.starts_with("D/r.toml:3: limits.pids: invalid type"),
            "{e}"
        );
        let e =
            load_str("name = \"x\"\n[[file]]\nto = \"etc/motd\"\ncontent = \"\"\n").unwrap_err();
        assert!(
            e.contains(":3: file.to = \"etc/motd\": must be an absolute path"),
            "{e}"
        );
        let e = load_str("name = \"x\"\n[[file]]\nto = \"/a/../b\"\ncontent = \"\"\n").unwrap_err();
        assert!(e.contains("'..'"), "{e}");
        let e = load_str("name = \"../x\"\n").unwrap_err();
        assert!(e.contains(":1: name"), "{e}");
        let e = load_str("name = \"x\"\n[output]\nmethod = \"dd\"\n").unwrap_err();
        assert!(e.contains(":3: output.method = \"dd\""), "{e}");
    }

    #[test]
    fn free_room_and_package_files() {
        let out = |keys: &str| load_str(&format!("name = \"x\"\n[output]\n{keys}\n"));
        let r = out("").unwrap();
        assert_eq!(r.output.free, Free::Percent(10));
        assert_eq!(r.output.package_files, PackageFiles::Clean);
        let r = out("free = \"25%\"\npackage_files = \"keep\"").unwrap();
        assert_eq!(r.output.free, Free::Percent(25));
        assert_eq!(r.output.package_files, PackageFiles::Keep);
        let r = out("free = \"256M\"\npackage_files = \"clean-all\"").unwrap();
        assert_eq!(r.output.free, Free::Bytes(256 << 20));
        assert_eq!(r.output.package_files, PackageFiles::CleanAll);
        let e = out("free = \"95%\"").unwrap_err();
        assert!(e.contains(":3: output.free = \"95%\": a share"), "{e}");
        let e = out("size = \"512M\"\nfree = \"10%\"").unwrap_err();
        assert!(
            e.contains(":4: output.free = \"10%\": only with size"),
            "{e}"
        );
        let e = out("package_files = \"tidy\"").unwrap_err();
        assert!(e.contains(":3: output.package_files = \"tidy\""), "{e}");
    }

    #[test]
    fn a_full_recipe_resolves() {
        let r = load_str(
            "name = \"full\"\nsource_date_epoch = 1700000000\nmountpoints = [\"/proc\"]\n\
             [[binary]]\npath = \"sh\"\n[[file]]\nto = \"/etc/motd\"\ncontent = \"hi\"\nmode = \"0600\"\n\
             [config]\nentrypoint = [\"/bin/sh\"]\nenv = { PATH = \"/bin\" }\n\
             [limits]\nmemory = \"64M\"\npids = 10\ncpus = 0.5\n\
             [output]\nformat = \"cpio.zst\"\nsize = \"64M\"\nmethod = \"mount\"\n",
        )
        .unwrap();
        assert_eq!(r.files[0].mode, 0o600);
        assert_eq!(r.limits.memory, Some(64 << 20));
        assert_eq!(r.output.format.extension(), "cpio.zst");
        assert_eq!(r.output.method, Method::Mount);
        assert_eq!(r.mountpoints[0].as_bytes(), b"proc");
        assert!(r.binaries[0].host.ends_with("sh"));
    }
}
