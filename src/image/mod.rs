//! Image files and the kernel resources used to make and use them.

pub mod ext4;
pub mod ext4_inodes;
pub mod ext4_read;
pub mod ext4_xattrs;
pub mod loopdev;
pub mod mount;
