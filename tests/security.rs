//! The container's isolation against the attacks Docker's defaults stop: a leaked fd as
//! the working folder, the system calls seccomp refuses, the caller's keyring, host root
//! cgroups, and a tampered image. A static probe program made by gcc reports what each
//! system call returned inside the container.

mod common;

use std::collections::BTreeMap;
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

/// tests/probe/probe.c as a 32-bit (i386) static program, built once.
fn probe32() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe32");
        run(Command::new("gcc")
            .args(["-m32", "-static", "-O2", "-o"])
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
fn i386_calls_pass_the_filter_by_its_rules_and_x32_calls_kill() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    // i386 through int 0x80: allowed as Docker allows it, with the profile's rules.
    let o = probe_in(&img.path, &[], &["int80"]);
    assert_eq!(
        stdout(&o),
        "int80_getpid OK\nint80_unshare EPERM\n",
        "{o:?}"
    );
    // A 32-bit program: threads, and the same refusals as a 64-bit one (but AF_VSOCK:
    // its socket() goes through socketcall, whose arguments no filter can read, as
    // under Docker).
    let volume = format!("{}:/probe32:ro", probe32().display());
    let o = container(
        &img.path,
        &["-v", &volume],
        "/probe32 thread; /probe32 calls",
    );
    let got = lines(&stdout(&o));
    assert_eq!(got.get("thread").map(String::as_str), Some("OK"), "{o:?}");
    for (call, want) in [
        ("clone_newuser", "EPERM"),
        ("unshare_user", "EPERM"),
        ("keyctl", "EPERM"),
        ("mount", "EPERM"),
        ("personality", "EPERM"),
        ("socket_inet", "OK"),
    ] {
        assert_eq!(
            got.get(call).map(String::as_str),
            Some(want),
            "{call}: {o:?}"
        );
    }
    // An x32 call: killed (SIGSYS, 128+31), as under Docker.
    let o = probe_in(&img.path, &[], &["x32"]);
    assert_eq!(o.status.code(), Some(159), "{o:?}");
    let o = probe_in(
        &img.path,
        &["--security-opt", "seccomp=unconfined"],
        &["int80"],
    );
    assert!(stdout(&o).contains("int80_unshare OK"), "{o:?}");
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

/// `script` gives rootpack a real terminal; after the container, the shell reads what
/// is waiting in the terminal's input, where TIOCSTI would have pushed its text.
fn on_a_terminal(command: &str) -> String {
    let o = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    stdout(&o).replace('\r', "")
}

#[test]
fn the_callers_terminal_takes_no_input_from_the_container() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    for (stdin, flags) in [("", ""), ("</dev/null", ""), ("", "--userns")] {
        let command = format!(
            "{} run -q {flags} -v {}:/probe:ro {} -- /probe tiocsti 'echo PWNED\n' {stdin}; \
             read -t 1 line; echo \"after:$line\"",
            env!("CARGO_BIN_EXE_rootpack"),
            probe().display(),
            img.path.display()
        );
        let out = on_a_terminal(&command);
        let got = lines(&out);
        // The probe ran: its refusals below are its own, not the absence of its lines.
        assert!(got.contains_key("tiocsti_stdin"), "{out}");
        assert_ne!(
            got.get("tiocsti_tty").map(String::as_str),
            Some("OK"),
            "{out}"
        );
        assert_ne!(
            got.get("tiocsti_stdin").map(String::as_str),
            Some("OK"),
            "{out}"
        );
        assert!(out.contains("after:\n"), "{stdin} {flags}: {out}");
    }
    // The terminal itself is not the container's: it writes into a pipe we copy from,
    // and so cannot make the caller's /dev/pts/N readable by every user.
    let command = format!(
        "{} run -q {} -- sh -c 'busybox readlink /proc/self/fd/0; \
         busybox readlink /proc/self/fd/1'",
        env!("CARGO_BIN_EXE_rootpack"),
        img.path.display()
    );
    let out = on_a_terminal(&command);
    assert!(
        out.starts_with("pipe:[") && out.contains("\npipe:["),
        "{out}"
    );
    // The filter refuses it even on a terminal that is the command's own (-t).
    let command = format!(
        "{} run -q -t -v {}:/probe:ro {} -- /probe tiocsti x",
        env!("CARGO_BIN_EXE_rootpack"),
        probe().display(),
        img.path.display()
    );
    let out = on_a_terminal(&command);
    assert!(out.contains("tiocsti_tty EPERM"), "{out}");
}

