//! Crafts Ethernet frames for `BPF_PROG_TEST_RUN`: VLAN tags, IPv4 with
//! options and fragments, IPv6 with extension headers and fragments, TCP,
//! UDP, ICMP, `ICMPv6`, and truncation anywhere.

use std::net::IpAddr;

/// The L4 part of a crafted packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP for IPv4, `ICMPv6` for IPv6.
    Icmp {
        kind: u8,
    },
    /// Any other protocol number with an opaque payload.
    Raw {
        proto: u8,
    },
}

/// An IPv6 extension header to insert before the L4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    HopByHop,
    Routing,
    DestOpts,
    /// Fragment header: offset in 8-byte units, more-fragments flag, id.
    Fragment {
        offset: u16,
        more: bool,
        id: u32,
    },
}

/// A packet to craft.
#[derive(Debug, Clone)]
pub struct Spec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    /// VLAN TPIDs, outermost first (0x8100, 0x88a8, or anything to test).
    pub tags: Vec<u16>,
    /// IPv4 options (padded to 4 bytes).
    pub ipv4_options: Vec<u8>,
    /// IPv4 fragment: offset in 8-byte units, more-fragments flag, id.
    pub ipv4_frag: Option<(u16, bool, u16)>,
    pub ipv6_ext: Vec<Ext>,
    /// Cut the frame to this many bytes.
    pub truncate: Option<usize>,
    /// Override the Ethernet type (after tags).
    pub ethertype: Option<u16>,
    /// Payload bytes after the L4 header (`0xab` filler), unless
    /// `payload_bytes` is set.
    pub payload: usize,
    /// The exact payload after the L4 header; replaces the filler (and
    /// `payload` is then ignored). The UDP length covers it.
    pub payload_bytes: Option<Vec<u8>>,
    /// TCP flags byte; by default SYN, or PSH|ACK when `payload_bytes` is set.
    pub tcp_flags: Option<u8>,
}

impl Spec {
    /// A TCP packet with nothing odd about it.
    pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Spec::new(src, dst, L4::Tcp { sport, dport })
    }

    /// A UDP packet.
    pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Self {
        Spec::new(src, dst, L4::Udp { sport, dport })
    }

    /// An ICMP echo request (`ICMPv6` for IPv6).
    pub fn ping(src: IpAddr, dst: IpAddr) -> Self {
        let kind = if src.is_ipv4() { 8 } else { 128 };
        Spec::new(src, dst, L4::Icmp { kind })
    }

    /// A packet with the given L4 part.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        Spec {
            src,
            dst,
            l4,
            tags: Vec::new(),
            ipv4_options: Vec::new(),
            ipv4_frag: None,
            ipv6_ext: Vec::new(),
            truncate: None,
            ethertype: None,
            payload: 16,
            payload_bytes: None,
            tcp_flags: None,
        }
    }

    /// The same packet carrying exactly `bytes` after the L4 header (a TCP
    /// segment then has PSH|ACK set instead of SYN, unless `tcp_flags` says
    /// otherwise).
    #[must_use]
    pub fn with_payload(mut self, bytes: Vec<u8>) -> Self {
        self.payload_bytes = Some(bytes);
        self
    }

    /// The bytes after the L4 header.
    fn payload_data(&self) -> Vec<u8> {
        match &self.payload_bytes {
            Some(b) => b.clone(),
            None => vec![0xab; self.payload],
        }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let (ip, ethertype) = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (self.ipv4(s.octets(), d.octets(), &l4), 0x0800u16),
            (IpAddr::V6(s), IpAddr::V6(d)) => (self.ipv6(s.octets(), d.octets(), &l4), 0x86dd),
            _ => panic!("source and destination of one family"),
        };
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        let mut types: Vec<u16> = self.tags.clone();
        types.push(self.ethertype.unwrap_or(ethertype));
        for (i, t) in types.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            if i + 1 < types.len() {
                f.extend_from_slice(&(100 + i as u16).to_be_bytes()); // TCI
            }
        }
        f.extend_from_slice(&ip);
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        f
    }

    fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } => {
                if self.src.is_ipv4() {
                    1
                } else {
                    58
                }
            }
            L4::Raw { proto } => proto,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let payload = self.payload_data();
        let mut b = match self.l4 {
            L4::Tcp { sport, dport } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[12] = 5 << 4;
                let default = if self.payload_bytes.is_some() { 0x18 } else { 0x02 }; // PSH|ACK, SYN
                h[13] = self.tcp_flags.unwrap_or(default);
                h
            }
            L4::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                h
            }
            L4::Icmp { kind } => vec![kind, 0, 0, 0, 0, 1, 0, 1],
            L4::Raw { .. } => Vec::new(),
        };
        b.extend_from_slice(&payload);
        b
    }

    fn ipv4(&self, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut opts = self.ipv4_options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let ihl = 20 + opts.len();
        let mut h = vec![0u8; 20];
        h[0] = 0x40 | (ihl / 4) as u8;
        h[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        if let Some((offset, more, id)) = self.ipv4_frag {
            h[4..6].copy_from_slice(&id.to_be_bytes());
            let v = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&v.to_be_bytes());
        }
        h[8] = 64;
        h[9] = self.proto();
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        h.extend_from_slice(&opts);
        let frag_later = self.ipv4_frag.is_some_and(|(off, _, _)| off != 0);
        if frag_later {
            h.extend(std::iter::repeat_n(0xcd, 24));
        } else {
            h.extend_from_slice(l4);
        }
        h
    }

    fn ipv6(&self, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
        let codes: Vec<u8> = self
            .ipv6_ext
            .iter()
            .map(|e| match e {
                Ext::HopByHop => 0,
                Ext::Routing => 43,
                Ext::DestOpts => 60,
                Ext::Fragment { .. } => 44,
            })
            .chain(std::iter::once(self.proto()))
            .collect();
        let mut body = Vec::new();
        let mut later = false;
        for (i, e) in self.ipv6_ext.iter().enumerate() {
            let next = codes[i + 1];
            match e {
                Ext::Fragment { offset, more, id } => {
                    body.extend_from_slice(&[next, 0]);
                    let v = (offset << 3) | u16::from(*more);
                    body.extend_from_slice(&v.to_be_bytes());
                    body.extend_from_slice(&id.to_be_bytes());
                    later |= *offset != 0;
                }
                _ => body.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
            }
        }
        if later {
            body.extend(std::iter::repeat_n(0xcd, 24));
        } else {
            body.extend_from_slice(l4);
        }
        let mut h = vec![0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
        h[6] = codes[0];
        h[7] = 64;
        h[8..24].copy_from_slice(&src);
        h[24..40].copy_from_slice(&dst);
        h.extend_from_slice(&body);
        h
    }
}

