//! A container's cgroups from its spec: `linux.cgroupsPath` in every hierarchy (v1) or
//! the one (v2), `linux.resources` written into them, the device rules, the freezer.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use super::Error;
use crate::run::cgroup::Layout;
use crate::run::devices;

/// The container's groups, made.
#[derive(Debug, Default)]
pub struct Groups {
    pub dirs: Vec<PathBuf>,
    pub freezer: Option<PathBuf>,
    /// Each v1 group's controllers ("cpu,cpuacct"), beside `dirs`.
    controllers: Vec<String>,
    v2: bool,
}

fn write(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}

/// Checks `linux.cgroupsPath`: an absolute path (below each hierarchy's root) or a
/// relative one (below our own group), without `..`; empty: [`DEFAULT_PARENT`]`/ID`. The
/// systemd form `slice:prefix:name` needs a systemd cgroup manager, which this runtime
/// does not drive.
/// The parent of the groups of containers whose spec names none; removed with the last.
pub const DEFAULT_PARENT: &str = "/rootpack.runtime";

pub fn path_for(spec: Option<&Path>, id: &str, systemd: bool) -> Result<PathBuf, Error> {
    if systemd {
        return Err(Error::Other(
            "--systemd-cgroup: cgroups are managed here through cgroupfs only; \
             configure the engine for it (podman --cgroup-manager cgroupfs, containerd SystemdCgroup = false)"
                .into(),
        ));
    }
    let path = match spec {
        None => return Ok(PathBuf::from(DEFAULT_PARENT).join(id)),
        Some(p) if p.as_os_str().is_empty() => {
            return Ok(PathBuf::from(DEFAULT_PARENT).join(id));
        }
        Some(p) => p,
    };
    let text = path.to_string_lossy();
    if !text.starts_with('/') && text.matches(':').count() == 2 {
        return Err(Error::Other(format!(
            "linux.cgroupsPath {text:?} is in systemd's slice:prefix:name form, which needs --systemd-cgroup"
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::Other(format!(
            "linux.cgroupsPath {text:?}: '..' and '.' are not allowed"
        )));
    }
    Ok(path.to_path_buf())
}

/// Our own group in the v2 hierarchy, from /proc/self/cgroup.
fn own_v2_group() -> PathBuf {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    PathBuf::from(own.trim_start_matches('/'))
}

fn below(base: &Path, own: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(rel) => base.join(rel),
        Err(_) => base.join(own).join(path),
    }
}

/// The folders [`create`] makes for `path`, those that exist.
pub fn dirs_for(layout: &Layout, path: &Path) -> Vec<PathBuf> {
    let dirs = match layout {
        Layout::None => Vec::new(),
        Layout::V1(hs) => hs
            .iter()
            .map(|h| {
                below(
                    &h.mount,
                    h.dir.strip_prefix(&h.mount).unwrap_or(Path::new("")),
                    path,
                )
            })
            .collect(),
        Layout::V2(mnt) => vec![below(mnt, &own_v2_group(), path)],
    };
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Makes the groups (and their parents), copying cpuset's CPUs and memory nodes down the
/// way, since a new cpuset group takes no task until it has them.
pub fn create(layout: &Layout, path: &Path) -> Result<Groups, Error> {
    let mut groups = Groups::default();
    match layout {
        Layout::None => {}
        Layout::V1(hierarchies) => {
            for h in hierarchies {
                let own = h.dir.strip_prefix(&h.mount).unwrap_or(Path::new(""));
                let dir = below(&h.mount, own, path);
                make_dirs(&h.mount, &dir, h.options.split(',').any(|o| o == "cpuset"))?;
                // A group left by an earlier container keeps its device rules: open
                // again until this one's are set (once its nodes are made).
                if h.options.split(',').any(|o| o == "devices") {
                    let _ = fs::write(dir.join("devices.allow"), "a");
                }
                if h.options.split(',').any(|o| o == "freezer") {
                    groups.freezer = Some(dir.join("freezer.state"));
                }
                groups.dirs.push(dir);
                groups.controllers.push(h.options.clone());
            }
        }
        Layout::V2(mnt) => {
            let dir = below(mnt, &own_v2_group(), path);
            make_dirs(mnt, &dir, false)?;
            // Controllers enabled on the way down, each alone: one the host lacks must not
            // block the others (a limit on it fails when written).
            let mut at = mnt.clone();
            for part in dir.strip_prefix(mnt).unwrap_or(Path::new("")).iter() {
                for ctrl in ["+cpu", "+cpuset", "+io", "+memory", "+pids"] {
                    let _ = fs::write(at.join("cgroup.subtree_control"), ctrl);
                }
                at.push(part);
            }
            groups.freezer = Some(dir.join("cgroup.freeze"));
            groups.dirs.push(dir);
            groups.v2 = true;
        }
    }
    Ok(groups)
}

fn make_dirs(mount: &Path, dir: &Path, cpuset: bool) -> Result<(), Error> {
    // A parent removed by another container's delete as we go: once more from the top.
    match make_dirs_once(mount, dir, cpuset) {
        Err(Error::Other(m)) if m.contains("No such file") => make_dirs_once(mount, dir, cpuset),
        other => other,
    }
}

fn make_dirs_once(mount: &Path, dir: &Path, cpuset: bool) -> Result<(), Error> {
    let mut at = mount.to_path_buf();
    for part in dir.strip_prefix(mount).unwrap_or(Path::new("")).iter() {
        let parent = at.clone();
        at.push(part);
        match fs::create_dir(&at) {
            Ok(()) if cpuset => {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = fs::read_to_string(parent.join(file)).unwrap_or_default();
                    write(&at.join(file), value.trim())?;
                }
            }
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::Other(format!("cgroup {}: {e}", at.display()))),
        }
    }
    Ok(())
}

