//! The binary's commands that live outside `main.rs`, one file per group.

pub mod boot;
pub mod build;
pub mod cache;
pub mod containers;
pub mod man;
pub mod unpacked;
