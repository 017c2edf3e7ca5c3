//! Hosts on the LAN links (see `egress_common::host`): what a dual-stack
//! host's addresses of one family learned counts for its addresses of the
//! other.
//!
//! Noted ([`note_asker`]): each workload address a DNS answer teaches,
//! under the interface and destination MAC of the answer's frame, which the
//! gateway's own neighbour table chose.
//!
//! Used ([`sibling_groups`]): a new flow whose source learned nothing for
//! its destination takes what its host's addresses of the other family
//! learned, when the gateway's neighbour table gives that sibling this
//! frame's MAC and gives the packet's source this MAC too. A neighbour that
//! puts another host's MAC on its frames must also make the gateway send
//! its own address's packets to that MAC (where it does not receive them):
//! no cheaper than using that host's source address. A source the gateway
//! has no neighbour entry for yet (a host that learned the gateway's MAC
//! from a router advertisement never asked for it) is joined only for a TCP
//! segment without payload, which is not cached: the server's answer to
//! that SYN makes the gateway resolve the source, and the next segment is
//! judged with its entry.

use core::ffi::c_void;
use core::ptr::addr_of_mut;

use aya_ebpf::bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams};
use aya_ebpf::helpers::{bpf_fib_lookup, bpf_loop};
use egress_common::{FAMILY_V4, HOST_V6_ADDRS, HostAddrs, HostKey, LearnKey};

use crate::dns::scratch;
use crate::maps::{EGV6_HOSTS, EGV6_LEARNED};
use crate::parse::{FRAG_NONE, IPPROTO_TCP, Packet};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Where a packet came in: its program's context (for the routing
/// lookup), the interface and the frame's source MAC.
pub struct Link {
    pub ctx: *mut c_void,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl Link {
    /// The link of a frame read through `cur` (its source MAC at bytes
    /// 6..12), in a program with context `ctx` on interface `ifindex`.
    #[inline(always)]
    pub fn of_frame(ctx: *mut c_void, ifindex: u32, cur: &crate::parse::Cursor) -> Link {
        Link { ctx, ifindex, mac: cur.read_or(6, [0u8; 6]).1 }
    }
}

/// How the gateway's routing and neighbour tables place an address.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// On a link, its neighbour entry this frame's MAC.
    ThisMac,
    /// On a link, no neighbour entry yet.
    Unresolved,
    /// Behind a router, another MAC's, or not routable.
    Other,
}

/// The 16-byte address as two words, to compare without `memcmp`.
#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&a[..8]);
    lo.copy_from_slice(&a[8..]);
    (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo))
}

#[inline(always)]
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    words(a) == words(b)
}

#[inline(always)]
fn is_zero(a: &[u8; 16]) -> bool {
    words(a) == (0, 0)
}

/// Asks the gateway's routing for the route to `addr` as a packet from
/// `link` would take it, and its neighbour table for the next hop's MAC.
#[inline(always)]
fn owner(link: &Link, addr: &[u8; 16], family: u8) -> Owner {
    let Some(s) = scratch() else { return Owner::Other };
    let p = addr_of_mut!(s.fib);
    let v4 = family == FAMILY_V4;
    let dst = if v4 {
        [u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]), 0, 0, 0]
    } else {
        [
            u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
            u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
            u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
            u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
        ]
    };
    // SAFETY: the per-CPU scratch's own lookup parameters, written in place
    // (8 words: the kernel's `struct bpf_fib_lookup` is 64 bytes).
    let ret = unsafe {
        let w = p.cast::<u64>();
        for i in 0..core::mem::size_of::<FibParams>() / 8 {
            w.add(i).write_volatile(0);
        }
        (*p).family = if v4 { AF_INET } else { AF_INET6 };
        (*p).ifindex = link.ifindex;
        (*p).__bindgen_anon_4.ipv6_dst = dst;
        bpf_fib_lookup(link.ctx, p, core::mem::size_of::<FibParams>() as i32, 0)
    };
    // SAFETY: as above; the lookup wrote the next hop over the destination.
    let (hop, dmac) = unsafe { ((*p).__bindgen_anon_4.ipv6_dst, (*p).dmac) };
    let on_link = if v4 { hop[0] == dst[0] } else { hop == dst };
    if !on_link {
        return Owner::Other;
    }
    match ret as u32 {
        BPF_FIB_LKUP_RET_SUCCESS if dmac == link.mac => Owner::ThisMac,
        BPF_FIB_LKUP_RET_NO_NEIGH => Owner::Unresolved,
        _ => Owner::Other,
    }
}

#[inline(always)]
fn host_key(link: &Link) -> HostKey {
    HostKey { ifindex: link.ifindex, mac: link.mac, _pad: [0; 6] }
}

/// How long an address the host asked from stays its: the live pack's
/// `dns.max_ttl` (at least `min_ttl`), the longest what it learned lives.
#[inline(always)]
pub fn fresh_ns(min_ttl: u32, max_ttl: u32) -> u64 {
    u64::from(max_ttl.max(min_ttl)) * 1_000_000_000
}

/// Notes that the workload an answer just taught (`s.report`) is a host's
/// address: the host the gateway sends the answer to, by its own neighbour
/// table (the frame's destination MAC, `mac`), on interface `ifindex`. Run
/// as a `bpf_loop` callback: verified once, its frame its own.
#[inline(always)]
pub fn note_asker(ifindex: u32, mac: [u8; 6]) {
    let Some(s) = scratch() else { return };
    s.host.key = HostKey { ifindex, mac, _pad: [0; 6] };
    // SAFETY: the callback reads what was just written in the scratch.
    unsafe {
        bpf_loop(1, note_step as *mut c_void, core::ptr::null_mut(), 0);
    }
}

