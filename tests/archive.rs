//! `ls`, `extract` and `pack` against archives made by GNU cpio, GNU tar and the Debian
//! compressor programs, 3cpio's own fixtures, and hand-made hostile archives.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// 3cpio's own test archives (ISC licence, see the folder's LICENSE and README), made by
/// GNU cpio and the real compressors: an outside reference for our reader.
const PEER_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/3cpio");

fn peer_fixture(name: &str) -> PathBuf {
    let path = Path::new(PEER_FIXTURES).join(name);
    assert!(path.exists(), "missing peer fixture {}", path.display());
    path
}

fn opts() -> SnapshotOptions {
    SnapshotOptions {
        owners: is_root(),
        dir_mtimes: true,
        symlink_mtimes: true,
    }
}

/// For comparisons with a tree GNU cpio extracted: it leaves symlink times alone and
/// folder times are changed by later entries (ours are compared with the source tree).
fn gnu_opts() -> SnapshotOptions {
    SnapshotOptions {
        symlink_mtimes: false,
        dir_mtimes: false,
        ..opts()
    }
}

/// A fixture tree and its GNU cpio newc archive (`find . | sort | cpio -o -H FORMAT`).
fn gnu_cpio(work: &Path, format: &str) -> (PathBuf, PathBuf) {
    let tree = work.join("tree");
    if !tree.exists() {
        make_tree(&tree);
    }
    let archive = work.join(format!("tree.{format}.cpio"));
    sh(
        &tree,
        &format!(
            "find . | LC_ALL=C sort | cpio --quiet -o -H {format} > {}",
            archive.display()
        ),
    );
    (tree, archive)
}

/// `cpio -idm` of `archive` into a new folder: the reference extraction.
fn cpio_extract(archive: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    sh(
        dest,
        &format!(
            "cpio --quiet -idm --no-absolute-filenames < {}",
            archive.display()
        ),
    );
}

fn extract(archive: &Path, dest: &Path) {
    run(rootpack().arg("extract").arg(archive).arg(dest));
}

fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{cmd:?} should fail with exit 1"
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn extract_equals_gnu_cpio_for_every_compression() {
    let work = tempfile::tempdir().unwrap();
    let (_, archive) = gnu_cpio(work.path(), "newc");
    let reference = work.path().join("reference");
    cpio_extract(&archive, &reference);
    let plain = fs::read(&archive).unwrap();
    let compressors: &[(&str, &[&str])] = &[
        ("none", &["cat"]),
        ("gzip", &["gzip", "-n", "-9"]),
        ("zstd", &["zstd", "-q", "-19"]),
        ("xz", &["xz", "--check=crc32"]),
        ("lzma", &["lzma"]),
        ("bzip2", &["bzip2"]),
        ("lz4", &["lz4", "-l", "-q"]),
        ("lzop", &["lzop"]),
    ];
    for (name, cmd) in compressors {
        let packed = pipe(Command::new(cmd[0]).args(&cmd[1..]), &plain);
        let input = work.path().join(format!("tree.cpio.{name}"));
        fs::write(&input, packed).unwrap();
        let dest = work.path().join(format!("out-{name}"));
        extract(&input, &dest);
        assert_same_tree(&reference, &dest, &gnu_opts());
        let segments = run(rootpack().args(["ls", "--segments"]).arg(&input));
        let table = String::from_utf8(segments.stdout).unwrap();
        assert!(table.contains(&format!(" {name} ")), "{name}: {table}");
    }
}

#[test]
fn crc_and_odc_formats_read_and_crc_is_verified() {
    let work = tempfile::tempdir().unwrap();
    for format in ["crc", "odc"] {
        let (_, archive) = gnu_cpio(work.path(), format);
        let reference = work.path().join(format!("ref-{format}"));
        cpio_extract(&archive, &reference);
        let dest = work.path().join(format!("out-{format}"));
        extract(&archive, &dest);
        assert_same_tree(&reference, &dest, &gnu_opts());
    }
    // Flip one byte of busybox's data in the crc archive: the checksum must catch it.
    let (_, archive) = gnu_cpio(work.path(), "crc");
    let mut bytes = fs::read(&archive).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == b"usr/bin/busybox\0")
        .unwrap()
        + 5000;
    bytes[at] ^= 0xff;
    let bad = work.path().join("bad.crc.cpio");
    fs::write(&bad, bytes).unwrap();
    let dest = work.path().join("bad-out");
    let err = fails(rootpack().arg("extract").arg(&bad).arg(&dest));
    assert!(
        err.contains("checksum mismatch") && err.contains("usr/bin/busybox"),
        "{err}"
    );
    assert!(!dest.exists(), "a failed extract left {}", dest.display());
}

