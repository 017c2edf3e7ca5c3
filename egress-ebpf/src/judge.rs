//! Judging one packet: skip what is not the firewall's business, serve
//! established flows from the cache, classify new ones, count and report.

use egress_common::{
    ACTION_DENY, DECISION_UNCOVERED, DnsStat, FAMILY_V4, FlowKey, FlowValue, FragKey, MODE_ENFORCE, NO_RULE,
    QUERY_FILTER_ENFORCE, Reason, RuleInfo, SLOT_FLAG_NO_FLOW_CACHE, SlotMeta, Spend, UNCOVERED_DENY, VERDICTS,
    Verdict,
};

use core::ffi::c_void;

use crate::classify::{Classified, classify};
use crate::dns::{self, IdSwap, LoadBytes, QueryAction};
use crate::flowcache;
use crate::hosts::Link;
use crate::maps::{EGV6_FRAGS, EGV6_LIVE, EGV6_REASONS, EGV6_SLOT_META, SLOT0, SLOT1, Slot};
use crate::parse::{Cursor, FRAG_FIRST, FRAG_LATER, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Parsed, parse};

/// IGMP (IPv4 multicast group membership).
const IPPROTO_IGMP: u8 = 2;

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
    /// A TCP segment whose flow its name denied: turn it around into a
    /// reset of the workload's side, back out of the interface it came in on.
    Reset(crate::turn::ResetAt),
    /// A packet of a flow whose name must be read: pass it on to the names
    /// program (tail call), which judges it again with the stream reader.
    Named,
    /// The names program's hand-off (in the scratch): pass the packet on to
    /// the read program (tail call), which gathers its bytes and judges.
    Read,
    /// A recorded query: write the gateway's transaction id in, then pass
    /// it (drop it should the write fail).
    Record(IdSwap, IdSwap),
}

/// The live slot and its meta, or `None` before the first pack.
#[inline(always)]
fn live() -> Option<(u32, &'static SlotMeta)> {
    let live = EGV6_LIVE.get(0)?;
    // The slot is read once; everything else comes from that slot's own
    // meta, written before the flip and stable while the slot is readable.
    let slot = live.slot;
    let meta = EGV6_SLOT_META.get(slot)?;
    if meta.generation == 0 { None } else { Some((slot, meta)) }
}

/// TC egress of a LAN interface: learn from DNS answers on their way to a
/// workload. Never drops. The swap that gives an answer to a recorded query
/// the workload's own transaction id back, for the caller to write; whether
/// the segment may hold a second answer; and whether the answer taught
/// (then `hosts::note_asker` notes its workload).
#[inline(always)]
pub fn learn<B: LoadBytes>(bytes: &B, start: usize, end: usize) -> (Option<IdSwap>, bool, bool) {
    let Some((slot, meta)) = live() else { return (None, false, false) };
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) {
        return (None, false, false);
    }
    let (swap, taught) = if slot == 0 {
        dns::on_answer(bytes, 0, &SLOT0, meta, &pkt)
    } else {
        dns::on_answer(bytes, 1, &SLOT1, meta, &pkt)
    };
    // A TCP segment from port 53 that goes on past its first message may
    // hold a second answer: the second-answer program looks (and checks
    // that it is from a listed resolver).
    let more = pkt.proto == IPPROTO_TCP && pkt.sport == 53 && swap.is_some() && more_bytes(bytes, &pkt);
    (swap, more, taught)
}

/// Whether a TCP segment goes on past the message its first length prefix
/// frames.
#[inline(always)]
fn more_bytes<B: LoadBytes>(bytes: &B, pkt: &Packet) -> bool {
    let (off, end) = (u32::from(pkt.payload_off), u32::from(pkt.ip_end));
    let mut framing = [0u8; 2];
    off != 0 && bytes.load(off, framing.as_mut_ptr(), 2) && off + 2 + u32::from(u16::from_be_bytes(framing)) < end
}

