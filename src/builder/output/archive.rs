//! A cpio or tar archive of the tree, compressed or not.

use std::path::Path;

use super::sync_hashing;
use crate::archive::Compression;
use crate::archive::pack::{PackFormat, PackOptions, pack};
use crate::builder::{BuildError, Job, Written, out_err};
use crate::fsutil::AtomicFile;
use crate::interrupt::interrupted;

pub(in crate::builder) fn write(
    job: &Job<'_>,
    tree: &Path,
    format: PackFormat,
    compression: Compression,
    recorded: Option<&crate::tree::recorded::RecordedTree>,
) -> Result<Written, BuildError> {
    let mut file = AtomicFile::create(job.image).map_err(out_err(job.image))?;
    let pack_opts = PackOptions {
        clamp_mtime: job.sde,
        recorded: recorded.cloned().map(std::sync::Arc::new),
        ..PackOptions::new(format, compression)
    };
    let bar = crate::progress::bytes_bar(0, !job.opts.progress, "packing");
    let summary = pack(tree, file.file(), &pack_opts, bar.as_ref(), &interrupted)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (sha256, pending) = sync_hashing(file, job.image)?;
    Ok(Written {
        sha256,
        pending,
        warnings: crate::archive::pack::left_out(&summary),
        ..Written::default()
    })
}
