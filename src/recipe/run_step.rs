//! `[[run]]` build steps as a recipe writes them, and as the build uses them: a command run
//! inside the image being built (see `builder::steps`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::RecipeError;
use super::context::Ctx;
use crate::tree::safe_path::RelPath;

/// One `[[run]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RunSpec {
    script: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    network: Option<Spanned<String>>,
    #[serde(default)]
    mounts: Vec<Spanned<String>>,
    timeout: Option<Spanned<String>>,
}

/// What a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepCommand {
    /// `script = "…"`: run as `/bin/sh -e -c SCRIPT`.
    Script(String),
    /// `args = [...]`: run directly.
    Args(Vec<String>),
}

/// The network a step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StepNetwork {
    /// A network namespace of its own with only `lo`.
    #[default]
    None,
    /// The host's network, with a copy of the host's resolv.conf.
    Host,
    /// A private network with egress, as `run --network private` gives.
    Private,
}

/// `mounts = ["HOST:CTR[:ro]"]`: a host folder or file bound into the step only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMount {
    pub host: PathBuf,
    pub target: RelPath,
    pub read_only: bool,
}

/// One `[[run]]` step, resolved.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// The line of its `[[run]]` header, for errors.
    pub line: usize,
    pub command: StepCommand,
    /// Merged over `[config].env` when the step runs.
    pub env: BTreeMap<String, String>,
    pub workdir: Option<String>,
    /// `UID[:GID]` or `NAME[:GROUP]`, as `run --user` takes it.
    pub user: Option<String>,
    pub network: StepNetwork,
    pub mounts: Vec<StepMount>,
    pub timeout: Option<Duration>,
}

/// Parses "10m", "30s", "1h", "500ms", "90" (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// Resolves every `[[run]]` table, in order.
pub(super) fn resolve(
    ctx: &Ctx<'_>,
    specs: &[Spanned<RunSpec>],
) -> Result<Vec<RunStep>, RecipeError> {
    specs.iter().map(|s| resolve_one(ctx, s)).collect()
}

fn resolve_one(ctx: &Ctx<'_>, spanned: &Spanned<RunSpec>) -> Result<RunStep, RecipeError> {
    let spec = spanned.get_ref();
    // A table's span is its `[[run]]` header.
    let line = ctx.line(spanned.span().start);
    let command = command(ctx, spanned)?;
    if let Some(k) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains(['=', '\0']))
    {
        return ctx.err(
            spanned.span(),
            format!("run.env: {k:?} is not a variable name"),
        );
    }
    let workdir = workdir(ctx, &spec.workdir)?;
    let user = user(ctx, &spec.user)?;
    let network = network(ctx, &spec.network)?;
    let mounts = spec
        .mounts
        .iter()
        .map(|m| mount(ctx, m))
        .collect::<Result<_, _>>()?;
    let timeout = timeout(ctx, &spec.timeout)?;
    Ok(RunStep {
        line,
        command,
        env: spec.env.clone(),
        workdir,
        user,
        network,
        mounts,
        timeout,
    })
}

/// `script` or `args`, exactly one, not empty.
fn command(ctx: &Ctx<'_>, spanned: &Spanned<RunSpec>) -> Result<StepCommand, RecipeError> {
    let spec = spanned.get_ref();
    match (&spec.script, &spec.args) {
        (Some(s), None) if !s.get_ref().trim().is_empty() => {
            Ok(StepCommand::Script(s.get_ref().clone()))
        }
        (None, Some(a)) if !a.get_ref().is_empty() => Ok(StepCommand::Args(a.get_ref().clone())),
        (Some(s), None) => ctx.err(s.span(), "run.script: empty"),
        (None, Some(a)) => ctx.err(
            a.span(),
            "run.args: empty; give the program and its arguments",
        ),
        _ => ctx.err(
            spanned.span(),
            "[[run]] needs exactly one of script (run by /bin/sh -e -c) or args (a program and its arguments)",
        ),
    }
}

fn workdir(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<Option<String>, RecipeError> {
    match value {
        Some(w)
            if !w.get_ref().starts_with('/') || RelPath::parse(w.get_ref().as_bytes()).is_err() =>
        {
            ctx.err(
                w.span(),
                format!(
                    "run.workdir = \"{}\": an absolute path in the image, without '..'",
                    w.get_ref()
                ),
            )
        }
        w => Ok(w.as_ref().map(|w| w.get_ref().clone())),
    }
}

fn user(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<Option<String>, RecipeError> {
    match value {
        Some(u) if crate::ids::UserSpec::parse(u.get_ref()).is_none() => ctx.err(
            u.span(),
            format!(
                "run.user = \"{}\": expected UID[:GID] or NAME[:GROUP]",
                u.get_ref()
            ),
        ),
        u => Ok(u.as_ref().map(|u| u.get_ref().clone())),
    }
}

fn network(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<StepNetwork, RecipeError> {
    match value.as_ref().map(|n| (n, n.get_ref().as_str())) {
        None | Some((_, "none")) => Ok(StepNetwork::None),
        Some((_, "host")) => Ok(StepNetwork::Host),
        Some((_, "private")) => Ok(StepNetwork::Private),
        Some((n, other)) => ctx.err(
            n.span(),
            format!("run.network = \"{other}\": one of none, private, host"),
        ),
    }
}

fn timeout(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
) -> Result<Option<Duration>, RecipeError> {
    let Some(t) = value else { return Ok(None) };
    match parse_duration(t.get_ref()) {
        Some(d) => Ok(Some(d)),
        None => ctx.err(
            t.span(),
            format!(
                "run.timeout = \"{}\": a duration like \"90s\", \"10m\" or \"1h\"",
                t.get_ref()
            ),
        ),
    }
}

/// `HOST:CTR[:ro]`: the host path relative to the recipe, the target an absolute path in
/// the image other than `/`. A read-only mount's source must exist; a read-write one's is
/// a cache the build makes when it is missing (see `builder::steps`).
fn mount(ctx: &Ctx<'_>, m: &Spanned<String>) -> Result<StepMount, RecipeError> {
    let text = m.get_ref();
    let (rest, read_only) = match text.strip_suffix(":ro") {
        Some(r) => (r, true),
        None => (text.strip_suffix(":rw").unwrap_or(text), false),
    };
    let Some((host, target)) = rest.split_once(':') else {
        return ctx.err(
            m.span(),
            format!("run.mounts: \"{text}\": expected HOST:CTR or HOST:CTR:ro"),
        );
    };
    let host = Spanned::new(m.span(), host.to_string());
    let host = match read_only {
        true => ctx.host_path("run.mounts", &host)?,
        false => ctx.expand_host_path("run.mounts", &host)?.0,
    };
    let target = ctx.image_path("run.mounts", &Spanned::new(m.span(), target.to_string()))?;
    Ok(StepMount {
        host,
        target,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
