//! The container's isolation against the attacks Docker's defaults stop: a leaked fd as
//! the working folder, the system calls seccomp refuses, the caller's keyring, host root
//! cgroups, and a tampered image. A static probe program made by gcc reports what each
//! system call returned inside the container.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;

/// tests/probe/probe.c, built static once per test run.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe");
        run(Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(Path::new(REPO).join("tests/probe/probe.c"))
            .arg("-lpthread"));
        out
    })
}

/// Runs the probe in the container with `args` before the image.
fn probe_in(image: &Path, args: &[&str], probe_args: &[&str]) -> std::process::Output {
    let volume = format!("{}:/probe:ro", probe().display());
    rootpack()
        .arg("run")
        .args(["-v", &volume])
        .args(args)
        .arg(image)
        .arg("--")
        .arg("/probe")
        .args(probe_args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn lines(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn seccomp_refuses_what_docker_refuses_and_unconfined_gives_it_back() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = probe_in(&img.path, &[], &["calls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = lines(&stdout(&o));
    for (call, want) in [
        ("clone_newuser", "EPERM"),
        ("unshare_user", "EPERM"),
        ("clone3", "ENOSYS"),
        ("add_key", "EPERM"),
        ("keyctl", "EPERM"),
        ("socket_vsock", "EPERM"),
        ("socket_alg", "EPERM"),
        ("socket_inet", "OK"),
        ("perf_event_open", "EPERM"),
        ("quotactl", "EPERM"),
        ("kcmp", "EPERM"),
        ("personality", "EPERM"),
        ("mount", "EPERM"),
    ] {
        assert_eq!(
            got.get(call).map(String::as_str),
            Some(want),
            "{call}: {got:?}"
        );
    }
    // Unconfined: the calls reach the kernel again (today's behaviour before the filter).
    let o = probe_in(
        &img.path,
        &["--security-opt", "seccomp=unconfined"],
        &["calls"],
    );
    let got = lines(&stdout(&o));
    for call in ["unshare_user", "keyctl", "kcmp", "personality"] {
        assert_eq!(
            got.get(call).map(String::as_str),
            Some("OK"),
            "{call}: {got:?}"
        );
    }
    assert_eq!(got.get("clone3").map(String::as_str), Some("EINVAL"));
}

#[test]
fn threads_glibc_and_bash_work_under_the_filter() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = probe_in(&img.path, &[], &["thread"]);
    assert_eq!(stdout(&o), "thread OK\n", "{}", stderr(&o));
    let hello = recipe_image("hello", "");
    let o = container(
        &hello.path,
        &[],
        "bash -c 'read -r motd </etc/motd; echo $((6*7)) ${#motd} $(cat /etc/motd)'; \
         ls / >/dev/null && echo ls-ok",
    );
    let want = "42 27 hello from a rootpack image\nls-ok\n";
    assert_eq!(stdout(&o), want, "{}", stderr(&o));
}

#[test]
fn foreign_abi_calls_kill_the_process() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    // getpid through int 0x80: the filter kills the process (SIGSYS, 128+31).
    let o = probe_in(&img.path, &[], &["int80"]);
    assert_eq!(o.status.code(), Some(159), "{o:?}");
    let o = probe_in(
        &img.path,
        &["--security-opt", "seccomp=unconfined"],
        &["int80"],
    );
    assert!(stdout(&o).starts_with("int80 returned"), "{o:?}");
}

#[test]
fn docker_format_profiles_load_and_unknown_names_are_refused() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let profile = img.dir.path().join("profile.json");
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let o = container(
        &img.path,
        &["--security-opt", &opt],
        "mkdir /tmp/x 2>&1; touch /tmp/y && echo touched",
    );
    let out = stdout(&o);
    assert!(
        out.contains("Permission denied") && out.contains("touched"),
        "{out}"
    );
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdri"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let o = container(&img.path, &["--security-opt", &opt], "true");
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("profile.json") && err.contains("\"mkdri\""),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_leaked_folder_fd_cannot_become_the_workdir() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let host = tempfile::tempdir().unwrap();
    let run_with_fd_7 = |workdir_args: &[&str]| {
        let dir = fs::File::open(host.path()).unwrap();
        let mut cmd = rootpack();
        cmd.arg("run")
            .args(workdir_args)
            .arg(&img.path)
            .args([
                "--",
                "sh",
                "-c",
                "touch escaped; ls ../../.. | head -3; pwd",
            ])
            .stdin(Stdio::null());
        let raw = std::os::unix::io::AsRawFd::as_raw_fd(&dir);
        // SAFETY: dup2 in the child before exec; fd 7 is left open, as a careless caller would.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        drop(dir);
        o
    };
    let o = run_with_fd_7(&["-w", "/proc/self/fd/7"]);
    assert!(!host.path().join("escaped").exists(), "{o:?}");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(stderr(&o).contains("workdir"), "{o:?}");
    // The same through the manifest.
    let manifest = img.dir.path().join("busybox.json");
    let text = fs::read_to_string(&manifest).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["config"]["workdir"] = "/proc/self/fd/7".into();
    fs::write(&manifest, json.to_string()).unwrap();
    let o = run_with_fd_7(&[]);
    assert!(!host.path().join("escaped").exists(), "{o:?}");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    // A missing workdir is made inside the root, as Docker does.
    fs::write(&manifest, text).unwrap();
    let o = container(&img.path, &["-w", "/made/by/run"], "pwd -P");
    assert_eq!(stdout(&o), "/made/by/run\n", "{o:?}");
}

#[test]
fn the_callers_keys_stay_out_of_reach_even_unconfined() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let added = run(Command::new(probe()).args(["addkey", "user"]));
    let id = String::from_utf8_lossy(&added.stdout).trim().to_string();
    // The host itself can read it.
    let own = run(Command::new(probe()).args(["readkey", &id]));
    assert!(stdout(&own).contains("read host-secret"), "{own:?}");
    let o = probe_in(
        &img.path,
        &["--security-opt", "seccomp=unconfined"],
        &["readkey", &id],
    );
    run(Command::new(probe()).args(["revokekey", &id]));
    let out = stdout(&o);
    assert!(!out.contains("host-secret"), "{out}");
    assert!(out.contains("readkey EACCES"), "{out}");
}

