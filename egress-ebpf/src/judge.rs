//! Judging one packet: skip what is not the firewall's business, serve
//! established flows from the cache, classify new ones, count and report.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_loop};
use aya_ebpf::maps::lpm_trie::Key;
use egress_common::{
    ACTION_DENY, ClassDestKey, ClassWebGroupKey, DECISION_UNCOVERED, FAMILY_V4, FlowKey, FlowValue, FragKey, LearnKey,
    MODE_ENFORCE, NO_RULE, PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_UDP, Reason, RuleInfo,
    SLOT_FLAG_NO_FLOW_CACHE, SLOT_FLAG_WEBGROUPS, SlotMeta, SourcePortKey, VERDICTS, Verdict,
};

use crate::dns::{self, IdSwap, LoadBytes, QueryAction};
use crate::flowcache;
use crate::maps::{EGV2_FRAGS, EGV2_LEARNED, EGV2_LIVE, EGV2_REASONS, EGV2_SLOT_META, SLOT0, SLOT1, Slot};
use crate::parse::{
    Cursor, FRAG_FIRST, FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Parsed, parse,
};

/// What to do with the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Permitted DNS to a resolver's port 53: pass it on to the query
    /// program (tail call). Carries the live slot's `query_filter`, for
    /// when the tail call fails (see [`tail_call_failed`]).
    Query(u8),
    /// A refused query: turn it around into a REFUSED answer and send it
    /// back out of the interface it came in on.
    Refuse,
    /// A recorded query: write the gateway's transaction id in, then pass
    /// it (drop it should the write fail).
    Record(IdSwap),
}

/// The live slot and its meta, or `None` before the first pack.
#[inline(always)]
fn live() -> Option<(u32, &'static SlotMeta)> {
    let live = EGV2_LIVE.get(0)?;
    // The slot is read once; everything else comes from that slot's own
    // meta, written before the flip and stable while the slot is readable.
    let slot = live.slot;
    let meta = EGV2_SLOT_META.get(slot)?;
    if meta.generation == 0 { None } else { Some((slot, meta)) }
}

/// TC egress of a LAN interface: learn from DNS answers on their way to a
/// workload. Never drops; the swap that gives an answer to a recorded query
/// the workload's own transaction id back, for the caller to write.
#[inline(always)]
pub fn learn<B: LoadBytes>(bytes: &B, start: usize, end: usize) -> Option<IdSwap> {
    let (slot, meta) = live()?;
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) {
        return None;
    }
    if slot == 0 { dns::on_answer(bytes, 0, &SLOT0, meta, &pkt) } else { dns::on_answer(bytes, 1, &SLOT1, meta, &pkt) }
}

/// The query program: a packet the judge permitted to a resolver's port 53.
/// Records the query and applies the query filter.
#[inline(always)]
pub fn query<B: LoadBytes>(bytes: &B, start: usize, end: usize) -> Action {
    let Some((slot, meta)) = live() else { return Action::Pass };
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) {
        return Action::Pass;
    }
    let action = if slot == 0 {
        dns::on_query(bytes, 0, &SLOT0, meta, &pkt)
    } else {
        dns::on_query(bytes, 1, &SLOT1, meta, &pkt)
    };
    match action {
        QueryAction::Forward => Action::Pass,
        QueryAction::Record(swap) => Action::Record(swap),
        QueryAction::Refuse => Action::Refuse,
        QueryAction::Drop => Action::Drop,
    }
}

/// After a failed tail call into the query program (its slot in the
/// program array empty): the query was neither recorded nor filtered, so
/// it is treated as unreadable under the `query_filter` the judge read
/// from the live slot: true (drop) when the filter enforces; counted
/// either way.
#[inline(always)]
pub fn tail_call_failed(query_filter: u8) -> bool {
    dns::unfiltered(query_filter, egress_common::DnsStat::QueryUnfiltered) == QueryAction::Drop
}

