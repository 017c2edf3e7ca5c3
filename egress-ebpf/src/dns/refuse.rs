//! Refusing a UDP query in place: the query turned around into a REFUSED
//! answer, and the checksum update for the words that changed.

use crate::parse::{Cursor, IPPROTO_UDP, Packet, Parsed, parse};

/// What [`refuse_in_place`] changed in the DNS header, for the UDP checksum.
pub struct Refused {
    /// Offset of the UDP checksum.
    pub csum_off: u32,
    /// The three 16-bit words that changed: (old, new).
    pub words: [(u16, u16); 3],
}

/// Turns the UDP query in `[start, end)` around in place into a REFUSED
/// answer: MACs, addresses and ports swapped (checksum-neutral), QR, RA and
/// RCODE 5 set, answer and authority counts zeroed. The caller fixes the
/// UDP checksum for the changed words. Every header is read and written
/// back whole at one offset, and every read has a defined value even past
/// the end, so the verifier can follow it.
#[inline(always)]
pub fn refuse_in_place(start: usize, end: usize) -> Option<Refused> {
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) || pkt.proto != IPPROTO_UDP {
        return None;
    }
    let l3 = pkt.l3_off as usize;
    let l4 = pkt.l4_off as usize;
    let dns = pkt.payload_off as usize;
    let (ok_mac, macs) = cur.read_or(0, [0u8; 12]);
    let (ok_udp, udp) = cur.read_or(l4, [0u8; 8]);
    let (ok_hdr, mut hdr) = cur.read_or(dns, [0u8; 12]);
    if !(ok_mac && ok_udp && ok_hdr) {
        return None;
    }
    let old_flags = u16::from_be_bytes([hdr[2], hdr[3]]);
    let new_flags = 0x8000 | (old_flags & 0x7900) | 0x0080 | 5;
    let old_an = u16::from_be_bytes([hdr[6], hdr[7]]);
    let old_ns = u16::from_be_bytes([hdr[8], hdr[9]]);
    hdr[2] = (new_flags >> 8) as u8;
    hdr[3] = new_flags as u8;
    hdr[6] = 0;
    hdr[7] = 0;
    hdr[8] = 0;
    hdr[9] = 0;
    let swapped_mac =
        [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]];
    let swapped_udp = [udp[2], udp[3], udp[0], udp[1], udp[4], udp[5], udp[6], udp[7]];
    let addrs_ok = if pkt.family == egress_common::FAMILY_V4 {
        let (ok, a) = cur.read_or(l3 + 12, [0u8; 8]);
        ok && cur.write(l3 + 12, [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]])
    } else {
        let (ok, a) = cur.read_or(l3 + 8, [0u8; 32]);
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&a[16..]);
        b[16..].copy_from_slice(&a[..16]);
        ok && cur.write(l3 + 8, b)
    };
    if addrs_ok && cur.write(0, swapped_mac) && cur.write(l4, swapped_udp) && cur.write(dns, hdr) {
        Some(Refused { csum_off: (l4 + 6) as u32, words: [(old_flags, new_flags), (old_an, 0), (old_ns, 0)] })
    } else {
        None
    }
}

/// One's-complement update of a UDP checksum for changed words (RFC 1624),
/// for XDP, where no checksum helper exists. A zero IPv4 UDP checksum
/// (none) stays zero, and a computed zero is sent as `0xffff`.
#[inline(always)]
pub fn csum_fold_words<const N: usize>(csum: u16, words: &[(u16, u16); N]) -> u16 {
    if csum == 0 {
        return 0;
    }
    let mut c = csum;
    for (old, new) in words {
        c = csum_replace16(c, *old, *new);
    }
    if c == 0 { 0xffff } else { c }
}

/// One's-complement update of a 16-bit checksum for one word changed from
/// `old` to `new` (RFC 1624, eqn. 3).
#[inline(always)]
pub fn csum_replace16(csum: u16, old: u16, new: u16) -> u16 {
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
