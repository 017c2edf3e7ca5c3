//! The reference reader of DNS answers, with `hickory-proto`'s decoder for
//! the header, names (compression included) and fixed fields: what an
//! answer may teach. It reads what learning reads — the header, the one
//! question, every record the answer count announces (owner, type, class,
//! TTL, data length, data) — and not the authority and additional
//! sections or the data of types learning ignores. An address is learned
//! from an answer only if this reader takes the message as a response to
//! the question asked, every announced answer record whole, and finds the
//! address in an A or AAAA record among them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Header, MessageType, Query};
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// The addresses of the A and AAAA records of `payload`'s answer section,
/// if it is a response to one question for `qname`, read whole.
fn answer_addresses(payload: &[u8], qname: &str) -> Option<Vec<IpAddr>> {
    let mut d = BinDecoder::new(payload);
    let header = Header::read(&mut d).ok()?;
    if header.message_type() != MessageType::Response || header.query_count() != 1 {
        return None;
    }
    let q = Query::read(&mut d).ok()?;
    let asked = q.name().to_ascii();
    if !asked.trim_end_matches('.').eq_ignore_ascii_case(qname.trim_end_matches('.')) {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..header.answer_count() {
        Name::read(&mut d).ok()?;
        let rtype = d.read_u16().ok()?.unverified();
        let _class = d.read_u16().ok()?.unverified();
        let _ttl = d.read_u32().ok()?.unverified();
        let len = d.read_u16().ok()?.unverified();
        let data = d.read_slice(usize::from(len)).ok()?.unverified();
        match (rtype, data.len()) {
            (1, 4) => out.push(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
            (28, 16) => out.push(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
            _ => {}
        }
    }
    Some(out)
}

/// Whether `payload` (a DNS message over UDP) is a response to a question
/// for `qname` that gives `addr` in its answer section.
pub fn answer_gives(payload: &[u8], qname: &str, addr: IpAddr) -> bool {
    answer_addresses(payload, qname).is_some_and(|a| a.contains(&addr))
}

/// The DNS message of a UDP frame as its receiver reads it: Ethernet, then
/// IPv4 or IPv6 (a whole datagram, or a first fragment, IPv6's fragment
/// header included), then UDP, the message ending where the UDP length
/// says (within the datagram), or with a first fragment's end.
pub fn udp_message(f: &[u8]) -> Option<&[u8]> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let (l4, end, first_fragment) = match ethertype {
        0x0800 => {
            let h = f.get(14..34)?;
            let ihl = usize::from(h[0] & 0xf) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let frag = u16::from_be_bytes([h[6], h[7]]);
            if h[0] >> 4 != 4 || ihl < 20 || total < ihl || 14 + total > f.len() || frag & 0x1fff != 0 || h[9] != 17 {
                return None;
            }
            (14 + ihl, 14 + total, frag & 0x2000 != 0)
        }
        0x86dd => {
            let h = f.get(14..54)?;
            let end = 54 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if h[0] >> 4 != 6 || end > f.len() {
                return None;
            }
            match h[6] {
                17 => (54, end, false),
                44 => {
                    let frag = f.get(54..62)?;
                    let offset = u16::from_be_bytes([frag[2], frag[3]]);
                    if frag[0] != 17 || offset >> 3 != 0 {
                        return None;
                    }
                    (62, end, offset & 1 != 0)
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    let udp = f.get(l4..l4 + 8)?;
    let udp_end = l4 + usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let end = match () {
        () if first_fragment => end,
        () if udp_end >= l4 + 8 && udp_end <= end => udp_end,
        () => return None,
    };
    f.get(l4 + 8..end)
}

/// Whether the frame's IP header says the datagram is longer than the
/// frame: its receiver drops it, so no workload reads what it says. (The
/// answer program does not look at the packet's length: such a datagram
/// can teach, which is harmless, since only the resolver's side sends
/// answers and nothing reaches the workload. The invariant leaves it out.)
pub fn ip_cut_short(f: &[u8]) -> bool {
    match (f.get(12..14), f.get(14..20)) {
        (Some([0x08, 0x00]), Some(h)) => 14 + usize::from(u16::from_be_bytes([h[2], h[3]])) > f.len(),
        (Some([0x86, 0xdd]), Some(h)) => 54 + usize::from(u16::from_be_bytes([h[4], h[5]])) > f.len(),
        _ => false,
    }
}