/// Whether a TC program must pull the packet's first bytes into the linear
/// area before reading it: its headers are not all there, or it is DNS
/// (whose programs read the message, and may rewrite it in place). Other
/// packets are judged from what is linear: a socket's TCP segments carry
/// their payload in page fragments, and pulling them (which copies the
/// head of a cloned skb) cost more than judging them.
#[inline(always)]
pub fn must_pull(start: usize, end: usize, len: u32) -> bool {
    if (end - start) as u32 >= len {
        return false;
    }
    let cur = Cursor::new(start, end);
    // Nearly always: plain TCP or UDP whose headers are all linear.
    if let Some((sport, dport)) = crate::parse::quick_ports(&cur) {
        return sport == 53 || dport == 53;
    }
    let mut pkt = Packet::empty();
    match parse(&cur, &mut pkt) {
        Err(Reason::Truncated) => true,
        Ok(Parsed::Ip) => pkt.has_l4() && (pkt.dport == 53 || pkt.sport == 53),
        _ => false,
    }
}

/// Judges the packet in `[start, end)` of `len` bytes on interface `ifindex`.
#[inline(always)]
pub fn judge(start: usize, end: usize, len: u32, ifindex: u32) -> Action {
    let Some((slot, meta)) = live() else {
        // No pack installed yet.
        return Action::Pass;
    };
    if slot == 0 {
        judge_in(0, &SLOT0, meta, start, end, len, ifindex)
    } else {
        judge_in(1, &SLOT1, meta, start, end, len, ifindex)
    }
}

#[inline(always)]
fn count_reason(reason: Reason) {
    if let Some(cell) = EGV2_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
}

#[inline(always)]
fn judge_in(slot_idx: u32, slot: &Slot, meta: &SlotMeta, start: usize, end: usize, len: u32, ifindex: u32) -> Action {
    let generation = meta.generation;
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    match parse(&cur, &mut pkt) {
        Ok(Parsed::NotIp) => {
            count_reason(Reason::NotIp);
            Action::Pass
        }
        Ok(Parsed::Ip) => {
            let action = judge_ip(slot_idx, slot, meta, generation, &pkt, len, ifindex);
            // Every permitted DNS packet, new flow or cached, goes on to the
            // query program (verified on its own, reached by tail call).
            if action == Action::Pass
                && pkt.dport == 53
                && pkt.has_l4()
                && (pkt.proto == IPPROTO_UDP || pkt.proto == IPPROTO_TCP)
                && slot.resolvers.get_ptr(pkt.dst).is_some()
            {
                return Action::Query(meta.query_filter);
            }
            action
        }
        Err(reason) => unjudgeable(slot, meta, &pkt, reason, ifindex),
    }
}

/// A packet the datapath cannot judge safely: dropped in enforce mode,
/// passed in monitor mode, counted and reported (no rule decided it)
/// either way; unless its source is known and uncovered.
#[inline(always)]
fn unjudgeable(slot: &Slot, meta: &SlotMeta, pkt: &Packet, reason: Reason, ifindex: u32) -> Action {
    if pkt.family != 0 && !source_covered(slot, meta, pkt) {
        count_reason(Reason::Uncovered);
        return Action::Pass;
    }
    count_reason(reason);
    let enforce = meta.mode == MODE_ENFORCE;
    let verdict = if enforce { Verdict::Denied } else { Verdict::WouldDeny };
    crate::events::report_flow(
        pkt,
        pkt.sport.to_be(),
        pkt.dport.to_be(),
        verdict,
        reason,
        NO_RULE,
        meta.generation,
        ifindex,
    );
    if enforce { Action::Drop } else { Action::Pass }
}

