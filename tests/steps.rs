//! `[[run]]` build steps (issue 11), through the real binary: what a step does lands in the
//! image and nothing of the step's machinery does; the network is closed by default; a
//! daemon a step leaves dies with it; a failure names the line and leaves nothing; builds
//! with steps are reproducible; `-q` is quiet; rootless builds run steps too.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// The busybox tree of the example recipe, without its steps, named `name`.
fn base(name: &str) -> String {
    let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox-steps.toml")).unwrap();
    let head = text.split("\n[[run]]").next().unwrap();
    // The comment above the first step stays; harmless.
    head.replace("name = \"busybox-steps\"", &format!("name = \"{name}\""))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    fs::write(&p, text).unwrap();
    p
}

fn build(recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    rootpack()
        .arg("build")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    o
}

fn debugfs(image: &Path, request: &str) -> String {
    let o = run(Command::new("debugfs").arg("-R").arg(request).arg(image));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn changes_land_in_the_image_and_the_machinery_does_not() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let recipe = Path::new(REPO).join("recipes/busybox-steps.toml");
    for method in ["populate", "mount"] {
        let out = w.path().join(method);
        ok(build(&recipe, &out, &["-q", "--method", method]));
        let image = out.join("busybox-steps.ext4");
        run(Command::new("e2fsck").arg("-fn").arg(&image));
        // The user, its home folder (its own, 0750), the file it wrote.
        let home = debugfs(&image, "stat /home/app");
        assert!(
            home.contains("User:  1000   Group:  1000"),
            "{method}: {home}"
        );
        assert!(home.contains("Mode:  0750"), "{method}: {home}");
        let file = debugfs(&image, "stat /home/app/greeting.txt");
        assert!(
            file.contains("User:  1000   Group:  1000"),
            "{method}: {file}"
        );
        assert_eq!(
            debugfs(&image, "cat /home/app/greeting.txt"),
            "hello from a build step\n"
        );
        assert!(debugfs(&image, "cat /etc/passwd").contains("app:x:1000:1000"));
        assert!(debugfs(&image, "cat /etc/busybox-applets").contains("sha256sum\n"));
        // Nothing of the steps' machinery: no resolv.conf, hosts, policy-rc.d, stage.
        let etc = debugfs(&image, "ls /etc");
        assert!(
            !etc.contains("resolv.conf") && !etc.contains("hosts"),
            "{etc}"
        );
        let run_dir = debugfs(&image, "ls -p /run");
        assert_eq!(
            run_dir.lines().filter(|l| !l.is_empty()).count(),
            2,
            "{run_dir}"
        );
        assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
        // And the image runs as the user the steps made.
        let o = container(
            &image,
            &["-q"],
            "id; cat greeting.txt 2>/dev/null || cat /home/app/greeting.txt",
        );
        assert!(
            stdout(&o).contains("uid=1000(app) gid=1000(app)"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn mounts_and_host_network_leave_nothing_in_the_image() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let cache = w.path().join("cache");
    fs::create_dir(&cache).unwrap();
    fs::write(cache.join("in"), "from the host\n").unwrap();
    let src = w.path().join("src.txt");
    fs::write(&src, "source\n").unwrap();
    // /usr/sbin makes it a Debian-shaped tree: policy-rc.d is there during the steps.
    let text = format!(
        "{}\n[[dir]]\npath = \"/usr/sbin\"\n\n\
         [[run]]\nnetwork = \"host\"\nmounts = [\"{}:/var/cache/apt\", \"{}:/opt/src.txt:ro\"]\n\
         script = \"\"\"\n\
         cat /var/cache/apt/in > /kept\n\
         echo written > /var/cache/apt/out\n\
         cat /opt/src.txt >> /kept\n\
         test -s /etc/resolv.conf\n\
         /usr/sbin/policy-rc.d x start || echo policy $? >> /kept\n\
         echo pid > /run/daemon.pid\n\
         \"\"\"\n",
        base("mounts"),
        cache.display(),
        src.display()
    );
    let recipe = write(w.path(), "mounts", &text);
    let out = w.path().join("out");
    for method in ["populate", "mount"] {
        ok(build(&recipe, &out, &["-q", "--method", method]));
        let image = out.join("mounts.ext4");
        assert_eq!(
            debugfs(&image, "cat /kept"),
            "from the host\nsource\npolicy 101\n"
        );
        let root = debugfs(&image, "ls /");
        assert!(!root.contains("var") && !root.contains("opt"), "{root}");
        assert!(!debugfs(&image, "ls /etc").contains("resolv.conf"));
        assert!(!debugfs(&image, "ls /usr/sbin").contains("policy-rc.d"));
        assert!(!debugfs(&image, "ls /run").contains("daemon.pid"));
        assert_eq!(fs::read_to_string(cache.join("out")).unwrap(), "written\n");
        fs::remove_file(cache.join("out")).unwrap();
        assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
    }
    // A folder image: the tree itself.
    let dir_text = text.replace("name = \"mounts\"", "name = \"mountsdir\"")
        + "\n[output]\nformat = \"dir\"\n";
    let recipe = write(w.path(), "mountsdir", &dir_text);
    ok(build(&recipe, &out, &["-q"]));
    let tree = out.join("mountsdir");
    assert!(tree.join("kept").exists());
    for p in [
        "var",
        "opt",
        "etc/resolv.conf",
        "usr/sbin/policy-rc.d",
        "run/daemon.pid",
    ] {
        assert!(
            fs::symlink_metadata(tree.join(p)).is_err(),
            "{p} left in the tree"
        );
    }
}

#[test]
fn the_default_network_cannot_reach_the_host() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let step = |network: &str| {
        format!(
            "\n[[run]]\nnetwork = \"{network}\"\ntimeout = \"30s\"\n\
             script = \"if echo hi | nc 127.0.0.1 {port}; then echo reached > /net; else echo closed > /net; fi\"\n"
        )
    };
    let out = w.path().join("out");
    let recipe = write(
        w.path(),
        "netnone",
        &format!("{}{}", base("netnone"), step("none")),
    );
    ok(build(&recipe, &out, &["-q"]));
    assert_eq!(debugfs(&out.join("netnone.ext4"), "cat /net"), "closed\n");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a step with network none reached the host: {other:?}"),
    }
    // The same step with the host's network does reach it: the test can fail.
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        // One line, then the connection is closed, which ends nc.
        let (conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(conn), &mut got).unwrap();
        got
    });
    let recipe = write(
        w.path(),
        "nethost",
        &format!("{}{}", base("nethost"), step("host")),
    );
    ok(build(&recipe, &out, &["-q"]));
    assert_eq!(debugfs(&out.join("nethost.ext4"), "cat /net"), "reached\n");
    assert_eq!(server.join().unwrap(), "hi\n");
}

