//! A container's network: none (`lo` alone), the host's, one joined from elsewhere, or a
//! private one with egress, made by the CNI plugins as root ([`cni`], [`bridge`]) and by
//! slirp4netns without root ([`slirp`]), with published ports ([`ports`]) and the
//! container's resolv.conf and hosts ([`files`]).
//!
//! Each private attachment is a folder under the state root: its record (the network
//! list, the runtime values, the ADD result), the container's network namespace pinned
//! by a bind mount (so DEL finds the veth and the rules the plugins keyed on it), and a
//! lock its owner holds for the container's life. Whoever finds an attachment unlocked
//! (the next start's sweep, or the watcher of an owner that was killed) runs DEL and
//! removes it: a `kill -9` leaves nothing the next start does not clean.

pub mod bridge;
pub mod cni;
pub mod files;
pub mod ports;
pub mod slirp;

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::unix::io::OwnedFd;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

pub use ports::PortMapping;

/// What `--network` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own with only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// The default private network: an address, a route out, DNS.
    Private,
    /// A network list of the user's, by name (see [`cni::CONFIG_DIRS`]).
    Named(String),
    /// The network namespace of a detached container, by id or name.
    Container(String),
    /// A network namespace by path (`ns:PATH`).
    Join(PathBuf),
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "none" => Network::None,
            "host" => Network::Host,
            // Docker's and podman's name for their default network.
            "private" | "bridge" => Network::Private,
            "" => return Err("--network \"\": one of none, host, private, container:ID, ns:PATH or a network's name".into()),
            _ => match text.split_once(':') {
                Some(("container", id)) if !id.is_empty() => Network::Container(id.into()),
                Some(("ns", path)) if path.starts_with('/') => Network::Join(path.into()),
                Some(("ns", _)) => return Err(format!("--network {text}: ns: takes an absolute path")),
                Some(_) => return Err(format!("--network {text}: one of none, host, private, container:ID, ns:PATH or a network's name")),
                None if cni_name(text) => Network::Named(text.into()),
                None => return Err(format!("--network {text:?} is not a network's name")),
            },
        })
    }
}

fn cni_name(text: &str) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !text.starts_with('.')
}

impl Network {
    /// A private network that rootpack attaches (not none, the host's or a joined one).
    pub fn is_attached(&self) -> bool {
        matches!(self, Network::Private | Network::Named(_))
    }

    /// The container gets a network namespace of its own at the clone.
    pub fn new_namespace(&self) -> bool {
        matches!(self, Network::None | Network::Private | Network::Named(_))
    }
}

/// The state root: `/run/rootpack-net` for root, else under `$XDG_RUNTIME_DIR`.
pub fn state_root() -> PathBuf {
    crate::fsutil::runtime_state_dir("rootpack-net")
}

/// What a private network is asked for.
pub struct Request<'a> {
    pub network: &'a Network,
    pub ports: &'a [PortMapping],
    /// Unique among running containers: the CNI container id and the folder's name.
    pub id: &'a str,
    /// The names `/etc/hosts` gives the container's address (its hostname first).
    pub names: Vec<String>,
    /// Without root: slirp4netns instead of the CNI plugins.
    pub rootless: bool,
}

/// A private network ready to attach, prepared before the clone: the ports reserved,
/// the files the container binds written (the hosts file is completed by
/// [`Prepared::attach`]), and the attachment's folder locked.
pub struct Prepared {
    dir: PathBuf,
    lock: File,
    backend: Backend,
    reserved: Vec<OwnedFd>,
    ports: Vec<PortMapping>,
    id: String,
    names: Vec<String>,
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
}

enum Backend {
    /// `own`: rootpack's default network, whose host rules rootpack keeps.
    Cni {
        list: cni::NetworkList,
        own: bool,
    },
    Slirp,
}

/// An attached network; detached (DEL, files removed) by [`Attachment::detach`] or on
/// drop.
pub struct Attachment {
    dir: PathBuf,
    lock: Option<File>,
    slirp: Option<slirp::Slirp>,
    _reserved: Vec<OwnedFd>,
    /// The container's address on the network, if the plugins gave one.
    pub address: Option<IpAddr>,
}

