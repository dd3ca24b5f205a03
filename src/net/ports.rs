//! Published ports: `-p [IP:]HOST:CONTAINER[/tcp|udp]`, as Docker reads it, and the host
//! side of each held open for the container's life, so a port already in use is refused
//! up front and no other program takes it meanwhile (the CNI `portmap` plugin only adds
//! NAT rules, which would not notice).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::io::OwnedFd;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `-p`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `None`: all of them.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ip = match self.host_ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(ip) => ip.to_string(),
            None => "0.0.0.0".into(),
        };
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.name()
        )
    }
}

impl std::str::FromStr for PortMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("-p {text:?}: {why}");
        let (rest, protocol) = match text.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some((_, other)) => return Err(bad(&format!("protocol {other:?}: tcp or udp"))),
            None => (text, Protocol::Tcp),
        };
        let (host_ip, ports) = split_address(rest).map_err(|e| bad(&e))?;
        let Some((host, container)) = ports.split_once(':') else {
            return Err(bad(
                "give the host port too, as HOST:CONTAINER (rootpack picks no port for you)",
            ));
        };
        let port = |p: &str, which: &str| -> Result<u16, String> {
            match p.parse::<u32>() {
                Ok(n @ 1..=65535) => Ok(n as u16),
                Ok(n) => Err(bad(&format!("{which} port {n} is not in 1-65535"))),
                Err(_) => Err(bad(&format!("{which} port {p:?} is not a number"))),
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(host, "host")?,
            container_port: port(container, "container")?,
            protocol,
        })
    }
}

/// `IP:HOST:CONTAINER` → (IP, "HOST:CONTAINER"); an IPv6 address goes in brackets.
fn split_address(text: &str) -> Result<(Option<IpAddr>, &str), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (ip, ports) = rest
            .split_once("]:")
            .ok_or("an IPv6 address in brackets is followed by :HOST:CONTAINER")?;
        let ip = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an address"))?;
        return Ok((Some(ip), ports));
    }
    match text.matches(':').count() {
        0 | 1 => Ok((None, text)),
        2 => {
            let (ip, ports) = text.split_once(':').unwrap_or_default();
            if ip.is_empty() {
                return Ok((None, ports));
            }
            let ip = ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IP address"))?;
            Ok((Some(ip), ports))
        }
        _ => Err("more than IP:HOST:CONTAINER".into()),
    }
}

/// The host side of each mapping, bound (not listening) so the port stays ours; closed
/// with the container.
pub fn reserve(ports: &[PortMapping]) -> Result<Vec<OwnedFd>, String> {
    let mut held = Vec::new();
    for p in ports {
        let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, p.host_port);
        let fd = bind_only(addr, p.protocol);
        match fd {
            Ok(fd) => held.push(fd),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(format!(
                    "-p {p}: port {}/{} is already in use on {ip}",
                    p.host_port,
                    p.protocol.name()
                ));
            }
            Err(e) => return Err(format!("-p {p}: binding {addr}: {e}")),
        }
    }
    Ok(held)
}

/// A socket bound to `addr` and nothing more: a TCP one does not listen, so nothing
/// connects to it while NAT sends the port's traffic to the container.
fn bind_only(addr: SocketAddr, protocol: Protocol) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let kind = match protocol {
        Protocol::Tcp => SocketType::STREAM,
        Protocol::Udp => SocketType::DGRAM,
    };
    let fd = rustix::net::socket_with(family, kind, SocketFlags::CLOEXEC, None)?;
    // No SO_REUSEADDR: with it, a server binding the port later would be let in too.
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PortMapping, String> {
        s.parse()
    }

    #[test]
    fn docker_forms() {
        let p = parse("8080:80").unwrap();
        assert_eq!((p.host_ip, p.host_port, p.container_port), (None, 8080, 80));
        assert_eq!(p.protocol, Protocol::Tcp);
        let p = parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.protocol, Protocol::Udp);
        let p = parse("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(parse(":53:53/udp").unwrap().host_ip, None);
        assert_eq!(
            parse("1.2.3.4:1:2").unwrap().to_string(),
            "1.2.3.4:1->2/tcp"
        );
    }

    #[test]
    fn bad_ones_say_what() {
        assert!(
            parse("70000:80")
                .unwrap_err()
                .contains("70000 is not in 1-65535")
        );
        assert!(parse("80").unwrap_err().contains("HOST:CONTAINER"));
        assert!(parse("abc").unwrap_err().contains("HOST:CONTAINER"));
        assert!(
            parse("abc:80")
                .unwrap_err()
                .contains("\"abc\" is not a number")
        );
        assert!(parse("0:80").unwrap_err().contains("0 is not in"));
        assert!(parse("80:80/sctp").unwrap_err().contains("tcp or udp"));
        assert!(
            parse("x.y:80:80")
                .unwrap_err()
                .contains("not an IP address")
        );
    }
}
