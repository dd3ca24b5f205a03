//! Shared helpers for the integration tests: run the real binary, build fixture trees with
//! real tools, compare trees.
#![allow(dead_code)]

pub mod debian;
pub mod kernel;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary, without a build cache unless a test names one with `--cache` (each test's
/// builds then do what they say, whatever another test left cached).
pub fn rootpack() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rootpack"));
    c.env("ROOTPACK_CACHE", "off");
    c
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True when the test may run; false (after saying so) when it needs root and we are not.
/// With ROOTPACK_REQUIRE_ROOT=1 a missing privilege is a failure, not a skip.
pub fn require_root() -> bool {
    // The test harness names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().unwrap_or("this test");
    if is_root() {
        return true;
    }
    if std::env::var("ROOTPACK_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test} needs root (ROOTPACK_REQUIRE_ROOT=1)");
    }
    eprintln!("SKIPPED {test}: needs root");
    false
}

/// Attached loop devices whose backing file `keep` accepts, as "loopN: backing file".
pub fn loop_devices(keep: impl Fn(&Path) -> bool) -> Vec<String> {
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = Path::new(backing.trim());
            keep(backing)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), backing.display()))
        })
        .collect()
}

/// Runs a command, panicking with its stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is the tool installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `rootpack build RECIPE --out OUT EXTRA…`, which must succeed.
pub fn build_ok(recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    run(rootpack()
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .args(extra))
}

/// Runs `sh -c script` in `dir`.
pub fn sh(dir: &Path, script: &str) -> Output {
    run(Command::new("sh").arg("-ec").arg(script).current_dir(dir))
}

/// Pipes `input` through a command and returns its stdout.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// A tree with everything an initramfs holds: busybox-static and applet symlinks, hard
/// links, a setuid file, a fifo, a device node (root only), a non-UTF-8 name, an empty
/// file, nested folders with unusual modes and fixed mtimes.
pub fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc/deep/er")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::copy("/bin/busybox", root.join("usr/bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("usr/bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/absolute-link")).unwrap();
    fs::write(root.join("etc/hostname"), "rootpack-test\n").unwrap();
    fs::write(root.join("etc/empty"), "").unwrap();
    fs::write(root.join("etc/deep/er/data"), vec![7u8; 100_003]).unwrap();
    fs::write(root.join("etc/hard1"), "shared inode\n").unwrap();
    fs::hard_link(root.join("etc/hard1"), root.join("etc/hard2")).unwrap();
    fs::hard_link(root.join("etc/hard1"), root.join("usr/hard3")).unwrap();
    fs::write(root.join("usr/bin/suid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        root.join("usr/bin/suid"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(root.join("etc/TRAILER!!!"), "070701TRAILER!!!\0").unwrap();
    let odd = root.join(OsStr::from_bytes(b"etc/caf\xe9"));
    fs::write(odd, "latin-1 name\n").unwrap();
    sh(root, "mkfifo etc/fifo");
    if is_root() {
        sh(
            root,
            "mknod dev/null c 1 3 && mknod dev/loop9 b 7 9 && chown 1234:5678 etc/hostname",
        );
    }
    fs::set_permissions(root.join("etc/deep"), fs::Permissions::from_mode(0o750)).unwrap();
    // Fixed times everywhere, folders last, so trees made at different moments compare.
    sh(
        root,
        "find . -depth -exec touch -h -d @1600000000 {} + && touch -h -d @1500000000 etc/hostname",
    );
}

/// What we compare of one tree entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Node {
    kind: char,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: Option<i64>,
    content: Vec<u8>,
    rdev: u64,
    /// Other paths sharing this inode.
    links: Vec<PathBuf>,
}

pub struct Snapshot {
    pub nodes: BTreeMap<PathBuf, Node>,
}

pub struct SnapshotOptions {
    pub owners: bool,
    pub dir_mtimes: bool,
    /// GNU cpio does not restore symlink times.
    pub symlink_mtimes: bool,
}

/// Every entry below `root` (not the root itself).
pub fn snapshot(root: &Path, opts: &SnapshotOptions) -> Snapshot {
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut raw = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_path_buf();
        let meta = entry.path().symlink_metadata().unwrap();
        if !meta.is_dir() {
            inodes.entry(meta.ino()).or_default().push(rel.clone());
        }
        raw.push((rel, entry.path().to_path_buf(), meta));
    }
    let mut nodes = BTreeMap::new();
    for (rel, path, meta) in raw {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            '-'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            's'
        };
        let content = match kind {
            '-' => fs::read(&path).unwrap(),
            'l' => fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec(),
            _ => Vec::new(),
        };
        let links = if kind == 'd' {
            Vec::new()
        } else {
            inodes[&meta.ino()]
                .iter()
                .filter(|p| **p != rel)
                .cloned()
                .collect()
        };
        nodes.insert(
            rel,
            Node {
                kind,
                mode: if kind == 'l' { 0 } else { meta.mode() & 0o7777 },
                owner: opts.owners.then(|| (meta.uid(), meta.gid())),
                mtime: match kind {
                    'd' => opts.dir_mtimes,
                    'l' => opts.symlink_mtimes,
                    _ => true,
                }
                .then(|| meta.mtime()),
                content,
                rdev: meta.rdev(),
                links,
            },
        );
    }
    Snapshot { nodes }
}

