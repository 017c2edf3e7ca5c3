//! Judging one packet: skip what is not the firewall's business, serve
//! established flows from the cache, classify new ones, count and report.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::maps::lpm_trie::Key;
use egress_common::{
    ACTION_DENY, DECISION_UNCOVERED, FAMILY_V4, FlowEvent, FlowKey, FlowValue, FragKey,
    MODE_ENFORCE, PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_UDP, Reason, RuleInfo, SLOT_FLAG_NO_FLOW_CACHE, SlotMeta,
    SpKey, VERDICTS, Verdict, XdKey,
};

use crate::maps::{
    EGV1_EVENTS, EGV1_FLOWS, EGV1_FRAGS, EGV1_LIVE, EGV1_LOCAL, EGV1_REASONS, EGV1_SLOT_META,
    SLOT0, SLOT1, Slot,
};
use crate::parse::{
    Cursor, FRAG_FIRST, FRAG_LATER, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
    Packet, Parsed, parse,
};

/// What to do with the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
}

/// Judges the packet in `[start, end)` of `len` bytes on interface `ifindex`.
#[inline(always)]
pub fn judge(start: usize, end: usize, len: u32, ifindex: u32) -> Action {
    let Some(live) = EGV1_LIVE.get(0) else {
        return Action::Pass;
    };
    if live.generation == 0 {
        // No pack installed yet.
        return Action::Pass;
    }
    let generation = live.generation;
    if live.slot == 0 {
        judge_in(&SLOT0, 0, generation, start, end, len, ifindex)
    } else {
        judge_in(&SLOT1, 1, generation, start, end, len, ifindex)
    }
}

#[inline(always)]
fn count_reason(reason: Reason) {
    if let Some(cell) = EGV1_REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
}

#[inline(always)]
fn judge_in(
    slot: &Slot,
    slot_idx: u32,
    generation: u32,
    start: usize,
    end: usize,
    len: u32,
    ifindex: u32,
) -> Action {
    let Some(meta) = EGV1_SLOT_META.get(slot_idx) else {
        return Action::Pass;
    };
    let cur = Cursor::new(start, end);
    let mut pkt = Packet::empty();
    match parse(&cur, &mut pkt) {
        Ok(Parsed::NotIp) => {
            count_reason(Reason::NotIp);
            Action::Pass
        }
        Ok(Parsed::Ip) => judge_ip(slot, meta, generation, &pkt, len, ifindex),
        Err(reason) => unjudgeable(slot, meta, &pkt, reason),
    }
}