#[test]
fn ls_matches_cpio_t_and_long_shows_metadata() {
    let work = tempfile::tempdir().unwrap();
    let (_, archive) = gnu_cpio(work.path(), "newc");
    let ours = run(rootpack().arg("ls").arg(&archive)).stdout;
    let theirs = run(Command::new("cpio")
        .args(["--quiet", "-t", "-F"])
        .arg(&archive))
    .stdout;
    assert_eq!(ours, theirs);
    let long = String::from_utf8_lossy(&run(rootpack().args(["ls", "-l"]).arg(&archive)).stdout)
        .into_owned();
    assert!(long.contains("-rwsr-xr-x"), "{long}");
    assert!(long.contains(" usr/bin/sh -> busybox\n"), "{long}");
    assert!(
        long.contains("2017-07-14 02:40:00 etc/hostname\n"),
        "{long}"
    );
}

#[test]
fn multi_segment_initramfs_merges_and_splits() {
    let work = tempfile::tempdir().unwrap();
    let early = work.path().join("early");
    fs::create_dir_all(early.join("kernel/x86/microcode")).unwrap();
    fs::write(
        early.join("kernel/x86/microcode/GenuineIntel.bin"),
        vec![0x5a; 3000],
    )
    .unwrap();
    fs::create_dir_all(early.join("etc")).unwrap();
    fs::write(early.join("etc/hostname"), "overridden\n").unwrap();
    let (tree, main) = gnu_cpio(work.path(), "newc");
    let img = work.path().join("initrd.img");
    sh(
        work.path(),
        &format!(
            "(cd early && find . | sort | cpio --quiet -o -H newc) > {img}; \
             zstd -q -c {main} >> {img}",
            img = img.display(),
            main = main.display()
        ),
    );
    let table =
        String::from_utf8(run(rootpack().args(["ls", "--segments"]).arg(&img)).stdout).unwrap();
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.lines().nth(1).unwrap().contains(" none "), "{table}");
    assert!(table.lines().nth(2).unwrap().contains(" zstd "), "{table}");
    let dest = work.path().join("merged");
    extract(&img, &dest);
    // The later segment wins, as in the kernel.
    assert_eq!(
        fs::read_to_string(dest.join("etc/hostname")).unwrap(),
        "rootpack-test\n"
    );
    assert_eq!(
        fs::read(dest.join("kernel/x86/microcode/GenuineIntel.bin"))
            .unwrap()
            .len(),
        3000
    );
    assert!(dest.join("usr/bin/busybox").exists());
    let split = work.path().join("split");
    run(rootpack()
        .args(["extract", "--split"])
        .arg(&img)
        .arg(&split));
    assert_eq!(
        fs::read_to_string(split.join("segment-1/etc/hostname")).unwrap(),
        "overridden\n"
    );
    assert_same_tree(&tree, &split.join("segment-2"), &opts());
    // And initramfs-tools' own reader agrees about the segments.
    let unmk = work.path().join("unmk");
    run(Command::new("unmkinitramfs").arg(&img).arg(&unmk));
    assert!(
        unmk.join("early/kernel/x86/microcode/GenuineIntel.bin")
            .exists()
    );
    assert!(unmk.join("main/usr/bin/busybox").exists());
}

#[test]
fn peer_fixtures_list_and_extract() {
    let work = tempfile::tempdir().unwrap();
    let two = ".\npath\npath/file\n.\nusr\nusr/bin\nusr/bin/ash\nusr/bin/sh\n";
    for name in ["bzip2", "gzip", "lz4", "lzma", "lzop", "xz", "zstd"] {
        let fixture = peer_fixture(&format!("{name}.cpio"));
        let listed = run(rootpack().arg("ls").arg(&fixture)).stdout;
        assert_eq!(String::from_utf8(listed).unwrap(), two, "{name}");
        let dest = work.path().join(name);
        extract(&fixture, &dest);
        assert_eq!(
            fs::read_to_string(dest.join("path/file")).unwrap(),
            "content\n",
            "{name}"
        );
        assert_eq!(
            fs::read_link(dest.join("usr/bin/ash")).unwrap(),
            Path::new("sh"),
            "{name}"
        );
        // Both segments made it.
        assert!(dest.join("usr/bin/sh").is_file(), "{name}");
    }
    let dest = work.path().join("bigdata");
    extract(&peer_fixture("bigdata.cpio"), &dest);
    let zeros = fs::read(dest.join("zeros")).unwrap();
    assert_eq!(zeros.len(), 102_500_000);
    assert!(zeros.iter().all(|&b| b == 0));
}

