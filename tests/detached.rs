//! `run -d` and the commands on detached containers: ps, logs, exec, stop, kill, rm; and
//! nothing left behind when they end, are removed, or their monitor is killed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn rp(args: &[&str]) -> std::process::Output {
    rootpack().args(args).output().unwrap()
}

/// Removes the container (running or not) when the test ends, passed or failed.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = rp(&["rm", "-f", &self.0]);
    }
}

fn detach(image: &Path, name: &str, script: &str) -> String {
    let o = rootpack()
        .args(["run", "-d", "--name", name])
        .arg(image)
        .args(["sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    id
}

/// The container named `name` in `ps -a --json`.
fn ps_entry(name: &str) -> Option<serde_json::Value> {
    let o = rp(&["ps", "-a", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    all.into_iter().find(|c| c["name"] == name)
}

fn wait_status(name: &str, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ps_entry(name).map(|c| c["status"].as_str().unwrap().to_string());
        match status {
            Some(s) if s.starts_with(prefix) => return s,
            _ if Instant::now() > deadline => panic!("{name}: {status:?}, not {prefix}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn detached_lifecycle() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let _guard = Removed("dlife".into());
    let id = detach(
        &img.path,
        "dlife",
        "echo started; echo err >&2; while true; do sleep 0.1; done",
    );
    assert_eq!(wait_status("dlife", "Up"), "Up");
    // ps by default shows it; by id prefix and name the same container.
    assert!(stdout(&rp(&["ps"])).contains("dlife"));
    // By a prefix of its id; the output once the shell has written it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut o = rp(&["logs", &id[..8]]);
    while stdout(&o) != "started\nerr\n" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        o = rp(&["logs", &id[..8]]);
    }
    assert_eq!(stdout(&o), "started\nerr\n", "{}", stderr(&o));
    // exec joins its PID namespace (its init is PID 1) and passes on the status.
    let o = rp(&[
        "exec",
        "dlife",
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("rootpack-init"), "{}", stdout(&o));
    let o = rp(&[
        "exec",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "-e",
        "X=y",
        "dlife",
        "sh",
        "-c",
        "echo $(id -u) $(pwd) $X",
    ]);
    assert_eq!(stdout(&o), "1000 /tmp y\n");
    // exec follows the container's no_new_privs: off, as in Docker.
    let o = rp(&["exec", "dlife", "grep", "NoNewPrivs", "/proc/self/status"]);
    assert_eq!(stdout(&o), "NoNewPrivs:\t0\n", "{}", stderr(&o));
    let o = rp(&["exec", "dlife", "nothere"]);
    assert_eq!(o.status.code(), Some(127));
    // rm of a running container is refused, stop ends it with SIGTERM's status.
    let o = rp(&["rm", "dlife"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is running"), "{}", stderr(&o));
    let o = rp(&["stop", "-t", "5", "dlife"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(wait_status("dlife", "Exited"), "Exited (143)");
    let o = rp(&["exec", "dlife", "true"]);
    assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
    assert!(rp(&["rm", "dlife"]).status.success());
    assert!(ps_entry("dlife").is_none());
    let o = rp(&["logs", "dlife"]);
    assert!(stderr(&o).contains("no such container"));
    wait_for_no_leaks(&img.path);
}

#[test]
fn detached_rm_kill_and_names() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    // --rm: gone once it ends.
    let o = rootpack()
        .args(["run", "-d", "--rm", "--name", "dquick"])
        .arg(&img.path)
        .args(["true"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while ps_entry("dquick").is_some() {
        assert!(Instant::now() < deadline, "--rm container still listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A name in use, a bad name.
    let _guards = [
        Removed("dkill".into()),
        Removed("dforce".into()),
        Removed("dquick".into()),
    ];
    detach(&img.path, "dkill", "sleep 100");
    let o = rootpack()
        .args(["run", "-d", "--name", "dkill"])
        .arg(&img.path)
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = rootpack()
        .args(["run", "-d", "--name", "../x"])
        .arg(&img.path)
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    // kill: SIGKILL by default.
    assert!(rp(&["kill", "dkill"]).status.success());
    assert_eq!(wait_status("dkill", "Exited"), "Exited (137)");
    assert!(rp(&["rm", "dkill"]).status.success());
    // rm -f of a running one; exec follows its no-new-privileges.
    let o = rootpack()
        .args([
            "run",
            "-d",
            "--name",
            "dforce",
            "--security-opt",
            "no-new-privileges",
        ])
        .arg(&img.path)
        .args(["sleep", "100"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(wait_status("dforce", "Up"), "Up");
    let o = rp(&["exec", "dforce", "grep", "NoNewPrivs", "/proc/self/status"]);
    assert_eq!(stdout(&o), "NoNewPrivs:\t1\n", "{}", stderr(&o));
    assert!(rp(&["rm", "-f", "dforce"]).status.success());
    assert!(ps_entry("dforce").is_none());
    wait_for_no_leaks(&img.path);
}

#[test]
fn a_killed_monitor_leaves_nothing_rm_does_not_clean() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let _guard = Removed("dmon".into());
    let id = detach(&img.path, "dmon", "sleep 100");
    wait_status("dmon", "Up");
    let monitor =
        std::fs::read_to_string(format!("/run/rootpack-containers/{id}/monitor")).unwrap();
    let pid: i32 = monitor.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: killing the monitor process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // Its cgroup watcher ends the container; the record says so.
    assert_eq!(wait_status("dmon", "Dead"), "Dead");
    assert!(rp(&["rm", "dmon"]).status.success());
    wait_for_no_leaks(&img.path);
}

#[test]
fn fifty_detached_containers_in_parallel() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let path = img.path.clone();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                let name = format!("dpar{i}");
                let _guard = Removed(name.clone());
                detach(&path, &name, "sleep 100");
                let o = rp(&["rm", "-f", &name]);
                assert!(o.status.success(), "{}", stderr(&o));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let left: Vec<_> = (0..50)
        .filter(|i| ps_entry(&format!("dpar{i}")).is_some())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    wait_for_no_leaks(&img.path);
}
