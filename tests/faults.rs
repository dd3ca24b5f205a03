//! Faults a build or a run must survive: a full disk at every stage of a build, `kill -9`
//! at random moments, and builds of one output racing each other. In every case the
//! output folder holds the previous image with its manifest (or the new one with its own),
//! and nothing else once the next build has run: no temporary file, lock, mount or loop
//! device.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A work folder on a tmpfs of its own when root (builds are timed against signals, and
/// the root filesystem creates files slowly after mass deletions), else in /dev/shm.
struct Work {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Work {
    fn new() -> Work {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let mounted = is_root();
        if mounted {
            run(Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1g,mode=755", "rootpack-faults"])
                .arg(dir.path()));
        }
        Work { dir, mounted }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Unmounts `dir`, retrying while a just-detached loop device still holds a file in it,
/// then lazily.
fn unmount(dir: &Path) {
    for _ in 0..50 {
        let done = Command::new("umount")
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if done {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.mounted {
            unmount(self.dir.path());
        }
    }
}

/// A small ext4 filesystem in a file, on a loop device, mounted; unmounted and detached on
/// drop.
struct LoopFs {
    mnt: PathBuf,
    dev: String,
}

impl LoopFs {
    fn new(work: &Path, name: &str, kib: u64) -> LoopFs {
        let file = work.join(format!("{name}.img"));
        let mnt = work.join(name);
        fs::create_dir(&mnt).unwrap();
        run(Command::new("truncate").arg(format!("-s{kib}K")).arg(&file));
        // 1 KiB blocks and no reserved blocks: full means full, at a fine grain.
        run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-m", "0"])
            .arg(&file));
        let out = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file));
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let fs = LoopFs { mnt, dev };
        run(Command::new("mount").arg(&fs.dev).arg(&fs.mnt));
        fs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        unmount(&self.mnt);
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A folder layer whose content depends on `variant`: ~40 files, some compressible.
fn make_layer(dir: &Path, variant: u64, kib: usize) {
    let mut rng = Rng(variant.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("usr/share/data")).unwrap();
    fs::write(dir.join("etc/variant"), format!("{variant}\n")).unwrap();
    for i in 0..40 {
        let len = kib * 1024 / 40;
        let data: Vec<u8> = (0..len)
            .map(|j| {
                if i % 2 == 0 {
                    rng.next() as u8
                } else {
                    (j % 7) as u8 + b'a'
                }
            })
            .collect();
        fs::write(dir.join(format!("usr/share/data/f{i}")), data).unwrap();
    }
}

/// Recipe `NAME` made of variant `variant`'s layer, in `format` (ext4 by `method`).
fn write_recipe(w: &Path, name: &str, variant: u64, format: &str, kib: usize) -> PathBuf {
    let layer = w.join(format!("layer-{variant}-{kib}"));
    if !layer.exists() {
        make_layer(&layer, variant, kib);
    }
    let (format, method) = format.split_once(':').unwrap_or((format, "populate"));
    let recipe = w.join(format!("{name}-{variant}-{format}-{method}-{kib}.toml"));
    fs::write(
        &recipe,
        format!(
            "name = \"{name}\"\nsource_date_epoch = 1700000000\n\
             [[layer]]\ndir = \"{}\"\n\
             [[file]]\nto = \"/etc/motd\"\ncontent = \"build {variant}\\n\"\n\
             [output]\nformat = \"{format}\"\nmethod = \"{method}\"\n",
            layer.display()
        ),
    )
    .unwrap();
    recipe
}

fn build_cmd(recipe: &Path, out: &Path) -> Command {
    let mut c = rootpack();
    c.arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null());
    c
}

/// The manifest of `name` in `out`, if there is one.
fn manifest_of(out: &Path, name: &str) -> Option<serde_json::Value> {
    let text = fs::read(out.join(format!("{name}.json"))).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

/// The image and manifest as bytes (absent: None), for "left as it was" checks.
fn pair(out: &Path, name: &str) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let m = manifest_of(out, name);
    let image = m
        .as_ref()
        .and_then(|m| fs::read(out.join(m["image"].as_str().unwrap())).ok());
    (image, fs::read(out.join(format!("{name}.json"))).ok())
}

fn inspect(out: &Path, name: &str) -> Output {
    rootpack()
        .arg("inspect")
        .arg(out.join(format!("{name}.json")))
        .output()
        .unwrap()
}

/// `inspect` of the image named `name`: the manifest and the image agree.
fn assert_inspect_matches(out: &Path, name: &str, context: &str) {
    let o = inspect(out, name);
    assert!(
        o.status.success(),
        "{context}: inspect: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

/// What must not outlive a build: temporaries, lock files, mounts and loop devices below
/// `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = build_leaks(dir);
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().ends_with(".lock") {
            found.push(format!("lock {}", e.path().display()));
        }
    }
    found
}

fn free_bytes(dir: &Path) -> u64 {
    let st = rustix::fs::statvfs(dir).unwrap();
    st.f_bavail * st.f_frsize
}

/// One build that may run out of space: it succeeds with a matching manifest, or fails
/// saying so with the previous image and manifest as they were. Nothing is left either
/// way. Returns the error's first line when it failed.
/// A recipe as its image's manifest names it: by file name, relative to its folder.
fn file_name(recipe: &Path) -> String {
    recipe.file_name().unwrap().to_string_lossy().into_owned()
}

fn build_or_keep(recipe: &Path, out: &Path, name: &str, context: &str) -> Option<String> {
    let before = pair(out, name);
    let o = build_cmd(recipe, out).output().unwrap();
    let left = leftovers(out);
    assert!(left.is_empty(), "{context}: left {left:?}\n{}", stderr(&o));
    if o.status.success() {
        assert_inspect_matches(out, name, context);
        let m = manifest_of(out, name).unwrap();
        assert_eq!(
            m["build"]["recipe"].as_str().unwrap(),
            file_name(recipe),
            "{context}: the manifest is another build's"
        );
        return None;
    }
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{context}: {err}");
    assert!(err.contains("No space left on device"), "{context}: {err}");
    assert!(
        pair(out, name) == before,
        "{context}: the previous image or manifest changed\n{err}"
    );
    if before.0.is_some() {
        assert_inspect_matches(out, name, context);
    }
    Some(err.lines().next().unwrap_or_default().to_string())
}

/// The stage an ENOSPC message names: the message without its numbers and paths.
fn stage(err: &str) -> String {
    err.split(": ")
        .filter(|part| !part.contains('/'))
        .map(|part| part.replace(|c: char| c.is_ascii_digit(), ""))
        .collect::<Vec<_>>()
        .join(": ")
}

#[test]
fn a_full_disk_at_every_stage_of_a_build_keeps_the_previous_image() {
    if !require_root() {
        return;
    }
    let work = Work::new();
    let w = work.path();
    let mut stages = std::collections::BTreeSet::new();
    let mut failures = 0;
    // Filesystems from too small for anything to just big enough, first builds and
    // rebuilds over an earlier image.
    for (i, kib) in [300, 600, 1200, 2400, 4800, 9600].into_iter().enumerate() {
        let lfs = LoopFs::new(w, &format!("fs{i}"), kib);
        let out = lfs.mnt.join("out");
        for (v, format) in ["ext4", "cpio.gz", "ext4"].into_iter().enumerate() {
            let r = write_recipe(w, "full", v as u64, format, 600);
            let context = format!("{kib} KiB, build {v} ({format})");
            if let Some(e) = build_or_keep(&r, &out, "full", &context) {
                failures += 1;
                stages.insert(stage(&e));
            }
        }
    }
    // Then one filesystem with a filler file leaving exactly so much free, in small steps
    // from nothing to enough: each stage runs out in turn (the work folder's tree, the
    // image, its fsync, the manifest).
    let lfs = LoopFs::new(w, "fine", 16 * 1024);
    let out = lfs.mnt.join("out");
    let filler = lfs.mnt.join("filler");
    for (v, format) in ["ext4", "cpio.gz"].into_iter().enumerate() {
        let first = write_recipe(w, "fine", 10 + v as u64, format, 600);
        assert!(build_or_keep(&first, &out, "fine", "first").is_none());
        // What a rebuild needs at its peak, measured without a filler.
        let probe = write_recipe(w, "fine", 20 + v as u64, format, 600);
        let free = free_bytes(&lfs.mnt);
        let peak = {
            let mut child = build_cmd(&probe, &out)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut low = free;
            while child.try_wait().unwrap().is_none() {
                low = low.min(free_bytes(&lfs.mnt));
                std::thread::sleep(Duration::from_micros(200));
            }
            free - low
        };
        let steps = 24;
        for step in 0..=steps {
            let room = peak * step / steps + 4096 * (step % 3);
            // The filler's own extent blocks come out of the free space too: shrink it
            // until it fits.
            let mut filler_len = free_bytes(&lfs.mnt).saturating_sub(room);
            while filler_len > 0
                && !Command::new("fallocate")
                    .arg("-l")
                    .arg(filler_len.to_string())
                    .arg(&filler)
                    .status()
                    .unwrap()
                    .success()
            {
                filler_len = filler_len.saturating_sub(8192);
            }
            let room = free_bytes(&lfs.mnt);
            let r = write_recipe(w, "fine", 30 + step, format, 600);
            let context = format!("{format}, {room} bytes free of a peak {peak}");
            if let Some(e) = build_or_keep(&r, &out, "fine", &context) {
                failures += 1;
                stages.insert(stage(&e));
            }
            let _ = fs::remove_file(&filler);
        }
    }
    eprintln!("ENOSPC failures: {failures}, at: {stages:#?}");
    assert!(failures >= 20, "only {failures} builds ran out of space");
    assert!(stages.len() >= 3, "ENOSPC hit too few stages: {stages:?}");
}

#[test]
fn parallel_builds_of_one_output_leave_a_matching_image_and_manifest() {
    let work = Work::new();
    let w = work.path();
    let out = w.join("out");
    for format in ["cpio.gz", "ext4"] {
        for round in 0..2 {
            let recipes: Vec<_> = (0..8)
                .map(|i| write_recipe(w, "race", 100 * round + i, format, 400))
                .collect();
            let children: Vec<_> = recipes
                .iter()
                .map(|r| {
                    build_cmd(r, &out)
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let outputs: Vec<Output> = children
                .into_iter()
                .map(|c| c.wait_with_output().unwrap())
                .collect();
            for o in &outputs {
                assert!(o.status.success(), "{format}: {}", stderr(o));
            }
            let context = format!("8 parallel {format} builds, round {round}");
            assert_inspect_matches(&out, "race", &context);
            let m = manifest_of(&out, "race").unwrap();
            let winner = m["build"]["recipe"].as_str().unwrap();
            assert!(
                recipes.iter().any(|r| file_name(r) == winner),
                "{context}: {winner}"
            );
            let waited = outputs
                .iter()
                .filter(|o| stderr(o).contains("waiting for another build"))
                .count();
            assert!(waited > 0, "{context}: no build said it waited");
            assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
        }
    }
}

#[test]
fn kill_9_at_random_moments_of_50_builds() {
    if !require_root() {
        return;
    }
    let work = Work::new();
    let w = work.path();
    let out = w.join("out");
    let formats = ["ext4:populate", "ext4:mount", "cpio.zst", "tar.gz"];
    let mut rng = Rng(0x5eed_0001);
    // The previous image of each format, and how long a build of it takes.
    let mut took = Vec::new();
    for (f, format) in formats.iter().enumerate() {
        let name = format!("k{f}");
        let r = write_recipe(w, &name, 0, format, 2000);
        let t = Instant::now();
        run(&mut build_cmd(&r, &out));
        took.push(t.elapsed());
    }
    let started = Instant::now();
    let mut killed = 0;
    for i in 0..50u64 {
        let f = (i % formats.len() as u64) as usize;
        let name = format!("k{f}");
        let r = write_recipe(w, &name, 1 + i, formats[f], 2000);
        let before = pair(&out, &name);
        let mut child = build_cmd(&r, &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Anywhere from the start to a little past the usual end.
        let window = took[f].as_micros() as u64 * 5 / 4;
        std::thread::sleep(Duration::from_micros(rng.below(window)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let context = format!("build {i} ({}), killed: {status}", formats[f]);
        if status.code().is_none() {
            killed += 1;
        }
        // The previous pair or the new one, never a mix; leftovers wait for the next build.
        // A build killed while committing has its two renames finished by a child process
        // of its own (so that the kill cannot separate them): give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !inspect(&out, &name).status.success() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_inspect_matches(&out, &name, &context);
        let now = pair(&out, &name);
        let m = manifest_of(&out, &name).unwrap();
        let from = m["build"]["recipe"].as_str().unwrap();
        assert!(
            now == before || from == file_name(&r),
            "{context}: neither the previous image nor this build's"
        );
    }
    eprintln!(
        "50 builds, {killed} killed, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        killed >= 25,
        "only {killed} of 50 builds were killed mid-way"
    );
    // The next builds remove what the killed ones left: temporaries, mounts, loop devices.
    for (f, format) in formats.iter().enumerate() {
        let r = write_recipe(w, &format!("k{f}"), 999, format, 2000);
        run(&mut build_cmd(&r, &out));
        assert_inspect_matches(&out, &format!("k{f}"), "after the kills");
    }
    assert!(leftovers(&out).is_empty(), "{:?}", leftovers(&out));
}

fn survivors(marker: &str) -> usize {
    let ps = run(Command::new("ps").args(["-eo", "args"]));
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(marker))
        .count()
}

#[test]
fn kill_9_at_random_moments_of_50_runs() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let image_bytes = fs::read(&img.path).unwrap();
    let mut rng = Rng(0x5eed_0002);
    let started = Instant::now();
    let marker = "sleep 0.317";
    for i in 0..50 {
        let mut child = rootpack()
            .arg("run")
            .args(if i % 5 == 4 {
                &["--userns"][..]
            } else {
                &[][..]
            })
            .arg(&img.path)
            .args(["--", "sh", "-c", &format!("echo {i} > /tmp/f; {marker}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // From before the container exists to while its command sleeps.
        std::thread::sleep(Duration::from_micros(rng.below(120_000)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while (!run_leaks(&img.path).is_empty() || survivors(marker) > 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "50 runs killed, all gone in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        run_leaks(&img.path).is_empty(),
        "{:?}",
        run_leaks(&img.path)
    );
    assert_eq!(survivors(marker), 0, "a container outlived its rootpack");
    assert!(
        fs::read(&img.path).unwrap() == image_bytes,
        "the image changed"
    );
    assert_inspect_matches(img.dir.path(), "busybox", "after 50 killed runs");
    // The container's mounts lived in its own namespace; none may show in ours.
    let dir = img.dir.path().display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "mounts left behind: {mounts}");
    // And the image still runs.
    let o = container(&img.path, &[], "echo fine");
    assert_eq!(stdout(&o), "fine\n", "{}", stderr(&o));
}