#[test]
fn peer_path_traversal_fixture_is_contained() {
    let work = tempfile::tempdir().unwrap();
    let victim = Path::new("/tmp/trav.txt");
    let before = victim.exists();
    let dest = work.path().join("out");
    let err = fails(
        rootpack()
            .arg("extract")
            .arg(peer_fixture("path-traversal.cpio"))
            .arg(&dest),
    );
    assert!(err.contains("tmp/trav.txt"), "{err}");
    assert_eq!(
        victim.exists(),
        before,
        "wrote through the symlink into /tmp"
    );
    assert!(!dest.exists());
    assert_eq!(
        list_tree(work.path()),
        vec![work.path().to_path_buf()],
        "left temporary files"
    );
}

/// Extracts a hand-made archive into `work/out`, returning stderr on failure.
fn extract_raw(work: &Path, entries: &[RawEntry]) -> Result<PathBuf, String> {
    let archive = work.join("evil.cpio");
    fs::write(&archive, raw_newc(entries)).unwrap();
    let dest = work.join("out");
    let out = rootpack()
        .arg("extract")
        .arg(&archive)
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    if out.status.success() {
        Ok(dest)
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        Err(stderr)
    }
}

#[test]
fn hard_links_never_write_through_a_replaced_name() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let first = |name| RawEntry {
        ino: 5,
        nlink: 2,
        ..RawEntry::file(name, b"")
    };
    let second = || RawEntry {
        ino: 5,
        nlink: 2,
        ..RawEntry::file(b"g", b"data")
    };
    // The first name replaced by a fifo (as root, a device node would do): writing through
    // the link would block forever or hand the data to the device. The replaced name drops
    // the link set, and the later name becomes a file of its own.
    let fifo = RawEntry {
        mode: 0o010644,
        ..RawEntry::file(b"f", b"")
    };
    let archive = w.join("evil.cpio");
    fs::write(&archive, raw_newc(&[first(b"f"), fifo, second()])).unwrap();
    let dest = w.join("out");
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_rootpack"))
        .arg("extract")
        .arg(&archive)
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ft = fs::symlink_metadata(dest.join("f")).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft));
    assert_eq!(fs::read(dest.join("g")).unwrap(), b"data");
    fs::remove_dir_all(&dest).unwrap();
    // The same with another regular file: the replacement is not overwritten.
    let other = RawEntry {
        ino: 9,
        ..RawEntry::file(b"f", b"other")
    };
    let dest = extract_raw(w, &[first(b"f"), other, second()]).unwrap();
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"other");
    assert_eq!(fs::read(dest.join("g")).unwrap(), b"data");
}

#[test]
fn hostile_names_are_refused_or_kept_inside() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let outside = w.join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), "original\n").unwrap();
    let snapshot_outside = || {
        (
            list_tree(&outside),
            fs::read(outside.join("victim")).unwrap(),
        )
    };
    let before = snapshot_outside();

    // `..` anywhere: refused, nothing created.
    let err = extract_raw(w, &[RawEntry::file(b"../outside/victim", b"evil")]).unwrap_err();
    assert!(
        err.contains("'..'") && err.contains("../outside/victim"),
        "{err}"
    );
    assert!(!w.join("out").exists());

    // Absolute names land inside.
    let dest = extract_raw(w, &[RawEntry::file(b"/abs/file", b"x")]).unwrap();
    assert_eq!(fs::read(dest.join("abs/file")).unwrap(), b"x");
    fs::remove_dir_all(&dest).unwrap();

    // A symlink to an absolute host path, then a file "through" it: resolved inside.
    let target = outside.to_str().unwrap().as_bytes();
    let dest = extract_raw(
        w,
        &[
            RawEntry::symlink(b"a", target),
            RawEntry::file(b"a/victim", b"evil"),
        ],
    );
    // In the root, `a` points at a path that does not exist there: refused, not followed.
    let err = dest.unwrap_err();
    assert!(
        err.contains("a/victim") && err.contains("inside the root"),
        "{err}"
    );
    assert!(!w.join("out").exists());
    // `a -> /etc` with an `etc` folder in the archive: writes <dest>/etc/passwd.
    let dest = extract_raw(
        w,
        &[
            RawEntry::dir(b"etc"),
            RawEntry::symlink(b"a", b"/etc"),
            RawEntry::file(b"a/passwd", b"evil"),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("etc/passwd")).unwrap(), b"evil");
    fs::remove_dir_all(&dest).unwrap();
    // Relative escapes through a symlink stop at the root.
    let up = b"../../../../../../../../../..";
    let dest = extract_raw(
        w,
        &[
            RawEntry::symlink(b"up", up),
            RawEntry::file(b"up/escaped", b"evil"),
        ],
    )
    .unwrap();
    assert_eq!(fs::read(dest.join("escaped")).unwrap(), b"evil");
    fs::remove_dir_all(&dest).unwrap();

    // A file entry reusing a symlink's name replaces the link, never writes through it.
    let victim = outside.join("victim");
    let dest = extract_raw(
        w,
        &[
            RawEntry::symlink(b"x", victim.to_str().unwrap().as_bytes()),
            RawEntry::file(b"x", b"evil"),
        ],
    )
    .unwrap();
    assert!(!dest.join("x").is_symlink());
    assert_eq!(fs::read(dest.join("x")).unwrap(), b"evil");
    fs::remove_dir_all(&dest).unwrap();

    // NUL inside a name and an empty name: refused.
    let err = extract_raw(w, &[RawEntry::file(b"a\0b", b"x")]).unwrap_err();
    assert!(err.contains("NUL"), "{err}");
    let err = extract_raw(w, &[RawEntry::file(b"", b"x")]).unwrap_err();
    assert!(err.contains("empty name"), "{err}");

    assert_eq!(
        snapshot_outside(),
        before,
        "something was written outside the output folder"
    );
    assert_eq!(
        list_tree(w).len(),
        4,
        "left files behind: {:?}",
        list_tree(w)
    );
}

