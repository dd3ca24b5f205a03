//! The command line: every subcommand and flag, with its help.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "rootpack",
    version,
    about = "Build root-filesystem images from recipes; read, extract and pack initramfs archives",
    long_about = "Build root-filesystem images from recipes; read, extract and pack initramfs \
        archives.\n\nArchives are read natively: cpio (newc, crc, odc) in any number of \
        concatenated segments, each uncompressed or compressed with gzip, zstd, xz, lzma, \
        bzip2, lzop or lz4 (legacy framing), and tar (plain or compressed)."
)]
pub struct Cli {
    /// Print nothing but errors (no progress bars, no warnings).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print more about what is done (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the entries of an initramfs or tar archive, one path per line, in archive order.
    #[command(visible_alias = "list")]
    Ls {
        /// The archive (initramfs image, .cpio[.gz|.zst|...], .tar[.gz|.zst|.xz]).
        archive: PathBuf,
        /// Also show type and mode, uid:gid, size, mtime (UTC) and link targets.
        #[arg(short, long)]
        long: bool,
        /// Show the segments instead: offset, compression, format, entries, sizes.
        #[arg(short, long, conflicts_with = "long")]
        segments: bool,
    },
    /// Extract an archive into a folder, as the kernel would unpack it.
    ///
    /// Later segments override earlier ones. Type, mode (including setuid), mtime and hard
    /// links are kept; owners and device nodes too when running as root. Names with `..`
    /// are refused, and nothing is ever written outside DIR, whatever symlinks the archive
    /// holds. DIR must be absent or empty (see --merge); the tree is built beside it and
    /// renamed into place on success.
    #[command(visible_alias = "x")]
    Extract {
        archive: PathBuf,
        /// The folder to create.
        dir: PathBuf,
        /// Write each segment into its own folder: DIR/segment-1, DIR/segment-2, ...
        #[arg(long)]
        split: bool,
        /// Extract into DIR even if it is not empty (in place, not atomic).
        #[arg(long)]
        merge: bool,
    },
    /// Pack a folder into a reproducible newc cpio or tar archive.
    ///
    /// Entries are sorted, inode numbers renumbered and, when SOURCE_DATE_EPOCH is set,
    /// mtimes clamped to it. The format and compression follow the output's extension:
    /// .cpio .cpio.gz .cpio.zst .cpio.xz .cpio.lz4 .tar .tar.gz .tar.zst .tar.xz
    Pack {
        /// The folder to pack.
        dir: PathBuf,
        /// The archive to write (replaced atomically).
        #[arg(short, long)]
        output: PathBuf,
        /// Override the format implied by the extension.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Override the compression implied by the extension.
        #[arg(short, long, value_enum)]
        compress: Option<CompressArg>,
        /// Compression level (default: the compressor program's own, as 3cpio uses:
        /// zstd 3, gzip 6, xz 6; mkinitramfs uses zstd 9).
        #[arg(long)]
        level: Option<u32>,
        /// Compress in independent frames of at least this many MiB of input, cut where
        /// an entry ends, one per core at a time (0: one frame, one core). The output is
        /// the same on any number of cores.
        #[arg(long, value_name = "MIB", default_value_t = 8)]
        frame_size: u64,
        /// Prepend this folder as an uncompressed cpio segment (e.g. CPU microcode).
        #[arg(long, value_name = "DIR")]
        early: Option<PathBuf>,
    },
    /// Build an image from a recipe: layers, injected programs and files, then the image
    /// (ext4 by default) and its manifest, OUT/NAME.<format> and OUT/NAME.json.
    ///
    /// Set SOURCE_DATE_EPOCH (or source_date_epoch in the recipe) for byte-identical
    /// rebuilds. Nothing is left behind on failure or Ctrl-C; a previous image stays intact.
    Build {
        /// The recipe file (TOML).
        recipe: PathBuf,
        /// Output folder.
        #[arg(short, long, default_value = "images")]
        out: PathBuf,
        /// Print the manifest (JSON) on stdout.
        #[arg(long)]
        json: bool,
        /// Override the recipe's output.method for ext4 images.
        #[arg(long, value_enum)]
        method: Option<MethodArg>,
    },
    /// Run a command in a container made from an image (ext4), in new mount, UTS, IPC, PID
    /// and network namespaces with cgroup limits.
    ///
    /// The image is mounted read-only under a tmpfs overlay, so writes vanish when the
    /// container ends (--writable keeps them). Defaults (command, env, workdir, hostname,
    /// limits) come from the image's manifest. Exits with the command's status, 128+N if
    /// it was killed by signal N, 125 if the container could not be set up, 126/127 if the
    /// command could not be executed or found.
    Run(Box<RunArgs>),
    /// Show an image's manifest and verify the image's sha256.
    Inspect {
        /// The image (its manifest NAME.json is read from beside it).
        image: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Cpio,
    Tar,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
    Xz,
    Lz4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MethodArg {
    /// populate when a source date epoch is set (reproducible) or not root, else mount.
    Auto,
    /// mke2fs -d: no loop device, no mount; reproducible.
    Populate,
    /// Sparse file, mkfs, loop device, mount, copy.
    Mount,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The image file (its manifest NAME.json is read from beside it).
    pub image: std::path::PathBuf,
    /// The command and its arguments (default: the manifest's entrypoint and cmd).
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working folder of the command.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Run as UID[:GID] (numeric).
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Mount the image read-write: changes persist in the image file.
    #[arg(long)]
    pub writable: bool,
    /// Network: "none" (a namespace with only lo, the default) or "host".
    #[arg(long, default_value = "none", value_parser = ["none", "host"])]
    pub net: String,
    /// Bind a host path: HOST:CONTAINER[:ro] (repeatable).
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volume: Vec<String>,
    /// Mount a tmpfs at this path in the container (repeatable).
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Memory limit, like 256M (default: the manifest's).
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit in CPUs, like 0.5 (default: the manifest's).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Process limit (default: the manifest's).
    #[arg(long)]
    pub pids: Option<u64>,
    /// Add a capability to the default set (repeatable; ALL for every one).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Remove a capability from the default set (repeatable; ALL for every one).
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Execute the command as PID 1 instead of under rootpack's init.
    #[arg(long)]
    pub no_init: bool,
    /// Give the command a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run in a user namespace: root in the container is uid 100000 outside, and the
    /// image is seen through an id-mapped mount.
    #[arg(long)]
    pub userns: bool,
    /// Security options, in Docker's spelling (repeatable): seccomp=unconfined turns the
    /// system call filter off, seccomp=FILE.json loads a Docker-format profile instead of
    /// Docker's default one; no-new-privileges is always on.
    #[arg(long, value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Run even if the image does not match its manifest's sha256.
    #[arg(long)]
    pub no_verify: bool,
}