impl Groups {
    /// Moves `pid` into every group.
    pub fn add(&self, pid: i32) -> Result<(), Error> {
        self.dirs
            .iter()
            .try_for_each(|d| write(&d.join("cgroup.procs"), &pid.to_string()))
    }

    /// The group of one controller (v1), or the v2 group.
    fn dir(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(PathBuf::as_path);
        }
        let i = self
            .controllers
            .iter()
            .position(|c| c.split(',').any(|c| c == controller))?;
        self.dirs.get(i).map(PathBuf::as_path)
    }

    /// Writes `resources` (all but devices); anything asked that cannot be applied is an
    /// error naming its key.
    pub fn set(&self, r: &LinuxResources) -> Result<(), Error> {
        refuse_unsupported(r, self.v2)?;
        if let Some(m) = r.memory() {
            self.set_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.set_cpu(c)?;
        }
        if let Some(p) = r.pids() {
            let limit = match p.limit() {
                n if n > 0 => n.to_string(),
                _ => "max".into(),
            };
            let dir = self.needs("pids", "linux.resources.pids")?;
            write(&dir.join("pids.max"), &limit)?;
        }
        if let Some(b) = r.block_io() {
            self.set_block_io(b)?;
        }
        if let Some(unified) = r.unified() {
            let dir = self.needs("", "linux.resources.unified")?;
            for (key, value) in unified {
                if key.contains('/') || key.starts_with('.') {
                    return Err(Error::Other(format!(
                        "linux.resources.unified: bad key {key:?}"
                    )));
                }
                write(&dir.join(key), value)?;
            }
        }
        Ok(())
    }

    fn needs(&self, controller: &str, key: &str) -> Result<&Path, Error> {
        self.dir(controller).ok_or_else(|| {
            Error::Other(format!(
                "{key}: the {controller} cgroup controller is not available on this host"
            ))
        })
    }

    fn set_memory(&self, m: &oci_spec::runtime::LinuxMemory) -> Result<(), Error> {
        let dir = self.needs("memory", "linux.resources.memory")?;
        let value = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if self.v2 {
            if let Some(l) = m.limit() {
                write(&dir.join("memory.max"), &value(l))?;
            }
            if let Some(l) = m.reservation() {
                write(&dir.join("memory.low"), &value(l))?;
            }
            // The spec's swap is memory + swap; v2's is swap alone.
            if let (Some(s), Some(l)) = (m.swap(), m.limit()) {
                let swap = if s < 0 {
                    "max".into()
                } else {
                    (s - l).max(0).to_string()
                };
                write(&dir.join("memory.swap.max"), &swap)?;
            }
            return Ok(());
        }
        let v1 = |v: i64| {
            if v < 0 {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(l) = m.limit() {
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            // Raising the limit above memory+swap fails: memory+swap first, then again.
            if write(&dir.join("memory.limit_in_bytes"), &v1(l)).is_err() && memsw.exists() {
                write(&memsw, &v1(m.swap().unwrap_or(l)))?;
                write(&dir.join("memory.limit_in_bytes"), &v1(l))?;
            }
        }
        if let Some(s) = m.swap() {
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &v1(s))?;
            } else {
                log::debug!(
                    "no swap accounting on this host: linux.resources.memory.swap has nothing to limit"
                );
            }
        }
        if let Some(l) = m.reservation() {
            write(&dir.join("memory.soft_limit_in_bytes"), &v1(l))?;
        }
        if let Some(s) = m.swappiness() {
            write(&dir.join("memory.swappiness"), &s.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(&dir.join("memory.oom_control"), "1")?;
        }
        Ok(())
    }

    fn set_cpu(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<(), Error> {
        if c.shares().is_some() || c.quota().is_some() || c.period().is_some() {
            let dir = self.needs("cpu", "linux.resources.cpu")?;
            if self.v2 {
                if let Some(s) = c.shares().filter(|s| *s > 0) {
                    let weight = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
                    write(&dir.join("cpu.weight"), &weight.to_string())?;
                }
                if c.quota().is_some() || c.period().is_some() {
                    let quota = match c.quota() {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".into(),
                    };
                    let period = c.period().unwrap_or(100_000);
                    write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
                }
            } else {
                if let Some(s) = c.shares().filter(|s| *s > 0) {
                    write(&dir.join("cpu.shares"), &s.to_string())?;
                }
                if let Some(p) = c.period().filter(|p| *p > 0) {
                    write(&dir.join("cpu.cfs_period_us"), &p.to_string())?;
                }
                if let Some(q) = c.quota().filter(|q| *q != 0) {
                    write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
        }
        for (value, file) in [(c.cpus(), "cpuset.cpus"), (c.mems(), "cpuset.mems")] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                let dir = self.needs("cpuset", "linux.resources.cpu.cpus")?;
                write(&dir.join(file), v)?;
            }
        }
        Ok(())
    }

    fn set_block_io(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<(), Error> {
        let key = "linux.resources.blockIO";
        if let Some(w) = b.weight() {
            let dir = self.needs(if self.v2 { "io" } else { "blkio" }, key)?;
            let (files, value) = if self.v2 {
                let weight = 1 + (u32::from(w).clamp(10, 1000) - 10) * 9999 / 990;
                (["io.bfq.weight", "io.weight"], weight.to_string())
            } else {
                (["blkio.weight", "blkio.bfq.weight"], w.to_string())
            };
            let file = files
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::Other(format!(
                        "{key}.weight: no I/O scheduler here takes a weight"
                    ))
                })?;
            write(&file, &value)?;
        }
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "rbps",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "wbps",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "riops",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ];
        for (devices, v1_file, v2_key) in throttles {
            for d in devices.iter().flatten() {
                let dir = self.needs(if self.v2 { "io" } else { "blkio" }, key)?;
                let dev = format!("{}:{}", d.major(), d.minor());
                if self.v2 {
                    write(&dir.join("io.max"), &format!("{dev} {v2_key}={}", d.rate()))?;
                } else {
                    write(&dir.join(v1_file), &format!("{dev} {}", d.rate()))?;
                }
            }
        }
        Ok(())
    }

    /// Puts the device rules in force (v1 text, v2 an eBPF program).
    pub fn set_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<(), Error> {
        let rules: Vec<devices::Rule> = rules.iter().map(device_rule).collect();
        if rules.is_empty() {
            return Ok(());
        }
        if self.v2 {
            let Some(dir) = self.dirs.first() else {
                return Ok(());
            };
            let prog = devices::load_program(&devices::program_for(&rules))
                .map_err(|e| Error::Other(format!("linux.resources.devices: {e}")))?;
            devices::attach_v2(dir, &prog)
                .map_err(|e| Error::Other(format!("linux.resources.devices: {e}")))
        } else if let Some(dir) = self.dir("devices") {
            devices::apply_v1_rules(dir, &rules)
                .map_err(|e| Error::Other(format!("linux.resources.devices: {e}")))
        } else {
            Err(Error::Other(
                "linux.resources.devices: the devices cgroup controller is not available on this host".into(),
            ))
        }
    }

    /// Freezes or thaws every task.
    pub fn freeze(&self, frozen: bool) -> Result<(), Error> {
        freeze(self.freezer.as_deref(), frozen)
    }
}

