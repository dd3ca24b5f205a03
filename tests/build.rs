//! `rootpack build`: recipes to ext4 and archive images, checked with e2fsck, a read-only
//! mount and chroot; reproducibility; every failure leaves nothing behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn recipe(name: &str) -> PathBuf {
    Path::new(REPO).join("recipes").join(name)
}

use common::build_ok as build;

/// A read-only mount of an image, undone on drop.
struct Mounted(tempfile::TempDir);

impl Mounted {
    fn new(image: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-o", "ro,loop"])
            .arg(image)
            .arg(dir.path()));
        Mounted(dir)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn fsck(image: &Path) {
    run(Command::new("e2fsck").arg("-fn").arg(image));
}

fn chroot_says(root: &Path, shell: &str, script: &str) -> String {
    let out = run(Command::new("chroot").arg(root).args([shell, "-c", script]));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn hello_builds_with_both_methods_and_runs_in_chroot() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut trees = Vec::new();
    for method in ["populate", "mount"] {
        let out = work.path().join(method);
        let quiet = build(&recipe("hello.toml"), &out, &["-q", "--method", method]);
        assert!(
            quiet.stderr.is_empty(),
            "{method}: -q printed {}",
            String::from_utf8_lossy(&quiet.stderr)
        );
        let image = out.join("hello.ext4");
        fsck(&image);
        let m = Mounted::new(&image);
        assert_eq!(chroot_says(m.path(), "/bin/bash", "echo ok"), "ok\n");
        assert_eq!(
            chroot_says(m.path(), "/bin/sh", "cat /etc/motd"),
            "hello from a rootpack image\n"
        );
        for dir in ["proc", "sys", "dev", "run"] {
            assert!(m.path().join(dir).is_dir(), "{dir} missing");
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(m.path().join("tmp"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        // The host's merged-/usr layout is kept: /bin is a symlink, not a folder.
        assert!(
            fs::symlink_metadata(m.path().join("bin"))
                .unwrap()
                .is_symlink()
        );
        trees.push(
            snapshot(
                m.path(),
                &SnapshotOptions {
                    owners: true,
                    dir_mtimes: true,
                    symlink_mtimes: true,
                },
            )
            .nodes,
        );
        drop(m);
        assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
    }
    // Both methods give the same tree, down to metadata.
    assert!(trees[0] == trees[1], "populate and mount trees differ");
}

#[test]
fn image_tree_equals_the_staging_tree() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layer = w.join("layer");
    make_tree(&layer);
    let text = format!(
        "name = \"tree\"\nsource_date_epoch = 1700000000\n[[layer]]\ndir = \"{}\"\n[output]\nformat = \"FORMAT\"\n",
        layer.display()
    );
    fs::write(w.join("dir.toml"), text.replace("FORMAT", "dir")).unwrap();
    fs::write(w.join("ext4.toml"), text.replace("FORMAT", "ext4")).unwrap();
    build(&w.join("dir.toml"), &w.join("out"), &[]);
    let opts = SnapshotOptions {
        owners: true,
        dir_mtimes: true,
        symlink_mtimes: true,
    };
    let mut a = snapshot(&w.join("out/tree"), &opts).nodes;
    a.remove(Path::new("lost+found"));
    // The reproducible method (a source date epoch selects populate) and the default
    // without one (auto selects mount, filling the mounted image directly).
    let no_epoch = text
        .replace("FORMAT", "ext4")
        .replace("source_date_epoch = 1700000000\n", "");
    fs::write(w.join("auto.toml"), no_epoch).unwrap();
    let mut m = None;
    for (recipe, method) in [("ext4.toml", "populate"), ("auto.toml", "mount")] {
        let out = build(&w.join(recipe), &w.join("out"), &["--json"]);
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(manifest["build"]["method"], method);
        let image = w.join("out/tree.ext4");
        fsck(&image);
        drop(m.take());
        let mounted = Mounted::new(&image);
        let mut b = snapshot(mounted.path(), &opts).nodes;
        b.remove(Path::new("lost+found"));
        for (path, node) in &a {
            assert_eq!(
                Some(node),
                b.get(path),
                "{method}: {} differs",
                path.display()
            );
        }
        assert_eq!(a.len(), b.len(), "{method}");
        m = Some(mounted);
    }
    let m = m.unwrap();
    // Hard links, setuid, devices, fifo and the non-UTF-8 name made it into the image.
    let hard = fs::metadata(m.path().join("etc/hard1")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(hard.nlink(), 3);
    assert_eq!(
        fs::metadata(m.path().join("usr/bin/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(m.path().join("dev/null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
}

#[test]
fn builds_are_reproducible() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for (name, extra) in [("hello.toml", vec![]), ("busybox.toml", vec![])] {
        let mut digests = Vec::new();
        for i in 0..2 {
            let out = work.path().join(format!("{name}-{i}"));
            let json = build(&recipe(name), &out, &[&["--json"][..], &extra[..]].concat()).stdout;
            let m: serde_json::Value = serde_json::from_slice(&json).unwrap();
            digests.push(m["sha256"].as_str().unwrap().to_string());
            // Read from mke2fs's own output: "1.47.0" and the like.
            let e2fs = m["build"]["e2fsprogs"].as_str().unwrap_or_default();
            assert!(e2fs.split('.').count() == 3, "e2fsprogs {e2fs:?}");
            // Reading the tree between builds must not matter (atime).
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        assert_eq!(digests[0], digests[1], "{name} is not reproducible");
    }
    // And for an archive output, with SOURCE_DATE_EPOCH from the environment.
    let r = work.path().join("cpio.toml");
    fs::write(
        &r,
        fs::read_to_string(recipe("busybox.toml"))
            .unwrap()
            .replace("[config]", "[output]\nformat = \"cpio.zst\"\n\n[config]"),
    )
    .unwrap();
    let a = run(rootpack()
        .arg("build")
        .arg(&r)
        .arg("--out")
        .arg(work.path().join("a"))
        .env("SOURCE_DATE_EPOCH", "1600000000"));
    let b = run(rootpack()
        .arg("build")
        .arg(&r)
        .arg("--out")
        .arg(work.path().join("b"))
        .env("SOURCE_DATE_EPOCH", "1600000000"));
    assert!(a.status.success() && b.status.success());
    assert_eq!(
        fs::read(work.path().join("a/busybox.cpio.zst")).unwrap(),
        fs::read(work.path().join("b/busybox.cpio.zst")).unwrap()
    );
    let listed = run(rootpack()
        .arg("ls")
        .arg(work.path().join("a/busybox.cpio.zst")))
    .stdout;
    assert!(String::from_utf8_lossy(&listed).contains("usr/bin/busybox"));
}

#[test]
fn busybox_and_initramfs_recipes_build() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    build(&recipe("busybox.toml"), &w.join("out"), &[]);
    let image = w.join("out/busybox.ext4");
    fsck(&image);
    {
        let m = Mounted::new(&image);
        assert_eq!(
            chroot_says(
                m.path(),
                "/bin/sh",
                "echo ok; hostname >/dev/null; seq 3 | wc -l"
            )
            .trim(),
            "ok\n3"
        );
    }
    // The classic flow, on this host's initrd or, without one, a small synthetic one made here.
    let host = format!(
        "/boot/initrd.img-{}",
        String::from_utf8(run(Command::new("uname").arg("-r")).stdout)
            .unwrap()
            .trim()
    );
    let initrd = if Path::new(&host).exists() {
        PathBuf::from(host)
    } else {
        let img = w.join("initrd.img");
        run(Command::new("bash")
            .arg(Path::new(REPO).join("bench/make-initrd.sh"))
            .arg(&img)
            .env("MAKE_INITRD_SYNTHETIC", "1")
            .env("INITRD_BYTES", "20000000")
            .env("INITRD_ENTRIES", "400"));
        img
    };
    let text = fs::read_to_string(recipe("initramfs.toml")).unwrap();
    let r = w.join("initramfs.toml");
    fs::write(
        &r,
        text.replace("/boot/initrd.img-{latest}", initrd.to_str().unwrap()),
    )
    .unwrap();
    let out = build(&r, &w.join("out"), &["--json"]);
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["build"]["layers"][0]["kind"], "initramfs");
    assert_eq!(
        m["build"]["layers"][0]["sha256"].as_str().unwrap().len(),
        64
    );
    let image = w.join("out/initramfs.ext4");
    fsck(&image);
    let mounted = Mounted::new(&image);
    assert_eq!(chroot_says(mounted.path(), "/bin/bash", "echo ok"), "ok\n");
    assert!(
        mounted.path().join("usr/bin/busybox").exists(),
        "the initrd's content is missing"
    );
    let listed = String::from_utf8(run(rootpack().arg("inspect").arg(&image)).stdout).unwrap();
    assert!(listed.contains("verified:   sha256 matches"), "{listed}");
}

#[test]
fn inspect_detects_a_modified_image() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    build(&recipe("busybox.toml"), work.path(), &[]);
    let image = work.path().join("busybox.ext4");
    let mut bytes = fs::read(&image).unwrap();
    bytes[5000] ^= 1;
    fs::write(&image, bytes).unwrap();
    let out = rootpack().arg("inspect").arg(&image).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sha256 mismatch"));
}

#[test]
fn bad_recipes_name_the_key_and_line() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let cases = [
        (
            "name = \"x\"\n[output]\nformat = \"ext5\"\n",
            ":3: output.format = \"ext5\": one of ext4",
        ),
        ("name = \"x\"\nbogus = 1\n", ":2: unknown field `bogus`"),
        (
            "name = \"x\"\n[[layer]]\ninitramfs = \"nope.img\"\n",
            ":3: layer.initramfs = \"nope.img\": ",
        ),
        (
            "name = \"x\"\n[[binary]]\npath = \"no-such-program-here\"\n",
            ":3: binary.path = \"no-such-program-here\": not found in PATH",
        ),
        (
            "name = \"x\"\n[limits]\nmemory = \"lots\"\n",
            ":3: limits.memory = \"lots\"",
        ),
        (
            "name = \"x\"\n[[layer]]\n",
            ":2: [[layer]] needs exactly one of initramfs, tar, dir or oci",
        ),
    ];
    for (text, want) in cases {
        let r = w.join("bad.toml");
        fs::write(&r, text).unwrap();
        let out = rootpack()
            .arg("build")
            .arg(&r)
            .arg("--out")
            .arg(w.join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("bad.toml{want}")),
            "want {want:?} in {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            !w.join("out").exists(),
            "a bad recipe created the output folder"
        );
    }
}

#[test]
fn failures_leave_nothing_behind_and_keep_the_previous_image() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = w.join("out");
    build(&recipe("busybox.toml"), &out, &["--method", "mount"]);
    let previous = fs::read(out.join("busybox.ext4")).unwrap();

    // mkfs fails: a mke2fs that refuses.
    let fake = w.join("fakebin");
    fs::create_dir(&fake).unwrap();
    fs::write(fake.join("mke2fs"), "#!/bin/sh\n[ \"$1\" = -V ] && exec /sbin/mke2fs -V\necho 'mke2fs: no space on device' >&2; exit 1\n").unwrap();
    run(Command::new("chmod").arg("+x").arg(fake.join("mke2fs")));
    for method in ["populate", "mount"] {
        let o = rootpack()
            .arg("build")
            .arg(recipe("busybox.toml"))
            .arg("--out")
            .arg(&out)
            .args(["--method", method])
            .env(
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", fake.display()),
            )
            .output()
            .unwrap();
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("mke2fs failed") && err.contains("no space on device"),
            "{err}"
        );
        assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
        assert_eq!(fs::read(out.join("busybox.ext4")).unwrap(), previous);
    }

