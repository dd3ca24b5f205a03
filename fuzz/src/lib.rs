//! What every fuzz target shares: a sandbox that a bug cannot escape from, inputs as a
//! mapped file or a pipe (the reader's two paths), a visitor that reads everything, and the
//! checks of the invariants (errors say where, nothing is written outside the destination).
//!
//! # The sandbox
//!
//! The targets run as root on developer machines and in CI, and the extraction targets
//! hand hostile names to code that creates, unlinks, chowns and mknods. A bug there must
//! not reach the host, so as root the first call moves the process into a mount namespace
//! of its own where every mount is read-only except a fresh tmpfs on `/tmp` (the sandbox)
//! and the fuzz folder itself (libFuzzer writes its corpus and crash files there). A write
//! that escapes the destination then fails with EROFS, which the extraction check turns
//! into a finding. Without root there is nothing to protect beyond the user's own files;
//! the sandbox is then a folder in the temporary directory.

use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rootpack::archive::{Entry, EntryData, Segment, SegmentSummary, VisitError, Visitor};

/// The sandbox folder: writable, empty at start, private to this process.
pub fn sandbox() -> &'static Path {
    static SANDBOX: OnceLock<PathBuf> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        // libFuzzer's C main does not run Rust's start-up, which ignores SIGPIPE: a reader
        // that stops early would otherwise kill the process through the pipe's writer.
        // SAFETY: setting a signal disposition to ignore.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = if is_root() {
            lock_down().unwrap_or_else(|e| panic!("cannot set up the fuzz sandbox: {e}"));
            PathBuf::from("/tmp/sandbox")
        } else {
            std::env::temp_dir().join(format!("rootpack-fuzz-{}", std::process::id()))
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sandbox folder");
        dir
    })
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn cstr(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("no NUL in a mount path")
}

/// A private mount namespace in which everything is read-only but `/tmp` (a new tmpfs)
/// and the fuzz folder.
fn lock_down() -> io::Result<()> {
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: plain system calls on C strings that outlive them.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
        let root = cstr(Path::new("/"));
        check(
            libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "making / private",
        )?;
        let fuzz_dir = cstr(Path::new(env!("CARGO_MANIFEST_DIR")));
        check(
            libc::mount(
                fuzz_dir.as_ptr(),
                fuzz_dir.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ),
            "binding the fuzz folder",
        )?;
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let keep = Path::new(env!("CARGO_MANIFEST_DIR"));
        for point in info.lines().filter_map(|l| l.split(' ').nth(4)) {
            let point = PathBuf::from(point.replace("\\040", " "));
            if point.starts_with(keep) {
                continue;
            }
            let p = cstr(&point);
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
            let r = libc::mount(null, p.as_ptr(), null, flags, std::ptr::null());
            if r < 0 && point == Path::new("/") {
                return check(r, "remounting / read-only");
            }
        }
        let tmp = cstr(Path::new("/tmp"));
        let tmpfs = std::ffi::CString::new("tmpfs").unwrap();
        let opts = std::ffi::CString::new("size=512m,mode=1777").unwrap();
        check(
            libc::mount(
                tmpfs.as_ptr(),
                tmp.as_ptr(),
                tmpfs.as_ptr(),
                0,
                opts.as_ptr().cast(),
            ),
            "mounting a tmpfs on /tmp",
        )?;
    }
    Ok(())
}

/// `data` as a regular file (memory-mapped by the reader).
pub fn memfd(data: &[u8]) -> File {
    let name = std::ffi::CString::new("fuzz-input").unwrap();
    // SAFETY: memfd_create returns a new fd we own, or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nobody else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(data).expect("writing the memfd");
    f.rewind().expect("rewinding the memfd");
    f
}

/// `data` through a pipe (read through a buffer, not mapped), fed by a thread. Join the
/// handle after the read end is closed.
pub fn pipe(data: &[u8]) -> (File, std::thread::JoinHandle<()>) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    check(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        "pipe2",
    )
    .unwrap();
    // SAFETY: fresh fds owned by nobody else.
    let (r, mut w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let data = data.to_vec();
    // A reader that stops early closes its end: the writer then gets EPIPE and ends.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&data);
    });
    (r, writer)
}

/// The error and its causes on one line, as the CLI prints them.
pub fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Invariant: an error reading an archive says at which byte.
pub fn assert_located(e: &dyn Error) -> String {
    let text = chain(e);
    assert!(
        text.contains("byte "),
        "an archive error without a byte offset: {text}"
    );
    text
}

/// Reads every byte of every entry and checks the reader's own bookkeeping.
#[derive(Default)]
pub struct Counter {
    pub segments: usize,
    pub entries: u64,
    pub bytes: u64,
    last_segment_offset: Option<u64>,
}

