//! A cgroup per container, on cgroup v2 or on the v1 controllers of a hybrid host, with
//! memory, pids and cpu limits; removed on drop.
//!
//! The hierarchy is read from mountinfo and /proc/self/cgroup through [`Layout`], so the
//! detection and the file writes are tested on fixture trees. On v1 the container's group
//! nests under our own group of each controller (v1 has no rule against processes in inner
//! nodes); on v2 it goes under `<mount>/rootpack/` with the controllers enabled on the way,
//! since a v2 group with processes cannot delegate controllers to children.

use std::io;
use std::path::{Path, PathBuf};

/// One v1 hierarchy (or the cgroup2 mount beside them on a hybrid host).
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// Our own group's folder in it; the container's group goes below.
    pub dir: PathBuf,
    /// Its controllers and name, as mount options ("cpu,cpuacct", "name=systemd"); empty
    /// for cgroup2.
    pub options: String,
    /// The hierarchy's mount point: its root as we see it.
    pub mount: PathBuf,
    /// The host's mount point's last component ("memory", "unified"), reused inside the
    /// container.
    pub mount_name: String,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.options.split(',').any(|o| o == controller)
    }

    pub fn is_v2(&self) -> bool {
        self.options.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Every mounted hierarchy: the container gets a group in each, as runc does, so that
    /// none of its cgroup namespace roots is the host's root group.
    V1(Vec<Hierarchy>),
    /// The cgroup2 mount point.
    V2(PathBuf),
    None,
}

impl Layout {
    /// Reads the host's layout from `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Layout {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Layout::from_proc(&mountinfo, &cgroup)
    }

    /// Each line of /proc/self/cgroup ("ID:controllers:path") is one hierarchy we are in;
    /// it is found in mountinfo by its options (cgroup) or its type (cgroup2). v1 wins when
    /// any v1 controller is mounted (a hybrid host keeps them there).
    pub fn from_proc(mountinfo: &str, cgroup: &str) -> Layout {
        // (root inside the hierarchy, mount point, type, super options)
        let mounts: Vec<[&str; 4]> = mountinfo
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let sep = fields.iter().position(|f| *f == "-")?;
                Some([
                    *fields.get(3)?,
                    *fields.get(4)?,
                    *fields.get(sep + 1)?,
                    *fields.get(sep + 3)?,
                ])
            })
            .filter(|[_, _, fstype, _]| fstype.starts_with("cgroup"))
            .collect();
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in cgroup.lines() {
            let mut parts = line.splitn(3, ':').skip(1);
            let (Some(ctrls), Some(path)) = (parts.next(), parts.next()) else {
                continue;
            };
            let found = mounts.iter().find(|[root, _, fstype, opts]| {
                let kind = if ctrls.is_empty() {
                    *fstype == "cgroup2"
                } else {
                    *fstype == "cgroup" && ctrls.split(',').all(|c| opts.split(',').any(|o| o == c))
                };
                let inside = *root == "/" || path == *root || path.starts_with(&format!("{root}/"));
                kind && inside
            });
            let Some([root, mnt, _, _]) = found else {
                continue;
            };
            let below = path.strip_prefix(root).unwrap_or(path);
            let dir = Path::new(mnt).join(below.trim_start_matches('/'));
            if ctrls.is_empty() {
                v2 = Some((dir, *mnt));
            } else {
                v1.push(Hierarchy {
                    dir,
                    mount: PathBuf::from(mnt),
                    options: ctrls.to_string(),
                    mount_name: mount_name(mnt),
                });
            }
        }
        if v1.iter().any(|h| !h.options.starts_with("name=")) {
            if let Some((dir, mnt)) = v2 {
                v1.push(Hierarchy {
                    dir,
                    mount: PathBuf::from(mnt),
                    options: String::new(),
                    mount_name: mount_name(mnt),
                });
            }
            Layout::V1(v1)
        } else if let Some((_, mnt)) = v2 {
            Layout::V2(mnt.into())
        } else {
            Layout::None
        }
    }
}

fn mount_name(mnt: &str) -> String {
    Path::new(mnt)
        .file_name()
        .map_or_else(|| "unified".into(), |n| n.to_string_lossy().into_owned())
}

pub use crate::manifest::Limits;

const CPU_PERIOD: u64 = 100_000;

/// Microseconds of CPU per period; the kernel refuses quotas under 1 ms.
fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD as f64) as u64).max(1000)
}

/// One container's group(s). Dropping it removes them (they must be empty by then).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// Where Docker's device allow list goes ([`super::devices`]), once the container's
    /// root is built (the loop device and its mount must open first).
    devices: Option<DeviceGroup>,
    /// Where memory.events (v2) or memory.oom_control (v1) lives.
    memory: Option<PathBuf>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn make_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        _ => Ok(()),
    }
}

