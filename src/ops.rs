//! The archive commands as library calls: list, extract and pack. The CLI only parses
//! arguments, calls these and prints.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::archive::oci;
use crate::archive::pack::{PackError, PackOptions, PackSummary, pack};
use crate::archive::{
    Entry, EntryData, Kind, ReadError, SegmentSummary, VisitError, Visitor, read_archive,
};
use crate::fsutil::{AtomicFile, TempDir};
use crate::image::ext4_read::{self, is_ext4};
use crate::interrupt::interrupted;
use crate::time_format::format_utc;
use crate::tree::extract::{ExtractError, ExtractReport, Extractor};
use crate::tree::layer::{LayerApplier, Listing};
use crate::tree::safe_path::Root;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path}")]
    Read { path: PathBuf, source: ReadError },
    #[error("cannot write {path}")]
    Output { path: PathBuf, source: io::Error },
    #[error("{path}: folder is not empty (pass --merge to extract into it anyway)")]
    NotEmpty { path: PathBuf },
    #[error("{path}")]
    Extract { path: PathBuf, source: ExtractError },
    #[error("{path}")]
    Pack { path: PathBuf, source: PackError },
    #[error(transparent)]
    Image(#[from] oci::OciError),
}

fn open(path: &Path) -> Result<File, OpError> {
    File::open(path).map_err(|source| OpError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// Lists the entries of `archive` to `out`, one name per line (with `long`, an `ls -l`-like
/// line). Returns the segments found.
pub fn list(
    archive: &Path,
    out: &mut dyn Write,
    long: bool,
    progress: Option<ProgressBar>,
) -> Result<Vec<SegmentSummary>, OpError> {
    struct Lister<'a> {
        out: &'a mut dyn Write,
        long: bool,
    }
    impl Visitor for Lister<'_> {
        fn entry(&mut self, e: &Entry, _: &mut EntryData<'_>) -> Result<(), VisitError> {
            if self.long {
                write!(self.out, "{} ", long_prefix(e))?;
            }
            self.out.write_all(&e.name)?;
            match &e.kind {
                Kind::Symlink(target) if self.long => {
                    self.out.write_all(b" -> ")?;
                    self.out.write_all(target)?;
                }
                Kind::HardLink(target) if self.long => {
                    self.out.write_all(b" link to ")?;
                    self.out.write_all(target)?;
                }
                _ => {}
            }
            self.out.write_all(b"\n")?;
            Ok(())
        }
    }
    let mut lister = Lister { out, long };
    if oci::is_image(archive) {
        return visit_image(archive, &mut lister);
    }
    if is_ext4(archive) {
        return visit_ext4(archive, &mut lister);
    }
    let file = open(archive)?;
    read_archive(&file, &mut lister, progress, &interrupted).map_err(|source| OpError::Read {
        path: archive.to_path_buf(),
        source,
    })
}

/// Reads a container image's layers, gives the merged tree's entries to `visitor` (no
/// data: for listing) in name order.
fn visit_image(path: &Path, visitor: &mut dyn Visitor) -> Result<Vec<SegmentSummary>, OpError> {
    let read_err = |source| OpError::Read {
        path: path.to_path_buf(),
        source,
    };
    let image = oci::open(path, &oci::Selector::default())?;
    let mut listing = Listing::default();
    // One row per layer for `ls --segments`: its compression, entries, sizes.
    let mut layers = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let (entries, unpacked) = image
            .read_layer(i, |r| -> Result<(u64, u64), ReadError> {
                let mut counted = Counted { inner: r, bytes: 0 };
                let n =
                    crate::archive::tar::read_entries(&mut counted, &mut listing, &interrupted)?;
                Ok((n, counted.bytes))
            })
            .map_err(read_err)?;
        listing.layer_end();
        layers.push(SegmentSummary {
            segment: crate::archive::Segment {
                index: i + 1,
                offset: 0,
                compression: match layer.compression {
                    Some(oci::layer::Compression::Gzip) => crate::archive::Compression::Gzip,
                    Some(oci::layer::Compression::Zstd) => crate::archive::Compression::Zstd,
                    _ => crate::archive::Compression::None,
                },
                format: crate::archive::Format::Tar,
            },
            entries,
            unpacked,
            stored: layer.digest.as_ref().map_or(0, |d| d.1),
        });
    }
    for entry in listing.into_entries() {
        let mut empty = io::empty();
        let mut data = EntryData::new(&mut empty, 0, false);
        visitor
            .entry(&entry, &mut data)
            .map_err(|e| read_err(ReadError::Visit(e)))?;
    }
    Ok(layers)
}

