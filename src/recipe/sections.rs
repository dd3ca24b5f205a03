//! One resolver per section of the recipe: from the as-written value to the resolved type,
//! or an error naming the line and the key.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::context::Ctx;
use super::written::{
    BinarySpec, ConfigSpec, DirSpec, FileSpec, LayerSpec, LimitsSpec, SymlinkSpec,
};
use super::{
    Binary, Config, DirItem, FileItem, FileSource, Layer, Limits, Modules, Pull, RecipeError,
    SymlinkItem, find_in_path, hints, parse_size,
};
use crate::tree::safe_path::RelPath;

/// `name`: a file name that cannot be hidden or climb out of the output folder.
pub(super) fn name(ctx: &Ctx<'_>, name: &Spanned<String>) -> Result<String, RecipeError> {
    let value = name.get_ref();
    let valid = !value.is_empty()
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        return ctx.err(
            name.span(),
            format!("name = \"{value}\": use letters, digits, '.', '_' and '-'"),
        );
    }
    Ok(value.clone())
}

/// `[[layer]]`: exactly one source each; `ref` and `platform` only with `oci`.
pub(super) fn layers(
    ctx: &Ctx<'_>,
    specs: &[Spanned<LayerSpec>],
) -> Result<Vec<Layer>, RecipeError> {
    specs.iter().map(|s| layer(ctx, s)).collect()
}

