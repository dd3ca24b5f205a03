//! Property tests of the round trips (proptest, 64 cases each):
//! - a random tree, packed in every format and compression by `rootpack pack`, extracts
//!   with `rootpack extract` to the same tree;
//! - a random recipe written as TOML loads back as the same recipe;
//! - N random initramfs segments (every compression, made by the real tools) concatenated
//!   are all read, with every entry, in order.
//!
//! A failing case is printed shrunk, with the seed to replay it (proptest's
//! `PROPTEST_CASES` and `proptest-regressions/` work as usual).

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use rootpack::archive::{Entry, EntryData, Segment, VisitError, Visitor, read_archive};
use rootpack::recipe::{self, Config, Layer, Limits, Method, OutputFormat, Size};

use common::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

/// A scratch folder on a tmpfs (/dev/shm) where there is one: many small trees are made.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

// ---- pack, then extract ----

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>, u32),
    Dir(u32),
    Symlink(Vec<u8>),
    /// A hard link to the n-th file made so far.
    HardLink(usize),
    Fifo,
}

/// One entry: in the n-th folder made so far (the root is the 0th), under a name.
#[derive(Debug, Clone)]
struct Item {
    parent: usize,
    name: Vec<u8>,
    kind: Kind,
    mtime: i64,
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(String::into_bytes),
        Just(b"TRAILER!!!".to_vec()),
        Just(b"070701".to_vec()),
        Just(b".hidden".to_vec()),
        Just("caf\u{e9} \u{1f600}".as_bytes().to_vec()),
        Just(b"latin\xe9".to_vec()),
        Just(b"with space".to_vec()),
        // Past tar's 100-byte name field: a GNU long name or a PAX path.
        "[a-z]{101,140}".prop_map(String::into_bytes),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    let file_mode = prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o444, 0o4755, 0o2711]);
    let dir_mode = prop::sample::select(vec![0o755u32, 0o700, 0o750, 0o1777, 0o2775]);
    prop_oneof![
        4 => (prop::collection::vec(any::<u8>(), 0..3000), file_mode)
            .prop_map(|(data, mode)| Kind::File(data, mode)),
        1 => Just(Kind::File(vec![b'z'; 200_000], 0o644)),
        3 => dir_mode.prop_map(Kind::Dir),
        2 => prop_oneof![
            Just(b"/etc/passwd".to_vec()),
            Just(b"../../outside".to_vec()),
            Just(b"a".to_vec()),
            "[a-z/.]{1,30}".prop_map(String::into_bytes),
            "[a-z]{120,160}".prop_map(String::into_bytes),
        ]
        .prop_map(Kind::Symlink),
        1 => any::<usize>().prop_map(Kind::HardLink),
        1 => Just(Kind::Fifo),
    ]
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec(
        (any::<usize>(), name(), kind(), 0i64..4_000_000_000).prop_map(
            |(parent, name, kind, mtime)| Item {
                parent,
                name,
                kind,
                mtime,
            },
        ),
        0..24,
    )
}

