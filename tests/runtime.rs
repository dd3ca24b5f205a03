//! `rootpack-runtime`, the OCI runtime: its lifecycle as runc's callers see it, hostile
//! ids and specs, and podman driving it side by side with runc.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn runtime_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rootpack-runtime")
}

/// A state root and a bundle of a busybox-static tree, with runc's default config.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bundle/rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        for applet in [
            "sh", "sleep", "cat", "echo", "ls", "readlink", "hostname", "id", "true",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let b = Bundle { dir };
        let o = run(Command::new("runc").arg("spec").current_dir(b.bundle()));
        assert!(o.status.success());
        b.edit(|c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        });
        b
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.bundle().join("config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        f(&mut c);
        fs::write(&path, serde_json::to_vec_pretty(&c).unwrap()).unwrap();
    }

    fn rt(&self, args: &[&str]) -> Output {
        Command::new(runtime_bin())
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap()
    }

    /// `create`, whose stdout and stderr become the container's: into files here, since
    /// a pipe would stay open as long as the container runs.
    fn create(&self, id: &str) -> Output {
        let pid_file = self.dir.path().join(format!("{id}.pid"));
        let out = self.dir.path().join(format!("{}.out", id.len()));
        let err = self.dir.path().join(format!("{}.err", id.len()));
        let status = Command::new(runtime_bin())
            .arg("--root")
            .arg(self.root())
            .args(["create", "--bundle"])
            .arg(self.bundle())
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: fs::read(&out).unwrap(),
            stderr: fs::read(&err).unwrap(),
        }
    }

    /// A command whose stdio a created container may keep: stdout and stderr discarded
    /// but for the status.
    fn rt_null(&self, args: &[&str]) -> Output {
        let status = Command::new(runtime_bin())
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn status(&self, id: &str) -> String {
        let o = self.rt(&["state", id]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["status"].as_str().unwrap().to_string()
    }

    fn pid(&self, id: &str) -> i32 {
        fs::read_to_string(self.dir.path().join(format!("{id}.pid")))
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The container's process is the caller's child only through a subreaper; here the
/// test is one, so that it can reap what `create` leaves.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

fn reap(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for a process this test adopted as subreaper.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

fn cgroup_leftovers(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for h in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = h.path().join("rootpack.runtime").join(id);
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    left
}

#[test]
fn lifecycle_states_signals_exec_and_delete() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let b = Bundle::new(&["sleep", "100"]);
    let o = b.create("life");
    assert!(o.status.success(), "{}", stderr(&o));
    // The pid file is there when create returns, and names the live process.
    let pid = b.pid("life");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(b.status("life"), "created");
    let mode = fs::metadata(b.root()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the state root is the owner's alone");
    assert!(b.rt(&["start", "life"]).status.success());
    assert_eq!(b.status("life"), "running");
    let o = b.rt(&["start", "life"]);
    assert!(!o.status.success(), "started twice");

    // exec joins every namespace of the container: same PID namespace (sleep is PID 1).
    let o = b.rt(&["exec", "life", "sh", "-c", "cat /proc/1/cmdline; echo; for n in /proc/1/ns/pid /proc/self/ns/pid /proc/self/ns/mnt /proc/1/ns/mnt; do readlink $n; done; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].trim_end_matches('\0').replace('\0', " "),
        "sleep 100"
    );
    assert_eq!(lines[1], lines[2], "{out}");
    assert_eq!(lines[3], lines[4], "{out}");
    let o = b.rt(&["exec", "life", "nothere"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );

    let o = b.rt(&["ps", "--format", "json", "life"]);
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");
    let o = b.rt(&["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list[0]["id"], "life");

    // A running container is not deleted without --force.
    let o = b.rt(&["delete", "life"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not stopped"), "{}", stderr(&o));
    // Signals by name.
    assert!(b.rt(&["kill", "life", "KILL"]).status.success());
    let status = reap(pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    assert_eq!(b.status("life"), "stopped");
    let o = b.rt(&["kill", "life", "9"]);
    assert!(
        stderr(&o).contains("container not running"),
        "{}",
        stderr(&o)
    );
    assert!(b.rt(&["delete", "life"]).status.success());
    let o = b.rt(&["state", "life"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(
        cgroup_leftovers("life").is_empty(),
        "{:?}",
        cgroup_leftovers("life")
    );
    assert!(!b.root().join("life").exists());
}

#[test]
fn delete_force_kills_a_running_container_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let b = Bundle::new(&["sh", "-c", "sleep 100 & sleep 100"]);
    let o = b.create("forced");
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = b.pid("forced");
    assert!(b.rt(&["start", "forced"]).status.success());
    let o = b.rt(&["delete", "--force", "forced"]);
    assert!(o.status.success(), "{}", stderr(&o));
    reap(pid);
    assert!(cgroup_leftovers("forced").is_empty());
    assert!(!b.root().join("forced").exists());
    // A created container that never started is deleted (and its process killed) too.
    assert!(b.create("unstarted").status.success());
    let pid = b.pid("unstarted");
    assert!(b.rt(&["delete", "unstarted"]).status.success());
    reap(pid);
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || fs::read(format!("/proc/{pid}/cmdline")).unwrap().is_empty()
    );
}

#[test]
fn stdio_reaches_the_caller_and_ends_with_the_process() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let b = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 5"]);
    let mut child = Command::new(runtime_bin())
        .arg("--root")
        .arg(b.root())
        .args(["create", "--bundle"])
        .arg(b.bundle())
        .args(["--pid-file"])
        .arg(b.dir.path().join("io.pid"))
        .arg("io")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(b.rt(&["start", "io"]).status.success());
    // Both pipes reach EOF once the container's process is gone: nothing else of ours
    // holds them.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    let code = reap(b.pid("io"));
    assert_eq!(libc::WEXITSTATUS(code), 5);
    assert!(b.rt(&["delete", "io"]).status.success());
}

#[test]
fn the_console_socket_gets_the_pty_master() {
    if !require_root() {
        return;
    }
    become_subreaper();
    let b = Bundle::new(&["sh", "-c", "readlink /proc/self/fd/0; echo typed"]);
    b.edit(|c| c["process"]["terminal"] = true.into());
    let sock_path = b.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let pid_file = b.dir.path().join("tty.pid");
    let o = b.rt_null(&[
        "create",
        "--bundle",
        b.bundle().to_str().unwrap(),
        "--console-socket",
        sock_path.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "tty",
    ]);
    assert!(o.status.success());
    let (conn, _) = listener.accept().unwrap();
    let master = receive_fd(&conn);
    assert!(b.rt(&["start", "tty"]).status.success());
    let mut f = fs::File::from(master);
    let mut out = Vec::new();
    let _ = f.read_to_end(&mut out); // EIO once the slave side closes
    let text = String::from_utf8_lossy(&out).replace('\r', "");
    assert!(text.starts_with("/dev/pts/0\n"), "{text:?}");
    reap(b.pid("tty"));
    assert!(b.rt(&["delete", "tty"]).status.success());
}

fn receive_fd(conn: &std::os::unix::net::UnixStream) -> OwnedFd {
    let mut byte = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    let mut control = [0u8; 64];
    // SAFETY: recvmsg into buffers on the stack; the received fd is then owned.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        assert!(libc::recvmsg(conn.as_raw_fd(), &mut msg, 0) > 0);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        assert!(!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS);
        OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32))
    }
}

#[test]
fn errors_go_to_the_log_as_json_lines() {
    let b = Bundle::new(&["true"]);
    let log = b.dir.path().join("log.json");
    let o = Command::new(runtime_bin())
        .args([
            "--root",
            b.root().to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "state",
            "nothing",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let text = fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("does not exist"),
        "{text}"
    );
}

#[test]
fn hostile_ids_and_specs_are_refused_and_write_nothing_outside() {
    if !require_root() {
        return;
    }
    let b = Bundle::new(&["true"]);
    let long = "a".repeat(10_000);
    for id in ["../escape", "a/b", "..", ".", long.as_str(), "bad id"] {
        let o = b.create(id);
        assert_eq!(o.status.code(), Some(2), "{id:.20}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("invalid container id"),
            "{}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).lines().count(), 1);
    }
    assert!(!b.dir.path().join("escape").exists());

    // A mount whose destination is a symlink out to a host path.
    let victim = b.dir.path().join("victim");
    fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, b.bundle().join("rootfs/evil")).unwrap();
    b.edit(|c| {
        let m = serde_json::json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]});
        c["mounts"].as_array_mut().unwrap().push(m);
    });
    let o = b.create("symlinked");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("mounts[") && e.contains("symlink"), "{e}");
    assert!(
        !b.root().join("symlinked").exists(),
        "nothing left of a failed create"
    );
    assert!(cgroup_leftovers("symlinked").is_empty());
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().pop();
    });

    // cgroupsPath with '..'.
    b.edit(|c| c["linux"]["cgroupsPath"] = "/../../escape".into());
    let o = b.create("dotdot");
    assert!(stderr(&o).contains("linux.cgroupsPath"), "{}", stderr(&o));
    b.edit(|c| c["linux"]["cgroupsPath"] = serde_json::Value::Null);

    // A rootfs that is a symlink.
    let real = b.dir.path().join("realroot");
    fs::rename(b.bundle().join("rootfs"), &real).unwrap();
    std::os::unix::fs::symlink(&real, b.bundle().join("rootfs")).unwrap();
    let o = b.create("linkroot");
    assert!(stderr(&o).contains("root.path"), "{}", stderr(&o));
    fs::remove_file(b.bundle().join("rootfs")).unwrap();
    fs::rename(&real, b.bundle().join("rootfs")).unwrap();

    // exec --cwd through a magic link is refused.
    become_subreaper();
    b.edit(|c| c["process"]["args"] = serde_json::json!(["sleep", "100"]));
    let o = b.create("cwd");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(b.rt(&["start", "cwd"]).status.success());
    let o = b.rt(&["exec", "--cwd", "/proc/self/fd/0", "cwd", "sh", "-c", "pwd"]);
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).is_empty());
    let pid = b.pid("cwd");
    assert!(b.rt(&["delete", "--force", "cwd"]).status.success());
    reap(pid);
}

