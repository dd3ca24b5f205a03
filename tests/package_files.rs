//! What package managers leave after `[[run]]` steps (issue 23), through the real binary,
//! on busybox images whose steps write the files apt, dpkg and ldconfig write, with data
//! that differs on every run: removed, so two builds give the same bytes, cached or not;
//! kept with `package_files = "keep"`; a step's symlinks never lead the removal to the
//! host. And a step's read-write mount whose host folder is missing gets one.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The six files an `apt-get install` step leaves that depend on the clock and the host.
const APT_FILES: [&str; 6] = [
    "/var/cache/apt/pkgcache.bin",
    "/var/cache/apt/srcpkgcache.bin",
    "/var/cache/ldconfig/aux-cache",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/log/dpkg.log",
];

/// The busybox tree of the example recipe, without its steps, named `name`, then `extra`.
fn recipe(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox-steps.toml")).unwrap();
    let head = text.split("\n[[run]]").next().unwrap();
    let text = head.replace("name = \"busybox-steps\"", &format!("name = \"{name}\""));
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

/// A step writing each of [`APT_FILES`] with the time and a random id, as apt would.
fn apt_like_step() -> String {
    let files = APT_FILES.join(" ");
    format!(
        "[[run]]\nscript = \"\"\"\n\
         for f in {files}; do\n\
           mkdir -p ${{f%/*}}\n\
           echo \"$(busybox date) $(cat /proc/sys/kernel/random/uuid)\" > $f\n\
         done\n\
         echo mine > /var/log/app.log\n\
         \"\"\"\n"
    )
}

fn build(recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = build_ok(recipe, out, extra);
    assert!(build_leaks(out).is_empty(), "{:?}", build_leaks(out));
    o
}

fn debugfs(image: &Path, request: &str) -> String {
    let o = run(Command::new("debugfs").arg("-R").arg(request).arg(image));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether `path` is in the image (debugfs says "File not found" otherwise).
fn exists(image: &Path, path: &str) -> bool {
    let o = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(image));
    !String::from_utf8_lossy(&o.stderr).contains("not found")
}

#[test]
fn clock_dependent_files_are_removed_and_builds_are_the_same_bytes() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let r = recipe(w.path(), "apt", &apt_like_step());
    let image = |out: &str| fs::read(w.path().join(out).join("apt.ext4")).unwrap();
    let o = build(&r, &w.path().join("a"), &[]);
    assert!(
        stderr(&o).contains(
            "rootpack: removed 6 package manager files that depend on the clock or the host \
             (-v lists them; keep them: [output] package_files = \"keep\")"
        ),
        "{}",
        stderr(&o)
    );
    let o = build(&r, &w.path().join("b"), &["-v"]);
    for f in APT_FILES {
        assert!(
            stderr(&o).contains(&format!("removed {f}\n")),
            "{}",
            stderr(&o)
        );
    }
    assert!(image("a") == image("b"), "two builds differ");
    // Through the cache: the step's state stored, then restored; the same image.
    let cache = w.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    build(&r, &w.path().join("c"), &["-q", "--cache", cache_arg]);
    let o = build(&r, &w.path().join("d"), &["--cache", cache_arg]);
    assert!(
        stderr(&o).contains("cached: layers, step 1"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("removed 6 package manager files"));
    assert!(image("c") == image("a") && image("d") == image("a"));
    let a = w.path().join("a/apt.ext4");
    for f in APT_FILES {
        assert!(!exists(&a, f), "{f} is in the image");
    }
    // The folders stay, and what is not the package managers'.
    assert!(exists(&a, "/var/log/apt") && exists(&a, "/var/cache/ldconfig"));
    assert_eq!(debugfs(&a, "cat /var/log/app.log"), "mine\n");
}

#[test]
fn package_files_keep_keeps_them_and_the_builds_differ() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let extra = apt_like_step() + "\n[output]\npackage_files = \"keep\"\n";
    let r = recipe(w.path(), "kept", &extra);
    let o = build(&r, &w.path().join("a"), &[]);
    assert!(!stderr(&o).contains("package manager"), "{}", stderr(&o));
    build(&r, &w.path().join("b"), &["-q"]);
    let (a, b) = (w.path().join("a/kept.ext4"), w.path().join("b/kept.ext4"));
    for f in APT_FILES {
        assert!(exists(&a, f), "{f} was removed");
    }
    assert!(fs::read(&a).unwrap() != fs::read(&b).unwrap());
}

