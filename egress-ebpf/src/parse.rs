//! Packet parsing through one bounds-checked helper ([`Cursor::read`]).
//!
//! Understands Ethernet with up to two 802.1Q/802.1ad tags, IPv4 (options,
//! fragments), IPv6 (extension headers, fragments), TCP, UDP, ICMP and
//! ICMPv6. Anything it cannot read whole is an error with a stable reason.

use egress_common::{FAMILY_V4, FAMILY_V6, Reason};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ_LEGACY: u16 = 0x9100;
const MAX_TAGS: usize = 2;
/// Extension headers walked before giving up (`TooManyExtHeaders`).
pub const MAX_EXT_HEADERS: usize = 8;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Fragment position of a packet.
pub const FRAG_NONE: u8 = 0;
/// The first fragment of a datagram: carries the L4 header.
pub const FRAG_FIRST: u8 = 1;
/// A later fragment: no L4 header.
pub const FRAG_LATER: u8 = 2;

/// What the parser learned of a packet. Eight-byte aligned, so that
/// clearing it in [`Packet::empty`] is one call to `memset` (the eBPF
/// backend calls it for any zeroing) rather than one per unaligned run.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Packet {
    /// `FAMILY_V4`, `FAMILY_V6`, or 0 while the source is not known.
    pub family: u8,
    /// L4 protocol (after IPv6 extension headers).
    pub proto: u8,
    /// `FRAG_*`.
    pub frag: u8,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
    /// Source and destination, IPv4-mapped for IPv4.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports in host order (0 without ports).
    pub sport: u16,
    pub dport: u16,
    /// Fragment identification.
    pub frag_id: u32,
    /// Protocol that keys fragments: the IPv4 protocol, or the next header
    /// of the IPv6 fragment header (the same in every fragment).
    pub frag_proto: u8,
    /// A later fragment's offset in 8-byte units. For a first fragment
    /// (whose offset is 0): how far its L4 header (TCP or UDP whole, 8
    /// bytes of any other) reaches into the datagram's fragmentable part
    /// (after the IPv4 header, or the IPv6 fragment header: extension
    /// headers after it are part of it), in 8-byte units rounded up; a
    /// later fragment that starts before that would overwrite it.
    pub frag_offset: u16,
    /// Offset of the L4 payload (after the TCP/UDP header), 0 if none.
    pub payload_off: u16,
    /// Offsets of the IP header and of the L4 header.
    pub l3_off: u16,
    pub l4_off: u16,
    /// Where the IP datagram ends (header length fields, not frame padding);
    /// for UDP (but a first fragment), where the UDP length says the
    /// datagram ends, or right after the UDP header when that length is
    /// short of the header or past the IP datagram's end.
    pub ip_end: u16,
}

impl Packet {
    /// A packet with nothing known yet.
    #[inline(always)]
    pub const fn empty() -> Self {
        Packet {
            family: 0,
            proto: 0,
            frag: FRAG_NONE,
            icmp_type: 0,
            src: [0; 16],
            dst: [0; 16],
            sport: 0,
            dport: 0,
            frag_id: 0,
            frag_proto: 0,
            frag_offset: 0,
            payload_off: 0,
            l3_off: 0,
            l4_off: 0,
            ip_end: 0,
        }
    }

    /// True when the L4 header was read (not a later fragment).
    #[inline(always)]
    pub fn has_l4(&self) -> bool {
        self.frag != FRAG_LATER
    }
}

/// Outcome of a successful parse.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// An IPv4 or IPv6 packet, filled into the `Packet`.
    Ip,
    /// Not IP (ARP, LLDP, ...).
    NotIp,
}

