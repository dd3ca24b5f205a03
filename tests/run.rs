//! `rootpack run` on images made by `rootpack build`: isolation, exit codes, signals,
//! limits, hardening, hostile images, concurrency, and nothing left behind.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn mountinfo() -> Vec<String> {
    // Mount ids and the optional fields change with unrelated activity; targets and
    // sources are what a leak would show.
    let mut v: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            format!("{} {}", f[4], f[f.len() - 2])
        })
        .collect();
    v.sort();
    v
}

#[test]
fn isolation_and_exit_codes() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let host_name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mounts = mountinfo();
    let o = container(
        &img.path,
        &["--hostname", "inside"],
        "hostname; hostname other 2>/dev/null || echo no-sys-admin; echo pid $$; ps -o pid | wc -l; ls /sys/class/net",
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "inside");
    assert_eq!(lines[1], "no-sys-admin");
    assert_eq!(lines[2], "pid 2", "the command runs under our init, PID 1");
    // Header, init, sh, ps, wc: no host process is visible.
    assert!(lines[3].trim().parse::<u32>().unwrap() <= 5, "{out}");
    assert_eq!(lines[4], "lo", "only loopback in the network namespace");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    for (script, code) in [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -INT $$", 130),
        ("kill -KILL $$", 137),
    ] {
        let o = container(&img.path, &[], script);
        assert_eq!(o.status.code(), Some(code), "{script}");
    }
    let o = container(&img.path, &["--no-init"], "echo pid $$");
    assert_eq!(stdout(&o), "pid 1\n");
    let o = rootpack()
        .arg("run")
        .arg(&img.path)
        .args(["--", "no-such-program"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-program: command not found"));
    wait_for_no_leaks(&img.path);
    assert_eq!(mountinfo(), mounts, "the host's mounts changed");
}

#[test]
fn sigterm_reaches_the_command() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let child = rootpack()
        .arg("run")
        .arg(&img.path)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "ready\ngot-term\n");
    wait_for_no_leaks(&img.path);
}

#[test]
fn writes_vanish_unless_writable_and_volumes_work() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = container(&img.path, &[], "echo x > /etc/new && cat /etc/new");
    assert_eq!(stdout(&o), "x\n");
    let o = container(&img.path, &[], "cat /etc/new 2>&1 || echo gone");
    assert!(stdout(&o).ends_with("gone\n"), "{}", stdout(&o));
    let o = container(&img.path, &["--writable"], "echo kept > /etc/new");
    assert!(o.status.success());
    let o = container(&img.path, &[], "cat /etc/new");
    assert_eq!(stdout(&o), "kept\n");
    // The manifest now describes the changed image, and says it changed.
    let o = run(rootpack().arg("inspect").arg(&img.path));
    let out = stdout(&o);
    assert!(
        out.contains("modified:") && out.contains("verified"),
        "{out}"
    );
    run(Command::new("e2fsck").arg("-fn").arg(&img.path));

    let host = img.dir.path().join("vol");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("from-host"), "hi\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let ro = format!("{}:/ro:ro", host.display());
    let o = container(
        &img.path,
        &["-v", &rw, "-v", &ro],
        "cat /data/from-host; echo w > /data/from-ctr; echo w > /ro/nope 2>/dev/null || echo ro-refused",
    );
    assert_eq!(stdout(&o), "hi\nro-refused\n");
    assert_eq!(fs::read_to_string(host.join("from-ctr")).unwrap(), "w\n");
    assert!(!host.join("nope").exists());
    wait_for_no_leaks(&img.path);
}

#[test]
fn limits_stop_memory_hogs_and_fork_bombs() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = container(
        &img.path,
        &["--memory", "32M"],
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
    );
    assert_eq!(o.status.code(), Some(137));
    assert!(String::from_utf8_lossy(&o.stderr).contains("killed: out of memory, limit 32M"));
    assert!(!stdout(&o).contains("survived"));
    // The host is fine, and so is the next container.
    assert!(container(&img.path, &[], "true").status.success());
    let o = container(
        &img.path,
        &["--pids", "20"],
        // The bomb's shell dies at the first failed fork; count with builtins only.
        "(for i in $(seq 100); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#",
    );
    let count: u32 = stdout(&o)
        .trim()
        .lines()
        .last()
        .unwrap_or("999")
        .trim()
        .parse()
        .unwrap_or(999);
    assert!(
        (10..=20).contains(&count),
        "{count} processes with --pids 20"
    );
    wait_for_no_leaks(&img.path);
}

