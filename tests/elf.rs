//! The library closure agrees with `ldd` (which runs the loader) on real programs and on a
//! program with an `$ORIGIN` RUNPATH reached through a symlink.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The files `ldd` says the program loads (interpreter included), canonicalized.
fn ldd(program: &Path) -> BTreeSet<PathBuf> {
    let out = run(Command::new("ldd").arg(program));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/')
                .then(|| fs::canonicalize(path).unwrap())
        })
        .collect()
}

fn ours(program: &Path) -> BTreeSet<PathBuf> {
    rootpack::tree::elf::closure(program)
        .unwrap()
        .into_iter()
        .skip(1)
        .map(|p| fs::canonicalize(p).unwrap())
        .collect()
}

#[test]
fn agrees_with_ldd_on_host_programs() {
    for program in [
        "/bin/bash",
        "/bin/ls",
        "/usr/bin/python3",
        "/bin/cat",
        "/usr/bin/env",
    ] {
        let program = Path::new(program);
        assert!(program.exists(), "{} is not installed", program.display());
        assert_eq!(ours(program), ldd(program), "{}", program.display());
    }
}

#[test]
fn follows_origin_runpath_after_resolving_symlinks() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    fs::create_dir_all(w.join("app/lib")).unwrap();
    fs::create_dir_all(w.join("app/bin")).unwrap();
    fs::write(w.join("foo.c"), "int foo(void) { return 42; }\n").unwrap();
    fs::write(
        w.join("main.c"),
        "int foo(void);\nint main(void) { return foo() == 42 ? 0 : 1; }\n",
    )
    .unwrap();
    sh(
        w,
        "gcc -shared -fPIC -o app/lib/libfoo.so.1 -Wl,-soname,libfoo.so.1 foo.c && ln -s libfoo.so.1 app/lib/libfoo.so",
    );
    sh(
        w,
        "gcc -o app/bin/main main.c -Lapp/lib -lfoo -Wl,--enable-new-dtags,-rpath,'$ORIGIN/../lib'",
    );
    // Called through a symlink elsewhere: $ORIGIN is the real file's folder.
    fs::create_dir(w.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(w.join("app/bin/main"), w.join("elsewhere/main")).unwrap();
    let link = w.join("elsewhere/main");
    // Executed through the link, the loader finds libfoo: $ORIGIN is the real folder.
    run(&mut Command::new(&link));
    let found = ours(&link);
    assert!(
        found.contains(&fs::canonicalize(w.join("app/lib/libfoo.so.1")).unwrap()),
        "{found:?}"
    );
    // `ldd LINK` runs `ld.so LINK`, which takes $ORIGIN from the unresolved path and
    // misses libfoo; on the real path it agrees with what exec does.
    assert_eq!(found, ldd(&w.join("app/bin/main")));
    // A missing library is an error naming it.
    fs::remove_file(w.join("app/lib/libfoo.so.1")).unwrap();
    let err = rootpack::tree::elf::closure(&link).unwrap_err().to_string();
    assert!(
        err.contains("needs libfoo.so.1, which is not found"),
        "{err}"
    );
}
