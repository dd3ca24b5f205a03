//! The cpio codec: newc (070701), crc (070702, checksum verified) and odc (070707) for
//! reading, newc for writing.
//!
//! Our own rather than the `cpio` crate, which rejects non-UTF-8 names, stops at the
//! padding between concatenated archives, ignores the crc checksum and silently writes a
//! corrupt archive when given fewer bytes than it declared.

use std::io::{self, BufRead, Read, Write};

use super::{Entry, EntryData, Format, Kind, LinkKey, ReadError, Visitor, deliver, display_name};

/// The kernel refuses longer names (PATH_MAX, counting the NUL).
pub const MAX_NAME: usize = 4096;
const TRAILER: &[u8] = b"TRAILER!!!";

const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// A `BufRead` that counts what has been consumed: the position in the current stream.
pub(crate) struct Counted<'a> {
    pub inner: &'a mut dyn BufRead,
    pub pos: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl BufRead for Counted<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.pos += n as u64;
    }
}

/// The format of a cpio header magic, if it is one.
pub fn detect(magic: &[u8]) -> Option<Format> {
    match magic.get(..6)? {
        b"070701" => Some(Format::Newc),
        b"070702" => Some(Format::Crc),
        b"070707" => Some(Format::Odc),
        _ => None,
    }
}

struct Header {
    format: Format,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: i64,
    filesize: u64,
    dev: u64,
    rdev_major: u32,
    rdev_minor: u32,
    namesize: usize,
    check: u32,
}

fn read_exact_at(r: &mut Counted<'_>, buf: &mut [u8], what: &'static str) -> Result<(), ReadError> {
    let offset = r.pos;
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Truncated { offset, what },
        _ => ReadError::Io(e),
    })
}

fn parse_field(
    digits: &[u8],
    radix: u32,
    field: &'static str,
    offset: u64,
) -> Result<u64, ReadError> {
    let bad = || ReadError::Malformed {
        offset,
        what: format!(
            "invalid {field} field {:?} in cpio header",
            display_name(digits)
        ),
    };
    let s = std::str::from_utf8(digits).map_err(|_| bad())?;
    u64::from_str_radix(s, radix).map_err(|_| bad())
}

fn read_header(r: &mut Counted<'_>, format: Format, offset: u64) -> Result<Header, ReadError> {
    if format == Format::Odc {
        let mut b = [0u8; 70];
        read_exact_at(r, &mut b, "cpio header")?;
        let f = |range: std::ops::Range<usize>, name| parse_field(&b[range], 8, name, offset);
        let rdev = f(36..42, "rdev")?;
        return Ok(Header {
            format,
            dev: f(0..6, "dev")?,
            ino: f(6..12, "ino")?,
            mode: f(12..18, "mode")? as u32,
            uid: f(18..24, "uid")? as u32,
            gid: f(24..30, "gid")? as u32,
            nlink: f(30..36, "nlink")? as u32,
            rdev_major: (rdev >> 8) as u32,
            rdev_minor: (rdev & 0xff) as u32,
            mtime: f(42..53, "mtime")? as i64,
            namesize: f(53..59, "namesize")? as usize,
            filesize: f(59..70, "filesize")?,
            check: 0,
        });
    }
    let mut b = [0u8; 104];
    read_exact_at(r, &mut b, "cpio header")?;
    let names = [
        "ino",
        "mode",
        "uid",
        "gid",
        "nlink",
        "mtime",
        "filesize",
        "devmajor",
        "devminor",
        "rdevmajor",
        "rdevminor",
        "namesize",
        "check",
    ];
    let mut v = [0u64; 13];
    for (i, name) in names.iter().enumerate() {
        v[i] = parse_field(&b[i * 8..i * 8 + 8], 16, name, offset)?;
    }
    Ok(Header {
        format,
        ino: v[0],
        mode: v[1] as u32,
        uid: v[2] as u32,
        gid: v[3] as u32,
        nlink: v[4] as u32,
        mtime: v[5] as i64,
        filesize: v[6],
        dev: (v[7] << 32) | v[8],
        rdev_major: v[9] as u32,
        rdev_minor: v[10] as u32,
        namesize: v[11] as usize,
        check: v[12] as u32,
    })
}

fn skip_padding(r: &mut Counted<'_>, format: Format) -> Result<(), ReadError> {
    if format == Format::Odc {
        return Ok(());
    }
    let pad = (4 - (r.pos % 4) as usize) % 4;
    read_exact_at(r, &mut [0u8; 3][..pad], "padding")
}

