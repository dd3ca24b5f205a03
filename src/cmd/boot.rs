//! `boot`: an image as a virtual machine.

use anyhow::Result;

use crate::cli::{AccelArg, BootArgs, MachineArg};
use rootpack::vm::{self, Accel, BootError, Machine};

/// Boots; the exit status is the guest command's (124 on a timeout, as timeout(1) has
/// it; 125 when rootpack failed, as `run` has it).
pub fn boot(args: &BootArgs, quiet: bool) -> Result<u8> {
    let opts = vm::BootOptions {
        image: args.image.clone(),
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        append: args.append.clone(),
        memory_mib: args.memory >> 20,
        cpus: args.cpus,
        writable: args.writable,
        timeout: args.timeout,
        accel: match args.accel {
            AccelArg::Auto => Accel::Auto,
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        },
        machine: match args.machine {
            MachineArg::Pc => Machine::Pc,
            MachineArg::Microvm => Machine::Microvm,
        },
        command: args.command.clone(),
        quiet,
    };
    match vm::boot(&opts) {
        Ok(status) => Ok(status.clamp(0, 255) as u8),
        Err(e @ BootError::Timeout(_)) => {
            eprintln!("rootpack: {e}");
            Ok(124)
        }
        Err(e) => Err(e.into()),
    }
}