/// A failure reading the ext4 image at `path`.
fn ext4_err(path: &Path) -> impl Fn(io::Error) -> OpError + '_ {
    move |e| OpError::Read {
        path: path.to_path_buf(),
        source: ReadError::Io(e),
    }
}

/// An ext4 image's entries (mounted read-only, walked in name order), to `visitor`.
fn visit_ext4(path: &Path, visitor: &mut dyn Visitor) -> Result<Vec<SegmentSummary>, OpError> {
    let read_err = ext4_err(path);
    let walked = ext4_read::with_tree(path, |root| -> Result<(), OpError> {
        for walked in crate::walk::walk_named(root) {
            let (name, item) = walked.map_err(|(_, e)| read_err(e))?;
            if name == b"." {
                continue;
            }
            let entry = crate::tree::inject::host_entry(item.path(), name, false)
                .map_err(|e| read_err(io::Error::other(e)))?;
            let mut empty = io::empty();
            let mut data = EntryData::new(&mut empty, 0, false);
            visitor
                .entry(&entry, &mut data)
                .map_err(|e| read_err(io::Error::other(e)))?;
        }
        Ok(())
    });
    walked.map_err(read_err)??;
    Ok(Vec::new())
}

/// Copies an ext4 image's tree (mounted read-only) onto the extractor's.
fn extract_ext4(path: &Path, x: &mut Extractor) -> Result<(), OpError> {
    let read_err = ext4_err(path);
    // Settled before the unmount: the copier thread reads the files it was given.
    ext4_read::with_tree(path, |root| {
        crate::tree::inject::copy_tree(x, root).map_err(io::Error::other)?;
        x.settle().map_err(io::Error::other)
    })
    .map_err(&read_err)?
    .map_err(&read_err)?;
    Ok(())
}

/// A reader that counts the bytes taken from it.
struct Counted<'a> {
    inner: &'a mut dyn io::BufRead,
    bytes: u64,
}

impl io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

impl io::BufRead for Counted<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.bytes += amt as u64;
        self.inner.consume(amt);
    }
}