/// Makes the tree; entries that would reuse a name are left out. Times are set last,
/// deepest first, so making a child does not change its folder's time.
fn make(root: &Path, items: &[Item]) {
    let mut dirs = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut made: Vec<(PathBuf, i64, Option<u32>)> = Vec::new();
    for it in items {
        let path = dirs[it.parent % dirs.len()].join(OsStr::from_bytes(&it.name));
        if path.symlink_metadata().is_ok() {
            continue;
        }
        match &it.kind {
            Kind::File(data, mode) => {
                fs::write(&path, data).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
                files.push(path.clone());
            }
            Kind::Dir(mode) => {
                fs::create_dir(&path).unwrap();
                dirs.push(path.clone());
                made.push((path, it.mtime, Some(*mode)));
                continue;
            }
            Kind::Symlink(target) => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).unwrap()
            }
            Kind::HardLink(n) if !files.is_empty() => {
                fs::hard_link(&files[n % files.len()], &path).unwrap()
            }
            Kind::HardLink(_) => continue,
            Kind::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o640),
                    0,
                )
                .unwrap();
            }
        }
        made.push((path, it.mtime, None));
    }
    made.sort_by_key(|(p, ..)| std::cmp::Reverse(p.components().count()));
    for (path, mtime, dir_mode) in made {
        if let Some(mode) = dir_mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        let t = rustix::fs::Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            &path,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

const FORMATS: [(&str, &str); 9] = [
    ("cpio", "none"),
    ("cpio", "gzip"),
    ("cpio", "zstd"),
    ("cpio", "xz"),
    ("cpio", "lz4"),
    ("tar", "none"),
    ("tar", "gzip"),
    ("tar", "zstd"),
    ("tar", "xz"),
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_packed_tree_extracts_to_the_same_tree(items in items(), format in 0..FORMATS.len()) {
        let (fmt, compress) = FORMATS[format];
        let work = scratch();
        let tree = work.path().join("tree");
        fs::create_dir(&tree).unwrap();
        make(&tree, &items);
        let archive = work.path().join("archive");
        run(rootpack()
            .args(["pack", "-q", "--format", fmt, "--compress", compress, "--level", "1", "-o"])
            .arg(&archive)
            .arg(&tree)
            .env_remove("SOURCE_DATE_EPOCH"));
        let out = work.path().join("out");
        run(rootpack().args(["extract", "-q"]).arg(&archive).arg(&out));
        assert_same_tree(
            &tree,
            &out,
            &SnapshotOptions { owners: true, dir_mtimes: true, symlink_mtimes: true },
        );
    }
}

// ---- recipe, TOML, recipe ----

#[derive(Debug, Clone)]
struct RecipeModel {
    name: String,
    sde: Option<i64>,
    layers: Vec<String>,
    files: Vec<(String, String, u32, u32, u32)>,
    dirs: Vec<(String, u32, u32, u32)>,
    symlinks: Vec<(String, String)>,
    mountpoints: Vec<String>,
    config: Config,
    memory: Option<(u64, &'static str, u32)>,
    cpus: Option<f64>,
    pids: Option<u64>,
    format: usize,
    size: Option<u64>,
    method: &'static str,
    label: Option<String>,
}

fn image_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9_.-]{1,6}", 1..4).prop_map(|parts| {
        let parts: Vec<String> = parts
            .into_iter()
            .map(|p| if p == "." || p == ".." { "x".into() } else { p })
            .collect();
        format!("/{}", parts.join("/"))
    })
}

