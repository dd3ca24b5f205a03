//! Outputs that appear whole or not at all: a temporary file or folder beside the target,
//! renamed into place on success and removed by `Drop` otherwise. Temporary names carry
//! the marker `.rootpack-tmp-` and the writer's pid, so leftovers of a killed run can be
//! recognized and removed by the next one.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// In every temporary name; [`crate::cleanup`] looks for it.
pub const MARKER: &str = ".rootpack-tmp-";

fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}{MARKER}{}", std::process::id()))
}

/// A file written beside `target` and renamed over it by [`AtomicFile::commit`].
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let temp = temp_path_for(target);
        // Never through a planted symlink; a leftover of an earlier process with our pid
        // is ours to replace.
        let open = || {
            File::options()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&temp)?;
                open()?
            }
            other => other?,
        };
        Ok(AtomicFile {
            file,
            temp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where the content is written until commit (for tools that write by path).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes to disk, to be committed later.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Flushes to disk and renames over the target.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.target)?;
        self.committed = true;
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// Commits two files together (an image and its manifest): both are flushed, then renamed
/// one right after the other by a child process, which a `kill -9` of rootpack between
/// the two renames does not stop, so the pair is never separated. Then the folder is
/// flushed.
pub fn commit_together(mut first: AtomicFile, mut second: AtomicFile) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    first.file.sync_all()?;
    second.file.sync_all()?;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
    };
    let names = [
        c(&first.temp)?,
        c(&first.target)?,
        c(&second.temp)?,
        c(&second.target)?,
    ];
    // SAFETY: the child only makes system calls (rename, _exit), which are safe after
    // fork in a threaded process; the strings were allocated before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above. The exit code says which rename failed, and why.
        unsafe {
            let errno = || *libc::__errno_location() & 0x7f;
            if libc::rename(names[0].as_ptr(), names[1].as_ptr()) != 0 {
                libc::_exit(errno());
            }
            if libc::rename(names[2].as_ptr(), names[3].as_ptr()) != 0 {
                libc::_exit(0x80 | errno());
            }
            libc::_exit(0);
        }
    }
    if pid < 0 {
        // No process to be had: rename here, as close together as we can.
        std::fs::rename(&first.temp, &first.target)?;
        first.committed = true;
        std::fs::rename(&second.temp, &second.target)?;
        second.committed = true;
    } else {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            0x7f
        };
        if code != 0 {
            first.committed = code & 0x80 != 0;
            return Err(io::Error::from_raw_os_error(code & 0x7f));
        }
        first.committed = true;
        second.committed = true;
    }
    for dir in [&first.target, &second.target]
        .into_iter()
        .filter_map(|t| t.parent().filter(|d| !d.as_os_str().is_empty()))
    {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A directory removed with its contents on drop unless [`TempDir::persist`] renamed it.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh folder beside `target`.
    pub fn beside(target: &Path) -> io::Result<TempDir> {
        let path = temp_path_for(target);
        if std::fs::symlink_metadata(&path).is_ok() {
            // A leftover with our pid; remove_dir_all does not follow a symlink.
            std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path))?;
        }
        // Private: a build stages untrusted setuid files and device nodes here.
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the folder to `target` (which must be absent or an empty folder).
    pub fn persist(mut self, target: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.path.clear();
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The bytes of the files below `dir` (symlinks not followed).
pub fn tree_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let meta = entry
            .map_err(io::Error::from)?
            .metadata()
            .map_err(io::Error::from)?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// A state folder named `name`: under `/run` for root, else under `$XDG_RUNTIME_DIR` (or
/// the temporary folder, suffixed with the caller's uid).
pub fn runtime_state_dir(name: &str) -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return Path::new("/run").join(name);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => {
            std::env::temp_dir().join(format!("{name}-{}", rustix::process::geteuid().as_raw()))
        }
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> io::Result<(std::os::unix::io::OwnedFd, std::os::unix::io::OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// A system tool by name: from `PATH`, else from the sbin folders a user's `PATH` lacks
/// on Debian (where e2fsprogs puts `mke2fs`, kmod `depmod`).
pub fn system_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| name.into())
}