/// The pid of rootpack's container init, a child of `rootpack`.
fn init_of(rootpack_pid: u32) -> u32 {
    for _ in 0..500 {
        let children =
            fs::read_to_string(format!("/proc/{rootpack_pid}/task/{rootpack_pid}/children"))
                .unwrap_or_default();
        // The cgroup watcher is a child too, but it leaves our process at once (setsid
        // and fork are ours; only the init is in new namespaces).
        for pid in children.split_whitespace() {
            let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            if ns.is_some() && ns != fs::read_link("/proc/self/ns/pid").ok() {
                return pid.parse().unwrap();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("no container init under {rootpack_pid}");
}

#[test]
fn every_cgroup_hierarchy_gets_a_group_and_the_container_sees_only_its_own() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let child = rootpack()
        .args(["run", "--pids", "77"])
        .arg(&img.path)
        .args([
            "--",
            "sh",
            "-c",
            "ls /sys/fs/cgroup; cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; \
             mkdir /sys/fs/cgroup/pids/x 2>/dev/null && echo writable; sleep 2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let init = init_of(child.id());
    // The ns's pid is seen before the cgroup move ends: wait for the command's sleep.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cgroups = fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let out = child.wait_with_output().unwrap();
    let out = stdout(&out);
    for line in cgroups.lines() {
        assert!(
            !line.ends_with(":/"),
            "in a host root group: {line}\n{cgroups}"
        );
        assert!(line.contains("rootpack-"), "{line}");
    }
    assert!(out.contains("77\n"), "{out}");
    assert!(!out.contains("writable"), "{out}");
}

#[test]
fn tampered_images_are_refused_before_mounting() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = container(&img.path, &[], "echo first");
    assert_eq!(stdout(&o), "first\n");
    // Remembered: the state folder knows this version of the file.
    let state = Path::new("/var/lib/rootpack/verified");
    let meta = fs::metadata(&img.path).unwrap();
    use std::os::unix::fs::MetadataExt;
    let record = state.join(format!("{:x}-{}", meta.dev(), meta.ino()));
    assert!(record.exists(), "{}", record.display());
    assert_eq!(fs::metadata(state).unwrap().mode() & 0o777, 0o700);
    // One flipped byte in the image's last (unused) block.
    let mut bytes = fs::read(&img.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&img.path, &bytes).unwrap();
    let before = loop_devices(|b| b == img.path);
    let o = container(&img.path, &[], "echo ran");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    let err = stderr(&o);
    assert!(
        err.contains("sha256 mismatch") && err.contains("busybox.ext4"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(stdout(&o).is_empty());
    assert_eq!(loop_devices(|b| b == img.path), before);
    let o = container(&img.path, &["--no-verify"], "echo ran");
    assert_eq!(stdout(&o), "ran\n", "{o:?}");
    fs::remove_file(record).ok();
}