fn model() -> impl Strategy<Value = RecipeModel> {
    let config = (
        prop::collection::vec(".{0,12}", 0..3),
        prop::collection::vec(".{0,12}", 0..3),
        prop::collection::btree_map("[A-Z_]{1,8}", ".{0,16}", 0..4),
        prop::option::of(image_path()),
        prop::option::of("[a-z][a-z0-9-]{0,20}"),
        prop::option::of(prop_oneof![
            (0u32..70000, 0u32..70000).prop_map(|(u, g)| format!("{u}:{g}")),
            "[a-z][a-z0-9]{0,7}",
        ]),
        prop::collection::btree_map("[a-z.]{1,12}", ".{0,16}", 0..3),
        any::<bool>(),
        prop::collection::btree_map(
            prop_oneof![
                Just("kernel.shmmax".to_string()),
                "net\\.ipv4\\.[a-z_]{1,12}",
                "fs\\.mqueue\\.[a-z_]{1,8}",
            ],
            ".{0,16}",
            0..3,
        ),
    )
        .prop_map(
            |(entrypoint, cmd, env, workdir, hostname, user, labels, no_new_privileges, sysctl)| {
                Config {
                    entrypoint,
                    cmd,
                    env: env.into_iter().collect::<BTreeMap<_, _>>(),
                    workdir,
                    hostname,
                    user,
                    labels,
                    no_new_privileges,
                    sysctl,
                }
            },
        );
    let unit = prop::sample::select(vec![("K", 10u32), ("M", 20), ("G", 30)]);
    (
        (
            "[a-z0-9][a-z0-9._-]{0,15}",
            prop::option::of(0i64..1 << 40),
            prop::collection::vec(prop::sample::select(vec!["rootfs", "other"]), 0..3),
            prop::collection::vec(
                (
                    image_path(),
                    any::<String>(),
                    0u32..=0o7777,
                    any::<u32>(),
                    any::<u32>(),
                ),
                0..4,
            ),
            prop::collection::vec(
                (image_path(), 0u32..=0o7777, any::<u32>(), any::<u32>()),
                0..3,
            ),
            prop::collection::vec((image_path(), ".{1,30}"), 0..3),
            prop::collection::vec(image_path(), 0..4),
        ),
        (
            config,
            prop::option::of((1u64..5000, unit)),
            prop::option::of(0.01f64..256.0),
            prop::option::of(any::<u64>().prop_map(|p| p >> 1)),
            0..OutputFormat::ALL.len(),
            prop::option::of(1u64..100_000),
            prop::sample::select(vec!["auto", "populate", "mount"]),
            prop::option::of("[a-z0-9 _-]{0,16}"),
        ),
    )
        .prop_map(
            |(
                (name, sde, layers, files, dirs, symlinks, mountpoints),
                (config, memory, cpus, pids, format, size, method, label),
            )| RecipeModel {
                name,
                sde,
                layers: layers.into_iter().map(String::from).collect(),
                files,
                dirs,
                symlinks,
                mountpoints,
                config,
                // At least 1 MiB, in the unit chosen.
                memory: memory
                    .map(|(n, (unit, shift))| (n.max(1 << (20 - shift.min(20))), unit, shift)),
                cpus,
                pids,
                format,
                size,
                method,
                label,
            },
        )
}