/// A packet the datapath cannot judge safely: dropped in enforce mode,
/// passed in monitor mode, counted either way; unless its source is known
/// and uncovered.
#[inline(always)]
fn unjudgeable(slot: &Slot, meta: &SlotMeta, pkt: &Packet, reason: Reason) -> Action {
    if pkt.family != 0 && !source_covered(slot, meta, pkt) {
        count_reason(Reason::Uncovered);
        return Action::Pass;
    }
    count_reason(reason);
    if meta.mode == MODE_ENFORCE { Action::Drop } else { Action::Pass }
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

/// Link-local control traffic and limited broadcast, never judged.
#[inline(always)]
fn is_link_local_control(pkt: &Packet) -> bool {
    if pkt.family == FAMILY_V4 {
        let d = &pkt.dst;
        // 224.0.0.0/24, 255.255.255.255, DHCP client → server.
        (d[12] == 224 && d[13] == 0 && d[14] == 0)
            || (d[12] == 255 && d[13] == 255 && d[14] == 255 && d[15] == 255)
            || (pkt.proto == IPPROTO_UDP && pkt.has_l4() && pkt.sport == 68 && pkt.dport == 67)
    } else {
        // ff02::/16 link-local multicast, fe80::/10 link-local unicast,
        // router solicitation/advertisement, neighbour solicitation/advertisement, redirect.
        (pkt.dst[0] == 0xff && pkt.dst[1] == 0x02)
            || (pkt.dst[0] == 0xfe && pkt.dst[1] & 0xc0 == 0x80)
            || (pkt.proto == IPPROTO_ICMPV6
                && pkt.has_l4()
                && pkt.icmp_type >= 133
                && pkt.icmp_type <= 137)
    }
}

#[inline(always)]
fn port_index(pkt: &Packet) -> u32 {
    let icmp = if pkt.family == FAMILY_V4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
    match pkt.proto {
        IPPROTO_TCP => pkt.dport as u32,
        IPPROTO_UDP => PORT_INDEX_UDP + pkt.dport as u32,
        p if p == icmp => PORT_INDEX_ICMP,
        _ => PORT_INDEX_OTHER,
    }
}

/// First-match classification: the rule index, or `DECISION_UNCOVERED`.
#[inline(always)]
fn classify(slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> u32 {
    let s = match src_class(slot, pkt) {
        Some(s) => s,
        None if meta.any_source != 0 => 0,
        None => return DECISION_UNCOVERED,
    };
    let p = match slot.ports.get(port_index(pkt)) {
        Some(p) => *p,
        None => return meta.implicit_rule,
    };
    let Some(x) = slot.sp.get_ptr(SpKey { src_class: s, port_class: p }) else {
        return meta.implicit_rule;
    };
    // SAFETY: value pointer from a successful lookup.
    let x = unsafe { *x };
    let d = dst_class(slot, pkt);
    if let Some(rule) = slot.xd.get_ptr(XdKey { x_class: x, dst_class: d }) {
        // SAFETY: value pointer from a successful lookup.
        return unsafe { *rule };
    }
    match slot.defaults.get(x) {
        Some(rule) => *rule,
        None => meta.implicit_rule,
    }
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
fn count_rule(slot: &Slot, rule: u32, verdict: Verdict, len: u32, new_flow: bool) {
    let idx = rule.wrapping_mul(VERDICTS).wrapping_add(verdict as u32);
    if let Some(cell) = slot.counters.get_ptr_mut(idx) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe {
            (*cell).packets += 1;
            (*cell).bytes += len as u64;
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

#[inline(always)]
fn judge_ip(
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
    if EGV1_LOCAL.get_ptr(pkt.dst).is_some() {
        count_reason(Reason::ToGateway);
        return Action::Pass;
    }
    let frag_key = FragKey {
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    if pkt.frag == FRAG_LATER {
        return match EGV1_FRAGS.get_ptr(&frag_key) {
            // SAFETY: value pointer from a successful lookup.
            Some(v) if unsafe { (*v).generation } == generation => {
                let v = unsafe { *v };
                let verdict = Verdict::from_code_fast(v.verdict);
                count_reason(Reason::FragmentFollowed);
                count_rule(slot, v.rule, verdict, len, false);
                action_of(verdict)
            }
            _ => unjudgeable(slot, meta, pkt, Reason::FragmentUnseen),
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
    if let Some(v) = EGV1_FLOWS.get_ptr(&key) {
        // SAFETY: value pointer from a successful lookup.
        let v = unsafe { *v };
        if v.generation == generation {
            let verdict = Verdict::from_code_fast(v.verdict);
            count_reason(Reason::FlowCache);
            count_rule(slot, v.rule, verdict, len, false);
            if pkt.frag == FRAG_FIRST {
                let _ = EGV1_FRAGS.insert(&frag_key, &v, 0);
            }
            return action_of(verdict);
        }
    }
    let rule_idx = classify(slot, meta, pkt);
    if rule_idx == DECISION_UNCOVERED {
        count_reason(Reason::Uncovered);
        return Action::Pass;
    }
    let Some(rule) = slot.rules.get(rule_idx) else {
        // A compiled pack never points past its rule table; fail closed.
        return unjudgeable(slot, meta, pkt, Reason::BadIpHeader);
    };
    let verdict = verdict_of(rule);
    count_reason(Reason::Rule);
    count_rule(slot, rule_idx, verdict, len, true);
    let value = FlowValue { generation, rule: rule_idx, verdict: verdict as u8, _pad: [0; 7] };
    if meta.flags & SLOT_FLAG_NO_FLOW_CACHE == 0 {
        let _ = EGV1_FLOWS.insert(&key, &value, 0);
    }
    if pkt.frag == FRAG_FIRST {
        let _ = EGV1_FRAGS.insert(&frag_key, &value, 0);
    }
    if rule.log != 0 {
        report(pkt, &key, verdict, rule_idx, generation, ifindex);
    }
    action_of(verdict)
}

#[inline(always)]
fn report(pkt: &Packet, key: &FlowKey, verdict: Verdict, rule: u32, generation: u32, ifindex: u32) {
    if let Some(mut entry) = EGV1_EVENTS.reserve::<FlowEvent>(0) {
        entry.write(FlowEvent {
            // SAFETY: helper without preconditions.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            src: pkt.src,
            dst: pkt.dst,
            sport_be: key.sport_be,
            dport_be: key.dport_be,
            proto: pkt.proto,
            family: pkt.family,
            verdict: verdict as u8,
            reason: Reason::Rule as u8,
            rule,
            generation,
            ifindex,
            _pad: [0; 4],
        });
        entry.submit(0);
    }
}
