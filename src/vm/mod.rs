//! `rootpack boot`: an ext4 image run as a virtual machine under qemu, with a kernel and
//! an initramfs (the one `recipes/boot-initramfs.toml` makes), its serial console on the
//! terminal.
//!
//! With a command, the initramfs's init runs it chrooted in the image and prints
//! `rootpack-exit-status:TOKEN:STATUS` on the console before powering off; rootpack hides
//! that line and exits with STATUS. A token of this boot's own keeps a guest's output
//! from faking it. The serial console is the channel because it is the one every kernel
//! and machine type has from its first instant (a virtio-serial port needs a driver).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::interrupt::interrupted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when `/dev/kvm` can be used, falling back to TCG when a guest does not start.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Pc,
    Microvm,
}

pub struct BootOptions {
    pub image: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub writable: bool,
    pub timeout: Option<Duration>,
    pub accel: Accel,
    pub machine: Machine,
    /// Run this in the guest instead of the image's init.
    pub command: Vec<String>,
    /// Say nothing on stderr but errors and a fallback (not which accelerator).
    pub quiet: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Refused(String),
    #[error("qemu: {0} (qemu-system-x86_64 is in Debian's qemu-system-x86 package)")]
    Qemu(io::Error),
    #[error("the guest did not finish within {0:?}: stopped")]
    Timeout(Duration),
    #[error("interrupted")]
    Interrupted,
    #[error("the guest stopped without the command's exit status (qemu exited with {0})")]
    NoStatus(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BootError + '_ {
    move |source| BootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a boot starts from, found and checked before qemu runs.
struct Plan {
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    token: String,
    accel: Accel,
}

/// Boots the image; gives the command's exit status (or qemu's, without a command).
pub fn boot(opts: &BootOptions) -> Result<i32, BootError> {
    let manifest = check_image(&opts.image)?;
    let plan = plan(opts, &manifest)?;
    let work = crate::fsutil::TempDir::beside(&std::env::temp_dir().join("rootpack-boot"))
        .map_err(io_at(&std::env::temp_dir()))?;
    let accel = match plan.accel {
        Accel::Auto if kvm_usable() => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        a => a,
    };
    if !opts.quiet {
        eprintln!(
            "rootpack: booting {} with {} and {} under {}",
            opts.image.display(),
            plan.kernel.display(),
            plan.initrd.display(),
            match (accel, plan.accel) {
                (Accel::Kvm, _) => "KVM",
                (_, Accel::Auto) => "TCG (software emulation: /dev/kvm cannot be used)",
                _ => "TCG (software emulation)",
            }
        );
    }
    let ran = run_with_fallback(opts, &plan, accel, work.path());
    if opts.writable {
        record_changes(&opts.image, &manifest).map_err(io_at(&opts.image))?;
    }
    ran
}

/// After a `--writable` boot: the image's new size and sha256 in its manifest, marked
/// as modified (as `run --writable` does), so the next boot or run accepts it.
fn record_changes(image: &Path, manifest: &crate::manifest::Manifest) -> io::Result<()> {
    let (size, sha256) = crate::digest::digest_file(image)?;
    if size == manifest.size && sha256 == manifest.sha256 {
        return Ok(());
    }
    let mut changed = manifest.clone();
    (changed.size, changed.sha256, changed.modified) = (size, sha256, true);
    changed.write(&crate::manifest::path_for(image))
}

fn run_with_fallback(
    opts: &BootOptions,
    plan: &Plan,
    accel: Accel,
    work: &Path,
) -> Result<i32, BootError> {
    let watchdog =
        (plan.accel == Accel::Auto && accel == Accel::Kvm).then_some(Duration::from_secs(20));
    match run_qemu(opts, plan, accel, work, watchdog)? {
        Ran::Ended(status) => Ok(status),
        Ran::Silent => {
            // Said even with -q: the boot takes much longer than it would have.
            eprintln!(
                "rootpack: warning: the guest printed nothing in 20 s under KVM; booting it \
                 again under TCG (software emulation)"
            );
            match run_qemu(opts, plan, Accel::Tcg, work, None)? {
                Ran::Ended(status) => Ok(status),
                Ran::Silent => unreachable!("no watchdog under TCG"),
            }
        }
    }
}

/// The image's manifest, after checking the image against its digest.
fn check_image(image: &Path) -> Result<crate::manifest::Manifest, BootError> {
    let meta = std::fs::metadata(image).map_err(io_at(image))?;
    if !meta.is_file() {
        return Err(BootError::Refused(format!(
            "{}: boot takes an ext4 image file (output.format = \"ext4\")",
            image.display()
        )));
    }
    let path = crate::manifest::path_for(image);
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = crate::manifest::read(&path)
        .map_err(|e| {
            BootError::Refused(format!(
                "{}: {e}: boot runs images rootpack built",
                image.display()
            ))
        })?
        .for_image(&name);
    if manifest.format != "ext4" {
        return Err(BootError::Refused(format!(
            "{}: {}; boot takes an ext4 image",
            image.display(),
            crate::format::describe(&manifest.format)
        )));
    }
    let (_, sha) = crate::digest::digest_file(image).map_err(io_at(image))?;
    if sha != manifest.sha256 {
        return Err(BootError::Refused(format!(
            "{}: its sha256 is {sha}, not the {} its manifest records: changed since it was \
             built; refusing to boot it",
            image.display(),
            manifest.sha256
        )));
    }
    Ok(manifest)
}

/// The kernel: given, else the one the image's modules are for, else the host's newest.
fn find_kernel(given: &Option<PathBuf>, built_for: Option<&str>) -> Result<PathBuf, BootError> {
    if let Some(k) = given {
        std::fs::metadata(k).map_err(io_at(k))?;
        return Ok(k.clone());
    }
    if let Some(v) = built_for {
        let k = PathBuf::from(format!("/boot/vmlinuz-{v}"));
        if k.is_file() {
            return Ok(k);
        }
        log::warn!("the image's modules are for kernel {v}, and /boot has no vmlinuz-{v}");
    }
    crate::recipe::hints::expand_latest(Path::new("/"), "/boot/vmlinuz-{latest}")
        .map(PathBuf::from)
        .map_err(|e| BootError::Refused(format!("no kernel: {e}; pass --kernel")))
}

/// The initramfs: given, else a `boot-initramfs.*` image beside the image.
fn find_initrd(given: &Option<PathBuf>, image: &Path) -> Result<PathBuf, BootError> {
    if let Some(i) = given {
        std::fs::metadata(i).map_err(io_at(i))?;
        return Ok(i.clone());
    }
    let dir = image
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let found = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("boot-initramfs.") && !n.ends_with(".json")
            })
        });
    found.ok_or_else(|| {
        BootError::Refused(format!(
            "no initramfs: build recipes/boot-initramfs.toml into {} (rootpack build \
             recipes/boot-initramfs.toml --out {}), or pass --initrd",
            dir.display(),
            dir.display()
        ))
    })
}