/// The model as a recipe file, written by the `toml` crate (which does the quoting).
fn to_toml(m: &RecipeModel) -> String {
    use toml::{Table, Value};
    let s = |v: &str| Value::String(v.to_string());
    let strings = |v: &[String]| Value::Array(v.iter().map(|x| s(x)).collect());
    let table = |pairs: Vec<(&str, Value)>| {
        Value::Table(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Table>(),
        )
    };
    let mut t = Table::new();
    t.insert("name".into(), s(&m.name));
    if let Some(e) = m.sde {
        t.insert("source_date_epoch".into(), Value::Integer(e));
    }
    let array = |items: Vec<Value>| Value::Array(items);
    t.insert(
        "layer".into(),
        array(
            m.layers
                .iter()
                .map(|l| table(vec![("dir", s(l))]))
                .collect(),
        ),
    );
    t.insert(
        "file".into(),
        array(
            m.files
                .iter()
                .map(|(to, content, mode, uid, gid)| {
                    table(vec![
                        ("to", s(to)),
                        ("content", s(content)),
                        ("mode", s(&format!("0{mode:o}"))),
                        ("uid", Value::Integer(*uid as i64)),
                        ("gid", Value::Integer(*gid as i64)),
                    ])
                })
                .collect(),
        ),
    );
    t.insert(
        "dir".into(),
        array(
            m.dirs
                .iter()
                .map(|(path, mode, uid, gid)| {
                    table(vec![
                        ("path", s(path)),
                        ("mode", s(&format!("{mode:o}"))),
                        ("uid", Value::Integer(*uid as i64)),
                        ("gid", Value::Integer(*gid as i64)),
                    ])
                })
                .collect(),
        ),
    );
    t.insert(
        "symlink".into(),
        array(
            m.symlinks
                .iter()
                .map(|(path, target)| table(vec![("path", s(path)), ("target", s(target))]))
                .collect(),
        ),
    );
    t.insert("mountpoints".into(), strings(&m.mountpoints));
    let c = &m.config;
    let mut config = vec![
        ("entrypoint", strings(&c.entrypoint)),
        ("cmd", strings(&c.cmd)),
        (
            "env",
            Value::Table(c.env.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
        ),
        (
            "labels",
            Value::Table(c.labels.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
        ),
        ("no_new_privileges", Value::Boolean(c.no_new_privileges)),
        (
            "sysctl",
            Value::Table(c.sysctl.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
        ),
    ];
    for (key, v) in [
        ("workdir", &c.workdir),
        ("hostname", &c.hostname),
        ("user", &c.user),
    ] {
        if let Some(v) = v {
            config.push((key, s(v)));
        }
    }
    t.insert("config".into(), table(config));
    let mut limits = vec![];
    if let Some((n, unit, _)) = m.memory {
        limits.push(("memory", s(&format!("{n}{unit}"))));
    }
    if let Some(c) = m.cpus {
        limits.push(("cpus", Value::Float(c)));
    }
    if let Some(p) = m.pids {
        limits.push(("pids", Value::Integer(p as i64)));
    }
    t.insert("limits".into(), table(limits));
    let mut output = vec![
        ("format", s(&OutputFormat::ALL[m.format].name())),
        ("method", s(m.method)),
    ];
    output.push((
        "size",
        s(&m.size.map_or("auto".to_string(), |n| format!("{n}M"))),
    ));
    if let Some(l) = &m.label {
        output.push(("label", s(l)));
    }
    t.insert("output".into(), table(output));
    toml::to_string(&t).unwrap()
}

fn rel(image_path: &str) -> &[u8] {
    image_path.trim_start_matches('/').as_bytes()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_recipe_written_as_toml_loads_as_the_same_recipe(m in model()) {
        let work = scratch();
        for dir in ["rootfs", "other"] {
            fs::create_dir(work.path().join(dir)).unwrap();
        }
        let text = to_toml(&m);
        let path = work.path().join("recipe.toml");
        fs::write(&path, &text).unwrap();
        let r = recipe::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(&r.name, &m.name);
        prop_assert_eq!(r.source_date_epoch, m.sde);
        let layers: Vec<Layer> = m.layers.iter().map(|l| Layer::Dir(work.path().join(l))).collect();
        prop_assert_eq!(&r.layers, &layers);
        prop_assert_eq!(r.files.len(), m.files.len());
        for (f, (to, content, mode, uid, gid)) in r.files.iter().zip(&m.files) {
            prop_assert_eq!(f.to.as_bytes(), rel(to));
            match &f.source {
                recipe::FileSource::Inline(bytes) => prop_assert_eq!(bytes, content.as_bytes()),
                other => prop_assert!(false, "{other:?}"),
            }
            prop_assert_eq!((f.mode, f.uid, f.gid), (*mode, *uid, *gid));
        }
        prop_assert_eq!(r.dirs.len(), m.dirs.len());
        for (d, (path, mode, uid, gid)) in r.dirs.iter().zip(&m.dirs) {
            prop_assert_eq!(d.path.as_bytes(), rel(path));
            prop_assert_eq!((d.mode, d.uid, d.gid), (*mode, *uid, *gid));
        }
        prop_assert_eq!(r.symlinks.len(), m.symlinks.len());
        for (s, (path, target)) in r.symlinks.iter().zip(&m.symlinks) {
            prop_assert_eq!(s.path.as_bytes(), rel(path));
            prop_assert_eq!(&s.target, target);
        }
        let mounts: Vec<&[u8]> = r.mountpoints.iter().map(|p| p.as_bytes()).collect();
        let want: Vec<&[u8]> = m.mountpoints.iter().map(|p| rel(p)).collect();
        prop_assert_eq!(mounts, want);
        prop_assert_eq!(&r.config, &m.config);
        let limits = Limits {
            memory: m.memory.map(|(n, _, shift)| n << shift),
            cpus: m.cpus,
            pids: m.pids,
        };
        prop_assert_eq!(&r.limits, &limits);
        prop_assert_eq!(r.output.format, OutputFormat::ALL[m.format]);
        prop_assert_eq!(r.output.size, m.size.map_or(Size::Auto, |n| Size::Bytes(n << 20)));
        let method = match m.method {
            "auto" => Method::Auto,
            "populate" => Method::Populate,
            _ => Method::Mount,
        };
        prop_assert_eq!(r.output.method, method);
        prop_assert_eq!(&r.output.label, &m.label);
    }
}

// ---- N segments, concatenated, read in order ----

const COMPRESSORS: [(&str, &[&str]); 8] = [
    ("none", &["cat"]),
    ("gzip", &["gzip", "-n"]),
    ("zstd", &["zstd", "-q"]),
    ("xz", &["xz", "--check=crc32"]),
    ("lzma", &["xz", "--format=lzma"]),
    ("bzip2", &["bzip2"]),
    ("lz4", &["lz4", "-l", "-q"]),
    ("lzop", &["lzop", "-c"]),
];

#[derive(Debug, Clone)]
struct SegmentModel {
    compressor: usize,
    /// One or more archives (a compressed segment may hold several, as the kernel reads).
    archives: Vec<Vec<String>>,
    padding: usize,
}

fn segments() -> impl Strategy<Value = Vec<SegmentModel>> {
    prop::collection::vec(
        (
            0..COMPRESSORS.len(),
            prop::collection::vec(
                prop::collection::vec("[a-z]{1,10}(/[a-z]{1,5})?", 0..6),
                1..3,
            ),
            0usize..4,
        )
            .prop_map(|(compressor, mut archives, padding)| {
                if compressor == 0 {
                    // Uncompressed: one archive is the segment.
                    archives.truncate(1);
                }
                SegmentModel {
                    compressor,
                    archives,
                    padding,
                }
            }),
        1..7,
    )
}

/// Records segments and entries as read.
#[derive(Default)]
struct Recorder {
    segments: Vec<(String, Vec<String>)>,
}

impl Visitor for Recorder {
    fn segment_start(&mut self, s: &Segment) -> Result<(), VisitError> {
        self.segments.push((s.compression.to_string(), Vec::new()));
        Ok(())
    }
    fn entry(&mut self, e: &Entry, _: &mut EntryData<'_>) -> Result<(), VisitError> {
        let name = String::from_utf8(e.name.clone()).unwrap();
        self.segments.last_mut().unwrap().1.push(name);
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn concatenated_segments_are_all_read_in_order(model in segments()) {
        let mut file = Vec::new();
        let mut expected = Vec::new();
        for seg in &model {
            let mut plain = Vec::new();
            let mut names = Vec::new();
            for archive in &seg.archives {
                let data: Vec<Vec<u8>> = archive.iter().map(|n| n.as_bytes().to_vec()).collect();
                let entries: Vec<RawEntry> = data
                    .iter()
                    .map(|n| RawEntry::file(n, b"data"))
                    .collect();
                plain.extend(raw_newc(&entries));
                names.extend(archive.iter().cloned());
            }
            let (name, cmd) = COMPRESSORS[seg.compressor];
            let mut stored = pipe(Command::new(cmd[0]).args(&cmd[1..]), &plain);
            // Segments start 4-aligned, as the kernel wants, then some zero padding. The
            // lz4 legacy format has no end marker: the kernel's unlz4, like our reader,
            // reads on until a zero chunk size, so one zero word must follow it.
            let padding = if name == "lz4" { seg.padding.max(1) } else { seg.padding };
            stored.resize(stored.len().next_multiple_of(4) + 4 * padding, 0);
            file.extend(stored);
            expected.push((name.to_string(), names));
        }
        let work = scratch();
        let path = work.path().join("initrd");
        fs::write(&path, &file).unwrap();
        let mut rec = Recorder::default();
        let never = || false;
        read_archive(&fs::File::open(&path).unwrap(), &mut rec, None, &never)
            .unwrap_or_else(|e| panic!("{e}: {model:?}"));
        // Streams of one kind back to back are the frames of one segment, as the kernel
        // and `zstd -dc` read them: compare kinds with such runs joined, and every entry
        // in order.
        let joined = |segments: &[(String, Vec<String>)]| {
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            for (kind, names) in segments {
                match out.last_mut() {
                    Some((last, all)) if last == kind => all.extend(names.iter().cloned()),
                    _ => out.push((kind.clone(), names.clone())),
                }
            }
            out
        };
        prop_assert_eq!(joined(&rec.segments), joined(&expected));
    }
}