    // ENOSPC: an output folder on a 3 MiB tmpfs.
    let small = w.join("small");
    fs::create_dir(&small).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&small));
    fs::write(small.join("busybox.ext4"), b"previous").unwrap();
    let o = rootpack()
        .arg("build")
        .arg(recipe("busybox.toml"))
        .arg("--out")
        .arg(&small)
        .output()
        .unwrap();
    let err = String::from_utf8(o.stderr).unwrap();
    let left = build_leaks(&small);
    let kept = fs::read(small.join("busybox.ext4")).unwrap();
    run(Command::new("umount").arg(&small));
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left on device") || err.contains("space"),
        "{err}"
    );
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(kept, b"previous");
}

/// A recipe big enough that signals land mid-build: a dir layer of ~60 MB.
fn big_recipe(w: &Path, method: &str) -> PathBuf {
    let layer = w.join("big");
    if !layer.exists() {
        fs::create_dir(&layer).unwrap();
        for i in 0..60 {
            fs::write(layer.join(format!("f{i}")), vec![i as u8; 1 << 20]).unwrap();
        }
    }
    let r = w.join(format!("big-{method}.toml"));
    fs::write(
        &r,
        format!(
            "name = \"big\"\n[[layer]]\ndir = \"{}\"\n[output]\nmethod = \"{method}\"\n",
            layer.display()
        ),
    )
    .unwrap();
    r
}

