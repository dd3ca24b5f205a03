//! A real kernel boots what `pack` writes. qemu (software emulation, no KVM) starts a
//! kernel with an initramfs of busybox, an init, a 20 MB file of random bytes, 64 small
//! files and a hard-link pair whose names fall in different frames, packed with
//! `--frame-size 1` so that it holds several independent frames (zstd frames, gzip
//! members, xz streams, lz4 legacy streams). The init prints the sha256 of what it finds
//! on the serial console and powers off; the test compares with the host's sums.
//!
//! The kernel: `ROOTPACK_TEST_KERNEL`, else the host's `/boot/vmlinuz-$(uname -r)` (or the
//! newest `/boot/vmlinuz-*`), else Debian's current kernel package, downloaded with
//! `apt-get download` (as `bench/make-initrd.sh` does) and unpacked, never installed, into
//! `/var/tmp/rootpack-test-kernel`. Without qemu or a kernel the tests say so and skip;
//! with `ROOTPACK_REQUIRE_ROOT=1` (CI) they fail instead.

mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kernel::*;
use common::*;

/// Boots `kernel` with `initrd` and returns what the console printed.
fn boot(kernel: &Path, initrd: &Path) -> String {
    let mut child = Command::new(QEMU)
        .args([
            "-m",
            "512",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {QEMU}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(
        status.is_some(),
        "{}: no poweroff within {BOOT_TIMEOUT:?}; console:\n{console}",
        initrd.display()
    );
    console
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const INIT: &str = r#"#!/bin/busybox sh
b=/bin/busybox
$b mkdir -p /proc && $b mount -t proc proc /proc
sum() { $b sha256sum "$@" | $b cut -d' ' -f1; }
echo "DATA $(sum /data)"
echo "LINK $($b stat -c %i /a/first) $($b stat -c %i /z/last) $(sum /a/first)"
echo "FILES $($b cat /f/* | sum)"
$b poweroff -f
"#;

/// The tree to boot, and the lines its init must print.
fn make_boot_tree(root: &Path) -> Vec<String> {
    for dir in ["bin", "a", "z", "f"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    fs::write(root.join("init"), INIT).unwrap();
    sh(
        root,
        "chmod 755 init && head -c 20000000 /dev/urandom > data && \
         head -c 100000 /dev/urandom > z/last && ln z/last a/first && \
         for i in $(seq -w 0 63); do head -c 65536 /dev/urandom > f/$i; done",
    );
    let files: Vec<u8> = (0..64)
        .flat_map(|i| fs::read(root.join(format!("f/{i:02}"))).unwrap())
        .collect();
    vec![
        format!("DATA {}", sha256(&fs::read(root.join("data")).unwrap())),
        format!("FILES {}", sha256(&files)),
    ]
}

/// Packs a boot tree with `args`, boots it and checks what the init saw.
fn boots(compress: &str, args: &[&str]) {
    if !has_program(QEMU) {
        unavailable(&format!(
            "{QEMU} not installed (apt-get install qemu-system-x86)"
        ));
        return;
    }
    let kernel = match kernel() {
        Ok(k) => k,
        Err(why) => {
            unavailable(&why);
            return;
        }
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    let want = make_boot_tree(&tree);
    let link = sha256(&fs::read(tree.join("z/last")).unwrap());
    let early = w.join("early");
    fs::create_dir_all(early.join("kernel/x86/microcode")).unwrap();
    fs::write(early.join("kernel/x86/microcode/AuthenticAMD.bin"), "ucode").unwrap();
    let initrd = w.join("initrd.img");
    let packed = run(rootpack()
        .arg("pack")
        .arg(&tree)
        .args(["--compress", compress, "--frame-size", "1"])
        .args(args.iter().map(|a| {
            if *a == "EARLY" {
                early.as_os_str()
            } else {
                std::ffi::OsStr::new(a)
            }
        }))
        .arg("-o")
        .arg(&initrd));
    let line = String::from_utf8_lossy(&packed.stderr).into_owned();
    let frames: u64 = line
        .split(", ")
        .find(|p| p.contains(" frames"))
        .and_then(|p| p.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("not several frames: {line}"));
    assert!(frames >= 5, "{frames} frames: {line}");
    let started = Instant::now();
    let console = boot(&kernel, &initrd);
    eprintln!(
        "{compress} {args:?}: {frames} frames, booted {} in {:.1}s",
        kernel.display(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !console.contains("Initramfs unpacking failed") && !console.contains("Kernel panic"),
        "{console}"
    );
    for line in &want {
        assert!(
            console.contains(line.as_str()),
            "missing {line:?} in:\n{console}"
        );
    }
    // Both names of the hard link (in the first and the last frame) are one inode with
    // the data, which newc stores on the last name.
    let seen = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("LINK "))
        .unwrap_or_else(|| panic!("no LINK line in:\n{console}"));
    let parts: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "{seen}");
    assert_eq!(
        parts[0], parts[1],
        "a/first and z/last are not one inode: {seen}"
    );
    assert_eq!(parts[2], link, "a/first: {seen}");
}

#[test]
fn kernel_boots_zstd_frames() {
    boots("zstd", &[]);
}

#[test]
fn kernel_boots_zstd_frames_after_an_early_segment() {
    boots("zstd", &["--early", "EARLY"]);
}

#[test]
fn kernel_boots_gzip_members() {
    boots("gzip", &[]);
}

#[test]
fn kernel_boots_xz_streams() {
    boots("xz", &[]);
}

#[test]
fn kernel_boots_lz4_streams() {
    boots("lz4", &[]);
}
