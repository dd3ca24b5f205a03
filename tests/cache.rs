//! The build cache (issue 20), through the real binary: each input kind rebuilds exactly
//! the states it feeds and the image equals an uncached build byte for byte; a build with
//! nothing changed is up to date; corrupt, truncated and unstorable entries are warned
//! about and built around; parallel builds share one cache; export and import carry it.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A recipe of a folder layer, a tar layer (made by GNU tar), an injected program, a host
/// file and two steps, in `w`, with its inputs.
fn setup(w: &Path) -> PathBuf {
    let base = w.join("base");
    fs::create_dir_all(base.join("bin")).unwrap();
    fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    for a in ["sh", "echo", "rm", "mkdir", "cat", "ln"] {
        std::os::unix::fs::symlink("busybox", base.join("bin").join(a)).unwrap();
    }
    let extra = w.join("extra");
    fs::create_dir_all(extra.join("etc")).unwrap();
    fs::write(extra.join("etc/layer.txt"), "layer 1\n").unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(&extra)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(w.join("extra.tar"))
        .arg("."));
    fs::copy("/bin/busybox", w.join("tool")).unwrap();
    fs::write(w.join("motd"), "hello\n").unwrap();
    fs::write(w.join("late"), "late 1\n").unwrap();
    recipe(w, "step one", "A")
}

/// The recipe with step 2's script saying `two` and step 1's env `V`.
fn recipe(w: &Path, two: &str, v: &str) -> PathBuf {
    let text = format!(
        r#"name = "cached"
source_date_epoch = 1700000000
[[layer]]
dir = "base"
[[layer]]
tar = "extra.tar"
[[binary]]
path = "{tool}"
to = "/usr/bin/tool"
[[file]]
to = "/etc/motd"
from = "motd"
[[file]]
to = "/etc/late"
from = "late"
after_steps = true
[[run]]
env = {{ V = "{v}" }}
script = "[ ! -e /etc/late ]; echo $V > /one; rm /bin/cat; mkdir -p /d/e; echo x > /d/e/f; ln /one /one.link"
[[run]]
script = "echo '{two}' > /two; rm -r /d/e"
[output]
format = "tar"
"#,
        tool = w.join("tool").display()
    );
    let p = w.join("cached.toml");
    fs::write(&p, text).unwrap();
    p
}

use common::build_ok as build;

