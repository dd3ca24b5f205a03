//! The `rootpack` binary: parse, call the library, print one clear line per error.
//! Exit codes: 0 success, 1 failure, 2 usage error (clap), 128+N interrupted by signal N.

mod cli;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser};

use cli::{Cli, Command, CompressArg, FormatArg, MethodArg, RunArgs};
use rootpack::archive::Compression;
use rootpack::archive::pack::{PackFormat, PackOptions};
use rootpack::recipe::Method;
use rootpack::{build, interrupt, manifest, ops, progress, recipe};

fn main() -> ExitCode {
    let cli = Cli::parse();
    interrupt::install();
    match run(cli) {
        Ok(Some(code)) => ExitCode::from(code),
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(signal) = interrupt::signal() {
                eprintln!("rootpack: interrupted; cleaned up");
                return ExitCode::from(128 + signal as u8);
            }
            eprintln!("rootpack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Some(code)` is an exit status to pass on (from `run`).
fn run(cli: Cli) -> Result<Option<u8>> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Ls {
            archive,
            long,
            segments,
        } => cmd_ls(&archive, long, segments, quiet).map(|()| None),
        Command::Extract {
            archive,
            dir,
            split,
            merge,
        } => {
            cmd_extract(&archive, &dir, ops::ExtractOptions { split, merge }, quiet).map(|()| None)
        }
        Command::Pack {
            dir,
            output,
            format,
            compress,
            level,
            frame_size,
            early,
        } => {
            let (format, compression) = pack_kind(&output, format, compress)?;
            let opts = PackOptions {
                level,
                clamp_mtime: source_date_epoch()?,
                early,
                frame_size: frame_size
                    .checked_mul(1 << 20)
                    .context("--frame-size is too large")?,
                ..PackOptions::new(format, compression)
            };
            cmd_pack(&dir, &output, &opts, quiet).map(|()| None)
        }
        Command::Build {
            recipe,
            out,
            json,
            method,
        } => cmd_build(&recipe, out, json, method, quiet, cli.verbose).map(|()| None),
        Command::Inspect { image, json } => cmd_inspect(&image, json).map(|()| None),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rootpack", &mut io::stdout());
            Ok(None)
        }
        Command::Run(args) => cmd_run(*args).map(Some),
    }
}

fn input_bar(archive: &Path, quiet: bool, message: &str) -> Option<indicatif::ProgressBar> {
    let len = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    progress::bytes_bar(len, quiet, message)
}

fn cmd_ls(archive: &Path, long: bool, segments: bool, quiet: bool) -> Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    if segments {
        let found = ops::list(
            archive,
            &mut io::sink(),
            false,
            input_bar(archive, quiet, "reading"),
        )?;
        writeln!(
            out,
            "{:>3} {:>12} {:<6} {:<5} {:>8} {:>12} {:>12}",
            "#", "offset", "comp", "fmt", "entries", "stored", "unpacked"
        )?;
        for s in found {
            writeln!(
                out,
                "{:>3} {:>12} {:<6} {:<5} {:>8} {:>12} {:>12}",
                s.segment.index,
                s.segment.offset,
                s.segment.compression.name(),
                s.segment.format.to_string(),
                s.entries,
                s.stored,
                s.unpacked
            )?;
        }
    } else {
        ops::list(archive, &mut out, long, None)?;
    }
    match out.flush() {
        // `rootpack ls | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn cmd_extract(archive: &Path, dir: &Path, opts: ops::ExtractOptions, quiet: bool) -> Result<()> {
    let bar = input_bar(archive, quiet, "extracting");
    let (_, report) = ops::extract(archive, dir, opts, bar.clone())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !quiet {
        warn_left_out(&report);
    }
    Ok(())
}

