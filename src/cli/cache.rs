//! `cache`'s subcommands and options.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::values::{parse_age, parse_size_arg};

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// The cache's folder [default: as for build].
    #[arg(long, value_name = "DIR", global = true)]
    pub cache: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached states, least recently used first.
    Ls {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Remove states, least recently used first, until the cache fits --keep-size, and
    /// those unused for --older-than; with neither, everything.
    Prune {
        /// 5G, 500M, bytes.
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        keep_size: Option<u64>,
        /// 30d, 12h, 90m, seconds.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<u64>,
    },
    /// Write every state into DIR as an OCI image layout (blobs by digest, one manifest
    /// per state), for a CI cache folder or, through skopeo, a registry.
    Export { dir: PathBuf },
    /// Add the states of a layout written by export, each checked against its digest.
    Import { dir: PathBuf },
}
