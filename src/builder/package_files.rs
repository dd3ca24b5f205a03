//! What package managers leave in the tree that depends on the clock or the host, removed
//! after the last `[[run]]` step, as debuerreotype (`debuerreotype-fixup`) and reproducible
//! Dockerfiles do: two builds of the same recipe then give the same bytes.
//!
//! Removed, not truncated, as debuerreotype does: the package managers make their logs
//! again when they next run, and removal (`unlinkat`) acts on the name alone, where
//! truncation would open whatever a step left there.
//!
//! The cleanup runs on the tree once the steps are done, run or restored from the cache
//! alike, so the cache's states keep what the steps made and cached and uncached builds
//! give the same image. The files placed `after_steps` come after it and are kept.
//!
//! # Security
//!
//! A step or a layer may have made any of these folders a symlink (`/var/log -> /etc`,
//! `/var/cache/yum -> /usr`, or to a host path): folders are opened part by part without
//! following any symlink, and a linked one is left alone; leaves are removed by name
//! without being followed. Nothing outside the folders named is ever touched.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::{AsFd, OwnedFd};

use rustix::io::Errno;

use crate::recipe::PackageFiles;
use crate::tree::recorded::RecordedTree;
use crate::tree::safe_path::{Root, remove_all_at};

/// Files whose content depends on when or where the build ran: `(folder, name)`, where a
/// name may end in `*` (any name with that start) or be `*` (everything in the folder).
const CLOCK_AND_HOST: &[(&str, &str)] = &[
    // apt: binary caches recording the lists' times; the logs of what ran, dated.
    ("var/cache/apt", "pkgcache.bin"),
    ("var/cache/apt", "srcpkgcache.bin"),
    ("var/log/apt", "history.log"),
    ("var/log/apt", "term.log"),
    ("var/log/apt", "eipp.log.xz"),
    // dpkg and update-alternatives: dated logs.
    ("var/log", "dpkg.log"),
    ("var/log", "alternatives.log"),
    // ldconfig: the libraries' inode numbers and change times.
    ("var/cache/ldconfig", "aux-cache"),
    // dnf, yum and rpm: metadata caches with download times, the dated transaction
    // history, logs, and Berkeley DB environment files of the host's process.
    ("var/cache/dnf", "*"),
    ("var/cache/libdnf5", "*"),
    ("var/cache/yum", "*"),
    ("var/lib/dnf", "history*"),
    ("usr/lib/sysimage/libdnf5", "transaction_history.sqlite*"),
    ("var/log", "dnf.log"),
    ("var/log", "dnf.librepo.log"),
    ("var/log", "dnf.rpm.log"),
    ("var/log", "dnf5.log"),
    ("var/log", "hawkey.log"),
    ("var/log", "yum.log"),
    ("var/lib/rpm", "__db.*"),
    // pacman: its dated log.
    ("var/log", "pacman.log"),
];

/// Downloaded packages and package lists: the same on every build from the same mirror,
/// but large, and stale as soon as the mirror moves on (`package_files = "clean-all"`).
const DOWNLOADS: &[(&str, &str)] = &[
    ("var/cache/apt/archives", "*.deb"),
    ("var/lib/apt/lists", "*"),
    ("var/cache/apk", "*"),
    ("var/cache/pacman/pkg", "*"),
    ("var/lib/pacman/sync", "*"),
];

/// Removes from the tree at `root` what `mode` says; gives the paths removed (`/var/…`),
/// and drops them from `recorded` (a rootless image's entries).
pub(super) fn clean(
    root: &Root,
    mode: PackageFiles,
    recorded: Option<&mut RecordedTree>,
) -> io::Result<Vec<String>> {
    let lists: &[&[(&str, &str)]] = match mode {
        PackageFiles::Keep => &[],
        PackageFiles::Clean => &[CLOCK_AND_HOST],
        PackageFiles::CleanAll => &[CLOCK_AND_HOST, DOWNLOADS],
    };
    let mut removed = Vec::new();
    for (folder, pattern) in lists.iter().copied().flatten() {
        removed.extend(clean_one(root, folder, pattern)?);
    }
    if let Some(recorded) = recorded {
        recorded.retain(|path, _| !removed.iter().any(|r| below(path, r)));
    }
    let shown: Vec<String> = removed
        .iter()
        .map(|r| format!("/{}", r.escape_ascii()))
        .collect();
    for r in &shown {
        log::info!("removed {r}");
    }
    Ok(shown)
}

