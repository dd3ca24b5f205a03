//! sha256 of files and bytes, as the manifest records them.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Size and sha256 of a file, streamed.
pub fn digest_file(path: &Path) -> io::Result<(u64, String)> {
    digest_reader(&File::open(path)?)
}

pub fn digest_reader(file: &File) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    // Mapped, the bytes are hashed straight from the page cache; pages are let go behind.
    if let Some(map) = crate::mapped::Mapping::new(file) {
        let bytes = map.bytes();
        let step = 8 << 20;
        for start in (0..bytes.len()).step_by(step) {
            let end = (start + step).min(bytes.len());
            hasher.update(&bytes[start..end]);
            map.release(start, end);
        }
        return Ok((bytes.len() as u64, hex(&hasher.finalize())));
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    let mut reader = file;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A writer that hashes (sha256) and counts what passes through.
pub struct Hashing<W> {
    pub inner: W,
    hasher: Sha256,
    pub size: u64,
}

impl<W: io::Write> io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// The raw sha256 of what has passed so far.
    pub fn hash(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}
