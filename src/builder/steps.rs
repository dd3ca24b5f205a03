//! `[[run]]` steps: commands run inside the tree being built, in recipe order, each in a
//! container of rootpack's own runtime ([`crate::run::run_with_output`]) whose root is the
//! tree itself, read-write: the staging folder, or the mounted image for the mount method.
//!
//! Around each step the tree gets what a container needs and loses it afterwards, as if
//! it had never been there (the folders' times put back): mount points the runtime or the
//! step's `mounts` create (`/proc`, `/sys`, `/dev`, targets), `/etc/resolv.conf` for
//! `network = "host"` (a copy of the host's, bound over a placeholder; a symlink there is
//! moved aside and back), a tmpfs on `/run`, and for the whole sequence a Debian
//! `/usr/sbin/policy-rc.d` that refuses to start services.
//!
//! # Security
//!
//! The tree is untrusted: its layers, and each step, may have put symlinks anywhere. Every
//! path rootpack touches in it is resolved inside it (`tree::safe_path::Root`), leaves never
//! followed; the runtime mounts on fds resolved the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::BuildError;
use super::step_tree::{Changes, PolicyRcD, is_real_dir, stat_in};
use crate::recipe::{Recipe, RunStep, StepCommand, StepNetwork};
use crate::run::{RunOptions, seccomp::Seccomp};
use crate::tree::recorded::RecordedTree;
use crate::tree::safe_path::{RelPath, Root};

/// Called with a step's number once it is done, and what the tree records (rootless).
pub(super) type AfterStep<'a> =
    dyn FnMut(usize, Option<&RecordedTree>) -> Result<(), BuildError> + 'a;

/// Receives each line a step prints: the step's number (from 1) and the line.
pub type StepSink = Arc<dyn Fn(usize, &str) + Send + Sync>;

/// How many of a failed step's last lines its error keeps.
const TAIL_LINES: usize = 20;
/// Longer lines are cut (a step printing without newlines must not fill the memory).
const MAX_LINE: usize = 4096;

/// A step that failed: where it is in the recipe, how it ended, its last lines.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: run step {number}: {how}", recipe.display())]
pub struct StepError {
    pub recipe: PathBuf,
    pub line: usize,
    pub number: usize,
    pub how: String,
    /// The step's last lines of output, oldest first.
    pub tail: Vec<String>,
}

/// Everything the steps of one build share.
pub(super) struct Steps<'a> {
    pub recipe: &'a Recipe,
    pub sde: Option<i64>,
    /// A folder of the build's own, for the stage mount point and resolv.conf's copy.
    pub work: &'a Path,
    pub sink: Option<StepSink>,
    pub progress: bool,
}