/// Processes whose command line is exactly `words`.
fn processes(words: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            (fs::read(e.path().join("cmdline")).ok()? == want).then_some(pid)
        })
        .collect()
}

#[test]
fn a_daemon_left_by_a_step_neither_survives_nor_delays_the_build() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[run]]\nscript = \"sleep 317 & echo started > /daemon; sleep 317 </dev/null >/dev/null 2>&1 &\"\n",
        base("daemon")
    );
    let recipe = write(w.path(), "daemon", &text);
    let out = w.path().join("out");
    let t = Instant::now();
    for method in ["populate", "mount"] {
        ok(build(&recipe, &out, &["-q", "--method", method]));
        assert!(
            processes(&["sleep", "317"]).is_empty(),
            "{method}: the daemon survived"
        );
        assert_eq!(
            debugfs(&out.join("daemon.ext4"), "cat /daemon"),
            "started\n"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn a_failing_step_names_its_line_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let out = w.path().join("out");
    let good = write(w.path(), "fail", &base("fail"));
    ok(build(&good, &out, &["-q"]));
    let previous = fs::read(out.join("fail.ext4")).unwrap();
    let text = format!(
        "{}\n[[run]]\nscript = \"echo fine\"\n\n[[run]]\nscript = \"\"\"\necho first line\necho last words >&2\nexit 3\n\"\"\"\n",
        base("fail")
    );
    let line = text.lines().position(|l| l == "[[run]]").unwrap() + 1 + 3;
    let recipe = write(w.path(), "fail", &text);
    for (method, quiet) in [("populate", true), ("mount", true), ("populate", false)] {
        let mut args = vec!["--method", method];
        if quiet {
            args.push("-q");
        }
        let o = build(&recipe, &out, &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        let want = format!(
            "{}:{line}: run step 2: exited with status 3",
            recipe.display()
        );
        assert!(err.contains(&want), "want {want:?} in {err}");
        assert!(err.contains("run 2| last words"), "{err}");
        assert!(err.contains("run 2| first line"), "{err}");
        assert_eq!(err.contains("run 1| fine"), !quiet, "{err}");
        assert!(
            build_leaks(&out).is_empty(),
            "{method}: {:?}",
            build_leaks(&out)
        );
        assert_eq!(
            fs::read(out.join("fail.ext4")).unwrap(),
            previous,
            "{method}"
        );
        assert_eq!(list_tree(&out).len(), 3, "{:?}", list_tree(&out));
    }
    // A timeout kills the step, and says so.
    let text = format!(
        "{}\n[[run]]\ntimeout = \"1s\"\nscript = \"sleep 319\"\n",
        base("fail")
    );
    let recipe = write(w.path(), "fail", &text);
    let t = Instant::now();
    let o = build(&recipe, &out, &["-q"]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&o).contains("run step 1: timed out after 1s"),
        "{}",
        stderr(&o)
    );
    assert!(processes(&["sleep", "319"]).is_empty());
    assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
}

#[test]
fn steps_with_a_source_date_epoch_build_the_same_bytes_twice() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let recipe = Path::new(REPO).join("recipes/busybox-steps.toml");
    let (a, b) = (w.path().join("a"), w.path().join("b"));
    ok(build(&recipe, &a, &["-q"]));
    std::thread::sleep(Duration::from_millis(1100));
    ok(build(&recipe, &b, &["-q"]));
    let (x, y) = (
        fs::read(a.join("busybox-steps.ext4")).unwrap(),
        fs::read(b.join("busybox-steps.ext4")).unwrap(),
    );
    assert!(x == y, "two builds with steps differ");
}

