//! What each entry of a tree should be in an image when the tree itself cannot hold it (a
//! rootless build cannot chown, set set-id bits on foreign files or mknod): recorded by the
//! extractor and `[[run]]` steps, written into the ext4 inodes by `image::ext4_inodes` and
//! into archives and OCI layers by `archive::pack`.

use super::safe_path::RelPath;
use crate::archive::{Entry, Kind};

pub use crate::archive::pack::{Recorded, RecordedTree};

/// What an entry should be in an image, by its path: a hard link's name gives nothing new
/// (its inode is recorded under the first name).
pub fn record(recorded: &mut RecordedTree, path: &RelPath, entry: &Entry) {
    let (kind, rdev) = match &entry.kind {
        Kind::Dir => (0o040000, (0, 0)),
        Kind::File => (0o100000, (0, 0)),
        Kind::Symlink(_) => (0o120000, (0, 0)),
        Kind::CharDevice { major, minor } => (0o020000, (*major, *minor)),
        Kind::BlockDevice { major, minor } => (0o060000, (*major, *minor)),
        Kind::Fifo => (0o010000, (0, 0)),
        Kind::Socket => (0o140000, (0, 0)),
        Kind::HardLink(_) => return,
    };
    let mode = if matches!(entry.kind, Kind::Symlink(_)) {
        0o777
    } else {
        entry.mode & 0o7777
    };
    recorded.insert(
        path.as_bytes().to_vec(),
        Recorded {
            uid: entry.uid,
            gid: entry.gid,
            mode: kind | mode,
            rdev,
            xattrs: entry.xattrs.clone(),
        },
    );
}