fn layer(ctx: &Ctx<'_>, spec: &Spanned<LayerSpec>) -> Result<Layer, RecipeError> {
    let l = spec.get_ref();
    let given: Vec<_> = [
        ("initramfs", &l.initramfs),
        ("tar", &l.tar),
        ("dir", &l.dir),
        ("oci", &l.oci),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let [(key, value)] = given[..] else {
        return ctx.err(
            spec.span(),
            "[[layer]] needs exactly one of initramfs, tar, dir or oci",
        );
    };
    if key != "oci"
        && let Some(extra) = l.reference.as_ref().or(l.platform.as_ref())
    {
        return ctx.err(
            extra.span(),
            "layer.ref and layer.platform go with layer.oci",
        );
    }
    if let Some(t) = &l.tls_verify
        && !(key == "oci" && value_is_pull(l))
    {
        return ctx.err(
            t.span(),
            "layer.tls_verify goes with layer.oci = \"docker://…\"",
        );
    }
    if let Some(p) = &l.platform
        && p.get_ref().split('/').filter(|s| !s.is_empty()).count() < 2
    {
        return ctx.err(
            p.span(),
            format!(
                "layer.platform = \"{}\": expected OS/ARCH, like \"linux/amd64\"",
                p.get_ref()
            ),
        );
    }
    if key == "oci" && value_is_pull(l) {
        return pulled_layer(ctx, l, value);
    }
    let path = ctx.host_path(&format!("layer.{key}"), value)?;
    Ok(match key {
        "initramfs" => Layer::Initramfs(path),
        "tar" => Layer::Tar(path),
        "oci" => Layer::Oci {
            path,
            reference: l.reference.as_ref().map(|r| r.get_ref().clone()),
            platform: l.platform.as_ref().map(|p| p.get_ref().clone()),
            pull: None,
        },
        _ => Layer::Dir(path),
    })
}

/// `layer.oci = "docker://NAME[:TAG]"`, its `ref` a digest that pins it.
fn pulled_layer(
    ctx: &Ctx<'_>,
    l: &LayerSpec,
    value: &Spanned<String>,
) -> Result<Layer, RecipeError> {
    let name = value.get_ref().trim_start_matches("docker://");
    if name.is_empty() || name.contains(char::is_whitespace) {
        return ctx.err(
            value.span(),
            format!(
                "layer.oci = \"{}\": expected docker://NAME[:TAG]",
                value.get_ref()
            ),
        );
    }
    if let Some(r) = &l.reference
        && !r.get_ref().starts_with("sha256:")
    {
        return ctx.err(
            r.span(),
            "layer.ref with docker://: the digest that pins the image, \"sha256:…\"",
        );
    }
    Ok(Layer::Oci {
        path: PathBuf::new(),
        reference: l.reference.as_ref().map(|r| r.get_ref().clone()),
        platform: l.platform.as_ref().map(|p| p.get_ref().clone()),
        pull: Some(Pull {
            source: value.get_ref().clone(),
            tls_verify: l.tls_verify.as_ref().is_none_or(|t| *t.get_ref()),
        }),
    })
}

fn value_is_pull(l: &LayerSpec) -> bool {
    l.oci
        .as_ref()
        .is_some_and(|o| o.get_ref().starts_with("docker://"))
}

/// `[[binary]]`: a program found by path or in `PATH`, and where it and its links go.
pub(super) fn binaries(ctx: &Ctx<'_>, specs: &[BinarySpec]) -> Result<Vec<Binary>, RecipeError> {
    specs.iter().map(|b| binary(ctx, b)).collect()
}

fn binary(ctx: &Ctx<'_>, b: &BinarySpec) -> Result<Binary, RecipeError> {
    let p = b.path.get_ref();
    let host = if p.contains('/') {
        ctx.host_path("binary.path", &b.path)?
    } else {
        match find_in_path(p) {
            Some(found) => found,
            None => {
                return ctx.err(
                    b.path.span(),
                    format!("binary.path = \"{p}\": not found in PATH"),
                );
            }
        }
    };
    if let Some(why) = hints::not_a_program(&host) {
        return ctx.err(
            b.path.span(),
            format!(
                "binary.path = \"{p}\": {why}; [[binary]] takes programs (ELF or #! \
                 scripts), [[file]] copies other files"
            ),
        );
    }
    let to =
        b.to.as_ref()
            .map(|t| ctx.image_path("binary.to", t))
            .transpose()?;
    let links = image_paths(ctx, "binary.links", &b.links)?;
    Ok(Binary { host, to, links })
}

/// `[[file]]`: inline content or a host file, placed with a mode and owner.
pub(super) fn files(
    ctx: &Ctx<'_>,
    specs: &[Spanned<FileSpec>],
) -> Result<Vec<FileItem>, RecipeError> {
    specs.iter().map(|s| file(ctx, s)).collect()
}

fn file(ctx: &Ctx<'_>, spec: &Spanned<FileSpec>) -> Result<FileItem, RecipeError> {
    let f = spec.get_ref();
    let source = match (&f.content, &f.from) {
        (Some(c), None) => FileSource::Inline(c.clone().into_bytes()),
        (None, Some(from)) => FileSource::Host(ctx.host_path("file.from", from)?),
        _ => return ctx.err(spec.span(), "[[file]] needs exactly one of content or from"),
    };
    Ok(FileItem {
        to: ctx.image_path("file.to", &f.to)?,
        source,
        mode: ctx.mode("file.mode", &f.mode, 0o644)?,
        uid: f.uid,
        gid: f.gid,
        after_steps: f.after_steps,
    })
}

/// `[[dir]]`: folders to create, with a mode and owner.
pub(super) fn dirs(ctx: &Ctx<'_>, specs: &[DirSpec]) -> Result<Vec<DirItem>, RecipeError> {
    specs
        .iter()
        .map(|d| {
            Ok(DirItem {
                path: ctx.image_path("dir.path", &d.path)?,
                mode: ctx.mode("dir.mode", &d.mode, 0o755)?,
                uid: d.uid,
                gid: d.gid,
            })
        })
        .collect()
}

/// `[[symlink]]`: the target is taken as written (it is resolved inside the image).
pub(super) fn symlinks(
    ctx: &Ctx<'_>,
    specs: &[SymlinkSpec],
) -> Result<Vec<SymlinkItem>, RecipeError> {
    specs
        .iter()
        .map(|s| {
            Ok(SymlinkItem {
                path: ctx.image_path("symlink.path", &s.path)?,
                target: s.target.clone(),
            })
        })
        .collect()
}

/// Paths in the image under one key: `mountpoints`, `binary.links`.
pub(super) fn image_paths(
    ctx: &Ctx<'_>,
    key: &str,
    values: &[Spanned<String>],
) -> Result<Vec<RelPath>, RecipeError> {
    values.iter().map(|v| ctx.image_path(key, v)).collect()
}

/// `[limits]`: at least 1M of memory, a positive finite CPU count.
pub(super) fn limits(ctx: &Ctx<'_>, spec: &LimitsSpec) -> Result<Limits, RecipeError> {
    let memory = match &spec.memory {
        None => None,
        Some(m) => match parse_size(m.get_ref()) {
            Some(b) if b >= 1 << 20 => Some(b),
            _ => {
                return ctx.err(
                    m.span(),
                    format!(
                        "limits.memory = \"{}\": a size of at least 1M, like \"256M\"",
                        m.get_ref()
                    ),
                );
            }
        },
    };
    let cpus = match &spec.cpus {
        Some(c) if !(*c.get_ref() > 0.0 && c.get_ref().is_finite()) => {
            return ctx.err(c.span(), "limits.cpus: must be a positive number");
        }
        c => c.as_ref().map(|c| *c.get_ref()),
    };
    Ok(Limits {
        memory,
        cpus,
        pids: spec.pids,
    })
}

/// `[config]`: the user must be one `run --user` takes, the sysctls ones a container may
/// set.
pub(super) fn config(ctx: &Ctx<'_>, spec: ConfigSpec) -> Result<Config, RecipeError> {
    for key in spec.sysctl.keys() {
        if let Err(e) = crate::sysctl::namespace_for_run(key.get_ref()) {
            return ctx.err(key.span(), format!("config.sysctl {e}"));
        }
    }
    if let Some(u) = &spec.user
        && crate::ids::UserSpec::parse(u.get_ref()).is_none()
    {
        return ctx.err(
            u.span(),
            format!(
                "config.user = \"{}\": expected UID[:GID] or NAME[:GROUP]",
                u.get_ref()
            ),
        );
    }
    Ok(Config {
        entrypoint: spec.entrypoint,
        cmd: spec.cmd,
        env: spec.env,
        workdir: spec.workdir,
        hostname: spec.hostname,
        user: spec.user.map(Spanned::into_inner),
        labels: spec.labels,
        no_new_privileges: spec.no_new_privileges,
        sysctl: spec
            .sysctl
            .into_iter()
            .map(|(k, v)| (k.into_inner(), v))
            .collect(),
    })
}

/// `[modules]`: `kernel` is `{latest}` (the newest folder in `/lib/modules`), a release
/// (`/lib/modules/RELEASE`), or a host folder: a module folder itself (it has
/// `modules.order`), or a root with `lib/modules/RELEASE` in it (an unpacked kernel
/// package), its newest release taken.
pub(super) fn modules(
    ctx: &Ctx<'_>,
    spec: &Spanned<super::written::ModulesSpec>,
) -> Result<Modules, RecipeError> {
    let m = spec.get_ref();
    let kernel = m.kernel.get_ref().replace("{kernel}", &ctx.kernel);
    let at = |message: String| ctx.err::<Modules>(m.kernel.span(), message);
    let dir = if kernel == "{latest}" {
        match super::hints::expand_latest(Path::new("/"), "/lib/modules/{latest}") {
            Ok(d) => PathBuf::from(d),
            Err(e) => return at(format!("modules.kernel = \"{{latest}}\": {e}")),
        }
    } else if !kernel.contains('/') {
        Path::new("/lib/modules").join(&kernel)
    } else {
        let given = ctx.dir.join(&kernel);
        if given.join("modules.order").is_file() || given.join("modules.dep").is_file() {
            given
        } else {
            let latest = format!("{}/lib/modules/{{latest}}", given.display());
            match super::hints::expand_latest(Path::new("/"), &latest) {
                Ok(d) => PathBuf::from(d),
                Err(_) => {
                    return at(format!(
                        "modules.kernel = \"{kernel}\": {} is neither a module folder (with \
                         modules.order) nor a root with lib/modules/RELEASE",
                        given.display()
                    ));
                }
            }
        }
    };
    if !dir.join("modules.order").is_file() && !dir.join("modules.dep").is_file() {
        return at(format!(
            "modules.kernel = \"{kernel}\": {} is not a kernel's module folder (no \
             modules.order or modules.dep)",
            dir.display()
        ));
    }
    let version = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names = Vec::new();
    for n in &m.names {
        let name = n.get_ref();
        if name.is_empty() || name.contains(['/', ' ']) {
            return ctx.err(
                n.span(),
                format!("modules.names: \"{name}\" is not a module name"),
            );
        }
        names.push(name.clone());
    }
    Ok(Modules {
        version,
        dir,
        names,
        firmware: m.firmware,
        line: ctx.line(spec.span().start),
    })
}
