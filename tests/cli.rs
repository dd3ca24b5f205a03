//! The command line as a new user meets it (issue 12): each test drives the real binary
//! and checks what a user sees — messages, exit codes, files — for one item.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs rootpack with `args` in `dir`, stdin closed.
fn rp(dir: &Path, args: &[&str]) -> Output {
    rootpack()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn write_recipe(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, text).unwrap();
    path
}

/// The busybox recipe with `extra` appended, as `format`, built into `dir/out`.
fn busybox_as(dir: &Path, format: &str, extra: &str) -> PathBuf {
    let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let recipe = write_recipe(
        dir,
        "busybox",
        &format!("{text}\n{extra}\n[output]\nformat = \"{format}\"\n"),
    );
    let o = rp(
        dir,
        &["-q", "build", recipe.to_str().unwrap(), "--out", "out"],
    );
    assert!(o.status.success(), "{o:?}");
    dir.join("out")
}

/// Waits for a child at most `limit`; kills it and fails when it hangs.
fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// 1. lz4 past 8 MiB, read back by the lz4 and cpio tools; a build keeps the cause.
#[test]
fn lz4_archives_pack_past_8_mib() {
    let w = tempfile::tempdir().unwrap();
    let tree = w.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // Incompressible, so the first 8 MiB chunk grows on compression.
    let mut data = vec![0u8; 8_000_000];
    let mut x: u32 = 1;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    fs::write(tree.join("big"), &data).unwrap();
    let o = rp(w.path(), &["pack", "tree", "-o", "t.cpio.lz4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = sh(w.path(), "lz4 -dc t.cpio.lz4 | cpio -it --quiet");
    assert_eq!(stdout(&listed), ".\nbig\n");
    let sizes = sh(
        w.path(),
        "lz4 -dc t.cpio.lz4 | cpio -iv --to-stdout big 2>/dev/null | wc -c",
    );
    assert_eq!(stdout(&sizes).trim(), "8000000");

    let recipe = write_recipe(
        w.path(),
        "big",
        "name = \"big\"\n[[file]]\nto = \"/big\"\nfrom = \"tree/big\"\n[output]\nformat = \"cpio.lz4\"\n",
    );
    let o = rp(
        w.path(),
        &["-q", "build", recipe.to_str().unwrap(), "--out", "out"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = sh(w.path(), "lz4 -dc out/big.cpio.lz4 | cpio -it --quiet");
    assert!(stdout(&listed).contains("big\n"), "{listed:?}");
}

// 2. One short flag, one meaning: in `run`, -v is a volume; verbosity is --verbose.
#[test]
fn run_has_one_dash_v() {
    let w = tempfile::tempdir().unwrap();
    let help = stdout(&rp(w.path(), &["run", "--help"]));
    let dash_v: Vec<_> = help
        .lines()
        .filter(|l| l.trim_start().starts_with("-v"))
        .collect();
    assert_eq!(dash_v.len(), 1, "{dash_v:?}");
    assert!(dash_v[0].contains("--volume"), "{dash_v:?}");
    assert!(help.contains("--verbose"), "{help}");
    // Elsewhere -v is still verbosity, before or after the subcommand.
    for args in [&["-v", "ls", "--help"][..], &["ls", "-vv", "--help"][..]] {
        assert!(rp(w.path(), args).status.success(), "{args:?}");
    }
    // A bad volume is a usage error, not a verbosity level.
    let o = rp(w.path(), &["run", "-vv", "img"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("HOST:CONTAINER"), "{}", stderr(&o));
}

/// A cpio archive with `n` files, made by GNU cpio.
fn many_files_archive(dir: &Path, n: usize) -> PathBuf {
    let tree = dir.join("many");
    fs::create_dir(&tree).unwrap();
    for i in 0..n {
        fs::write(tree.join(format!("file-with-a-longish-name-{i:05}")), b"x").unwrap();
    }
    sh(
        dir,
        "cd many && find . | cpio -o -H newc --quiet > ../many.cpio",
    );
    dir.join("many.cpio")
}

// 3. A closed stdout ends `ls` quietly with status 0, --long and --json included.
#[test]
fn ls_into_a_closed_pipe_is_quiet_success() {
    let w = tempfile::tempdir().unwrap();
    let archive = many_files_archive(w.path(), 6000);
    for args in [&["ls", "-l"][..], &["ls"][..], &["ls", "--json"][..]] {
        let mut child = rootpack()
            .args(args)
            .arg(&archive)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reader is dropped here: the pipe is closed with most of the output unread.
        let status = wait_bounded(&mut child, Duration::from_secs(30));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(status.success(), "{args:?}: {status} {err}");
        assert_eq!(err, "", "{args:?}");
        assert!(!first.is_empty());
    }
}

// 4. Piped input with -t: echoed once, and its end reaches the command.
#[test]
fn run_t_with_piped_stdin_sees_the_end_of_input() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    for input in ["piped\n", "no newline"] {
        let mut child = rootpack()
            .args(["run", "-t"])
            .arg(&img.path)
            .args(["--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(30));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        assert!(status.success(), "{status} {out:?}");
        let text = input.trim_end();
        assert_eq!(out.matches(text).count(), 1, "{input:?} -> {out:?}");
    }
}

// 5. A "dir" image is DIR/NAME, described honestly, and runs like `systemd-nspawn -D`.
#[test]
fn folder_images_are_named_inspected_and_run() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let out = busybox_as(w.path(), "dir", "");
    let tree = out.join("busybox");
    assert!(tree.join("bin/busybox").is_file());
    assert!(!out.join("busybox.d").exists());
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("busybox.json")).unwrap()).unwrap();
    assert_eq!(m["format"], "dir");
    assert!(m.get("sha256").is_none(), "{m}");
    let o = rp(w.path(), &["inspect", "out/busybox"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("sha256:     none: a folder image has no digest"),
        "{}",
        stdout(&o)
    );
    // Read-only under a tmpfs overlay: writes vanish, the folder is untouched.
    let o = container(&tree, &[], "echo hi > /new; cat /new; hostname");
    assert_eq!(stdout(&o), "hi\nbusybox\n", "{o:?}");
    assert!(!tree.join("new").exists());
    let o = container(&tree, &["--writable"], "echo kept > /new");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(fs::read_to_string(tree.join("new")).unwrap(), "kept\n");
}

// 6. Each cause said once.
#[test]
fn errors_are_not_doubled() {
    let w = tempfile::tempdir().unwrap();
    for (arg, text) in [
        ("nothere.toml", "No such file or directory"),
        ("/etc", "Is a directory"),
    ] {
        let o = rp(w.path(), &["build", arg]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stderr(&o).matches(text).count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains(arg), "{}", stderr(&o));
    }
}

// 7. Bad option values are usage errors: exit 2, before anything runs.
#[test]
fn bad_option_values_exit_2() {
    let w = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--memory", "lots"][..], "256M"),
        (&["-u", "a:b:c"][..], "NAME[:GROUP]"),
        (&["-u", ""][..], "UID"),
        (&["-e", "=x"][..], "KEY=VALUE"),
        (&["--cap-add", "BOGUS"][..], "capability"),
        (&["--cpus", "-1"][..], "positive"),
        (&["--security-opt", "apparmor=x"][..], "AppArmor"),
        (
            &["--security-opt", "systempaths=unconfined"][..],
            "seccomp=",
        ),
        (
            &["--security-opt", "no-new-privileges=maybe"][..],
            "no-new-privileges",
        ),
        (&["--sysctl", "vm.swappiness=1"][..], "vm.swappiness"),
        (&["--sysctl", "kernel.shmmax"][..], "KEY=VALUE"),
    ] {
        let o = rootpack()
            .arg("run")
            .args(args)
            .args(["img.ext4", "--", "true"])
            .current_dir(w.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

// 8. `run` on something that is not ext4 says what it is and what run accepts.
#[test]
fn run_on_an_archive_says_what_it_is() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let out = busybox_as(w.path(), "cpio.zst", "");
    let o = rp(w.path(), &["run", "out/busybox.cpio.zst", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains("a cpio.zst archive"), "{e}");
    assert!(
        e.contains("run takes an ext4 image or an image folder"),
        "{e}"
    );
    assert!(!e.contains("Invalid argument"), "{e}");
    // Without a manifest, the bytes tell.
    fs::remove_file(out.join("busybox.json")).unwrap();
    let o = rp(w.path(), &["-q", "run", "out/busybox.cpio.zst", "true"]);
    assert!(stderr(&o).contains("zstd-compressed"), "{}", stderr(&o));
    fs::write(w.path().join("junk.ext4"), vec![7u8; 4096]).unwrap();
    let o = rp(w.path(), &["-q", "run", "junk.ext4", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not an ext4 filesystem"),
        "{}",
        stderr(&o)
    );
}

// 9. No manifest: one line says which defaults apply; -q silences it.
#[test]
fn run_without_a_manifest_says_so() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let bare = img.dir.path().join("bare.ext4");
    fs::copy(&img.path, &bare).unwrap();
    let o = container(&bare, &[], "true");
    assert!(o.status.success(), "{o:?}");
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("no manifest") && e.contains("no limits"), "{e}");
    let o = rootpack()
        .args(["-q", "run"])
        .arg(&bare)
        .arg("true")
        .output()
        .unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{o:?}");
}

// 10. [[binary]] takes programs; a #! script brings its interpreter.
#[test]
fn binaries_must_be_programs_and_scripts_bring_their_interpreter() {
    let w = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        w.path(),
        "bad",
        "name = \"bad\"\n[[binary]]\npath = \"/etc/passwd\"\n",
    );
    let o = rp(
        w.path(),
        &["build", recipe.to_str().unwrap(), "--out", "out"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.toml:3: binary.path = \"/etc/passwd\": not executable"),
        "{}",
        stderr(&o)
    );
    assert!(!w.path().join("out").exists());

    let script = w.path().join("hello.sh");
    fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let recipe = write_recipe(
        w.path(),
        "script",
        "name = \"script\"\n[[binary]]\npath = \"./hello.sh\"\nto = \"/hello\"\n\
         [output]\nformat = \"dir\"\n",
    );
    let o = rp(
        w.path(),
        &["-q", "build", recipe.to_str().unwrap(), "--out", "out"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let tree = w.path().join("out/script");
    assert!(tree.join("hello").is_file());
    // /bin/sh, whatever it links to, and the shell's loader are in the image.
    let sh_target = fs::canonicalize("/bin/sh").unwrap();
    let inside = tree.join(sh_target.strip_prefix("/").unwrap());
    assert!(inside.is_file(), "{} missing", inside.display());
    assert!(fs::symlink_metadata(tree.join("bin/sh")).is_ok());
}

// 11. A type error names the key and shows a valid value.
#[test]
fn type_errors_name_the_key_with_an_example() {
    let w = tempfile::tempdir().unwrap();
    let recipe = write_recipe(w.path(), "r", "name = \"r\"\n[limits]\nmemory = 256\n");
    let o = rp(w.path(), &["build", recipe.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(e.contains("r.toml:3: limits.memory: invalid type"), "{e}");
    assert!(e.contains("memory = \"256M\""), "{e}");
}

// 12. An archive without `.` gives the top folder mkdir's mode.
#[test]
fn extract_without_a_dot_entry_uses_the_umask() {
    let w = tempfile::tempdir().unwrap();
    fs::create_dir_all(w.path().join("src/a")).unwrap();
    fs::write(w.path().join("src/a/f"), b"x").unwrap();
    sh(
        w.path(),
        "cd src && find a | cpio -o -H newc --quiet > ../nodot.cpio",
    );
    let rp = env!("CARGO_BIN_EXE_rootpack");
    sh(
        w.path(),
        &format!(
            "umask 027 && {rp} extract nodot.cpio out && {rp} extract --split nodot.cpio split"
        ),
    );
    for dir in ["out", "split"] {
        let mode = fs::metadata(w.path().join(dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o750, "{dir}");
    }
    // An archive that says what `.` is keeps that.
    sh(
        w.path(),
        "cd src && chmod 711 . && find . | cpio -o -H newc --quiet > ../dot.cpio",
    );
    sh(w.path(), &format!("umask 027 && {rp} extract dot.cpio dot"));
    let mode = fs::metadata(w.path().join("dot"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o711);
}

// 13. --format without a compression means none; an unwritable compression names the output.
#[test]
fn pack_formats_and_compressions() {
    let w = tempfile::tempdir().unwrap();
    fs::create_dir(w.path().join("ex1")).unwrap();
    fs::write(w.path().join("ex1/f"), b"x").unwrap();
    let o = rp(w.path(), &["pack", "ex1", "-o", "t.foo", "--format", "tar"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = sh(w.path(), "tar -tf t.foo");
    assert!(stdout(&listed).contains("f"), "{listed:?}");
    let o = rp(w.path(), &["pack", "ex1", "-o", "x.cpio.bz2"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("x.cpio.bz2") && e.contains("bzip2"), "{e}");
    assert!(!e.contains("ex1"), "{e}");
    assert!(!w.path().join("x.cpio.bz2").exists());
    let o = rp(w.path(), &["pack", "ex1", "-o", "t.foo"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("--format"), "{}", stderr(&o));
}

// 14. inspect takes the manifest's path too; a missing image is named as the image.
#[test]
fn inspect_accepts_the_manifest_and_names_a_missing_image() {
    let w = tempfile::tempdir().unwrap();
    let out = busybox_as(w.path(), "cpio.gz", "");
    let by_manifest = rp(w.path(), &["inspect", "out/busybox.json"]);
    assert!(by_manifest.status.success(), "{by_manifest:?}");
    assert!(stdout(&by_manifest).contains("verified:   sha256 matches"));
    let by_image = rp(w.path(), &["inspect", "out/busybox.cpio.gz"]);
    assert_eq!(stdout(&by_image), stdout(&by_manifest));
    let o = rp(w.path(), &["inspect", "missing.ext4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("missing.ext4: No such file"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("missing.json"), "{}", stderr(&o));
    fs::copy(out.join("busybox.cpio.gz"), w.path().join("lone.cpio.gz")).unwrap();
    let o = rp(w.path(), &["inspect", "lone.cpio.gz"]);
    assert!(
        stderr(&o).contains("no manifest beside it"),
        "{}",
        stderr(&o)
    );
}

/// `rootpack ARGS` as the unprivileged user nobody (through setpriv), or as ourselves
/// when we are not root.
fn as_nobody(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_rootpack"));
        c
    } else {
        rootpack()
    };
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    cmd.output().unwrap()
}

// 15. Errors about the output folder say what failed; `run` says it needs root.
#[test]
fn output_folder_and_privilege_errors_say_what_failed() {
    let w = tempfile::tempdir().unwrap();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let recipe = write_recipe(
        w.path(),
        "r",
        "name = \"r\"\n[[file]]\nto = \"/motd\"\ncontent = \"hi\"\n",
    );
    fs::write(w.path().join("afile"), b"").unwrap();
    let o = rp(
        w.path(),
        &["build", recipe.to_str().unwrap(), "--out", "afile"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("output folder afile: exists and is not a folder"),
        "{}",
        stderr(&o)
    );
    fs::create_dir(w.path().join("rodir")).unwrap();
    fs::set_permissions(w.path().join("rodir"), fs::Permissions::from_mode(0o555)).unwrap();
    let o = as_nobody(w.path(), &["build", "r.toml", "--out", "rodir"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        stderr(&o).contains("cannot write into the output folder rodir"),
        "{}",
        stderr(&o)
    );
    let o = as_nobody(w.path(), &["build", "r.toml", "--out", "rodir/sub"]);
    assert!(
        stderr(&o).contains("cannot create the output folder rodir/sub"),
        "{}",
        stderr(&o)
    );
    let o = as_nobody(w.path(), &["run", "img.ext4", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("an image file needs root"),
        "{}",
        stderr(&o)
    );
}

// 16. Docker habits: trailing command, --rm, -i, -it, -w, --entrypoint, --env-file, -u NAME.
#[test]
fn docker_habits_work() {
    if !require_root() {
        return;
    }
    let img = busybox_image(
        "[[file]]\nto = \"/etc/passwd\"\ncontent = \"root:x:0:0:root:/root:/bin/sh\\nbob:x:1000:100:Bob:/home/bob:/bin/sh\\n\"\n\
         [[file]]\nto = \"/etc/group\"\ncontent = \"root:x:0:\\nusers:x:100:\\nwheel:x:10:bob\\n\"\n",
    );
    let run = |args: &[&str]| {
        rootpack()
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let image = img.path.to_str().unwrap();
    let o = run(&[image, "echo", "no", "--dashes"]);
    assert_eq!(stdout(&o), "no --dashes\n", "{o:?}");
    let o = run(&["--rm", "-i", image, "true"]);
    assert!(o.status.success(), "{o:?}");
    let o = run(&["-it", image, "true"]);
    assert!(o.status.success(), "{o:?}");
    let o = run(&["-w", "/nonexistent", image, "sh", "-c", "pwd"]);
    assert_eq!(stdout(&o), "/nonexistent\n", "{o:?}");
    let o = run(&["--entrypoint", "/bin/echo", image, "from", "entrypoint"]);
    assert_eq!(stdout(&o), "from entrypoint\n", "{o:?}");
    // --entrypoint resets the image's cmd; "" clears the entrypoint.
    let o = run(&["--entrypoint", "/bin/echo", image]);
    assert_eq!(stdout(&o), "\n", "{o:?}");
    let o = run(&["--entrypoint", "", image, "echo", "no", "entrypoint"]);
    assert_eq!(stdout(&o), "no entrypoint\n", "{o:?}");
    let env_file = img.dir.path().join("env");
    fs::write(&env_file, "# comment\nA=1\n\nFROM_HOST\nB=x=y\n").unwrap();
    let o = rootpack()
        .args([
            "run",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "A=2",
            // A bare KEY takes rootpack's value, as Docker's; one rootpack lacks is left out.
            "-e",
            "BARE",
            "-e",
            "UNSET_HERE",
            image,
        ])
        .args([
            "sh",
            "-c",
            "echo $A $B $FROM_HOST $BARE ${UNSET_HERE-unset}",
        ])
        .env("FROM_HOST", "host")
        .env("BARE", "bare")
        .env_remove("UNSET_HERE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "2 x=y host bare unset\n", "{o:?}");
    let o = run(&["-u", "bob", image, "sh", "-c", "echo $(id -u):$(id -g)"]);
    assert_eq!(stdout(&o), "1000:100\n", "{o:?}");
    let o = run(&[
        "-u",
        "bob:wheel",
        image,
        "sh",
        "-c",
        "echo $(id -u):$(id -g)",
    ]);
    assert_eq!(stdout(&o), "1000:10\n", "{o:?}");
    let o = run(&["-u", "alice", image, "true"]);
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(
        stderr(&o).contains("\"alice\" is not in the image's /etc/passwd"),
        "{o:?}"
    );
}

// 17. -v says what is done; -vv adds segments, tools, mounts, namespaces and timings.
#[test]
fn verbose_says_what_is_done() {
    let w = tempfile::tempdir().unwrap();
    fs::create_dir(w.path().join("t")).unwrap();
    fs::write(w.path().join("t/f"), b"x").unwrap();
    sh(
        w.path(),
        "cd t && find . | cpio -o -H newc --quiet | gzip > ../t.cpio.gz",
    );
    let o = rp(w.path(), &["extract", "-vv", "t.cpio.gz", "x"]);
    let e = stderr(&o);
    assert!(
        e.contains("segment 1: gzip newc at byte 0: 2 entries"),
        "{e}"
    );
    assert!(e.contains("extracted 2 entries"), "{e}");
    let quiet = rp(w.path(), &["extract", "t.cpio.gz", "y"]);
    assert_eq!(stderr(&quiet), "");
    let recipe = write_recipe(
        w.path(),
        "r",
        "name = \"r\"\n[[file]]\nto = \"/motd\"\ncontent = \"hi\"\n[output]\nmethod = \"populate\"\n",
    );
    let o = rp(
        w.path(),
        &["-vv", "build", recipe.to_str().unwrap(), "--out", "out"],
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("running ") && e.contains("mke2fs\""), "{e}");
    assert!(e.contains("image written and hashed"), "{e}");
    if !is_root() {
        return;
    }
    let img = busybox_image("");
    let o = rootpack()
        .args(["run", "--verbose", "--verbose"])
        .arg(&img.path)
        .arg("true")
        .output()
        .unwrap();
    let e = stderr(&o);
    for says in [
        "cloned pid",
        "mount ext4",
        "mount overlay",
        "pivot_root",
        "container ended",
    ] {
        assert!(e.contains(says), "{says}: {e}");
    }
}

// 18. inspect shows the whole config in human units; ls has --json.
#[test]
fn inspect_shows_the_config_and_ls_speaks_json() {
    let w = tempfile::tempdir().unwrap();
    busybox_as(w.path(), "cpio.gz", "");
    let o = rp(w.path(), &["inspect", "out/busybox.cpio.gz"]);
    let s = stdout(&o);
    for line in [
        "env:        HOME=/root",
        "            PATH=/bin",
        "workdir:    (not set; run uses /)",
        "hostname:   busybox",
        "memory:     64M",
        "pids:       64",
        "cmd:        [\"/bin/sh\"]",
    ] {
        assert!(s.contains(line), "{line}: {s}");
    }
    assert!(!s.contains("bytes\n"), "{s}");
    let o = rp(w.path(), &["ls", "--json", "out/busybox.cpio.gz"]);
    let entries: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let sh = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str().unwrap().ends_with("bin/sh"))
        .unwrap();
    assert_eq!(sh["type"], "symlink");
    assert_eq!(sh["target"], "/bin/busybox");
    let o = rp(
        w.path(),
        &["ls", "--segments", "--json", "out/busybox.cpio.gz"],
    );
    let segments: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(segments[0]["compression"], "gzip");
}

// What users expect: a man page, examples in every --help, the commit in --version.
#[test]
fn man_page_examples_and_version() {
    let w = tempfile::tempdir().unwrap();
    let o = rp(w.path(), &["man"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains(".TH rootpack 1"), "{}", stdout(&o));
    let o = rp(w.path(), &["-q", "man", "--install", "man/man1"]);
    assert!(o.status.success(), "{o:?}");
    for page in ["rootpack.1", "rootpack-run.1", "rootpack-build.1"] {
        assert!(w.path().join("man/man1").join(page).is_file(), "{page}");
    }
    if Command::new("man").arg("--version").output().is_ok() {
        let found = Command::new("man")
            .args(["-M", "man", "-w", "rootpack"])
            .current_dir(w.path())
            .output()
            .unwrap();
        assert!(stdout(&found).contains("man1/rootpack.1"), "{found:?}");
    }
    for sub in [
        "ls",
        "extract",
        "pack",
        "build",
        "run",
        "inspect",
        "completions",
        "man",
    ] {
        let help = stdout(&rp(w.path(), &[sub, "--help"]));
        assert!(help.contains("\nExamples:\n  rootpack "), "{sub}: {help}");
    }
    let version = stdout(&rp(w.path(), &["--version"]));
    assert!(version.starts_with("rootpack 0."), "{version}");
    let in_checkout = Command::new("git")
        .args(["-C", REPO, "rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(commit) = in_checkout {
        // The binary names the commit it was built from (maybe older than HEAD).
        assert!(version.contains("(git "), "{version}");
        assert!(!stdout(&commit).trim().is_empty());
    }
}

// README and recipes: {latest} picks the newest initrd; the DESIGN link resolves.
#[test]
fn latest_placeholder_and_readme_links() {
    let w = tempfile::tempdir().unwrap();
    let boot = w.path().join("boot");
    fs::create_dir_all(w.path().join("t/etc")).unwrap();
    fs::create_dir(&boot).unwrap();
    for (v, word) in [("6.1.0-9-amd64", "old"), ("6.1.0-10-amd64", "new")] {
        fs::write(w.path().join("t/etc/which"), word).unwrap();
        let o = rp(
            w.path(),
            &[
                "pack",
                "t",
                "-o",
                &format!("boot/initrd.img-{v}"),
                "-c",
                "gzip",
            ],
        );
        assert!(o.status.success(), "{o:?}");
    }
    let recipe = write_recipe(
        w.path(),
        "latest",
        "name = \"latest\"\n[[layer]]\ninitramfs = \"boot/initrd.img-{latest}\"\n\
         [output]\nformat = \"dir\"\n",
    );
    let o = rp(
        w.path(),
        &["-q", "build", recipe.to_str().unwrap(), "--out", "out"],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        fs::read_to_string(w.path().join("out/latest/etc/which")).unwrap(),
        "new"
    );
    let shipped = fs::read_to_string(Path::new(REPO).join("recipes/initramfs.toml")).unwrap();
    assert!(shipped.contains("/boot/initrd.img-{latest}"));

    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    assert!(readme.starts_with("# rootpack\n"));
    for link in readme.split("](").skip(1) {
        let target = link.split(')').next().unwrap();
        if target.starts_with('#') || target.contains("://") {
            continue;
        }
        let path = Path::new(REPO).join(target.split('#').next().unwrap());
        assert!(path.exists(), "README links to {target}, which is missing");
    }
    assert!(readme.contains("docs/DESIGN.md"));
}

// The hello image has what the README says it has.
#[test]
fn hello_matches_its_description() {
    let w = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(Path::new(REPO).join("recipes/hello.toml")).unwrap();
    let recipe = write_recipe(
        w.path(),
        "hello",
        &format!("{text}\n").replace("format = \"ext4\"", "format = \"dir\""),
    );
    let o = rp(
        w.path(),
        &["-q", "build", recipe.to_str().unwrap(), "--out", "out"],
    );
    assert!(o.status.success(), "{o:?}");
    let tree = w.path().join("out/hello");
    assert!(tree.join("root").is_dir());
    for tool in [
        "bash", "sh", "ls", "cat", "env", "true", "id", "sleep", "tty",
    ] {
        let found = ["bin", "usr/bin"]
            .iter()
            .any(|d| fs::symlink_metadata(tree.join(d).join(tool)).is_ok());
        assert!(found, "{tool} missing");
    }
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(w.path().join("out/hello.json")).unwrap())
            .unwrap();
    assert!(m["size"].as_u64().unwrap() < 32 << 20, "{}", m["size"]);
}

// `run IMAGE CMD` replaces the image's cmd and keeps its entrypoint, as Docker, podman and
// the OCI image spec do.
#[test]
fn run_command_replaces_cmd_and_keeps_the_entrypoint() {
    if !require_root() {
        return;
    }
    let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let text = text.replace(
        "cmd = [\"/bin/sh\"]",
        "entrypoint = [\"/bin/echo\", \"prefix\"]\ncmd = [\"default\"]",
    );
    let img = image_from_recipe("busybox", &text);
    let run = |args: &[&str]| {
        rootpack()
            .arg("run")
            .arg(&img.path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_eq!(stdout(&run(&[])), "prefix default\n");
    assert_eq!(stdout(&run(&["given", "args"])), "prefix given args\n");
}

// A user whose PATH lacks /usr/sbin (Debian's default for non-root) still gets mke2fs.
#[test]
fn mke2fs_is_found_outside_a_users_path() {
    let w = tempfile::tempdir().unwrap();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o777)).unwrap();
    write_recipe(
        w.path(),
        "r",
        "name = \"r\"\n[[file]]\nto = \"/motd\"\ncontent = \"hi\"\n[output]\nformat = \"ext4\"\n",
    );
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_rootpack"));
        c
    } else {
        rootpack()
    };
    let o = cmd
        .args(["build", "-q", "r.toml", "--out", "out"])
        .env("PATH", "/usr/bin:/bin")
        .current_dir(w.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(w.path().join("out/r.ext4").exists());
}

// More Docker habits: -h is the hostname, --init is accepted, --read-only, --mount, and
// what rootpack has not (--privileged, --device, named volumes, more CPUs than the host's)
// refused with what to use instead.
#[test]
fn docker_run_options_work_or_say_what_to_use() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), "from-host\n").unwrap();
    let run = |args: &[&str], script: &str| {
        rootpack()
            .arg("run")
            .args(args)
            .arg(&img.path)
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    assert_eq!(
        stdout(&run(&["-h", "myhost", "--init"], "hostname")),
        "myhost\n"
    );
    let o = run(
        &["--read-only", "--tmpfs", "/scratch"],
        "touch /x 2>/dev/null || echo ro; touch /scratch/y && echo rw",
    );
    assert_eq!(stdout(&o), "ro\nrw\n", "{o:?}");
    let bind = format!(
        "type=bind,source={},target=/m,readonly",
        src.path().display()
    );
    let o = run(
        &["--mount", &bind, "--mount", "type=tmpfs,dst=/t"],
        "cat /m/f; touch /m/g 2>/dev/null || echo ro; touch /t/a && echo tmpfs",
    );
    assert_eq!(stdout(&o), "from-host\nro\ntmpfs\n", "{o:?}");
    for (args, says) in [
        (&["--privileged"][..], "--cap-add"),
        (&["--device", "/dev/sda"], "default devices"),
        (&["--mount", "type=volume,target=/v"], "type=bind"),
        (&["--cpus", "4096"], "CPUs available"),
    ] {
        let o = run(args, "true");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
}

// One recipe, several formats into one folder: each image keeps its own digest in the one
// manifest, so building a second format does not make the first fail its check.
#[test]
fn several_formats_share_one_manifest_and_each_verifies() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let recipe = Path::new(REPO).join("recipes/busybox.toml");
    let build = |formats: &[&str]| {
        let mut c = rootpack();
        c.args(["build", "-q"])
            .arg(&recipe)
            .arg("--out")
            .arg(w.path());
        for f in formats {
            c.args(["--format", f]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{formats:?}: {}", stderr(&o));
    };
    build(&[]);
    build(&["oci-archive"]);
    build(&["tar", "cpio.zst"]);
    let o = rootpack()
        .arg("run")
        .arg(w.path().join("busybox.ext4"))
        .args(["echo", "still-verified"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "still-verified\n", "{}", stderr(&o));
    for image in [
        "busybox.oci.tar",
        "busybox.tar",
        "busybox.cpio.zst",
        "busybox.ext4",
    ] {
        let o = rootpack()
            .arg("inspect")
            .arg(w.path().join(image))
            .output()
            .unwrap();
        assert!(stdout(&o).contains("sha256 matches"), "{image}: {o:?}");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(w.path().join("busybox.json")).unwrap()).unwrap();
    assert_eq!(m["outputs"].as_object().unwrap().len(), 4, "{m}");
    let o = rootpack()
        .args(["build", "--format", "zip"])
        .arg(&recipe)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("one of ext4"), "{}", stderr(&o));
}

// Commands that only print stop quietly when their reader goes, as `ls` does.
#[test]
fn printing_commands_stop_quietly_on_a_closed_pipe() {
    let w = tempfile::tempdir().unwrap();
    busybox_as(w.path(), "cpio.gz", "");
    let rp = rootpack().get_program().to_string_lossy().into_owned();
    for args in [
        "inspect out/busybox.cpio.gz",
        "completions bash",
        "ls out/busybox.cpio.gz",
    ] {
        let o = Command::new("sh")
            .args(["-c", &format!("{rp} {args} | head -c 1 >/dev/null")])
            .current_dir(w.path())
            .output()
            .unwrap();
        assert_eq!(stderr(&o), "", "{args}");
    }
}

// `pack -o initrd.img` compresses as mkinitramfs does; --frame-size takes units.
#[test]
fn pack_defaults_an_initrd_to_zstd_and_frame_sizes_take_units() {
    let w = tempfile::tempdir().unwrap();
    fs::create_dir(w.path().join("t")).unwrap();
    fs::write(w.path().join("t/f"), "hi").unwrap();
    for args in [
        &["pack", "t", "-o", "initrd.img"][..],
        &["pack", "t", "-o", "f.cpio.zst", "--frame-size", "512K"],
    ] {
        let o = rp(w.path(), args);
        assert!(o.status.success(), "{args:?}: {o:?}");
    }
    let head = fs::read(w.path().join("initrd.img")).unwrap();
    assert_eq!(&head[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let o = rp(
        w.path(),
        &["pack", "t", "-o", "g.cpio", "--frame-size", "lots"],
    );
    assert_eq!(o.status.code(), Some(2));
}

// `ls --segments` of a container image: one row per layer, and a format's name as a phrase.
#[test]
fn segments_of_an_oci_archive_are_its_layers() {
    let w = tempfile::tempdir().unwrap();
    busybox_as(w.path(), "oci-archive", "");
    let o = rp(w.path(), &["ls", "-s", "out/busybox.oci.tar"]);
    let rows: Vec<String> = stdout(&o).lines().skip(1).map(String::from).collect();
    assert_eq!(rows.len(), 1, "{}", stdout(&o));
    assert!(
        rows[0].contains("gzip") && rows[0].contains("tar"),
        "{rows:?}"
    );
}
