//! `[output]`: the format, size, free room, method, label, what happens to package
//! managers' files and, for OCI outputs, tag and layer compression, each checked by its
//! own function.

use toml::Spanned;

use super::context::Ctx;
use super::written::OutputSpec;
use super::{Free, Method, Output, OutputFormat, PackageFiles, RecipeError, Size, parse_size};

/// Resolves `[output]`; `name` is the recipe's, for the tag example.
pub(super) fn resolve(ctx: &Ctx<'_>, out: &OutputSpec, name: &str) -> Result<Output, RecipeError> {
    let format = format(ctx, &out.format)?;
    let size = size(ctx, &out.size)?;
    Ok(Output {
        format,
        free: free(ctx, &out.free, size)?,
        size,
        method: method(ctx, &out.method)?,
        label: label(ctx, &out.label)?,
        tag: tag(ctx, &out.tag, name)?,
        layer_zstd: layer_zstd(ctx, &out.layer_compression)?,
        package_files: package_files(ctx, &out.package_files)?,
    })
}

fn format(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<OutputFormat, RecipeError> {
    let Some(f) = value else {
        return Ok(OutputFormat::Ext4);
    };
    match OutputFormat::ALL
        .into_iter()
        .find(|v| v.name() == *f.get_ref())
    {
        Some(v) => Ok(v),
        None => {
            let names: Vec<String> = OutputFormat::ALL.iter().map(OutputFormat::name).collect();
            ctx.err(
                f.span(),
                format!(
                    "output.format = \"{}\": one of {}",
                    f.get_ref(),
                    names.join(", ")
                ),
            )
        }
    }
}

fn size(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<Size, RecipeError> {
    match value {
        None => Ok(Size::Auto),
        Some(s) if s.get_ref() == "auto" => Ok(Size::Auto),
        Some(s) => match parse_size(s.get_ref()) {
            Some(b) if b >= 1 << 20 => Ok(Size::Bytes(b)),
            _ => ctx.err(
                s.span(),
                format!(
                    "output.size = \"{}\": \"auto\" or a size of at least 1M, like \"512M\"",
                    s.get_ref()
                ),
            ),
        },
    }
}

/// `free`: `"N%"` of the file system (at most 90) or a size; for `size = "auto"` only, as
/// a fixed size already says how much room there is.
fn free(ctx: &Ctx<'_>, value: &Option<Spanned<String>>, size: Size) -> Result<Free, RecipeError> {
    let Some(f) = value else {
        return Ok(Free::Percent(10));
    };
    let text = f.get_ref().trim();
    if let Size::Bytes(_) = size {
        return ctx.err(
            f.span(),
            format!(
                "output.free = \"{text}\": only with size = \"auto\" (a fixed output.size already says how much room there is)"
            ),
        );
    }
    let parsed = match text.strip_suffix('%') {
        Some(n) => n
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= 90)
            .map(Free::Percent),
        None => parse_size(text).map(Free::Bytes),
    };
    match parsed {
        Some(free) => Ok(free),
        None => ctx.err(
            f.span(),
            format!(
                "output.free = \"{text}\": a share of the file system like \"10%\" (at most 90%), or a size like \"256M\""
            ),
        ),
    }
}

fn package_files(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
) -> Result<PackageFiles, RecipeError> {
    match value.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "clean")) => Ok(PackageFiles::Clean),
        Some((_, "clean-all")) => Ok(PackageFiles::CleanAll),
        Some((_, "keep")) => Ok(PackageFiles::Keep),
        Some((v, other)) => ctx.err(
            v.span(),
            format!("output.package_files = \"{other}\": one of clean, clean-all, keep"),
        ),
    }
}

fn method(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<Method, RecipeError> {
    match value.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "auto")) => Ok(Method::Auto),
        Some((_, "populate")) => Ok(Method::Populate),
        Some((_, "mount")) => Ok(Method::Mount),
        Some((m, other)) => ctx.err(
            m.span(),
            format!("output.method = \"{other}\": one of auto, populate, mount"),
        ),
    }
}

fn label(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<Option<String>, RecipeError> {
    match value {
        Some(l) if l.get_ref().len() > 16 => {
            ctx.err(l.span(), "output.label: at most 16 bytes (an ext4 limit)")
        }
        l => Ok(l.as_ref().map(|l| l.get_ref().clone())),
    }
}

fn tag(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    name: &str,
) -> Result<Option<String>, RecipeError> {
    match value {
        Some(t) if !valid_tag(t.get_ref()) => ctx.err(
            t.span(),
            format!(
                "output.tag = \"{}\": NAME:TAG, like \"{name}:1.0\" (lower-case name; letters, digits, '.', '_', '-' in the tag)",
                t.get_ref()
            ),
        ),
        t => Ok(t.as_ref().map(|t| t.get_ref().clone())),
    }
}

/// `layer_compression`: gzip (the default, what every registry takes) or zstd.
fn layer_zstd(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<bool, RecipeError> {
    match value.as_ref().map(|c| (c, c.get_ref().as_str())) {
        None | Some((_, "gzip")) => Ok(false),
        Some((_, "zstd")) => Ok(true),
        Some((c, other)) => ctx.err(
            c.span(),
            format!("output.layer_compression = \"{other}\": gzip or zstd"),
        ),
    }
}

/// An image reference's name and tag: `registry.example:5000/team/app:1.0`.
fn valid_tag(s: &str) -> bool {
    let Some((name, tag)) = s.rsplit_once(':') else {
        return false;
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
        });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.contains('/')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    name_ok && tag_ok
}
