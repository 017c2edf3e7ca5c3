//! The reference reader of plain packets: Ethernet, then IPv4 (any header
//! length, not a fragment) or IPv6 with no extension header, then a whole
//! TCP, UDP or ICMP header, or another protocol. Such a packet has exactly
//! one verdict, the compiled pack's for (source, destination, protocol,
//! destination port); anything else (VLAN tags, fragments, extension
//! headers, truncation, special-purpose addresses) is left alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a plain packet is to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plain {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// 0 for protocols without ports.
    pub dport: u16,
    /// Where the L4 payload starts and ends in the frame.
    pub payload: (usize, usize),
}

/// IPv6 next-header values that are extension headers (or no next header).
const IPV6_EXTENSIONS: [u8; 11] = [0, 43, 44, 50, 51, 59, 60, 135, 139, 140, 253];

/// Addresses the datapath passes or treats apart from the rules (link-local
/// control, multicast, loopback, unspecified): not plain.
fn ordinary(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            !(v.is_link_local() || v.is_multicast() || v.is_broadcast() || v.is_loopback() || v.octets()[0] == 0)
        }
        IpAddr::V6(v) => !(v.is_unicast_link_local() || v.is_multicast() || v.is_loopback() || v.is_unspecified()),
    }
}

/// The frame as a plain packet, if it is one.
pub fn plain(f: &[u8]) -> Option<Plain> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (src, dst, proto, l4, end) = match ethertype {
        0x0800 => {
            let h = f.get(14..34)?;
            let ihl = usize::from(h[0] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if h[0] >> 4 != 4 || ihl < 20 || total < ihl || 14 + total > f.len() || frag & 0x3fff != 0 {
                return None;
            }
            let a = |i: usize| IpAddr::V4(Ipv4Addr::new(h[i], h[i + 1], h[i + 2], h[i + 3]));
            (a(12), a(16), h[9], 14 + ihl, 14 + total)
        }
        0x86dd => {
            let h = f.get(14..54)?;
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if h[0] >> 4 != 6 || 54 + payload > f.len() || IPV6_EXTENSIONS.contains(&h[6]) {
                return None;
            }
            let a = |i: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&h[i..i + 16]).expect("16 bytes")));
            (a(8), a(24), h[6], 54, 54 + payload)
        }
        _ => return None,
    };
    if src.is_ipv4() != dst.is_ipv4() || !ordinary(src) || !ordinary(dst) {
        return None;
    }
    let header = match proto {
        6 => usize::from(*f.get(l4 + 12)? >> 4) * 4,
        17 | 1 | 58 => 8,
        _ => 0,
    };
    if (proto == 6 && header < 20) || l4 + header > end {
        return None;
    }
    let dport = if matches!(proto, 6 | 17) { u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]) } else { 0 };
    Some(Plain { src, dst, proto, dport, payload: (l4 + header, end) })
}
