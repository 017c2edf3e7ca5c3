//! First-match classification of a new flow (see `egress_common::pack` for
//! the lookup scheme), and whether its decision can change with its name
//! (contract section "Connection names").

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_loop};
use aya_ebpf::maps::lpm_trie::Key;
use egress_common::{
    ClassDestKey, ClassWebGroupKey, DECISION_UNCOVERED, FAMILY_V4, LearnKey, NO_RULE, NO_X, NamedRules,
    PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_UDP, SLOT_FLAG_NAMES, SLOT_FLAG_WEBGROUPS, SlotMeta, SourcePortKey,
    UNCOVERED_DENY,
};

use crate::hosts::{self, Link};
use crate::maps::{EGV6_LEARNED, SLOT0, SLOT1, Slot};
use crate::parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet};

/// A new flow's first decision, and what its second one needs.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Classified {
    /// The deciding rule's index, or `DECISION_UNCOVERED`.
    pub rule: u32,
    /// The flow's combined class (meaningful when `needs_name`).
    pub x: u32,
    /// The rule by address alone, WebGroups left out (`(x, d)` or x's default).
    pub address_rule: u32,
    /// The WebGroups the destination was learned for (by this workload, unexpired).
    pub learned: u64,
    /// Whether the second decision, by address and name, can differ from
    /// the first: a TCP flow whose name must be read.
    pub needs_name: bool,
    /// Decided with what the source's host learned from another address
    /// whose neighbour entry the gateway has not resolved yet: not to be
    /// cached (see [`crate::hosts`]).
    pub provisional: bool,
}

impl Classified {
    #[inline(always)]
    const fn just(rule: u32) -> Self {
        Classified { rule, x: 0, address_rule: rule, learned: 0, needs_name: false, provisional: false }
    }
}

#[inline(always)]
pub fn src_class(slot: &Slot, pkt: &Packet) -> Option<u32> {
    if pkt.family == FAMILY_V4 {
        let key = Key::new(32, [pkt.src[12], pkt.src[13], pkt.src[14], pkt.src[15]]);
        slot.src4.get(&key).copied()
    } else {
        slot.src6.get(&Key::new(128, pkt.src)).copied()
    }
}

#[inline(always)]
fn dst_class(slot: &Slot, pkt: &Packet) -> u32 {
    let found = if pkt.family == FAMILY_V4 {
        let key = Key::new(32, [pkt.dst[12], pkt.dst[13], pkt.dst[14], pkt.dst[15]]);
        slot.dst4.get(&key)
    } else {
        slot.dst6.get(&Key::new(128, pkt.dst))
    };
    found.copied().unwrap_or(0)
}

#[inline(always)]
fn port_index(pkt: &Packet) -> u32 {
    let icmp = if pkt.family == FAMILY_V4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    match pkt.proto {
        IPPROTO_TCP => u32::from(pkt.dport),
        IPPROTO_UDP => PORT_INDEX_UDP + u32::from(pkt.dport),
        p if p == icmp => PORT_INDEX_ICMP,
        _ => PORT_INDEX_OTHER,
    }
}

/// The WebGroups a destination was learned for, walked one bit per
/// `bpf_loop` step: the first rule of `x` naming any of them (`rule`), and
/// the first that matches even without a covered name (`nameless`).
#[repr(C)]
struct GroupWalk {
    groups: u64,
    x: u32,
    rule: u32,
    nameless: u32,
    slot: u32,
}

extern "C" fn group_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the GroupWalk on the caller's stack.
    let w = unsafe { &mut *ctx.cast::<GroupWalk>() };
    let Some((_, r)) = next_entry(&mut w.groups, w.slot, w.x) else { return 1 };
    if let Some(r) = r {
        if r.both < w.rule {
            w.rule = r.both;
        }
        if r.learned_only < w.nameless {
            w.nameless = r.learned_only;
        }
    }
    0
}

/// Takes the lowest WebGroup bit out of `groups` (`None` when none is
/// left) with x's `XW` entry for it in slot `slot_idx`, if it has one.
#[inline(always)]
fn next_entry(groups: &mut u64, slot_idx: u32, x: u32) -> Option<(u32, Option<NamedRules>)> {
    if *groups == 0 {
        return None;
    }
    let bit = groups.trailing_zeros();
    *groups &= *groups - 1;
    let slot = if slot_idx == 0 { &SLOT0 } else { &SLOT1 };
    // SAFETY: value pointer from a successful lookup, copied out at once.
    let entry = slot.xw.get_ptr(ClassWebGroupKey { x_class: x, group: bit }).map(|r| unsafe { *r });
    Some((bit, entry))
}

/// The first rule of combined class `x` for destination class `dst`: the
/// `(x, d)` entry, else x's default; `implicit-deny` for [`NO_X`].
#[inline(always)]
fn address_rule(slot: &Slot, meta: &SlotMeta, x: u32, dst: u32) -> u32 {
    if x == NO_X {
        return meta.implicit_rule;
    }
    match slot.xd.get_ptr(ClassDestKey { x_class: x, dst_class: dst }) {
        // SAFETY: value pointer from a successful lookup.
        Some(r) => unsafe { *r },
        None => match slot.defaults.get(x) {
            Some(r) => *r,
            None => meta.implicit_rule,
        },
    }
}