#[test]
fn a_build_step_cannot_type_into_the_callers_terminal() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::copy(probe(), dir.path().join("probe")).unwrap();
    let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let recipe = dir.path().join("recipe.toml");
    fs::write(
        &recipe,
        format!(
            "{text}\n[[file]]\nto = \"/probe\"\nfrom = \"probe\"\nmode = \"0755\"\n\n\
             [[run]]\nargs = [\"/probe\", \"tiocsti\", \"echo PWNED\\n\"]\n"
        ),
    )
    .unwrap();
    let command = format!(
        "{} build --no-cache {} --out {}; read -t 1 line; echo \"after:$line\"",
        env!("CARGO_BIN_EXE_rootpack"),
        recipe.display(),
        dir.path().display()
    );
    let out = on_a_terminal(&command);
    // The step ran (its lines are shown), and its pushes were refused.
    assert!(out.contains("tiocsti_stdin"), "{out}");
    assert!(!out.contains("tiocsti_tty OK"), "{out}");
    assert!(!out.contains("tiocsti_stdin OK"), "{out}");
    assert!(out.contains("after:\n"), "{out}");
}

#[test]
fn the_callers_output_file_cannot_be_reopened() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let img = busybox_image("");
    let log = img.dir.path().join("app.log");
    fs::write(&log, "host secret\n").unwrap();
    fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();
    let file = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let err = fs::OpenOptions::new().append(true).open(&log).unwrap();
    let o = rootpack()
        .arg("run")
        .arg(&img.path)
        .args([
            "--",
            "sh",
            "-c",
            "busybox chmod 4755 /proc/self/fd/1; busybox chown 123 /proc/self/fd/2; \
             busybox timeout 1 head -c 100 /proc/self/fd/1 /proc/self/fd/2 </dev/null >/tmp/read; \
             grep -c secret /tmp/read; echo out; echo err >&2",
        ])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .unwrap();
    let meta = fs::metadata(&log).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o7777, 0o644, "{o:?}");
    assert_eq!(meta.uid(), 0);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("host secret\n"), "{text}");
    assert!(
        text.contains("0\nout\n") && text.contains("err\n"),
        "{text}"
    );
    // Both ends the same file: one relay, the order kept.
    let both = fs::File::create(img.dir.path().join("both.log")).unwrap();
    let o = rootpack()
        .arg("run")
        .arg(&img.path)
        .args([
            "--",
            "sh",
            "-c",
            "for i in 1 2 3; do echo o$i; echo e$i >&2; done",
        ])
        .stdin(Stdio::null())
        .stdout(both.try_clone().unwrap())
        .stderr(both)
        .status()
        .unwrap();
    assert!(o.success());
    let text = fs::read_to_string(img.dir.path().join("both.log")).unwrap();
    assert_eq!(text, "o1\ne1\no2\ne2\no3\ne3\n");
}

#[test]
fn a_file_on_stdin_is_left_where_the_container_stopped_reading() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let list = img.dir.path().join("list");
    let lines: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    fs::write(&list, lines).unwrap();
    let script = format!(
        "while read x; do {} run -q {} -- sh -c 'read y; echo \"$0+$y\"' \"$x\"; \
         [ \"$x\" -ge 5 ] && break; done < {}",
        env!("CARGO_BIN_EXE_rootpack"),
        img.path.display(),
        list.display()
    );
    let o = run(Command::new("sh").args(["-c", &script]));
    assert_eq!(stdout(&o), "1+2\n3+4\n5+6\n", "{o:?}");
}

