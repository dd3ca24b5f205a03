//! Docker-format seccomp profiles: parsed, then compiled against the default capability
//! set and a fixed kernel. No panic; a parse error names its line and column or the
//! `syscalls[N]` rule; a compiled filter fits the kernel's limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootpack::run::seccomp::{compile, docker};
use rootpack::run::security::capability_mask;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let profile = match docker::parse(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                e.contains(" line ")
                    || e.starts_with("syscalls[")
                    || e.starts_with("defaultAction"),
                "a profile error that says not where: {e}"
            );
            return;
        }
    };
    let caps = capability_mask(&[], &[]).expect("the default capability set");
    for kernel in [(4, 14), (6, 1)] {
        if let Ok(filter) = compile(&profile, caps, kernel) {
            assert!(filter.len() <= 4096, "{} instructions", filter.len());
            assert!(!filter.is_empty());
        }
    }
});
