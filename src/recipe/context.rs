//! What every resolver needs: the recipe's path and text (for line numbers), its folder
//! (for relative host paths) and the running kernel (for `{kernel}`), and the checks of
//! values that several sections share.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{RecipeError, hints};
use crate::tree::safe_path::RelPath;

pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub dir: PathBuf,
    pub kernel: String,
}

impl Ctx<'_> {
    pub fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    pub fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Result<T, RecipeError> {
        Err(RecipeError::At {
            path: self.path.to_path_buf(),
            line: self.line(span.start),
            message: message.into(),
        })
    }

    /// A host path from the recipe: `{kernel}` and `{latest}` expanded, relative to the
    /// recipe, must exist.
    pub fn host_path(&self, key: &str, value: &Spanned<String>) -> Result<PathBuf, RecipeError> {
        let (path, expanded) = self.expand_host_path(key, value)?;
        if std::fs::symlink_metadata(&path).is_err() {
            return self.err(
                value.span(),
                format!("{key} = \"{expanded}\": {} does not exist", path.display()),
            );
        }
        Ok(path)
    }

    /// A host path from the recipe, expanded and relative to the recipe, that may not exist
    /// yet; with the expanded text, for errors.
    pub fn expand_host_path(
        &self,
        key: &str,
        value: &Spanned<String>,
    ) -> Result<(PathBuf, String), RecipeError> {
        let mut expanded = value.get_ref().replace("{kernel}", &self.kernel);
        if expanded.contains("{latest}") {
            expanded = hints::expand_latest(&self.dir, &expanded)
                .or_else(|message| self.err(value.span(), format!("{key}: {message}")))?;
        }
        Ok((self.dir.join(&expanded), expanded))
    }

    /// A path inside the image: absolute, no `..`.
    pub fn image_path(&self, key: &str, value: &Spanned<String>) -> Result<RelPath, RecipeError> {
        let v = value.get_ref();
        if !v.starts_with('/') {
            return self.err(
                value.span(),
                format!("{key} = \"{v}\": must be an absolute path in the image"),
            );
        }
        match RelPath::parse(v.as_bytes()) {
            Ok(p) if !p.is_root() => Ok(p),
            Ok(_) => self.err(
                value.span(),
                format!("{key} = \"{v}\": cannot be the root folder"),
            ),
            Err(e) => self.err(value.span(), format!("{key} = \"{v}\": {e}")),
        }
    }

    pub fn mode(
        &self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: u32,
    ) -> Result<u32, RecipeError> {
        let Some(v) = value else { return Ok(default) };
        match u32::from_str_radix(v.get_ref().trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 => Ok(m),
            _ => self.err(
                v.span(),
                format!(
                    "{key} = \"{}\": not an octal mode like \"0644\"",
                    v.get_ref()
                ),
            ),
        }
    }
}
