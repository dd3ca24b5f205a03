//! The kernel the boot tests start: `ROOTPACK_TEST_KERNEL`, else the host's
//! `/boot/vmlinuz-$(uname -r)` (or the newest `/boot/vmlinuz-*`), else Debian's current
//! kernel package, downloaded with `apt-get download` (as `bench/make-initrd.sh` does) and
//! unpacked, never installed, into `/var/tmp/rootpack-test-kernel`: its `vmlinuz-*`, and
//! its modules under `root/lib/modules` for the tests that need a kernel with its modules.
//! Without qemu or a kernel the tests say so and skip; with `ROOTPACK_REQUIRE_ROOT=1` (CI)
//! they fail instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::*;

pub const QEMU: &str = "qemu-system-x86_64";
pub const CACHE: &str = "/var/tmp/rootpack-test-kernel";
/// Under software emulation a boot takes 5-10 s here; a slow CI machine gets more.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Skips (or fails under ROOTPACK_REQUIRE_ROOT=1) with a reason.
pub fn unavailable(why: &str) -> bool {
    let current = std::thread::current();
    let test = current.name().unwrap_or("this test");
    if std::env::var("ROOTPACK_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: {why} (ROOTPACK_REQUIRE_ROOT=1)");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

pub fn has_program(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A bootable x86-64 kernel image, found or fetched once per test run.
pub fn kernel() -> Result<PathBuf, String> {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KERNEL.get_or_init(find_kernel).clone()
}

fn find_kernel() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("ROOTPACK_TEST_KERNEL") {
        return Ok(PathBuf::from(path));
    }
    let release = String::from_utf8_lossy(&run(Command::new("uname").arg("-r")).stdout)
        .trim()
        .to_string();
    let host = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    if fs::File::open(&host).is_ok() {
        return Ok(host);
    }
    let newest = |dir: &Path| {
        let mut found: Vec<PathBuf> = fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                    && fs::File::open(p).is_ok()
            })
            .collect();
        found.sort();
        found.pop()
    };
    if let Some(k) = newest(Path::new("/boot")) {
        return Ok(k);
    }
    if let Some(k) = newest(Path::new(CACHE)) {
        return Ok(k);
    }
    fetch_debian_kernel()?;
    newest(Path::new(CACHE)).ok_or_else(|| format!("no vmlinuz-* in {CACHE} after unpacking"))
}

/// Downloads Debian's current kernel package and keeps its vmlinuz in CACHE.
fn fetch_debian_kernel() -> Result<(), String> {
    if !is_root() || !has_program("apt-get") || !has_program("dpkg") {
        return Err("no kernel in /boot, and no root with apt-get to fetch Debian's".into());
    }
    let package = || {
        let depends = Command::new("apt-cache")
            .args(["depends", "linux-image-amd64"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&depends.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| {
                p.starts_with("linux-image-")
                    && p.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
            })
            .map(str::to_string)
    };
    // A machine whose packages were all installed may never have fetched the lists.
    let package = match package() {
        Some(p) => p,
        None => {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            package().ok_or("apt-cache knows no linux-image-amd64 after apt-get update")?
        }
    };
    fs::create_dir_all(CACHE).map_err(|e| format!("{CACHE}: {e}"))?;
    let work = tempfile::tempdir_in(CACHE).map_err(|e| format!("{CACHE}: {e}"))?;
    let w = work.path();
    let fetched = Command::new("apt-get")
        .args(["download", "-q", &package])
        .current_dir(w)
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !fetched.status.success() {
        return Err(format!(
            "apt-get download {package} failed: {}",
            String::from_utf8_lossy(&fetched.stderr)
        ));
    }
    let unpacked = Command::new("sh")
        .arg("-ec")
        .arg(
            "dpkg --fsys-tarfile ./*.deb | tar -x --wildcards './boot/vmlinuz-*' './lib/modules/*'",
        )
        .current_dir(w)
        .output()
        .map_err(|e| format!("dpkg: {e}"))?;
    if !unpacked.status.success() {
        return Err(format!(
            "unpacking {package}: {}",
            String::from_utf8_lossy(&unpacked.stderr)
        ));
    }
    // Renames, so a concurrent run never sees half a kernel: its modules first.
    let root = Path::new(CACHE).join("root");
    if !root.exists() {
        fs::create_dir_all(w.join("root")).map_err(|e| e.to_string())?;
        fs::rename(w.join("lib"), w.join("root/lib")).map_err(|e| e.to_string())?;
        let _ = fs::rename(w.join("root"), &root);
    }
    for entry in fs::read_dir(w.join("boot"))
        .map_err(|e| e.to_string())?
        .flatten()
    {
        fs::rename(entry.path(), Path::new(CACHE).join(entry.file_name()))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A kernel with its modules: (vmlinuz, the root whose `lib/modules/RELEASE` has them,
/// RELEASE). The host's when `/lib/modules` has the modules of one of its `/boot`
/// kernels, else Debian's package, fetched once.
pub fn kernel_with_modules() -> Result<(PathBuf, PathBuf, String), String> {
    static FOUND: OnceLock<Result<(PathBuf, PathBuf, String), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let with_modules = |boot: &Path, root: &Path| {
                let mut found: Vec<(PathBuf, PathBuf, String)> = fs::read_dir(boot)
                    .ok()?
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().into_string().ok()?;
                        let release = name.strip_prefix("vmlinuz-")?.to_string();
                        let modules = root.join("lib/modules").join(&release);
                        (modules.join("modules.order").is_file()
                            && fs::File::open(e.path()).is_ok())
                        .then(|| (e.path(), root.to_path_buf(), release))
                    })
                    .collect();
                found.sort();
                found.pop()
            };
            if let Some(k) = with_modules(Path::new("/boot"), Path::new("/")) {
                return Ok(k);
            }
            let cached = Path::new(CACHE);
            if let Some(k) = with_modules(cached, &cached.join("root")) {
                return Ok(k);
            }
            fetch_debian_kernel()?;
            with_modules(cached, &cached.join("root"))
                .ok_or_else(|| format!("no kernel with its modules in {CACHE} after unpacking"))
        })
        .clone()
}
