//! Container images in and out. Inputs are made by `podman build` (whiteouts of a base
//! file and of an earlier layer's, an opaque folder, a hard link, ENV, WORKDIR,
//! ENTRYPOINT, CMD), saved by podman and skopeo in every form, and must unpack to what
//! `umoci unpack` gives; hostile layouts made here must be refused or contained. Outputs
//! must be taken by skopeo, umoci, podman and a real registry.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;
use sha2::{Digest, Sha256};

fn podman() -> Command {
    let mut c = Command::new("podman");
    // crun refuses this host's hybrid cgroups.
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The podman-built image, saved as oci-archive, docker-archive, an OCI layout and a zstd
/// layout; built once per test run.
fn saved() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oci-fixtures");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
        fs::write(
            dir.join("Containerfile"),
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             RUN mkdir -p /etc/keep /opq/sub && echo a > /opq/a && echo s > /opq/sub/s && \
                 echo keep > /etc/keep/k && echo early > /etc/early\n\
             RUN rm /bin/yes /etc/early && rm -rf /opq && mkdir /opq && echo b > /opq/b && \
                 ln /etc/keep/k /etc/hardk && mkdir /etc/keep2 && chown 1234:5678 /etc/keep2\n\
             ENV GREETING=hello PATH=/bin\n\
             WORKDIR /opq\n\
             ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
             CMD [\"echo $GREETING from $(pwd)\"]\n",
        )
        .unwrap();
        run(podman()
            .args([
                "build",
                "-q",
                "--network",
                "none",
                "-t",
                "rootpack-oci-test:1",
            ])
            .arg(&dir));
        let archive = |format: &str, file: &str| {
            run(podman()
                .args(["save", "--format", format, "-o"])
                .arg(dir.join(file))
                .arg("rootpack-oci-test:1"));
        };
        archive("oci-archive", "oci.tar");
        archive("docker-archive", "docker.tar");
        let src = format!("oci-archive:{}", dir.join("oci.tar").display());
        run(Command::new("skopeo")
            .args(["copy", "-q", &src])
            .arg(format!("oci:{}:t1", dir.join("layout").display())));
        run(Command::new("skopeo")
            .args(["copy", "-q", "--dest-compress-format", "zstd", &src])
            .arg(format!("oci:{}:t1", dir.join("zstd").display())));
        run(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:t1", dir.join("layout").display()))
            .arg(dir.join("umoci")));
        dir
    })
}

/// Path, type, mode, size, owner and link count of every entry, sorted.
fn listing(root: &Path) -> String {
    let o = run(Command::new("find")
        .arg(".")
        .args(["-printf", "%p %y %m %s %U:%G %n %l\\n"])
        .current_dir(root));
    let mut lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    lines.sort();
    lines.join("\n")
}

fn build(recipe: &str, dir: &Path) -> std::process::Output {
    let path = dir.join("r.toml");
    fs::write(&path, recipe).unwrap();
    rootpack()
        .args(["build", "-q"])
        .arg(&path)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap()
}

