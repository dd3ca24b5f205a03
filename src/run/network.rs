//! The container's network as a start needs it (see [`crate::net`]): a private one
//! prepared before the clone (ports reserved, its resolv.conf and hosts bound into the
//! root) and attached once the child's network namespace exists; a joined one entered
//! around the clone.

use std::os::unix::io::OwnedFd;

use super::rootfs::{RootfsSpec, Volume};
use super::{RunError, RunOptions, ms};
use crate::net::{self, Attachment, Network};
use crate::tree::safe_path::RelPath;

pub(super) use crate::net::Prepared;

/// For a private network: its ports reserved and its files bound on `/etc/resolv.conf`
/// and `/etc/hosts`.
pub(super) fn prepare(
    opts: &RunOptions,
    hostname: &str,
    rootfs: &mut RootfsSpec,
    t0: std::time::Instant,
) -> Result<Option<Prepared>, RunError> {
    if !opts.ports.is_empty() && !opts.network.is_attached() {
        return Err(RunError::Invalid(format!(
            "-p publishes ports of a private network; --network {} has none",
            network_name(&opts.network)
        )));
    }
    match &opts.network {
        Network::Container(id) => {
            return Err(RunError::Invalid(format!(
                "--network container:{id}: no such container"
            )));
        }
        Network::Join(path) if opts.userns => {
            return Err(RunError::Invalid(format!(
                "--network ns:{}: a joined network and --userns do not go together (the \
                 namespace's sysfs belongs to another user namespace)",
                path.display()
            )));
        }
        n if !n.is_attached() => return Ok(None),
        _ => {}
    }
    let id = format!(
        "rootpack-{}-{:08x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut names = vec![hostname.to_string()];
    names.extend(opts.name.clone());
    let request = net::Request {
        network: &opts.network,
        ports: &opts.ports,
        id: &id,
        names,
        rootless: opts.rootless,
    };
    let prepared = net::prepare(&request).map_err(RunError::Setup)?;
    for (file, target) in [
        (&prepared.resolv_conf, "etc/resolv.conf"),
        (&prepared.hosts, "etc/hosts"),
    ] {
        rootfs.volumes.push(Volume {
            host: file.clone(),
            target: RelPath::parse(target.as_bytes()).expect("a valid path"),
            read_only: false,
            through_link: true,
        });
    }
    log::debug!("network {id} prepared ({:.1} ms)", ms(t0));
    Ok(Some(prepared))
}

/// The prepared network connected to the container `pid`.
/// The plugins run in the watcher when there is one, so that an ADD that rootpack's
/// death interrupts is finished there, and then undone.
fn attach(
    prepared: Prepared,
    pid: i32,
    watcher: Option<&super::watcher::Watcher>,
    t0: std::time::Instant,
) -> Result<Attachment, RunError> {
    let attachment = prepared
        .attach(pid, |job, pid| match watcher {
            Some(w) => w.reply(),
            None => job.add(pid),
        })
        .map_err(RunError::Setup)?;
    log::debug!(
        "network attached: address {} ({:.1} ms)",
        attachment
            .address
            .map_or("none".to_string(), |a| a.to_string()),
        ms(t0)
    );
    Ok(attachment)
}

/// From the clone to "go": the CNI ADD started in the watcher (which runs it while the
/// container builds its root), rootpack's `hand_over`, then the network collected.
pub(super) fn around_hand_over(
    prepared: Option<Prepared>,
    watcher: Option<&super::watcher::Watcher>,
    pid: i32,
    t0: std::time::Instant,
    hand_over: impl FnOnce() -> Result<(), RunError>,
) -> Result<Option<Attachment>, RunError> {
    if let (Some(p), Some(w)) = (&prepared, watcher)
        && p.uses_cni()
        && let Err(e) = w.request(pid)
    {
        // The reply then says the watcher is gone.
        log::debug!("{e}");
    }
    if let Err(e) = hand_over() {
        if let Some(p) = prepared {
            p.abandon();
        }
        return Err(e);
    }
    prepared.map(|p| attach(p, pid, watcher, t0)).transpose()
}

/// The network disconnected once the container is gone: by the watcher when there is
/// one (after rootpack returns), else here.
pub(super) fn detach(attachment: Option<Attachment>, watcher: bool) {
    match attachment {
        Some(a) if watcher => a.release(),
        Some(a) => {
            if let Err(e) = a.detach() {
                log::warn!("removing the container's network: {e}");
            }
        }
        None => {}
    }
}

fn network_name(n: &Network) -> &str {
    match n {
        Network::None => "none",
        Network::Host => "host",
        _ => "of this kind",
    }
}

/// A network namespace to start the container in, and ours to come back to.
pub(super) struct Joined {
    target: OwnedFd,
    own: OwnedFd,
}

impl Joined {
    pub(super) fn enter(&self) -> std::io::Result<()> {
        setns(&self.target)
    }

    pub(super) fn leave(&self) -> std::io::Result<()> {
        setns(&self.own)
    }
}

fn setns(fd: &OwnedFd) -> std::io::Result<()> {
    rustix::thread::move_into_link_name_space(
        std::os::unix::io::AsFd::as_fd(fd),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(std::io::Error::from)
}

/// `--network ns:PATH`: the namespace opened (and checked to be a network one).
pub(super) fn open_joined(opts: &RunOptions) -> Result<Option<Joined>, RunError> {
    let Network::Join(path) = &opts.network else {
        return Ok(None);
    };
    let open =
        |p: &std::path::Path| -> std::io::Result<OwnedFd> { Ok(std::fs::File::open(p)?.into()) };
    let bad =
        |e: std::io::Error| RunError::Invalid(format!("--network ns:{}: {e}", path.display()));
    let target = open(path).map_err(bad)?;
    let own = open(std::path::Path::new("/proc/self/ns/net")).map_err(RunError::Start)?;
    let joined = Joined { target, own };
    // Entered and left once now: a path that is no network namespace fails here, with
    // its name, rather than at the clone.
    joined.enter().map_err(|e| {
        bad(std::io::Error::new(
            e.kind(),
            format!("not a network namespace ({e})"),
        ))
    })?;
    joined.leave().map_err(RunError::Start)?;
    Ok(Some(joined))
}
