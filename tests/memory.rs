//! Memory stays flat: extracting a 500 MB archive, stored or compressed, peaks well under
//! 64 MiB of resident memory. (A zstd stream made with `--long=N` needs its 2^N window,
//! in every decoder including the kernel's; the default levels use at most 8 MiB.)

mod common;

use std::fs;

use common::*;

/// Runs `rootpack ARGS` and returns its peak RSS in KiB (from wait4, this child only).
fn peak_rss_kib(args: &[&std::ffi::OsStr]) -> i64 {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let child = rootpack().args(args).spawn().unwrap();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "rootpack {args:?} failed"
    );
    usage.ru_maxrss
}

#[test]
fn extract_of_a_500_mb_archive_stays_under_64_mib() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    fs::create_dir(&tree).unwrap();
    // 500 MB of data that is not all zeros, so the compressed stream has real work to do.
    sh(
        &tree,
        "head -c 20000000 /dev/urandom > seed && for i in $(seq 25); do cat seed; done > big && rm seed",
    );
    let plain = w.join("big.cpio");
    sh(
        &tree,
        &format!("echo big | cpio --quiet -o -H newc > {}", plain.display()),
    );
    assert!(fs::metadata(&plain).unwrap().len() >= 500_000_000);
    let zst = w.join("big.cpio.zst");
    sh(w, "zstd -q -3 big.cpio -o big.cpio.zst");
    fs::remove_dir_all(&tree).unwrap();
    for archive in [&plain, &zst] {
        let dest = w.join("out");
        let kib = peak_rss_kib(&[
            std::ffi::OsStr::new("extract"),
            archive.as_os_str(),
            dest.as_os_str(),
        ]);
        assert_eq!(fs::metadata(dest.join("big")).unwrap().len(), 500_000_000);
        assert!(
            kib < 64 * 1024,
            "{}: peak RSS {} KiB",
            archive.display(),
            kib
        );
        eprintln!("{}: peak RSS {} KiB", archive.display(), kib);
        fs::remove_dir_all(&dest).unwrap();
    }
}