/// The TCP or UDP checksum a frame should carry (untagged, IPv4 without
/// options or IPv6 without extension headers), whatever its checksum
/// field holds now; and where that field is.
///
/// # Panics
/// On any other frame.
#[must_use]
pub fn l4_checksum(frame: &[u8]) -> (usize, u16) {
    let v4 = u16::from_be_bytes([frame[12], frame[13]]) == 0x0800;
    let (l4, proto, mut pseudo) = if v4 {
        assert_eq!(frame[14], 0x45, "IPv4 without options");
        (14 + 20, frame[14 + 9], frame[14 + 12..14 + 20].to_vec())
    } else {
        (14 + 40, frame[14 + 6], frame[14 + 8..14 + 40].to_vec())
    };
    let field = l4
        + if proto == 17 {
            6
        } else if proto == 6 {
            16
        } else {
            panic!("TCP or UDP")
        };
    let mut seg = frame[l4..].to_vec();
    seg[field - l4] = 0;
    seg[field - l4 + 1] = 0;
    pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    let mut acc = 0u32;
    for bytes in [&pseudo, &seg] {
        for pair in bytes.chunks(2) {
            acc += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let c = !(acc as u16);
    (field, if c == 0 && proto == 17 { 0xffff } else { c })
}

/// The frame with its TCP or UDP checksum set (see [`l4_checksum`]).
#[must_use]
pub fn with_l4_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    let (at, c) = l4_checksum(&frame);
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    frame
}

/// The Ethernet frame of a TCP or UDP probe (source port [`PROBE_SPORT`](egress_policy::synth::PROBE_SPORT)).
pub fn probe_frame(p: &egress_policy::evaluate::Probe) -> Vec<u8> {
    match p.proto {
        17 => Spec::udp(p.src, p.dst, egress_policy::synth::PROBE_SPORT, p.dport).build(),
        6 => Spec::tcp(p.src, p.dst, egress_policy::synth::PROBE_SPORT, p.dport).build(),
        other => panic!("probe_frame: protocol {other} is not TCP or UDP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn udp_payload_replaces_filler_and_sets_length() {
        let body = vec![1, 2, 3, 4, 5];
        let f = Spec::udp(ip("10.0.0.1"), ip("10.0.0.2"), 1000, 53).with_payload(body.clone()).build();
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(&f[14 + 2..14 + 4], &(20u16 + 8 + 5).to_be_bytes(), "IPv4 total length");
        assert_eq!(&f[14 + 20 + 4..14 + 20 + 6], &13u16.to_be_bytes(), "UDP length");
        assert_eq!(&f[14 + 20 + 8..], &body[..]);
        let f6 = Spec::udp(ip("fd00::1"), ip("fd00::2"), 1000, 53).with_payload(vec![]).build();
        assert_eq!(f6.len(), 14 + 40 + 8);
        assert_eq!(&f6[14 + 4..14 + 6], &8u16.to_be_bytes(), "IPv6 payload length");
        assert_eq!(&f6[14 + 40 + 4..14 + 40 + 6], &8u16.to_be_bytes(), "UDP length of an empty datagram");
    }

    #[test]
    fn tcp_flags_follow_the_payload() {
        let syn = Spec::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 1000, 443).build();
        assert_eq!(syn[14 + 20 + 13], 0x02);
        assert_eq!(syn.len(), 14 + 20 + 20 + 16, "default filler kept");
        let data = Spec::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 1000, 53).with_payload(vec![9; 7]).build();
        assert_eq!(data[14 + 20 + 13], 0x18);
        assert_eq!(&data[14 + 40..], &[9; 7]);
        let mut fin = Spec::tcp(ip("10.0.0.1"), ip("10.0.0.2"), 1000, 53).with_payload(vec![9]);
        fin.tcp_flags = Some(0x11);
        assert_eq!(fin.build()[14 + 20 + 13], 0x11);
    }
}
