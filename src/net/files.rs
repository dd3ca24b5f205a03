//! The container's `/etc/resolv.conf` and `/etc/hosts` on a private network, as Docker
//! writes them: the host's resolvers without the loopback ones (a stub such as
//! systemd-resolved's 127.0.0.53 is not reachable from another network namespace), and
//! a hosts file naming the container and the host.

use std::net::IpAddr;

/// Docker's fallback when the host has no resolver a container can reach.
const FALLBACK_RESOLVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// Where systemd-resolved lists the upstream servers behind its stub.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// The resolv.conf for a container on a bridge: the host's, with loopback nameservers
/// replaced by systemd-resolved's upstream ones, or by Docker's fallback.
pub fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = std::fs::read_to_string(RESOLVED_UPSTREAM).unwrap_or_default();
    resolv_conf_from(&host, &upstream)
}

fn resolv_conf_from(host: &str, upstream: &str) -> String {
    let reachable = |text: &str| -> Vec<String> {
        nameservers(text)
            .filter(|ip| !ip.is_loopback())
            .map(|ip| ip.to_string())
            .collect()
    };
    let mut servers = reachable(host);
    if servers.is_empty() {
        servers = reachable(upstream);
    }
    if servers.is_empty() {
        servers = FALLBACK_RESOLVERS.iter().map(|s| s.to_string()).collect();
    }
    let mut out: String = host
        .lines()
        .filter(|l| l.starts_with("search ") || l.starts_with("options "))
        .map(|l| format!("{l}\n"))
        .collect();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    out
}

/// A resolv.conf naming one server (slirp4netns' forwarder).
pub fn resolv_conf_with(server: IpAddr) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out: String = host
        .lines()
        .filter(|l| l.starts_with("search "))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("nameserver {server}\n"));
    out
}

fn nameservers(text: &str) -> impl Iterator<Item = IpAddr> + '_ {
    text.lines().filter_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.split('%').next()?.parse().ok())
            .flatten()
    })
}

/// The hosts file: localhost, the container's own address under its names, and the
/// host's side of the network as `host.containers.internal` (podman's name).
pub fn hosts(address: Option<IpAddr>, names: &[&str], host_side: Option<IpAddr>) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut names: Vec<&str> = names.iter().copied().filter(|n| !n.is_empty()).collect();
    names.dedup();
    if let Some(ip) = address {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    } else if !names.is_empty() {
        out.push_str(&format!("127.0.1.1\t{}\n", names.join(" ")));
    }
    if let Some(ip) = host_side {
        out.push_str(&format!(
            "{ip}\thost.containers.internal host.rootpack.internal\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_stub_gives_way_to_upstream() {
        let host = "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let up = "nameserver 192.0.2.1\nnameserver fe80::1%eth0\n";
        assert_eq!(
            resolv_conf_from(host, up),
            "options edns0 trust-ad\nsearch lan\nnameserver 192.0.2.1\nnameserver fe80::1\n"
        );
        assert_eq!(
            resolv_conf_from("nameserver ::1\n", ""),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(
            resolv_conf_from("nameserver 198.51.100.7\n", up),
            "nameserver 198.51.100.7\n"
        );
    }

    #[test]
    fn hosts_names_container_and_host() {
        let ip = "10.99.0.2".parse().ok();
        let gw = "10.99.0.1".parse().ok();
        let text = hosts(ip, &["web", "web"], gw);
        assert!(text.contains("10.99.0.2\tweb\n"), "{text}");
        assert!(
            text.contains("10.99.0.1\thost.containers.internal"),
            "{text}"
        );
    }
}