/// First-match classification of the packet's flow.
#[inline(always)]
pub fn classify(slot_idx: u32, slot: &Slot, meta: &SlotMeta, pkt: &Packet, link: &Link) -> Classified {
    let src = match src_class(slot, pkt) {
        Some(class) => class,
        None if meta.any_source != 0 => 0,
        // `uncovered: deny`: the rule after `implicit-deny`, `uncovered-source`.
        None if meta.uncovered == UNCOVERED_DENY => return Classified::just(meta.implicit_rule + 1),
        None => return Classified::just(DECISION_UNCOVERED),
    };
    let port = match slot.ports.get(port_index(pkt)) {
        Some(class) => *class,
        None => return Classified::just(meta.implicit_rule),
    };
    let x = match slot.sp.get_ptr(SourcePortKey { src_class: src, port_class: port }) {
        // SAFETY: value pointer from a successful lookup.
        Some(x) => unsafe { *x },
        // A port class the source's rules do not pick out: its default.
        None => slot.src_default.get(src).copied().unwrap_or(NO_X),
    };
    let dst = dst_class(slot, pkt);
    // The rules of any source that name no WebGroup, by port class alone;
    // the earlier of the two rules decides.
    let wild = slot.wild.get(port).copied().unwrap_or(NO_X);
    let wild_rule = address_rule(slot, meta, wild, dst);
    if x == NO_X {
        return Classified::just(wild_rule);
    }
    let address_rule = address_rule(slot, meta, x, dst).min(wild_rule);
    let mut out = Classified { rule: address_rule, x, address_rule, learned: 0, needs_name: false, provisional: false };
    // WebGroup destinations: what this workload learned for this address.
    if meta.flags & SLOT_FLAG_WEBGROUPS == 0 {
        return out;
    }
    let mut nameless = address_rule;
    let groups = learned_groups(meta, pkt, link, &mut out.provisional);
    if groups != 0 {
        let mut walk = GroupWalk { groups, x, rule: address_rule, nameless, slot: slot_idx };
        // SAFETY: the callback only reads the slot's maps and writes `walk`.
        unsafe {
            bpf_loop(64, group_step as *mut c_void, (&raw mut walk).cast::<c_void>(), 0);
        }
        out.rule = walk.rule;
        out.learned = groups;
        nameless = walk.nameless;
    }
    if meta.flags & SLOT_FLAG_NAMES != 0 && pkt.proto == IPPROTO_TCP {
        let name_deny = slot.name_deny.get(x).copied().unwrap_or(NO_RULE);
        out.needs_name = nameless != out.rule || name_deny < out.rule;
    }
    out
}

/// The WebGroups the packet's destination was learned for, unexpired, by
/// its source or else by its host's addresses of the other family
/// (`provisional` set when that must not be cached).
#[inline(always)]
fn learned_groups(meta: &SlotMeta, pkt: &Packet, link: &Link, provisional: &mut bool) -> u64 {
    // The coarse clock, as learning stamps expiries with.
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(v) = EGV6_LEARNED.get_ptr(LearnKey { workload: pkt.src, addr: pkt.dst }) {
        // SAFETY: value pointer from a successful lookup.
        let v = unsafe { *v };
        if v.expires_ns > now {
            return v.groups;
        }
    }
    match hosts::sibling_groups(link, pkt, now, hosts::fresh_ns(meta.min_ttl, meta.max_ttl)) {
        Some(joined) => {
            *provisional = joined.provisional;
            joined.groups
        }
        None => 0,
    }
}

/// The second decision's walk over the WebGroups a flow was learned for
/// or named in, one bit per `bpf_loop` step.
#[repr(C)]
struct NamedWalk {
    groups: u64,
    learned: u64,
    named: u64,
    x: u32,
    rule: u32,
    slot: u32,
    _pad: u32,
}

extern "C" fn named_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the NamedWalk on the caller's stack.
    let w = unsafe { &mut *ctx.cast::<NamedWalk>() };
    let Some((bit, r)) = next_entry(&mut w.groups, w.slot, w.x) else { return 1 };
    if let Some(r) = r {
        let rule = r.rule(w.learned >> bit & 1 != 0, w.named >> bit & 1 != 0);
        if rule < w.rule {
            w.rule = rule;
        }
    }
    0
}

/// A TCP flow's second decision (contract "Connection names"): the first
/// of its address rule and the rules of the WebGroups it was learned for
/// (`c.learned`) or named in (`named`, 0 without a name), each read in the
/// column of how the flow stands to it.
#[inline(always)]
pub fn decide_named(slot_idx: u32, c: &Classified, named: u64) -> u32 {
    let mut walk = NamedWalk {
        groups: c.learned | named,
        learned: c.learned,
        named,
        x: c.x,
        rule: c.address_rule,
        slot: slot_idx,
        _pad: 0,
    };
    // SAFETY: the callback only reads the slot's maps and writes `walk`.
    unsafe {
        bpf_loop(64, named_step as *mut c_void, (&raw mut walk).cast::<c_void>(), 0);
    }
    walk.rule
}
