//! The staging tree: safe path resolution and writing archive entries onto a folder.

pub mod extract;
pub mod safe_path;
