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

/// Runs `rootpack ARGS` and returns its peak RSS in KiB, for commands given as strings.
fn peak_rss_of(args: &[&std::path::Path]) -> i64 {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    peak_rss_kib(&args)
}

#[test]
fn pack_and_parallel_extract_of_500_mb_in_frames_stay_bounded() {
    use std::path::Path;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    fs::create_dir(&tree).unwrap();
    // 100 files of 5 MB, and one of 100 MB (a frame far past the frame size).
    sh(
        &tree,
        "head -c 5000000 /dev/urandom > seed && for i in $(seq 100); do cp seed f$i; done && \
         for i in $(seq 20); do cat seed; done > big && rm seed",
    );
    let archive = w.join("frames.cpio.zst");
    let kib = peak_rss_of(&[
        Path::new("pack"),
        &tree,
        Path::new("-q"),
        Path::new("-o"),
        &archive,
    ]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    // Workers + 2 frames of 8 MiB in flight, and a zstd context per worker.
    let cap = 64 * 1024 + cores * 16 * 1024;
    assert!(kib < cap, "pack: peak RSS {kib} KiB (cap {cap})");
    eprintln!("pack: peak RSS {kib} KiB");
    let dest = w.join("out");
    let kib = peak_rss_of(&[Path::new("extract"), &archive, &dest]);
    assert_eq!(fs::metadata(dest.join("big")).unwrap().len(), 100_000_000);
    assert_eq!(fs::metadata(dest.join("f100")).unwrap().len(), 5_000_000);
    // Per decoding worker: its frame's blocks and the compressed pages it has read ahead.
    let cap = 32 * 1024 + cores * 16 * 1024;
    assert!(
        kib < cap,
        "parallel extract: peak RSS {kib} KiB (cap {cap})"
    );
    eprintln!("parallel extract: peak RSS {kib} KiB");
}
