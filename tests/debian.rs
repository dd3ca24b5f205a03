//! A real distribution, faithfully (issue 23): a Debian tree made by mmdebstrap, with a user
//! added by a build step, run as that user: set-id programs and file capabilities work as
//! in Docker and podman (no_new_privs off by default), and not with
//! `--security-opt no-new-privileges`; the README's Debian recipe, with its `apt-get
//! install` step, builds the same bytes twice.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::debian::debian_tar;
use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn build(recipe: &Path, out: &Path) -> PathBuf {
    build_ok(recipe, out, &[]);
    let name = recipe.file_stem().unwrap().to_string_lossy();
    out.join(format!("{name}.ext4"))
}

fn run_as_app(image: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    rootpack()
        .arg("run")
        .args(["-u", "app"])
        .args(extra)
        .arg(image)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

#[test]
fn a_user_runs_set_id_programs_and_file_capabilities_as_in_docker() {
    if !require_root() {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    let w = tempfile::tempdir().unwrap();
    let recipe = w.path().join("users.toml");
    fs::write(
        &recipe,
        format!(
            "name = \"users\"\n[[layer]]\ntar = \"{}\"\n[[run]]\nscript = \"useradd --create-home app\"\n",
            tar.display()
        ),
    )
    .unwrap();
    let image = build(&recipe, &w.path().join("out"));
    let ping = ["ping", "-c1", "-W5", "127.0.0.1"];
    let chage = ["chage", "-l", "app"];
    // Datagram ICMP sockets off, so ping needs its file capability (a raw socket).
    let no_dgram = ["--sysctl", "net.ipv4.ping_group_range=1 0"];
    let ok = |o: Output, what: &str| assert!(o.status.success(), "{what}: {}", stderr(&o));
    ok(
        run_as_app(&image, &no_dgram, &ping),
        "ping by its capability",
    );
    ok(
        run_as_app(&image, &[], &chage),
        "chage, set-group-id shadow",
    );
    // The default ping_group_range lets ping work without the capability, as in Docker.
    let nnp = ["--security-opt", "no-new-privileges"];
    ok(
        run_as_app(&image, &nnp, &ping),
        "ping by an ICMP datagram socket",
    );
    let nnp_no_dgram = [nnp[0], nnp[1], no_dgram[0], no_dgram[1]];
    let o = run_as_app(&image, &nnp_no_dgram, &ping);
    assert!(
        !o.status.success(),
        "ping with no_new_privs: {}",
        stdout(&o)
    );
    let o = run_as_app(&image, &nnp, &chage);
    assert!(
        !o.status.success(),
        "chage with no_new_privs: {}",
        stdout(&o)
    );
    // What the capability gives stays within Docker's bounding set.
    let o = run_as_app(&image, &[], &["grep", "^Cap", "/proc/self/status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("CapBnd:\t00000000a80425fb"),
        "{}",
        stdout(&o)
    );
}

/// The README's Debian recipe, on the mmdebstrap tarball: `apt-get update` and `install`
/// from Debian's archive (the one network the tests reach besides 127.0.0.1), built twice
/// without a cache; the same bytes.
#[test]
fn the_readme_debian_recipe_builds_the_same_bytes_twice() {
    if !require_root() {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let section = readme.split("## Build steps").nth(1).unwrap();
    let text = section.split("```toml\n").nth(1).unwrap();
    let text = text.split("```").next().unwrap();
    let w = tempfile::tempdir_in("/var/tmp").unwrap();
    // The recipe names a compressed tarball; rootpack goes by the content.
    std::os::unix::fs::symlink(&tar, w.path().join("debian-bookworm-rootfs.tar.zst")).unwrap();
    let recipe = w.path().join("debian-tools.toml");
    fs::write(&recipe, text).unwrap();
    let first = build(&recipe, &w.path().join("a"));
    let second = build(&recipe, &w.path().join("b"));
    // The cache mount's folder was made for the first build.
    assert!(w.path().join("cache/apt").is_dir());
    let sha = |p: &Path| stdout(&run(Command::new("sha256sum").arg(p)))[..64].to_string();
    if sha(&first) != sha(&second) {
        let (x, y) = (w.path().join("x"), w.path().join("y"));
        run(rootpack().arg("extract").arg(&first).arg(&x));
        run(rootpack().arg("extract").arg(&second).arg(&y));
        let diff = Command::new("diff")
            .args(["-rq", "--no-dereference"])
            .arg(&x)
            .arg(&y)
            .output();
        panic!(
            "two builds differ:\n{}",
            diff.map(|o| stdout(&o)).unwrap_or_default()
        );
    }
    let o = rootpack()
        .args(["run", "-u", "app"])
        .arg(&first)
        .args(["--", "curl", "--version"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
