//! The command line: every subcommand and flag, with its help and examples. Option values
//! are checked here, so a bad one is a usage error (exit 2) before anything runs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod boot;
mod cache;
mod values;

pub use boot::{AccelArg, BootArgs, MachineArg};
pub use cache::{CacheArgs, CacheCommand};
pub use values::{MountArg, SecurityOpt, VolumeArg, env_values, parse_env};
use values::{
    parse_capability, parse_cpus, parse_frame_size, parse_memory, parse_mount, parse_network,
    parse_output_format, parse_port, parse_security_opt, parse_sysctl, parse_user_arg,
    parse_volume,
};

/// `0.1.0 (git abc1234)` from a checkout, `0.1.0` otherwise (see build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), env!("ROOTPACK_GIT"));

#[derive(Debug, Parser)]
#[command(
    name = "rootpack",
    version = VERSION,
    about = "Build root-filesystem images from recipes, run containers from them; read, \
        extract and pack initramfs archives",
    long_about = "Build root-filesystem images from recipes, run containers from them; read, \
        extract and pack initramfs archives.\n\nArchives are read natively: cpio (newc, crc, \
        odc) in any number of concatenated segments, each uncompressed or compressed with \
        gzip, zstd, xz, lzma, bzip2, lzop or lz4 (legacy framing), tar (plain or \
        compressed), and container images (OCI layouts, OCI and Docker archives), their \
        layers merged as the OCI spec says.",
    after_help = "Examples:\n  \
        rootpack build recipes/hello.toml\n  \
        rootpack run images/hello.ext4 -- bash -c 'echo hello from $HOSTNAME'\n  \
        rootpack ls /boot/initrd.img-$(uname -r) | head\n  \
        rootpack extract /boot/initrd.img-$(uname -r) /tmp/initrd\n\n\
        `rootpack COMMAND --help` shows each command's options and examples; `rootpack man` \
        prints the manual page."
)]
pub struct Cli {
    /// Print nothing but errors (no progress bars, warnings or notices).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Say what is being done (repeat for more: -vv tools, mounts and timings).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// `-v/--verbose` for the subcommands other than `run` (where `-v` is a volume, as in
/// Docker, and verbosity is `--verbose`).
#[derive(Debug, Args)]
pub struct Verbosity {
    /// Say what is being done (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the entries of an initramfs, tar or OCI image archive, one path per line, in
    /// archive order.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  \
            rootpack ls /boot/initrd.img-$(uname -r)\n  \
            rootpack ls -l initrd.img | head      # stops quietly when head is done\n  \
            rootpack ls --segments initrd.img     # offset, compression, format, sizes\n  \
            rootpack ls --json rootfs.tar.zst | jq -r '.[].name'"
    )]
    Ls(LsArgs),
    /// Extract an archive into a folder, as the kernel would unpack it.
    ///
    /// Later segments override earlier ones. Type, mode (including setuid), mtime and hard
    /// links are kept; owners and device nodes too when running as root. Names with `..`
    /// are refused, and nothing is ever written outside DIR, whatever symlinks the archive
    /// holds. DIR must be absent or empty (see --merge); the tree is built beside it and
    /// renamed into place on success.
    #[command(
        visible_alias = "x",
        after_help = "Examples:\n  \
            rootpack extract /boot/initrd.img-$(uname -r) /tmp/initrd\n  \
            rootpack extract --split initrd.img parts    # parts/segment-1, parts/segment-2\n  \
            rootpack extract --merge overlay.cpio.gz /tmp/initrd"
    )]
    Extract(ExtractArgs),
    /// Pack a folder into a reproducible newc cpio or tar archive.
    ///
    /// Entries are sorted, inode numbers renumbered and, when SOURCE_DATE_EPOCH is set,
    /// mtimes clamped to it. The format and compression follow the output's extension:
    /// .cpio .cpio.gz .cpio.zst .cpio.xz .cpio.lz4 .tar .tar.gz .tar.zst .tar.xz; with
    /// --format and an extension that names no compression, the archive is uncompressed.
    #[command(after_help = "Examples:\n  \
            rootpack pack tree -o initrd.cpio.zst\n  \
            rootpack pack tree -o initrd.img --early microcode -c zstd\n  \
            SOURCE_DATE_EPOCH=1700000000 rootpack pack tree -o rootfs.tar.gz\n  \
            rootpack pack tree -o rootfs.img --format tar    # plain tar")]
    Pack(PackArgs),
    /// Build an image from a recipe: layers, injected programs and files, then the image
    /// (ext4 by default) and its manifest, OUT/NAME.<format> and OUT/NAME.json.
    ///
    /// Set SOURCE_DATE_EPOCH (or source_date_epoch in the recipe) for byte-identical
    /// rebuilds. Nothing is left behind on failure or Ctrl-C; a previous image stays intact.
    /// The tree after the layers and after each [[run]] step is cached: a rebuild starts
    /// from what did not change, and an image made from the same inputs is up to date.
    #[command(after_help = "Examples:\n  \
            rootpack build recipes/hello.toml              # images/hello.ext4 + hello.json\n  \
            rootpack build recipes/hello.toml --out /tmp/img --json\n  \
            rootpack build recipes/initramfs.toml --method mount\n\n\
            Every recipe key: rootpack man --recipe | man -l -  (rootpack-recipe(5), docs/recipe.md)")]
    Build(BuildArgs),
    /// Run a command in a container made from an image (ext4) or an image folder, in new
    /// mount, UTS, IPC, PID and network namespaces with cgroup limits. An image file needs
    /// root; a folder runs without it too.
    ///
    /// The image is mounted read-only under a tmpfs overlay, so writes vanish when the
    /// container ends (--writable keeps them). Defaults (command, env, workdir, hostname,
    /// limits) come from the image's manifest. Exits with the command's status, 128+N if
    /// it was killed by signal N, 125 if the container could not be set up, 126/127 if the
    /// command could not be executed or found.
    #[command(
        after_help = "Examples:\n  \
            rootpack run images/hello.ext4                      # the manifest's command\n  \
            rootpack run images/hello.ext4 ls -l /              # or: -- ls -l /\n  \
            rootpack run -it images/hello.ext4 bash             # an interactive shell\n  \
            rootpack run -v /srv/data:/data:ro -e MODE=test images/hello.ext4 ls /data\n  \
            rootpack run --memory 64M --pids 32 -u 1000:100 images/busybox.ext4 id\n  \
            rootpack run --security-opt no-new-privileges -u 1000 images/busybox.ext4 id\n  \
            rootpack run --sysctl net.ipv4.ip_unprivileged_port_start=0 images/hello.ext4\n  \
            rootpack run images/tree -- ls /                   # a folder (output.format = \"dir\")",
        disable_help_flag = true
    )]
    Run(Box<RunArgs>),
    /// List detached containers (`run -d`): the running ones, or with -a all.
    #[command(after_help = "Examples:\n  \
            rootpack ps\n  \
            rootpack ps -a --json | jq -r '.[].name'")]
    Ps(PsArgs),
    /// Run a command in a running detached container, in all its namespaces and cgroups.
    #[command(after_help = "Examples:\n  \
            rootpack exec web ls /\n  \
            rootpack exec -it web sh\n  \
            rootpack exec -u 1000:1000 -w /tmp -e MODE=test web id")]
    Exec(ExecArgs),
    /// Print a detached container's output (stdout and stderr as they were written).
    #[command(after_help = "Examples:\n  \
            rootpack logs web\n  \
            rootpack logs -f web      # until it ends")]
    Logs(LogsArgs),
    /// Stop detached containers: SIGTERM to the command, SIGKILL after --time seconds.
    Stop(StopArgs),
    /// Send a signal (default SIGKILL) to detached containers.
    Kill(KillArgs),
    /// Remove ended detached containers (-f: running ones too, killed first).
    Rm(RmArgs),
    /// Boot an ext4 image as a virtual machine (qemu): its own kernel, its serial console on
    /// the terminal; with a command, run it in the guest and exit with its status.
    #[command(after_help = "Examples:\n  \
            rootpack build recipes/boot-initramfs.toml      # once: the initramfs boot uses\n  \
            rootpack boot images/busybox.ext4               # the image's /sbin/init\n  \
            rootpack boot images/busybox.ext4 -- sh -c 'uname -r; exit 3'; echo $?\n  \
            rootpack boot --accel tcg --timeout 2m -m 256M images/busybox.ext4 -- true")]
    Boot(BootArgs),
    /// The build cache: list its states, prune it, carry it between machines.
    #[command(after_help = "Examples:\n  \
            rootpack cache ls\n  \
            rootpack cache prune --keep-size 5G --older-than 30d\n  \
            rootpack cache export ci-cache/          # an OCI layout a CI cache can keep\n  \
            rootpack cache import ci-cache/")]
    Cache(CacheArgs),
    /// Show an image's manifest and verify the image's sha256.
    #[command(after_help = "Examples:\n  \
            rootpack inspect images/hello.ext4\n  \
            rootpack inspect images/hello.json       # the manifest's path works too\n  \
            rootpack inspect --json images/hello.ext4 | jq .config")]
    Inspect(InspectArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
            rootpack completions bash > /etc/bash_completion.d/rootpack\n  \
            rootpack completions zsh > ~/.zfunc/_rootpack")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or install the pages where `man` finds them.
    #[command(after_help = "Examples:\n  \
            rootpack man | man -l -\n  \
            rootpack man --install                   # /usr/local/share/man/man1\n  \
            rootpack man --install ~/.local/share/man/man1\n  \
            rootpack man --recipe | man -l -         # rootpack-recipe(5): every recipe key")]
    Man {
        /// Print rootpack-recipe(5), the recipe file's page, instead.
        #[arg(long, conflicts_with = "install")]
        recipe: bool,
        /// Write rootpack.1 and a page per command (rootpack-run.1, ...) into this folder,
        /// and rootpack-recipe.5 into the man5 folder beside it.
        #[arg(
            long,
            value_name = "DIR",
            num_args = 0..=1,
            default_missing_value = "/usr/local/share/man/man1"
        )]
        install: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The archive (initramfs image, .cpio[.gz|.zst|...], .tar[.gz|.zst|.xz]) or container
    /// image (an OCI layout folder, an OCI or Docker archive).
    pub archive: PathBuf,
    /// Also show type and mode, uid:gid, size, mtime (UTC) and link targets.
    #[arg(short, long)]
    pub long: bool,
    /// Show the segments instead: offset, compression, format, entries, sizes.
    #[arg(short, long, conflicts_with = "long")]
    pub segments: bool,
    /// Print a JSON array instead: every entry with all its fields (or the segments).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    pub archive: PathBuf,
    /// The folder to create.
    pub dir: PathBuf,
    /// Write each segment into its own folder: DIR/segment-1, DIR/segment-2, ...
    #[arg(long)]
    pub split: bool,
    /// Extract into DIR even if it is not empty (in place, not atomic).
    #[arg(long)]
    pub merge: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The folder to pack.
    pub dir: PathBuf,
    /// The archive to write (replaced atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Override the format implied by the extension.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Override the compression implied by the extension.
    #[arg(short, long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Compression level (default: the compressor program's own, as 3cpio uses:
    /// zstd 3, gzip 6, xz 6; mkinitramfs uses zstd 9).
    #[arg(long)]
    pub level: Option<u32>,
    /// Compress in independent frames of at least this many MiB of input, cut where
    /// an entry ends, one per core at a time (0: one frame, one core). The output is
    /// the same on any number of cores.
    /// A bare number is MiB; units as in 512K, 1M, 2G.
    #[arg(long, value_name = "SIZE", default_value = "8", value_parser = parse_frame_size)]
    pub frame_size: u64,
    /// Prepend this folder as an uncompressed cpio segment (e.g. CPU microcode).
    #[arg(long, value_name = "DIR")]
    pub early: Option<PathBuf>,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe file (TOML).
    pub recipe: PathBuf,
    /// Output folder.
    #[arg(short, long, default_value = "images")]
    pub out: PathBuf,
    /// Print the manifest (JSON) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Build this format instead of the recipe's output.format (repeatable: one image per
    /// format, all listed in the one manifest NAME.json): ext4, dir, tar, cpio, cpio.zst,
    /// oci, oci-archive, …
    #[arg(long = "format", value_name = "FORMAT", value_parser = parse_output_format)]
    pub formats: Vec<rootpack::format::OutputFormat>,
    /// Override the recipe's output.method for ext4 images.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Build a recipe from an untrusted source (an outside pull request): every host path
    /// it names must be inside its own folder or an --allow folder (programs and their
    /// libraries also in the system's folders), step mounts are read-only, and steps get
    /// no host network.
    #[arg(long)]
    pub untrusted: bool,
    /// With --untrusted: a host folder the recipe may also read (repeatable).
    #[arg(long, value_name = "DIR", requires = "untrusted")]
    pub allow: Vec<PathBuf>,
    /// The build cache's folder [default: /var/cache/rootpack for root,
    /// $XDG_CACHE_HOME/rootpack or ~/.cache/rootpack otherwise].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Use no cache: every layer unpacked and every step run, the image made even when it
    /// is up to date.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Make the image even when it is up to date (the cache is still used).
    #[arg(long)]
    pub force: bool,
    /// Fetch the tags of docker:// layers again (a pinned digest never changes).
    #[arg(long)]
    pub pull: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The image, or its manifest (NAME.json beside the image).
    pub image: PathBuf,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
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
    /// populate when a source date epoch is set (reproducible), the recipe has [[run]]
    /// steps (the image is sized after them), or without root; else mount.
    Auto,
    /// mke2fs -d: no loop device, no mount; reproducible.
    Populate,
    /// Sparse file, mkfs, loop device, mount, copy.
    Mount,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Also the ended ones.
    #[arg(short, long)]
    pub all: bool,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Give the command a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open: accepted for Docker's `-i`/`-it`; stdin is always passed on.
    #[arg(short, long)]
    pub interactive: bool,
    /// Run as UID[:GID] (default: the container's user).
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Working folder (default: the container's).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<(String, Option<String>)>,
    /// The container: its name, id, or the start of its id.
    pub container: String,
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the container ends.
    #[arg(short, long)]
    pub follow: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal: a name (TERM, SIGHUP) or a number.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running containers too, killing them first.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// A bind mount: host path, path in the container, read-only.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The image: an ext4 image file, or a folder built with output.format = "dir" (its
    /// manifest NAME.json is read from beside it).
    pub image: PathBuf,
    /// The command and its arguments (default: the manifest's entrypoint and cmd). `--`
    /// before it is optional.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<(String, Option<String>)>,
    /// Read environment variables from a file: KEY=VALUE lines, `#` comments, a bare KEY
    /// takes the value from rootpack's environment (repeatable; -e wins).
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Run this program instead of the manifest's entrypoint; COMMAND becomes its arguments.
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// Working folder of the command (created if missing).
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Run as a user: UID[:GID] or NAME[:GROUP], names looked up in the image's
    /// /etc/passwd and /etc/group.
    #[arg(short, long, value_name = "USER[:GROUP]", value_parser = parse_user_arg)]
    pub user: Option<String>,
    /// The container's hostname (default: the manifest's, else the image's name).
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Print help (-h is the hostname here, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Mount the image read-write: changes persist in the image file or folder.
    #[arg(long, conflicts_with = "read_only")]
    pub writable: bool,
    /// Mount the container's root read-only (volumes, --tmpfs, /dev and the network's
    /// files stay writable), as Docker's --read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Network: none (a namespace with only lo: the default, closed unless asked), host
    /// (the host's), private (an address on the rootpack0 bridge with egress and DNS;
    /// slirp4netns without root), container:ID (a detached container's), ns:PATH (a
    /// network namespace), or a network's name from /etc/rootpack/net.d or
    /// /etc/cni/net.d.
    #[arg(long, alias = "net", value_name = "NETWORK", value_parser = parse_network)]
    pub network: Option<rootpack::net::Network>,
    /// Publish a port: [IP:]HOST:CONTAINER[/tcp|udp] (repeatable); implies
    /// `--network private`. Without IP, on all of the host's addresses.
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CTR[/PROTO]", value_parser = parse_port)]
    pub publish: Vec<rootpack::net::PortMapping>,
    /// Bind a host path: HOST:CONTAINER[:ro] (repeatable).
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]", value_parser = parse_volume)]
    pub volume: Vec<VolumeArg>,
    /// A mount in Docker's long form (repeatable): type=bind,source=HOST,target=CTR
    /// [,readonly] or type=tmpfs,target=CTR (src, dst, destination and ro too).
    #[arg(long, value_name = "type=bind,source=…,target=…", value_parser = parse_mount)]
    pub mount: Vec<MountArg>,
    /// Mount a tmpfs at this path in the container (repeatable).
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Memory limit, like 256M or 1G (default: the manifest's).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs, like 0.5 (default: the manifest's).
    #[arg(long, value_parser = parse_cpus, allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Process limit (default: the manifest's).
    #[arg(long)]
    pub pids: Option<u64>,
    /// Add a capability to the default set (repeatable; ALL for every one).
    #[arg(long, value_name = "CAP", value_parser = parse_capability)]
    pub cap_add: Vec<String>,
    /// Remove a capability from the default set (repeatable; ALL for every one).
    #[arg(long, value_name = "CAP", value_parser = parse_capability)]
    pub cap_drop: Vec<String>,
    /// Execute the command as PID 1 instead of under rootpack's init.
    #[arg(long, conflicts_with = "init")]
    pub no_init: bool,
    /// Run an init as PID 1 that forwards signals and reaps orphans: rootpack always
    /// does (its own, `rootpack-init`), so this is accepted for Docker's `--init`.
    #[arg(long)]
    pub init: bool,
    /// Refused: rootpack has no privileged containers (add capabilities with --cap-add,
    /// turn the filter off with --security-opt seccomp=unconfined).
    #[arg(long, hide = true)]
    pub privileged: bool,
    /// Refused: containers get Docker's default devices only.
    #[arg(long, value_name = "DEVICE", hide = true)]
    pub device: Vec<String>,
    /// Give the command a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open: accepted for Docker's `-i`/`-it`; rootpack always passes stdin on.
    #[arg(short, long)]
    pub interactive: bool,
    /// With -d: remove the container's record and log when it ends. In the foreground
    /// a container leaves nothing behind anyway (only --writable changes the image).
    #[arg(long)]
    pub rm: bool,
    /// Run in the background: print the container's id and return; see `rootpack ps`,
    /// `logs`, `exec`, `stop`, `kill` and `rm`.
    #[arg(short, long)]
    pub detach: bool,
    /// A name for a detached container (default: the start of its id).
    #[arg(long, requires = "detach")]
    pub name: Option<String>,
    /// Run in a user namespace: root in the container is uid 100000 outside, and the
    /// image is seen through an id-mapped mount.
    #[arg(long)]
    pub userns: bool,
    /// Security options, in Docker's spelling (repeatable): no-new-privileges (or =true)
    /// sets no_new_privs, so set-uid programs and file capabilities gain nothing (off by
    /// default, as in Docker: they gain at most the container's capabilities;
    /// =false overrides the image's config.no_new_privileges); seccomp=unconfined turns
    /// the system call filter off, seccomp=FILE.json loads a Docker-format profile instead
    /// of Docker's default one; apparmor=unconfined and label=disable are accepted (run
    /// applies no AppArmor profile or SELinux label).
    #[arg(long, value_name = "OPT", value_parser = parse_security_opt)]
    pub security_opt: Vec<SecurityOpt>,
    /// Set a kernel parameter of the container's own namespaces (repeatable; over the
    /// image's config.sysctl): kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem,
    /// kernel.shmall, kernel.shmmax, kernel.shmmni, kernel.shm_rmid_forced, fs.mqueue.*,
    /// and net.* unless the network is the host's or another container's. In a network of
    /// its own, net.ipv4.ping_group_range defaults to "0 2147483647" (ping without
    /// CAP_NET_RAW), as in Docker.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_sysctl)]
    pub sysctl: Vec<(String, String)>,
    /// A resource limit, as Docker takes it (repeatable): NAME=SOFT[:HARD] with NAME one
    /// of core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss,
    /// rtprio, rttime, sigpending, stack, and `unlimited` for no limit. Open files default
    /// to 1024 soft, 524288 hard (or the caller's hard limit, when it cannot be raised).
    #[arg(long, value_name = "NAME=SOFT[:HARD]", value_parser = rootpack::run::rlimit::Ulimit::parse)]
    pub ulimit: Vec<rootpack::run::rlimit::Ulimit>,
    /// Run even if the image does not match its manifest's sha256, or other users than
    /// the caller and root can write it.
    #[arg(long)]
    pub no_verify: bool,
    /// Say what is being done: mounts, namespaces, timings (repeat for more). `-v` is a
    /// volume here, as in Docker.
    #[arg(long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}
