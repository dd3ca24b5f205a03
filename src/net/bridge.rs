//! The default private network, `rootpack`: a `rootpack0` bridge with host-local
//! addresses and `portmap` for `-p`. Its list is written under the state root at first
//! use, with a subnet that no route of the host covers yet.
//!
//! Egress is the network's, not each container's: one masquerade rule for the subnet and
//! two FORWARD rules for the bridge (replies and published ports in, anything out, ahead
//! of a DROP policy such as Docker's), checked at each start and added once, as Docker
//! does for `docker0`. The bridge plugin's `ipMasq` and the `firewall` plugin would add
//! and remove rules per container instead, a dozen `iptables` runs each way, most of a
//! start's cost.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use super::cni::NetworkList;

pub const NAME: &str = "rootpack";
pub const BRIDGE: &str = "rootpack0";

/// The list at `path` under the state root `root`, written first if missing.
pub fn ensure(root: &Path, path: &Path) -> Result<NetworkList, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return NetworkList::parse(&text, path);
    }
    let _lock = super::lock(&root.join("lock"), true)?;
    if let Ok(text) = std::fs::read_to_string(path) {
        return NetworkList::parse(&text, path);
    }
    let ipam_dir = root.join("ipam");
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let subnet = free_subnet(&host_routes(&routes)).ok_or(
        "no free /16 for the rootpack network: every candidate in 10.99-10.254 and \
         172.20-172.31 overlaps a route of this host",
    )?;
    let list = default_list(subnet, &ipam_dir);
    let text = serde_json::to_string_pretty(&list.to_json()).unwrap_or_default();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    log::info!("network {NAME}: bridge {BRIDGE}, subnet {subnet}/16");
    Ok(list)
}

fn default_list(subnet: Ipv4Addr, ipam_dir: &Path) -> NetworkList {
    let [a, b, ..] = subnet.octets();
    let gateway = Ipv4Addr::new(a, b, 0, 1);
    let value = json!({
        "cniVersion": "1.0.0",
        "name": NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": format!("{subnet}/16"), "gateway": gateway.to_string()}]],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    NetworkList::from_json(&value).expect("the default network list is valid")
}

/// The list a container runs: without `portmap` when it publishes nothing (the plugin
/// would do nothing, at the cost of a run each way).
pub fn for_container(list: &NetworkList, publishes: bool) -> NetworkList {
    let mut list = list.clone();
    if !publishes {
        list.plugins
            .retain(|p| p.get("type").and_then(|t| t.as_str()) != Some("portmap"));
    }
    list
}

/// The network's own rules (see the module's notes), added where missing.
pub fn ensure_host_rules(list: &NetworkList) -> Result<(), String> {
    let bridge = &list.plugins[0];
    let name = bridge["bridge"].as_str().unwrap_or(BRIDGE);
    let subnet = bridge["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap_or_default();
    let comment = ["-m", "comment", "--comment", "rootpack network"];
    let rules: [(&str, &str, Vec<&str>); 3] = [
        (
            "nat",
            "POSTROUTING",
            [
                &["-s", subnet, "!", "-o", name][..],
                &comment,
                &["-j", "MASQUERADE"],
            ]
            .concat(),
        ),
        (
            "filter",
            "FORWARD",
            [
                &[
                    "-o",
                    name,
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "RELATED,ESTABLISHED,DNAT",
                ][..],
                &comment,
                &["-j", "ACCEPT"],
            ]
            .concat(),
        ),
        (
            "filter",
            "FORWARD",
            [&["-i", name][..], &comment, &["-j", "ACCEPT"]].concat(),
        ),
    ];
    for (table, chain, spec) in rules {
        let run = |op: &[&str]| {
            std::process::Command::new(super::iptables())
                .args(["-w", "-t", table])
                .args(op)
                .args(&spec)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .output()
        };
        let present = run(&["-C", chain]).is_ok_and(|o| o.status.success());
        if present {
            continue;
        }
        let added = run(&["-I", chain, "1"]).map_err(|e| format!("iptables: {e}"))?;
        if !added.status.success() {
            let err = String::from_utf8_lossy(&added.stderr);
            return Err(format!("iptables -t {table} -I {chain}: {}", err.trim()));
        }
    }
    Ok(())
}

/// The host's IPv4 routes as (network, mask), the default route left out.
fn host_routes(table: &str) -> Vec<(u32, u32)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc shows them in host byte order of a little-endian machine's memory.
            let (dst, mask) = (u32::from_be(dst.to_le()), u32::from_be(mask.to_le()));
            (mask != 0).then_some((dst & mask, mask))
        })
        .collect()
}

/// The first candidate /16 that overlaps none of `routes`.
fn free_subnet(routes: &[(u32, u32)]) -> Option<Ipv4Addr> {
    let candidates = (99..=254u8)
        .map(|b| Ipv4Addr::new(10, b, 0, 0))
        .chain((20..=31u8).map(|b| Ipv4Addr::new(172, b, 0, 0)));
    let ours = 0xffff_0000u32;
    candidates.into_iter().find(|c| {
        let net = u32::from(*c);
        routes.iter().all(|&(dst, mask)| {
            let common = mask & ours;
            dst & common != net & common
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_and_avoided() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000630A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            br0\t0000640A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = host_routes(table);
        assert_eq!(routes.len(), 2);
        assert_eq!(free_subnet(&routes), Some(Ipv4Addr::new(10, 101, 0, 0)));
        // A /8 covers every 10.x candidate.
        let wide = [(u32::from(Ipv4Addr::new(10, 0, 0, 0)), 0xff00_0000)];
        assert_eq!(free_subnet(&wide), Some(Ipv4Addr::new(172, 20, 0, 0)));
        assert_eq!(free_subnet(&[]), Some(Ipv4Addr::new(10, 99, 0, 0)));
    }
}
