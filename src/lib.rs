//! rootpack: build root-filesystem images from recipes, and read, write and extract the
//! archives they are made of.

pub mod archive;
pub mod fsutil;
pub mod interrupt;
pub mod ops;
pub mod progress;
pub mod tree;
