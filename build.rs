//! Names the git commit in `rootpack --version` when built from a checkout: sets
//! `ROOTPACK_GIT` to " (git abc1234)", or to "" where git or the repository is absent (a
//! source tarball, a vendored crate). Compiles the container's init, `src/run/pid1.c`, into
//! a small static program that the binary carries (see `run::init`).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Reruns this script when `path` changes; a path that does not exist is not watched (cargo
/// would rerun the script on every build).
fn watch(path: Option<String>) {
    if let Some(p) = path.filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}

/// The freestanding init: no libc, no loader, a few kilobytes.
fn compile_pid1() {
    const SOURCE: &str = "src/run/pid1.c";
    println!("cargo:rerun-if-changed={SOURCE}");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("pid1");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-static",
            "-nostdlib",
            "-ffreestanding",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-fno-pie",
            "-no-pie",
            "-Os",
            "-Wall",
            "-Werror",
            "-Wl,--build-id=none",
            "-s",
            "-o",
        ])
        .arg(&out)
        .arg(SOURCE)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "compiling {SOURCE} with {cc} failed ({other:?}): install a C compiler (build-essential)"
        ),
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    compile_pid1();
    let suffix = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
            for path in ["HEAD", "packed-refs"] {
                watch(git(&["rev-parse", "--git-path", path]));
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch(git(&["rev-parse", "--git-path", &branch]));
            }
            format!(" (git {commit})")
        }
        None => String::new(),
    };
    println!("cargo:rustc-env=ROOTPACK_GIT={suffix}");
}