fn plan(opts: &BootOptions, manifest: &crate::manifest::Manifest) -> Result<Plan, BootError> {
    let kernel = find_kernel(&opts.kernel, manifest.build.kernel.as_deref())?;
    let initrd = find_initrd(&opts.initrd, &opts.image)?;
    let token = format!("{:016x}", random());
    let mut cmdline = format!(
        "console=ttyS0 root=/dev/vda rootfstype=ext4 {} panic=-1",
        if opts.writable { "rw" } else { "ro" }
    );
    if !opts.command.is_empty() {
        let line: Vec<String> = opts.command.iter().map(|a| shell_quote(a)).collect();
        cmdline += &format!(
            " quiet rootpack.token={token} rootpack.cmd={}",
            base64(line.join(" ").as_bytes())
        );
    }
    if let Some(a) = &opts.append {
        cmdline += " ";
        cmdline += a;
    }
    if cmdline.len() > 2000 {
        return Err(BootError::Refused(
            "the command is too long for the kernel command line (2048 bytes)".into(),
        ));
    }
    Ok(Plan {
        kernel,
        initrd,
        cmdline,
        token,
        accel: opts.accel,
    })
}

fn random() -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    u64::from_le_bytes(b) ^ std::process::id() as u64
}

/// `'…'` with `'` written as `'\''`: what the init's `eval "set -- …"` reads back.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether KVM can be asked for: `/dev/kvm` opens read-write.
fn kvm_usable() -> bool {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn qemu_command(opts: &BootOptions, plan: &Plan, accel: Accel) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let (machine, disk) = match opts.machine {
        Machine::Pc => ("pc", "virtio-blk-pci"),
        Machine::Microvm => ("microvm,rtc=on", "virtio-blk-device"),
    };
    let (accel, cpu) = match accel {
        Accel::Kvm => ("kvm", "host"),
        _ => ("tcg", "max"),
    };
    let drive = format!(
        "file={},format=raw,if=none,id=root{}",
        opts.image.display(),
        if opts.writable { "" } else { ",snapshot=on" }
    );
    c.args([
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ])
    .args(["-machine", machine, "-accel", accel, "-cpu", cpu])
    .args([
        "-m",
        &opts.memory_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
    ])
    .args(["-serial", "stdio", "-monitor", "none"])
    .arg("-kernel")
    .arg(&plan.kernel)
    .arg("-initrd")
    .arg(&plan.initrd)
    .args(["-append", &plan.cmdline])
    .args(["-drive", &drive, "-device", &format!("{disk},drive=root")]);
    c
}