#[test]
fn host_device_nodes_are_out_of_reach() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let img = busybox_image("");
    let before = fs::metadata("/dev/full").unwrap();
    for flags in [&[][..], &["--userns"][..]] {
        let o = container(
            &img.path,
            flags,
            "busybox chmod 0600 /dev/full /dev/null; touch -d 2001-01-01 /dev/full /dev/null; \
             echo x > /dev/null && head -c 3 /dev/zero | wc -c",
        );
        let after = fs::metadata("/dev/full").unwrap();
        let null = fs::metadata("/dev/null").unwrap();
        // Put back what a failing run changed, before asserting.
        if after.mode() != before.mode() || null.mode() & 0o777 != 0o666 {
            Command::new("chmod")
                .args(["0666", "/dev/full", "/dev/null"])
                .status()
                .unwrap();
        }
        assert_eq!(after.mode(), before.mode(), "{flags:?} {o:?}");
        assert_eq!(null.mode() & 0o777, 0o666, "{flags:?} {o:?}");
        assert_eq!(after.mtime(), before.mtime(), "{flags:?} {o:?}");
        assert_eq!(stdout(&o).trim(), "3", "{o:?}");
    }
}

#[test]
fn the_init_is_not_the_host_binary() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = probe_in(&img.path, &["--cap-add", "SYS_PTRACE"], &["openexe"]);
    assert!(stdout(&o).starts_with("open_init_exe E"), "{o:?}");
    let o = container(
        &img.path,
        &["--cap-add", "SYS_PTRACE"],
        "busybox tr '\\0' ' ' </proc/1/cmdline; echo; busybox readlink /proc/1/exe",
    );
    let out = stdout(&o);
    assert!(out.starts_with("rootpack-init "), "{o:?}");
    assert!(out.contains("\n/memfd:rootpack-init"), "{o:?}");
}

#[test]
fn posix_message_queues_and_open_file_limits_are_dockers() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = probe_in(&img.path, &[], &["mq"]);
    assert_eq!(stdout(&o), "mq_open OK\nmq_send OK\n", "{o:?}");
    let o = container(&img.path, &[], "ulimit -n; ulimit -Hn");
    assert_eq!(
        stdout(&o),
        "1024\n524288\n".replace("524288", &hard_nofile()),
        "{o:?}"
    );
    let o = container(
        &img.path,
        &["--ulimit", "nofile=2048:4096", "--ulimit", "nproc=500"],
        "ulimit -n; ulimit -Hn; ulimit -u",
    );
    assert_eq!(stdout(&o), "2048\n4096\n500\n", "{o:?}");
    let o = container(&img.path, &["--ulimit", "nofile=9:8"], "true");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = container(&img.path, &["--ulimit", "bogus=1"], "true");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

/// The default hard limit: 524288, or the caller's own if it cannot be raised that far.
fn hard_nofile() -> String {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a local.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
    if is_root() && l.rlim_max >= 524288 {
        "524288".into()
    } else {
        l.rlim_max.min(524288).to_string()
    }
}

