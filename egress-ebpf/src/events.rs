//! Events for the agent's flow log, through one ring buffer: flow
//! decisions and addresses learned from DNS. Every event is paid for from
//! its source's, its host's and everyone's budget (see [`crate::budget`])
//! so that a flood cannot fill the ring or the disk, nor crowd out its
//! neighbours' records; what is held back or does not fit is counted,
//! never silently dropped.

use core::ptr::{addr_of, addr_of_mut, read_volatile};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use egress_common::{
    ConnState, EVENT_KIND_FLOW, EVENT_KIND_LEARN, EVENT_KIND_NAMED, EVENT_KIND_TUNNEL, EventStat, FlowEvent, FlowKey,
    LEARN_EVENT_ADDRS, LearnEvent, NAME_BUF, NamedFlowEvent, Reason, Spend, TunnelEvent, Verdict, clamp_ttl,
};

use aya_ebpf::maps::ring_buf::RingBufEntry;

use crate::maps::{EGV6_EVENTS, EGV6_EVSTATS};
use crate::parse::Packet;
use crate::scratch::Scratch;

#[inline(always)]
pub fn count_event(stat: EventStat) {
    if let Some(cell) = EGV6_EVSTATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
}

/// Room in the ring for one event of `kind` from `source` (and the sender
/// noted for the packet), within their budgets, and the time to stamp it
/// with (`bpf_ktime_get_coarse_ns`: a tick's resolution is plenty for a
/// log's wall-clock stamp, at a fraction of a fine read's cost); what
/// happens to the event is counted either way (sent, suppressed, lost).
#[inline(always)]
fn reserve<T: 'static>(kind: Spend, source: &[u8; 16]) -> Option<(RingBufEntry<T>, u64)> {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !crate::budget::spend(kind, source, 1, 0) {
        count_event(EventStat::Suppressed);
        return None;
    }
    let Some(entry) = EGV6_EVENTS.reserve::<T>(0) else {
        count_event(EventStat::Lost);
        return None;
    };
    count_event(EventStat::Sent);
    Some((entry, now))
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn report_flow(
    pkt: &Packet,
    sport_be: u16,
    dport_be: u16,
    verdict: Verdict,
    reason: Reason,
    rule: u32,
    generation: u32,
    ifindex: u32,
) {
    let Some((mut entry, now)) = reserve::<FlowEvent>(Spend::Events, &pkt.src) else { return };
    let p = entry.as_mut_ptr();
    // Written in place, field by field (no 64-byte value on the judge's
    // stack, which has no room for it).
    // SAFETY: `p` points at the reserved entry, sized for a FlowEvent.
    unsafe {
        addr_of_mut!((*p).ktime_ns).write(now);
        copy_words(pkt.src.as_ptr().cast(), addr_of_mut!((*p).src).cast(), 2);
        copy_words(pkt.dst.as_ptr().cast(), addr_of_mut!((*p).dst).cast(), 2);
        addr_of_mut!((*p).sport_be).write(sport_be);
        addr_of_mut!((*p).dport_be).write(dport_be);
        addr_of_mut!((*p).proto).write(pkt.proto);
        addr_of_mut!((*p).family).write(pkt.family);
        addr_of_mut!((*p).verdict).write(verdict as u8);
        addr_of_mut!((*p).reason).write(reason as u8);
        addr_of_mut!((*p).rule).write(rule);
        addr_of_mut!((*p).generation).write(generation);
        addr_of_mut!((*p).ifindex).write(ifindex);
        addr_of_mut!((*p).kind).write(EVENT_KIND_FLOW);
        addr_of_mut!((*p)._pad).write([0; 3]);
    }
    entry.submit(0);
}

/// Reports what one answer taught (`s.report`): the first
/// [`LEARN_EVENT_ADDRS`] addresses in the scratch and their shortest
/// clamped lifetime.
#[inline(always)]
pub fn report_learn(s: &Scratch) {
    let r = &s.report;
    let Some((mut entry, now)) = reserve::<LearnEvent>(Spend::Events, &r.workload) else { return };
    let p = entry.as_mut_ptr();
    let mut ttl_min = u32::MAX;
    let found = r.found;
    // Written in place, field by field (no 192-byte value on the stack).
    // SAFETY: `p` points at the reserved entry, sized for a LearnEvent;
    // indexes are below both arrays' lengths.
    unsafe {
        for i in 0..LEARN_EVENT_ADDRS {
            if i as u32 >= found {
                break;
            }
            // Two 8-byte words: no 16-byte temporary on the stack.
            let from = addr_of!(s.addrs[i]).cast::<u64>();
            let to = addr_of_mut!((*p).addrs[i]).cast::<u64>();
            to.write_unaligned(read_volatile(from));
            to.add(1).write_unaligned(read_volatile(from.add(1)));
            let ttl = clamp_ttl(read_volatile(addr_of!(s.ttls[i])), r.min_ttl, r.max_ttl);
            if ttl < ttl_min {
                ttl_min = ttl;
            }
        }
        addr_of_mut!((*p).ktime_ns).write(now);
        let from = addr_of!(r.workload).cast::<u64>();
        let to = addr_of_mut!((*p).workload).cast::<u64>();
        to.write_unaligned(read_volatile(from));
        to.add(1).write_unaligned(read_volatile(from.add(1)));
        addr_of_mut!((*p).groups).write(r.groups);
        addr_of_mut!((*p).name_hash).write(r.name_hash);
        addr_of_mut!((*p).ttl_s).write(ttl_min);
        addr_of_mut!((*p).count).write(if found > 255 { 255 } else { found as u8 });
        addr_of_mut!((*p).family).write(r.family as u8);
        core::ptr::write_bytes(addr_of_mut!((*p)._pad0).cast::<u8>(), 0, 14);
        addr_of_mut!((*p).kind).write(EVENT_KIND_LEARN);
        core::ptr::write_bytes(addr_of_mut!((*p)._pad1).cast::<u8>(), 0, 3);
    }
    entry.submit(0);
}

