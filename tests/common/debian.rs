//! A real distribution for the tests: Debian 12 (minbase, plus iputils-ping and passwd)
//! made by `mmdebstrap` as a tarball, once per machine and shared by every test and test
//! run (about 15 s to make; `ROOTPACK_TEST_DEBIAN` names another). Its `/usr/bin/ping`
//! carries `security.capability` (`cap_net_raw=ep`) as a PAX `SCHILY.xattr` record.
//! Without mmdebstrap or the archive the tests say so and skip; under
//! `ROOTPACK_REQUIRE_ROOT=1` (CI) they fail instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::kernel::{has_program, unavailable};

pub const CACHE: &str = "/var/tmp/rootpack-test-debian";

/// The tarball, or None after saying why (a failure under CI).
pub fn debian_tar() -> Option<PathBuf> {
    static TAR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match TAR.get_or_init(make).clone() {
        Ok(p) => Some(p),
        Err(why) => {
            unavailable(&why);
            None
        }
    }
}

fn make() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("ROOTPACK_TEST_DEBIAN") {
        return Ok(PathBuf::from(p));
    }
    let tar = PathBuf::from(CACHE).join("bookworm-minbase-ping-passwd.tar");
    std::fs::create_dir_all(CACHE).map_err(|e| format!("{CACHE}: {e}"))?;
    // Test binaries run at once: one makes it, the others wait for it.
    let lock = std::fs::File::create(format!("{CACHE}/lock")).map_err(|e| e.to_string())?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| e.to_string())?;
    if tar.exists() {
        return Ok(tar);
    }
    if !has_program("mmdebstrap") {
        return Err("mmdebstrap is not installed (scripts/install-deps.sh --tests)".into());
    }
    let partial = tar.with_extension("partial.tar");
    let out = Command::new("mmdebstrap")
        .args([
            "--quiet",
            "--variant=minbase",
            "--include=iputils-ping,passwd",
            "bookworm",
        ])
        .arg(&partial)
        .output()
        .map_err(|e| format!("mmdebstrap: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mmdebstrap failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&partial, &tar).map_err(|e| e.to_string())?;
    Ok(tar)
}