#[test]
fn symlinks_a_step_made_never_lead_the_removal_out_of_the_tree() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let host = w.path().join("host");
    fs::create_dir(&host).unwrap();
    for f in [
        "dpkg.log",
        "history.log",
        "term.log",
        "pkgcache.bin",
        "aux-cache",
    ] {
        fs::write(host.join(f), "the host's\n").unwrap();
    }
    fs::create_dir(host.join("apt")).unwrap();
    fs::write(host.join("apt/term.log"), "the host's\n").unwrap();
    let h = host.display();
    // /var/log: the host's folder by its absolute path; /var/cache/apt: by enough `..`
    // to leave any root; aux-cache itself: a symlink to a host file.
    let step = format!(
        "[[run]]\nscript = \"\"\"\n\
         mkdir -p /var/cache/ldconfig\n\
         busybox ln -s {h} /var/log\n\
         busybox ln -s ../../../../../../../../../../..{h} /var/cache/apt\n\
         busybox ln -s {h}/aux-cache /var/cache/ldconfig/aux-cache\n\
         \"\"\"\n"
    );
    let r = recipe(w.path(), "hostile", &step);
    for method in ["populate", "mount"] {
        let out = w.path().join(method);
        build(&r, &out, &["-q", "--method", method]);
        for f in [
            "dpkg.log",
            "history.log",
            "pkgcache.bin",
            "aux-cache",
            "apt/term.log",
        ] {
            assert_eq!(
                fs::read_to_string(host.join(f)).unwrap(),
                "the host's\n",
                "{method}: the host's {f}"
            );
        }
        let image = out.join("hostile.ext4");
        // The symlinks the step made are left, but for the one named like a cache file.
        assert!(exists(&image, "/var/log") && exists(&image, "/var/cache/apt"));
        assert!(!exists(&image, "/var/cache/ldconfig/aux-cache"));
    }
}

#[test]
fn a_missing_read_write_mount_source_is_made_and_a_read_only_one_is_an_error() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let step = "[[run]]\nmounts = [\"cache/apt:/var/cache/apt/archives\"]\n\
                script = \"echo deb > /var/cache/apt/archives/a.deb\"\n";
    let r = recipe(w.path(), "cachemount", step);
    build(&r, &w.path().join("out"), &["-q"]);
    let made = w.path().join("cache/apt");
    assert_eq!(fs::read_to_string(made.join("a.deb")).unwrap(), "deb\n");
    let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    // Read-only: the source is what the step reads, so it must be there.
    let step = "[[run]]\nmounts = [\"missing:/opt/src:ro\"]\nscript = \"true\"\n";
    // A build that must fail: what it said.
    let refused = |r: &Path, extra: &[&str]| {
        let o = rootpack()
            .arg("build")
            .args(extra)
            .arg(r)
            .arg("--out")
            .arg(w.path().join("out"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        stderr(&o)
    };
    let e = refused(&recipe(w.path(), "romount", step), &[]);
    assert!(
        e.contains("run.mounts = \"missing\"") && e.contains("does not exist"),
        "{e}"
    );
    assert!(!w.path().join("missing").exists());
    // --untrusted makes every mount read-only: a missing one is refused, never made.
    let step = "[[run]]\nmounts = [\"fresh:/opt/cache\"]\nscript = \"true\"\n";
    let e = refused(&recipe(w.path(), "untrusted", step), &["--untrusted"]);
    assert!(e.contains("mounts"), "{e}");
    assert!(!w.path().join("fresh").exists());
}
