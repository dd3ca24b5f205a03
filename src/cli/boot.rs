//! `boot`'s options.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Verbosity;
use super::values::{parse_memory, parse_timeout};

#[derive(Debug, Args)]
pub struct BootArgs {
    /// The ext4 image (checked against its manifest's sha256 first).
    pub image: PathBuf,
    /// The kernel [default: /boot/vmlinuz-RELEASE of the image's modules, else the newest
    /// /boot/vmlinuz-*].
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// The initramfs [default: a boot-initramfs.* image beside the image].
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// More kernel command line.
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,
    /// The guest's memory.
    #[arg(short, long, value_name = "SIZE", default_value = "512M", value_parser = parse_memory)]
    pub memory: u64,
    /// The guest's processors.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,
    /// Write to the image (default: a snapshot the boot throws away).
    #[arg(long)]
    pub writable: bool,
    /// Stop the guest after this long (90s, 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
    /// kvm, tcg (software emulation), or auto: KVM when /dev/kvm can be used, TCG after a
    /// guest that does not start under it.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// pc, or microvm (faster to start; its kernel needs virtio_mmio).
    #[arg(long, value_enum, default_value = "pc")]
    pub machine: MachineArg,
    #[command(flatten)]
    pub verbosity: Verbosity,
    /// Run this in the guest (chrooted in the image) instead of its init.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MachineArg {
    Pc,
    Microvm,
}