#[test]
fn interrupts_and_kill_9_leave_nothing_behind() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let out = w.join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("big.ext4"), b"previous").unwrap();
    for method in ["mount", "populate"] {
        let r = big_recipe(w, method);
        let mut interrupted = 0;
        // A build of this tree takes about 100 ms here: interrupt it well inside that.
        for delay_ms in [5, 15, 35, 60] {
            for signal in ["INT", "TERM"] {
                let child = rootpack()
                    .arg("build")
                    .arg(&r)
                    .arg("--out")
                    .arg(&out)
                    .spawn()
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                run(Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(child.id().to_string()));
                let status = child.wait_with_output().unwrap().status;
                if status.success() {
                    // The build won the race; put the previous image back.
                    fs::write(out.join("big.ext4"), b"previous").unwrap();
                } else {
                    interrupted += 1;
                    let want = if signal == "INT" { 130 } else { 143 };
                    assert_eq!(
                        status.code(),
                        Some(want),
                        "{method} {signal} after {delay_ms}ms"
                    );
                    assert_eq!(fs::read(out.join("big.ext4")).unwrap(), b"previous");
                }
                assert!(
                    build_leaks(&out).is_empty(),
                    "{method} {signal} {delay_ms}ms: {:?}",
                    build_leaks(&out)
                );
            }
        }
        assert!(
            interrupted >= 4,
            "{method}: only {interrupted} of 8 builds were interrupted"
        );
    }
    // kill -9 in the middle of the mount method's copy leaves a mount, a loop device and
    // temporaries; the next build removes them.
    let r = big_recipe(w, "mount");
    let mut child = rootpack()
        .arg("build")
        .arg(&r)
        .arg("--out")
        .arg(&out)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !build_leaks(&out).iter().any(|l| l.starts_with("mount"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !build_leaks(&out).is_empty(),
        "kill -9 left nothing: the test did not hit the copy"
    );
    // A planted symlink with a temporary's name is only unlinked, never followed.
    let victim = w.join("victim");
    fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, out.join(".evil.rootpack-tmp-999999999")).unwrap();
    let o = build(&r, &out, &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("left by an interrupted build"));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert!(fs::symlink_metadata(out.join(".evil.rootpack-tmp-999999999")).is_err());
    assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
    fsck(&out.join("big.ext4"));
}