/// Builds with the cache at `cache` into a fresh folder, and without any cache; checks
/// the two images are the same bytes; gives what the cached build said of the cache.
fn cached_equals_uncached(w: &Path, cache: &Path, n: usize) -> String {
    let recipe = w.join("cached.toml");
    let out = w.join(format!("out{n}"));
    let o = build(&recipe, &out, &["--cache", cache.to_str().unwrap()]);
    let plain = w.join(format!("plain{n}"));
    build(&recipe, &plain, &["--no-cache"]);
    let a = fs::read(out.join("cached.tar")).unwrap();
    let b = fs::read(plain.join("cached.tar")).unwrap();
    assert!(
        a == b,
        "build {n}: the cached image differs from an uncached one"
    );
    stderr(&o)
        .lines()
        .find(|l| l.contains("cache"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn each_input_rebuilds_what_it_feeds_and_nothing_else() {
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    setup(w);
    let cache = w.join("cache");
    let said = |n| cached_equals_uncached(w, &cache, n);
    assert!(said(0).contains("nothing cached; running steps 1–2"));
    assert!(said(1).contains("cached: layers, steps 1–2"));
    // A layer's content: everything.
    fs::write(w.join("extra/etc/layer.txt"), "layer 2\n").unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(w.join("extra"))
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(w.join("extra.tar"))
        .arg("."));
    assert!(said(2).contains("nothing cached; running steps 1–2"));
    // A folder layer's file.
    fs::write(w.join("base/bin/new"), "x").unwrap();
    assert!(said(3).contains("nothing cached; running steps 1–2"));
    // Step 2's script: step 2.
    recipe(w, "step two", "A");
    assert!(said(4).contains("cached: layers, step 1; running step 2"));
    // Step 1's env: both steps.
    recipe(w, "step two", "B");
    assert!(said(5).contains("cached: layers; running steps 1–2"));
    // The injected program: both steps (they see it), not the layers.
    fs::OpenOptions::new()
        .append(true)
        .open(w.join("tool"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\0"))
        .unwrap();
    assert!(said(6).contains("cached: layers; running steps 1–2"));
    // A file's content: the same.
    fs::write(w.join("motd"), "changed\n").unwrap();
    assert!(said(7).contains("cached: layers; running steps 1–2"));
    assert!(said(8).contains("cached: layers, steps 1–2"));
    // A file placed after the steps: none of them (they do not see it).
    fs::write(w.join("late"), "late 2\n").unwrap();
    let o = said(9);
    assert!(o.contains("cached: layers, steps 1–2"), "{o}");
    let o = said(10);
    assert!(o.contains("cached: layers, steps 1–2"), "{o}");
    // What the steps did is in the image restored from the cache.
    let listing = stdout(&run(rootpack().arg("ls").arg(w.join("out10/cached.tar"))));
    for gone in ["bin/cat", "d/e"] {
        assert!(
            !listing.lines().any(|l| l.trim_start_matches("./") == gone),
            "{listing}"
        );
    }
    for kept in [
        "one",
        "one.link",
        "two",
        "d",
        "etc/motd",
        "etc/late",
        "usr/bin/tool",
    ] {
        assert!(
            listing.lines().any(|l| l.trim_start_matches("./") == kept),
            "{kept}: {listing}"
        );
    }
    // Entries are the user's alone.
    for entry in walkdir::WalkDir::new(&cache) {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().mode() & 0o777;
        let want = if entry.file_type().is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, want, "{}", entry.path().display());
    }
}

#[test]
fn a_build_with_nothing_changed_is_up_to_date() {
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    let recipe = setup(w);
    let cache = w.join("cache");
    let c = ["--cache", cache.to_str().unwrap()];
    let out = w.join("out");
    build(&recipe, &out, &c);
    let image = out.join("cached.tar");
    let manifest = out.join("cached.json");
    let (t0, m0) = (
        fs::metadata(&image).unwrap().mtime_nsec(),
        fs::read(&manifest).unwrap(),
    );
    let o = build(&recipe, &out, &c);
    assert!(stderr(&o).contains("is up to date"), "{}", stderr(&o));
    assert_eq!(fs::metadata(&image).unwrap().mtime_nsec(), t0);
    assert_eq!(fs::read(&manifest).unwrap(), m0);
    // --force makes it again; a changed input does too.
    let o = build(&recipe, &out, &[&c[..], &["--force"]].concat());
    assert!(!stderr(&o).contains("up to date"));
    fs::write(w.join("motd"), "changed\n").unwrap();
    let o = build(&recipe, &out, &c);
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
    // A second format in the same folder keeps the first up to date.
    build(&recipe, &out, &[&c[..], &["--format", "cpio"]].concat());
    let o = build(&recipe, &out, &c);
    assert!(stderr(&o).contains("is up to date"), "{}", stderr(&o));
    // An image changed behind the build's back (another size) is made again.
    fs::write(&image, b"truncated").unwrap();
    let o = build(&recipe, &out, &c);
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));
}

/// The cache's biggest blob (the layers state).
fn biggest_blob(cache: &Path) -> PathBuf {
    let mut blobs: Vec<_> = fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    blobs.pop().unwrap()
}

#[test]
fn corrupt_and_truncated_entries_are_dropped_and_made_again() {
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    setup(w);
    let cache = w.join("cache");
    cached_equals_uncached(w, &cache, 0);
    let blob = biggest_blob(&cache);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&blob, &bytes).unwrap();
    let said = cached_equals_uncached(w, &cache, 1);
    assert!(said.contains("is corrupt: dropped"), "{said}");
    assert!(cached_equals_uncached(w, &cache, 2).contains("cached: layers, steps 1–2"));
    let blob = biggest_blob(&cache);
    let len = fs::metadata(&blob).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let said = cached_equals_uncached(w, &cache, 3);
    assert!(said.contains("is corrupt: dropped"), "{said}");
}

#[test]
fn a_cache_on_a_full_file_system_is_warned_about() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    setup(w);
    let cache = w.join("cache");
    fs::create_dir(&cache).unwrap();
    fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&cache));
    let recipe = w.join("cached.toml");
    let o = rootpack()
        .arg("build")
        .arg(&recipe)
        .arg("--out")
        .arg(w.join("out"))
        .arg("--cache")
        .arg(&cache)
        .output()
        .unwrap();
    run(Command::new("umount").arg(&cache));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("could not store"), "{}", stderr(&o));
    build(&recipe, &w.join("plain"), &["--no-cache"]);
    assert_eq!(
        fs::read(w.join("out/cached.tar")).unwrap(),
        fs::read(w.join("plain/cached.tar")).unwrap()
    );
}