enum Ran {
    Ended(i32),
    /// Nothing on the console before the watchdog ran out.
    Silent,
}

fn run_qemu(
    opts: &BootOptions,
    plan: &Plan,
    accel: Accel,
    tmp: &Path,
    watchdog: Option<Duration>,
) -> Result<Ran, BootError> {
    let mut cmd = qemu_command(opts, plan, accel);
    // A snapshot's overlay goes here, and with it when the boot ends.
    cmd.env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stdin(Stdio::inherit());
    log::debug!("{cmd:?}");
    let mut child = cmd.spawn().map_err(BootError::Qemu)?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let token = plan.token.clone();
    let relay = std::thread::spawn(move || relay(stdout, &token, tx));
    let started = Instant::now();
    let mut seen_output = false;
    let killed = |child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    let exit = loop {
        seen_output |= rx.try_recv().is_ok();
        if let Some(status) = child.try_wait().map_err(BootError::Qemu)? {
            break status;
        }
        if interrupted() {
            killed(&mut child);
            return Err(BootError::Interrupted);
        }
        if let Some(t) = opts.timeout
            && started.elapsed() > t
        {
            killed(&mut child);
            return Err(BootError::Timeout(t));
        }
        if let Some(w) = watchdog
            && !seen_output
            && started.elapsed() > w
        {
            killed(&mut child);
            return Ok(Ran::Silent);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = relay.join().unwrap_or(None);
    match (status, opts.command.is_empty()) {
        (Some(s), _) => Ok(Ran::Ended(s)),
        (None, true) => Ok(Ran::Ended(exit.code().unwrap_or(1))),
        (None, false) => Err(BootError::NoStatus(exit.to_string())),
    }
}

/// Copies the console to stdout as it comes, without the exit status line; gives the
/// status it carried.
fn relay(
    mut from: impl Read,
    token: &str,
    output_seen: std::sync::mpsc::Sender<()>,
) -> Option<i32> {
    let marker = format!("rootpack-exit-status:{token}:");
    let mut out = io::stdout();
    let mut line: Vec<u8> = Vec::new();
    let mut status = None;
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = output_seen.send(());
        for &b in &buf[..n] {
            line.push(b);
            if b == b'\n' {
                let text = String::from_utf8_lossy(&line);
                match text.trim_end().strip_prefix(&marker) {
                    Some(s) => status = s.trim().parse().ok(),
                    None => {
                        let _ = out.write_all(&line);
                    }
                }
                line.clear();
            }
        }
        // A partial line that cannot be the marker is shown now (a prompt).
        if !line.is_empty()
            && !marker
                .as_bytes()
                .starts_with(&line[..line.len().min(marker.len())])
        {
            let _ = out.write_all(&line);
            line.clear();
        }
        let _ = out.flush();
    }
    let _ = out.write_all(&line);
    let _ = out.flush();
    status
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_as_the_guest_decodes_it() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"'sh' '-c'"), "J3NoJyAnLWMn");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(super::shell_quote("it's"), "'it'\\''s'");
    }
}
