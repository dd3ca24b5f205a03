//! The `rootpack` binary: parse, call the library, print one clear line per error.
//! Exit codes: 0 success, 1 failure, 2 usage error, 128+N interrupted by signal N; `run`
//! passes on the command's status (125 when the container could not be set up).

mod cli;
mod cmd;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser};

use cli::{
    Cli, Command, CompressArg, ExtractArgs, FormatArg, InspectArgs, LsArgs, PackArgs, RunArgs,
    SecurityOpt,
};
use rootpack::archive::Compression;
use rootpack::archive::pack::{PackFormat, PackOptions};
use rootpack::{builder, interrupt, manifest, ops, progress};

/// A mistake in how rootpack was called: exit 2, like clap's own usage errors.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub(crate) fn usage<T>(message: impl Into<String>) -> Result<T> {
    Err(Usage(message.into()).into())
}

fn main() -> ExitCode {
    // First: a Ctrl-C in the first milliseconds (while the arguments are parsed) must be
    // the same clean "interrupted" as one later, not the default kill.
    interrupt::install();
    let cli = Cli::parse();
    let quiet = cli.quiet;
    let verbose = cli.verbose.saturating_add(cli.command.verbosity());
    init_logging(if cli.quiet { None } else { Some(verbose) });
    match run(cli) {
        Ok(Some(code)) => ExitCode::from(code),
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(signal) = interrupt::signal() {
                eprintln!("rootpack: interrupted; cleaned up");
                return ExitCode::from(128 + signal as u8);
            }
            eprintln!("rootpack: {}", one_line(&e));
            if quiet {
                print_step_tail(&e);
            }
            if e.downcast_ref::<Usage>().is_some() {
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

/// With `-q` a failed step's output was not shown as it came: its last lines, under the
/// error that names the step.
fn print_step_tail(e: &anyhow::Error) {
    let step = e
        .chain()
        .find_map(|c| match c.downcast_ref::<builder::BuildError>() {
            Some(builder::BuildError::Step(s)) => Some(s),
            _ => None,
        });
    if let Some(s) = step {
        for line in &s.tail {
            eprintln!("run {}| {line}", s.number);
        }
    }
}

/// The error and its causes on one line, each said once: a cause whose text its context
/// already holds (an io::Error a message quoted) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Warnings always (what the user should know that is not an error, such as a build
/// waiting for another), unless quiet; `-v` says what is done, `-vv` adds tools, mounts,
/// namespaces and timings, `-vvv` all.
fn init_logging(verbose: Option<u8>) {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            eprintln!("rootpack: {}", record.args());
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = match verbose {
        None => log::LevelFilter::Off,
        Some(0) => log::LevelFilter::Warn,
        Some(1) => log::LevelFilter::Info,
        Some(2) => log::LevelFilter::Debug,
        Some(_) => log::LevelFilter::Trace,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

impl Command {
    /// The subcommand's own `-v` count (`run --verbose`).
    fn verbosity(&self) -> u8 {
        match self {
            Command::Ls(a) => a.verbosity.verbose,
            Command::Extract(a) => a.verbosity.verbose,
            Command::Pack(a) => a.verbosity.verbose,
            Command::Build(a) => a.verbosity.verbose,
            Command::Inspect(a) => a.verbosity.verbose,
            Command::Run(a) => a.verbose,
            Command::Boot(a) => a.verbosity.verbose,
            Command::Completions { .. }
            | Command::Man { .. }
            | Command::Ps(_)
            | Command::Cache(_)
            | Command::Exec(_)
            | Command::Logs(_)
            | Command::Stop(_)
            | Command::Kill(_)
            | Command::Rm(_) => 0,
        }
    }
}

/// Runs the command; `Some(code)` is an exit status to pass on (from `run`).
fn run(cli: Cli) -> Result<Option<u8>> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Ls(args) => cmd_ls(&args, quiet).map(|()| None),
        Command::Extract(args) => cmd_extract(&args, quiet).map(|()| None),
        Command::Pack(args) => cmd_pack(&args, quiet).map(|()| None),
        Command::Build(args) => cmd::build::build(&args, quiet).map(|()| None),
        Command::Inspect(args) => {
            end_quietly_on_a_closed_pipe();
            cmd_inspect(&args).map(|()| None)
        }
        Command::Completions { shell } => {
            end_quietly_on_a_closed_pipe();
            clap_complete::generate(shell, &mut Cli::command(), "rootpack", &mut io::stdout());
            Ok(None)
        }
        Command::Man { install, recipe } => {
            cmd::man::man(install.as_deref(), recipe, quiet).map(|()| None)
        }
        Command::Run(args) => cmd_run(*args, quiet).map(Some),
        Command::Boot(args) => cmd::boot::boot(&args, quiet).map(Some),
        Command::Ps(args) => cmd::containers::ps(&args).map(|()| None),
        Command::Cache(args) => cmd::cache::cache(&args, quiet).map(|()| None),
        Command::Exec(args) => cmd::containers::exec(&args).map(Some),
        Command::Logs(args) => cmd::containers::logs(&args).map(|()| None),
        Command::Stop(args) => cmd::containers::stop(&args).map(|()| None),
        Command::Kill(args) => cmd::containers::kill(&args).map(|()| None),
        Command::Rm(args) => cmd::containers::rm(&args).map(|()| None),
    }
}

fn input_bar(archive: &Path, quiet: bool, message: &str) -> Option<indicatif::ProgressBar> {
    let len = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    progress::bytes_bar(len, quiet, message)
}

/// For a command that only prints: a closed stdout (`rootpack inspect X | head -1`) ends it
/// as it ends `cat`, by SIGPIPE, without a message (Rust ignores SIGPIPE, which would make
/// every print after it fail loudly).
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: the default disposition of one signal, before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Whether an error is a closed stdout (`rootpack ls | head`): not a failure, as for `ls`,
/// `cpio -t` and `tar -t`.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn cmd_ls(args: &LsArgs, quiet: bool) -> Result<()> {
    match list(args, quiet) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn list(args: &LsArgs, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let archive = &args.archive;
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let segments = if args.segments {
        let found = ops::list(
            archive,
            &mut io::sink(),
            false,
            input_bar(archive, quiet, "reading"),
        )?;
        if args.json {
            let rows: Vec<_> = found.iter().map(segment_json).collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{:>3} {:>12} {:<6} {:<5} {:>8} {:>12} {:>12}",
                "#", "offset", "comp", "fmt", "entries", "stored", "unpacked"
            )?;
            for s in &found {
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
        }
        found
    } else if args.json {
        ops::list_json(archive, &mut out, None)?
    } else {
        ops::list(archive, &mut out, args.long, None)?
    };
    out.flush()?;
    log_segments(&segments);
    log::info!(
        "listed {} in {:.2}s",
        archive.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn segment_json(s: &rootpack::archive::SegmentSummary) -> serde_json::Value {
    serde_json::json!({
        "index": s.segment.index,
        "offset": s.segment.offset,
        "compression": s.segment.compression.name(),
        "format": s.segment.format.to_string(),
        "entries": s.entries,
        "stored": s.stored,
        "unpacked": s.unpacked,
    })
}

/// `-vv`: one line per segment.
fn log_segments(segments: &[rootpack::archive::SegmentSummary]) {
    for s in segments {
        log::debug!(
            "segment {}: {} {} at byte {}: {}, {} stored, {} unpacked",
            s.segment.index,
            s.segment.compression,
            s.segment.format,
            s.segment.offset,
            entries(s.entries),
            human_size(s.stored),
            human_size(s.unpacked)
        );
    }
}

fn cmd_extract(args: &ExtractArgs, quiet: bool) -> Result<()> {
    let started = Instant::now();
    log::info!(
        "extracting {} into {}",
        args.archive.display(),
        args.dir.display()
    );
    let bar = input_bar(&args.archive, quiet, "extracting");
    let opts = ops::ExtractOptions {
        split: args.split,
        merge: args.merge,
    };
    let (segments, report) = ops::extract(&args.archive, &args.dir, opts, bar.clone())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    log_segments(&segments);
    log::info!(
        "extracted {}, {} of data, in {:.2}s",
        entries(report.entries),
        human_size(report.bytes),
        started.elapsed().as_secs_f64()
    );
    if !quiet {
        warn_left_out(&report);
    }
    Ok(())
}

/// What an unprivileged extraction could not keep.
pub(crate) fn warn_left_out(report: &rootpack::tree::extract::ExtractReport) {
    if report.skipped_devices > 0 {
        eprintln!(
            "rootpack: warning: {} device node(s) skipped (creating them needs root)",
            report.skipped_devices
        );
    }
    if report.ownership_dropped > 0 {
        eprintln!(
            "rootpack: warning: owner of {} {} not kept (changing owners needs root)",
            report.ownership_dropped,
            if report.ownership_dropped == 1 {
                "entry"
            } else {
                "entries"
            }
        );
    }
    if report.xattrs_dropped > 0 {
        eprintln!(
            "rootpack: warning: {} extended {} not kept (security.* and trusted.* need \
             root; or the file system refused them)",
            report.xattrs_dropped,
            if report.xattrs_dropped == 1 {
                "attribute"
            } else {
                "attributes"
            }
        );
    }
}

fn cmd_pack(args: &PackArgs, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let (format, compression) = pack_kind(&args.output, args.format, args.compress)?;
    let opts = PackOptions {
        level: args.level,
        clamp_mtime: source_date_epoch()?,
        early: args.early.clone(),
        frame_size: args.frame_size,
        ..PackOptions::new(format, compression)
    };
    log::info!(
        "packing {} into {} ({}, {})",
        args.dir.display(),
        args.output.display(),
        match format {
            PackFormat::Cpio => "newc cpio",
            PackFormat::Tar => "tar",
        },
        compression
    );
    let bar = progress::bytes_bar(0, quiet, "packing");
    let summary = ops::pack_to_file(&args.dir, &args.output, &opts, bar.as_ref())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if quiet {
        return Ok(());
    }
    for line in rootpack::archive::pack::left_out(&summary) {
        eprintln!("rootpack: warning: {line}");
    }
    let frames = match summary.frames {
        0 => String::new(),
        1 => ", 1 frame".to_string(),
        n => format!(", {n} frames"),
    };
    eprintln!(
        "rootpack: packed {} ({}, {}{frames}) in {:.2}s",
        args.output.display(),
        human_size(summary.written),
        entries(summary.entries),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The format and compression for `pack`, from flags or else the output's extension. A
/// format given without a compression, on a name that names none, means uncompressed.
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
    let format_given = format.is_some();
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
            // `initrd.img`: compressed as mkinitramfs and dracut compress by default.
            Some(Compression::None) if name.ends_with(".img") && !format_given => Compression::Zstd,
            Some(c) => c,
            None if format_given => Compression::None,
            None => {
                return usage(format!(
                    "{}: cannot tell the format from the name; end it in .cpio, .cpio.zst, \
                     .tar.gz, ... or pass --format (and --compress)",
                    output.display()
                ));
            }
        },
    };
    if !compression.writable() {
        return usage(format!(
            "{}: rootpack reads {compression} but does not write it; use .gz, .zst, .xz or \
             .lz4 (or --compress)",
            output.display()
        ));
    }
    if format == PackFormat::Tar && compression == Compression::Lz4 {
        return usage(format!(
            "{}: tar with lz4 legacy framing is not supported; use gzip, zstd or xz",
            output.display()
        ));
    }
    Ok((format, compression))
}

pub(crate) fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// The image and its manifest from what the user named: the image, or the manifest.
fn image_and_manifest(named: &Path) -> Result<(PathBuf, PathBuf)> {
    let meta = std::fs::metadata(named).with_context(|| format!("{}", named.display()))?;
    if meta.is_file() && named.extension().is_some_and(|e| e == "json") {
        let m = manifest::read(named)?;
        return Ok((named.with_file_name(&m.image), named.to_path_buf()));
    }
    let manifest_path = manifest::path_for(named);
    if !manifest_path.exists() {
        bail!(
            "{}: no manifest beside it ({} does not exist): inspect describes images made by \
             rootpack build",
            named.display(),
            manifest_path.display()
        );
    }
    Ok((named.to_path_buf(), manifest_path))
}

fn cmd_inspect(args: &InspectArgs) -> Result<()> {
    let (image, path) = image_and_manifest(&args.image)?;
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let m = manifest::read(&path)?.for_image(&name);
    let folder = m.format == "dir" || m.format == "d" || image.is_dir();
    if args.json {
        print!("{}", m.to_json());
    } else {
        print_manifest(&m, &image, folder);
    }
    if folder || m.sha256.is_empty() {
        return Ok(());
    }
    let (size, sha) =
        rootpack::digest::digest_file(&image).with_context(|| format!("{}", image.display()))?;
    if sha != m.sha256 || size != m.size {
        bail!(
            "{}: sha256 mismatch: the image is not the one {} describes",
            image.display(),
            path.display()
        );
    }
    if !args.json {
        println!("verified:   sha256 matches");
    }
    Ok(())
}

fn print_manifest(m: &manifest::Manifest, image: &Path, folder: bool) {
    let row = print_row;
    row("name", &m.name);
    row(
        "image",
        &format!(
            "{} ({}, {})",
            image.display(),
            m.format,
            if folder {
                format!("about {} of files", human_size(m.size))
            } else {
                format!("{}, {} bytes", human_size(m.size), m.size)
            }
        ),
    );
    if m.sha256.is_empty() {
        row(
            "sha256",
            "none: a folder image has no digest, so its files are not verified",
        );
    } else {
        row("sha256", &m.sha256);
    }
    row(
        "recipe",
        &format!("{} (sha256 {})", m.build.recipe, m.build.recipe_sha256),
    );
    for l in &m.build.layers {
        let digest = l
            .sha256
            .as_deref()
            .map(|s| format!(" (sha256 {s})"))
            .unwrap_or_default();
        row("layer", &format!("{} {}{digest}", l.kind, l.path));
    }
    if let Some(t) = m.build.source_date_epoch {
        row(
            "epoch",
            &format!("{t} ({} UTC)", rootpack::time_format::format_utc(t)),
        );
    }
    row("files", &m.build.files.to_string());
    if let Some(k) = &m.build.kernel {
        row(
            "kernel",
            &format!("{k} (its modules: {})", m.build.modules.join(" ")),
        );
    }
    print_run_config(&m.config, &m.name);
    print_limits(&m.limits);
    let method = m
        .build
        .method
        .as_deref()
        .map(|x| format!(", method {x}"))
        .unwrap_or_default();
    let e2fs = m
        .build
        .e2fsprogs
        .as_deref()
        .map(|v| format!(", e2fsprogs {v}"))
        .unwrap_or_default();
    row(
        "built by",
        &format!("rootpack {}{method}{e2fs}", m.build.rootpack_version),
    );
    if m.modified {
        row("modified", "by `run --writable` since the build");
    }
}

/// One line of `inspect`: the key and its colon in a column; an empty key continues the
/// row above.
fn print_row(key: &str, value: &str) {
    let key = if key.is_empty() {
        String::new()
    } else {
        format!("{key}:")
    };
    println!("{key:<11} {value}")
}

/// The image's defaults for `run`, and what `run` uses where one is not set.
fn print_run_config(c: &manifest::Config, name: &str) {
    let row = print_row;
    let words = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
    let or_default = |v: Option<&String>, default: &str| {
        v.cloned()
            .unwrap_or_else(|| format!("(not set; run uses {default})"))
    };
    row(
        "entrypoint",
        &if c.entrypoint.is_empty() {
            "(not set)".to_string()
        } else {
            words(&c.entrypoint)
        },
    );
    row(
        "cmd",
        &if c.cmd.is_empty() {
            "(not set)".to_string()
        } else {
            words(&c.cmd)
        },
    );
    if c.env.is_empty() {
        row("env", "(not set; run sets PATH and HOME)");
    }
    for (i, (k, v)) in c.env.iter().enumerate() {
        row(if i == 0 { "env" } else { "" }, &format!("{k}={v}"));
    }
    row("workdir", &or_default(c.workdir.as_ref(), "/"));
    row(
        "hostname",
        &or_default(c.hostname.as_ref(), &format!("the name, {name}")),
    );
    row("user", &or_default(c.user.as_ref(), "root, 0:0"));
}

fn print_limits(l: &manifest::Limits) {
    let row = print_row;
    row(
        "memory",
        &l.memory.map_or("no limit".to_string(), human_size),
    );
    row(
        "cpus",
        &l.cpus.map_or("no limit".to_string(), |c| c.to_string()),
    );
    row(
        "pids",
        &l.pids.map_or("no limit".to_string(), |p| p.to_string()),
    );
}

/// `--env-file`: KEY=VALUE lines; blank lines and `#` comments skipped; a bare KEY takes
/// its value from our environment, or is left out when unset (as Docker does).
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--env-file {}", path.display()))?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
                vars.push((k.to_string(), v.to_string()))
            }
            None if !line.contains(char::is_whitespace) => {
                if let Ok(v) = std::env::var(line) {
                    vars.push((line.to_string(), v));
                }
            }
            _ => {
                return usage(format!(
                    "--env-file {}:{}: expected KEY=VALUE, got {line:?}",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    Ok(vars)
}

/// The filter the last `--security-opt seccomp=…` asks for (Docker's default without one).
fn seccomp_choice(opts: &[SecurityOpt]) -> rootpack::run::seccomp::Seccomp {
    use rootpack::run::seccomp::Seccomp;
    let mut seccomp = Seccomp::Default;
    for opt in opts {
        match opt {
            SecurityOpt::SeccompUnconfined => seccomp = Seccomp::Unconfined,
            SecurityOpt::SeccompProfile(file) => seccomp = Seccomp::File(file.clone()),
            SecurityOpt::NoNewPrivileges(_) | SecurityOpt::NoLsm => {}
        }
    }
    seccomp
}

/// What the last `--security-opt no-new-privileges[=…]` asks for; `None`: the image's.
fn no_new_privileges_choice(opts: &[SecurityOpt]) -> Option<bool> {
    opts.iter().rev().find_map(|opt| match opt {
        SecurityOpt::NoNewPrivileges(on) => Some(*on),
        _ => None,
    })
}

/// `-v` and `--tmpfs` with the `--mount`s of each kind added.
fn volumes_and_tmpfs(
    mut volumes: Vec<cli::VolumeArg>,
    mut tmpfs: Vec<String>,
    mounts: Vec<cli::MountArg>,
) -> (Vec<cli::VolumeArg>, Vec<String>) {
    for m in mounts {
        match m {
            cli::MountArg::Bind(v) => volumes.push(v),
            cli::MountArg::Tmpfs(t) => tmpfs.push(t),
        }
    }
    (volumes, tmpfs)
}

/// Docker's options that rootpack does not have, each refused with what to use instead.
fn refuse_unsupported(args: &RunArgs) -> Result<()> {
    if args.privileged {
        return Err(Usage(
            "--privileged: rootpack has no privileged containers; add capabilities with \
             --cap-add, turn the system call filter off with --security-opt seccomp=unconfined"
                .into(),
        )
        .into());
    }
    if let Some(device) = args.device.first() {
        return Err(Usage(format!(
            "--device {device}: containers get Docker's default devices only (null, zero, \
             full, random, urandom, tty, ptmx, the ptys)"
        ))
        .into());
    }
    Ok(())
}

/// Whether `run` goes without root (`None`: it cannot, and says why). Without root a
/// folder image runs in a user namespace of the caller's own, as build steps do: no
/// cgroup limits, no loop device, slirp4netns for a network.
fn runs_without_root(image: &Path) -> Option<bool> {
    let rootless = !rustix::process::geteuid().is_root();
    if rootless && !image.is_dir() {
        eprintln!(
            "rootpack: run {}: an image file needs root: it is loop-mounted (try: sudo \
             rootpack run …, or build the recipe with format = \"dir\", which runs without \
             root)",
            image.display()
        );
        return None;
    }
    Some(rootless)
}

/// One line when the image has no manifest beside it: which defaults apply.
fn note_missing_manifest(image: &Path) {
    let manifest_path = manifest::path_for(image);
    if image.exists() && !manifest_path.exists() {
        eprintln!(
            "rootpack: no manifest {} beside the image: running with rootpack's defaults (no \
             limits, hostname rootpack, workdir /, PATH=/usr/local/sbin:/usr/local/bin:\
             /usr/sbin:/usr/bin:/sbin:/bin, HOME=/root; -q hides this)",
            manifest_path.display()
        );
    }
}

fn cmd_run(mut args: RunArgs, quiet: bool) -> Result<u8> {
    refuse_unsupported(&args)?;
    // A container image file or layout: unpacked for this run, removed after it.
    let kept = args.detach || args.writable;
    let _unpacked = cmd::unpacked::for_run(&mut args.image, kept, quiet)?;
    let Some(rootless) = runs_without_root(&args.image) else {
        return Ok(125);
    };
    let (volumes, tmpfs) = volumes_and_tmpfs(args.volume, args.tmpfs, args.mount);
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(read_env_file(file)?);
    }
    env.extend(cli::env_values(&args.env));
    let (user, user_name) = rootpack::ids::split_user(args.user.as_deref());
    let seccomp = seccomp_choice(&args.security_opt);
    let image = args.image;
    if !quiet {
        note_missing_manifest(&image);
    }
    let opts = rootpack::run::RunOptions {
        image: image.clone(),
        command: args.command,
        entrypoint: args.entrypoint,
        env,
        workdir: args.workdir,
        user,
        user_name,
        hostname: args.hostname,
        writable: args.writable,
        read_only: args.read_only,
        network: cmd::containers::network_for(args.network, &args.publish)?,
        ports: args.publish,
        name: args.name.clone(),
        volumes,
        tmpfs,
        memory: args.memory,
        cpus: args.cpus,
        pids: args.pids,
        cap_add: args.cap_add,
        cap_drop: args.cap_drop,
        no_init: args.no_init,
        tty: args.tty,
        ulimits: args.ulimit,
        userns: args.userns,
        seccomp,
        no_new_privileges: no_new_privileges_choice(&args.security_opt),
        sysctls: args.sysctl,
        verify: !args.no_verify,
        no_manifest: false,
        timeout: None,
        stage: None,
        rootless,
        pid_file: None,
        started: None,
    };
    if args.detach {
        return cmd::containers::run_detached(opts, args.name, args.rm);
    }
    // Like docker: 125 when the container could not be run at all.
    let outcome = match rootpack::run::run(&opts) {
        Ok(o) => o,
        Err(e) => {
            let e = anyhow::Error::from(e);
            eprintln!("rootpack: run {}: {}", image.display(), one_line(&e));
            return Ok(125);
        }
    };
    Ok(said(&outcome))
}

/// What a foreground container's end says, and its exit status.
fn said(outcome: &rootpack::run::Outcome) -> u8 {
    if let Some(message) = &outcome.message {
        eprintln!("rootpack: {message}");
    }
    if let Some(notice) = &outcome.notice {
        eprintln!("rootpack: {notice}");
    }
    if let Some(limit) = outcome.oom_limit {
        eprintln!(
            "rootpack: killed: out of memory, limit {}",
            human_size(limit)
        );
    }
    outcome.exit_code.clamp(0, 255) as u8
}

/// `1 entry`, `2 entries`.
fn entries(n: u64) -> String {
    match n {
        1 => "1 entry".into(),
        n => format!("{n} entries"),
    }
}

/// Bytes in the recipe's units: `256M`, `1G`, `1.5G`, `512`.
pub(crate) fn human_size(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes >= 1 << shift {
            if bytes.is_multiple_of(1 << shift) {
                return format!("{}{unit}", bytes >> shift);
            }
            return format!("{:.1}{unit}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
}