#[test]
fn hardening() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    // An fd the caller leaves open must not reach the container.
    let file = img.dir.path().join("secret");
    fs::write(&file, "host secret").unwrap();
    let path = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: opening a file without O_CLOEXEC on purpose, closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
    assert!(fd > 2);
    let o = container(
        &img.path,
        &[],
        "grep -E 'CapEff|CapInh|CapAmb|NoNewPrivs' /proc/self/status; \
         cat /proc/kcore >/dev/null 2>&1 && echo kcore-readable; \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable; \
         cat /proc/1/exe >/dev/null 2>&1 && echo host-exe-readable; \
         mknod /tmp/disk b 7 0 2>/dev/null && head -c1 /tmp/disk >/dev/null 2>&1 && echo device-readable; \
         mknod /dev/disk b 7 0 2>/dev/null && head -c1 /dev/disk >/dev/null 2>&1 && echo device-readable; \
         ls /proc/self/fd",
    );
    // SAFETY: closing what we opened.
    unsafe { libc::close(fd) };
    let out = stdout(&o);
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    // Docker's default: set-id programs work (within the bounding set; tests/security.rs).
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(
        !out.contains("readable") && !out.contains("writable"),
        "{out}"
    );
    let fds: Vec<&str> = out.lines().skip(4).collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "only stdio (and ls's own folder fd): {out}"
    );
    // With the host's network, /sys is the host's: read-only all the way down.
    let o = container(
        &img.path,
        &["--net", "host"],
        "grep -c ' /sys' /proc/self/mountinfo; \
         awk '$5 ~ \"^/sys\" && $6 !~ /^ro/ {print \"writable\", $5}' /proc/self/mountinfo",
    );
    let out = stdout(&o);
    assert!(
        out.lines().next().is_some_and(|n| n != "0") && !out.contains("writable"),
        "{out}"
    );
    let o = container(
        &img.path,
        &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"],
        "grep CapEff /proc/self/status",
    );
    assert_eq!(stdout(&o), "CapEff:\t0000000000001000\n");
    // A manifest that does not parse is an error, not a run without the image's limits.
    let manifest = img.dir.path().join("busybox.json");
    let good = fs::read(&manifest).unwrap();
    fs::write(&manifest, "{broken").unwrap();
    let o = container(&img.path, &[], "true");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a rootpack manifest"),
        "{o:?}"
    );
    fs::write(&manifest, good).unwrap();
    wait_for_no_leaks(&img.path);
}

#[test]
fn hostile_images_cannot_mount_over_host_paths() {
    if !require_root() {
        return;
    }
    let mounts = mountinfo();
    for (link, target) in [
        ("/proc", "/"),
        ("/dev", "/etc"),
        ("/sys", "../../../../../sys"),
    ] {
        let extra = format!("\n[[symlink]]\npath = \"{link}\"\ntarget = \"{target}\"\n");
        // The recipe's own mount points would create real folders: drop that line.
        let text = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml"))
            .unwrap()
            .replace(
                "mountpoints = [\"/proc\", \"/sys\", \"/dev\", \"/tmp\", \"/run\", \"/root\"]",
                "",
            );
        let evil = image_from_recipe("busybox", &format!("{text}{extra}"));
        let image = evil.path.clone();
        let o = container(&image, &[], "echo escaped");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{link}: {err}");
        assert!(
            err.contains(link) && err.contains("symlink"),
            "{link}: {err}"
        );
        assert_eq!(stdout(&o), "");
        wait_for_no_leaks(&image);
    }
    assert_eq!(mountinfo(), mounts);
}