#[test]
fn an_image_others_can_write_is_refused_and_a_swapped_path_never_runs() {
    if !require_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let img = busybox_image("");
    let mode = |p: &Path, m| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    mode(&img.path, 0o646);
    let o = container(&img.path, &[], "echo ran");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(stderr(&o).contains("other users can write"), "{o:?}");
    let o = container(&img.path, &["--no-verify"], "echo ran");
    assert_eq!(stdout(&o), "ran\n", "{o:?}");
    mode(&img.path, 0o644);
    // A folder on the path that others can write (without the sticky bit).
    let open = img.dir.path().join("open");
    fs::create_dir(&open).unwrap();
    mode(&open, 0o777);
    let moved = open.join("busybox.ext4");
    fs::rename(&img.path, &moved).unwrap();
    fs::copy(
        img.dir.path().join("busybox.json"),
        open.join("busybox.json"),
    )
    .unwrap();
    let o = container(&moved, &[], "echo ran");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(stderr(&o).contains("other users can write"), "{o:?}");
    fs::rename(&moved, &img.path).unwrap();

    // The path swapped between a good image and a tampered copy while runs start: the
    // file checked is the file mounted, so the tampered one never runs.
    let bad = img.dir.path().join("bad.ext4");
    let tampered = image_from_recipe(
        "busybox",
        &format!(
            "{}\n[[file]]\nto = \"/marker\"\ncontent = \"TAMPERED\"\n",
            fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap()
        ),
    );
    fs::copy(&tampered.path, &bad).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, a, b) = (stop.clone(), img.path.clone(), bad.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &a,
                    rustix::fs::CWD,
                    &b,
                    rustix::fs::RenameFlags::EXCHANGE,
                );
            }
        })
    };
    let mut ran = 0;
    for _ in 0..30 {
        let o = container(&img.path, &[], "cat /marker 2>/dev/null; echo end");
        assert!(!stdout(&o).contains("TAMPERED"), "{o:?}");
        ran += stdout(&o).contains("end") as usize;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(ran > 0, "no run started in 30");
}

