//! `cache ls`, `prune`, `export`, `import`: the build cache's states.

use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::{CacheArgs, CacheCommand};
use rootpack::cache::{self, Cache};

pub fn cache(args: &CacheArgs, quiet: bool) -> Result<()> {
    // With ROOTPACK_CACHE=off, the default cache is still the one to look at.
    let dir = cache::chosen_dir(args.cache.as_deref()).unwrap_or_else(cache::default_dir);
    let c = Cache::open(&dir).with_context(|| format!("cache {}", dir.display()))?;
    let say = |s: String| {
        if !quiet {
            eprintln!("rootpack: {s}");
        }
    };
    match &args.command {
        CacheCommand::Ls { json } => ls(&c, *json)?,
        CacheCommand::Prune {
            keep_size,
            older_than,
        } => {
            // With neither limit, everything goes.
            let keep = match (keep_size, older_than) {
                (None, None) => Some(0),
                _ => *keep_size,
            };
            let (n, bytes) = c.prune(keep, *older_than)?;
            say(format!(
                "removed {n} state(s), {}",
                crate::human_size(bytes)
            ));
        }
        CacheCommand::Export { dir } => {
            let n = cache::transfer::export(&c, dir)
                .with_context(|| format!("exporting to {}", dir.display()))?;
            say(format!("exported {n} state(s) to {}", dir.display()));
        }
        CacheCommand::Import { dir } => {
            let (n, skipped) = cache::transfer::import(&c, dir)?;
            for s in &skipped {
                say(format!("warning: skipped {s}"));
            }
            say(format!("imported {n} state(s) from {}", dir.display()));
        }
    }
    Ok(())
}

fn ls(c: &Cache, json: bool) -> Result<()> {
    let states = c.states()?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        let list: Vec<_> = states
            .iter()
            .map(|s| {
                serde_json::json!({
                    "key": s.key, "parent": s.parent, "kind": s.kind, "label": s.label,
                    "size": s.size, "created": s.created, "used": s.used,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&list)?)
    } else {
        let mut w = writeln!(
            out,
            "{:<14} {:<6} {:>8}  {:<20} LABEL",
            "KEY", "KIND", "SIZE", "USED"
        );
        for s in &states {
            w = w.and_then(|()| {
                writeln!(
                    out,
                    "{:<14} {:<6} {:>8}  {:<20} {}",
                    &s.key[..12.min(s.key.len())],
                    s.kind,
                    crate::human_size(s.size),
                    rootpack::time_format::format_utc(s.used),
                    s.label
                )
            });
        }
        w.and_then(|()| {
            let total: u64 = states.iter().map(|s| s.size).sum();
            writeln!(
                out,
                "{} state(s), {}",
                states.len(),
                crate::human_size(total)
            )
        })
    };
    match written {
        // A closed pipe (`| head`) ends the listing quietly.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
