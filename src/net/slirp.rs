//! The private network without root: `slirp4netns`, as rootless podman uses it. It runs as
//! the caller, joins the container's user and network namespaces through its pid, gives
//! it `tap0` on 10.0.2.0/24 (gateway 10.0.2.2, a DNS forwarder on 10.0.2.3 that asks the
//! host's resolvers, loopback ones included), and ends when the pipe rootpack holds
//! closes, so a killed rootpack leaves no slirp4netns behind. Published ports go through
//! its API socket.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::io::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::ports::PortMapping;

/// The container's address, and slirp4netns' DNS forwarder.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 2, 3));

/// A running slirp4netns: it ends when this is dropped (its exit pipe closes).
pub struct Slirp {
    child: Child,
    exit: Option<OwnedFd>,
}

impl Drop for Slirp {
    fn drop(&mut self) {
        drop(self.exit.take());
        let _ = self.child.wait();
    }
}

/// Starts slirp4netns for the container `pid`, waits until `tap0` is configured, and
/// publishes `ports` through its API socket in `dir`.
pub fn start(pid: i32, dir: &Path, ports: &[PortMapping]) -> Result<Slirp, String> {
    let program = find().ok_or("slirp4netns is not installed: install slirp4netns")?;
    let (exit_r, exit_w) = crate::fsutil::pipe().map_err(|e| format!("a pipe: {e}"))?;
    let (ready_r, ready_w) = crate::fsutil::pipe().map_err(|e| format!("a pipe: {e}"))?;
    let socket = dir.join("slirp4netns.sock");
    let (exit_fd, ready_fd) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
    let mut command = Command::new(&program);
    command
        .args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .arg(format!("--exit-fd={exit_fd}"))
        .arg(format!("--ready-fd={ready_fd}"))
        .arg("--api-socket")
        .arg(&socket)
        .arg(pid.to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only clears close-on-exec on two fds the child is given.
    unsafe {
        command.pre_exec(move || {
            for fd in [exit_fd, ready_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    drop((exit_r, ready_w));
    // From here, a failure drops it: the exit pipe closes and slirp4netns is reaped.
    let mut slirp = Slirp {
        child,
        exit: Some(exit_w),
    };
    let mut byte = [0u8; 1];
    let ready = std::fs::File::from(ready_r).read(&mut byte).unwrap_or(0);
    if ready != 1 {
        let mut err = String::new();
        if let Some(mut e) = slirp.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!(
            "slirp4netns failed: {}",
            err.trim().replace('\n', "; ")
        ));
    }
    for port in ports {
        add_forward(&socket, port)?;
    }
    Ok(slirp)
}

fn find() -> Option<std::path::PathBuf> {
    [
        "/usr/bin/slirp4netns",
        "/usr/local/bin/slirp4netns",
        "/bin/slirp4netns",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

/// One `add_hostfwd` request; slirp4netns refuses a port in use with an error.
fn add_forward(socket: &Path, port: &PortMapping) -> Result<(), String> {
    let host_addr = port
        .host_ip
        .map_or("0.0.0.0".to_string(), |ip| ip.to_string());
    let request = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": port.protocol.name(),
            "host_addr": host_addr,
            "host_port": port.host_port,
            "guest_addr": ADDRESS.to_string(),
            "guest_port": port.container_port,
        }
    });
    let talk = || -> std::io::Result<String> {
        let mut stream = UnixStream::connect(socket)?;
        stream.write_all(request.to_string().as_bytes())?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    let reply = talk().map_err(|e| format!("-p {port}: slirp4netns' API: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
    if let Some(err) = value.get("error") {
        let desc = err["desc"].as_str().unwrap_or("refused");
        let in_use = desc.contains("bind") || desc.contains("in use");
        return Err(match in_use {
            true => format!(
                "-p {port}: port {}/{} is already in use on {host_addr}",
                port.host_port,
                port.protocol.name()
            ),
            false => format!("-p {port}: slirp4netns: {desc}"),
        });
    }
    Ok(())
}