extern "C" fn note_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let key = s.host.key;
    let h = if let Some(h) = EGV6_HOSTS.get_ptr_mut(&key) {
        h
    } else {
        s.host.fresh = HostAddrs::default();
        let _ = EGV6_HOSTS.insert(&key, &s.host.fresh, 0);
        let Some(h) = EGV6_HOSTS.get_ptr_mut(&key) else { return 1 };
        h
    };
    // SAFETY: value pointer from a successful lookup; concurrent notes of
    // one host race harmlessly (one of them wins).
    let h = unsafe { &mut *h };
    let r = &s.report;
    let fresh = fresh_ns(r.min_ttl, r.max_ttl);
    if r.family == u32::from(FAMILY_V4) {
        note_v4(h, &r.workload, r.now, fresh);
    } else {
        note_v6(h, &r.workload, r.now, fresh);
    }
    1
}

/// A second IPv4 address while the first is fresh: the MAC is several
/// hosts' (ipvlan, proxy ARP) or a host's with two addresses.
#[inline(always)]
fn note_v4(h: &mut HostAddrs, addr: &[u8; 16], now: u64, fresh_ns: u64) {
    if same(&h.v4, addr) {
        h.v4_seen_ns = now;
        return;
    }
    if !is_zero(&h.v4) && now < h.v4_seen_ns.saturating_add(fresh_ns) {
        h.shared_until_ns = now + fresh_ns;
    }
    h.v4 = *addr;
    h.v4_seen_ns = now;
}

/// A third IPv6 address while two are fresh: as for IPv4.
#[inline(always)]
fn note_v6(h: &mut HostAddrs, addr: &[u8; 16], now: u64, fresh_ns: u64) {
    let mut free = HOST_V6_ADDRS;
    let mut oldest = 0;
    for i in 0..HOST_V6_ADDRS {
        if same(&h.v6[i], addr) {
            h.v6_seen_ns[i] = now;
            return;
        }
        if is_zero(&h.v6[i]) || now >= h.v6_seen_ns[i].saturating_add(fresh_ns) {
            free = i;
        }
        if h.v6_seen_ns[i] < h.v6_seen_ns[oldest & (HOST_V6_ADDRS - 1)] {
            oldest = i;
        }
    }
    let at = if free < HOST_V6_ADDRS {
        free
    } else {
        h.shared_until_ns = now + fresh_ns;
        oldest
    };
    h.v6[at & (HOST_V6_ADDRS - 1)] = *addr;
    h.v6_seen_ns[at & (HOST_V6_ADDRS - 1)] = now;
}

/// What a new flow's host learned for its destination from its addresses
/// of the other family.
pub struct Joined {
    /// The WebGroups learned.
    pub groups: u64,
    /// The packet's source has no neighbour entry yet: only a TCP segment
    /// without payload may pass on it, not cached.
    pub provisional: bool,
}

/// The WebGroups the host of `pkt` (by `link`) learned for `pkt.dst` from
/// its addresses of the other family, if the gateway's tables tie both
/// addresses to the frame's MAC.
#[inline(always)]
pub fn sibling_groups(link: &Link, pkt: &Packet, now: u64, fresh_ns: u64) -> Option<Joined> {
    // Keys are built in the scratch: the judge's stack has no room.
    let s = scratch()?;
    s.host.key = host_key(link);
    let h = EGV6_HOSTS.get_ptr(&s.host.key)?;
    // SAFETY: value pointer from a successful lookup.
    let h = unsafe { &*h };
    if now < h.shared_until_ns {
        return None;
    }
    let mut groups = 0;
    if pkt.family == FAMILY_V4 {
        for i in 0..HOST_V6_ADDRS {
            groups |= learned_by(link, &h.v6[i], h.v6_seen_ns[i], pkt, now, fresh_ns);
        }
    } else {
        groups = learned_by(link, &h.v4, h.v4_seen_ns, pkt, now, fresh_ns);
    }
    if groups == 0 {
        return None;
    }
    let provisional = match owner(link, &pkt.src, pkt.family) {
        Owner::ThisMac => false,
        // Not a fragment: a first fragment's later ones would follow its
        // verdict with any payload.
        Owner::Unresolved if pkt.proto == IPPROTO_TCP && pkt.frag == FRAG_NONE && pkt.payload_off == pkt.ip_end => true,
        _ => return None,
    };
    Some(Joined { groups, provisional })
}

/// What sibling `addr` (seen at `seen_ns`) learned for `pkt.dst`, if it is
/// fresh, unexpired and still this MAC's.
#[inline(always)]
fn learned_by(link: &Link, addr: &[u8; 16], seen_ns: u64, pkt: &Packet, now: u64, fresh_ns: u64) -> u64 {
    if is_zero(addr) || now >= seen_ns.saturating_add(fresh_ns) {
        return 0;
    }
    let Some(s) = scratch() else { return 0 };
    s.host.learn = LearnKey { workload: *addr, addr: pkt.dst };
    let Some(v) = EGV6_LEARNED.get_ptr(&s.host.learn) else { return 0 };
    // SAFETY: value pointer from a successful lookup.
    let v = unsafe { *v };
    let family = if pkt.family == FAMILY_V4 { egress_common::FAMILY_V6 } else { FAMILY_V4 };
    if v.expires_ns <= now || owner(link, addr, family) != Owner::ThisMac {
        return 0;
    }
    v.groups
}