#[test]
fn parallel_builds_share_one_cache() {
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    setup(w);
    let cache = w.join("cache");
    // Four recipes that differ in step 2, each built twice at once.
    let mut recipes = Vec::new();
    for i in 0..4 {
        let text = fs::read_to_string(w.join("cached.toml"))
            .unwrap()
            .replace("step one", &format!("variant {i}"));
        let p = w.join(format!("v{i}.toml"));
        fs::write(&p, text).unwrap();
        recipes.push(p);
    }
    let children: Vec<_> = (0..8)
        .map(|n| {
            rootpack()
                .arg("build")
                .arg("-q")
                .arg(&recipes[n % 4])
                .arg("--out")
                .arg(w.join(format!("par{n}")))
                .arg("--cache")
                .arg(&cache)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for (n, r) in recipes.iter().enumerate() {
        let plain = w.join(format!("plain{n}"));
        build(r, &plain, &["-q", "--no-cache"]);
        let want = fs::read(plain.join("cached.tar")).unwrap();
        for m in [n, n + 4] {
            assert!(
                fs::read(w.join(format!("par{m}/cached.tar"))).unwrap() == want,
                "{m}"
            );
        }
    }
    // Every state names a blob that matches its digest.
    let ls = stdout(&run(rootpack()
        .args(["cache", "ls", "--json", "--cache"])
        .arg(&cache)));
    let states: serde_json::Value = serde_json::from_str(&ls).unwrap();
    // The layers, step 1 (the same in all four), and four of step 2.
    assert_eq!(states.as_array().unwrap().len(), 6);
    for blob in fs::read_dir(cache.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap().path();
        let sum = stdout(&run(Command::new("sha256sum").arg(&blob)));
        assert!(sum.starts_with(blob.file_name().unwrap().to_str().unwrap()));
    }
    assert_eq!(fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
}

#[test]
fn export_wipe_import_builds_from_the_cache() {
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    setup(w);
    let cache = w.join("cache");
    cached_equals_uncached(w, &cache, 0);
    let layout = w.join("layout");
    let c = |args: &[&str]| {
        run(rootpack()
            .arg("cache")
            .args(args)
            .arg("--cache")
            .arg(&cache))
    };
    c(&["export", layout.to_str().unwrap()]);
    // A layout umoci and skopeo read: an index of manifests.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3);
    c(&["prune"]);
    assert!(cached_equals_uncached(w, &cache, 1).contains("nothing cached"));
    c(&["prune"]);
    let said = stderr(&c(&["import", layout.to_str().unwrap()]));
    assert!(said.contains("imported 3 state(s)"), "{said}");
    assert!(cached_equals_uncached(w, &cache, 2).contains("cached: layers, steps 1–2"));
    // skopeo carries the layout (as it would to a registry and back): each state copied
    // by its name into a second layout, which imports the same.
    let copied = w.join("copied");
    for m in index["manifests"].as_array().unwrap() {
        let key = m["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap();
        run(Command::new("skopeo")
            .arg("copy")
            .arg("-q")
            .arg(format!("oci:{}:{key}", layout.display()))
            .arg(format!("oci:{}:{key}", copied.display())));
    }
    c(&["prune"]);
    let said = stderr(&c(&["import", copied.to_str().unwrap()]));
    assert!(said.contains("imported 3 state(s)"), "{said}");
    assert!(cached_equals_uncached(w, &cache, 3).contains("cached: layers, steps 1–2"));
    // A layout whose archive was changed is refused state by state.
    c(&["prune"]);
    let blob = biggest_blob(&layout);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    fs::write(&blob, bytes).unwrap();
    let said = stderr(&c(&["import", layout.to_str().unwrap()]));
    assert!(
        said.contains("skipped") && said.contains("imported 2 state(s)"),
        "{said}"
    );
}

#[test]
fn rootless_builds_use_a_cache_of_their_own() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    setup(w);
    run(Command::new("chown").args(["-R", "65534:65534"]).arg(w));
    fs::set_permissions(w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let as_nobody = |out: &str, extra: &[&str]| {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_rootpack"))
            .env("HOME", w)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("ROOTPACK_CACHE")
            .arg("build")
            .arg(w.join("cached.toml"))
            .arg("--out")
            .arg(w.join(out))
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    assert!(as_nobody("a", &[]).contains("nothing cached"));
    assert!(as_nobody("b", &[]).contains("cached: layers, steps 1–2"));
    as_nobody("c", &["--no-cache"]);
    assert!(w.join(".cache/rootpack/states").is_dir());
    let a = fs::read(w.join("b/cached.tar")).unwrap();
    assert!(a == fs::read(w.join("c/cached.tar")).unwrap());
    // Root's build of the same recipe is the same image.
    build(&w.join("cached.toml"), &w.join("root"), &["--no-cache"]);
    assert!(a == fs::read(w.join("root/cached.tar")).unwrap());
}