#[test]
fn tar_hard_links_outside_or_absent_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    for (target, want) in [
        ("../../etc/passwd", "'..'"),
        ("missing", "hard link target \"missing\""),
    ] {
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        builder.append_link(&mut h, "link", target).unwrap();
        let archive = w.join("links.tar");
        fs::write(&archive, builder.into_inner().unwrap()).unwrap();
        let err = fails(rootpack().arg("extract").arg(&archive).arg(w.join("out")));
        assert!(err.contains(want), "{err}");
        assert!(!w.join("out").exists());
    }
}

#[test]
fn devices_are_skipped_with_a_warning_when_not_root() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (_, archive) = gnu_cpio(work.path(), "newc");
    let out_dir = work.path().join("nobody");
    fs::create_dir(&out_dir).unwrap();
    sh(
        work.path(),
        "chown 65534:65534 nobody && chmod 755 . && chmod 644 tree.newc.cpio",
    );
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_rootpack"))
        .arg("extract")
        .arg(&archive)
        .arg(out_dir.join("x")));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("2 device node(s) skipped"), "{err}");
    assert!(!out_dir.join("x/dev/null").exists());
    assert!(out_dir.join("x/usr/bin/busybox").is_file());
    assert!(fs::metadata(out_dir.join("x/etc/fifo")).is_ok());
    // A set-user-id file it cannot give to its owner (root) loses the bit.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(out_dir.join("x/usr/bin/suid"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o7777, 0o755, "{mode:o}");
}

#[test]
fn truncated_and_corrupt_archives_fail_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (_, archive) = gnu_cpio(w, "newc");
    let plain = fs::read(&archive).unwrap();
    let dest = w.join("out");
    // Cut inside a header, a name, file data, and just before the trailer.
    let trailer = plain.windows(10).rposition(|x| x == b"TRAILER!!!").unwrap();
    for cut in [50, 115, 3000, trailer - 110] {
        let bad = w.join("cut.cpio");
        fs::write(&bad, &plain[..cut]).unwrap();
        let err = fails(rootpack().arg("extract").arg(&bad).arg(&dest));
        assert!(
            err.contains("truncated") && err.contains("byte"),
            "cut {cut}: {err}"
        );
        assert!(!dest.exists());
        fails(rootpack().arg("ls").arg(&bad));
    }
    // Compressed and cut, or corrupted in the middle.
    for (tool, args) in [
        ("gzip", &["-n"][..]),
        ("zstd", &["-q"][..]),
        ("xz", &["--check=crc32"][..]),
    ] {
        let packed = pipe(Command::new(tool).args(args), &plain);
        let bad = w.join("bad.cpio.x");
        fs::write(&bad, &packed[..packed.len() / 2]).unwrap();
        let err = fails(rootpack().arg("extract").arg(&bad).arg(&dest));
        assert!(
            err.contains(tool) && err.contains("byte"),
            "{tool} cut: {err}"
        );
        let mut flipped = packed.clone();
        let mid = flipped.len() / 2;
        for b in &mut flipped[mid..mid + 64] {
            *b ^= 0x55;
        }
        fs::write(&bad, &flipped).unwrap();
        let err = fails(rootpack().arg("extract").arg(&bad).arg(&dest));
        assert!(err.contains(tool), "{tool} corrupt: {err}");
        assert!(!dest.exists());
    }
    // Intact zstd data with a wrong content checksum (the frame's last 4 bytes).
    let mut packed = pipe(Command::new("zstd").args(["-q", "--check"]), &plain);
    *packed.last_mut().unwrap() ^= 1;
    let bad = w.join("bad-sum.cpio.zst");
    fs::write(&bad, &packed).unwrap();
    for args in [&[bad.as_os_str()][..], &[bad.as_os_str(), dest.as_os_str()]] {
        let cmd = if args.len() == 1 { "ls" } else { "extract" };
        let err = fails(rootpack().arg(cmd).args(args));
        assert!(err.contains("checksum mismatch"), "{cmd}: {err}");
    }
    assert!(!dest.exists());
    // Absurd sizes in a header.
    let huge_name = RawEntry {
        namesize: Some(0xFFFF_FFFF),
        ..RawEntry::file(b"a", b"")
    };
    let err = extract_raw(w, &[huge_name]).unwrap_err();
    assert!(err.contains("name size 4294967295"), "{err}");
    let huge_file = RawEntry {
        filesize: Some(0xFFFF_FFFF),
        ..RawEntry::file(b"a", b"tiny")
    };
    let err = extract_raw(w, &[huge_file]).unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    let err = fails(rootpack().arg("ls").arg("/etc/hostname"));
    assert!(
        err.contains("/etc/hostname") && err.contains("neither a cpio archive"),
        "{err}"
    );
    let entries: Vec<_> = fs::read_dir(w)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !entries
            .iter()
            .any(|n| n.to_string_lossy().contains("rootpack-tmp")),
        "temporary folder left: {entries:?}"
    );
}