/// Reports a TCP flow's second decision, by address and name (the name and
/// its source from the flow's reader `st`).
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a flow event's fields, and the reader's name")]
pub fn report_named(
    pkt: &Packet,
    key: &FlowKey,
    verdict: Verdict,
    reason: Reason,
    rule: u32,
    generation: u32,
    ifindex: u32,
    st: &ConnState,
) {
    let Some((mut entry, now)) = reserve::<NamedFlowEvent>(Spend::Events, &pkt.src) else { return };
    let p = entry.as_mut_ptr();
    // Written in place, field by field (no 328-byte value on the stack).
    // SAFETY: `p` points at the reserved entry, sized for a NamedFlowEvent;
    // the name buffers are NAME_BUF bytes, 8-aligned.
    unsafe {
        let flow = addr_of_mut!((*p).flow);
        addr_of_mut!((*flow).ktime_ns).write(now);
        addr_of_mut!((*flow).src).write(pkt.src);
        addr_of_mut!((*flow).dst).write(pkt.dst);
        addr_of_mut!((*flow).sport_be).write(key.sport_be);
        addr_of_mut!((*flow).dport_be).write(key.dport_be);
        addr_of_mut!((*flow).proto).write(pkt.proto);
        addr_of_mut!((*flow).family).write(pkt.family);
        addr_of_mut!((*flow).verdict).write(verdict as u8);
        addr_of_mut!((*flow).reason).write(reason as u8);
        addr_of_mut!((*flow).rule).write(rule);
        addr_of_mut!((*flow).generation).write(generation);
        addr_of_mut!((*flow).ifindex).write(ifindex);
        addr_of_mut!((*flow).kind).write(EVENT_KIND_NAMED);
        addr_of_mut!((*flow)._pad).write([0; 3]);
        addr_of_mut!((*p).name_source).write(st.source);
        addr_of_mut!((*p).name_len).write(st.name_len);
        addr_of_mut!((*p)._pad).write([0; 6]);
        copy_words(addr_of!(st.name).cast(), addr_of_mut!((*p).name).cast(), NAME_BUF / 8);
    }
    entry.submit(0);
}

/// Reports a suspected DNS tunnel: the workload and zone of the guard's
/// key in `s`, the distinct names counted, and `s.name[..name_len]` as a
/// sample.
#[inline(always)]
pub fn report_tunnel(family: u8, s: &Scratch, name_len: usize, distinct: u32, mode: u8) {
    let key = &s.guard.key;
    // A budget of its own: the workload's own flow events cannot spend it
    // to keep its tunnel out of the log.
    let Some((mut entry, now)) = reserve::<TunnelEvent>(Spend::Alerts, &key.workload) else { return };
    let p = entry.as_mut_ptr();
    let len = name_len.min(NAME_BUF - 3) as u8;
    // Written in place, field by field (no 320-byte value on the stack).
    // SAFETY: `p` points at the reserved entry, sized for a TunnelEvent;
    // the name buffers are NAME_BUF bytes, 8-aligned.
    unsafe {
        addr_of_mut!((*p).ktime_ns).write(now);
        addr_of_mut!((*p).workload).write(key.workload);
        addr_of_mut!((*p).zone).write(key.zone);
        addr_of_mut!((*p).distinct).write(distinct);
        addr_of_mut!((*p).family).write(family);
        addr_of_mut!((*p).mode).write(mode);
        addr_of_mut!((*p).name_len).write(len);
        core::ptr::write_bytes(addr_of_mut!((*p)._pad0).cast::<u8>(), 0, 25);
        addr_of_mut!((*p).kind).write(EVENT_KIND_TUNNEL);
        addr_of_mut!((*p)._pad1).write([0; 3]);
        copy_words(addr_of!(s.name).cast(), addr_of_mut!((*p).name).cast(), NAME_BUF / 8);
    }
    entry.submit(0);
}

/// Copies `n` 8-byte words, one volatile load and store each.
///
/// # Safety
/// Both pointers are valid for `n` words.
#[inline(always)]
unsafe fn copy_words(from: *const u64, to: *mut u64, n: usize) {
    for i in 0..n {
        // SAFETY: per the caller.
        unsafe { to.add(i).write_unaligned(read_volatile(from.add(i))) };
    }
}
