//! The default private network, `rootpack`: a `rootpack0` bridge with host-local
//! addresses, masquerade for egress, `portmap` for `-p` and `firewall` for hosts whose
//! FORWARD policy drops. Its list is written under the state root at first use, with a
//! subnet that no route of the host covers yet.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::json;

use super::cni::NetworkList;

pub const NAME: &str = "rootpack";
pub const BRIDGE: &str = "rootpack0";

/// The list at `path`, written first if missing (the caller holds the state root's lock).
pub fn ensure(path: &Path, ipam_dir: &Path) -> Result<NetworkList, String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return NetworkList::parse(&text, path);
    }
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let subnet = free_subnet(&host_routes(&routes)).ok_or(
        "no free /16 for the rootpack network: every candidate in 10.99-10.254 and \
         172.20-172.31 overlaps a route of this host",
    )?;
    let list = default_list(subnet, ipam_dir);
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
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": format!("{subnet}/16"), "gateway": gateway.to_string()}]],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall", "backend": "iptables"}
        ]
    });
    NetworkList::from_json(&value).expect("the default network list is valid")
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
