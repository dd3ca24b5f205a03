//! The output formats a recipe may ask for, in one table: the names `output.format` takes,
//! the image file's extension, and from those the manifest's path.

use crate::archive::Compression;
use crate::archive::pack::PackFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Ext4,
    Archive(PackFormat, Compression),
    Dir,
    /// An OCI image layout folder, `NAME.oci`.
    Oci,
    /// The layout as a tar with Docker's manifest.json, `NAME.oci.tar`.
    OciArchive,
}

impl OutputFormat {
    /// Every format a recipe may ask for: the one list names, extensions and the
    /// manifest's path come from.
    pub const ALL: [OutputFormat; 13] = {
        use Compression as C;
        use PackFormat::{Cpio, Tar};
        [
            OutputFormat::Ext4,
            OutputFormat::Archive(Cpio, C::None),
            OutputFormat::Archive(Cpio, C::Gzip),
            OutputFormat::Archive(Cpio, C::Zstd),
            OutputFormat::Archive(Cpio, C::Xz),
            OutputFormat::Archive(Cpio, C::Lz4),
            OutputFormat::Archive(Tar, C::None),
            OutputFormat::Archive(Tar, C::Gzip),
            OutputFormat::Archive(Tar, C::Zstd),
            OutputFormat::Archive(Tar, C::Xz),
            OutputFormat::Dir,
            OutputFormat::Oci,
            OutputFormat::OciArchive,
        ]
    };

    /// The image file's extension: `ext4`, `cpio.zst`, ...
    pub fn extension(&self) -> String {
        match self {
            OutputFormat::Ext4 => "ext4".into(),
            OutputFormat::Dir => "d".into(),
            OutputFormat::Oci => "oci".into(),
            OutputFormat::OciArchive => "oci.tar".into(),
            OutputFormat::Archive(f, c) => {
                let base = match f {
                    PackFormat::Cpio => "cpio",
                    PackFormat::Tar => "tar",
                };
                match c.suffix() {
                    None => base.into(),
                    Some(suffix) => format!("{base}.{suffix}"),
                }
            }
        }
    }

    /// The name `output.format` takes: the extension, but `dir` for a folder.
    pub fn name(&self) -> String {
        match self {
            OutputFormat::Dir => "dir".into(),
            OutputFormat::OciArchive => "oci-archive".into(),
            other => other.extension(),
        }
    }
}

/// A format's name as a phrase: "a cpio.zst archive", "an OCI archive", "an image folder".
pub fn describe(name: &str) -> String {
    match name {
        "oci-archive" => "an OCI archive".into(),
        "oci" => "an OCI image layout".into(),
        "dir" | "d" => "an image folder".into(),
        "ext4" => "an ext4 image".into(),
        other => format!("a {other} archive"),
    }
}
