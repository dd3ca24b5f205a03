//! Networks: `--network private` with egress and /etc/hosts, `-p` publishing, `none` and
//! `host`, joined namespaces, and nothing left (iptables rules, veths, address leases,
//! pinned namespaces) after removal, a killed rootpack, or many containers at once.
//!
//! Every test runs in a network namespace of its own (`unshare --net`, `lo` up) with a
//! private mount namespace whose tmpfs holds the network state, so each bridge, address
//! and rule lives and dies with the test, and traffic goes only to 127.0.0.1 or to
//! addresses inside that namespace.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs `script` with bash in a fresh network and mount namespace, with `$RP` the binary,
/// `$IMG` the image, the helpers below, and `lo` up.
fn in_netns(image: &Path, script: &str) -> Output {
    let prelude = format!(
        r#"set -u
ip link set lo up
# A /run of the test's own: the state roots made in it leave nothing on the host's.
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0700 /run/rootpack-net /run/rootpack-containers
RP={rp}
IMG={img}
BB=/bin/busybox
# Whatever a failing script left running goes with it.
trap 'for c in $($RP ps -aq); do $RP rm -f $c >/dev/null 2>&1; done' EXIT
# What a removed container may not leave: its port rules, veths, leases, attachments.
leftovers() {{
    iptables-save -t nat | grep -E '^-A (CNI-DN|CNI-[0-9a-f]{{24}})' || true
    iptables-save -t filter | grep -E '^-A CNI-FORWARD .*-d 10\.' || true
    ip -o link show type veth || true
    find /run/rootpack-net/ipam -type f ! -name lock ! -name 'last_reserved_ip*' 2>/dev/null
    find /run/rootpack-net/attachments -mindepth 1 2>/dev/null
    grep rootpack-net /proc/self/mountinfo | grep -v ' /run/rootpack-net ' || true
}}
# Polls until nothing is left (a veth goes with its namespace, shortly after).
no_leftovers() {{
    for i in $(seq 50); do [ -z "$(leftovers)" ] && {{ echo CLEAN; return; }}; sleep 0.1; done
    echo "LEFT:"; leftovers
}}
"#,
        rp = rootpack().get_program().to_string_lossy(),
        img = image.display()
    );
    Command::new("unshare")
        .args(["--net", "--mount", "bash", "-c"])
        .arg(format!("{prelude}\n{script}"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn check(o: &Output, wanted: &[&str]) {
    let (out, err) = (stdout(o), stderr(o));
    for w in wanted {
        assert!(out.contains(w), "no {w:?} in:\n{out}\nstderr:\n{err}");
    }
    assert!(
        !out.contains("LEFT:"),
        "left behind:\n{out}\nstderr:\n{err}"
    );
}

#[test]
fn published_port_serves_and_goes_with_the_container() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = in_netns(
        &img.path,
        r#"
$RP run -d --name np-web -p 8080:80 -p 127.0.0.1:8081:80 $IMG sh -c \
    'mkdir -p /tmp/www && echo served-page > /tmp/www/index.html && exec busybox httpd -f -p 80 -h /tmp/www' >/dev/null
for i in $(seq 50); do timeout 2 $BB wget -q -O- http://127.0.0.1:8080/ 2>/dev/null && break; sleep 0.1; done
timeout 3 $BB wget -q -O- http://127.0.0.1:8081/ | sed 's/^/one-address:/'
GW=$(ip -4 -o addr show rootpack0 | awk '{print $4}' | cut -d/ -f1)
# -p 127.0.0.1:… binds one address: the bridge's side of the host does not answer.
timeout 3 $BB wget -q -O- http://$GW:8081/ >/dev/null 2>&1 || echo only-on-loopback
timeout 3 $BB wget -q -O- http://$GW:8080/ | sed 's/^/all-addresses:/'
$RP ps | grep np-web | grep -q 8080 && echo ps-shows-ports
$RP rm -f np-web >/dev/null
no_leftovers
"#,
    );
    check(
        &o,
        &[
            "served-page",
            "one-address:served-page",
            "only-on-loopback",
            "all-addresses:served-page",
            "ps-shows-ports",
            "CLEAN",
        ],
    );
}

#[test]
fn private_network_has_egress_hosts_and_neighbours() {
    if !require_root() {
        return;
    }
    // The image's resolv.conf is a link to systemd-resolved's stub file, as on Ubuntu: the
    // network's file is bound where it leads.
    let img = busybox_image(
        "[[symlink]]\npath = \"/etc/resolv.conf\"\ntarget = \"../run/systemd/resolve/stub-resolv.conf\"\n",
    );
    let o = in_netns(
        &img.path,
        r#"
# The first run makes the bridge; then a server on its host side, as the "outside".
$RP run -q --network private $IMG true
GW=$(ip -4 -o addr show rootpack0 | awk '{print $4}' | cut -d/ -f1)
mkdir -p /tmp/np-www.$$ && echo from-outside > /tmp/np-www.$$/index.html
$BB httpd -f -p $GW:9090 -h /tmp/np-www.$$ & SERVER=$!
sleep 0.2
$RP run -q --network private --hostname box $IMG sh -c \
    'busybox timeout 3 busybox wget -q -O- http://host.containers.internal:9090/; grep -q "	box" /etc/hosts && echo named; grep -q nameserver /etc/resolv.conf && test -L /etc/resolv.conf && echo resolv-through-link'
# Egress through masquerade: a server in a namespace beyond this one, which has no
# route back to the bridge's subnet, answers only if the container's address is rewritten.
ip netns add np-out
ip link add np-host type veth peer name np-peer netns np-out
ip addr add 198.18.0.1/24 dev np-host && ip link set np-host up
ip -n np-out addr add 198.18.0.2/24 dev np-peer && ip -n np-out link set np-peer up
mkdir -p /tmp/np-out.$$ && echo through-masquerade > /tmp/np-out.$$/index.html
ip netns exec np-out $BB httpd -f -p 198.18.0.2:9092 -h /tmp/np-out.$$ & OUT=$!
sleep 0.2
$RP run -q --network private $IMG busybox timeout 3 busybox wget -q -O- http://198.18.0.2:9092/
kill $OUT; wait $OUT 2>/dev/null; ip netns del np-out
# Two containers reach each other by address.
$RP run -d --name np-a --network private $IMG sh -c \
    'mkdir -p /w && echo neighbour > /w/index.html && exec busybox httpd -f -p 80 -h /w' >/dev/null
sleep 0.3
A=$($RP exec np-a sh -c "ip -4 -o addr show eth0" | awk '{print $4}' | cut -d/ -f1)
$RP run -q --network private $IMG busybox timeout 3 busybox wget -q -O- http://$A/
# none reaches nothing; host sees the namespace's interfaces.
$RP run -q --network none $IMG busybox timeout 1 busybox wget -q -O- http://$GW:9090/ >/dev/null 2>&1 || echo none-is-closed
$RP run -q --network host $IMG ip -o link | grep -q rootpack0 && echo host-sees-bridge
# container:ID joins np-a's namespace: its address answers on lo's neighbour.
$RP run -q --network container:np-a $IMG busybox timeout 3 busybox wget -q -O- http://127.0.0.1/ | sed 's/^/joined:/'
# Sysctls: Docker's ping range by default in a namespace of its own, net.* asked for;
# none in another container's namespace.
$RP run -q --network private --sysctl net.ipv4.ip_unprivileged_port_start=80 $IMG sh -c \
    'cat /proc/sys/net/ipv4/ping_group_range /proc/sys/net/ipv4/ip_unprivileged_port_start' | tr '\t\n' '  ' | sed 's/^/sysctls:/'; echo
$RP run -q --network container:np-a --sysctl net.ipv4.ip_forward=1 $IMG true 2>&1 | grep -q "another container" && echo joined-keeps-its-sysctls
$RP rm -f np-a >/dev/null
kill $SERVER
no_leftovers
"#,
    );
    check(
        &o,
        &[
            "from-outside",
            "through-masquerade",
            "named",
            "resolv-through-link",
            "neighbour",
            "none-is-closed",
            "host-sees-bridge",
            "joined:neighbour",
            "sysctls:0 2147483647 80 ",
            "joined-keeps-its-sysctls",
            "CLEAN",
        ],
    );
}

#[test]
fn killed_owners_and_many_at_once_leave_nothing() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let o = in_netns(
        &img.path,
        r#"
# A foreground run killed with SIGKILL: its watcher removes the network.
$RP run -q -p 8090:80 $IMG sleep 60 & FG=$!
for i in $(seq 50); do [ -n "$(ip -o link show type veth)" ] && break; sleep 0.1; done
kill -9 $FG
wait $FG 2>/dev/null
no_leftovers | sed 's/^/foreground:/'
# A detached container whose monitor is killed, then removed.
$RP run -d --name np-k -p 8091:80 $IMG sleep 60 >/dev/null
for i in $(seq 50); do [ -n "$(ip -o link show type veth)" ] && break; sleep 0.1; done
kill -9 $(cut -d' ' -f1 /run/rootpack-containers/*/monitor)
$RP rm -f np-k >/dev/null 2>&1
no_leftovers | sed 's/^/monitor:/'
# 20 containers with ports, started and removed in parallel.
for i in $(seq 20); do $RP run -d --name np-p$i -p $((9100+i)):80 $IMG sleep 60 >/dev/null & done
wait
echo "up: $($RP ps | grep -c np-p)"
for i in $(seq 20); do $RP rm -f np-p$i >/dev/null & done
wait
no_leftovers | sed 's/^/parallel:/'
"#,
    );
    check(
        &o,
        &[
            "foreground:CLEAN",
            "monitor:CLEAN",
            "up: 20",
            "parallel:CLEAN",
        ],
    );
}

#[test]
fn bad_network_input_is_one_line_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    for (args, wanted) in [
        (&["-p", "70000:80"][..], "host port 70000 is not in 1-65535"),
        (&["-p", "80"], "HOST:CONTAINER"),
        (&["-p", "abc"], "HOST:CONTAINER"),
        (&["--network", "container:np-missing"], "np-missing"),
        (&["--network", "ns:/nonexistent"], "ns:/nonexistent"),
        (&["--network", "nosuchnet"], "no network \"nosuchnet\""),
        (
            &["--network", "none", "-p", "1:1"],
            "--network none has none",
        ),
    ] {
        let o = rootpack()
            .arg("run")
            .args(args)
            .arg(&img.path)
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(err.contains(wanted), "{args:?}: {err}");
        // One line (clap's usage errors add a hint to --help after it).
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(wanted), "{args:?}: {err}");
        assert!(
            !err.contains("\n\n") || err.contains("--help"),
            "{args:?}: {err}"
        );
    }
    // A host port already taken: one line naming it, and nothing of the second start left.
    let o = in_netns(
        &img.path,
        r#"
$BB nc -l -p 8095 >/dev/null 2>&1 & NC=$!
sleep 0.2
$RP run -q -p 8095:80 $IMG true; echo "status $?"
kill $NC
no_leftovers
"#,
    );
    check(&o, &["status 125", "CLEAN"]);
    let err = stderr(&o);
    assert!(err.contains("port 8095/tcp is already in use"), "{err}");
}

#[test]
fn build_step_on_the_private_network() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    let busybox = std::fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let recipe = format!(
        r#"{busybox}
[[run]]
network = "private"
script = "busybox timeout 3 busybox wget -q -O /fetched http://host.containers.internal:9091/ && grep -q host.containers.internal /etc/hosts"

[output]
format = "dir"
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let recipe_path = dir.path().join("busybox.toml");
    std::fs::write(&recipe_path, recipe).unwrap();
    let out = dir.path().join("out");
    let o = in_netns(
        &img.path,
        &format!(
            r#"
$RP run -q --network private $IMG true
GW=$(ip -4 -o addr show rootpack0 | awk '{{print $4}}' | cut -d/ -f1)
mkdir -p /tmp/np-s.$$ && echo for-the-step > /tmp/np-s.$$/index.html
$BB httpd -f -p $GW:9091 -h /tmp/np-s.$$ & SERVER=$!
sleep 0.2
$RP build -q {recipe} --out {out} && cat $(find {out} -name fetched)
[ -n "$(find {out} -path '*/etc/hosts')" ] || echo no-hosts-left
kill $SERVER
no_leftovers
"#,
            recipe = recipe_path.display(),
            out = out.display(),
        ),
    );
    check(&o, &["for-the-step", "no-hosts-left", "CLEAN"]);
}

#[test]
fn rootless_private_network_publishes_through_slirp4netns() {
    if !require_root() {
        return;
    }
    // A folder image owned by the unprivileged user, in a folder it can reach.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let busybox = std::fs::read_to_string(Path::new(REPO).join("recipes/busybox.toml")).unwrap();
    let recipe = dir.path().join("busybox.toml");
    std::fs::write(&recipe, format!("{busybox}\n[output]\nformat = \"dir\"\n")).unwrap();
    let out = dir.path().join("out");
    run(rootpack()
        .args(["build", "-q"])
        .arg(&recipe)
        .arg("--out")
        .arg(&out));
    run(Command::new("chown").args(["-R", "65534:65534"]).arg(&out));
    let image = out.join("busybox");
    let o = in_netns(
        &image,
        r#"
cd /tmp
su -s /bin/sh nobody -c "XDG_RUNTIME_DIR= HOME=/tmp $RP run -d --name rl-web -p 8088:80 $IMG sh -c \
    'mkdir -p /tmp/w && echo rootless-page > /tmp/w/index.html && exec busybox httpd -f -p 80 -h /tmp/w'" >/dev/null
for i in $(seq 50); do timeout 2 $BB wget -q -O- http://127.0.0.1:8088/ 2>/dev/null && break; sleep 0.1; done
su -s /bin/sh nobody -c "XDG_RUNTIME_DIR= HOME=/tmp $RP run -q --network private $IMG ip -4 -o addr show tap0" | grep -q 10.0.2.100 && echo tap-address
su -s /bin/sh nobody -c "XDG_RUNTIME_DIR= HOME=/tmp $RP rm -f rl-web" >/dev/null
sleep 0.2
pgrep -x slirp4netns >/dev/null && echo LEFT: slirp4netns || echo CLEAN
"#,
    );
    check(&o, &["rootless-page", "tap-address", "CLEAN"]);
}

#[test]
fn a_users_own_network_by_name() {
    if !require_root() {
        return;
    }
    let img = busybox_image("");
    // /etc/cni/net.d comes with podman; a tmpfs over it in the test's mount namespace holds
    // the user's list, with the bridge plugin's own per-container masquerade, whose DEL
    // needs the pinned namespace.
    let o = in_netns(
        &img.path,
        r#"
mount -t tmpfs tmpfs /etc/cni/net.d
cat > /etc/cni/net.d/50-usernet.conflist <<'JSON'
{"cniVersion": "1.0.0", "name": "usernet", "plugins": [
  {"type": "bridge", "bridge": "usernet0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.123.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/rootpack-net/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
$RP run -d --name np-user --network usernet -p 8096:80 $IMG sh -c \
    'mkdir -p /w && echo user-network > /w/index.html && exec busybox httpd -f -p 80 -h /w' >/dev/null
for i in $(seq 50); do timeout 2 $BB wget -q -O- http://127.0.0.1:8096/ 2>/dev/null && break; sleep 0.1; done
$RP exec np-user ip -4 -o addr show eth0 | grep -q 'inet 10\.123\.0\.' && echo user-subnet
iptables-save -t nat | grep -q 'usernet' && echo masquerade-per-container
$RP rm -f np-user >/dev/null
no_leftovers
iptables-save -t nat | grep -q 'usernet' && echo LEFT: masquerade
"#,
    );
    check(
        &o,
        &[
            "user-network",
            "user-subnet",
            "masquerade-per-container",
            "CLEAN",
        ],
    );
}