fn cmd_pack(dir: &Path, output: &Path, opts: &PackOptions, quiet: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let bar = progress::bytes_bar(0, quiet, "packing");
    let summary = ops::pack_to_file(dir, output, opts, bar.as_ref())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if quiet {
        return Ok(());
    }
    if summary.skipped_sockets > 0 {
        eprintln!(
            "rootpack: warning: {} socket(s) left out (tar cannot store sockets)",
            summary.skipped_sockets
        );
    }
    let frames = match summary.frames {
        0 => String::new(),
        1 => ", 1 frame".to_string(),
        n => format!(", {n} frames"),
    };
    eprintln!(
        "rootpack: packed {} ({} bytes, {} entries{frames}) in {:.2}s",
        output.display(),
        summary.written,
        summary.entries,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What an unprivileged extraction could not keep.
fn warn_left_out(report: &rootpack::tree::extract::ExtractReport) {
    if report.skipped_devices > 0 {
        eprintln!(
            "rootpack: warning: {} device node(s) skipped (creating them needs root)",
            report.skipped_devices
        );
    }
    if report.ownership_dropped > 0 {
        eprintln!(
            "rootpack: warning: owner of {} entr(y/ies) not kept (changing owners needs root)",
            report.ownership_dropped
        );
    }
}

/// The format and compression for `pack`, from flags or else the output's extension.
fn pack_kind(
    output: &Path,
    format: Option<FormatArg>,
    compress: Option<CompressArg>,
) -> Result<(PackFormat, Compression)> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_tar = name.ends_with(".tar") || name.contains(".tar.") || name.ends_with(".tgz");
    let format = match format {
        Some(FormatArg::Cpio) => PackFormat::Cpio,
        Some(FormatArg::Tar) => PackFormat::Tar,
        None if is_tar => PackFormat::Tar,
        None => PackFormat::Cpio,
    };
    let compression = match compress {
        Some(CompressArg::None) => Compression::None,
        Some(CompressArg::Gzip) => Compression::Gzip,
        Some(CompressArg::Zstd) => Compression::Zstd,
        Some(CompressArg::Xz) => Compression::Xz,
        Some(CompressArg::Lz4) => Compression::Lz4,
        None => match Compression::from_extension(&name) {
            Some(c) => c,
            None => bail!(
                "{}: cannot tell the compression from the extension; pass --compress",
                output.display()
            ),
        },
    };
    if format == PackFormat::Tar && compression == Compression::Lz4 {
        bail!("tar with lz4 legacy framing is not supported; use gzip, zstd or xz");
    }
    Ok((format, compression))
}

fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

fn cmd_build(
    path: &Path,
    out: std::path::PathBuf,
    json: bool,
    method: Option<MethodArg>,
    quiet: bool,
    verbose: u8,
) -> Result<()> {
    let started = std::time::Instant::now();
    let recipe = recipe::load(path)?;
    let opts = build::BuildOptions {
        out_dir: out,
        source_date_epoch: source_date_epoch()?,
        method: method.map(|m| match m {
            MethodArg::Auto => Method::Auto,
            MethodArg::Populate => Method::Populate,
            MethodArg::Mount => Method::Mount,
        }),
        progress: !quiet,
    };
    let built =
        build::build(&recipe, &opts).with_context(|| format!("building {}", path.display()))?;
    if !quiet {
        for p in &built.cleaned {
            eprintln!(
                "rootpack: removed {} left by an interrupted build",
                p.display()
            );
        }
        for w in &built.warnings {
            eprintln!("rootpack: warning: {w}");
        }
        warn_left_out(&built.report);
        eprintln!(
            "rootpack: built {} ({} bytes, {} files) and {} in {:.2}s",
            built.image.display(),
            built.manifest.size,
            built.manifest.build.files,
            built.manifest_path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if verbose > 0 {
        eprintln!("rootpack: sha256 {}", built.manifest.sha256);
    }
    if json {
        print!("{}", built.manifest.to_json());
    }
    Ok(())
}

fn cmd_inspect(image: &Path, json: bool) -> Result<()> {
    let path = manifest::path_for(image);
    let m = manifest::read(&path)?;
    if json {
        print!("{}", m.to_json());
    } else {
        println!("name:     {}", m.name);
        println!("image:    {} ({}, {} bytes)", m.image, m.format, m.size);
        println!("sha256:   {}", m.sha256);
        println!(
            "recipe:   {} (sha256 {})",
            m.build.recipe, m.build.recipe_sha256
        );
        for l in &m.build.layers {
            println!(
                "layer:    {} {}{}",
                l.kind,
                l.path,
                l.sha256
                    .as_deref()
                    .map(|s| format!(" (sha256 {s})"))
                    .unwrap_or_default()
            );
        }
        if let Some(t) = m.build.source_date_epoch {
            println!("epoch:    {t} ({})", ops::format_utc(t));
        }
        println!("files:    {}", m.build.files);
        if !m.config.entrypoint.is_empty() || !m.config.cmd.is_empty() {
            println!("command:  {:?} {:?}", m.config.entrypoint, m.config.cmd);
        }
        if let Some(mem) = m.limits.memory {
            println!("memory:   {mem} bytes");
        }
        if let Some(p) = m.limits.pids {
            println!("pids:     {p}");
        }
        if let Some(c) = m.limits.cpus {
            println!("cpus:     {c}");
        }
        println!("built by: rootpack {}", m.build.rootpack_version);
        if m.modified {
            println!("modified: by `run --writable` since the build");
        }
    }
    if m.format != recipe::OutputFormat::Dir.extension() {
        let (size, sha) =
            rootpack::digest::digest_file(image).with_context(|| format!("{}", image.display()))?;
        if sha != m.sha256 || size != m.size {
            bail!(
                "{}: sha256 mismatch: the image is not the one {} describes",
                image.display(),
                path.display()
            );
        }
        if !json {
            println!("verified: sha256 matches");
        }
    }
    Ok(())
}

fn cmd_run(args: RunArgs) -> Result<u8> {
    let env = args
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("-e {e:?}: expected KEY=VALUE"),
        })
        .collect::<Result<_>>()?;
    let volumes = args
        .volume
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            match parts[..] {
                [host, ctr] => Ok((host.into(), ctr.to_string(), false)),
                [host, ctr, "ro"] => Ok((host.into(), ctr.to_string(), true)),
                [host, ctr, "rw"] => Ok((host.into(), ctr.to_string(), false)),
                _ => bail!("-v {v:?}: expected HOST:CONTAINER[:ro]"),
            }
        })
        .collect::<Result<_>>()?;
    let memory = args
        .memory
        .as_deref()
        .map(|m| recipe::parse_size(m).with_context(|| format!("--memory {m:?}: a size like 256M")))
        .transpose()?;
    let user = args
        .user
        .as_deref()
        .map(|u| {
            rootpack::run::parse_user(u)
                .with_context(|| format!("--user {u:?}: expected UID[:GID]"))
        })
        .transpose()?;
    let mut seccomp = rootpack::run::seccomp::Seccomp::Default;
    for opt in &args.security_opt {
        seccomp = match opt.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => rootpack::run::seccomp::Seccomp::Unconfined,
            Some(("seccomp", file)) => rootpack::run::seccomp::Seccomp::File(file.into()),
            _ if opt == "no-new-privileges" || opt == "no-new-privileges=true" => continue,
            _ => bail!(
                "--security-opt {opt:?}: expected seccomp=unconfined, seccomp=FILE.json or no-new-privileges"
            ),
        };
    }
    let image = args.image;
    let opts = rootpack::run::RunOptions {
        image: image.clone(),
        command: args.command,
        env,
        workdir: args.workdir,
        user,
        hostname: args.hostname,
        writable: args.writable,
        net_host: args.net == "host",
        volumes,
        tmpfs: args.tmpfs,
        memory,
        cpus: args.cpus,
        pids: args.pids,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        no_init: args.no_init,
        tty: args.tty,
        userns: args.userns,
        seccomp,
        verify: !args.no_verify,
    };
    // Like docker: 125 when the container could not be run at all.
    let outcome = match rootpack::run::run(&opts) {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "rootpack: run {}: {:#}",
                image.display(),
                anyhow::Error::from(e)
            );
            return Ok(125);
        }
    };
    if let Some(notice) = &outcome.notice {
        eprintln!("rootpack: {notice}");
    }
    if let Some(limit) = outcome.oom_limit {
        eprintln!(
            "rootpack: killed: out of memory, limit {}",
            human_size(limit)
        );
    }
    Ok(outcome.exit_code.clamp(0, 255) as u8)
}

fn human_size(bytes: u64) -> String {
    for (unit, shift) in [("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}