/// Removes the entries of `folder` that `pattern` matches; gives their paths in the tree.
fn clean_one(root: &Root, folder: &str, pattern: &str) -> io::Result<Vec<Vec<u8>>> {
    let Some(dir) = real_folder(root, folder)? else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." && matches(pattern.as_bytes(), &name) {
            names.push(name);
        }
    }
    names.sort();
    let mut removed = Vec::new();
    for name in names {
        match remove_all_at(dir.as_fd(), OsStr::from_bytes(&name)) {
            Ok(()) => removed.push([folder.as_bytes(), b"/", &name].concat()),
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// `folder` below the root when every part of it is a real folder; a symlink anywhere on
/// the way is not followed, even inside the tree: `/var/cache/yum -> /usr` in a base
/// image must not make `"*"` empty `/usr`. Absent, not a folder, or linked: none.
fn real_folder(root: &Root, folder: &str) -> io::Result<Option<OwnedFd>> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = rustix::fs::openat(root.fd(), ".", flags, Mode::empty())?;
    for part in folder.split('/') {
        dir = match rustix::fs::openat(&dir, part, flags, Mode::empty()) {
            Ok(d) => d,
            // A symlink with O_NOFOLLOW | O_DIRECTORY is ELOOP or ENOTDIR.
            Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    }
    Ok(Some(dir))
}

/// `pattern` is a name, or ends in `*` (any rest), or starts with `*` (any start).
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.strip_suffix(b"*"), pattern.strip_prefix(b"*")) {
        (Some(start), _) => name.starts_with(start),
        (None, Some(end)) => name.ends_with(end),
        (None, None) => name == pattern,
    }
}

/// Whether `path` is `top` or lies below it (paths relative to the tree's root).
fn below(path: &[u8], top: &[u8]) -> bool {
    path.starts_with(top) && (path.len() == top.len() || path[top.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn patterns() {
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"history*", b"history.sqlite-wal"));
        assert!(!matches(b"history*", b"historx"));
        assert!(matches(b"*.deb", b"curl_8.0_amd64.deb"));
        assert!(!matches(b"*.deb", b"lock"));
        assert!(matches(b"dpkg.log", b"dpkg.log") && !matches(b"dpkg.log", b"dpkg.log.1"));
        assert!(below(b"var/log/a", b"var/log") && !below(b"var/logs", b"var/log"));
    }

    #[test]
    fn removes_what_depends_on_the_clock_and_nothing_outside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let (tree, host) = (dir.path().join("tree"), dir.path().join("host"));
        fs::create_dir_all(tree.join("var/log/apt")).unwrap();
        fs::create_dir_all(tree.join("var/cache/dnf/fedora")).unwrap();
        fs::create_dir_all(tree.join("var/cache/apt/archives")).unwrap();
        fs::create_dir_all(&host).unwrap();
        for f in [
            "var/log/dpkg.log",
            "var/log/apt/term.log",
            "var/log/kept.log",
        ] {
            fs::write(tree.join(f), "2026-01-01 12:00:00\n").unwrap();
        }
        fs::write(tree.join("var/cache/dnf/fedora/repomd.xml"), "x").unwrap();
        fs::write(tree.join("var/cache/apt/archives/a.deb"), "x").unwrap();
        // A leaf that is a symlink to the host, and a folder that is one.
        fs::write(host.join("passwd"), "host").unwrap();
        fs::write(host.join("aux-cache"), "host").unwrap();
        symlink(host.join("passwd"), tree.join("var/log/apt/history.log")).unwrap();
        fs::create_dir_all(tree.join("var/cache")).unwrap();
        symlink(&host, tree.join("var/cache/ldconfig")).unwrap();
        // A folder linked inside the tree is not followed either.
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        fs::write(tree.join("usr/bin/x"), "x").unwrap();
        symlink("/usr", tree.join("var/cache/yum")).unwrap();
        let root = Root::open(&tree).unwrap();
        let rec = crate::tree::recorded::Recorded {
            uid: 1000,
            gid: 1000,
            mode: 0o100644,
            rdev: (0, 0),
            xattrs: Vec::new(),
        };
        let mut recorded = RecordedTree::new();
        recorded.insert(b"var/cache/dnf/fedora/repomd.xml".to_vec(), rec.clone());
        recorded.insert(b"var/log/kept.log".to_vec(), rec);
        let removed = clean(&root, PackageFiles::Clean, Some(&mut recorded)).unwrap();
        assert_eq!(
            removed,
            [
                "/var/log/apt/history.log",
                "/var/log/apt/term.log",
                "/var/log/dpkg.log",
                "/var/cache/dnf/fedora"
            ]
        );
        assert!(tree.join("var/log/kept.log").exists());
        assert!(tree.join("usr/bin/x").exists());
        assert!(tree.join("var/cache/apt/archives/a.deb").exists());
        assert_eq!(fs::read_to_string(host.join("passwd")).unwrap(), "host");
        assert_eq!(fs::read_to_string(host.join("aux-cache")).unwrap(), "host");
        assert_eq!(recorded.len(), 1);
        let removed = clean(&root, PackageFiles::CleanAll, None).unwrap();
        assert_eq!(removed, ["/var/cache/apt/archives/a.deb"]);
        assert!(clean(&root, PackageFiles::Keep, None).unwrap().is_empty());
    }
}
