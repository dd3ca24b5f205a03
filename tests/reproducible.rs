//! ext4 builds are byte-identical: twice with a source date epoch, a second and more apart,
//! on a tree large enough to take over a second (50,000 files, the shape of a distribution
//! rootfs); and without root, where owners, set-id bits and device nodes are recorded while
//! unpacking and written into the image afterwards, the same bytes as root's build.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const NOBODY: &str = "65534";

/// 200 folders of 250 files of 0-300 bytes, plus every kind of entry root alone can make:
/// devices (one needing the new number encoding), set-id files, foreign owners, a file no
/// one may read, a fifo, hard links, a long symlink.
fn make_layer_tree(root: &Path) {
    let mut seed = 7u64;
    for d in 0..200 {
        let dir = root.join(format!("usr/share/d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..250 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 33) as usize % 301;
            fs::write(dir.join(format!("f{f:03}")), vec![(seed >> 24) as u8; len]).unwrap();
        }
    }
    sh(
        root,
        "mkdir -p dev bin srv/shared home/user && \
         mknod dev/null c 1 3 && mknod dev/loop9 b 7 9 && mknod dev/big c 300 70000 && \
         chmod 0620 dev/big && \
         cp /bin/busybox bin/busybox && chmod 4755 bin/busybox && \
         printf secret > srv/locked && chown 4321:4321 srv/locked && chmod 0000 srv/locked && \
         chown 1234:5678 srv/shared && chmod 2775 srv/shared && \
         printf x > home/user/mine && chown 1000:1000 home/user home/user/mine && \
         mkfifo srv/fifo && ln bin/busybox bin/sh && \
         ln -s /usr/share/d000/f000/../../../../a/long/target/that/is/over/sixty/characters srv/long",
    );
}

/// `W/layer.tar` from GNU tar, of [`make_layer_tree`]'s tree in `W/tree`: owners and
/// devices as root recorded them.
fn write_layer_tar(w: &Path) {
    let tree = w.join("tree");
    make_layer_tree(&tree);
    run(Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "-cf"])
        .arg(w.join("layer.tar"))
        .arg("-C")
        .arg(&tree)
        .arg("."));
}

/// A work folder anyone may enter, on a tmpfs of its own: builds are timed against each
/// other, and a root filesystem without a journal makes file creation after many deletions
/// slow by whole seconds (and more so for some users), which says nothing about rootpack.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3g,mode=755", "rootpack-test"])
            .arg(dir.path()));
        Work { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `rootpack build -q RECIPE --out OUT`, as `uid` (None: as we are).
fn build_as(uid: Option<&str>, recipe: &Path, out: &Path) -> std::process::Output {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", uid, "--regid", uid, "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_rootpack"))
                .env("ROOTPACK_CACHE", "off");
            c
        }
        None => rootpack(),
    };
    cmd.args(["build", "-q"])
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn out_dir(work: &Path, name: &str, owner: Option<&str>) -> PathBuf {
    let dir = work.join(name);
    fs::create_dir(&dir).unwrap();
    if let Some(uid) = owner {
        run(Command::new("chown").arg(format!("{uid}:{uid}")).arg(&dir));
    }
    dir
}

