//! Extended attributes written into a finished ext4 image by inode number, for a rootless
//! build, whose staging tree cannot hold `security.*` (file capabilities) or `trusted.*`.
//!
//! e2fsprogs' `debugfs ea_set` does the writing: in the inode when the value fits, else in
//! an attribute block shared by equal sets, with the checksums metadata_csum needs, and
//! POSIX ACLs turned into ext4's own encoding. That is the same library code that
//! `mke2fs -d` uses for a root build, so both give the same image. One `debugfs` run takes
//! every attribute from a command file; each value comes from a file of its own, so any
//! bytes go through.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use super::ext4_inodes::InodeError;
use crate::xattr::Xattrs;

/// Sets `xattrs` on the inodes given by number.
pub fn set(image: &Path, xattrs: &[(u32, Xattrs)]) -> Result<(), InodeError> {
    let err = |what: String| InodeError::Format {
        path: image.display().to_string(),
        what,
    };
    let io = |source: std::io::Error| InodeError::Io {
        path: image.display().to_string(),
        source,
    };
    let dir = crate::fsutil::TempDir::beside(&image.with_extension("xattrs")).map_err(io)?;
    let mut commands = Vec::new();
    let mut n = 0;
    for (ino, list) in xattrs {
        for (name, value) in list {
            if name
                .iter()
                .any(|&b| !(b'!'..=b'~').contains(&b) || b == b'"')
            {
                return Err(err(format!(
                    "inode {ino}: extended attribute {:?} has a name e2fsprogs cannot be given",
                    name.escape_ascii().to_string()
                )));
            }
            std::fs::write(dir.path().join(n.to_string()), value).map_err(io)?;
            // By a name relative to debugfs's working folder: the command parser splits
            // at spaces, which the output folder's path may have.
            writeln!(
                commands,
                "ea_set -f {n} <{ino}> {}",
                String::from_utf8_lossy(name)
            )
            .map_err(io)?;
            n += 1;
        }
    }
    std::fs::write(dir.path().join("commands"), &commands).map_err(io)?;
    let image = std::path::absolute(image).map_err(io)?;
    let out = Command::new(crate::fsutil::system_tool("debugfs"))
        .current_dir(dir.path())
        .args(["-w", "-f", "commands"])
        .arg(&image)
        .output()
        .map_err(|e| {
            err(format!(
                "cannot run debugfs (apt-get install e2fsprogs): {e}"
            ))
        })?;
    // debugfs exits 0 whatever its commands do; a command's failure is a line on stderr
    // that names it (its banner is the only other line).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .collect();
    if !out.status.success() || !failed.is_empty() {
        return Err(err(format!(
            "debugfs could not set extended attributes: {}",
            failed.join("; ")
        )));
    }
    Ok(())
}
