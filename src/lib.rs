//! rootpack: build root-filesystem images from recipes, and read, write and extract the
//! archives they are made of.

pub mod archive;
pub mod builder;
pub mod cache;
pub mod cleanup;
pub mod containers;
pub mod digest;
pub mod format;
pub mod fsutil;
pub mod ids;
pub mod image;
pub mod interrupt;
pub mod kernel;
pub mod manifest;
pub mod mapped;
pub mod net;
pub mod ops;
pub mod progress;
pub mod recipe;
pub mod run;
pub mod runtime;
pub mod sysctl;
pub mod time_format;
pub mod tree;
pub mod vm;
pub mod walk;
pub mod xattr;
