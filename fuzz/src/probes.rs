//! Packets to ask a pack about: addresses at the edges of and inside the
//! pack's own prefixes (where classification has its boundaries), and
//! others, drawn by a small deterministic generator seeded from the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::evaluate::Probe;
use egress_policy::model::{Destination, Pack};
use egress_policy::synth::Rng;
use ipnet::IpNet;

/// A generator seeded with a hash of `data`: a failing input replays
/// exactly.
pub fn rng_of(data: &[u8]) -> Rng {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Rng::new(h)
}

/// Every prefix the pack names: sources, destinations, resolvers, the
/// gateway's addresses.
pub fn prefixes(pack: &Pack) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = pack.smartgroups.values().flat_map(|g| g.cidrs.iter().copied()).collect();
    for rule in &pack.rules {
        for d in &rule.destinations {
            if let Destination::Cidrs(c) = d {
                out.extend(c.iter().copied());
            }
        }
    }
    out.extend(pack.dns.resolvers.iter().chain(&pack.gateway).map(|a| IpNet::from(*a)));
    out
}

/// An address of `net`: its first, its last, or one inside at random.
fn inside(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match (net, rng.below(3)) {
        (_, 0) => net.network(),
        (_, 1) => net.broadcast(),
        (IpNet::V4(n), _) => {
            let host = !u32::from(n.netmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | (rng.next_u64() as u32 & host)))
        }
        (IpNet::V6(n), _) => {
            let host = !u128::from(n.netmask());
            let r = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
            IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | (r & host)))
        }
    }
}

/// An address of the family (IPv4 if `v4`): mostly of a prefix the pack
/// names, else anywhere.
pub fn address(prefixes: &[IpNet], v4: bool, rng: &mut Rng) -> IpAddr {
    let family: Vec<&IpNet> = prefixes.iter().filter(|p| matches!(p, IpNet::V4(_)) == v4).collect();
    if !family.is_empty() && rng.chance(75) {
        return inside(family[rng.index(family.len())], rng);
    }
    if v4 {
        IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())))
    }
}

/// A packet: source and destination of one family, a protocol with or
/// without ports, a port the rules name or any.
pub fn probe(prefixes: &[IpNet], rng: &mut Rng) -> Probe {
    let v4 = rng.chance(50);
    let src = address(prefixes, v4, rng);
    let dst = address(prefixes, v4, rng);
    let proto = [6u8, 17, if v4 { 1 } else { 58 }, 47][rng.index(4)];
    let dport = [53u16, 80, 443, 22, 0, 65_535, 8443][rng.index(7)];
    let dport = if rng.chance(33) { rng.next_u64() as u16 } else { dport };
    Probe { src, dst, proto, dport }
}