/// Reads one cpio archive, from its first header through `TRAILER!!!`, handing each entry
/// to `visitor`. Returns the number of entries (the trailer not counted).
pub(crate) fn read_one(
    r: &mut Counted<'_>,
    visitor: &mut dyn Visitor,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, ReadError> {
    let mut entries = 0;
    loop {
        if interrupted() {
            return Err(ReadError::Interrupted);
        }
        let offset = r.pos;
        let mut magic = [0u8; 6];
        read_exact_at(r, &mut magic, "expected another entry or TRAILER!!!")?;
        let Some(format) = detect(&magic) else {
            return Err(ReadError::Malformed {
                offset,
                what: format!("not a cpio header (magic {:?})", display_name(&magic)),
            });
        };
        let h = read_header(r, format, offset)?;
        if h.namesize == 0 || h.namesize > MAX_NAME {
            return Err(ReadError::Malformed {
                offset,
                what: format!("name size {} is out of range 1..={MAX_NAME}", h.namesize),
            });
        }
        let mut name = vec![0u8; h.namesize];
        read_exact_at(r, &mut name, "entry name")?;
        if name.pop() != Some(0) {
            return Err(ReadError::Malformed {
                offset,
                what: "entry name is not NUL-terminated".into(),
            });
        }
        skip_padding(r, format)?;
        if name == TRAILER {
            skip_data(r, h.filesize)?;
            skip_padding(r, format)?;
            visitor.archive_end();
            return Ok(entries);
        }
        let entry = make_entry(r, &h, name, offset)?;
        let data_size = if entry.kind == Kind::File {
            h.filesize
        } else {
            0
        };
        let mut data = EntryData::new(r, data_size, h.format == Format::Crc);
        deliver(visitor, &entry, &mut data)?;
        if let Some(actual) = data.checksum()
            && actual != h.check
        {
            return Err(ReadError::Checksum {
                name: display_name(&entry.name),
                offset,
                expected: h.check,
                actual,
            });
        }
        if entry.kind != Kind::File && !matches!(entry.kind, Kind::Symlink(_)) {
            // Data on a directory or device is meaningless; the kernel skips it too.
            skip_data(r, h.filesize)?;
        }
        skip_padding(r, format)?;
        entries += 1;
    }
}

fn skip_data(r: &mut Counted<'_>, size: u64) -> Result<(), ReadError> {
    let mut data = EntryData::new(r, size, false);
    if !data.skip_rest()? {
        return Err(ReadError::Truncated {
            offset: r.pos,
            what: "file data",
        });
    }
    Ok(())
}

fn make_entry(
    r: &mut Counted<'_>,
    h: &Header,
    name: Vec<u8>,
    offset: u64,
) -> Result<Entry, ReadError> {
    let (major, minor) = (h.rdev_major, h.rdev_minor);
    let kind = match h.mode & S_IFMT {
        S_IFREG => Kind::File,
        S_IFDIR => Kind::Dir,
        S_IFLNK => {
            if h.filesize == 0 || h.filesize >= MAX_NAME as u64 {
                return Err(ReadError::Malformed {
                    offset,
                    what: format!(
                        "symlink \"{}\" has a target of {} bytes",
                        display_name(&name),
                        h.filesize
                    ),
                });
            }
            let mut target = vec![0u8; h.filesize as usize];
            read_exact_at(r, &mut target, "symlink target")?;
            Kind::Symlink(target)
        }
        S_IFCHR => Kind::CharDevice { major, minor },
        S_IFBLK => Kind::BlockDevice { major, minor },
        S_IFIFO => Kind::Fifo,
        S_IFSOCK => Kind::Socket,
        other => {
            return Err(ReadError::Malformed {
                offset,
                what: format!(
                    "entry \"{}\" has unknown file type {other:#o}",
                    display_name(&name)
                ),
            });
        }
    };
    let link_key = (h.nlink >= 2 && kind != Kind::Dir).then_some(LinkKey {
        dev: h.dev,
        ino: h.ino,
        file_type: h.mode & S_IFMT,
    });
    Ok(Entry {
        name,
        size: if kind == Kind::File { h.filesize } else { 0 },
        kind,
        mode: h.mode & 0o7777,
        uid: h.uid,
        gid: h.gid,
        mtime: h.mtime,
        link_key,
        offset,
        xattrs: Vec::new(),
    })
}

/// One newc header's fields, as the writer takes them.
#[derive(Debug, Clone, Default)]
pub struct NewcHeader {
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
}

/// Writes a newc archive. `finish` writes the trailer; an archive without it is invalid.
pub struct NewcWriter<W: Write> {
    out: W,
    pos: u64,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        NewcWriter { out, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> io::Result<()> {
        let n = ((align - self.pos % align) % align) as usize;
        self.put(&vec![0u8; n])
    }

    /// Writes one entry; `data` must yield exactly `h.filesize` bytes, or this fails rather
    /// than write an archive that lies about its sizes.
    pub fn append(&mut self, h: &NewcHeader, name: &[u8], data: &mut dyn Read) -> io::Result<()> {
        // A file named like the trailer would end the archive for every reader, the
        // kernel's included, and lose what follows: "./" names the same file.
        let name: &[u8] = if name == TRAILER {
            b"./TRAILER!!!"
        } else {
            name
        };
        self.append_raw(h, name, data)
    }

    fn append_raw(&mut self, h: &NewcHeader, name: &[u8], data: &mut dyn Read) -> io::Result<()> {
        if name.len() + 1 > MAX_NAME || name.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("\"{}\": name too long or contains NUL", display_name(name)),
            ));
        }
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            h.ino,
            h.mode,
            h.uid,
            h.gid,
            h.nlink,
            h.mtime,
            h.filesize,
            0,
            0,
            h.rdev_major,
            h.rdev_minor,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name)?;
        self.put(&[0])?;
        self.pad(4)?;
        let copied = io::copy(&mut data.take(h.filesize as u64), &mut self.out)?;
        self.pos += copied;
        if copied != h.filesize as u64 || data.read(&mut [0u8; 1])? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "\"{}\": size changed while packing (expected {} bytes)",
                    display_name(name),
                    h.filesize
                ),
            ));
        }
        self.pad(4)
    }

    /// The output, to mark where an entry ends.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the trailer and pads the archive to `block` bytes (GNU cpio uses 512).
    pub fn finish(mut self, block: u64) -> io::Result<W> {
        let trailer = NewcHeader {
            nlink: 1,
            ..Default::default()
        };
        self.append_raw(&trailer, TRAILER, &mut io::empty())?;
        self.pad(block)?;
        Ok(self.out)
    }
}