/// The one bounds-checked view of packet memory.
pub struct Cursor {
    start: usize,
    end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Cursor { start, end }
    }

    /// Copies a `T` at `offset`, or `Truncated` if the packet ends first.
    #[inline(always)]
    pub fn read<T: Copy>(&self, offset: usize) -> Result<T, Reason> {
        let size = core::mem::size_of::<T>();
        // Offsets stay below 64 KiB: masking bounds them for the verifier.
        let offset = offset & 0xffff;
        if self.start + offset + size > self.end {
            return Err(Reason::Truncated);
        }
        // SAFETY: [start+offset, start+offset+size) lies inside the packet.
        Ok(unsafe { core::ptr::read_unaligned((self.start + offset) as *const T) })
    }

    /// Like [`Cursor::read`], but the value is `default` when the packet
    /// ends first: always initialised, so the compiler cannot compute with
    /// an undefined value on the failure path (which the verifier rejects).
    #[inline(always)]
    pub fn read_or<T: Copy>(&self, offset: usize, default: T) -> (bool, T) {
        match self.read(offset) {
            Ok(v) => (true, v),
            Err(_) => (false, default),
        }
    }

    /// Writes a `T` at `offset` if it lies inside the packet.
    #[inline(always)]
    pub fn write<T: Copy>(&self, offset: usize, value: T) -> bool {
        let size = core::mem::size_of::<T>();
        let offset = offset & 0xffff;
        if self.start + offset + size > self.end {
            return false;
        }
        // SAFETY: [start+offset, start+offset+size) lies inside the packet,
        // which the program may write.
        unsafe { core::ptr::write_unaligned((self.start + offset) as *mut T, value) };
        true
    }

    #[inline(always)]
    fn be16_at(&self, offset: usize) -> Result<u16, Reason> {
        self.read::<[u8; 2]>(offset).map(u16::from_be_bytes)
    }
}

/// A quick look at the common case, before any map or full parse: for an
/// untagged IPv4 packet without options (not a later fragment) or IPv6
/// without extension headers that carries TCP or UDP, with the whole TCP
/// or UDP header in `cur`, its source and destination ports. `None` means
/// "parse it properly".
#[inline(always)]
pub fn quick_ports(cur: &Cursor) -> Option<(u16, u16)> {
    let (ok, head) = cur.read_or(0, [0u8; ETH_HLEN + 20]);
    if !ok {
        return None;
    }
    let ethertype = u16::from_be_bytes([head[12], head[13]]);
    let ip = &head[ETH_HLEN..];
    let (proto, l4) = if ethertype == ETH_P_IP {
        let later_fragment = (ip[6] & 0x1f) != 0 || ip[7] != 0;
        if ip[0] != 0x45 || later_fragment {
            return None;
        }
        (ip[9], ETH_HLEN + 20)
    } else if ethertype == ETH_P_IPV6 && ip[0] >> 4 == 6 {
        (ip[6], ETH_HLEN + 40)
    } else {
        return None;
    };
    let header = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    let (ok, ports) = cur.read_or(l4, [0u8; 4]);
    let (whole, _) = cur.read_or(l4 + header - 1, [0u8; 1]);
    (ok && whole).then(|| (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]])))
}

