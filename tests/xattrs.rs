//! Extended attributes end to end (issue 23): a Debian tarball made by mmdebstrap, whose
//! ping carries a file capability, and a folder with `user.*` attributes and ACLs, built
//! into every format, as root and rootless, and read back by rootpack's own `extract` and
//! by GNU tar, umoci, getcap, getfattr, getfacl and e2fsck.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::debian::debian_tar;
use common::*;

/// (file name, `[output]` keys) for each format and method that keeps attributes.
const KEEPING: &[(&str, &str)] = &[
    ("populate", "format = \"ext4\"\nmethod = \"populate\""),
    ("mount", "format = \"ext4\"\nmethod = \"mount\""),
    ("tar", "format = \"tar\""),
    ("oci", "format = \"oci\""),
    ("dir", "format = \"dir\""),
];

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    /// A folder nobody (uid 65534) can build in too.
    fn new() -> Work {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Work { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `NAME.toml` with one layer and `[output]`; builds it into `out` (as nobody
    /// with `rootless`); gives the image's path and what the build said.
    fn build(&self, name: &str, layer: &str, output: &str, rootless: bool) -> (PathBuf, String) {
        let recipe = self.path().join(format!("{name}.toml"));
        fs::write(
            &recipe,
            format!(
                "name = \"{name}\"\nsource_date_epoch = 1700000000\n[[layer]]\n{layer}\n\
                 [output]\n{output}\n"
            ),
        )
        .unwrap();
        // A space in the rootless folder: the debugfs commands must not split at it.
        let out = self
            .path()
            .join(if rootless { "out rootless" } else { "out" });
        let mut cmd = if rootless {
            fs::create_dir_all(&out).unwrap();
            run(Command::new("chown").arg("65534:65534").arg(&out));
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_rootpack"))
                .env("HOME", &out)
                .env("ROOTPACK_CACHE", "off");
            c
        } else {
            rootpack()
        };
        let o = run(cmd.arg("build").arg(&recipe).arg("--out").arg(&out));
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(out.join(format!("{name}.json"))).unwrap()).unwrap();
        let image = manifest["image"].as_str().unwrap();
        (out.join(Path::new(image).file_name().unwrap()), stderr(&o))
    }

    /// The image's tree: the folder itself, or what `rootpack extract` writes.
    fn tree(&self, image: &Path) -> PathBuf {
        if image.is_dir() && !image.join("oci-layout").exists() {
            return image.to_path_buf();
        }
        let to = self.path().join(format!(
            "x-{}-{}",
            image
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy(),
            image.file_name().unwrap().to_string_lossy()
        ));
        run(rootpack().arg("extract").arg(image).arg(&to));
        to
    }
}

use std::os::unix::fs::PermissionsExt;

fn text(o: Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn getcap(path: &Path) -> String {
    text(run(Command::new("getcap").arg(path)))
}

fn e2fsck_clean(image: &Path) {
    run(Command::new("e2fsck").arg("-fn").arg(image));
}

#[test]
fn file_capabilities_come_through_every_format_root_and_rootless() {
    if !require_root() {
        return;
    }
    let Some(tar) = debian_tar() else { return };
    let w = Work::new();
    let layer = format!("tar = \"{}\"", tar.display());
    let mut ext4 = None;
    for (name, output) in KEEPING {
        let (image, _) = w.build(name, &layer, output, false);
        if output.contains("ext4") {
            e2fsck_clean(&image);
            ext4.get_or_insert_with(|| fs::read(&image).unwrap());
        }
        let ping = w.tree(&image).join("usr/bin/ping");
        assert!(getcap(&ping).contains("cap_net_raw=ep"), "{name}: {ping:?}");
    }
    // Rootless: recorded, then written by e2fsprogs into the inode; the same bytes as root's.
    let (image, said) = w.build("populate", &layer, KEEPING[0].1, true);
    assert!(!said.contains("not kept"), "{said}");
    e2fsck_clean(&image);
    assert!(
        fs::read(&image).unwrap() == ext4.unwrap(),
        "rootless ext4 differs from root's"
    );
    let (image, _) = w.build("tar", &layer, KEEPING[2].1, true);
    assert!(fs::read(&image).unwrap() == fs::read(w.path().join("out/tar.tar")).unwrap());
    // What other tools read: GNU tar, umoci.
    let gnu = w.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xf"])
        .arg(w.path().join("out/tar.tar"))
        .arg("-C")
        .arg(&gnu)
        .arg("usr/bin/ping"));
    assert!(getcap(&gnu.join("usr/bin/ping")).contains("cap_net_raw=ep"));
    let unpacked = w.path().join("umoci");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!(
            "{}:oci:latest",
            w.path().join("out/oci.oci").display()
        ))
        .arg(&unpacked));
    assert!(getcap(&unpacked.join("rootfs/usr/bin/ping")).contains("cap_net_raw=ep"));
    // cpio cannot carry it, and says so once.
    let (image, said) = w.build("cpio", &layer, "format = \"cpio\"", false);
    assert!(
        said.contains("extended attributes of 1 entry left out: cpio cannot carry them"),
        "{said}"
    );
    assert!(getcap(&w.tree(&image).join("usr/bin/ping")).is_empty());
    // `ls` shows them.
    let listed = text(run(rootpack()
        .args(["ls", "--json"])
        .arg(w.path().join("out/tar.tar"))));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let ping = entries
        .iter()
        .find(|e| e["name"] == "usr/bin/ping")
        .unwrap();
    assert_eq!(
        ping["xattrs"]["security.capability"],
        "0x0100000200200000000000000000000000000000"
    );
}