#[test]
fn twenty_in_parallel_and_fifty_in_a_row_leave_nothing() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let mounts = mountinfo();
    let children: Vec<_> = (0..20)
        .map(|i| {
            rootpack()
                .arg("run")
                .arg(&img.path)
                .args([
                    "--",
                    "sh",
                    "-c",
                    &format!("echo {i} > /tmp/me; sleep 0.2; cat /tmp/me"),
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "container {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            stdout(&o),
            format!("{i}\n"),
            "each container has its own overlay"
        );
    }
    for _ in 0..50 {
        assert!(container(&img.path, &[], "true").status.success());
    }
    wait_for_no_leaks(&img.path);
    assert_eq!(mountinfo(), mounts);
}

#[test]
fn kill_9_of_rootpack_leaves_nothing() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    // Changing ids (a user namespace's root, or --user with the command as PID 1) clears
    // the kernel's parent-death signal: each must still die with rootpack.
    for extra in [&[][..], &["--userns"], &["--no-init", "--user", "1000"]] {
        let mut child = rootpack()
            .arg("run")
            .args(extra)
            .arg(&img.path)
            .args(["--", "sleep", "987"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !leaks_now(&img.path).is_empty(),
            "{extra:?}: the container did not start"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        wait_for_no_leaks(&img.path);
        let deadline = Instant::now() + Duration::from_secs(5);
        let survivor = || {
            String::from_utf8(run(Command::new("ps").args(["-eo", "args"])).stdout)
                .unwrap()
                .lines()
                .any(|l| l == "sleep 987")
        };
        while survivor() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!survivor(), "{extra:?}: the command outlived rootpack");
    }
}

/// Loop devices backed by `image` right now (a running container has one).
fn leaks_now(image: &Path) -> Vec<String> {
    loop_devices(|b| b == image)
}

#[test]
fn terminals_get_a_pty_or_job_control() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let bin = env!("CARGO_BIN_EXE_rootpack");
    // `script` gives us a terminal to run under.
    let o = Command::new("script")
        .arg("-qec")
        .arg(format!(
            "{bin} run -t {} -- sh -c 'tty; exit 5'",
            img.path.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert!(
        stdout(&o).contains("/dev/pts/0"),
        "a pty of the container's devpts: {}",
        stdout(&o)
    );
    // Without -t, an interactive shell on our terminal gets job control.
    let mut child = Command::new("script")
        .arg("-qec")
        .arg(format!("{bin} run {} -- sh -i", img.path.display()))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"sleep 1 &\njobs\nexit 4\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(stdout(&o).contains("Running"), "{}", stdout(&o));
    // Ctrl-Z stops the command's group, which owns the terminal: it must go on rather
    // than leave the terminal to a stopped group.
    let o = Command::new("timeout")
        .arg("20")
        .arg("script")
        .arg("-qec")
        .arg(format!(
            "{bin} run {} -- sh -c 'kill -TSTP 0; echo resumed'",
            img.path.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(stdout(&o).contains("resumed"), "{o:?}");
    // Started in the background of an interactive shell, it leaves the shell its terminal.
    let o = Command::new("script")
        .arg("-qec")
        .arg(format!(
            "bash --norc -ic '{bin} run {} -- sleep 1 & sleep 0.5; \
             echo fg=$(ps -o tpgid= -p $$ | tr -d \" \") shell=$(ps -o pgid= -p $$ | tr -d \" \"); wait'",
            img.path.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let line = stdout(&o);
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).map(str::to_string))
    };
    assert!(
        field("fg=").is_some_and(|p| !p.is_empty()) && field("fg=") == field("shell="),
        "the terminal was taken: {line}"
    );
    wait_for_no_leaks(&img.path);
}

#[test]
fn user_namespace_maps_root_to_an_unprivileged_uid() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let child = rootpack()
        .arg("run")
        .arg("--userns")
        .arg(&img.path)
        .args(["--", "sh", "-c", "id -u; cat /proc/self/uid_map; stat -c %u /etc/passwd; touch /new && echo wrote; sleep 1.5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let ps = String::from_utf8(run(Command::new("ps").args(["-eo", "uid=,args="])).stdout).unwrap();
    let sleeper = ps
        .lines()
        .find(|l| l.contains("sleep 1.5") && !l.contains("sh -c"))
        .unwrap_or("");
    assert!(
        sleeper.trim_start().starts_with("100000 "),
        "outside, the command is uid 100000: {ps}"
    );
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "root inside");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
    assert_eq!(
        lines[2], "0",
        "the image's files belong to the container's root"
    );
    assert_eq!(lines[3], "wrote");
    // Unprivileged ICMP for every group the namespace maps (no more: the kernel refuses
    // an unmapped one).
    let o = container(
        &img.path,
        &["--userns"],
        "cat /proc/sys/net/ipv4/ping_group_range",
    );
    assert_eq!(stdout(&o), "0\t65535\n", "{o:?}");
    // With --writable, files the container's root writes are root's in the image.
    let o = container(
        &img.path,
        &["--userns", "--writable"],
        "echo x > /etc/from-userns",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = container(&img.path, &[], "stat -c %u /etc/from-userns");
    assert_eq!(stdout(&o), "0\n");
    wait_for_no_leaks(&img.path);
}

#[test]
fn the_recipe_sets_no_new_privileges_and_sysctls_and_the_command_line_wins() {
    if !require_root() {
        return;
    }
    let base = fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let config = |extra: &str| base.replace("[config]\n", &format!("[config]\n{extra}\n"));
    let img = image_from_recipe(
        "busybox",
        &config(
            "no_new_privileges = true\nsysctl = { \"kernel.shmmni\" = \"1000\", \
             \"net.ipv4.ping_group_range\" = \"0 0\" }",
        ),
    );
    let manifest = fs::read_to_string(img.dir.path().join("busybox.json")).unwrap();
    assert!(
        manifest.contains("\"no_new_privileges\": true"),
        "{manifest}"
    );
    let script = "grep NoNewPrivs /proc/self/status; \
                  cat /proc/sys/kernel/shmmni /proc/sys/net/ipv4/ping_group_range";
    let o = container(&img.path, &[], script);
    assert_eq!(stdout(&o), "NoNewPrivs:\t1\n1000\n0\t0\n", "{o:?}");
    let args = [
        "--security-opt",
        "no-new-privileges=false",
        "--sysctl",
        "kernel.shmmni=2000",
    ];
    let o = container(&img.path, &args, script);
    assert_eq!(stdout(&o), "NoNewPrivs:\t0\n2000\n0\t0\n", "{o:?}");
    // A key run would refuse is refused when the recipe is built, with its line.
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    fs::write(&recipe, config("sysctl = { \"vm.swappiness\" = \"1\" }")).unwrap();
    let o = rootpack()
        .args(["build", "-q", "--out"])
        .arg(dir.path())
        .arg(&recipe)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{o:?}");
    assert!(stderr(&o).contains("vm.swappiness"), "{o:?}");
    wait_for_no_leaks(&img.path);
}