/// Checks the request, reserves its ports and writes the container's files.
pub fn prepare(req: &Request<'_>) -> Result<Prepared, String> {
    let root = state_root();
    // Nothing is made under the state root until the request is known to be good.
    let backend = if req.rootless {
        if !matches!(req.network, Network::Private) {
            return Err(format!(
                "--network {}: only the private network exists without root",
                network_name(req.network)
            ));
        }
        Backend::Slirp
    } else {
        let (list, own) = match req.network {
            Network::Named(name) => (cni::NetworkList::find(name)?, false),
            _ => {
                make_private_dir(&root)?;
                let list = bridge::ensure(&root, &root.join("rootpack.conflist"))?;
                (bridge::for_container(&list, !req.ports.is_empty()), true)
            }
        };
        cni::plugin_dir()?;
        if !Path::new(iptables()).exists() {
            return Err(
                "iptables is not installed (the CNI plugins need it): install iptables".into(),
            );
        }
        Backend::Cni { list, own }
    };
    // slirp4netns binds the ports itself, and says when one is taken.
    let reserved = match backend {
        Backend::Cni { .. } => ports::reserve(req.ports)?,
        Backend::Slirp => Vec::new(),
    };
    let (dir, lock) = new_attachment(&root, req.id)?;
    let resolv_conf = dir.join("resolv.conf");
    let hosts = dir.join("hosts");
    let resolv = match backend {
        Backend::Cni { .. } => files::resolv_conf(),
        Backend::Slirp => files::resolv_conf_with(slirp::DNS),
    };
    let names: Vec<&str> = req.names.iter().map(String::as_str).collect();
    let placeholder = files::hosts(None, &names, None);
    let written =
        std::fs::write(&resolv_conf, resolv).and_then(|()| std::fs::write(&hosts, placeholder));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("{}: {e}", dir.display()));
    }
    Ok(Prepared {
        dir,
        lock,
        backend,
        reserved,
        ports: req.ports.to_vec(),
        id: req.id.to_string(),
        names: req.names.clone(),
        resolv_conf,
        hosts,
    })
}

/// The attachment's folder, made under a dot name and renamed once its lock is held, so
/// that a sweep (which skips dot names) never takes a new one for an orphan.
fn new_attachment(root: &Path, id: &str) -> Result<(PathBuf, File), String> {
    let attachments = root.join("attachments");
    make_private_dir(&attachments)?;
    let (new, dir) = (attachments.join(format!(".{id}")), attachments.join(id));
    std::fs::create_dir(&new).map_err(|e| format!("{}: {e}", new.display()))?;
    let held = lock(&new.join("lock"), true).and_then(|l| {
        std::fs::rename(&new, &dir)
            .map(|()| l)
            .map_err(|e| e.to_string())
    });
    if held.is_err() {
        let _ = std::fs::remove_dir_all(&new);
    }
    let held = held.map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((dir, held))
}

fn network_name(n: &Network) -> String {
    match n {
        Network::None => "none".into(),
        Network::Host => "host".into(),
        Network::Private => "private".into(),
        Network::Named(name) => name.clone(),
        Network::Container(id) => format!("container:{id}"),
        Network::Join(p) => format!("ns:{}", p.display()),
    }
}