#[test]
fn user_attributes_and_acls_of_a_folder_layer_are_kept_but_in_cpio() {
    if !require_root() {
        return;
    }
    let w = Work::new();
    let src = w.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    sh(
        &src,
        "setfattr -n user.rootpack -v hello f
         setfacl -m u:1234:rw f
         setfacl -d -m u:1234:rx d
         chmod -R go+rX . && chown -R 65534:65534 .",
    );
    let check = |tree: &Path, what: &str| {
        let attrs = text(run(Command::new("getfattr")
            .args(["-d", "-m", "-", "--absolute-names"])
            .arg(tree.join("f"))));
        assert!(attrs.contains("user.rootpack=\"hello\""), "{what}: {attrs}");
        let acl = text(run(Command::new("getfacl").arg("-cn").arg(tree.join("f"))));
        assert!(acl.contains("user:1234:rw-"), "{what}: {acl}");
        let acl = text(run(Command::new("getfacl").arg("-cn").arg(tree.join("d"))));
        assert!(acl.contains("default:user:1234:r-x"), "{what}: {acl}");
    };
    let layer = format!("dir = \"{}\"", src.display());
    let mut ext4 = None;
    for (name, output) in KEEPING {
        let (image, _) = w.build(name, &layer, output, false);
        if name == &"populate" {
            e2fsck_clean(&image);
            ext4 = Some(fs::read(&image).unwrap());
        }
        check(&w.tree(&image), name);
    }
    let (image, _) = w.build("populate", &layer, KEEPING[0].1, true);
    e2fsck_clean(&image);
    check(&w.tree(&image), "rootless ext4");
    assert!(
        fs::read(&image).unwrap() == ext4.unwrap(),
        "rootless ext4 differs from root's"
    );
    let (_, said) = w.build("cpio", &layer, "format = \"cpio\"", false);
    assert!(
        said.contains("extended attributes of 2 entries left out"),
        "{said}"
    );
}

#[test]
fn libarchive_records_are_read_and_hostile_ones_refused() {
    let w = Work::new();
    // bsdtar writes LIBARCHIVE.xattr.NAME=BASE64 beside SCHILY.xattr.NAME; a tar with only
    // the libarchive form is made by hand here.
    let value = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let record = |key: &str, v: &str| {
        let rest = key.len() + v.len() + 3;
        let mut len = rest + 1;
        while rest + len.to_string().len() != len {
            len += 1;
        }
        format!("{len} {key}={v}\n")
    };
    let good = record(
        "LIBARCHIVE.xattr.security.capability",
        "AQAAAgAgAAAAAAAAAAAAAAAAAAA",
    );
    let bad = record("LIBARCHIVE.xattr.user.x", "!!!");
    for (name, pax, ok) in [("good", &good, true), ("bad", &bad, false)] {
        let path = w.path().join(format!("{name}.tar"));
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        let header = || {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_mode(0o755);
            h
        };
        let mut h = header();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(pax.len() as u64);
        h.set_path("x").unwrap();
        h.set_cksum();
        b.append(&h, pax.as_bytes()).unwrap();
        let mut h = header();
        h.set_size(1);
        b.append_data(&mut h, "ping", &b"x"[..]).unwrap();
        b.finish().unwrap();
        drop(b);
        let o = rootpack()
            .args(["ls", "--json"])
            .arg(&path)
            .output()
            .unwrap();
        if ok {
            assert!(o.status.success(), "{}", stderr(&o));
            let entries: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                entries[0]["xattrs"]["security.capability"],
                format!("0x{hex}")
            );
        } else {
            assert!(!o.status.success());
            let err = stderr(&o);
            assert!(
                err.contains("LIBARCHIVE.xattr.user.x: bad base64 value"),
                "{err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
}