/// Asserts two trees are equal, naming the first difference.
pub fn assert_same_tree(left: &Path, right: &Path, opts: &SnapshotOptions) {
    let a = snapshot(left, opts);
    let b = snapshot(right, opts);
    let names_a: Vec<_> = a.nodes.keys().collect();
    let names_b: Vec<_> = b.nodes.keys().collect();
    assert_eq!(
        names_a,
        names_b,
        "{} and {} hold different paths",
        left.display(),
        right.display()
    );
    for (path, node) in &a.nodes {
        assert_eq!(
            node,
            &b.nodes[path],
            "{} differs between {} and {}",
            path.display(),
            left.display(),
            right.display()
        );
    }
}

/// A newc entry written by hand, for archives no honest tool would make.
pub struct RawEntry<'a> {
    pub name: &'a [u8],
    pub mode: u32,
    pub data: &'a [u8],
    pub ino: u32,
    pub nlink: u32,
    /// Overrides the name size field (the NUL is still written after `name`).
    pub namesize: Option<u32>,
    pub filesize: Option<u32>,
}

impl<'a> RawEntry<'a> {
    pub fn file(name: &'a [u8], data: &'a [u8]) -> Self {
        RawEntry {
            name,
            mode: 0o100644,
            data,
            ino: 0,
            nlink: 1,
            namesize: None,
            filesize: None,
        }
    }
    pub fn dir(name: &'a [u8]) -> Self {
        RawEntry {
            mode: 0o40755,
            ..RawEntry::file(name, b"")
        }
    }
    pub fn symlink(name: &'a [u8], target: &'a [u8]) -> Self {
        RawEntry {
            mode: 0o120777,
            ..RawEntry::file(name, target)
        }
    }
}

/// A newc archive of `entries` plus the trailer. Independent of the codec under test.
pub fn raw_newc(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let pad = |out: &mut Vec<u8>| {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    let trailer = RawEntry {
        nlink: 1,
        mode: 0,
        ..RawEntry::file(b"TRAILER!!!", b"")
    };
    for e in entries.iter().chain(std::iter::once(&trailer)) {
        let namesize = e.namesize.unwrap_or(e.name.len() as u32 + 1);
        let filesize = e.filesize.unwrap_or(e.data.len() as u32);
        let fields = [
            e.ino,
            e.mode,
            0,
            0,
            e.nlink,
            1_600_000_000,
            filesize,
            0,
            0,
            0,
            0,
            namesize,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(e.name);
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(e.data);
        pad(&mut out);
    }
    out
}

/// Every path below `dir`, for "nothing was written here" checks.
pub fn list_tree(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect()
}

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A busybox image built into a fresh folder.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Builds `recipes/busybox.toml`, with `extra` appended, into a fresh folder.
pub fn busybox_image(extra: &str) -> Image {
    recipe_image("busybox", extra)
}

/// Builds `recipes/NAME.toml`, with `extra` appended, into a fresh folder.
pub fn recipe_image(name: &str, extra: &str) -> Image {
    let text = fs::read_to_string(Path::new(REPO).join(format!("recipes/{name}.toml"))).unwrap();
    image_from_recipe(name, &format!("{text}\n{extra}"))
}

/// Builds a recipe whose `name` is `name` from its text, into a fresh folder.
pub fn image_from_recipe(name: &str, text: &str) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("recipe.toml");
    fs::write(&recipe, text).unwrap();
    run(rootpack()
        .arg("build")
        .arg("-q")
        .arg(&recipe)
        .arg("--out")
        .arg(dir.path()));
    let path = dir.path().join(format!("{name}.ext4"));
    Image { dir, path }
}

/// `rootpack run ARGS IMAGE -- sh -c SCRIPT`, stdin closed.
pub fn container(image: &Path, args: &[&str], script: &str) -> Output {
    rootpack()
        .arg("run")
        .args(args)
        .arg(image)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Loop devices backed by files below `dir`, mounts below it, temporaries in it: what a
/// build must not leave.
pub fn build_leaks(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap_or(dir.to_path_buf());
    let mut found = loop_devices(|b| b.starts_with(&dir));
    for line in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let target = line.split(' ').nth(4).unwrap();
        if target.starts_with(&format!("{}/", dir.display())) {
            found.push(format!("mount {target}"));
        }
    }
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().contains("rootpack-tmp") {
            found.push(format!("temp {}", e.path().display()));
        }
    }
    found
}

/// Loop devices backed by `image`, and rootpack cgroups whose process is gone.
pub fn run_leaks(image: &Path) -> Vec<String> {
    let mut found = loop_devices(|b| b == image);
    for entry in walkdir::WalkDir::new("/sys/fs/cgroup")
        .max_depth(4)
        .into_iter()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("rootpack-")
            .and_then(|r| r.split('-').next())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            found.push(format!("cgroup {}", entry.path().display()));
        }
    }
    found
}

/// Waits up to 5 s for [`run_leaks`] to be empty (a container's teardown finishes after
/// its status is known), then asserts it is.
pub fn wait_for_no_leaks(image: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !run_leaks(image).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(run_leaks(image).is_empty(), "{:?}", run_leaks(image));
}