#[test]
fn quiet_steps_print_nothing_on_success() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let recipe = Path::new(REPO).join("recipes/busybox-steps.toml");
    let o = ok(build(&recipe, &w.path().join("out"), &["-q"]));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", stderr(&o));
    // Without -q each line comes with its step's number.
    let text = format!(
        "{}\n[[run]]\nscript = \"echo one; echo two >&2\"\n",
        base("loud")
    );
    let recipe = write(w.path(), "loud", &text);
    let o = ok(build(&recipe, &w.path().join("out"), &[]));
    let err = stderr(&o);
    assert!(err.contains("run 1| one\nrun 1| two\n"), "{err}");
}

#[test]
fn bad_steps_name_the_key_and_line() {
    let w = tempfile::tempdir().unwrap();
    for (step, want) in [
        (
            "network = \"bridge\"\nscript = \"true\"",
            ":6: run.network = \"bridge\"",
        ),
        (
            "script = \"true\"\nargs = [\"true\"]",
            ":5: [[run]] needs exactly one of script",
        ),
        (
            "timeout = \"soon\"\nscript = \"true\"",
            ":6: run.timeout = \"soon\"",
        ),
        (
            "mounts = [\"/nonexistent-xyz:/x:ro\"]\nscript = \"true\"",
            ":6: run.mounts",
        ),
        (
            "mounts = [\"/tmp\"]\nscript = \"true\"",
            "expected HOST:CTR",
        ),
        (
            "user = \"a b\"\nscript = \"true\"",
            ":6: run.user = \"a b\"",
        ),
        ("scrpt = \"true\"", "unknown field `scrpt`"),
    ] {
        let text =
            format!("name = \"bad\"\n[[binary]]\npath = \"/bin/busybox\"\n\n[[run]]\n{step}\n");
        let recipe = write(w.path(), "bad", &text);
        let o = build(&recipe, &w.path().join("out"), &[]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(want), "want {want:?} in {}", stderr(&o));
    }
}

/// A work folder on a tmpfs of its own, anyone may enter (see tests/reproducible.rs).
struct Work(tempfile::TempDir);

impl Work {
    fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256m,mode=777", "rootpack-test"])
            .arg(dir.path()));
        Work(dir)
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn rootless_builds_run_steps_as_root_of_a_user_namespace() {
    if !require_root() {
        return;
    }
    let w = Work::new();
    let text = format!(
        "{}\n[[run]]\nscript = \"id -u > /uid; mkdir /made; echo x > /made/file; chmod 0600 /etc/group\"\n",
        base("rootless")
    );
    let recipe = write(w.0.path(), "rootless", &text);
    let out = w.0.path().join("out");
    let as_nobody = |recipe: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_rootpack"))
            .env("ROOTPACK_CACHE", "off")
            .arg("build")
            .arg("-q")
            .arg(recipe)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = as_nobody(&recipe);
    assert!(o.status.success(), "{}", stderr(&o));
    let image = out.join("rootless.ext4");
    assert_eq!(debugfs(&image, "cat /uid"), "0\n");
    // Made by a step: root's in the image; a step's chmod wins over the recorded mode.
    for p in ["/made", "/made/file"] {
        assert!(debugfs(&image, &format!("stat {p}")).contains("User:     0   Group:     0"));
    }
    assert!(debugfs(&image, "stat /etc/group").contains("Mode:  0600"));
    // What it cannot do: give a file to another user.
    let text = format!(
        "{}\n[[run]]\nscript = \"touch /f; chown 1000 /f\"\n",
        base("rootless")
    );
    let recipe = write(w.0.path(), "rootless", &text);
    let o = as_nobody(&recipe);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("run step 1: exited with status 1"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Invalid argument"), "{}", stderr(&o));
    assert!(build_leaks(&out).is_empty(), "{:?}", build_leaks(&out));
}

/// The README's Debian recipe is a valid recipe: it gets as far as reading its layer (which
/// needs a real Debian rootfs tarball and the network: `tests/debian.rs` builds it).
#[test]
fn the_readme_debian_recipe_parses() {
    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = readme.split("## Build steps").nth(1).unwrap();
    let text = section
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let w = tempfile::tempdir().unwrap();
    fs::write(w.path().join("debian-bookworm-rootfs.tar.zst"), b"").unwrap();
    fs::create_dir_all(w.path().join("cache/apt")).unwrap();
    let recipe = write(w.path(), "debian-tools", text);
    let o = build(&recipe, &w.path().join("out"), &["-q"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("layer ") && err.contains("debian-bookworm-rootfs.tar.zst"),
        "{err}"
    );
}
