//! Tar input: the `tar` crate parses headers; entries are handed to the same visitors as
//! cpio entries, so extraction has one safe code path.
//!
//! GNU long names and PAX records are read here, not by the crate, which would read any
//! size of them into memory: a hostile archive could ask for gigabytes. They are capped.

use std::io::{self, BufRead, Read};

use super::cpio::MAX_NAME;
use super::{Entry, EntryData, Kind, ReadError, Visitor, deliver, display_name, read_buffered};

/// The most PAX record data one entry may carry.
const MAX_PAX: u64 = 1 << 20;

/// What extension headers say about the next entry.
#[derive(Default)]
struct Extensions {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    size: Option<u64>,
    xattrs: crate::xattr::Xattrs,
}

/// Whether a 512-byte block is a ustar/GNU tar header.
pub fn detect(head: &[u8]) -> bool {
    head.len() >= 512 && &head[257..262] == b"ustar"
}

pub(crate) fn read_entries(
    r: &mut dyn BufRead,
    visitor: &mut dyn Visitor,
    interrupted: &dyn Fn() -> bool,
) -> Result<u64, ReadError> {
    use ::tar::EntryType as T;
    let mut archive = ::tar::Archive::new(r);
    let mut count = 0;
    let mut buf = vec![0u8; 256 << 10];
    let mut ext = Extensions::default();
    // Where the next header starts, for an error the crate reports without a place.
    let mut next = 0u64;
    for item in archive.entries().map_err(ReadError::Tar)?.raw(true) {
        if interrupted() {
            return Err(ReadError::Interrupted);
        }
        let mut item = item.map_err(|e| ReadError::Malformed {
            offset: next,
            what: format!("tar header: {e}"),
        })?;
        let offset = item.raw_header_position();
        next = item
            .raw_file_position()
            .saturating_add(item.size().div_ceil(512).saturating_mul(512));
        match item.header().entry_type() {
            T::GNULongName => {
                ext.name = Some(read_long_name(&mut item, offset, "long name")?);
                continue;
            }
            T::GNULongLink => {
                ext.link = Some(read_long_name(&mut item, offset, "long link")?);
                continue;
            }
            T::XHeader => {
                let records = read_extension(&mut item, offset, MAX_PAX, "PAX header")?;
                apply_pax(&records, &mut ext, offset)?;
                continue;
            }
            // Global records (a comment, defaults) change nothing we extract; their data
            // is skipped unread.
            T::XGlobalHeader => continue,
            _ => {}
        }
        let entry = make_entry(&item, offset, std::mem::take(&mut ext))?;
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

/// A GNU long name or link, without its trailing NULs.
fn read_long_name<R: Read>(
    item: &mut ::tar::Entry<'_, R>,
    offset: u64,
    what: &str,
) -> Result<Vec<u8>, ReadError> {
    let mut name = read_extension(item, offset, MAX_NAME as u64, what)?;
    while name.last() == Some(&0) {
        name.pop();
    }
    Ok(name)
}

/// The data of an extension header, refused past `max` bytes.
fn read_extension<R: Read>(
    item: &mut ::tar::Entry<'_, R>,
    offset: u64,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, ReadError> {
    let size = item.size();
    if size > max {
        return Err(ReadError::Malformed {
            offset,
            what: format!("{what} of {size} bytes (at most {max})"),
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    item.read_to_end(&mut data)
        .map_err(|e| ReadError::Malformed {
            offset,
            what: format!("{what}: {e}"),
        })?;
    if data.len() as u64 != size {
        return Err(ReadError::Malformed {
            offset,
            what: format!("{what}: truncated"),
        });
    }
    Ok(data)
}

/// Takes what we use from PAX records: path, linkpath, uid, gid, mtime (whole seconds),
/// size, and extended attributes as GNU tar, containerd and podman write them
/// (`SCHILY.xattr.NAME`, the value raw) and as libarchive does (`LIBARCHIVE.xattr.NAME`,
/// the name %-escaped, the value base64).
fn apply_pax(records: &[u8], ext: &mut Extensions, offset: u64) -> Result<(), ReadError> {
    let bad = |what: String| ReadError::Malformed { offset, what };
    for record in ::tar::PaxExtensions::new(records) {
        let record = record.map_err(|e| bad(format!("PAX header: {e}")))?;
        let value = record.value_bytes();
        let number = || {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "PAX record {}: not a number",
                        display_name(record.key_bytes())
                    ))
                })
        };
        match record.key_bytes() {
            b"path" => ext.name = Some(value.to_vec()),
            b"linkpath" => ext.link = Some(value.to_vec()),
            b"uid" => ext.uid = Some(number()? as u64),
            b"gid" => ext.gid = Some(number()? as u64),
            b"mtime" => ext.mtime = Some(number()?),
            b"size" => ext.size = Some(number()? as u64),
            key => {
                if let Some((name, value)) = pax_xattr(key, value) {
                    let name = name
                        .map_err(|()| bad(format!("PAX record {}: bad name", display_name(key))))?;
                    let value = value.map_err(|()| {
                        bad(format!(
                            "PAX record {}: bad base64 value",
                            display_name(key)
                        ))
                    })?;
                    if crate::xattr::kept(&name) {
                        ext.xattrs.retain(|(n, _)| *n != name);
                        ext.xattrs.push((name, value));
                    }
                }
            }
        }
    }
    ext.xattrs.sort();
    Ok(())
}

type Decoded = Result<Vec<u8>, ()>;

/// An extended attribute's name and value from a PAX record, if the record is one.
fn pax_xattr(key: &[u8], value: &[u8]) -> Option<(Decoded, Decoded)> {
    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
        return Some((Ok(name.to_vec()), Ok(value.to_vec())));
    }
    let name = key.strip_prefix(b"LIBARCHIVE.xattr.")?;
    Some((percent_decode(name), base64_decode(value)))
}

fn percent_decode(s: &[u8]) -> Decoded {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(drop)?;
            out.push(u8::from_str_radix(hex, 16).map_err(drop)?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Standard base64, padding optional (libarchive writes none).
fn base64_decode(s: &[u8]) -> Decoded {
    let sextet = |c: u8| -> Result<u32, ()> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(()),
        } as u32)
    };
    let s = s.strip_suffix(b"==").or(s.strip_suffix(b"=")).unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        if chunk.len() == 1 {
            return Err(());
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= sextet(c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Ok(out)
}

fn make_entry<R: Read>(
    item: &::tar::Entry<'_, R>,
    offset: u64,
    ext: Extensions,
) -> Result<Entry, ReadError> {
    use ::tar::EntryType as T;
    let h = item.header();
    let name = ext.name.unwrap_or_else(|| item.path_bytes().into_owned());
    let malformed = |what: String| ReadError::Malformed { offset, what };
    if ext.size.is_some_and(|size| size != item.size()) {
        // The data is laid out by the header's size; a PAX size that disagrees (files over
        // 8 GiB in the PAX format) is refused rather than read out of step.
        return Err(malformed(format!(
            "entry \"{}\": a size given only in a PAX record is not supported",
            display_name(&name)
        )));
    }
    let field = |r: io::Result<u64>, what: &str| {
        r.map_err(|e| {
            malformed(format!(
                "entry \"{}\": bad {what}: {e}",
                display_name(&name)
            ))
        })
    };
    let link = || {
        ext.link.clone().unwrap_or_else(|| {
            item.link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default()
        })
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
        other => {
            return Err(malformed(format!(
                "entry \"{}\": unsupported tar entry type {:?}",
                display_name(&name),
                other
            )));
        }
    };
    Ok(Entry {
        size: if kind == Kind::File { item.size() } else { 0 },
        kind,
        mode: field(h.mode().map(u64::from), "mode")? as u32 & 0o7777,
        uid: ext.uid.map_or_else(|| field(h.uid(), "uid"), Ok)? as u32,
        gid: ext.gid.map_or_else(|| field(h.gid(), "gid"), Ok)? as u32,
        mtime: ext
            .mtime
            .map_or_else(|| field(h.mtime(), "mtime").map(|t| t as i64), Ok)?,
        link_key: None,
        offset,
        name,
        xattrs: ext.xattrs,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libarchive_names_and_values_decode() {
        assert_eq!(percent_decode(b"user.a%20b%3D"), Ok(b"user.a b=".to_vec()));
        assert_eq!(percent_decode(b"user.%4"), Err(()));
        assert_eq!(percent_decode(b"user.%zz"), Err(()));
        for (plain, coded) in [
            (&b""[..], &b""[..]),
            (b"f", b"Zg"),
            (b"fo", b"Zm8="),
            (b"foo", b"Zm9v"),
            (b"\x01\x00\xff\xfe", b"AQD//g=="),
        ] {
            assert_eq!(base64_decode(coded), Ok(plain.to_vec()), "{coded:?}");
        }
        assert_eq!(base64_decode(b"Z"), Err(()));
        assert_eq!(base64_decode(b"Zm9v!"), Err(()));
    }

    #[test]
    fn only_kept_namespaces_come_from_pax_records() {
        let mut ext = Extensions::default();
        let records = b"30 SCHILY.xattr.user.b=second\n29 SCHILY.xattr.user.a=first\n\
                        30 SCHILY.xattr.system.data=x\n";
        apply_pax(records, &mut ext, 0).unwrap();
        assert_eq!(
            ext.xattrs,
            vec![
                (b"user.a".to_vec(), b"first".to_vec()),
                (b"user.b".to_vec(), b"second".to_vec())
            ]
        );
    }
}
