//! The shared-library closure of a hostile program with a hostile ld.so.cache. The same
//! bytes are both: the ELF parser reads from the start, and the cache reader looks for its
//! "glibc-ld.so.cache1.1" header anywhere, so a seed is a program with a cache appended.
//! Libraries it names are looked up on the (read-only) host as `ld.so` would. No panic;
//! every error names the file it is about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootpack::tree::elf::{self, ElfError, LdCache};

fuzz_target!(|data: &[u8]| {
    let dir = rootpack_fuzz::sandbox().join("elf");
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("program");
    let cache = dir.join("ld.so.cache");
    std::fs::write(&program, data).unwrap();
    std::fs::write(&cache, data).unwrap();
    let cache = LdCache::load(&cache);
    match elf::closure_with_cache(&program, &cache) {
        Ok(found) => assert_eq!(found.first(), Some(&program), "the program comes first"),
        Err(e) => {
            let path = match &e {
                ElfError::Read { path, .. }
                | ElfError::Parse { path, .. }
                | ElfError::Interpreter { path, .. }
                | ElfError::NotFound { path, .. } => path,
            };
            assert!(!path.as_os_str().is_empty(), "an error about no file: {e}");
            assert!(e.to_string().contains(&path.display().to_string()));
        }
    }
});
