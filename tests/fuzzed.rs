//! What fuzzing found, kept: every input that once crashed a fuzz target
//! (`tests/fixtures/fuzz/TARGET/`, see `fuzz/` and `scripts/fuzz.sh`) is read again here
//! by the real binary and must fail cleanly, with the byte it failed at, and without
//! writing anything. Fixes to a decoder are also checked against the real tool.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fuzz");

/// The kept inputs of one target.
fn kept(target: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(Path::new(FIXTURES).join(target))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// `ls` and `extract` of a hostile archive: an error (exit 1, not a crash) that names a
/// byte offset, and no destination folder left behind.
fn assert_fails_cleanly(archive: &Path) {
    let name = archive.display();
    let o = rootpack().arg("ls").arg(archive).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "ls {name}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("byte "), "ls {name}: {err}");
    assert!(!err.contains("panicked"), "ls {name}: {err}");
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("out");
    let o = rootpack()
        .arg("extract")
        .arg(archive)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "extract {name}: {}", stderr(&o));
    assert!(
        stderr(&o).contains("byte "),
        "extract {name}: {}",
        stderr(&o)
    );
    assert_eq!(
        list_tree(work.path()),
        [work.path()],
        "extract {name} left something behind"
    );
}

#[test]
fn every_archive_that_crashed_a_fuzz_target_is_now_an_error() {
    let inputs: Vec<_> = ["cpio", "extract", "tar"]
        .iter()
        .flat_map(|t| kept(t))
        .collect();
    assert!(!inputs.is_empty(), "no kept fuzz inputs in {FIXTURES}");
    for input in inputs {
        assert_fails_cleanly(&input);
    }
}

/// lzokay-native 0.1 panicked ("index out of bounds", on the decoding thread) on an lzop
/// block whose back-reference pointed before the block's start; our decoder says so.
#[test]
fn an_lzo_reference_before_the_block_start_is_reported() {
    let input = Path::new(FIXTURES).join("cpio/lzo-lookbehind-overrun");
    let o = rootpack().arg("ls").arg(&input).output().unwrap();
    let err = stderr(&o);
    assert!(
        err.contains("segment 1 (lzop at byte 0)")
            && err.contains("corrupt compressed data")
            && err.contains("lookbehind overrun"),
        "{err}"
    );
}

/// Our LZO1X decoder against the real `lzop` at its fast and its best levels (LZO1X-1 and
/// LZO1X-999, which use every instruction), on data of every kind over several blocks.
#[test]
fn lzop_archives_of_every_level_extract_as_cpio_wrote_them() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // Text, runs, a repeating pattern with far references, incompressible bytes.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let noise: Vec<u8> = (0..300_000).map(|_| random() as u8).collect();
    let text: Vec<u8> = (0..40_000)
        .flat_map(|i| format!("line {i}: the quick brown fox {}\n", i % 97).into_bytes())
        .collect();
    let pattern: Vec<u8> = (0..700_000u32).map(|i| (i % 50_021 % 251) as u8).collect();
    fs::write(tree.join("noise"), &noise).unwrap();
    fs::write(tree.join("text"), &text).unwrap();
    fs::write(tree.join("pattern"), &pattern).unwrap();
    fs::write(tree.join("zeros"), vec![0u8; 600_000]).unwrap();
    fs::write(tree.join("tiny"), b"x").unwrap();
    let cpio = work.path().join("tree.cpio");
    sh(
        &tree,
        &format!(
            "find . | LC_ALL=C sort | cpio --quiet -o -H newc > {}",
            cpio.display()
        ),
    );
    let plain = fs::read(&cpio).unwrap();
    for level in ["-1", "-3", "-7", "-9"] {
        let packed = pipe(Command::new("lzop").args([level, "-c"]), &plain);
        let input = work.path().join(format!("tree{level}.cpio.lzo"));
        fs::write(&input, packed).unwrap();
        let dest = work.path().join(format!("out{level}"));
        run(rootpack().arg("extract").arg("-q").arg(&input).arg(&dest));
        for name in ["noise", "text", "pattern", "zeros", "tiny"] {
            assert!(
                fs::read(dest.join(name)).unwrap() == fs::read(tree.join(name)).unwrap(),
                "lzop {level}: {name} differs"
            );
        }
    }
}

/// Found by the pack/extract property (tests/properties.rs): a top-level file named
/// `TRAILER!!!` was packed under that exact name, which ends a cpio archive for every
/// reader (the kernel's too), so it and everything after it were lost.
#[test]
fn a_file_named_like_the_cpio_trailer_survives_pack_and_extract() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("TRAILER!!!"), "not the end\n").unwrap();
    fs::write(tree.join("after"), "still here\n").unwrap();
    let archive = work.path().join("a.cpio.gz");
    run(rootpack()
        .args(["pack", "-q", "-o"])
        .arg(&archive)
        .arg(&tree));
    let out = work.path().join("out");
    run(rootpack().args(["extract", "-q"]).arg(&archive).arg(&out));
    assert_eq!(
        fs::read_to_string(out.join("TRAILER!!!")).unwrap(),
        "not the end\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("after")).unwrap(),
        "still here\n"
    );
}

/// Found by the same property: tar symlink targets went through the tar crate's path
/// clean-up, so `a/.`, `a//b` and `dir/` came back as `a`, `a/b` and `dir`.
#[test]
fn tar_symlink_targets_are_kept_byte_for_byte() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let targets = ["a/.", "a//b", "dir/", "./x", "../../up", "/abs//olute/"];
    for (i, t) in targets.iter().enumerate() {
        std::os::unix::fs::symlink(t, tree.join(format!("l{i}"))).unwrap();
    }
    let archive = work.path().join("a.tar");
    run(rootpack()
        .args(["pack", "-q", "-o"])
        .arg(&archive)
        .arg(&tree));
    let out = work.path().join("out");
    run(rootpack().args(["extract", "-q"]).arg(&archive).arg(&out));
    for (i, t) in targets.iter().enumerate() {
        // As bytes: `Path` equality would take "a//b" and "a/b" for one path.
        let link = fs::read_link(out.join(format!("l{i}"))).unwrap();
        assert_eq!(link.as_os_str().as_bytes(), t.as_bytes(), "l{i}");
    }
}

/// A tar header the crate rejects was reported at the segment's start ("byte 0") only;
/// the message now names the header's own offset.
#[test]
fn a_bad_tar_header_is_reported_at_its_offset() {
    let work = tempfile::tempdir().unwrap();
    fs::write(work.path().join("a"), "a\n").unwrap();
    fs::write(work.path().join("b"), "b\n").unwrap();
    sh(work.path(), "tar --format=ustar -cf t.tar a b");
    let mut bytes = fs::read(work.path().join("t.tar")).unwrap();
    // The second header (after a's header and one data block): break its checksum.
    bytes[1024 + 148..1024 + 156].copy_from_slice(b"0000000\0");
    let bad = work.path().join("bad.tar");
    fs::write(&bad, bytes).unwrap();
    let o = rootpack().arg("ls").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("byte 1024: tar header: archive header checksum mismatch"),
        "{}",
        stderr(&o)
    );
}