fn assert_same(a: &Path, b: &Path) {
    let (x, y) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    let differ = x.iter().zip(&y).filter(|(p, q)| p != q).count();
    assert!(
        x.len() == y.len() && differ == 0,
        "{} and {} differ in {differ} bytes (sizes {} and {})",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}

fn debugfs(image: &Path, request: &str) -> String {
    let o = run(Command::new("debugfs").arg("-R").arg(request).arg(image));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn archive_layers_build_the_same_bytes_twice_and_without_root() {
    if !require_root() {
        return;
    }
    let work = Work::new();
    let w = work.path();
    write_layer_tar(w);
    let recipe = w.join("repro.toml");
    fs::write(
        &recipe,
        "name = \"repro\"\nsource_date_epoch = 1700000000\n\
         mountpoints = [\"/proc\", \"/tmp\"]\n[[layer]]\ntar = \"layer.tar\"\n",
    )
    .unwrap();
    let (a, b, c) = (
        out_dir(w, "a", None),
        out_dir(w, "b", None),
        out_dir(w, "c", Some(NOBODY)),
    );
    let started = Instant::now();
    let o = build_as(None, &recipe, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    let took = started.elapsed();
    // A second and more apart, so that a clock leaking in shows.
    std::thread::sleep(Duration::from_millis(1100));
    let o = build_as(None, &recipe, &b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&a.join("repro.ext4"), &b.join("repro.ext4"));
    let o = build_as(Some(NOBODY), &recipe, &c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "no warning about lost owners or devices");
    assert_same(&a.join("repro.ext4"), &c.join("repro.ext4"));
    run(Command::new("e2fsck").arg("-fn").arg(a.join("repro.ext4")));
    // What root's build holds, so that two builds that both lost it cannot pass.
    let img = a.join("repro.ext4");
    let big = debugfs(&img, "stat /dev/big");
    assert!(big.contains("Type: character special"), "{big}");
    assert!(
        big.contains("Device major/minor number: 300:70000"),
        "{big}"
    );
    assert!(big.contains("Mode:  0620"), "{big}");
    let locked = debugfs(&img, "stat /srv/locked");
    assert!(
        locked.contains("User:  4321") && locked.contains("Mode:  0000"),
        "{locked}"
    );
    let suid = debugfs(&img, "stat /bin/sh");
    assert!(
        suid.contains("Mode:  04755") && suid.contains("Links: 2"),
        "{suid}"
    );
    let shared = debugfs(&img, "stat /srv/shared");
    assert!(
        shared.contains("Mode:  02775") && shared.contains("Group:  5678"),
        "{shared}"
    );
    eprintln!("one build took {took:?}");
}

/// Every archive and image format a rootless build writes holds what root's holds, byte for
/// byte: owners, set-id bits and devices come from the record, not from the tree.
#[test]
fn rootless_archives_and_oci_images_equal_roots() {
    if !require_root() {
        return;
    }
    let work = Work::new();
    let w = work.path();
    write_layer_tar(w);
    for (format, file) in [
        ("tar", "repro.tar"),
        ("cpio.zst", "repro.cpio.zst"),
        ("oci-archive", "repro.oci.tar"),
    ] {
        let recipe = w.join(format!("{format}.toml"));
        fs::write(
            &recipe,
            format!(
                "name = \"repro\"\nsource_date_epoch = 1700000000\n\
                 [[layer]]\ntar = \"layer.tar\"\n\
                 [[file]]\nto = \"/etc/added\"\ncontent = \"x\"\nuid = 7\ngid = 8\n\
                 [output]\nformat = \"{format}\"\n"
            ),
        )
        .unwrap();
        let (a, c) = (
            out_dir(w, &format!("{format}-root"), None),
            out_dir(w, &format!("{format}-nobody"), Some(NOBODY)),
        );
        let o = build_as(None, &recipe, &a);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        let o = build_as(Some(NOBODY), &recipe, &c);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        assert_eq!(
            stderr(&o),
            "",
            "{format}: no warning about lost owners or devices"
        );
        assert_same(&a.join(file), &c.join(file));
    }
    let listing = stdout(&run(Command::new("tar")
        .arg("tvf")
        .arg(w.join("tar-nobody/repro.tar"))));
    let line = |name: &str| listing.lines().find(|l| l.ends_with(name)).unwrap_or("");
    let big = line("dev/big");
    assert!(
        big.starts_with("crw--w---- 0/0") && big.contains("300,70000"),
        "{big}"
    );
    assert!(
        line("bin/busybox").starts_with("-rwsr-xr-x 0/0"),
        "{listing}"
    );
    assert!(
        line("srv/locked").starts_with("---------- 4321/4321"),
        "{listing}"
    );
    assert!(line("etc/added").starts_with("-rw-r--r-- 7/8"), "{listing}");
}

#[test]
fn folder_layers_are_read_in_place_and_unreadable_files_fail_without_root() {
    if !require_root() {
        return;
    }
    let work = Work::new();
    let w = work.path();
    let tree = w.join("tree");
    make_layer_tree(&tree);
    let recipe = w.join("dir.toml");
    fs::write(
        &recipe,
        format!(
            "name = \"dir\"\nsource_date_epoch = 1700000000\n[[layer]]\ndir = \"{}\"\n",
            tree.display()
        ),
    )
    .unwrap();
    let (a, b, c) = (
        out_dir(w, "a", None),
        out_dir(w, "b", None),
        out_dir(w, "c", Some(NOBODY)),
    );
    let o = build_as(None, &recipe, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(1100));
    let o = build_as(None, &recipe, &b);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&a.join("dir.ext4"), &b.join("dir.ext4"));
    run(Command::new("e2fsck").arg("-fn").arg(a.join("dir.ext4")));
    // A file the user cannot read: a one-line error naming it, and nothing written.
    let o = build_as(Some(NOBODY), &recipe, &c);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("srv/locked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(
        fs::read_dir(&c).unwrap().count(),
        0,
        "left behind in {}",
        c.display()
    );
    // Readable, the same folder builds the same bytes as root's.
    fs::set_permissions(tree.join("srv/locked"), fs::Permissions::from_mode(0o444)).unwrap();
    let o = build_as(None, &recipe, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = build_as(Some(NOBODY), &recipe, &c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same(&a.join("dir.ext4"), &c.join("dir.ext4"));
}