#[inline(always)]
fn src_class(slot: &Slot, pkt: &Packet) -> Option<u32> {
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
fn source_covered(slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> bool {
    meta.any_source != 0 || src_class(slot, pkt).is_some()
}

/// Link-local control traffic, never judged: destinations that never leave
/// the link (IPv4 `224.0.0.0/24` and `255.255.255.255`, which carries DHCP
/// discovery; IPv6 `ff02::/16`, which carries neighbour discovery and
/// DHCPv6, and `fe80::/10`). Neighbour discovery and DHCP sent to the
/// gateway's own addresses pass as `ToGateway`; sent anywhere else they are
/// judged.
/// DNS (port 53) is judged whatever the destination, so that a forwarder on
/// the gateway cannot be reached around the rules by broadcast.
#[inline(always)]
fn is_link_local_control(pkt: &Packet) -> bool {
    if (pkt.proto == IPPROTO_UDP || pkt.proto == IPPROTO_TCP) && pkt.has_l4() && pkt.dport == 53 {
        return false;
    }
    if pkt.family == FAMILY_V4 {
        let d = &pkt.dst;
        (d[12] == 224 && d[13] == 0 && d[14] == 0) || (d[12] == 255 && d[13] == 255 && d[14] == 255 && d[15] == 255)
    } else {
        (pkt.dst[0] == 0xff && pkt.dst[1] == 0x02) || (pkt.dst[0] == 0xfe && pkt.dst[1] & 0xc0 == 0x80)
    }
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
/// `bpf_loop` step: the first rule of `x` naming any of them.
#[repr(C)]
struct GroupWalk {
    groups: u64,
    x: u32,
    rule: u32,
    slot: u32,
}

extern "C" fn group_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the GroupWalk on the caller's stack.
    let w = unsafe { &mut *ctx.cast::<GroupWalk>() };
    if w.groups == 0 {
        return 1;
    }
    let bit = w.groups.trailing_zeros();
    w.groups &= w.groups - 1;
    let slot = if w.slot == 0 { &SLOT0 } else { &SLOT1 };
    if let Some(r) = slot.xw.get_ptr(ClassWebGroupKey { x_class: w.x, group: bit }) {
        // SAFETY: value pointer from a successful lookup.
        let r = unsafe { *r };
        if r < w.rule {
            w.rule = r;
        }
    }
    0
}

/// First-match classification: the rule index, or `DECISION_UNCOVERED`.
#[inline(always)]
fn classify(slot_idx: u32, slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> u32 {
    let src = match src_class(slot, pkt) {
        Some(class) => class,
        None if meta.any_source != 0 => 0,
        None => return DECISION_UNCOVERED,
    };
    let port = match slot.ports.get(port_index(pkt)) {
        Some(class) => *class,
        None => return meta.implicit_rule,
    };
    let Some(x) = slot.sp.get_ptr(SourcePortKey { src_class: src, port_class: port }) else {
        return meta.implicit_rule;
    };
    // SAFETY: value pointer from a successful lookup.
    let x = unsafe { *x };
    let dst = dst_class(slot, pkt);
    let mut rule = match slot.xd.get_ptr(ClassDestKey { x_class: x, dst_class: dst }) {
        // SAFETY: value pointer from a successful lookup.
        Some(r) => unsafe { *r },
        None => match slot.defaults.get(x) {
            Some(r) => *r,
            None => meta.implicit_rule,
        },
    };
    // WebGroup destinations: what this workload learned for this address.
    if meta.flags & SLOT_FLAG_WEBGROUPS == 0 {
        return rule;
    }
    let learned = EGV2_LEARNED.get_ptr(LearnKey { workload: pkt.src, addr: pkt.dst });
    if let Some(v) = learned {
        // SAFETY: value pointer from a successful lookup.
        let v = unsafe { *v };
        // SAFETY: helper without preconditions.
        if v.expires_ns > unsafe { bpf_ktime_get_ns() } {
            let mut walk = GroupWalk { groups: v.groups, x, rule, slot: slot_idx };
            // SAFETY: the callback only reads the slot's maps and writes `walk`.
            unsafe {
                bpf_loop(64, group_step as *mut c_void, (&raw mut walk).cast::<c_void>(), 0);
            }
            rule = walk.rule;
        }
    }
    rule
}

#[inline(always)]
fn verdict_of(rule: &RuleInfo) -> Verdict {
    if rule.action != ACTION_DENY {
        Verdict::Allowed
    } else if rule.mode == MODE_ENFORCE {
        Verdict::Denied
    } else {
        Verdict::WouldDeny
    }
}

#[inline(always)]
fn count_rule(slot: &Slot, counter: u32, verdict: Verdict, len: u32, new_flow: bool) {
    let idx = counter.wrapping_mul(VERDICTS).wrapping_add(verdict as u32);
    if let Some(cell) = slot.counters.get_ptr_mut(idx) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += u64::from(len);
            if new_flow {
                (*cell).flows += 1;
            }
        }
    }
}

#[inline(always)]
fn action_of(verdict: Verdict) -> Action {
    if verdict.drops() { Action::Drop } else { Action::Pass }
}

/// Packets to the gateway's own addresses are not judged (counted).
#[inline(always)]
fn to_gateway(slot: &Slot, pkt: &Packet) -> bool {
    let local = slot.local.get_ptr(pkt.dst).is_some();
    if local {
        count_reason(Reason::ToGateway);
    }
    local
}

/// The key of the datagram a fragment belongs to.
#[inline(always)]
fn frag_key(pkt: &Packet) -> FragKey {
    FragKey { src: pkt.src, dst: pkt.dst, id: pkt.frag_id, proto: pkt.frag_proto, family: pkt.family, _pad: [0; 2] }
}

#[inline(always)]
fn judge_ip(
    slot_idx: u32,
    slot: &Slot,
    meta: &SlotMeta,
    generation: u32,
    pkt: &Packet,
    len: u32,
    ifindex: u32,
) -> Action {
    if is_link_local_control(pkt) {
        count_reason(Reason::LinkLocal);
        return Action::Pass;
    }
    if pkt.frag == FRAG_LATER {
        if to_gateway(slot, pkt) {
            return Action::Pass;
        }
        if pkt.frag_proto == IPPROTO_TCP && pkt.frag_offset < 3 {
            // Would overwrite the ports or flags of the first fragment.
            return unjudgeable(slot, meta, pkt, Reason::TinyFragment, ifindex);
        }
        return match EGV2_FRAGS.get_ptr(&frag_key(pkt)) {
            // SAFETY: value pointer from a successful lookup.
            Some(v) if unsafe { (*v).generation } == generation => {
                // SAFETY: as above.
                let v = unsafe { *v };
                let verdict = Verdict::from_code_fast(v.verdict as u8);
                count_reason(Reason::FragmentFollowed);
                count_rule(slot, v.counter, verdict, len, false);
                action_of(verdict)
            }
            _ => unjudgeable(slot, meta, pkt, Reason::FragmentUnseen, ifindex),
        };
    }
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport_be: pkt.sport.to_be(),
        dport_be: pkt.dport.to_be(),
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    // The flow cache first: packets to the gateway's own addresses are
    // never cached (the agent drops cached flows to an address when it
    // becomes the gateway's), so a cached packet needs no other lookup.
    let probe = flowcache::Probe::new(&key);
    if let Some(v) = flowcache::lookup(&probe, generation) {
        let verdict = Verdict::from_code_fast(v.verdict as u8);
        count_reason(Reason::FlowCache);
        count_rule(slot, v.counter, verdict, len, false);
        if pkt.frag == FRAG_FIRST {
            let _ = EGV2_FRAGS.insert(&frag_key(pkt), &v, 0);
        }
        return action_of(verdict);
    }
    if to_gateway(slot, pkt) {
        return Action::Pass;
    }
    let rule_idx = classify(slot_idx, slot, meta, pkt);
    if rule_idx == DECISION_UNCOVERED {
        count_reason(Reason::Uncovered);
        return Action::Pass;
    }
    let Some(rule) = slot.rules.get(rule_idx) else {
        // A compiled pack never points past its rule table; fail closed.
        return unjudgeable(slot, meta, pkt, Reason::BadPack, ifindex);
    };
    let verdict = verdict_of(rule);
    count_reason(Reason::Rule);
    count_rule(slot, rule.counter, verdict, len, true);
    let value = FlowValue { generation, counter: rule.counter, verdict: verdict as u32 };
    if meta.flags & SLOT_FLAG_NO_FLOW_CACHE == 0 {
        flowcache::insert(&probe, &value);
    }
    if pkt.frag == FRAG_FIRST {
        let _ = EGV2_FRAGS.insert(&frag_key(pkt), &value, 0);
    }
    if rule.log != 0 || verdict != Verdict::Allowed {
        crate::events::report_flow(
            pkt,
            key.sport_be,
            key.dport_be,
            verdict,
            Reason::Rule,
            rule_idx,
            generation,
            ifindex,
        );
    }
    action_of(verdict)
}
