//! The DNS tunnel guard (`dns.tunnel_guard`): per workload and allowed
//! zone, the distinct names with a random-looking label it asked for in
//! the window ([`egress_common::guard`] says what counts); at
//! [`GUARD_THRESHOLD`] a suspected tunnel is counted and reported once, and
//! under enforce the workload's queries into that zone are refused for
//! [`GUARD_BLOCK_NS`].
//!
//! Each query's zone and random flag are noted while it is judged
//! ([`note`]); once the packet's queries are judged, they are weighed in a
//! `bpf_loop` callback ([`refuses`]), which the verifier checks once
//! whatever path of the query program reaches it.

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns, bpf_loop};
use egress_common::{
    DnsStat, FNV_OFFSET, GUARD_BLOCK_NS, GUARD_RECENT, GUARD_THRESHOLD, GUARD_WINDOW_NS, GuardState,
    TUNNEL_GUARD_ENFORCE,
};

use super::message::{scratch, stat};
use crate::maps::{EGV6_GUARD_SEED, EGV6_GUARDS};
use crate::parse::Packet;
use crate::scratch::{Scratch, vget, vset};

/// Starts a packet: no query noted, no zone found.
#[inline(always)]
pub fn start(s: &mut Scratch) {
    // SAFETY: volatile hand-over through the scratch.
    unsafe {
        vset(addr_of_mut!(s.guard.n), 0);
        vset(addr_of_mut!(s.scan.zone), 0);
        vset(addr_of_mut!(s.scan.random), 0);
    }
}

/// Notes the query just matched (the scan's zone, random flag and keyed
/// hash in `s`), with its name's length.
#[inline(always)]
pub fn note(s: &mut Scratch, len: usize) {
    let g = addr_of_mut!(s.guard);
    // SAFETY: volatile hand-over through the scratch; indexes masked.
    unsafe {
        let i = (vget(addr_of!((*g).n)) & 1) as usize;
        vset(addr_of_mut!((*g).zone[i]), vget(addr_of!(s.scan.zone)));
        vset(addr_of_mut!((*g).random[i]), vget(addr_of!(s.scan.random)));
        vset(addr_of_mut!((*g).hash[i]), vget(addr_of!(s.scan.keyed)));
        vset(addr_of_mut!((*g).len[i]), len as u64);
        vset(addr_of_mut!((*g).n), i as u64 + 1);
        // A later query whose name is not matched (its type refused first)
        // finds no zone here.
        vset(addr_of_mut!(s.scan.zone), 0);
        vset(addr_of_mut!(s.scan.random), 0);
    }
}

/// The secret seed of the guard's name hashes: drawn by the first query
/// that needs it and kept in the pinned `EGV6_GUARD_SEED`, so that it
/// survives agent restarts (CPUs racing to draw it can only make a name
/// count twice, once).
#[inline(always)]
pub fn seed() -> u64 {
    let Some(seed) = EGV6_GUARD_SEED.get_ptr_mut(0) else { return FNV_OFFSET };
    // SAFETY: value pointer from a successful lookup; helpers without
    // preconditions.
    unsafe {
        if *seed == 0 {
            *seed = (u64::from(bpf_get_prandom_u32()) << 32 | u64::from(bpf_get_prandom_u32())) | 1;
        }
        *seed
    }
}

/// Weighs the queries noted for `pkt` under `mode`: whether the packet is
/// refused.
#[inline(always)]
pub fn refuses(pkt: &Packet, mode: u8) -> bool {
    let Some(s) = scratch() else { return false };
    let g = addr_of_mut!(s.guard);
    let words = pkt.src.as_ptr().cast::<u64>();
    // SAFETY: volatile hand-over through the scratch; `pkt.src` is 16
    // bytes.
    unsafe {
        let n = vget(addr_of!((*g).n));
        if n == 0 {
            return false;
        }
        let to = addr_of_mut!((*g).key.workload).cast::<u64>();
        to.write_volatile(words.read_unaligned());
        to.add(1).write_volatile(words.add(1).read_unaligned());
        vset(addr_of_mut!((*g).family), u64::from(pkt.family));
        vset(addr_of_mut!((*g).mode), u64::from(mode));
        vset(addr_of_mut!((*g).refused), 0);
        vset(addr_of_mut!((*g).report_zone), 0);
        bpf_loop(n as u32 & 3, weigh_step as *mut c_void, core::ptr::null_mut(), 0);
        let zone = vget(addr_of!((*g).report_zone));
        if zone != 0 {
            vset(addr_of_mut!((*g).key.zone), zone as u32);
            let (len, distinct) = (vget(addr_of!((*g).report_len)), vget(addr_of!((*g).report_distinct)));
            crate::events::report_tunnel(pkt.family, s, len as usize, distinct as u32, mode);
        }
        vget(addr_of!((*g).refused)) != 0
    }
}

/// One noted query, `index`, weighed.
extern "C" fn weigh_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let i = (index & 1) as usize;
    let g = &mut s.guard;
    let zone = g.zone[i] as u32;
    if zone == 0 {
        return 0; // an exact name, or none: no zone to tunnel through
    }
    let random = g.random[i] != 0;
    g.key.zone = zone;
    g.key._pad = 0;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let enforce = g.mode == u64::from(TUNNEL_GUARD_ENFORCE);
    let st = match EGV6_GUARDS.get_ptr_mut(&g.key) {
        Some(st) => st,
        None if !random => return 0,
        None => {
            g.fresh = GuardState { window_start_ns: now, ..GuardState::default() };
            if EGV6_GUARDS.insert(&g.key, &g.fresh, 0).is_err() {
                return 0;
            }
            match EGV6_GUARDS.get_ptr_mut(&g.key) {
                Some(st) => st,
                None => return 0,
            }
        }
    };
    // SAFETY: value pointer from a successful lookup; updates race between
    // CPUs, which can only miscount a name or two.
    let st = unsafe { &mut *st };
    if !random {
        // Names that do not look random are never refused: the source
        // address is the workload's to choose, and a neighbour's forged
        // tunnel must not cut the neighbour off its zone.
        return 0;
    }
    if enforce && st.blocked_until_ns > now {
        stat(DnsStat::TunnelRefused);
        g.refused = 1;
        return 0;
    }
    if now.wrapping_sub(st.window_start_ns) > GUARD_WINDOW_NS {
        *st = GuardState { window_start_ns: now, ..GuardState::default() };
    }
    let h = (g.hash[i] as u32).max(1);
    let mut seen = false;
    for r in st.recent {
        seen |= r == h;
    }
    if seen {
        return 0; // asked again: not a new name
    }
    st.recent[st.distinct as usize % GUARD_RECENT] = h;
    st.distinct += 1;
    if st.distinct < GUARD_THRESHOLD {
        return 0;
    }
    if st.reported == 0 {
        st.reported = 1;
        stat(DnsStat::TunnelSuspected);
        // The sample name: the scratch holds the packet's last query's name.
        let last = g.n.wrapping_sub(1) == i as u64;
        g.report_len = if last { g.len[i] } else { 0 };
        g.report_distinct = u64::from(st.distinct);
        g.report_zone = u64::from(zone);
    }
    if enforce {
        st.blocked_until_ns = now + GUARD_BLOCK_NS;
        stat(DnsStat::TunnelRefused);
        s.guard.refused = 1;
    }
    0
}