#[test]
fn every_saved_form_unpacks_as_umoci_does_and_runs_its_own_command() {
    if !require_root() {
        return;
    }
    let saved = saved();
    let want = listing(&saved.join("umoci/rootfs"));
    assert!(want.contains("./etc/hardk f 644 5 0:0 2"), "{want}");
    assert!(
        !want.contains("./etc/early") && !want.contains("./opq/a"),
        "{want}"
    );
    for form in ["oci.tar", "docker.tar", "layout", "zstd"] {
        let work = tempfile::tempdir().unwrap();
        let o = build(
            &format!(
                "name = \"img\"\n[[layer]]\noci = \"{}\"\n[output]\nformat = \"dir\"\n",
                saved.join(form).display()
            ),
            work.path(),
        );
        assert!(o.status.success(), "{form}: {}", stderr(&o));
        assert_eq!(listing(&work.path().join("out/img")), want, "{form}");
        let manifest = fs::read_to_string(work.path().join("out/img.json")).unwrap();
        assert!(manifest.contains("\"image\": \"sha256:"), "{manifest}");
        // `ls` shows the merged tree and `extract` writes it, as for any archive.
        let names = run(rootpack().arg("ls").arg(saved.join(form)));
        let mut names: Vec<String> = stdout(&names).lines().map(|l| format!("./{l}")).collect();
        names.sort();
        let want_names: Vec<&str> = want
            .lines()
            .filter_map(|l| l.split(' ').next())
            .filter(|n| *n != ".")
            .collect();
        assert_eq!(names, want_names, "{form}: ls");
        run(rootpack()
            .arg("extract")
            .arg(saved.join(form))
            .arg(work.path().join("x")));
        assert_eq!(
            listing(&work.path().join("x"))
                .lines()
                .skip(1)
                .collect::<Vec<_>>(),
            want.lines().skip(1).collect::<Vec<_>>(),
            "{form}: extract"
        );
    }
    // An ext4 image of it runs the image's own entrypoint and command, in its workdir.
    let work = tempfile::tempdir().unwrap();
    let o = build(
        &format!(
            "name = \"img\"\nmountpoints = [\"/proc\", \"/sys\", \"/dev\", \"/tmp\"]\n\
             [[layer]]\noci = \"{}\"\nref = \"rootpack-oci-test:1\"\n[config]\nhostname = \"x\"\n",
            saved.join("oci.tar").display()
        ),
        work.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = rootpack()
        .arg("run")
        .arg(work.path().join("out/img.ext4"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "hello from /opq\n", "{}", stderr(&o));
    // Every saved form runs as it is, with its config, as podman runs `oci-archive:`;
    // what was unpacked for the run is gone after it.
    for form in ["oci.tar", "docker.tar", "layout", "zstd"] {
        let o = rootpack()
            .args(["run", "-q"])
            .arg(saved.join(form))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(stdout(&o), "hello from /opq\n", "{form}: {}", stderr(&o));
        let o = rootpack()
            .args(["run", "-q", "--entrypoint", "", "-w", "/etc"])
            .arg(saved.join(form))
            .args(["/bin/sh", "-c", "echo $GREETING; pwd"])
            .output()
            .unwrap();
        assert_eq!(stdout(&o), "hello\n/etc\n", "{form}: {}", stderr(&o));
        let o = rootpack()
            .args(["run", "-d"])
            .arg(saved.join(form))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{form}: {}", stderr(&o));
    }
    let left: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("rootpack-image"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn choosing_and_refusing_images() {
    if !require_root() {
        return;
    }
    let saved = saved();
    let work = tempfile::tempdir().unwrap();
    let layer = |extra: &str| {
        format!(
            "name = \"img\"\n[[layer]]\noci = \"{}\"\n{extra}\n[output]\nformat = \"dir\"\n",
            saved.join("oci.tar").display()
        )
    };
    let o = build(&layer("ref = \"nothere:1\""), work.path());
    assert!(
        stderr(&o).contains("no image named \"nothere:1\""),
        "{}",
        stderr(&o)
    );
    let o = build(&layer("platform = \"linux/s390x\""), work.path());
    // podman's index names no platform: the config's says which it is.
    assert!(
        stderr(&o).contains("is for linux/amd64, not linux/s390x"),
        "{}",
        stderr(&o)
    );
    let o = build(&layer("platform = \"s390x\""), work.path());
    assert!(
        stderr(&o).contains("r.toml:4: layer.platform"),
        "{}",
        stderr(&o)
    );
}

// ---- hand-made layouts, hostile ones included ----

struct Layout {
    dir: PathBuf,
    layers: Vec<(String, String, u64)>,
}

/// A tar from (name, type, link or content) entries.
fn tar_of(entries: &[(&str, char, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, arg) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let data: &[u8] = match kind {
            'f' => {
                h.set_entry_type(tar::EntryType::Regular);
                arg.as_bytes()
            }
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                b""
            }
            'l' | 'h' => {
                h.set_entry_type(if *kind == 'l' {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_link_name_literal(arg).unwrap();
                b""
            }
            _ => unreachable!(),
        };
        h.set_size(data.len() as u64);
        // Raw names: `..` and absolute ones must reach rootpack as written.
        let raw = name.as_bytes();
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        Layout {
            dir: dir.to_path_buf(),
            layers: Vec::new(),
        }
    }

    fn blob(&self, bytes: &[u8]) -> String {
        let d = sha(bytes);
        fs::write(self.dir.join("blobs/sha256").join(&d), bytes).unwrap();
        d
    }

    fn layer(&mut self, entries: &[(&str, char, &str)]) -> &mut Self {
        let tar = tar_of(entries);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let digest = self.blob(&gz);
        self.layers.push((digest, sha(&tar), gz.len() as u64));
        self
    }

    /// Writes config, manifest and index; `tamper` may change the JSON first.
    fn finish(&self, tamper: impl Fn(&mut serde_json::Value, &mut serde_json::Value)) {
        let mut config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["A=1"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids":
                self.layers.iter().map(|l| format!("sha256:{}", l.1)).collect::<Vec<_>>()},
        });
        let mut manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {},
            "layers": self.layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": format!("sha256:{}", l.0), "size": l.2})).collect::<Vec<_>>(),
        });
        tamper(&mut config, &mut manifest);
        let config = serde_json::to_vec(&config).unwrap();
        manifest["config"] = serde_json::json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", self.blob(&config)), "size": config.len()});
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", self.blob(&manifest)), "size": manifest.len()}]});
        fs::write(self.dir.join("index.json"), index.to_string()).unwrap();
        fs::write(
            self.dir.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
    }
}

/// Builds a folder image from a layout; returns the build's output and the tree.
fn unpack(work: &Path) -> (std::process::Output, PathBuf) {
    let o = build(
        &format!(
            "name = \"img\"\n[[layer]]\noci = \"{}\"\n[output]\nformat = \"dir\"\n",
            work.join("layout").display()
        ),
        work,
    );
    (o, work.join("out/img"))
}

/// A host folder with a canary file in it, outside every image.
fn canary() -> (tempfile::TempDir, PathBuf) {
    let host = tempfile::tempdir().unwrap();
    let file = host.path().join("canary");
    fs::write(&file, "host").unwrap();
    (host, file)
}

#[test]
fn hostile_layers_cannot_reach_outside_the_tree() {
    if !require_root() {
        return;
    }
    let (host, canary) = canary();
    let h = host.path().to_str().unwrap();
    type Layers<'a> = Vec<Vec<(&'a str, char, &'a str)>>;
    let cases: Vec<(&str, Layers)> = vec![
        (
            "dotdot",
            vec![vec![("../../../../escaped", 'f', "x"), ("ok", 'f', "y")]],
        ),
        ("absolute", vec![vec![("/abs", 'f', "x")]]),
        (
            "write through a symlink, one layer",
            vec![vec![("esc", 'l', h), ("esc/written", 'f', "x")]],
        ),
        (
            "write through a symlink, two layers",
            vec![vec![("esc", 'l', h)], vec![("esc/written", 'f', "x")]],
        ),
        (
            "whiteout through a symlink",
            vec![vec![("esc", 'l', h)], vec![("esc/.wh.canary", 'f', "")]],
        ),
        (
            "opaque through a symlink",
            vec![vec![("esc", 'l', h)], vec![("esc/.wh..wh..opq", 'f', "")]],
        ),
        (
            "hard link to a host path",
            vec![vec![("link", 'h', canary.to_str().unwrap())]],
        ),
    ];
    for (what, layers) in cases {
        let work = tempfile::tempdir().unwrap();
        let mut layout = Layout::new(&work.path().join("layout"));
        for l in &layers {
            layout.layer(l);
        }
        layout.finish(|_, _| {});
        let (o, tree) = unpack(work.path());
        assert_eq!(fs::read_to_string(&canary).unwrap(), "host", "{what}");
        assert_eq!(
            fs::read_dir(host.path()).unwrap().count(),
            1,
            "{what}: something was written beside the canary"
        );
        assert!(!work.path().join("escaped").exists(), "{what}");
        if o.status.success() {
            // Contained: whatever was written is inside the tree.
            assert!(tree.exists(), "{what}");
        } else {
            assert_eq!(stderr(&o).lines().count(), 1, "{what}: {}", stderr(&o));
        }
    }
    // Absolute names land inside, and an absolute symlink resolves inside the tree.
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    layout.layer(&[
        ("/abs", 'f', "x"),
        ("dir", 'd', ""),
        ("esc", 'l', "/dir"),
        ("esc/inside", 'f', "y"),
    ]);
    layout.finish(|_, _| {});
    let (o, tree) = unpack(work.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(tree.join("abs").is_file());
    assert_eq!(fs::read_to_string(tree.join("dir/inside")).unwrap(), "y");
    drop(host);
}

#[test]
fn whiteouts_opaque_folders_and_type_changes_follow_the_spec() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    layout
        .layer(&[
            ("a", 'd', ""),
            ("a/gone", 'f', "1"),
            ("a/kept", 'f', "2"),
            ("o", 'd', ""),
            ("o/lower", 'f', "3"),
            ("o/sub", 'd', ""),
            ("o/sub/deep", 'f', "4"),
            ("t", 'd', ""),
            ("t/inner", 'f', "5"),
            ("f", 'f', "6"),
            ("shared", 'f', "7"),
        ])
        .layer(&[
            // This layer's own o/new comes before the opaque marker: it stays.
            ("o/new", 'f', "8"),
            ("o/.wh..wh..opq", 'f', ""),
            ("a/.wh.gone", 'f', ""),
            // A folder becomes a file, a file a folder.
            ("t", 'f', "9"),
            ("f", 'd', ""),
            ("f/x", 'f', "10"),
            // A hard link to a lower layer's file.
            ("again", 'h', "shared"),
        ]);
    layout.finish(|_, _| {});
    let (o, tree) = unpack(work.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let l = listing(&tree);
    for present in [
        "./a/kept",
        "./o/new",
        "./t f",
        "./f d",
        "./f/x",
        "./again f 644 1 0:0 2",
    ] {
        assert!(l.contains(present), "{present} missing:\n{l}");
    }
    for absent in ["./a/gone", "./o/lower", "./o/sub", "./t/inner", ".wh."] {
        assert!(!l.contains(absent), "{absent} present:\n{l}");
    }
    // A bare ".wh." is an error.
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("layout"));
    layout.layer(&[(".wh.", 'f', "")]);
    layout.finish(|_, _| {});
    let (o, _) = unpack(work.path());
    assert!(
        stderr(&o).contains("whiteout without a name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn digests_sizes_and_diff_ids_are_checked() {
    if !require_root() {
        return;
    }
    type Tamper = Box<dyn Fn(&Path, &mut serde_json::Value, &mut serde_json::Value)>;
    let cases: Vec<(&str, &str, Tamper)> = vec![
        (
            "wrong diff_id",
            "diff_id",
            Box::new(|_, c, _| {
                c["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into()
            }),
        ),
        (
            "digest shaped like a path",
            "expected sha256: and 64",
            Box::new(|_, _, m| m["layers"][0]["digest"] = "sha256:../../../../etc/passwd".into()),
        ),
        (
            "huge declared size",
            "bytes where the descriptor says",
            Box::new(|_, _, m| m["layers"][0]["size"] = (1u64 << 40).into()),
        ),
        (
            "truncated blob",
            "bytes where the descriptor says",
            Box::new(|dir, _, m| {
                let d = m["layers"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string();
                let p = dir.join("blobs/sha256").join(d);
                let bytes = fs::read(&p).unwrap();
                fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
            }),
        ),
    ];
    for (what, message, tamper) in cases {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("layout");
        let mut layout = Layout::new(&dir);
        layout.layer(&[("file", 'f', "data")]);
        layout.finish(|c, m| tamper(&dir, c, m));
        let (o, _) = unpack(work.path());
        assert!(!o.status.success(), "{what}");
        let err = stderr(&o);
        assert!(err.contains(message), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert!(
            !work.path().join("out/img").exists(),
            "{what}: a tree was left"
        );
    }
}

// ---- outputs ----

fn oci_recipe(dir: &Path, format: &str) -> PathBuf {
    let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml"))
        .unwrap()
        .replace("name = \"busybox\"", "name = \"bbx\"")
        .replace(
            "cmd = [\"/bin/sh\"]",
            "entrypoint = [\"/bin/sh\", \"-c\"]\ncmd = [\"echo $GREETING; id -u; pwd\"]\nworkdir = \"/tmp\"\nlabels = { team = \"rootpack\" }",
        )
        .replace("env = { PATH = \"/bin\", HOME = \"/root\" }", "env = { PATH = \"/bin\", HOME = \"/root\", GREETING = \"hi\" }");
    let path = dir.join(format!("{format}.toml"));
    fs::write(
        &path,
        format!("{text}\n[output]\nformat = \"{format}\"\ntag = \"bbx:1.0\"\n"),
    )
    .unwrap();
    path
}

#[test]
fn outputs_are_reproducible_and_taken_by_skopeo_umoci_and_podman() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let recipe = oci_recipe(w, "oci-archive");
    for out in ["a", "b"] {
        run(rootpack()
            .args(["build", "-q"])
            .arg(&recipe)
            .arg("--out")
            .arg(w.join(out)));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let (a, b) = (
        fs::read(w.join("a/bbx.oci.tar")).unwrap(),
        fs::read(w.join("b/bbx.oci.tar")).unwrap(),
    );
    assert!(a == b, "two builds differ");
    let archive = format!("oci-archive:{}", w.join("a/bbx.oci.tar").display());
    // skopeo checks every digest on the way.
    run(Command::new("skopeo")
        .args(["copy", "-q", &archive])
        .arg(format!(
            "docker-archive:{}:bbx:1.0",
            w.join("docker.tar").display()
        )));
    // umoci checks the diff_ids.
    run(Command::new("skopeo")
        .args(["copy", "-q", &archive])
        .arg(format!("oci:{}:bbx", w.join("layout").display())));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:bbx", w.join("layout").display()))
        .arg(w.join("unpacked")));
    assert!(w.join("unpacked/rootfs/bin/busybox").is_file());
    // The layout output is a layout umoci reads as it is.
    let recipe = oci_recipe(w, "oci");
    run(rootpack()
        .args(["build", "-q"])
        .arg(&recipe)
        .arg("--out")
        .arg(w.join("c")));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:bbx:1.0", w.join("c/bbx.oci").display()))
        .arg(w.join("unpacked2")));
    // podman loads it and runs the recipe's config.
    let o = run(podman().arg("load").arg("-i").arg(w.join("a/bbx.oci.tar")));
    assert!(stdout(&o).contains("bbx:1.0"), "{}", stdout(&o));
    let o = run(podman().args([
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "localhost/bbx:1.0",
    ]));
    assert_eq!(stdout(&o), "hi\n0\n/tmp\n");
    let _ = podman().args(["rmi", "-f", "localhost/bbx:1.0"]).output();
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Registry(std::process::Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// docker-registry serving on a free port of 127.0.0.1, its storage in `w`.
fn start_registry(w: &Path) -> (Registry, u16) {
    let port = free_port();
    let config = w.join("registry.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            w.join("storage").display()
        ),
    )
    .unwrap();
    let registry = Registry(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (registry, port)
}

#[test]
fn a_registry_round_trip_with_skopeo_and_podman() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (_registry, port) = start_registry(w);
    let recipe = oci_recipe(w, "oci-archive");
    run(rootpack()
        .args(["build", "-q"])
        .arg(&recipe)
        .arg("--out")
        .arg(w.join("out")));
    let image = format!("127.0.0.1:{port}/bbx:1.0");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!(
            "oci-archive:{}",
            w.join("out/bbx.oci.tar").display()
        ))
        .arg(format!("docker://{image}")));
    run(podman().args(["pull", "-q", "--tls-verify=false", &image]));
    let o = run(podman().args([
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &image,
    ]));
    assert_eq!(stdout(&o), "hi\n0\n/tmp\n");
    let _ = podman().args(["rmi", "-f", &image]).output();
}

#[test]
fn base_layers_are_kept_byte_for_byte_unless_replaced() {
    if !require_root() {
        return;
    }
    let saved = saved();
    let work = tempfile::tempdir().unwrap();
    let recipe = |extra: &str| {
        format!(
            "name = \"shared\"\nsource_date_epoch = 1700000000\n[[layer]]\noci = \"{}\"\n\
             [[file]]\nto = \"/etc/added\"\ncontent = \"new\\n\"\n{extra}\n[output]\nformat = \"oci\"\n",
            saved.join("layout").display()
        )
    };
    let o = build(&recipe(""), work.path());
    assert!(
        o.status.success() && stderr(&o).is_empty(),
        "{}",
        stderr(&o)
    );
    let layers = |layout: &Path| -> Vec<String> {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(digest)).unwrap())
                .unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let base = layers(&saved.join("layout"));
    let ours = layers(&work.path().join("out/shared.oci"));
    assert_eq!(ours.len(), base.len() + 1, "{ours:?}");
    assert_eq!(ours[..base.len()], base[..]);
    // umoci checks every diff_id of the result.
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!(
            "{}:shared:latest",
            work.path().join("out/shared.oci").display()
        ))
        .arg(work.path().join("unpacked")));
    assert_eq!(
        fs::read_to_string(work.path().join("unpacked/rootfs/etc/added")).unwrap(),
        "new\n"
    );
    // Replacing a file of the base: one flattened layer, and the build says so.
    let path = work.path().join("flat.toml");
    fs::write(
        &path,
        recipe("[[file]]\nto = \"/opq/b\"\ncontent = \"replaced\\n\"\n"),
    )
    .unwrap();
    let o = rootpack()
        .arg("build")
        .arg(&path)
        .arg("--out")
        .arg(work.path().join("out"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("one flattened layer") && stderr(&o).contains("/opq/b"),
        "{}",
        stderr(&o)
    );
    assert_eq!(layers(&work.path().join("out/shared.oci")).len(), 1);
}

/// `[[layer]] oci = "docker://…"`: fetched by skopeo into the build cache (without TLS,
/// as the recipe says for a registry on 127.0.0.1), the same tree as the saved image; a second
/// build needs no registry; `ref` pins a digest, and a wrong one is one line.
#[test]
fn docker_layers_are_pulled_once_into_the_cache() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (registry, port) = start_registry(w);
    let image = format!("127.0.0.1:{port}/bb:1");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", saved().join("oci.tar").display()))
        .arg(format!("docker://{image}")));
    let digest = stdout(&run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{image}"),
    ])))
    .trim()
    .to_string();
    let cache = w.join("cache");
    let build = |out: &str, extra: &str| {
        let recipe = w.join(format!("{out}.toml"));
        fs::write(
            &recipe,
            format!(
                "name = \"img\"\n[[layer]]\noci = \"docker://{image}\"\ntls_verify = false\n{extra}\n[output]\nformat = \"dir\"\n"
            ),
        )
        .unwrap();
        rootpack()
            .args(["build", "--cache"])
            .arg(&cache)
            .arg(&recipe)
            .arg("--out")
            .arg(w.join(out))
            .output()
            .unwrap()
    };
    let want = listing(&saved().join("umoci/rootfs"));
    let o = build("a", "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pulled docker://{image}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(listing(&w.join("a/img")), want);
    let m = fs::read_to_string(w.join("a/img.json")).unwrap();
    assert!(m.contains(&format!("docker://{image}")), "{m}");
    let o = build("pinned", &format!("ref = \"{digest}\""));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&w.join("pinned/img")), want);
    // Without the registry: what is in the cache builds.
    drop(registry);
    let o = build("b", "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("pulled"), "{}", stderr(&o));
    assert_eq!(listing(&w.join("b/img")), want);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let o = build("wrong", &format!("ref = \"{wrong}\""));
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains(&wrong) && e.trim().lines().count() == 1, "{e}");
}