pub fn freeze(freezer: Option<&Path>, frozen: bool) -> Result<(), Error> {
    let Some(path) = freezer else {
        return Err(Error::Other("no freezer cgroup on this host".into()));
    };
    let v2 = path.ends_with("cgroup.freeze");
    let value = match (v2, frozen) {
        (true, true) => "1",
        (true, false) => "0",
        (false, true) => "FROZEN",
        (false, false) => "THAWED",
    };
    write(path, value)?;
    // v1 freezing takes a moment: wait until it is done (or gives up).
    for _ in 0..1000 {
        let now = fs::read_to_string(path).unwrap_or_default();
        if v2 || now.trim() == value {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(Error::Other(format!(
        "{}: still not {value}",
        path.display()
    )))
}

fn refuse_unsupported(r: &LinuxResources, v2: bool) -> Result<(), Error> {
    let mut asked = Vec::new();
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        asked.push("hugepageLimits");
    }
    if r.network().is_some() {
        asked.push("network");
    }
    if r.rdma().as_ref().is_some_and(|h| !h.is_empty()) {
        asked.push("rdma");
    }
    if !v2 && r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        asked.push("unified (cgroup v2 only; this host has v1)");
    }
    if let Some(c) = r.cpu()
        && (c.realtime_runtime().is_some_and(|v| v != 0)
            || c.realtime_period().is_some_and(|v| v != 0))
    {
        asked.push("cpu.realtimeRuntime");
    }
    if let Some(m) = r.memory()
        && (m.kernel().is_some() || m.kernel_tcp().is_some())
    {
        asked.push("memory.kernel");
    }
    match asked.as_slice() {
        [] => Ok(()),
        keys => Err(Error::Other(format!(
            "linux.resources.{}: not supported",
            keys.join(", linux.resources.")
        ))),
    }
}