/// Parses the packet into `pkt`. On error, `pkt.family != 0` means the
/// addresses were read (the source is known).
#[inline(always)]
pub fn parse(cur: &Cursor, pkt: &mut Packet) -> Result<Parsed, Reason> {
    let mut ethertype = cur.be16_at(12)?;
    let mut off = ETH_HLEN;
    for _ in 0..MAX_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = cur.be16_at(off + 2)?;
        off += 4;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(cur, off, pkt),
        ETH_P_IPV6 => parse_ipv6(cur, off, pkt),
        ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_LEGACY => Err(Reason::UnknownTag),
        _ => Ok(Parsed::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(cur: &Cursor, off: usize, pkt: &mut Packet) -> Result<Parsed, Reason> {
    // Whole fixed header at once: single-byte reads make LLVM emit bounds
    // checks the verifier cannot follow.
    let hdr: [u8; 20] = cur.read(off)?;
    if hdr[0] >> 4 != 4 {
        return Err(Reason::BadIpHeader);
    }
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    pkt.family = FAMILY_V4;
    // The IPv4-mapped form (`egress_common::addr::ipv4_mapped`), written
    // in place: the first ten bytes are zero already (`Packet::empty`),
    // and a whole 16-byte form built first costs stack.
    pkt.src[10] = 0xff;
    pkt.src[11] = 0xff;
    pkt.src[12..16].copy_from_slice(&hdr[12..16]);
    pkt.dst[10] = 0xff;
    pkt.dst[11] = 0xff;
    pkt.dst[12..16].copy_from_slice(&hdr[16..20]);
    pkt.proto = hdr[9];
    if ihl < 20 {
        return Err(Reason::BadIpHeader);
    }
    let total_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    if total_len < ihl {
        return Err(Reason::BadIpHeader);
    }
    pkt.l3_off = off as u16;
    pkt.ip_end = ((off + total_len) & 0xffff) as u16;
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let more = frag & 0x2000 != 0;
    let offset = frag & 0x1fff;
    pkt.frag_id = u32::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    pkt.frag_proto = pkt.proto;
    pkt.frag_offset = offset;
    if offset != 0 {
        pkt.frag = FRAG_LATER;
        return Ok(Parsed::Ip);
    }
    if more {
        pkt.frag = FRAG_FIRST;
        // Where the fragmentable part starts, for `parse_l4`.
        pkt.frag_offset = ((off + ihl) & 0xffff) as u16;
    }
    parse_l4(cur, off + ihl, pkt)?;
    Ok(Parsed::Ip)
}

#[inline(always)]
fn parse_ipv6(cur: &Cursor, off: usize, pkt: &mut Packet) -> Result<Parsed, Reason> {
    let fixed: [u8; 8] = cur.read(off)?;
    if fixed[0] >> 4 != 6 {
        return Err(Reason::BadIpHeader);
    }
    let src: [u8; 16] = cur.read(off + 8)?;
    let dst: [u8; 16] = cur.read(off + 24)?;
    pkt.family = FAMILY_V6;
    pkt.src = src;
    pkt.dst = dst;
    pkt.l3_off = off as u16;
    pkt.ip_end = ((off + 40 + u16::from_be_bytes([fixed[4], fixed[5]]) as usize) & 0xffff) as u16;
    let mut next = fixed[6];
    let mut l4 = off + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options, mobility: (len+1)*8.
            0 | 43 | 60 | 135 => {
                let h: [u8; 2] = cur.read(l4)?;
                next = h[0];
                l4 += (h[1] as usize + 1) * 8;
            }
            // Authentication header: (len+2)*4.
            51 => {
                let h: [u8; 2] = cur.read(l4)?;
                next = h[0];
                l4 += (h[1] as usize + 2) * 4;
            }
            // Fragment header.
            44 => {
                let hdr: [u8; 8] = cur.read(l4)?;
                next = hdr[0];
                let frag = u16::from_be_bytes([hdr[2], hdr[3]]);
                pkt.frag_id = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
                pkt.frag_proto = next;
                pkt.frag_offset = frag >> 3;
                l4 += 8;
                if frag >> 3 != 0 {
                    pkt.proto = next;
                    pkt.frag = FRAG_LATER;
                    return Ok(Parsed::Ip);
                }
                if frag & 1 != 0 {
                    pkt.frag = FRAG_FIRST;
                    // Where the fragmentable part starts, for `parse_l4`.
                    pkt.frag_offset = (l4 & 0xffff) as u16;
                }
            }
            _ => {
                pkt.proto = next;
                parse_l4(cur, l4, pkt)?;
                return Ok(Parsed::Ip);
            }
        }
    }
    Err(Reason::TooManyExtHeaders)
}

#[inline(always)]
fn parse_l4(cur: &Cursor, off: usize, pkt: &mut Packet) -> Result<(), Reason> {
    pkt.l4_off = (off & 0xffff) as u16;
    let mut header_end = off + 8;
    match pkt.proto {
        IPPROTO_TCP => {
            // The whole fixed header, so a tiny first fragment cannot hide flags.
            let hdr: [u8; 20] = cur.read(off)?;
            pkt.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            header_end = off + ((hdr[12] >> 4) as usize) * 4;
            pkt.payload_off = (header_end & 0xffff) as u16;
        }
        IPPROTO_UDP => {
            let hdr: [u8; 8] = cur.read(off)?;
            pkt.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            pkt.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            pkt.payload_off = ((off + 8) & 0xffff) as u16;
            // The datagram is what its length says (the receiver trims the
            // rest, or drops it if that is more than there is): the DNS
            // readers read no byte the receiver would not. A first
            // fragment's length counts the later fragments too.
            let udp_end = off + usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
            if pkt.frag != FRAG_FIRST && udp_end != usize::from(pkt.ip_end) {
                let end = if udp_end < usize::from(pkt.ip_end) && udp_end >= off + 8 { udp_end } else { off + 8 };
                pkt.ip_end = (end & 0xffff) as u16;
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let hdr: [u8; 4] = cur.read(off)?;
            pkt.icmp_type = hdr[0];
        }
        _ => {}
    }
    if pkt.frag == FRAG_FIRST {
        // The caller left where the fragmentable part starts here.
        let start = usize::from(pkt.frag_offset);
        pkt.frag_offset = ((header_end.wrapping_sub(start) + 7) >> 3 & 0x1fff) as u16;
    }
    Ok(())
}
