//! `rootpack-runtime`: an OCI runtime with runc's command-line contract, so that podman
//! (through conmon) and containerd (through its runc shim) can drive rootpack's
//! containers.
//!
//! A container is a folder of state under the state root (see [`state`]), created from a
//! bundle's `config.json` (see [`create`]), started, signalled, entered (see [`exec`]) and
//! deleted by separate short-lived invocations (see [`commands`]).

pub mod cgroups;
mod child;
pub mod cli;
pub mod commands;
pub mod create;
pub mod exec;
pub mod hooks;
pub mod info;
pub mod mounts;
mod plan;
pub mod process;
pub mod seccomp;
pub mod state;

use std::path::PathBuf;

/// A failure, as engines read them: "does not exist" and "container not running" are the
/// words podman and containerd match.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments: exit status 2.
    #[error("{0}")]
    Usage(String),
    #[error("container {0:?} does not exist")]
    Missing(String),
    #[error("container {0:?}: container not running")]
    NotRunning(String),
    #[error("{0}")]
    Other(String),
    /// A process that could not be started: the status to leave with (127, 126).
    #[error("{1}")]
    Status(i32, String),
}

/// The options before the command.
#[derive(Debug, Clone)]
pub struct Global {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

/// The `state` JSON of a container.
pub fn report_json(saved: &state::Saved, status: state::Status) -> String {
    let report = state::Report {
        oci_version: "1.0.2",
        id: &saved.id,
        status,
        pid: if status == state::Status::Stopped {
            0
        } else {
            saved.pid
        },
        bundle: &saved.bundle,
        rootfs: &saved.rootfs,
        created: &saved.created,
        annotations: &saved.annotations,
        owner: &saved.owner,
    };
    serde_json::to_string_pretty(&report).unwrap_or_default()
}