fn device_rule(d: &LinuxDeviceCgroup) -> devices::Rule {
    let kind = match d.typ() {
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some('c'),
        Some(LinuxDeviceType::B) => Some('b'),
        _ => None,
    };
    devices::Rule {
        allow: d.allow(),
        kind,
        major: d.major().filter(|m| *m >= 0).map(|m| m as u32),
        minor: d.minor().filter(|m| *m >= 0).map(|m| m as u32),
        access: d.access().clone().unwrap_or_else(|| "rwm".into()),
    }
}

/// The pids in the groups (the first group's list: every group holds the same tasks).
pub fn procs(dirs: &[PathBuf]) -> Vec<i32> {
    let Some(dir) = dirs.first() else {
        return Vec::new();
    };
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes the groups, waiting briefly for exiting tasks to leave them, and the default
/// parent once it is empty.
pub fn remove(dirs: &[PathBuf]) -> Result<(), Error> {
    crate::run::cgroup::remove_dirs(dirs, std::time::Duration::from_secs(5))
        .map_err(|e| Error::Other(format!("removing the cgroup: {e}")))?;
    let parent_name = DEFAULT_PARENT.trim_start_matches('/');
    for parent in dirs.iter().filter_map(|d| d.parent()) {
        if parent.file_name().is_some_and(|n| n == parent_name) {
            // Fails harmlessly while another container is in it.
            let _ = fs::remove_dir(parent);
        }
    }
    Ok(())
}

/// The groups of an existing container, from the folders in its state.
pub fn reopen(dirs: &[PathBuf], freezer: Option<PathBuf>) -> Groups {
    let layout = Layout::detect();
    let mut groups = Groups {
        dirs: dirs.to_vec(),
        freezer,
        ..Groups::default()
    };
    match layout {
        Layout::V1(hs) => {
            groups.controllers = dirs
                .iter()
                .map(|d| {
                    hs.iter()
                        .find(|h| d.starts_with(&h.mount))
                        .map(|h| h.options.clone())
                        .unwrap_or_default()
                })
                .collect();
        }
        Layout::V2(_) => groups.v2 = true,
        Layout::None => {}
    }
    groups
}