#[test]
fn pack_round_trips_and_is_reproducible() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    make_tree(&tree);
    for ext in [
        "cpio", "cpio.gz", "cpio.zst", "cpio.xz", "cpio.lz4", "tar", "tar.gz", "tar.zst",
    ] {
        let a = w.join(format!("a.{ext}"));
        let b = w.join(format!("b.{ext}"));
        run(rootpack().arg("pack").arg(&tree).arg("-o").arg(&a));
        // A copy has other inode numbers and atimes; the archive must not change.
        let copy = w.join("copy");
        sh(w, "rm -rf copy && cp -a tree copy");
        run(rootpack().arg("pack").arg(&copy).arg("-o").arg(&b));
        assert_eq!(
            fs::read(&a).unwrap(),
            fs::read(&b).unwrap(),
            "{ext} is not reproducible"
        );
        let dest = w.join(format!("out-{ext}"));
        extract(&a, &dest);
        assert_same_tree(&tree, &dest, &opts());
    }
    // Third-party readers accept what we write.
    let listed = run(Command::new("cpio")
        .args(["--quiet", "-t", "-F"])
        .arg(w.join("a.cpio")))
    .stdout;
    assert!(String::from_utf8_lossy(&listed).contains("usr/bin/busybox"));
    let reference = w.join("gnu");
    cpio_extract(&w.join("a.cpio"), &reference);
    assert_same_tree(&tree, &reference, &gnu_opts());
    let listed = run(Command::new("tar")
        .args(["-tf"])
        .arg(w.join("a.tar.zst"))
        .arg("--zstd"))
    .stdout;
    assert!(String::from_utf8_lossy(&listed).contains("usr/bin/busybox"));
}

#[test]
fn pack_with_early_segment_is_read_by_initramfs_tools() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    make_tree(&tree);
    let early = w.join("early");
    fs::create_dir_all(early.join("kernel/x86/microcode")).unwrap();
    fs::write(early.join("kernel/x86/microcode/AuthenticAMD.bin"), "ucode").unwrap();
    let img = w.join("initrd.img");
    run(rootpack()
        .arg("pack")
        .arg(&tree)
        .arg("--early")
        .arg(&early)
        .args(["--compress", "zstd", "-o"])
        .arg(&img)
        .env("SOURCE_DATE_EPOCH", "1550000000"));
    let listed =
        String::from_utf8_lossy(&run(Command::new("lsinitramfs").arg(&img)).stdout).into_owned();
    assert!(
        listed.contains("kernel/x86/microcode/AuthenticAMD.bin"),
        "{listed}"
    );
    assert!(listed.contains("usr/bin/busybox"), "{listed}");
    let unmk = w.join("unmk");
    run(Command::new("unmkinitramfs").arg(&img).arg(&unmk));
    assert_eq!(
        fs::read(unmk.join("early/kernel/x86/microcode/AuthenticAMD.bin")).unwrap(),
        b"ucode"
    );
    let dest = w.join("ours");
    run(rootpack().args(["extract", "--split"]).arg(&img).arg(&dest));
    // SOURCE_DATE_EPOCH clamped every later mtime; earlier ones are kept.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::symlink_metadata(dest.join("segment-2/usr/bin/busybox"))
            .unwrap()
            .mtime(),
        1_550_000_000
    );
    assert_eq!(
        fs::symlink_metadata(dest.join("segment-2/etc/hostname"))
            .unwrap()
            .mtime(),
        1_500_000_000
    );
    let seg2 =
        String::from_utf8(run(rootpack().args(["ls", "--segments"]).arg(&img)).stdout).unwrap();
    assert!(seg2.lines().nth(2).unwrap().contains("zstd"), "{seg2}");
}