// A full output filesystem is refused up front with the space it lacks (not an ext4
// remounted read-only by the loop device's write errors), and nothing is left in it.
#[test]
fn no_space_for_the_image_is_said_up_front() {
    if !require_root() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1M tmpfs {out} && {rp} build -q {recipe} --method mount --out {out}; \
         echo \"status $?\"; ls -A {out}",
        out = out.path().display(),
        rp = rootpack().get_program().to_string_lossy(),
        recipe = std::path::Path::new(REPO)
            .join("recipes/busybox.toml")
            .display(),
    );
    let o = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "status 1\n", "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("No space left on device: 1048576 bytes free"),
        "{err}"
    );
}

/// The manifest's file count is the image's entries but its root, whichever method filled
/// it (mke2fs's `lost+found` included both ways).
#[test]
fn both_methods_count_the_same_files() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    for method in ["populate", "mount"] {
        let out = w.path().join(method);
        build(&recipe("busybox.toml"), &out, &["-q", "--method", method]);
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join("busybox.json")).unwrap()).unwrap();
        let files = manifest["build"]["files"].as_u64().unwrap();
        let mounted = Mounted::new(&out.join("busybox.ext4"));
        let entries = walkdir::WalkDir::new(mounted.path()).into_iter().count() - 1;
        assert_eq!(files, entries as u64, "{method}");
        counts.push(files);
    }
    assert_eq!(counts[0], counts[1]);
}