impl Cgroup {
    pub fn create(layout: &Layout, name: &str, limits: &Limits) -> io::Result<Cgroup> {
        let mut cg = Cgroup {
            dirs: Vec::new(),
            devices: None,
            memory: None,
        };
        match layout {
            Layout::None if *limits != Limits::default() => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "no cgroup hierarchy is mounted",
                ));
            }
            Layout::None => {}
            Layout::V1(hierarchies) => cg.create_v1(hierarchies, name, limits)?,
            Layout::V2(mnt) => cg.create_v2(mnt, name, limits)?,
        }
        Ok(cg)
    }

    /// A group in every v1 hierarchy (the cgroup2 one of a hybrid host included).
    fn create_v1(
        &mut self,
        hierarchies: &[Hierarchy],
        name: &str,
        limits: &Limits,
    ) -> io::Result<()> {
        // A limit whose controller is not mounted would be silently ignored.
        let requested = [
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
            ("cpu", limits.cpus.is_some()),
        ];
        for (ctrl, _) in requested.iter().filter(|(_, asked)| *asked) {
            if !hierarchies.iter().any(|h| h.has(ctrl)) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "a {ctrl} limit needs the {ctrl} cgroup controller, which is not mounted"
                    ),
                ));
            }
        }
        for h in hierarchies {
            let dir = h.dir.join(name);
            make_dir(&dir)?;
            self.dirs.push(dir.clone());
            if h.has("cpuset") {
                // A new cpuset group starts empty, and takes no task until given
                // its parent's CPUs and memory nodes.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let value = std::fs::read_to_string(h.dir.join(file))?;
                    write(&dir.join(file), value.trim())?;
                }
            }
            if h.has("memory") {
                if let Some(m) = limits.memory {
                    write(&dir.join("memory.limit_in_bytes"), &m.to_string())?;
                    // No swapping around the limit, where swap is accounted.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &m.to_string())?;
                    }
                }
                self.memory = Some(dir.join("memory.oom_control"));
            }
            if h.has("devices") {
                self.devices = Some(DeviceGroup::V1(dir.clone()));
            }
            if h.has("pids")
                && let Some(p) = limits.pids
            {
                write(&dir.join("pids.max"), &p.to_string())?;
            }
            if h.has("cpu")
                && let Some(c) = limits.cpus
            {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &cpu_quota(c).to_string())?;
            }
        }
        Ok(())
    }

    /// A group under `<mount>/rootpack/`, with the controllers enabled on the way.
    fn create_v2(&mut self, mnt: &Path, name: &str, limits: &Limits) -> io::Result<()> {
        let parent = mnt.join("rootpack");
        let fresh = !parent.exists();
        make_dir(&parent)?;
        // Once, when our parent group is made, not on every run.
        for dir in [mnt, parent.as_path()].into_iter().filter(|_| fresh) {
            // One at a time: one the host lacks must not block the others. Already
            // enabled, or not available: the limit writes below say which.
            for ctrl in ["+memory", "+pids", "+cpu"] {
                let _ = write(&dir.join("cgroup.subtree_control"), ctrl);
            }
        }
        let dir = parent.join(name);
        make_dir(&dir)?;
        self.dirs.push(dir.clone());
        self.devices = match super::devices::load_v2() {
            Ok(prog) => Some(DeviceGroup::V2(dir.clone(), prog)),
            Err(e) => {
                log::info!("no device cgroup ({e}): every mount stays nodev");
                None
            }
        };
        if let Some(m) = limits.memory {
            write(&dir.join("memory.max"), &m.to_string())?;
            let _ = write(&dir.join("memory.swap.max"), "0");
        }
        if let Some(p) = limits.pids {
            write(&dir.join("pids.max"), &p.to_string())?;
        }
        if let Some(c) = limits.cpus {
            write(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD}", cpu_quota(c)),
            )?;
        }
        self.memory = Some(dir.join("memory.events"));
        Ok(())
    }

    /// Moves `pid` into the group(s).
    pub fn add(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether [`Cgroup::limit_devices`] will let only Docker's allowed devices open.
    pub fn limits_devices(&self) -> bool {
        self.devices.is_some()
    }

    /// Puts the device allow list in force. Called once the container's root is built:
    /// from then on not even the loop device opens in the group.
    pub fn limit_devices(&self) -> io::Result<()> {
        match &self.devices {
            Some(DeviceGroup::V1(dir)) => super::devices::apply_v1(dir),
            Some(DeviceGroup::V2(dir, prog)) => super::devices::attach_v2(dir, prog),
            None => Ok(()),
        }
    }

    /// Folders to remove, for a cleaner that outlives us.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many processes the kernel killed for exceeding the memory limit.
    pub fn oom_kills(&self) -> u64 {
        let Some(path) = &self.memory else {
            return 0;
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// A group to put the device allow list on: a v1 `devices` group, or a v2 group and the
/// loaded program. Where the host has neither (no BPF for cgroups), the container's
/// mounts stay `nodev` instead, which is as safe but lets no node be made.
#[derive(Debug)]
enum DeviceGroup {
    V1(PathBuf),
    V2(PathBuf, std::os::unix::io::OwnedFd),
}

/// Shows the container its own groups at `/sys/fs/cgroup`, read-only, as Docker does:
/// mounted from inside its cgroup namespace, each hierarchy's root is its own group.
/// Runs after `pivot_root`, over the container's fresh (read-only) sysfs.
pub fn mount_view(layout: &Layout) -> io::Result<()> {
    use rustix::mount::{MountFlags, mount, mount_remount};
    let base = Path::new("/sys/fs/cgroup");
    let locked = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let context = |what: String| {
        move |e: rustix::io::Errno| {
            io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
        }
    };
    match layout {
        Layout::None => Ok(()),
        Layout::V2(_) => mount("cgroup2", base, "cgroup2", locked, None)
            .map_err(context("mounting cgroup2 on /sys/fs/cgroup".into())),
        Layout::V1(hierarchies) => {
            let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
            mount("tmpfs", base, "tmpfs", flags, Some(c"mode=755"))
                .map_err(context("mounting a tmpfs on /sys/fs/cgroup".into()))?;
            for h in hierarchies {
                let dir = base.join(&h.mount_name);
                std::fs::create_dir(&dir)?;
                let (fstype, options) = if h.is_v2() {
                    ("cgroup2", String::new())
                } else {
                    ("cgroup", h.options.clone())
                };
                let options = std::ffi::CString::new(options).map_err(io::Error::other)?;
                mount(fstype, &dir, fstype, locked, Some(options.as_c_str())).map_err(context(
                    format!("mounting {fstype} {} on {}", h.options, dir.display()),
                ))?;
                // Each controller of a joint hierarchy by its own name too: cpu -> cpu,cpuacct.
                for ctrl in h
                    .options
                    .split(',')
                    .filter(|c| h.options.contains(',') && !c.starts_with("name="))
                {
                    std::os::unix::fs::symlink(&h.mount_name, base.join(ctrl))?;
                }
            }
            mount_remount(base, MountFlags::BIND | locked, c"")
                .map_err(context("making /sys/fs/cgroup read-only".into()))
        }
    }
}

/// Removes the empty groups, beside `dirs`, of runs whose rootpack process is gone
/// (`rootpack-PID-N`): what a `kill -9` left in the instant between making a group and
/// starting its watcher.
pub fn remove_stale(dirs: &[PathBuf]) {
    for parent in dirs.iter().filter_map(|d| d.parent()) {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("rootpack-"))
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                // Fails, harmlessly, while tasks are still in it.
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// Kills every task left in the groups: through `cgroup.kill` (cgroup v2, Linux 5.14),
/// else one by one from `cgroup.procs` until none is left.
pub fn kill_tasks(dirs: &[PathBuf]) {
    for dir in dirs {
        if write(&dir.join("cgroup.kill"), "1").is_ok() {
            continue;
        }
        // New tasks may be forked while we read: a few rounds catch them.
        for _ in 0..100 {
            let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
                break;
            };
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: a signal to a task of our own group.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Removes cgroup folders, retrying for up to `patience` while exiting tasks (and
/// zombies not yet reaped) leave them.
pub fn remove_dirs(dirs: &[PathBuf], patience: std::time::Duration) -> io::Result<()> {
    let mut last = Ok(());
    let deadline = std::time::Instant::now() + patience;
    for dir in dirs {
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => {
                    last = Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display())));
                    break;
                }
            }
        }
    }
    last
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = remove_dirs(&self.dirs, std::time::Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
34 25 0:30 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
35 25 0:31 / /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
36 25 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
37 25 0:33 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
";

    fn hierarchy(dir: &str, options: &str, mount_name: &str) -> Hierarchy {
        Hierarchy {
            dir: dir.into(),
            mount: Path::new("/sys/fs/cgroup").join(mount_name),
            options: options.into(),
            mount_name: mount_name.into(),
        }
    }

    #[test]
    fn hybrid_hosts_get_a_group_in_every_hierarchy_under_our_own() {
        let cgroup = "5:name=systemd:/user.slice\n4:memory:/sandbox/a\n8:pids:/\n1:cpu,cpuacct:/\n0::/user.slice\n";
        let layout = Layout::from_proc(HYBRID, cgroup);
        assert_eq!(
            layout,
            Layout::V1(vec![
                hierarchy(
                    "/sys/fs/cgroup/systemd/user.slice",
                    "name=systemd",
                    "systemd"
                ),
                hierarchy("/sys/fs/cgroup/memory/sandbox/a", "memory", "memory"),
                hierarchy("/sys/fs/cgroup/pids", "pids", "pids"),
                hierarchy("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct", "cpu,cpuacct"),
                hierarchy("/sys/fs/cgroup/unified/user.slice", "", "unified"),
            ])
        );
    }

    #[test]
    fn a_mount_of_a_subgroup_is_joined_below_its_root() {
        let info = "34 25 0:30 /sandbox /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let layout = Layout::from_proc(info, "4:memory:/sandbox/a\n");
        assert_eq!(
            layout,
            Layout::V1(vec![hierarchy(
                "/sys/fs/cgroup/memory/a",
                "memory",
                "memory"
            )])
        );
    }

    #[test]
    fn pure_v2_hosts_are_detected() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Layout::from_proc(info, "0::/user.slice\n"),
            Layout::V2("/sys/fs/cgroup".into())
        );
        assert_eq!(Layout::from_proc("", ""), Layout::None);
    }

    #[test]
    fn v2_writes_limits_and_reads_oom_kills() {
        let root = tempfile::tempdir().unwrap();
        let limits = Limits {
            memory: Some(64 << 20),
            pids: Some(32),
            cpus: Some(0.5),
        };
        let cg = Cgroup::create(&Layout::V2(root.path().to_path_buf()), "c1", &limits).unwrap();
        let dir = root.path().join("rootpack/c1");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "32");
        assert_eq!(read("cpu.max"), "50000 100000");
        let sub =
            std::fs::read_to_string(root.path().join("rootpack/cgroup.subtree_control")).unwrap();
        // Written one controller at a time (cgroupfs accumulates; a plain file keeps the last).
        assert_eq!(sub, "+cpu");
        cg.add(1234).unwrap();
        assert_eq!(read("cgroup.procs"), "1234");
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 1);
        // A real cgroup folder holds only kernel files; here remove them so rmdir works.
        for f in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        drop(cg);
        assert!(!dir.exists());
    }

    #[test]
    fn v1_writes_each_controller() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::V1(
            ["memory", "pids", "cpu"]
                .iter()
                .map(|c| {
                    std::fs::create_dir(root.path().join(c)).unwrap();
                    Hierarchy {
                        dir: root.path().join(c),
                        mount: root.path().join(c),
                        options: c.to_string(),
                        mount_name: c.to_string(),
                    }
                })
                .collect(),
        );
        let limits = Limits {
            memory: Some(1 << 20),
            pids: Some(5),
            cpus: Some(2.0),
        };
        let cg = Cgroup::create(&layout, "c", &limits).unwrap();
        let read = |f: &str| std::fs::read_to_string(root.path().join(f)).unwrap();
        assert_eq!(read("memory/c/memory.limit_in_bytes"), "1048576");
        assert_eq!(read("pids/c/pids.max"), "5");
        assert_eq!(read("cpu/c/cpu.cfs_quota_us"), "200000");
        std::fs::write(
            root.path().join("memory/c/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 2);
        std::mem::forget(cg);
    }

    #[test]
    fn stale_groups_of_dead_runs_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join("rootpack-999999999-1");
        let alive = root
            .path()
            .join(format!("rootpack-{}-1", std::process::id()));
        let other = root.path().join("someone-else");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir(d).unwrap();
        }
        remove_stale(std::slice::from_ref(&alive));
        assert!(!dead.exists() && alive.exists() && other.exists());
    }

    #[test]
    fn v1_refuses_a_limit_whose_controller_is_missing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("pids")).unwrap();
        let layout = Layout::V1(vec![Hierarchy {
            dir: root.path().join("pids"),
            mount: root.path().join("pids"),
            options: "pids".into(),
            mount_name: "pids".into(),
        }]);
        let limits = Limits {
            memory: Some(1 << 20),
            ..Limits::default()
        };
        let err = Cgroup::create(&layout, "c", &limits).err().unwrap();
        assert!(
            err.to_string().contains("memory cgroup controller"),
            "{err}"
        );
        assert!(!root.path().join("pids/c").exists());
    }
}