/// Applies a container image's layers onto the extractor's tree.
fn extract_image(path: &Path, x: &mut Extractor) -> Result<(), OpError> {
    let image = oci::open(path, &oci::Selector::default())?;
    x.set_replacing_trees(true);
    for i in 0..image.layers.len() {
        let mut applier = LayerApplier::new(x);
        image
            .read_layer(i, |r| {
                crate::archive::tar::read_entries(r, &mut applier, &interrupted)
            })
            .map_err(|source| OpError::Read {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

/// Lists the entries of `archive` to `out` as a JSON array, one object per entry with
/// every field (`name`, `type`, `mode`, `uid`, `gid`, `size`, `mtime`, and `target`,
/// `major`/`minor` where they apply), streamed as read. A name that is not UTF-8 is
/// written with U+FFFD in `name` and exactly in `name_hex`.
pub fn list_json(
    archive: &Path,
    out: &mut dyn Write,
    progress: Option<ProgressBar>,
) -> Result<Vec<SegmentSummary>, OpError> {
    struct JsonLister<'a> {
        out: &'a mut dyn Write,
        first: bool,
    }
    impl Visitor for JsonLister<'_> {
        fn entry(&mut self, e: &Entry, _: &mut EntryData<'_>) -> Result<(), VisitError> {
            let mut obj = entry_json(e);
            if let Some(map) = obj.as_object_mut()
                && std::str::from_utf8(&e.name).is_err()
            {
                map.insert("name_hex".into(), crate::digest::hex(&e.name).into());
            }
            let sep = if self.first { "\n  " } else { ",\n  " };
            self.first = false;
            write!(self.out, "{sep}{obj}")?;
            Ok(())
        }
    }
    let image = oci::is_image(archive) || is_ext4(archive);
    let file = if image { None } else { Some(open(archive)?) };
    out.write_all(b"[").map_err(|source| OpError::Output {
        path: "stdout".into(),
        source,
    })?;
    let mut lister = JsonLister { out, first: true };
    let segments = match &file {
        None if is_ext4(archive) => visit_ext4(archive, &mut lister)?,
        None => visit_image(archive, &mut lister)?,
        Some(file) => {
            read_archive(file, &mut lister, progress, &interrupted).map_err(|source| {
                OpError::Read {
                    path: archive.to_path_buf(),
                    source,
                }
            })?
        }
    };
    let end: &[u8] = if lister.first { b"]\n" } else { b"\n]\n" };
    lister
        .out
        .write_all(end)
        .map_err(|source| OpError::Output {
            path: "stdout".into(),
            source,
        })?;
    Ok(segments)
}

/// One entry as a JSON object.
fn entry_json(e: &Entry) -> serde_json::Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let kind = match &e.kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink(_) => "symlink",
        Kind::HardLink(_) => "hardlink",
        Kind::CharDevice { .. } => "char",
        Kind::BlockDevice { .. } => "block",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    };
    let mut map = serde_json::Map::new();
    map.insert("name".into(), text(&e.name).into());
    map.insert("type".into(), kind.into());
    map.insert("mode".into(), format!("{:04o}", e.mode & 0o7777).into());
    map.insert("uid".into(), e.uid.into());
    map.insert("gid".into(), e.gid.into());
    map.insert("size".into(), e.size.into());
    map.insert("mtime".into(), e.mtime.into());
    match &e.kind {
        Kind::Symlink(t) | Kind::HardLink(t) => {
            map.insert("target".into(), text(t).into());
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            map.insert("major".into(), (*major).into());
            map.insert("minor".into(), (*minor).into());
        }
        _ => {}
    }
    if !e.xattrs.is_empty() {
        let hex = |v: &[u8]| {
            v.iter()
                .fold("0x".to_string(), |s, b| s + &format!("{b:02x}"))
        };
        let xattrs: serde_json::Map<_, _> = e
            .xattrs
            .iter()
            .map(|(n, v)| (text(n), hex(v).into()))
            .collect();
        map.insert("xattrs".into(), xattrs.into());
    }
    serde_json::Value::Object(map)
}

