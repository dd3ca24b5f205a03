//! runc's command line, as engines call it: global options, then the command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::create::CreateArgs;
use super::exec::ExecArgs;
use super::{Error, Global, commands, info, state};

#[derive(Parser)]
#[command(name = "rootpack-runtime", version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: 1.0.2"),
          about = "An OCI runtime with runc's command line, for podman, containerd and Kubernetes")]
struct Cli {
    /// Where containers' state lives.
    #[arg(long, global = true, default_value = state::DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write errors to this file.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd for cgroups (refused: cgroupfs only).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted as runc takes it; rootless setups are detected, not declared.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Let a created container's process run.
    Start { id: String },
    /// A container's state, as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's process, or with --all to all.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a stopped container (with --force, kill it first).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a new process in a container.
    Exec(ExecArgs),
    /// The container's processes.
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Every container under the state root.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Freeze every process of the container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resources (linux.resources JSON from a file, or - for stdin).
    Update {
        #[arg(short, long)]
        resources: PathBuf,
        id: String,
    },
    /// What this runtime supports, as JSON.
    Features,
    /// Write a starting config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
}

fn run(cli: Cli) -> Result<i32, Error> {
    let g = Global {
        root: cli.root.clone(),
        systemd_cgroup: cli.systemd_cgroup,
    };
    let print = |s: String| {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        if !s.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
    };
    match cli.command {
        Command::Create(args) => super::create::create(&g, &args)?,
        Command::Start { id } => commands::start(&g, &id)?,
        Command::State { id } => print(commands::state(&g, &id)?),
        Command::Kill { all, id, signal } => commands::kill(&g, &id, &signal, all)?,
        Command::Delete { force, id } => commands::delete(&g, &id, force)?,
        Command::Exec(args) => return super::exec::exec(&g, &args),
        Command::Ps {
            format,
            id,
            ps_args,
        } => print(commands::ps(&g, &id, format == "json", &ps_args)?),
        Command::List { format, quiet } => {
            let out = commands::list(&g, format == "json", quiet)?;
            let _ = std::io::stdout().write_all(out.as_bytes());
        }
        Command::Pause { id } => commands::pause(&g, &id, true)?,
        Command::Resume { id } => commands::pause(&g, &id, false)?,
        Command::Update { resources, id } => commands::update(&g, &id, &resources)?,
        Command::Features => print(info::features()),
        Command::Spec {
            bundle,
            rootless: _,
        } => info::spec(&bundle)?,
    }
    Ok(0)
}

/// Writes an error where engines look: stderr, and `--log` as text or JSON lines.
fn report(log: Option<&mut std::fs::File>, json: bool, message: &str) {
    eprintln!("rootpack-runtime: {message}");
    let Some(f) = log else { return };
    let time = crate::time_format::format_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    let line = if json {
        serde_json::json!({"level": "error", "msg": message, "time": time}).to_string()
    } else {
        format!("time={time:?} level=error msg={message:?}")
    };
    let _ = writeln!(f, "{line}");
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.log_format == "json";
    // Opened now: `exec` joins the container's mount namespace, where the path means
    // something else.
    let mut log = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let _ = cli.debug;
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            report(log.as_mut(), json, &e.to_string());
            ExitCode::from(match e {
                Error::Usage(_) => 2,
                Error::Status(code, _) => code.clamp(1, 255) as u8,
                _ => 1,
            })
        }
    }
}
