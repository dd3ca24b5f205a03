//! Names the git commit in `rootpack --version` when built from a checkout: sets
//! `ROOTPACK_GIT` to " (git abc1234)", or to "" where git or the repository is absent (a
//! source tarball, a vendored crate).

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

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
