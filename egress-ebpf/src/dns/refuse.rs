//! Refusing a UDP query in place: the query turned around into a REFUSED
//! answer, and the checksum update for the words that changed.

use crate::parse::{Cursor, IPPROTO_UDP, Packet, Parsed, parse};
use crate::turn::swap_ends;

/// What [`refuse_in_place`] changed in the DNS header, for the UDP checksum.
pub struct Refused {
    /// Offset of the UDP checksum.
    pub csum_off: u32,
    /// The three 16-bit words that changed: (old, new).
    pub words: [(u16, u16); 3],
}

/// Turns the UDP query in `[start, end)` around in place into a REFUSED
/// answer: ends swapped ([`swap_ends`]), QR, RA and RCODE 5 set, answer and
/// authority counts zeroed. The caller fixes the UDP checksum for the
/// changed words.
#[inline(always)]
pub fn refuse_in_place(start: usize, end: usize) -> Option<Refused> {
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) || pkt.proto != IPPROTO_UDP {
        return None;
    }
    let l4 = pkt.l4_off as usize;
    let dns = pkt.payload_off as usize;
    let (ok_hdr, mut hdr) = cur.read_or(dns, [0u8; 12]);
    if !ok_hdr {
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
    if swap_ends(&cur, &pkt) && cur.write(dns, hdr) {
        Some(Refused { csum_off: (l4 + 6) as u32, words: [(old_flags, new_flags), (old_an, 0), (old_ns, 0)] })
    } else {
        None
    }
}
