//! Turning a packet around in place, towards the host that sent it: the
//! REFUSED answer to a refused query (`dns::refuse_in_place`) and the reset
//! of a connection denied by its name ([`reset_in_place`]) both swap the
//! packet's ends and fix the checksum for the words they changed.

use egress_common::FAMILY_V4;

use crate::parse::{Cursor, IPPROTO_TCP, Packet, Parsed, parse};

/// Swaps the packet's MAC addresses, IP addresses and L4 ports in place
/// (all checksum-neutral). Every header is read and written back whole at
/// one offset, and every read has a defined value even past the end, so
/// the verifier can follow it.
#[inline(always)]
pub fn swap_ends(cur: &Cursor, pkt: &Packet) -> bool {
    let (l3, l4) = (pkt.l3_off as usize, pkt.l4_off as usize);
    let (ok_mac, macs) = cur.read_or(0, [0u8; 12]);
    let (ok_ports, ports) = cur.read_or(l4, [0u8; 4]);
    if !(ok_mac && ok_ports) {
        return false;
    }
    let swapped_mac =
        [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]];
    let addrs_ok = if pkt.family == FAMILY_V4 {
        let (ok, a) = cur.read_or(l3 + 12, [0u8; 8]);
        ok && cur.write(l3 + 12, [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]])
    } else {
        let (ok, a) = cur.read_or(l3 + 8, [0u8; 32]);
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&a[16..]);
        b[16..].copy_from_slice(&a[..16]);
        ok && cur.write(l3 + 8, b)
    };
    addrs_ok && cur.write(0, swapped_mac) && cur.write(l4, [ports[2], ports[3], ports[0], ports[1]])
}

/// One's-complement update of a 16-bit checksum for changed words
/// (RFC 1624), for XDP, where no checksum helper exists. A zero checksum
/// (an IPv4 UDP datagram without one) stays zero.
#[inline(always)]
pub fn csum_fold_words(csum: u16, words: &[(u16, u16)]) -> u16 {
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

/// The reset to send for a TCP segment denied by its flow's name: its
/// sequence number is the segment's acknowledgement (what the workload
/// expects next), its acknowledgement the segment's end.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ResetAt {
    pub seq: u32,
    pub ack: u32,
}

impl ResetAt {
    /// The reset answering a segment with sequence number `seq`,
    /// acknowledgement `ack` and `payload` bytes.
    #[inline(always)]
    pub const fn answering(seq: u32, ack: u32, payload: u32) -> Self {
        ResetAt { seq: ack, ack: seq.wrapping_add(payload) }
    }
}

/// What [`reset_in_place`] changed in the TCP header, for its checksum.
pub struct Reset {
    /// Offset of the TCP checksum.
    pub csum_off: u32,
    /// The 16-bit words that changed: (old, new).
    pub words: [(u16, u16); 5],
}

/// TCP flags of the reset: RST and ACK.
const RST_ACK: u8 = 0x14;

/// Parses the packet under `cur` into `pkt`: if a TCP segment, its TCP
/// header's offset (masked for the verifier).
#[inline(always)]
fn tcp_header(cur: &Cursor, pkt: &mut Packet) -> Option<usize> {
    if parse(cur, pkt) != Ok(Parsed::Ip) || pkt.proto != IPPROTO_TCP {
        return None;
    }
    let l4 = pkt.l4_off as usize;
    if l4 >= 1024 {
        return None;
    }
    Some(l4 & 1023)
}

/// Makes the TCP segment in `[start, end)` a reset of the server's side as
/// it stands: same ends, same numbers (its sequence number is the next the
/// server expects: the reader lets only in-order bytes through), flags
/// RST|ACK; the one header word that changed, for the checksum.
#[inline(always)]
pub fn reset_flags(start: usize, end: usize) -> Option<Reset1> {
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    let l4 = tcp_header(&cur, &mut pkt)?;
    let (ok, mut word) = cur.read_or(l4 + 12, [0u8; 2]);
    if !ok {
        return None;
    }
    let old = u16::from_be_bytes(word);
    word[1] = RST_ACK;
    if !cur.write(l4 + 12, word) {
        return None;
    }
    Some(Reset1 { csum_off: (l4 + 16) as u32, old, new: u16::from_be_bytes(word) })
}

/// What [`reset_flags`] changed: one 16-bit word, for the checksum.
pub struct Reset1 {
    pub csum_off: u32,
    pub old: u16,
    pub new: u16,
}

/// Turns the TCP segment in `[start, end)` around in place into a reset of
/// the workload's side (RFC 9293 3.10.7.4: in window, acknowledged): ends
/// swapped, sequence and acknowledgement numbers from `at`, flags RST|ACK.
/// The payload stays (a reset's payload is never read); the caller fixes
/// the TCP checksum for the changed words.
#[inline(always)]
pub fn reset_in_place(start: usize, end: usize, at: ResetAt) -> Option<Reset> {
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    let l4 = tcp_header(&cur, &mut pkt)?;
    // The header from its start (ports included), so that every access
    // below is covered by this one bounds check for the verifier.
    let (ok, mut tcp) = cur.read_or(l4, [0u8; 14]);
    if !ok || !swap_ends(&cur, &pkt) {
        return None;
    }
    let word = |b: &[u8; 14], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let old = [word(&tcp, 4), word(&tcp, 6), word(&tcp, 8), word(&tcp, 10), word(&tcp, 12)];
    tcp[4..8].copy_from_slice(&at.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&at.ack.to_be_bytes());
    tcp[13] = RST_ACK;
    let new = [word(&tcp, 4), word(&tcp, 6), word(&tcp, 8), word(&tcp, 10), word(&tcp, 12)];
    // The ports as `swap_ends` left them.
    let (ok, ports) = cur.read_or(l4, [0u8; 4]);
    tcp[..4].copy_from_slice(&ports);
    if !ok || !cur.write(l4, tcp) {
        return None;
    }
    Some(Reset {
        csum_off: (l4 + 16) as u32,
        words: [(old[0], new[0]), (old[1], new[1]), (old[2], new[2]), (old[3], new[3]), (old[4], new[4])],
    })
}
