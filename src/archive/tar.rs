//! Tar input: the `tar` crate parses headers (ustar, GNU long names, PAX); entries are
//! handed to the same visitors as cpio entries, so extraction has one safe code path.

use std::io::{self, BufRead, Read};

use super::{Entry, EntryData, Kind, ReadError, Visitor, deliver, display_name, read_buffered};

/// Whether a 512-byte block is a ustar/GNU tar header.
pub fn detect(head: &[u8]) -> bool {
    head.len() >= 512 && &head[257..262] == b"ustar"
}

pub(crate) fn read_entries(
    r: &mut dyn BufRead,
    visitor: &mut dyn Visitor,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, ReadError> {
    let mut archive = ::tar::Archive::new(r);
    let mut count = 0;
    let mut buf = vec![0u8; 256 << 10];
    for item in archive.entries().map_err(ReadError::Tar)? {
        if interrupted() {
            return Err(ReadError::Interrupted);
        }
        let mut item = item.map_err(ReadError::Tar)?;
        let offset = item.raw_header_position();
        let Some(entry) = make_entry(&item, offset)? else {
            continue;
        };
        let mut buffered = Buffered {
            inner: &mut item,
            buf: &mut buf,
            start: 0,
            end: 0,
        };
        let mut data = EntryData::new(&mut buffered, entry.size, false);
        deliver(visitor, &entry, &mut data)?;
        count += 1;
    }
    Ok(count)
}

fn make_entry<R: Read>(
    item: &::tar::Entry<'_, R>,
    offset: u64,
) -> Result<Option<Entry>, ReadError> {
    use ::tar::EntryType as T;
    let h = item.header();
    let name = item.path_bytes().into_owned();
    let malformed = |what: String| ReadError::Malformed { offset, what };
    let field = |r: io::Result<u64>, what: &str| {
        r.map_err(|e| {
            malformed(format!(
                "entry \"{}\": bad {what}: {e}",
                display_name(&name)
            ))
        })
    };
    let link = || {
        item.link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default()
    };
    let device = || -> Result<(u32, u32), ReadError> {
        let major = field(h.device_major().map(|d| d.unwrap_or(0) as u64), "device")?;
        let minor = field(h.device_minor().map(|d| d.unwrap_or(0) as u64), "device")?;
        Ok((major as u32, minor as u32))
    };
    let kind = match h.entry_type() {
        T::Regular | T::Continuous => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink(link()),
        T::Link => Kind::HardLink(link()),
        T::Char => {
            let (major, minor) = device()?;
            Kind::CharDevice { major, minor }
        }
        T::Block => {
            let (major, minor) = device()?;
            Kind::BlockDevice { major, minor }
        }
        T::Fifo => Kind::Fifo,
        T::XGlobalHeader => return Ok(None),
        other => {
            return Err(malformed(format!(
                "entry \"{}\": unsupported tar entry type {:?}",
                display_name(&name),
                other
            )));
        }
    };
    Ok(Some(Entry {
        size: if kind == Kind::File { item.size() } else { 0 },
        kind,
        mode: field(h.mode().map(u64::from), "mode")? as u32 & 0o7777,
        uid: field(h.uid(), "uid")? as u32,
        gid: field(h.gid(), "gid")? as u32,
        mtime: field(h.mtime(), "mtime")? as i64,
        link_key: None,
        offset,
        name,
    }))
}

/// A `BufRead` over a tar entry with a buffer reused across entries.
struct Buffered<'a, R> {
    inner: R,
    buf: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<R: Read> Read for Buffered<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_buffered(self, out)
    }
}

impl<R: Read> BufRead for Buffered<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            self.start = 0;
            self.end = self.inner.read(self.buf)?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }
}
