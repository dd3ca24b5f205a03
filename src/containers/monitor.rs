//! `run -d`: a monitor process, detached from the caller (its own session, stdio on
//! /dev/null), runs the container as a foreground `run` does, with the output into the
//! container's log, and records how it ended. The caller returns once the container
//! runs, or with the reason it could not start.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};

use super::{Container, Error, Record, open_root, other};
use crate::run::RunOptions;

/// A log is rotated (to `log.1`, the one before dropped) past this size.
pub const LOG_CAP: u64 = 16 << 20;

fn random_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(other("/dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    match ok {
        true => Ok(()),
        false => Err(Error::Usage(format!(
            "--name {name:?}: letters, digits, '_', '.' and '-', starting with a letter or digit"
        ))),
    }
}

/// Starts `opts` detached; its id once it runs.
pub fn start(
    root: &Path,
    opts: RunOptions,
    name: Option<String>,
    auto_remove: bool,
) -> Result<String, Error> {
    open_root(root)?;
    let id = random_id()?;
    let name = name.unwrap_or_else(|| id[..12].to_string());
    check_name(&name)?;
    if super::list(root).iter().any(|c| c.record.name == name) {
        return Err(Error::Usage(format!("the name {name:?} is already in use")));
    }
    let dir = root.join(&id);
    fs::DirBuilder::new()
        .create(&dir)
        .map_err(other(dir.display()))?;
    let record = Record {
        id: id.clone(),
        name,
        image: opts.image.clone(),
        command: opts.command.clone(),
        created: crate::time_format::rfc3339_now(),
        auto_remove,
        env: opts.env.clone(),
        workdir: opts.workdir.clone(),
        user: opts.user,
        ports: opts.ports.iter().map(|p| p.to_string()).collect(),
        no_new_privileges: crate::run::no_new_privileges(&opts),
    };
    // Its name is an address in its /etc/hosts too.
    let mut opts = opts;
    opts.name = Some(record.name.clone());
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Other(e.to_string()))?;
    fs::write(dir.join("record.json"), json).map_err(other("record.json"))?;
    match spawn(&dir, opts) {
        Ok(()) => Ok(id),
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// Forks the monitor (twice, so that init adopts it) and waits for the container to run.
fn spawn(dir: &Path, opts: RunOptions) -> Result<(), Error> {
    let (r, w) = crate::run::pipe().map_err(other("pipe"))?;
    // SAFETY: fork in a single-threaded process (the command line's, before any thread).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(other("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(r);
        // SAFETY: a new session, then the monitor forked off it; this middle one leaves.
        unsafe {
            libc::setsid();
            match libc::fork() {
                0 => monitor(dir, opts, w.into_raw_fd()),
                _ => libc::_exit(0),
            }
        }
    }
    drop(w);
    // SAFETY: reaping the middle process, our child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let mut message = String::new();
    let _ = fs::File::from(r).read_to_string(&mut message);
    if !message.is_empty() {
        return Err(Error::Other(message));
    }
    // No record: an `--rm` container that already ran and ended.
    let Some(c) = Container::load(dir.to_path_buf()) else {
        return Ok(());
    };
    match c.status() {
        super::Status::Up { .. } | super::Status::Exited(_) => Ok(()),
        _ => Err(Error::Other("the container did not start".into())),
    }
}

/// The log with its cap: past [`LOG_CAP`] it moves to `log.1` and starts again.
struct Log {
    path: PathBuf,
    file: Option<fs::File>,
    written: u64,
}

impl Log {
    fn write(&mut self, bytes: &[u8]) {
        if self.written + bytes.len() as u64 > LOG_CAP {
            let _ = fs::rename(&self.path, self.path.with_extension("1"));
            self.file = None;
            self.written = 0;
        }
        if self.file.is_none() {
            self.file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = &mut self.file {
            let _ = f.write_all(bytes);
            self.written += bytes.len() as u64;
        }
    }
}

/// The monitor: never returns.
fn monitor(dir: &Path, mut opts: RunOptions, started: i32) -> ! {
    // Nothing of the caller's stays open in us: not its stdio (a pipe it reads to the
    // end), not any other fd it had (a lock it holds while it runs).
    crate::run::security::close_fds_except(&[started]);
    // SAFETY: our stdio onto /dev/null.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
    }
    let me = std::process::id() as i32;
    let start = crate::ids::process_start_time(me).unwrap_or(0);
    let _ = fs::write(dir.join("monitor"), format!("{me} {start}\n"));
    opts.pid_file = Some(dir.join("pid"));
    opts.started = Some(started);
    let mut log = Log {
        path: dir.join("log"),
        file: None,
        written: 0,
    };
    let code = match crate::run::run_with_output(&opts, &mut |bytes| log.write(bytes)) {
        Ok(outcome) => {
            if let Some(m) = &outcome.message {
                log.write(format!("rootpack: {m}\n").as_bytes());
            }
            outcome.exit_code
        }
        Err(e) => {
            let message = crate::run::error_line(&e);
            // Before the start the caller waits for it; after, the pid file is written and
            // the fd closed (and its number maybe reused), so nothing is written there.
            if !dir.join("pid").exists() {
                // SAFETY: write(2) on our end of the started pipe, still open.
                unsafe { libc::write(started, message.as_ptr().cast(), message.len()) };
            }
            log.write(format!("rootpack: {message}\n").as_bytes());
            125
        }
    };
    let _ = fs::write(dir.join("exit"), format!("{code}\n"));
    let record: Option<Record> = fs::read(dir.join("record.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok());
    if record.is_some_and(|r| r.auto_remove) {
        let _ = fs::remove_dir_all(dir);
    }
    // SAFETY: leaving the forked monitor without running the caller's destructors.
    unsafe { libc::_exit(0) }
}