impl Prepared {
    /// The attachment's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// For a start that failed before [`Prepared::attach`]: the folder removed, unless
    /// the CNI plugins may have begun (another process then runs DEL from its record; the
    /// lock, released here, says it is free to).
    pub fn abandon(self) {
        if !self.uses_cni() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Whether the CNI plugins connect it (as root), rather than slirp4netns.
    pub fn uses_cni(&self) -> bool {
        matches!(self.backend, Backend::Cni { .. })
    }

    /// What connecting a container through the CNI plugins takes (`None` without root):
    /// run by a process that outlives a killed rootpack (see [`CniJob::add`]).
    pub fn cni_job(&self) -> Option<CniJob> {
        match &self.backend {
            Backend::Cni { list, own } => Some(CniJob {
                dir: self.dir.clone(),
                list: list.clone(),
                own: *own,
                id: self.id.clone(),
                ports: self.ports.clone(),
            }),
            Backend::Slirp => None,
        }
    }

    /// Connects the container `pid` (cloned into a new network namespace, not yet
    /// running anything) and completes its hosts file. With the CNI plugins, `add` runs
    /// the [`CniJob`] (in another process, or with [`CniJob::add`] here) and returns
    /// the addresses.
    pub fn attach(
        self,
        pid: i32,
        add: impl FnOnce(&CniJob, i32) -> Result<Addresses, String>,
    ) -> Result<Attachment, String> {
        let job = self.cni_job();
        let Prepared {
            dir,
            lock: dir_lock,
            reserved,
            ports,
            names,
            hosts,
            ..
        } = self;
        let mut attachment = Attachment {
            dir: dir.clone(),
            lock: Some(dir_lock),
            slirp: None,
            _reserved: reserved,
            address: None,
        };
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (address, host_side) = match job {
            None => {
                attachment.slirp = Some(slirp::start(pid, &dir, &ports)?);
                // Its gateway is the host's loopback, which it does not let through.
                (Some(IpAddr::V4(slirp::ADDRESS)), None)
            }
            Some(job) => add(&job, pid)?,
        };
        attachment.address = address;
        std::fs::write(&hosts, files::hosts(address, &names, host_side))
            .map_err(|e| format!("{}: {e}", hosts.display()))?;
        Ok(attachment)
    }
}

/// The container's address and the host's side of the network.
pub type Addresses = (Option<IpAddr>, Option<IpAddr>);

/// A CNI ADD to run for a prepared attachment.
#[derive(Debug, Clone)]
pub struct CniJob {
    dir: PathBuf,
    list: cni::NetworkList,
    /// rootpack's default network: its host rules are checked first.
    own: bool,
    id: String,
    ports: Vec<PortMapping>,
}

impl CniJob {
    /// The record written before ADD (so a DEL can follow a start killed midway), the
    /// namespace of `pid` pinned, ADD run under the state root's lock, and each plugin's
    /// result recorded as it comes (the firewall's rules are keyed on the address).
    pub fn add(&self, pid: i32) -> Result<Addresses, String> {
        let dir = &self.dir;
        let pin = dir.join("netns");
        let runtime = runtime_config(&self.ports);
        let mut record = json!({"id": self.id, "network": self.list.to_json(), "runtime": runtime, "result": null});
        write_record(dir, &record)?;
        pin_netns(pid, &pin).map_err(|e| format!("pinning the network namespace: {e}"))?;
        let root = dir.parent().and_then(Path::parent).unwrap_or(dir);
        let _global = lock(&root.join("lock"), true)?;
        if self.own {
            bridge::ensure_host_rules(&self.list)?;
        }
        let target = cni::Target {
            container_id: &self.id,
            netns: Some(&pin),
            ifname: "eth0",
            runtime: &runtime,
        };
        let result = cni::add(&self.list, &target, |partial| {
            record["result"] = partial.clone();
            write_record(dir, &record)
        })?;
        Ok(cni::address(&result))
    }
}

/// `runtimeConfig.portMappings`, as the portmap plugin reads it.
fn runtime_config(ports: &[PortMapping]) -> Map<String, Value> {
    let mut runtime = Map::new();
    if ports.is_empty() {
        return runtime;
    }
    let maps: Vec<Value> = ports
        .iter()
        .map(|p| {
            let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.name()});
            if let Some(ip) = p.host_ip {
                m["hostIP"] = Value::String(ip.to_string());
            }
            m
        })
        .collect();
    runtime.insert("portMappings".into(), Value::Array(maps));
    runtime
}

impl Attachment {
    /// DEL (as root), slirp4netns stopped, the folder removed.
    pub fn detach(mut self) -> Result<(), String> {
        self.teardown()
    }

    /// Left for another process to tear down (see [`teardown_orphan`]): slirp4netns
    /// stopped, the lock released, DEL not waited for.
    pub fn release(mut self) {
        drop(self.slirp.take());
        drop(self.lock.take());
    }

    fn teardown(&mut self) -> Result<(), String> {
        drop(self.slirp.take());
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        let result = teardown_locked(&self.dir);
        drop(lock);
        result
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            log::warn!("removing the network of {}: {e}", self.dir.display());
        }
    }
}

/// Attachments whose owners are gone (their locks free), torn down: what a killed
/// rootpack's watcher could not finish (a reboot of the watcher's host clears the rest).
pub fn sweep() {
    let Ok(entries) = std::fs::read_dir(state_root().join("attachments")) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().as_encoded_bytes().starts_with(b".") {
            teardown_orphan(&entry.path());
        }
    }
}

