//! Removing what a killed build left behind: temporary files and folders marked
//! `.rootpack-tmp-PID` whose process is gone, with any mount below them and any loop
//! device backed by them.

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::MARKER;

fn owner_alive(name: &str) -> bool {
    let Some(pid) = name
        .rsplit(MARKER)
        .next()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() as i32 {
        return true;
    }
    match rustix::process::Pid::from_raw(pid) {
        Some(p) => !matches!(
            rustix::process::test_kill_process(p),
            Err(rustix::io::Errno::SRCH)
        ),
        None => false,
    }
}

/// Mount points at or below `path`, deepest first.
fn mounts_below(path: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_octal(m)))
        .filter(|m| m.starts_with(path))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

/// Mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches loop devices whose backing file is `file`.
fn detach_loops(file: &Path) {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return;
    };
    for e in entries.flatten() {
        let backing = e.path().join("loop/backing_file");
        let Ok(b) = std::fs::read_to_string(&backing) else {
            continue;
        };
        let b = b.trim_end().trim_end_matches(" (deleted)");
        if Path::new(b) == file {
            let _ = crate::image::loopdev::detach(&Path::new("/dev").join(e.file_name()));
        }
    }
}

/// Removes stale temporaries in `dir`; returns what was removed.
pub fn remove_stale(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') || !name.contains(MARKER) || owner_alive(&name) {
            continue;
        }
        // The folder is resolved, the entry never: a planted symlink is only unlinked.
        let path = std::fs::canonicalize(dir)?.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            for m in mounts_below(&path) {
                let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
            }
            std::fs::remove_dir_all(&path)?;
        } else {
            if kind.is_file() {
                detach_loops(&path);
            }
            std::fs::remove_file(&path)?;
        }
        removed.push(path);
    }
    Ok(removed)
}