/// `-rwsr-xr-x 0:0 12345 2024-01-02 03:04:05`
fn long_prefix(e: &Entry) -> String {
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let exec = |x: u32, special: u32, set: char| match (m & x != 0, m & special != 0) {
        (true, true) => set,
        (false, true) => set.to_ascii_uppercase(),
        (true, false) => 'x',
        (false, false) => '-',
    };
    let perms: String = [
        e.kind.type_char(),
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        exec(0o100, 0o4000, 's'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        exec(0o010, 0o2000, 's'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        exec(0o001, 0o1000, 't'),
    ]
    .iter()
    .collect();
    // As macOS's `ls -l` marks a file with extended attributes.
    let perms = if e.xattrs.is_empty() {
        perms
    } else {
        perms + "@"
    };
    let size = match e.kind {
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            format!("{major},{minor}")
        }
        _ => e.size.to_string(),
    };
    format!(
        "{perms} {}:{} {size:>10} {}",
        e.uid,
        e.gid,
        format_utc(e.mtime)
    )
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// One folder per segment (`segment-1`, `segment-2`, ...).
    pub split: bool,
    /// Extract into a non-empty folder, in place (not atomic).
    pub merge: bool,
}

/// Extracts `archive` into `dest`. Unless merging into a non-empty folder, the tree is
/// built in a temporary folder beside `dest` and renamed into place only on success, so a
/// bad archive or Ctrl-C leaves nothing half-written.
pub fn extract(
    archive: &Path,
    dest: &Path,
    opts: ExtractOptions,
    progress: Option<ProgressBar>,
) -> Result<(Vec<SegmentSummary>, ExtractReport), OpError> {
    let image = oci::is_image(archive) || is_ext4(archive);
    let file = if image { None } else { Some(open(archive)?) };
    let out_err = |source| OpError::Output {
        path: dest.to_path_buf(),
        source,
    };
    let non_empty = match std::fs::read_dir(dest) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(out_err(e)),
    };
    if non_empty && !opts.merge {
        return Err(OpError::NotEmpty {
            path: dest.to_path_buf(),
        });
    }
    let temp = if non_empty {
        None
    } else {
        Some(TempDir::beside(dest).map_err(out_err)?)
    };
    let work = temp.as_ref().map_or(dest, |t| t.path());
    let root = Root::open(work).map_err(out_err)?;
    let mut extractor = SeesRoot {
        inner: Extractor::new(root, opts.split),
        seen: false,
    };
    let segments = match &file {
        None if is_ext4(archive) => {
            extract_ext4(archive, &mut extractor.inner)?;
            Vec::new()
        }
        None => {
            extract_image(archive, &mut extractor.inner)?;
            Vec::new()
        }
        Some(file) => {
            read_archive(file, &mut extractor, progress, &interrupted).map_err(|source| {
                OpError::Read {
                    path: archive.to_path_buf(),
                    source,
                }
            })?
        }
    };
    let seen_root = extractor.seen && !opts.split;
    let report = extractor
        .inner
        .finish()
        .map_err(|source| OpError::Extract {
            path: dest.to_path_buf(),
            source,
        })?;
    if let Some(temp) = temp {
        if !seen_root {
            // Made private while it was being filled; an archive without a `.` entry says
            // nothing about the top folder, so it gets what `mkdir` would give it.
            use std::os::unix::fs::PermissionsExt;
            let mode = 0o777 & !current_umask();
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode))
                .map_err(out_err)?;
        }
        temp.persist(dest).map_err(out_err)?;
    }
    Ok((segments, report))
}

/// The process's umask (read by setting it and putting it back).
fn current_umask() -> u32 {
    let old = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(old);
    old.bits()
}

/// The extractor, noting whether the archive describes the top folder itself (`.`).
struct SeesRoot {
    inner: Extractor,
    seen: bool,
}

impl Visitor for SeesRoot {
    fn segment_start(&mut self, segment: &crate::archive::Segment) -> Result<(), VisitError> {
        self.inner.segment_start(segment)
    }
    fn entry(&mut self, e: &Entry, data: &mut EntryData<'_>) -> Result<(), VisitError> {
        if e.kind == Kind::Dir && e.name.iter().all(|&b| b == b'.' || b == b'/') {
            self.seen = true;
        }
        self.inner.entry(e, data)
    }
    fn archive_end(&mut self) {
        self.inner.archive_end()
    }
    fn segment_end(&mut self, summary: &SegmentSummary) -> Result<(), VisitError> {
        self.inner.segment_end(summary)
    }
}

/// Packs `dir` into `output`, atomically; `progress` follows the file data packed.
pub fn pack_to_file(
    dir: &Path,
    output: &Path,
    opts: &PackOptions,
    progress: Option<&ProgressBar>,
) -> Result<PackSummary, OpError> {
    let out_err = |source| OpError::Output {
        path: output.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        return Err(OpError::Open {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut out = AtomicFile::create(output).map_err(out_err)?;
    let summary =
        pack(dir, out.file(), opts, progress, &interrupted).map_err(|source| OpError::Pack {
            // Reading the tree fails on a path of its own; writing, on the archive.
            path: match source {
                PackError::Write(_) => output.to_path_buf(),
                _ => dir.to_path_buf(),
            },
            source,
        })?;
    out.commit().map_err(out_err)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(super::format_utc(1_700_000_000), "2023-11-14 22:13:20");
    }
}