#[test]
fn extract_reads_gnu_tar_in_every_compression() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    make_tree(&tree);
    // Names and a link target past ustar's 100 bytes: GNU long-name headers, PAX records.
    let long = "d".repeat(120);
    fs::create_dir_all(tree.join(&long).join(&long)).unwrap();
    fs::write(
        tree.join(&long).join(&long).join(format!("{long}.txt")),
        "deep\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!("{long}/{long}/{long}.txt"),
        tree.join(format!("link-{long}")),
    )
    .unwrap();
    for (ext, flag) in [
        ("tar", ""),
        ("tar.gz", "-z"),
        ("tar.zst", "--zstd"),
        ("tar.xz", "-J"),
        ("pax.tar", "--format=pax"),
    ] {
        let archive = w.join(format!("t.{ext}"));
        sh(&tree, &format!("tar -c {flag} -f {} .", archive.display()));
        let dest = w.join(format!("out-{ext}"));
        extract(&archive, &dest);
        assert_same_tree(&tree, &dest, &opts());
    }
    // A long-name header asking for 100 MB is refused before anything is read into memory.
    let mut header = [0u8; 512];
    header[..13].copy_from_slice(b"././@LongLink");
    for (at, field) in [
        (100, &b"0000644\0"[..]),
        (124, b"00620000000\0"),
        (156, b"L"),
    ] {
        header[at..at + field.len()].copy_from_slice(field);
    }
    header[257..265].copy_from_slice(b"ustar  \0");
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let evil = w.join("evil.tar");
    fs::write(&evil, [&header[..], &[0u8; 4096][..]].concat()).unwrap();
    let err = fails(rootpack().arg("extract").arg(&evil).arg(w.join("out-evil")));
    assert!(err.contains("long name of 104857600 bytes"), "{err}");
}