#[test]
fn untrusted_recipes_read_only_their_folder_and_what_is_allowed() {
    if !require_root() {
        return;
    }
    let base = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    fs::create_dir(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.path().join("link")).unwrap();
    fs::create_dir(dir.path().join(".git")).unwrap();
    fs::write(dir.path().join(".git/config"), "token\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("notes"), "allowed\n").unwrap();
    let build = |extra: &str, flags: &[&str]| {
        let recipe = dir.path().join("recipe.toml");
        fs::write(&recipe, format!("{base}\n{extra}")).unwrap();
        rootpack()
            .args(["build", "-q"])
            .args(flags)
            .arg(&recipe)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let file = |from: &str| format!("[[file]]\nto = \"/taken\"\nfrom = \"{from}\"\n");
    let step_mount = |mount: &str| {
        format!("[[run]]\nscript = \"! touch /m/x 2>/dev/null\"\nmounts = [\"{mount}\"]\n")
    };
    for (extra, names) in [
        (file("/etc/shadow"), "/etc/shadow"),
        (file("link"), "link"),
        (step_mount("/etc:/m"), "mounts"),
        (file(".git/config"), ".git"),
        (step_mount(".:/m"), ".git"),
        (
            "[[run]]\nscript = \"true\"\nnetwork = \"host\"\n".to_string(),
            "network",
        ),
    ] {
        let o = build(&extra, &["--untrusted"]);
        assert_eq!(o.status.code(), Some(1), "{extra}: {o:?}");
        let err = stderr(&o);
        assert!(err.contains(names) && err.contains("--untrusted"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.join("busybox.ext4").exists());
    }
    // The same recipe without them builds, and its step's mount is read-only.
    let o = build(&step_mount("data:/m"), &["--untrusted"]);
    assert!(o.status.success(), "{o:?}");
    // Trusted, the mount is writable, as the recipe says (so the step fails).
    let o = build(&step_mount("data:/m"), &[]);
    assert!(!o.status.success(), "{o:?}");
    // A folder outside, once allowed.
    let notes = elsewhere.path().join("notes");
    let o = build(&file(&notes.display().to_string()), &["--untrusted"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let allow = elsewhere.path().display().to_string();
    let o = build(
        &file(&notes.display().to_string()),
        &["--untrusted", "--allow", &allow],
    );
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn allowed_devices_open_where_made_and_others_only_exist() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = container(
        &img.path,
        &[],
        "busybox mknod /tmp/null c 1 3 && echo x > /tmp/null && echo null-opens; \
         busybox mknod /tmp/disk b 8 0 && { head -c1 /tmp/disk >/dev/null 2>&1 || echo disk-refused; }; \
         busybox mknod /tmp/mem c 1 1 && { head -c1 /tmp/mem >/dev/null 2>&1 || echo mem-refused; }; \
         busybox mknod /dev/mine c 1 3 && echo x > /dev/mine && echo dev-opens",
    );
    assert_eq!(
        stdout(&o),
        "null-opens\ndisk-refused\nmem-refused\ndev-opens\n",
        "{o:?}"
    );
}

/// Docker's default capability set, as /proc/self/status prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";
const NO_CAPS: &str = "0000000000000000";

/// `rootpack run ARGS IMAGE -- PROGRAM privileges`: the probe's report, as `lines`.
fn privileges_in(image: &Path, args: &[&str], program: &str) -> BTreeMap<String, String> {
    let o = rootpack()
        .arg("run")
        .args(args)
        .arg(image)
        .args(["--", program, "privileges"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{args:?}: {o:?}");
    lines(&stdout(&o))
}

#[test]
fn a_set_uid_program_gains_at_most_dockers_set_and_no_new_privileges_stops_it() {
    if !require_root() {
        return;
    }
    let img = busybox_image(&format!(
        "[[file]]\nto = \"/setuid-probe\"\nfrom = \"{}\"\nmode = \"4755\"\n",
        probe().display()
    ));
    // Docker's default: no_new_privs off, so the set-uid bit works, within the bounding set.
    let p = privileges_in(&img.path, &["-u", "1000"], "/setuid-probe");
    assert_eq!(
        (p["uid"].as_str(), p["euid"].as_str()),
        ("1000", "0"),
        "{p:?}"
    );
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(p[set], DOCKER_CAPS, "{set}: {p:?}");
    }
    assert_eq!(
        (p["CapInh"].as_str(), p["CapAmb"].as_str()),
        (NO_CAPS, NO_CAPS),
        "{p:?}"
    );
    assert_eq!(p["NoNewPrivs"], "0", "{p:?}");
    // A dropped capability stays out of reach of the set-uid program.
    let p = privileges_in(
        &img.path,
        &["-u", "1000", "--cap-drop", "ALL"],
        "/setuid-probe",
    );
    assert_eq!(p["euid"], "0", "{p:?}");
    for set in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(p[set], NO_CAPS, "{set}: {p:?}");
    }
    assert_eq!(p["socket_raw"], "EPERM", "{p:?}");
    // no-new-privileges, in each of Docker's spellings: the set-uid bit does nothing.
    for opt in [
        "no-new-privileges",
        "no-new-privileges=true",
        "no-new-privileges:true",
    ] {
        let args = ["-u", "1000", "--security-opt", opt];
        let p = privileges_in(&img.path, &args, "/setuid-probe");
        assert_eq!(p["euid"], "1000", "{opt}: {p:?}");
        assert_eq!(
            (p["CapEff"].as_str(), p["CapPrm"].as_str()),
            (NO_CAPS, NO_CAPS),
            "{p:?}"
        );
        assert_eq!(p["NoNewPrivs"], "1", "{opt}: {p:?}");
    }
    let args = ["-u", "1000", "--security-opt", "no-new-privileges=false"];
    assert_eq!(
        privileges_in(&img.path, &args, "/setuid-probe")["euid"],
        "0"
    );
    // Without a set-id program a user holds nothing, as in Docker; the bounding set is
    // Docker's.
    let volume = format!("{}:/probe:ro", probe().display());
    let p = privileges_in(&img.path, &["-u", "1000", "-v", &volume], "/probe");
    assert_eq!(p["euid"], "1000", "{p:?}");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(p[set], NO_CAPS, "{set}: {p:?}");
    }
    assert_eq!(p["CapBnd"], DOCKER_CAPS, "{p:?}");
}

#[test]
fn a_file_capability_gives_a_user_no_more_than_the_bounding_set() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let dir = tempfile::tempdir().unwrap();
    let with_caps = |name: &str, caps: &str| {
        let copy = dir.path().join(name);
        fs::copy(probe(), &copy).unwrap();
        run(Command::new("setcap").arg(caps).arg(&copy));
        format!("{}:/{name}:ro", copy.display())
    };
    let raw = with_caps("raw", "cap_net_raw=ep");
    let p = privileges_in(&img.path, &["-u", "1000", "-v", &raw], "/raw");
    assert_eq!(p["euid"], "1000", "{p:?}");
    assert_eq!(
        (p["CapEff"].as_str(), p["CapPrm"].as_str()),
        ("0000000000002000", "0000000000002000"),
        "{p:?}"
    );
    assert_eq!(p["socket_raw"], "OK", "{p:?}");
    // The kernel refuses to start a program whose file capabilities the bounding set cuts
    // (it would run without what it was given).
    let admin = with_caps("admin", "cap_net_raw,cap_sys_admin=ep");
    for (volume, args) in [(&admin, &[][..]), (&raw, &["--cap-drop", "NET_RAW"][..])] {
        let o = rootpack()
            .args(["run", "-u", "1000", "-v", volume])
            .args(args)
            .arg(&img.path)
            .args(["--", volume.split(':').nth(1).unwrap(), "privileges"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(126), "{volume}: {o:?}");
    }
    let p = privileges_in(
        &img.path,
        &[
            "-u",
            "1000",
            "-v",
            &raw,
            "--security-opt",
            "no-new-privileges",
        ],
        "/raw",
    );
    assert_eq!(
        (p["CapEff"].as_str(), p["socket_raw"].as_str()),
        (NO_CAPS, "EPERM"),
        "{p:?}"
    );
}

#[test]
fn sysctls_are_the_namespaced_ones_docker_allows() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = container(
        &img.path,
        &[
            "--sysctl",
            "kernel.shmmax=1073741824",
            "--sysctl",
            "fs.mqueue.msg_max=20",
        ],
        "cat /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max /proc/sys/net/ipv4/ping_group_range",
    );
    assert_eq!(stdout(&o), "1073741824\n20\n0\t2147483647\n", "{o:?}");
    // The host's own stay as they were.
    let shmmax = fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    assert_ne!(shmmax, "1073741824\n");
    let o = container(
        &img.path,
        &["--sysctl", "net.ipv4.ping_group_range=1000 1000"],
        "cat /proc/sys/net/ipv4/ping_group_range",
    );
    assert_eq!(stdout(&o), "1000\t1000\n", "{o:?}");
    for bad in [
        "vm.swappiness=10",
        "kernel.hostname=x",
        "kernel.shmmax",
        "net.ipv4/../../kernel/core_pattern=x",
        "net..ipv4.ip_forward=1",
        "fs.mqueue.=1",
    ] {
        let o = container(&img.path, &["--sysctl", bad], "true");
        let key = bad.split('=').next().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        assert!(stderr(&o).contains(key), "{bad}: {o:?}");
    }
    // The host's network: its sysctls are the host's, neither set by default nor asked for.
    let o = container(
        &img.path,
        &["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
        "true",
    );
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(stderr(&o).contains("net.ipv4.ip_forward"), "{o:?}");
    assert_eq!(stderr(&o).lines().count(), 1, "{o:?}");
    let host = fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let o = container(
        &img.path,
        &["--network", "host"],
        "cat /proc/sys/net/ipv4/ping_group_range",
    );
    assert_eq!(stdout(&o), host, "{o:?}");
}

#[test]
fn a_user_pings_through_an_unprivileged_icmp_socket() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = probe_in(&img.path, &["-u", "1000"], &["icmp"]);
    assert_eq!(
        stdout(&o),
        "icmp_socket OK\nicmp_send OK\nicmp_reply OK\n",
        "{o:?}"
    );
    let o = probe_in(
        &img.path,
        &["-u", "1000", "--sysctl", "net.ipv4.ping_group_range=1 0"],
        &["icmp"],
    );
    assert_eq!(stdout(&o), "icmp_socket EACCES\n", "{o:?}");
}