impl Steps<'_> {
    /// Runs the steps from number `first + 1` on the tree at `tree`, and `after` with each
    /// one's number once it is done (policy-rc.d removed). For a rootless image,
    /// `recorded` (what the image's entries will be given) is kept up to date with what
    /// each step changed.
    pub fn run_all(
        &self,
        tree: &Path,
        mut recorded: Option<&mut RecordedTree>,
        first: usize,
        after: &mut AfterStep<'_>,
    ) -> Result<(), BuildError> {
        if self.recipe.steps.len() <= first {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let out = |e| super::out_err(tree)(e);
        let root = Root::open(tree).map_err(out)?;
        let rootless = !rustix::process::geteuid().is_root();
        let stage = self.work.join("step-stage");
        std::fs::create_dir_all(&stage).map_err(out)?;
        let mut policy = PolicyRcD::default();
        let total = self.recipe.steps.len();
        let mut result = Ok(());
        for (i, step) in self.recipe.steps.iter().enumerate().skip(first) {
            let before = recorded.as_ref().map(|r| identities(&root, r.keys()));
            result = super::check_interrupt()
                .and_then(|()| policy.place(&root).map_err(out))
                .and_then(|()| self.run_one(&root, step, i + 1, total, &stage, rootless))
                .and_then(|()| policy.remove(&root).map_err(out));
            if result.is_err() {
                break;
            }
            if let (Some(recorded), Some(before)) = (recorded.as_deref_mut(), &before) {
                reconcile(&root, recorded, before);
            }
            result = after(i + 1, recorded.as_deref());
            if result.is_err() {
                break;
            }
        }
        let removed = policy.remove(&root).map_err(out);
        result?;
        removed?;
        log::debug!(
            "{} run step(s) done ({:.2}s)",
            total - first,
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn run_one(
        &self,
        root: &Root,
        step: &RunStep,
        number: usize,
        total: usize,
        stage: &Path,
        rootless: bool,
    ) -> Result<(), BuildError> {
        let fail = |how: String, tail: Vec<String>| {
            BuildError::Step(StepError {
                recipe: self.recipe.path.clone(),
                line: step.line,
                number,
                how,
                tail,
            })
        };
        let out = |e| super::out_err(root.path())(e);
        for m in step.mounts.iter().filter(|m| !m.read_only) {
            make_cache_folder(&m.host).map_err(|e| {
                let what = format!("run.mounts: cannot make {}: {e}", m.host.display());
                fail(what, Vec::new())
            })?;
        }
        let mut changes = Changes::default();
        let volumes = self.place_mount_points(root, step, &mut changes)?;
        let opts = self.run_options(root, step, stage, rootless, volumes);
        let bar = crate::progress::spinner(
            !self.progress,
            &format!("run step {number}/{total}: {}", summary(&step.command)),
        );
        let mut lines = Lines::new(|line: &str| {
            if let Some(sink) = &self.sink {
                match &bar {
                    Some(b) => b.suspend(|| sink(number, line)),
                    None => sink(number, line),
                }
            }
            if let Some(b) = &bar {
                b.tick();
            }
        });
        log::info!(
            "run step {number}/{total} (line {}): {}",
            step.line,
            summary(&step.command)
        );
        let outcome = crate::run::run_with_output(&opts, &mut |bytes| lines.push(bytes));
        lines.finish();
        let tail = lines.tail();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let undone = changes.undo(root).map_err(out);
        super::check_interrupt()?;
        let outcome = outcome.map_err(|e| {
            let e = anyhow_free_chain(&e);
            fail(format!("could not start: {e}"), Vec::new())
        })?;
        undone?;
        match failure(step, &outcome) {
            Some(how) => Err(fail(how, tail)),
            None => Ok(()),
        }
    }

    /// Notes the mount points the runtime and the step's mounts need (to remove after),
    /// and for a step on the host's network puts a copy of the host's resolv.conf in
    /// place of the image's. Gives the step's volumes.
    fn place_mount_points(
        &self,
        root: &Root,
        step: &RunStep,
        changes: &mut Changes,
    ) -> Result<Vec<(PathBuf, String, bool)>, BuildError> {
        let out = |e| super::out_err(root.path())(e);
        let mut volumes = Vec::new();
        // The runtime's own mount points, then the step's.
        for name in ["proc", "sys", "dev"] {
            changes.note_created(root, &rel(name)).map_err(out)?;
        }
        for m in &step.mounts {
            changes.note_created(root, &m.target).map_err(out)?;
            volumes.push((m.host.clone(), format!("/{}", m.target), m.read_only));
        }
        let resolv = rel("etc/resolv.conf");
        if step.network == StepNetwork::Private {
            // The runtime binds the network's own resolv.conf and hosts there.
            for file in [resolv, rel("etc/hosts")] {
                changes.move_symlink_aside(root, &file).map_err(out)?;
                changes.note_created(root, &file).map_err(out)?;
            }
        } else if step.network == StepNetwork::Host {
            let copy = self.work.join("resolv.conf");
            // The host's, following symlinks (systemd-resolved's stub file, ...).
            let text = std::fs::read("/etc/resolv.conf").unwrap_or_default();
            std::fs::write(&copy, text).map_err(|e| super::out_err(&copy)(e))?;
            changes.move_symlink_aside(root, &resolv).map_err(out)?;
            changes.note_created(root, &resolv).map_err(out)?;
            volumes.push((copy, "/etc/resolv.conf".into(), false));
        }
        Ok(volumes)
    }

    /// The runtime's options for a step: the tree as a writable folder root, the recipe's
    /// env under the step's, its hostname, Docker's seccomp profile.
    fn run_options(
        &self,
        root: &Root,
        step: &RunStep,
        stage: &Path,
        rootless: bool,
        volumes: Vec<(PathBuf, String, bool)>,
    ) -> RunOptions {
        let recipe = self.recipe;
        // Runtime state of the step (pid files, sockets, locks) ends with it.
        let tmpfs = if is_real_dir(root, b"run") {
            vec!["/run".to_string()]
        } else {
            Vec::new()
        };
        let mut env: Vec<(String, String)> = recipe
            .config
            .env
            .iter()
            .filter(|(k, _)| !step.env.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if let Some(t) = self.sde
            && !env.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH")
        {
            env.push(("SOURCE_DATE_EPOCH".into(), t.to_string()));
        }
        let command = match &step.command {
            StepCommand::Script(s) => vec!["/bin/sh".into(), "-e".into(), "-c".into(), s.clone()],
            StepCommand::Args(a) => a.clone(),
        };
        let (user, user_name) = crate::ids::split_user(step.user.as_deref());
        RunOptions {
            image: root.path().to_path_buf(),
            command,
            env,
            workdir: Some(step.workdir.clone().unwrap_or_else(|| "/".into())),
            user,
            user_name,
            hostname: Some(
                recipe
                    .config
                    .hostname
                    .clone()
                    .unwrap_or_else(|| recipe.name.clone()),
            ),
            writable: true,
            network: match step.network {
                StepNetwork::Host => crate::net::Network::Host,
                StepNetwork::Private => crate::net::Network::Private,
                StepNetwork::None => crate::net::Network::None,
            },
            volumes,
            tmpfs,
            seccomp: Seccomp::Default,
            // Kept on for steps, as before: a build runs as root and needs no set-id
            // program to gain anything, and a recipe from elsewhere gains nothing by one.
            no_new_privileges: Some(true),
            verify: false,
            no_manifest: true,
            timeout: step.timeout,
            stage: Some(stage.to_path_buf()),
            rootless,
            ..RunOptions::default()
        }
    }
}

/// A read-write mount's host folder, made when missing, as BuildKit makes a cache mount's
/// (a cache starts empty); 0755, as BuildKit's, since apt downloads as its `_apt` user
/// into `archives/partial` below the folder, which it must be able to pass through.
fn make_cache_folder(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)?;
    log::info!("made {} for a step's mount", path.display());
    Ok(())
}

/// How a step that ran failed, if it did: timed out, or a status other than 0.
fn failure(step: &RunStep, outcome: &crate::run::Outcome) -> Option<String> {
    if outcome.timed_out {
        let limit = step.timeout.unwrap_or_default();
        return Some(format!("timed out after {}", human_duration(limit)));
    }
    if outcome.exit_code != 0 {
        return Some(match (outcome.signal, &outcome.message) {
            (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
            (None, Some(m)) => format!("exited with status {}: {m}", outcome.exit_code),
            (None, None) => format!("exited with status {}", outcome.exit_code),
        });
    }
    None
}

/// A path inside the tree, from a constant.
pub(super) fn rel(s: &str) -> RelPath {
    RelPath::parse(s.as_bytes()).unwrap_or_else(|_| unreachable!("a constant path"))
}

/// A step's command in a few words, for the progress line and the log.
fn summary(c: &StepCommand) -> String {
    let text = match c {
        StepCommand::Script(s) => s
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string(),
        StepCommand::Args(a) => a.join(" "),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// An error and its causes, on one line.
fn anyhow_free_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => "signal",
    }
}

/// For a rootless ext4 build: each recorded entry's inode and mode before the steps.
fn identities<'a>(
    root: &Root,
    paths: impl Iterator<Item = &'a Vec<u8>>,
) -> HashMap<Vec<u8>, (u64, u32)> {
    paths
        .filter_map(|p| {
            let rp = if p.is_empty() {
                rel(".")
            } else {
                RelPath::parse(p).ok()?
            };
            let st = stat_in(root, &rp).ok()?;
            Some((p.clone(), (st.st_ino, st.st_mode)))
        })
        .collect()
}

/// What the steps changed wins over what was recorded while unpacking: an entry removed
/// or replaced (another inode) is no longer recorded, so the image gets it as the step
/// left it (root's, as everything the steps make); a chmod by a step keeps the recorded
/// owner and type with the step's permission bits.
fn reconcile(root: &Root, recorded: &mut RecordedTree, before: &HashMap<Vec<u8>, (u64, u32)>) {
    recorded.retain(|path, rec| {
        let rp = if path.is_empty() {
            rel(".")
        } else {
            match RelPath::parse(path) {
                Ok(p) => p,
                Err(_) => return false,
            }
        };
        let Ok(now) = stat_in(root, &rp) else {
            return false;
        };
        match before.get(path) {
            Some(&(ino, mode)) if ino == now.st_ino => {
                if mode != now.st_mode {
                    rec.mode = (rec.mode & 0o170000) | (now.st_mode & 0o7777);
                }
                true
            }
            _ => false,
        }
    });
}

/// Splits a step's output into lines for the sink, keeping the last few.
struct Lines<F: FnMut(&str)> {
    partial: Vec<u8>,
    tail: std::collections::VecDeque<String>,
    emit: F,
}

impl<F: FnMut(&str)> Lines<F> {
    fn new(emit: F) -> Self {
        Lines {
            partial: Vec::new(),
            tail: std::collections::VecDeque::new(),
            emit,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(i) = bytes.iter().position(|b| *b == b'\n') {
            self.extend(&bytes[..i]);
            self.line();
            bytes = &bytes[i + 1..];
        }
        self.extend(bytes);
    }

    fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn line(&mut self) {
        let text = String::from_utf8_lossy(&self.partial);
        let text = text.strip_suffix('\r').unwrap_or(&text).to_string();
        (self.emit)(&text);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
        self.partial.clear();
    }

    fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.line();
        }
    }

    fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_cut_and_the_tail_kept() {
        let mut seen = Vec::new();
        let mut l = Lines::new(|s: &str| seen.push(s.to_string()));
        l.push(b"one\ntw");
        l.push(b"o\r\n");
        l.push(&vec![b'x'; MAX_LINE + 10]);
        l.push(b"\nlast");
        l.finish();
        let tail = l.tail();
        drop(l);
        assert_eq!(seen[..2], ["one", "two"]);
        assert_eq!(seen[2].len(), MAX_LINE);
        assert_eq!(seen[3], "last");
        assert_eq!(tail.len(), 4);
        let mut l = Lines::new(|_: &str| {});
        for i in 0..50 {
            l.push(format!("{i}\n").as_bytes());
        }
        assert_eq!(l.tail().first().map(String::as_str), Some("30"));
    }

    #[test]
    fn placeholders_are_removed_and_times_restored() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::os::unix::fs::symlink("../run/x/resolv.conf", tree.join("etc/resolv.conf")).unwrap();
        let old = filetime(tree);
        let root = Root::open(tree).unwrap();
        let mut c = Changes::default();
        c.note_created(&root, &rel("var/cache/apt")).unwrap();
        c.note_created(&root, &rel("etc")).unwrap();
        c.move_symlink_aside(&root, &rel("etc/resolv.conf"))
            .unwrap();
        c.note_created(&root, &rel("etc/resolv.conf")).unwrap();
        root.open_mount_target(&rel("var/cache/apt"), false)
            .unwrap();
        root.open_mount_target(&rel("etc/resolv.conf"), true)
            .unwrap();
        assert!(tree.join("var/cache/apt").is_dir());
        c.undo(&root).unwrap();
        assert!(!tree.join("var").exists());
        assert_eq!(
            std::fs::read_link(tree.join("etc/resolv.conf")).unwrap(),
            Path::new("../run/x/resolv.conf")
        );
        assert_eq!(filetime(tree), old);
    }

    fn filetime(p: &Path) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec())
    }
}