#[test]
fn cli_usage_errors_exit_2_and_completions_work() {
    let out = rootpack().arg("extract").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = run(rootpack().args(["completions", "bash"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rootpack"));
    let out = run(rootpack().arg("--help"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("extract"));
    let work = tempfile::tempdir().unwrap();
    // An output name that says no format is a usage error, like a bad flag.
    let out = rootpack()
        .arg("pack")
        .arg(work.path())
        .arg("-o")
        .arg(work.path().join("x.weird"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--compress"), "{err}");
    let full = work.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("f"), "").unwrap();
    let err = fails(
        rootpack()
            .arg("extract")
            .arg(peer_fixture("single.cpio"))
            .arg(&full),
    );
    assert!(err.contains("not empty"), "{err}");
}

/// `make_tree` (less its Latin-1 name) plus 48 files of 96 KiB under `many/`, between `etc/` and `usr/`: with
/// `--frame-size 1` the archive is cut into several frames, and the hard links `etc/hard1`,
/// `etc/hard2` and `usr/hard3` fall in different ones.
fn make_framed_tree(root: &Path) {
    make_tree(root);
    // 3cpio 0.14 panics on a name that is not UTF-8; other tests cover such names.
    fs::remove_file(root.join(OsStr::from_bytes(b"etc/caf\xe9"))).unwrap();
    let many = root.join("many");
    fs::create_dir(&many).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..48 {
        let data: Vec<u8> = (0..96 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b' ' + (x % 61) as u8
            })
            .collect();
        fs::write(many.join(format!("{i:02}")), data).unwrap();
    }
}

/// Packs `tree` into `out` with `args`, returning the frames the closing line reports.
fn pack_frames(tree: &Path, out: &Path, args: &[&str]) -> u64 {
    let done = run(rootpack()
        .arg("pack")
        .arg(tree)
        .arg("-o")
        .arg(out)
        .args(args));
    let line = String::from_utf8(done.stderr).unwrap();
    assert!(line.starts_with("rootpack: packed "), "{line}");
    // "rootpack: packed FILE (N bytes, M entries, K frames) in 0.12s"
    let frames = line
        .split(", ")
        .find(|part| part.contains(" frame"))
        .and_then(|part| part.split(' ').next()?.parse().ok());
    frames.unwrap_or_else(|| panic!("no frame count in {line:?}"))
}

/// The zstd frames of a file, as byte ranges, found by libzstd.
fn zstd_frame_ranges(data: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut frames = vec![];
    let mut pos = 0;
    while pos < data.len() {
        let n = zstd::zstd_safe::find_frame_compressed_size(&data[pos..]).unwrap();
        frames.push(pos..pos + n);
        pos += n;
    }
    frames
}

#[test]
fn framed_pack_is_read_by_gnu_cpio_initramfs_tools_and_3cpio() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    make_framed_tree(&tree);
    for (ext, decompress, name) in [
        ("cpio.zst", "zstd -dc", "zstd"),
        ("cpio.gz", "gzip -dc", "gzip"),
        ("cpio.xz", "xz -dc", "xz"),
        ("cpio.lz4", "lz4 -dc", "lz4"),
    ] {
        let archive = w.join(format!("framed.{ext}"));
        let frames = pack_frames(&tree, &archive, &["--frame-size", "1"]);
        assert!(frames >= 4, "{ext}: {frames} frames");
        // GNU cpio through the compressor's own program.
        let gnu = w.join(format!("gnu-{name}"));
        fs::create_dir(&gnu).unwrap();
        sh(
            &gnu,
            &format!(
                "{decompress} < {} | cpio --quiet -idm --no-absolute-filenames",
                archive.display()
            ),
        );
        assert_same_tree(&tree, &gnu, &gnu_opts());
        // Names are bytes (one is Latin-1).
        let names = run(Command::new("sh").arg("-c").arg(format!(
            "{decompress} < {} | cpio --quiet -t",
            archive.display()
        )))
        .stdout;
        assert!(names.ends_with(b"usr/hard3\n"), "{ext}");
        // initramfs-tools.
        let listed = run(Command::new("lsinitramfs").arg(&archive)).stdout;
        assert!(listed == names, "{ext}: lsinitramfs");
        let unmk = w.join(format!("unmk-{name}"));
        run(Command::new("unmkinitramfs").arg(&archive).arg(&unmk));
        assert_same_tree(&tree, &unmk, &gnu_opts());
        // 3cpio.
        let listed = run(Command::new("3cpio").arg("-t").arg(&archive)).stdout;
        assert!(listed == names, "{ext}: 3cpio -t");
        let three = w.join(format!("3cpio-{name}"));
        fs::create_dir(&three).unwrap();
        run(Command::new("3cpio")
            .arg("-x")
            .arg("-C")
            .arg(&three)
            .arg(&archive));
        assert_same_tree(&tree, &three, &gnu_opts());
        // Ourselves: one segment, the whole tree, names as cpio lists them.
        let table =
            String::from_utf8(run(rootpack().args(["ls", "--segments"]).arg(&archive)).stdout)
                .unwrap();
        assert_eq!(table.lines().count(), 2, "{ext}: {table}");
        assert!(table.contains(&format!(" {name} ")), "{ext}: {table}");
        let ours = run(rootpack().arg("ls").arg(&archive)).stdout;
        assert!(ours == names, "{ext}: rootpack ls");
        let dest = w.join(format!("ours-{name}"));
        extract(&archive, &dest);
        assert_same_tree(&tree, &dest, &opts());
        for dir in [gnu, unmk, three, dest] {
            fs::remove_dir_all(dir).unwrap();
        }
    }
}

#[test]
fn framed_pack_is_the_same_on_one_core_and_one_frame_is_one_frame() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    make_framed_tree(&tree);
    let every = w.join("every.cpio.zst");
    let frames = pack_frames(&tree, &every, &["--frame-size", "1"]);
    assert!(frames >= 4, "{frames} frames");
    // One core (the affinity is what std's available_parallelism reads).
    let one = w.join("one.cpio.zst");
    run(Command::new("taskset")
        .args(["-c", "0"])
        .arg(env!("CARGO_BIN_EXE_rootpack"))
        .arg("pack")
        .arg(&tree)
        .args(["--frame-size", "1", "-o"])
        .arg(&one));
    let bytes = fs::read(&every).unwrap();
    assert!(
        bytes == fs::read(&one).unwrap(),
        "output depends on the cores"
    );
    // libzstd sees as many frames as we said, each with a content checksum.
    let ranges = zstd_frame_ranges(&bytes);
    assert_eq!(ranges.len() as u64, frames);
    for r in &ranges {
        assert!(
            bytes[r.start + 4] & 0x04 != 0,
            "frame at {} has no checksum",
            r.start
        );
    }
    let single = w.join("single.cpio.zst");
    assert_eq!(pack_frames(&tree, &single, &["--frame-size", "0"]), 1);
    assert_eq!(zstd_frame_ranges(&fs::read(&single).unwrap()).len(), 1);
    // The same cpio inside, whatever the framing.
    let plain = |path: &Path| pipe(Command::new("zstd").arg("-dc"), &fs::read(path).unwrap());
    assert!(plain(&every) == plain(&single));
    // tar is cut at entry ends too; GNU tar reads it through zstd.
    let tar = w.join("framed.tar.zst");
    assert!(pack_frames(&tree, &tar, &["--frame-size", "1"]) >= 4);
    let listed = run(Command::new("tar").arg("--zstd").arg("-tf").arg(&tar)).stdout;
    assert!(
        listed.ends_with(b"usr/hard3\n"),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    let dest = w.join("from-tar");
    extract(&tar, &dest);
    assert_same_tree(&tree, &dest, &opts());
    // The default level is zstd's own (3): the same size as the zstd program gives.
    let default = w.join("default.cpio.zst");
    pack_frames(&tree, &default, &["--frame-size", "0"]);
    let by_zstd = pipe(
        Command::new("zstd").args(["-q", "-3", "-c"]),
        &plain(&single),
    );
    let (ours, theirs) = (fs::read(&default).unwrap().len(), by_zstd.len());
    assert!(
        ours.abs_diff(theirs) * 100 < theirs,
        "default level: {ours} bytes, zstd -3: {theirs}"
    );
}

#[test]
fn a_corrupt_or_cut_frame_names_the_segment_the_frame_and_the_byte() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let tree = w.join("tree");
    make_framed_tree(&tree);
    let good = w.join("good.cpio.zst");
    pack_frames(&tree, &good, &["--frame-size", "1"]);
    let bytes = fs::read(&good).unwrap();
    let frames = zstd_frame_ranges(&bytes);
    assert!(frames.len() >= 4);
    let dest = w.join("out");
    let bad = w.join("bad.cpio.zst");
    let check = |data: &[u8], frame: usize, what: &str| {
        fs::write(&bad, data).unwrap();
        let want = format!("frame {frame} at byte {}", frames[frame - 1].start);
        for cmd in ["ls", "extract"] {
            let mut command = rootpack();
            command.arg(cmd).arg(&bad);
            if cmd == "extract" {
                command.arg(&dest);
            }
            let err = fails(&mut command);
            assert!(
                err.contains("segment 1 (zstd at byte 0)") && err.contains(&want),
                "{what}, {cmd}: {err}"
            );
            assert!(!dest.exists(), "{what}: {cmd} left {}", dest.display());
        }
    };
    // Garbage in the middle of frame 3.
    let mut corrupt = bytes.clone();
    let mid = (frames[2].start + frames[2].end) / 2;
    for b in &mut corrupt[mid..mid + 64] {
        *b ^= 0x55;
    }
    check(&corrupt, 3, "corrupt");
    // Cut inside frame 4.
    let cut = (frames[3].start + frames[3].end) / 2;
    check(&bytes[..cut], 4, "cut");
    // Frame 2's content checksum (its last 4 bytes) wrong.
    let mut sum = bytes.clone();
    sum[frames[1].end - 1] ^= 1;
    check(&sum, 2, "checksum");
    // Frames decode only as a whole: gzip members are numbered too.
    let gz = w.join("good.cpio.gz");
    pack_frames(&tree, &gz, &["--frame-size", "1"]);
    let mut data = fs::read(&gz).unwrap();
    let cut = data.len() - 1000;
    data.truncate(cut);
    fs::write(&bad, &data).unwrap();
    let err = fails(rootpack().arg("extract").arg(&bad).arg(&dest));
    assert!(
        err.contains("segment 1 (gzip") && err.contains("frame "),
        "{err}"
    );
    assert!(!dest.exists());
    let left: Vec<_> = fs::read_dir(w)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rootpack-tmp"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An ext4 image made by mke2fs -d (not by rootpack) is listed and extracted like an
/// archive: the same tree (owners, modes, times, hard links, devices, symlinks) as the one
/// it was made from, and nothing mounted or attached after.
#[test]
fn ext4_images_list_and_extract_as_archives() {
    if !require_root() {
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let w = w.path();
    let src = w.join("src");
    make_tree(&src);
    let image = w.join("fs.img");
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&image)
        .arg("64M"));
    let dest = w.join("x");
    run(rootpack().arg("extract").arg(&image).arg(&dest));
    fs::remove_dir_all(dest.join("lost+found")).unwrap();
    assert_same_tree(&src, &dest, &opts());
    let listed = stdout(&run(rootpack().arg("ls").arg(&image)));
    let mut names: Vec<&str> = listed
        .lines()
        .filter(|l| !l.starts_with("lost+found"))
        .collect();
    names.sort();
    let mut want: Vec<String> = list_tree(&src)
        .iter()
        .filter_map(|p| p.strip_prefix(&src).ok())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(names, want);
    let json = stdout(&run(rootpack().args(["ls", "--json"]).arg(&image)));
    assert!(
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap()
            .is_array()
    );
    assert!(loop_devices(|p| p == image).is_empty());
}