/// The second-answer program: the second of two answers in a TCP segment
/// (see [`dns::on_second_answer`]); the swap to write.
#[inline(always)]
pub fn learn_second<B: LoadBytes>(bytes: &B, start: usize, end: usize) -> IdSwap {
    let Some((slot, meta)) = live() else { return IdSwap::NONE };
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) {
        return IdSwap::NONE;
    }
    if slot == 0 {
        dns::on_second_answer(bytes, 0, &SLOT0, meta, &pkt)
    } else {
        dns::on_second_answer(bytes, 1, &SLOT1, meta, &pkt)
    }
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
        QueryAction::Record(swap, second) => Action::Record(swap, second),
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

/// Judges the packet in `[start, end)` of `len` bytes on interface
/// `ifindex`; `ctx` is its program's context (for routing lookups).
#[inline(always)]
pub fn judge(ctx: *mut c_void, start: usize, end: usize, len: u32, ifindex: u32) -> Action {
    let Some((slot, meta)) = live() else {
        // No pack installed yet.
        return Action::Pass;
    };
    if slot == 0 {
        judge_in(0, &SLOT0, meta, ctx, start, end, len, ifindex)
    } else {
        judge_in(1, &SLOT1, meta, ctx, start, end, len, ifindex)
    }
}

#[inline(always)]
pub(crate) fn count_reason(reason: Reason) {
    if let Some(cell) = EGV6_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the slot, the packet and where it came in")]
fn judge_in(
    slot_idx: u32,
    slot: &Slot,
    meta: &SlotMeta,
    ctx: *mut c_void,
    start: usize,
    end: usize,
    len: u32,
    ifindex: u32,
) -> Action {
    let cur = Cursor::new(start, end);
    let link = Link::of_frame(ctx, ifindex, &cur);
    crate::budget::note_sender(ifindex, &link.mac);
    let mut pkt = Packet::empty();
    match parse(&cur, &mut pkt) {
        Ok(Parsed::NotIp) => {
            count_reason(Reason::NotIp);
            Action::Pass
        }
        Ok(Parsed::Ip) => {
            let action = judge_ip(slot_idx, slot, meta, &pkt, len, &link);
            // Every permitted DNS packet, new flow or cached, goes on to the
            // query program (verified on its own, reached by tail call).
            if pkt.has_l4() && (pkt.proto == IPPROTO_UDP || pkt.proto == IPPROTO_TCP) {
                return to_query(slot, meta, &pkt, action);
            }
            action
        }
        Err(reason) => unjudgeable(slot, meta, &pkt, reason, ifindex),
    }
}

/// A packet the datapath cannot judge safely: dropped in enforce mode,
/// passed in monitor mode, counted and reported (no rule decided it)
/// either way; unless its source is known and uncovered, and the pack
/// lets uncovered sources pass.
#[inline(always)]
pub(crate) fn unjudgeable(slot: &Slot, meta: &SlotMeta, pkt: &Packet, reason: Reason, ifindex: u32) -> Action {
    if pkt.family != 0 && meta.uncovered != UNCOVERED_DENY && !source_covered(slot, meta, pkt) {
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
fn source_covered(slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> bool {
    meta.any_source != 0 || crate::classify::src_class(slot, pkt).is_some()
}

/// Link-local control traffic, never judged: IGMP, DHCP, ICMPv6 (neighbour
/// and router discovery, MLD) and DHCPv6 to destinations that never leave
/// the link (IPv4 `224.0.0.0/24` and `255.255.255.255`; IPv6 `ff02::/16`
/// and `fe80::/10`). Everything else sent there (mDNS, SSDP, a service on
/// the gateway's link-local address, DNS by broadcast) is judged.
#[inline(always)]
fn is_link_local_control(pkt: &Packet) -> bool {
    // Control protocols only: IGMP, ICMPv6 (neighbour and router
    // discovery, MLD), DHCP and DHCPv6. Anything else to a link-local or
    // broadcast address (mDNS, a service on the gateway's fe80:: address)
    // reaches the gateway's services and is judged.
    let udp = pkt.proto == IPPROTO_UDP && pkt.has_l4();
    if pkt.family == FAMILY_V4 {
        let d = &pkt.dst;
        let link = (d[12] == 224 && d[13] == 0 && d[14] == 0)
            || (d[12] == 255 && d[13] == 255 && d[14] == 255 && d[15] == 255);
        link && (pkt.proto == IPPROTO_IGMP || (udp && (pkt.dport == 67 || pkt.dport == 68)))
    } else {
        let link = (pkt.dst[0] == 0xff && pkt.dst[1] == 0x02) || (pkt.dst[0] == 0xfe && pkt.dst[1] & 0xc0 == 0x80);
        link && (pkt.proto == IPPROTO_ICMPV6 || (udp && (pkt.dport == 546 || pkt.dport == 547)))
    }
}

#[inline(always)]
pub(crate) fn verdict_of(rule: &RuleInfo) -> Verdict {
    if rule.action != ACTION_DENY {
        Verdict::Allowed
    } else if rule.mode == MODE_ENFORCE {
        Verdict::Denied
    } else {
        Verdict::WouldDeny
    }
}

#[inline(always)]
pub(crate) fn count_rule(slot: &Slot, counter: u32, verdict: Verdict, len: u32, new_flow: bool) {
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
pub(crate) fn action_of(verdict: Verdict) -> Action {
    if verdict.drops() { Action::Drop } else { Action::Pass }
}

/// The link's control traffic sent to one of the gateway's own addresses
/// passes unjudged: DHCP (a lease renewed by unicast, DHCPv6 to a server on
/// the gateway) and IPv6 router and neighbour discovery (a neighbour's
/// reachability is probed by unicast, to the gateway's global address
/// too). Everything else sent to the gateway is judged by the rules.
#[inline(always)]
fn control_to_gateway(slot: &Slot, pkt: &Packet) -> bool {
    let control = if pkt.family == FAMILY_V4 {
        pkt.proto == IPPROTO_UDP && pkt.has_l4() && pkt.dport == 67
    } else {
        (pkt.proto == IPPROTO_UDP && pkt.has_l4() && pkt.dport == 547)
            || (pkt.proto == IPPROTO_ICMPV6 && pkt.has_l4() && (133..=137).contains(&pkt.icmp_type))
    };
    control && slot.local.get_ptr(pkt.dst).is_some()
}

/// The key of the datagram a fragment belongs to.
#[inline(always)]
pub(crate) fn frag_key(pkt: &Packet) -> FragKey {
    FragKey { src: pkt.src, dst: pkt.dst, id: pkt.frag_id, proto: pkt.frag_proto, family: pkt.family, _pad: [0; 2] }
}

#[inline(always)]
fn judge_ip(slot_idx: u32, slot: &Slot, meta: &SlotMeta, pkt: &Packet, len: u32, link: &Link) -> Action {
    let ifindex = link.ifindex;
    let generation = meta.generation;
    if is_link_local_control(pkt) || control_to_gateway(slot, pkt) {
        count_reason(Reason::LinkLocal);
        return Action::Pass;
    }
    if pkt.frag == FRAG_LATER {
        // SAFETY: value pointer from a successful lookup, copied out at once.
        let entry = EGV6_FRAGS.get_ptr(&frag_key(pkt)).map(|v| unsafe { *v }).filter(|v| v.generation == generation);
        // One call of `unjudgeable` for every reason (each call is a copy
        // of it for the verifier to walk).
        let reason = match entry {
            // Would overwrite the ports or flags of the first fragment.
            _ if pkt.frag_proto == IPPROTO_TCP && pkt.frag_offset < 3 => Reason::TinyFragment,
            // Starts inside the first fragment's L4 header (behind
            // extension headers, or a UDP header): would overwrite the
            // ports or flags the verdict was given for.
            Some(v) if u32::from(pkt.frag_offset) < v.verdict >> 8 => Reason::TinyFragment,
            Some(v) => {
                let verdict = Verdict::from_code_fast(v.verdict as u8);
                count_reason(Reason::FragmentFollowed);
                count_rule(slot, v.counter, verdict, len, false);
                return action_of(verdict);
            }
            None => Reason::FragmentUnseen,
        };
        return unjudgeable(slot, meta, pkt, reason, ifindex);
    }
    let key = flow_key(pkt);
    // The flow cache first: a cached packet needs no other lookup. (Packets
    // to the gateway's own addresses are judged like any other: the
    // `gateway` destination names them.)
    let probe = flowcache::Probe::new(&key, meta.flow_seed);
    if let Some(v) = flowcache::lookup(&probe, generation) {
        let verdict = Verdict::from_code_fast(v.verdict as u8);
        count_reason(Reason::FlowCache);
        count_rule(slot, v.counter, verdict, len, false);
        if pkt.frag == FRAG_FIRST {
            remember_first(pkt, &v);
        }
        return action_of(verdict);
    }
    let c = classify(slot_idx, slot, meta, pkt, link);
    let rule_idx = c.rule;
    if rule_idx == DECISION_UNCOVERED {
        count_reason(Reason::Uncovered);
        return Action::Pass;
    }
    if c.needs_name {
        crate::stream::remember(&key, &c, meta.generation);
        return Action::Named;
    }
    apply_rule(slot, meta, pkt, &key, &probe, &c, len, ifindex)
}

/// A new flow's decision by its rule (`c.rule`): counted, cached (unless
/// `c.provisional`), its first fragment remembered, reported (logging
/// rules, denies), acted on.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the packet, its flow, the rule, the interface")]
fn apply_rule(
    slot: &Slot,
    meta: &SlotMeta,
    pkt: &Packet,
    key: &FlowKey,
    probe: &flowcache::Probe,
    c: &Classified,
    len: u32,
    ifindex: u32,
) -> Action {
    let generation = meta.generation;
    let rule_idx = c.rule;
    let Some(rule) = slot.rules.get(rule_idx) else {
        // A compiled pack never points past its rule table; fail closed.
        return unjudgeable(slot, meta, pkt, Reason::BadPack, ifindex);
    };
    let verdict = verdict_of(rule);
    count_reason(Reason::Rule);
    count_rule(slot, rule.counter, verdict, len, true);
    let value = FlowValue { generation, counter: rule.counter, verdict: verdict as u32 };
    if meta.flags & SLOT_FLAG_NO_FLOW_CACHE == 0 && !c.provisional {
        flowcache::insert(probe, &value);
    }
    if pkt.frag == FRAG_FIRST {
        remember_first(pkt, &value);
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

/// The names program: a packet that [`judge`] handed on as
/// [`Action::Named`] (TCP, with its header) is classified again and, if
/// its flow's name must still be read, judged with the stream reader; then,
/// like any permitted packet to a resolver's port 53, handed on to the
/// query program.
#[inline(always)]
pub fn judge_names(ctx: *mut c_void, start: usize, end: usize, len: u32, ifindex: u32) -> Action {
    let Some((slot_idx, meta)) = live() else { return Action::Pass };
    // One copy a slot: the slot's maps must be constants for the verifier.
    if slot_idx == 0 {
        names_in(0, &SLOT0, meta, ctx, start, end, len, ifindex)
    } else {
        names_in(1, &SLOT1, meta, ctx, start, end, len, ifindex)
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the slot, the packet and where it came in")]
fn names_in(
    slot_idx: u32,
    slot: &Slot,
    meta: &SlotMeta,
    ctx: *mut c_void,
    start: usize,
    end: usize,
    len: u32,
    ifindex: u32,
) -> Action {
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if parse(&cur, &mut pkt) != Ok(Parsed::Ip) || pkt.proto != IPPROTO_TCP || !pkt.has_l4() {
        // Never handed on; judged as the datapath cannot judge it.
        return unjudgeable(slot, meta, &pkt, Reason::BadPack, ifindex);
    }
    // The read program reads the packet from the scratch.
    let Some(pkt) = crate::stream::keep_packet(&pkt) else { return Action::Drop };
    let key = flow_key(pkt);
    let probe = flowcache::Probe::new(&key, meta.flow_seed);
    // The judge's classification, handed over when it is this flow's under
    // this pack; classified again otherwise.
    let c = match crate::stream::recall(&key, meta.generation) {
        Some(c) => c,
        None => classify(slot_idx, slot, meta, pkt, &Link::of_frame(ctx, ifindex, &cur)),
    };
    let action = if c.rule == DECISION_UNCOVERED {
        count_reason(Reason::Uncovered);
        Action::Pass
    } else if c.needs_name {
        let flow = crate::stream::Flow { slot_idx, slot, meta, pkt, key: &key, probe: &probe, c: &c, len, ifindex };
        crate::stream::judge_named(&cur, &flow)
    } else {
        // The live pack changed since the judge looked: decided as any new flow.
        apply_rule(slot, meta, pkt, &key, &probe, &c, len, ifindex)
    };
    to_query(slot, meta, pkt, action)
}

/// A permitted packet to a resolver's port 53 goes on to the query
/// program; a first fragment of one is dropped while the query filter
/// enforces (with its datagram's record, so that the later fragments, which
/// the filter cannot read, find no verdict to follow and are dropped too).
#[inline(always)]
fn to_query(slot: &Slot, meta: &SlotMeta, pkt: &Packet, action: Action) -> Action {
    if action != Action::Pass || pkt.dport != 53 || slot.resolvers.get_ptr(pkt.dst).is_none() {
        return action;
    }
    if pkt.frag == FRAG_FIRST && meta.query_filter == QUERY_FILTER_ENFORCE {
        let _ = EGV6_FRAGS.remove(&frag_key(pkt));
        dns::stat(DnsStat::QueryFragment);
        dns::stat(DnsStat::QueryRefused);
        return Action::Drop;
    }
    Action::Query(meta.query_filter)
}

/// The read program: the names program's hand-off judged with the bytes of
/// the segment (see [`crate::stream::read_and_judge`]); then, like any
/// permitted packet to a resolver's port 53, on to the query program.
#[inline(always)]
pub fn judge_read<B: LoadBytes>(bytes: &B, len: u32, ifindex: u32) -> Action {
    let action = crate::stream::read_and_judge(bytes, len, ifindex);
    let Some((slot_idx, meta)) = live() else { return action };
    let Some(pkt) = crate::stream::handed_packet() else { return action };
    if slot_idx == 0 { to_query(&SLOT0, meta, pkt, action) } else { to_query(&SLOT1, meta, pkt, action) }
}

/// Remembers a first fragment's verdict `v` for its later fragments, if
/// its sender's fragment budget has room; without it they are dropped as
/// unseen (an entry an earlier datagram with the same key left is taken
/// out, so that they cannot follow its verdict).
#[inline(always)]
pub(crate) fn remember_first(pkt: &Packet, v: &FlowValue) {
    if crate::budget::spend(Spend::Fragments, &pkt.src, 1, 0) {
        let _ = EGV6_FRAGS.insert(&frag_key(pkt), &first_fragment(pkt, v), 0);
    } else {
        let _ = EGV6_FRAGS.remove(&frag_key(pkt));
    }
}

/// A first fragment's entry for its later fragments: the verdict, and
/// how far its L4 header reaches into the fragmentable part (bits 8..24;
/// see `FlowValue::verdict`), which the parser left in its `frag_offset`.
#[inline(always)]
pub(crate) fn first_fragment(pkt: &Packet, v: &FlowValue) -> FlowValue {
    FlowValue { verdict: (v.verdict & 0xff) | (u32::from(pkt.frag_offset) << 8), ..*v }
}

/// The flow a packet belongs to.
#[inline(always)]
fn flow_key(pkt: &Packet) -> FlowKey {
    FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport_be: pkt.sport.to_be(),
        dport_be: pkt.dport.to_be(),
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}