/// For a process that outlived the attachment's owner (its watcher, a sweep): tears the
/// attachment in `dir` down unless someone holds it. DEL takes no lock of the state
/// root's: the plugins undo only what is the container's, which no ADD touches.
pub fn teardown_orphan(dir: &Path) {
    let path = dir.join("lock");
    let Ok(file) = File::options().write(true).open(&path) else {
        return;
    };
    let free = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
    if free.is_err() {
        return;
    }
    let lock = file;
    if !dir.exists() {
        // Torn down by someone else between our listing and our lock.
        return;
    }
    log::info!(
        "removing the network of a container that is gone: {}",
        dir.display()
    );
    if let Err(e) = teardown_locked(dir) {
        log::warn!("{}: {e}", dir.display());
    }
    drop(lock);
}

/// DEL from the record (if there is one), the pin unmounted, the folder removed.
fn teardown_locked(dir: &Path) -> Result<(), String> {
    let mut outcome = Ok(());
    if let Ok(text) = std::fs::read_to_string(dir.join("record.json")) {
        outcome = del_recorded(dir, &text);
    }
    let pin = dir.join("netns");
    let _ = rustix::mount::unmount(&pin, rustix::mount::UnmountFlags::DETACH);
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        outcome = outcome.and(Err(format!("{}: {e}", dir.display())));
    }
    outcome
}

fn del_recorded(dir: &Path, text: &str) -> Result<(), String> {
    let record: Value = serde_json::from_str(text).map_err(|e| format!("record.json: {e}"))?;
    let list = cni::NetworkList::from_json(&record["network"])?;
    let runtime = record["runtime"].as_object().cloned().unwrap_or_default();
    let pin = dir.join("netns");
    let pinned = is_nsfs(&pin);
    let id = record["id"].as_str().unwrap_or_default();
    let target = cni::Target {
        container_id: id,
        netns: pinned.then_some(pin.as_path()),
        ifname: "eth0",
        runtime: &runtime,
    };
    let result = Some(&record["result"]).filter(|r| !r.is_null());
    cni::del(&list, &target, result)
}

fn write_record(dir: &Path, record: &Value) -> Result<(), String> {
    let path = dir.join("record.json");
    let tmp = dir.join("record.json.tmp");
    std::fs::write(&tmp, record.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `/proc/PID/ns/net` bound on `pin`, so the namespace outlives the container until DEL.
fn pin_netns(pid: i32, pin: &Path) -> io::Result<()> {
    File::create(pin)?;
    let source = format!("/proc/{pid}/ns/net");
    rustix::mount::mount_bind(source.as_str(), pin)?;
    Ok(())
}

fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: u32 = 0x6e73_6673;
    // f_type's width differs between architectures; the magic fits 32 bits.
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u32 == NSFS_MAGIC)
}

/// A lock file under `path`, taken exclusively (waiting for it with `wait`).
fn lock(path: &Path, wait: bool) -> Result<File, String> {
    use rustix::fs::FlockOperation;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let op = match wait {
        true => FlockOperation::LockExclusive,
        false => FlockOperation::NonBlockingLockExclusive,
    };
    rustix::fs::flock(&file, op).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file)
}

fn make_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// The `iptables` the plugins run (from `PATH`, which a user's may lack `/usr/sbin` in).
fn iptables() -> &'static str {
    [
        "/usr/sbin/iptables",
        "/sbin/iptables",
        "/usr/bin/iptables",
        "/usr/local/sbin/iptables",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or("/usr/sbin/iptables")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_parse() {
        let p = |s: &str| s.parse::<Network>();
        assert_eq!(p("none"), Ok(Network::None));
        assert_eq!(p("bridge"), Ok(Network::Private));
        assert_eq!(p("container:web"), Ok(Network::Container("web".into())));
        assert_eq!(
            p("ns:/run/netns/x"),
            Ok(Network::Join("/run/netns/x".into()))
        );
        assert_eq!(p("mynet"), Ok(Network::Named("mynet".into())));
        assert!(p("ns:relative").unwrap_err().contains("absolute"));
        assert!(p("container:").is_err());
        assert!(p("a/b").is_err());
    }
}