/// Free blocks and the block count of an ext4 image, from its superblock.
fn free_and_total(image: &Path) -> (u64, u64) {
    let o = run(Command::new("dumpe2fs").arg("-h").arg(image));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let field = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        line.split(':').nth(1).unwrap().trim().parse().unwrap()
    };
    let block = field("Block size:");
    (field("Free blocks:") * block, field("Block count:") * block)
}

/// `size = "auto"` leaves 10 % of the file system free after the build (a root file system
/// nearly full after `apt-get install` fails the next one), or what `free` says, measured
/// on the image: for content the estimate sizes (both methods) and for a step's (sized
/// after the steps).
#[test]
fn auto_sized_images_leave_room_free() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let data = w.path().join("tree/data");
    fs::create_dir_all(&data).unwrap();
    // 160 MB, so the fixed part of the sizing (journal, metadata) is small beside it: the
    // old sizing left 7 % free here. Not zeros: mke2fs -d would leave holes for them.
    let mut bytes: Vec<u8> = (0..4_000_000u32).map(|n| (n * 7) as u8 | 1).collect();
    for i in 0..40u8 {
        bytes[0] = i;
        fs::write(data.join(format!("f{i}")), &bytes).unwrap();
    }
    let write = |name: &str, extra: &str| {
        let text = format!(
            "name = \"{name}\"\nsource_date_epoch = 1700000000\n\
             [[layer]]\ndir = \"tree\"\n[[dir]]\npath = \"/srv\"\n{extra}"
        );
        let path = w.path().join(format!("{name}.toml"));
        fs::write(&path, text).unwrap();
        path
    };
    let cases = [
        ("dflt", "", 10),
        ("third", "[output]\nfree = \"30%\"\n", 30),
        ("fixed", "[output]\nfree = \"64M\"\n", 0),
    ];
    for (name, extra, percent) in cases {
        for method in ["populate", "mount"] {
            let out = w.path().join(method);
            build(&write(name, extra), &out, &["-q", "--method", method]);
            let image = out.join(format!("{name}.ext4"));
            fsck(&image);
            let (free, total) = free_and_total(&image);
            assert!(
                free * 100 >= total * percent,
                "{name} {method}: {free} of {total}"
            );
            if name == "fixed" {
                assert!(free >= 64 << 20, "{method}: {free} free");
            }
        }
    }
    // A step's 160 MB, written after the estimate: the image is sized after the steps.
    let busybox = fs::read_to_string(recipe("busybox.toml")).unwrap();
    let text = busybox.replace("name = \"busybox\"", "name = \"grown\"")
        + "\n[[run]]\nscript = \"busybox dd if=/dev/urandom of=/big bs=1M count=160\"\n";
    let r = w.path().join("grown.toml");
    fs::write(&r, text).unwrap();
    build(&r, &w.path().join("out"), &["-q"]);
    let (free, total) = free_and_total(&w.path().join("out/grown.ext4"));
    assert!(total > 160 << 20 && free * 10 >= total, "{free} of {total}");
}
