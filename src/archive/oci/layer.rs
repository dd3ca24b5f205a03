//! One layer as a verified, decompressed stream: the blob's bytes are checked against its
//! descriptor's sha256 and size, the uncompressed tar against the config's diff_id, both
//! as they stream by. Whatever reads the tar stops at its end-of-archive blocks, so both
//! streams are drained to their ends before the result counts.

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest as _, Sha256};

use super::spec::Digest;

/// Checks what passes through against a digest (and a size, if known) at the end.
struct Verifying<R> {
    inner: R,
    hasher: Sha256,
    seen: u64,
    want: Digest,
    size: Option<u64>,
    what: &'static str,
}

impl<R: Read> Read for Verifying<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Never read more than one byte past a declared size: a huge blob is refused early.
        let cap = match self.size {
            Some(s) => buf.len().min((s + 1 - self.seen.min(s + 1)) as usize),
            None => buf.len(),
        };
        let n = if cap == 0 {
            0
        } else {
            self.inner.read(&mut buf[..cap])?
        };
        self.seen += n as u64;
        if let Some(size) = self.size
            && (self.seen > size || (n == 0 && self.seen < size))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} {}: {} bytes where the descriptor says {size}",
                    self.what,
                    self.want,
                    if self.seen > size {
                        format!("more than {size}")
                    } else {
                        self.seen.to_string()
                    }
                ),
            ));
        }
        if n == 0 {
            let got = crate::digest::hex(&self.hasher.clone().finalize());
            if got != self.want.hex() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} {}: the data's sha256 is {got}", self.what, self.want),
                ));
            }
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What a media type says about compression (`None` for a type that is not a layer).
pub fn media_compression(media_type: &str) -> Option<Compression> {
    let t = media_type
        .strip_suffix(".nondistributable")
        .unwrap_or(media_type);
    let t = t.replace(
        "vnd.oci.image.layer.nondistributable.v1",
        "vnd.oci.image.layer.v1",
    );
    Some(match t.as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
        _ => return None,
    })
}

pub(super) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Reads everything left, so that the verifiers see the end.
fn drain(r: &mut dyn Read) -> io::Result<()> {
    io::copy(r, &mut io::sink()).map(drop)
}

/// A layer to read: its blob, what the blob must hash to, and what its tar must hash to.
pub struct LayerSpec<'a> {
    pub blob: Box<dyn Read + Send + 'a>,
    pub digest: Option<(Digest, u64)>,
    /// `None` where the blob's own digest is unknown (a Docker archive's layer.tar): the
    /// diff_id then checks the same bytes.
    pub expected: Option<Compression>,
    pub diff_id: Digest,
}

/// Calls `read` with the layer's uncompressed tar stream; the result stands only if both
/// digests (and the size) matched once the streams were drained.
pub fn with_layer<T, E: From<io::Error>>(
    spec: LayerSpec<'_>,
    read: impl FnOnce(&mut dyn BufRead) -> Result<T, E>,
) -> Result<T, E> {
    let blob: Box<dyn Read + Send + '_> = match spec.digest {
        Some((want, size)) => Box::new(Verifying {
            inner: spec.blob,
            hasher: Sha256::new(),
            seen: 0,
            want,
            size: Some(size),
            what: "blob",
        }),
        None => spec.blob,
    };
    let mut raw = BufReader::with_capacity(256 << 10, blob);
    let found = sniff(raw.fill_buf()?);
    if let Some(expected) = spec.expected
        && expected != found
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the media type says {expected:?} but the data is {found:?}"),
        )
        .into());
    }
    let result = {
        let decoded: Box<dyn Read + '_> = match found {
            Compression::None => Box::new(&mut raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(&mut raw)?),
        };
        let diff = Verifying {
            inner: decoded,
            hasher: Sha256::new(),
            seen: 0,
            want: spec.diff_id,
            size: None,
            what: "layer diff_id",
        };
        let mut tar = BufReader::with_capacity(256 << 10, diff);
        let result = read(&mut tar)?;
        drain(&mut tar)?;
        result
    };
    drain(&mut raw)?;
    Ok(result)
}
