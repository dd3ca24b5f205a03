//! Recipes: any text, written as a recipe file in a folder that holds a few of the things
//! a recipe may name (a tar, a folder, a file), loaded and validated. No panic; every
//! error names the recipe file and a line that exists.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rootpack::recipe::{self, RecipeError};

fn recipe_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = rootpack_fuzz::sandbox().join("recipe");
        std::fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("files/motd"), "hello\n").unwrap();
        std::fs::write(dir.join("rootfs.tar"), vec![0u8; 1024]).unwrap();
        std::fs::write(dir.join("initrd.img-6.1.0"), b"070701").unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = recipe_dir();
    let path = dir.join("r.toml");
    std::fs::write(&path, data).unwrap();
    match recipe::load(&path) {
        Ok(_) => {}
        Err(RecipeError::At {
            path: p,
            line,
            message,
        }) => {
            assert_eq!(p, path);
            let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
            assert!(
                (1..=lines).contains(&line),
                "line {line} of a {lines}-line recipe: {message}"
            );
            assert!(!message.is_empty());
        }
        Err(e @ RecipeError::Read { .. }) => panic!("reading the recipe failed: {e}"),
    }
});
