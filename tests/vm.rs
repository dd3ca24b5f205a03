//! `[modules]` and `rootpack boot` (issue 21): the shipped boot-initramfs recipe with a
//! real kernel's modules, read back by initramfs-tools and compared with modprobe; the
//! busybox image booted under qemu (TCG) with a command whose exit status comes back; a
//! missing dependency named; a compressed module kept; a corrupt image refused before qemu
//! starts; a hanging guest stopped by `--timeout` with nothing left.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kernel::*;
use common::*;

/// The kernel with its modules, or None after saying why (a failure under CI).
fn kernel_or_skip() -> Option<(PathBuf, PathBuf, String)> {
    if !has_program(QEMU) {
        unavailable(&format!(
            "{QEMU} not installed (apt-get install qemu-system-x86)"
        ));
        return None;
    }
    match kernel_with_modules() {
        Ok(k) => Some(k),
        Err(why) => {
            unavailable(&why);
            None
        }
    }
}

/// The shipped recipe and its init in `w`, its modules from `modules` (a root or a
/// module folder).
fn initramfs_recipe(w: &Path, modules: &Path) -> PathBuf {
    let text = fs::read_to_string(Path::new(REPO).join("recipes/boot-initramfs.toml"))
        .unwrap()
        .replace(
            "kernel = \"{latest}\"",
            &format!("kernel = \"{}\"", modules.display()),
        );
    fs::copy(
        Path::new(REPO).join("recipes/boot-init.sh"),
        w.join("boot-init.sh"),
    )
    .unwrap();
    let p = w.join("boot-initramfs.toml");
    fs::write(&p, text).unwrap();
    p
}

fn build(recipe: &Path, out: &Path) -> std::process::Output {
    rootpack()
        .args(["build", "-q"])
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// The module files below `lib/modules/RELEASE` in a listing, by name.
fn module_names(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|l| l.contains(".ko"))
        .map(|l| {
            let file = l.rsplit('/').next().unwrap();
            file.split(".ko").next().unwrap().replace('-', "_")
        })
        .collect()
}