/// podman with a private store, on the runtime given.
fn podman(store: &Path, runtime: &str) -> Command {
    let mut c = Command::new("podman");
    c.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "--runtime",
            runtime,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
    c
}

const LIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

#[test]
fn podman_runs_containers_with_it_as_with_runc() {
    if !require_root() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    let bin = tree.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = run(Command::new("/bin/busybox").arg("--list"));
    for applet in stdout(&list).lines() {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
    }
    let tar = store.path().join("tree.tar");
    assert!(
        run(Command::new("tar")
            .arg("-C")
            .arg(tree.path())
            .arg("-cf")
            .arg(&tar)
            .arg("."))
        .status
        .success()
    );
    let o = run(podman(store.path(), "runc")
        .args(["import", "-q", "--change", "CMD [\"/bin/sh\"]"])
        .arg(&tar)
        .arg("localhost/rt:1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = runtime_bin();
    let tree_path = tree.path().to_str().unwrap();
    // eth0: podman's bridge network, whose namespace the spec names by path.
    let script = "echo hi; id; ip -o link show eth0 >/dev/null && echo joined-netns-eth0; cat /proc/self/status | grep -E '^(Cap|NoNewPrivs|Seccomp:)'; ls /dev; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max 2>/dev/null; exit 3";
    let mut results = Vec::new();
    for rt in ["runc", ours] {
        let mut row = Vec::new();
        for args in [
            vec!["run", "--rm", "localhost/rt:1", "sh", "-c", script],
            vec![
                "run",
                "--rm",
                "--memory",
                "64m",
                "--pids-limit",
                "50",
                "localhost/rt:1",
                "sh",
                "-c",
                script,
            ],
            vec!["run", "--rm", "localhost/rt:1", "nothere"],
            vec!["run", "--rm", "localhost/rt:1", "/etc"],
            vec![
                "run",
                "--rm",
                "--read-only",
                "localhost/rt:1",
                "touch",
                "/x",
            ],
            vec![
                "run",
                "--rm",
                "-v",
                "rpvol:/data",
                "localhost/rt:1",
                "sh",
                "-c",
                "echo x > /data/f; cat /data/f; ls -ld /data | cut -c1-10",
            ],
            vec![
                "run",
                "--rm",
                "--rootfs",
                tree_path,
                "/bin/sh",
                "-c",
                "echo rootfs; id -u",
            ],
        ] {
            let mut c = podman(store.path(), rt);
            c.arg(args[0]).args(LIMITS).args(&args[1..]);
            let o = c.output().unwrap();
            row.push((o.status.code(), stdout(&o)));
        }
        results.push(row);
    }
    assert_eq!(results[0], results[1], "runc, then rootpack-runtime");
    assert_eq!(results[1][0].0, Some(3));
    assert!(
        results[1][0].1.contains("joined-netns-eth0"),
        "{:?}",
        results[1][0]
    );
    assert_eq!(results[1][2].0, Some(127));
    assert_eq!(results[1][3].0, Some(126));
    assert_eq!(results[1][5], (Some(0), "x\ndrwxr-xr-x\n".to_string()));

    // A terminal: `run -it` under script(1), the pty from the console socket.
    let mut tty_out = Vec::new();
    for rt in ["runc", ours] {
        let c = podman(store.path(), rt);
        let mut line: Vec<String> = std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        line.extend(["run", "--rm", "-it"].map(String::from));
        line.extend(LIMITS.iter().map(|s| s.to_string()));
        // After a pause: podman attaches after the start, and output written before it
        // attaches is lost (with runc as well, 2 runs in 10 here).
        line.extend(["localhost/rt:1", "sh", "-c", "'sleep 1; tty; echo done'"].map(String::from));
        let o = Command::new("script")
            .args(["-qec", &line.join(" "), "/dev/null"])
            .output()
            .unwrap();
        // script(1) sometimes echoes a NUL of its own as "^@": not the container's.
        let text = stdout(&o).replace('\r', "").replace("^@", "");
        tty_out.push((o.status.code(), text));
    }
    assert_eq!(tty_out[0], tty_out[1]);
    assert!(
        tty_out[1].1.contains("/dev/pts/0\ndone"),
        "{:?}",
        tty_out[1]
    );

    // Detached, exec, stop, rm.
    let p = |args: &[&str]| {
        let mut c = podman(store.path(), ours);
        c.args(args);
        c.output().unwrap()
    };
    let mut run_d = vec!["run", "-d", "--name", "bg"];
    run_d.extend(LIMITS);
    run_d.extend(["localhost/rt:1", "sleep", "100"]);
    let o = p(&run_d);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = p(&[
        "exec",
        "bg",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "sleep 100 ");
    let o = p(&["exec", "-d", "bg", "sleep", "50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(p(&["pause", "bg"]).status.success());
    assert_eq!(
        stdout(&p(&["inspect", "bg", "--format", "{{.State.Status}}"])),
        "paused\n"
    );
    assert!(p(&["unpause", "bg"]).status.success());
    let o = p(&["stop", "-t", "1", "bg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(p(&["rm", "bg"]).status.success());
    let _ = p(&["rmi", "-f", "localhost/rt:1"]);
}

/// containerd on a private socket and folders, killed (and its shims with it) on drop.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: std::process::Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/sock\"\n",
            d.display()
        );
        fs::write(d.join("config.toml"), config).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(d.join("log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !d.join("sock").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Containerd { dir, daemon }
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("sock"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[test]
fn containerd_runs_tasks_with_it_as_with_runc() {
    if !require_root() {
        return;
    }
    // An image rootpack built, imported from its OCI archive.
    let img = recipe_image(
        "busybox",
        "[output]\nformat = \"oci-archive\"\ntag = \"rpbox:1\"\n",
    );
    let archive = img.dir.path().join("busybox.oci.tar");
    let c = Containerd::start();
    let o = c.ctr(&["images", "import", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours = runtime_bin();
    let mut seen = Vec::new();
    for (i, rt) in ["runc", ours].iter().enumerate() {
        let id = format!("once{i}");
        let o = c.ctr(&[
            "run",
            "--rm",
            "--runc-binary",
            rt,
            "rpbox:1",
            &id,
            "sh",
            "-c",
            "echo hi; id -u; exit 3",
        ]);
        seen.push((o.status.code(), stdout(&o)));
        // Detached, exec into it, kill it, delete it.
        let id = format!("task{i}");
        let o = c.ctr(&[
            "run",
            "-d",
            "--runc-binary",
            rt,
            "rpbox:1",
            &id,
            "sleep",
            "100",
        ]);
        assert!(o.status.success(), "{rt}: {}", stderr(&o));
        let o = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            &id,
            "sh",
            "-c",
            "echo in; exit 5",
        ]);
        assert_eq!(
            (o.status.code(), stdout(&o).as_str()),
            (Some(5), "in\n"),
            "{rt}: {}",
            stderr(&o)
        );
        let o = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
        assert!(o.status.success(), "{rt}: {}", stderr(&o));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stdout(&c.ctr(&["task", "ls"]))
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("STOPPED"))
        {
            assert!(std::time::Instant::now() < deadline, "{rt}: not stopped");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(c.ctr(&["task", "delete", &id]).status.success());
        assert!(c.ctr(&["container", "rm", &id]).status.success());
    }
    assert_eq!(seen[0], seen[1], "runc, then rootpack-runtime");
    assert_eq!(seen[1], (Some(3), "hi\n0\n".to_string()));
}

/// podman's own system tests on the lifecycle (ps, start, stop, pause, kill), from
/// Debian's libpod source, with podman driving rootpack-runtime; the whole list (run,
/// logs, rm, exec too) is `scripts/podman-system-tests.sh`.
#[test]
fn podmans_own_system_tests_pass_with_it() {
    if !require_root() {
        return;
    }
    let o = Command::new(Path::new(REPO).join("scripts/podman-system-tests.sh"))
        .args([
            "--runtime",
            runtime_bin(),
            "040-ps",
            "045-start",
            "050-stop",
            "080-pause",
            "130-kill",
        ])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}\n{}", out, stderr(&o));
    assert!(
        out.lines().last().unwrap_or("").starts_with("passed "),
        "{out}"
    );
    assert!(out.contains(", failed 0,"), "{out}");
}

/// `kill -9` of the runtime in the middle of `create` (here during a prestart hook): the
/// cloned process dies with it, and `delete --force` removes the rest.
#[test]
fn a_create_killed_midway_is_cleaned_by_delete_force() {
    if !require_root() {
        return;
    }
    let b = Bundle::new(&["sleep", "100"]);
    b.edit(|c| {
        c["hooks"] =
            serde_json::json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "5"]}]});
    });
    let mut create = Command::new(runtime_bin())
        .arg("--root")
        .arg(b.root())
        .args(["create", "--bundle"])
        .arg(b.bundle())
        .arg("halfway")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cgroup_leftovers("halfway").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "create did not get to its hook"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    create.kill().unwrap();
    create.wait().unwrap();
    let o = b.rt(&["delete", "--force", "halfway"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!b.root().join("halfway").exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !cgroup_leftovers("halfway").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            cgroup_leftovers("halfway")
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
