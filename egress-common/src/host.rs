//! Hosts on a LAN link: the addresses one link-layer address asked a
//! listed resolver from, so that a dual-stack host's IPv4 and IPv6
//! addresses share what either learned (contract: "a workload is a host").
//!
//! A host is a link-layer (MAC) address on a LAN interface. Its addresses
//! are the sources of the DNS queries it sent that the gateway recorded,
//! one IPv4 and up to [`HOST_V6_ADDRS`] IPv6 addresses. The datapath joins
//! a packet's source to its host only where the gateway's own routing and
//! neighbour tables agree (`egress-ebpf`'s `hosts` module): a source behind
//! a router is never one, and two IPv4 addresses from one MAC (ipvlan,
//! proxy ARP, a router's own address beside its clients') make it no host.

/// IPv6 addresses remembered per host (a stable and a temporary one).
pub const HOST_V6_ADDRS: usize = 2;
/// Hosts tracked at once (LRU).
pub const MAX_HOSTS: u32 = 65_536;

/// `HOSTS` key: a LAN interface and a link-layer address on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostKey {
    /// The interface the host's packets come in on.
    pub ifindex: u32,
    /// The Ethernet source address of its frames.
    pub mac: [u8; 6],
    pub _pad: [u8; 6],
}
crate::assert_size!(HostKey, 16);

/// `HOSTS` value: the addresses a host asked a resolver from, and when.
/// An address is fresh while it was seen within the live pack's
/// `dns.max_ttl` (the longest anything it learned lives).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostAddrs {
    /// IPv4-mapped; all zero when none.
    pub v4: [u8; 16],
    /// All zero when none.
    pub v6: [[u8; 16]; HOST_V6_ADDRS],
    /// When each address last asked (`bpf_ktime_get_coarse_ns`).
    pub v4_seen_ns: u64,
    pub v6_seen_ns: [u64; HOST_V6_ADDRS],
    /// Until when the link-layer address is taken for several hosts (a
    /// second IPv4 address, or a third IPv6 one, asked while the others
    /// were fresh): no address shares anything until then.
    pub shared_until_ns: u64,
}
crate::assert_size!(HostAddrs, 80);

crate::impl_pod!(HostKey, HostAddrs);