/// The lists depmod reads besides the modules, from one module folder to another.
fn copy_lists(from: &Path, to: &Path) {
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// A module folder under `w` made by depmod -b, its `kernel/` a symlink to the kernel's.
fn indexed_root(w: &Path, root: &Path, release: &str) -> PathBuf {
    let idx = w.join("index");
    let dir = idx.join("lib/modules").join(release);
    fs::create_dir_all(&dir).unwrap();
    let src = root.join("lib/modules").join(release);
    std::os::unix::fs::symlink(src.join("kernel"), dir.join("kernel")).unwrap();
    copy_lists(&src, &dir);
    run(Command::new("depmod").arg("-b").arg(&idx).arg(release));
    idx
}

#[test]
fn the_initramfs_holds_what_modprobe_lists_and_initramfs_tools_read_it() {
    let Some((_, root, release)) = kernel_or_skip() else {
        return;
    };
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    let out = build(&initramfs_recipe(w, &root), &w.join("images"));
    assert!(out.status.success(), "{}", stderr(&out));
    let initrd = w.join("images/boot-initramfs.cpio.zst");
    let listed = stdout(&run(Command::new("lsinitramfs").arg(&initrd)));
    let ours = module_names(&listed);
    // modprobe's own answer for the same names, soft dependencies included.
    let idx = indexed_root(w, &root, &release);
    let mut theirs = BTreeSet::new();
    for name in ["virtio_blk", "virtio_pci", "virtio_mmio", "ext4"] {
        let o = run(Command::new("modprobe").arg("-d").arg(&idx).args([
            "-S",
            &release,
            "--show-depends",
            name,
        ]));
        theirs.extend(module_names(&stdout(&o)));
    }
    assert_eq!(
        ours, theirs,
        "the initramfs's modules against modprobe --show-depends"
    );
    // ext4's soft dependency (crc32c) is there.
    assert!(ours.iter().any(|m| m.starts_with("crc32c")), "{ours:?}");
    // unmkinitramfs unpacks it, with an index modprobe reads.
    let x = w.join("x");
    run(Command::new("unmkinitramfs").arg(&initrd).arg(&x));
    let dep = fs::read_to_string(x.join(format!("usr/lib/modules/{release}/modules.dep")))
        .or_else(|_| fs::read_to_string(x.join(format!("lib/modules/{release}/modules.dep"))))
        .unwrap();
    assert!(dep.contains("kernel/fs/ext4/ext4.ko:"), "{dep}");
    let load = fs::read_to_string(x.join("etc/modules-load.d/rootpack.conf")).unwrap();
    assert!(load.lines().any(|l| l == "virtio_blk"), "{load}");
    // inspect names the kernel.
    let shown = stdout(&run(rootpack().arg("inspect").arg(&initrd)));
    assert!(shown.contains(&release), "{shown}");
}

/// A module folder with ext4 and what it needs, copied, indexed, then changed by `edit`.
fn small_module_folder(w: &Path, root: &Path, release: &str, edit: &str) -> PathBuf {
    let src = root.join("lib/modules").join(release);
    let dir = w.join("small/lib/modules").join(release);
    for m in [
        "fs/ext4/ext4.ko",
        "fs/jbd2/jbd2.ko",
        "fs/mbcache.ko",
        "lib/crc16.ko",
        "drivers/block/virtio_blk.ko",
        "drivers/virtio/virtio.ko",
        "drivers/virtio/virtio_ring.ko",
        "drivers/virtio/virtio_pci.ko",
        "drivers/virtio/virtio_pci_legacy_dev.ko",
        "drivers/virtio/virtio_pci_modern_dev.ko",
        "drivers/virtio/virtio_mmio.ko",
        "crypto/crc32c_generic.ko",
    ] {
        let to = dir.join("kernel").join(m);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(src.join("kernel").join(m), &to).unwrap();
    }
    copy_lists(&src, &dir);
    sh(&dir, edit);
    run(Command::new("depmod")
        .arg("-b")
        .arg(w.join("small"))
        .arg(release));
    dir
}

#[test]
fn a_missing_dependency_is_named_and_compressed_modules_are_kept() {
    let Some((_, root, release)) = kernel_or_skip() else {
        return;
    };
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    // Indexed with crc16 present, then crc16 removed: ext4 needs it.
    let dir = small_module_folder(w, &root, &release, "true");
    fs::remove_file(dir.join("kernel/lib/crc16.ko")).unwrap();
    let recipe = w.join("m.toml");
    let text = |names: &str| {
        format!(
            "name = \"m\"\n[modules]\nkernel = \"{}\"\nnames = [{names}]\n[output]\nformat = \"cpio\"\n",
            dir.display()
        )
    };
    fs::write(&recipe, text("\"ext4\"")).unwrap();
    let o = build(&recipe, &w.join("out"));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("m.toml:2") && e.contains("module ext4 needs kernel/lib/crc16.ko"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    // A name the kernel does not have.
    fs::write(&recipe, text("\"no_such_module\"")).unwrap();
    let e = stderr(&build(&recipe, &w.join("out")));
    assert!(
        e.contains("module no_such_module: not a module of kernel"),
        "{e}"
    );
    // An xz-compressed module stays as it is, and its dependencies come with it.
    fs::remove_dir_all(w.join("small")).unwrap();
    small_module_folder(w, &root, &release, "xz kernel/drivers/block/virtio_blk.ko");
    fs::write(&recipe, text("\"virtio_blk\"")).unwrap();
    let o = build(&recipe, &w.join("out"));
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = stdout(&run(rootpack().arg("ls").arg(w.join("out/m.cpio"))));
    assert!(
        listed.contains("kernel/drivers/block/virtio_blk.ko.xz"),
        "{listed}"
    );
    assert!(
        listed.contains("kernel/drivers/virtio/virtio_ring.ko"),
        "{listed}"
    );
    assert!(!listed.contains("ext4"), "{listed}");
    // And the shipped initramfs made from that folder boots, the module loaded.
    let Some((kernel, _, _)) = kernel_or_skip() else {
        return;
    };
    let image = images(w, &w.join("small"));
    let o = boot(
        &kernel,
        &image,
        &["--timeout", "200s"],
        &["sh", "-c", "grep -c '^virtio_blk ' /proc/modules"],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).lines().any(|l| l.trim() == "1"),
        "{}",
        stdout(&o)
    );
}

/// The busybox image and the boot initramfs in `w/images`.
fn images(w: &Path, root: &Path) -> PathBuf {
    let images = w.join("images");
    let o = build(&Path::new(REPO).join("recipes/busybox.toml"), &images);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = build(&initramfs_recipe(w, root), &images);
    assert!(o.status.success(), "{}", stderr(&o));
    images.join("busybox.ext4")
}

fn boot(kernel: &Path, image: &Path, extra: &[&str], command: &[&str]) -> std::process::Output {
    rootpack()
        .args(["boot", "--accel", "tcg", "-m", "256M"])
        .arg("--kernel")
        .arg(kernel)
        .args(extra)
        .arg(image)
        .arg("--")
        .args(command)
        .output()
        .unwrap()
}

fn qemu_running(image: &Path) -> bool {
    Command::new("pgrep")
        .arg("-f")
        .arg(format!("file={}", image.display()))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_booted_image_runs_the_command_and_gives_its_status() {
    let Some((kernel, root, _)) = kernel_or_skip() else {
        return;
    };
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    let image = images(w, &root);
    let started = Instant::now();
    // The root by its label (the image's name), over the default /dev/vda.
    let o = boot(
        &kernel,
        &image,
        &["--timeout", "200s", "--append", "root=LABEL=busybox"],
        &[
            "sh",
            "-c",
            "awk '$2 == \"/\" {print \"ROOT \" $3}' /proc/mounts; echo 'MARK it'\\''s'; exit 3",
        ],
    );
    let out = stdout(&o);
    eprintln!(
        "booted in {:.1}s:\n{out}\n{}",
        started.elapsed().as_secs_f64(),
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(3), "{out}\n{}", stderr(&o));
    assert!(out.lines().any(|l| l.trim() == "ROOT ext4"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "MARK it's"), "{out}");
    assert!(!out.contains("rootpack-exit-status"), "{out}");
    assert!(stderr(&o).contains("under TCG"), "{}", stderr(&o));
    // The disk was a snapshot: the image is as built.
    run(rootpack().arg("inspect").arg(&image));
    // --writable changes it, and the manifest follows: the next boot accepts it.
    let o = boot(
        &kernel,
        &image,
        &["--timeout", "200s", "--writable"],
        &["sh", "-c", "echo written > /kept; sync"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = boot(&kernel, &image, &["--timeout", "200s"], &["cat", "/kept"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).lines().any(|l| l.trim() == "written"),
        "{}",
        stdout(&o)
    );
    let shown = stdout(&run(rootpack().arg("inspect").arg(&image)));
    assert!(shown.contains("modified"), "{shown}");
}

#[test]
fn a_corrupt_image_is_refused_before_qemu_and_a_hanging_guest_is_stopped() {
    let Some((kernel, root, _)) = kernel_or_skip() else {
        return;
    };
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    let image = images(w, &root);
    // A guest that never ends: stopped at the timeout, exit 124, nothing left.
    let started = Instant::now();
    let o = boot(&kernel, &image, &["--timeout", "30s"], &["sleep", "1000"]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("did not finish within 30s"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!qemu_running(&image));
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("rootpack-boot"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // One flipped byte: refused at once, naming the digest.
    let mut bytes = fs::read(&image).unwrap();
    bytes[2 << 20] ^= 1;
    fs::write(&image, bytes).unwrap();
    let started = Instant::now();
    let o = boot(&kernel, &image, &[], &["true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sha256"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(5));
}