impl Visitor for Counter {
    fn segment_start(&mut self, segment: &Segment) -> Result<(), VisitError> {
        self.segments += 1;
        assert_eq!(segment.index, self.segments, "segments numbered in order");
        if let Some(last) = self.last_segment_offset {
            assert!(segment.offset > last, "segments in file order");
        }
        self.last_segment_offset = Some(segment.offset);
        Ok(())
    }

    fn entry(&mut self, entry: &Entry, data: &mut EntryData<'_>) -> Result<(), VisitError> {
        self.entries += 1;
        let declared = data.remaining();
        assert_eq!(
            declared, entry.size,
            "the data is as long as the entry says"
        );
        let n = io::copy(data, &mut io::sink())?;
        // A truncated stream ends the data early; the reader reports that afterwards.
        assert!(n <= declared, "more data than declared: {n} > {declared}");
        self.bytes += n;
        Ok(())
    }

    fn segment_end(&mut self, summary: &SegmentSummary) -> Result<(), VisitError> {
        assert_eq!(summary.segment.index, self.segments);
        Ok(())
    }
}

/// Lists `data` through both input paths (mapped and piped); both must agree.
pub fn list_both_ways(data: &[u8]) {
    let never = || false;
    let mapped = {
        let file = memfd(data);
        let mut c = Counter::default();
        let r = rootpack::archive::read_archive(&file, &mut c, None, &never);
        (
            r.map(|s| s.len()).map_err(|e| assert_located(&e)),
            c.entries,
        )
    };
    let piped = {
        let (file, writer) = pipe(data);
        let mut c = Counter::default();
        let r = rootpack::archive::read_archive(&file, &mut c, None, &never);
        drop(file);
        writer.join().expect("pipe writer");
        (
            r.map(|s| s.len()).map_err(|e| assert_located(&e)),
            c.entries,
        )
    };
    // The same bytes give the same segments, entries and verdict, whatever the input path
    // (messages aside: a pipe cannot re-read a zstd trailer, so its checks may differ).
    assert_eq!(
        mapped.0.is_ok(),
        piped.0.is_ok(),
        "mapped {mapped:?} vs piped {piped:?}"
    );
    if mapped.0.is_ok() {
        assert_eq!(mapped, piped);
    }
}

/// The folder an extraction may write to, and one beside it that must never change.
pub struct Destination {
    pub dest: PathBuf,
    outside: PathBuf,
    base: PathBuf,
}

impl Destination {
    pub fn new() -> Destination {
        let base = sandbox().join("x");
        let d = Destination {
            dest: base.join("dest"),
            outside: base.join("outside"),
            base,
        };
        let _ = std::fs::remove_dir_all(&d.base);
        std::fs::create_dir_all(d.outside.join("dir")).unwrap();
        std::fs::write(d.outside.join("file"), b"canary\n").unwrap();
        std::fs::create_dir(&d.dest).unwrap();
        d
    }

    /// Asserts nothing but the destination changed; returns what is outside as it is.
    pub fn assert_untouched(&self) {
        let mut names: Vec<_> = std::fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "outside"], "written beside the destination");
        let mut inside: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        inside.sort();
        assert_eq!(inside, ["dir", "file"], "written outside the destination");
        assert_eq!(
            std::fs::read_dir(self.outside.join("dir")).unwrap().count(),
            0,
            "written outside the destination"
        );
        let meta = std::fs::symlink_metadata(self.outside.join("file")).unwrap();
        assert!(meta.is_file(), "the canary file was replaced");
        let mut content = Vec::new();
        File::open(self.outside.join("file"))
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(content, b"canary\n", "the canary file was written through");
    }
}

impl Default for Destination {
    fn default() -> Self {
        Destination::new()
    }
}

/// Extracts `data` into a fresh destination (one folder per segment when `split`) and
/// checks that nothing was written anywhere else and that any error says where.
pub fn extract_checked(data: &[u8], split: bool) {
    use rootpack::tree::extract::Extractor;
    use rootpack::tree::safe_path::Root;
    let d = Destination::new();
    let file = memfd(data);
    let root = Root::open(&d.dest).expect("opening the destination");
    let mut x = Extractor::new(root, split);
    if !is_root() {
        x = x.record_metadata();
    }
    let never = || false;
    let read = rootpack::archive::read_archive(&file, &mut x, None, &never);
    let finished = x.finish();
    if let Err(e) = &read {
        let text = assert_located(e);
        assert!(
            !text.contains("Read-only file system"),
            "a write outside the destination was attempted: {text}"
        );
    }
    if let Err(e) = &finished {
        let text = chain(e);
        assert!(
            !text.contains("Read-only file system"),
            "a write outside the destination was attempted: {text}"
        );
    }
    d.assert_untouched();
}
