//! The staging tree: safe path resolution, writing entries onto a folder, and injecting
//! host programs with their libraries.

pub mod copier;
pub mod elf;
pub mod extract;
pub mod inject;
pub mod layer;
pub mod recorded;
pub mod safe_path;
