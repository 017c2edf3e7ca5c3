//! Connection names (contract section "Connection names"): a TCP flow whose
//! decision can change with its name ([`Classified::needs_name`]) is judged
//! at its first packet by address, then again, by address and name, once
//! its first client message has been read.
//!
//! The reader keeps, per flow (`CONNS`), the next in-order sequence number
//! and the bytes gathered so far. While it reads:
//! - only in-order bytes count; a segment with a gap before it, bytes that
//!   differ from what was read, or URG is dropped (the client retransmits),
//!   and so is a fragment;
//! - a segment that leaves the message unfinished passes under the first
//!   decision; its bytes are kept (`STREAMS`) when there are more to come;
//! - the segment that finishes it (or fills 16 KiB) is judged by the second
//!   decision before it passes: a deny drops it and turns it around into a
//!   reset of the workload's side.
//!
//! The name stays with the flow, so that a flow judged again (after a
//! reload, or when its flow-cache way was taken) keeps the name it gave. A
//! flow whose start was never seen (it began before the agent, or its state
//! was evicted) has no readable name.
//!
//! Modules: `read` (the parsers over the per-CPU scratch), `gather` (the
//! in-order window).

mod gather;
mod read;

pub use read::NameScratch;

use core::ptr::{addr_of, addr_of_mut};

use egress_common::{
    CONN_DONE, CONN_READING, ConnState, FlowKey, FlowValue, NAME_SOURCE_NONE, Reason, RuleInfo,
    SLOT_FLAG_NO_FLOW_CACHE, SlotMeta, Verdict,
};
use gather::Taken;

use crate::classify::{Classified, decide_named};
use crate::dns::LoadBytes;
use crate::flowcache::{self, Probe};
use crate::judge::{Action, action_of, count_reason, count_rule, unjudgeable, verdict_of};
use crate::maps::{EGV6_CONNS, EGV6_SLOT_META, SLOT0, SLOT1, Slot};
use crate::parse::{Cursor, FRAG_FIRST, Packet};

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;

/// Keeps `pkt` in the scratch for the read program, and returns the copy
/// there, which the names program goes on with (its fields are read from
/// the map value, so they are one state for the verifier whichever way the
/// parser took).
#[inline(always)]
pub fn keep_packet(pkt: &Packet) -> Option<&'static Packet> {
    let s = read::scratch()?;
    s.pkt = *pkt;
    Some(&s.pkt)
}

/// The judge's classification of a flow whose name must be read, kept for
/// the names program it hands the packet to (see [`recall`]).
#[repr(C)]
pub struct Early {
    pub key: FlowKey,
    pub c: Classified,
    pub generation: u32,
    pub _pad: u32,
}

/// Keeps the judge's classification of the flow `key` under pack
/// `generation` for the names program.
#[inline(always)]
pub fn remember(key: &FlowKey, c: &Classified, generation: u32) {
    let Some(s) = read::scratch() else { return };
    let e = addr_of_mut!(s.early);
    // SAFETY: the scratch's own field, written in place.
    unsafe {
        addr_of_mut!((*e).key).write(*key);
        addr_of_mut!((*e).c).write(*c);
        addr_of_mut!((*e).generation).write(generation);
    }
}

/// The judge's classification of the flow `key` under pack `generation`,
/// if the scratch holds it (the tail call follows the judge on the same
/// CPU; the key and generation are checked all the same).
#[inline(always)]
pub fn recall(key: &FlowKey, generation: u32) -> Option<Classified> {
    let s = read::scratch()?;
    let e = &s.early;
    let (a, b) = (key.words(), e.key.words());
    let differ = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]);
    (differ == 0 && e.generation == generation).then_some(e.c)
}

/// The packet the names program handed on.
#[inline(always)]
pub fn handed_packet() -> Option<&'static Packet> {
    read::scratch().map(|s| &s.pkt)
}

/// What the TCP header says of a segment.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Payload bytes (from the IP lengths).
    pub payload: u32,
}

impl Segment {
    #[inline(always)]
    fn read(cur: &Cursor, pkt: &Packet) -> Option<Segment> {
        // Bounded for the verifier: a header it reads lies in the first
        // bytes (those made linear), never near 64 KiB.
        let l4 = pkt.l4_off as usize;
        if l4 >= 1024 {
            return None;
        }
        let hdr: [u8; 14] = cur.read(l4 & 1023).ok()?;
        let payload = u32::from(pkt.ip_end).saturating_sub(u32::from(pkt.payload_off));
        Some(Segment {
            seq: u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]),
            ack: u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            flags: hdr[13],
            payload,
        })
    }
}

/// The flow a packet belongs to, as the reader needs it.
pub struct Flow<'a> {
    pub slot_idx: u32,
    pub slot: &'a Slot,
    pub meta: &'a SlotMeta,
    pub pkt: &'a Packet,
    pub key: &'a FlowKey,
    pub probe: &'a Probe,
    pub c: &'a Classified,
    pub len: u32,
    pub ifindex: u32,
}

/// What the names program hands the read program (in the scratch, with
/// the packet: see [`launder`]).
#[repr(C)]
pub struct Handoff {
    pub key: FlowKey,
    pub c: Classified,
    pub seg: Segment,
    pub slot_idx: u32,
    pub generation: u32,
    /// 1: gather the segment's bytes and read; 0: judge by the name held.
    pub gather: u32,
}

/// The names program's part: a packet of a flow whose name must be read.
/// What needs no bytes of the message is done here (the flow's start, its
/// first decision while it waits, what is dropped at a glance); the rest
/// is handed to the read program ([`Action::Read`]).
#[inline(always)]
pub fn judge_named(cur: &Cursor, f: &Flow) -> Action {
    let Some(seg) = Segment::read(cur, f.pkt) else {
        return unjudgeable(f.slot, f.meta, f.pkt, Reason::Truncated, f.ifindex);
    };
    let Some(rule) = f.slot.rules.get(f.c.rule) else {
        return unjudgeable(f.slot, f.meta, f.pkt, Reason::BadPack, f.ifindex);
    };
    let Some(st) = EGV6_CONNS.get_ptr_mut(f.key) else {
        return unknown_flow(f, rule, &seg);
    };
    // SAFETY: value pointer from a successful lookup; this flow's packets
    // are judged one at a time on one CPU in the common case, and a racing
    // packet of the same flow at worst reads a half-updated window, which
    // the retransmission repairs.
    let st = unsafe { &mut *st };
    if st.status == CONN_DONE {
        return hand_off(f, &seg, false);
    }
    if seg.flags & TCP_SYN != 0 && seg.payload == 0 && st.read == 0 {
        // A retransmitted SYN (its sequence number may be new).
        st.next_seq = seg.seq.wrapping_add(1);
    }
    if seg.flags & TCP_RST != 0 || seg.payload == 0 {
        // No bytes for the server to read (a reset's payload is never read).
        return first(f, rule, false);
    }
    // Bytes in a SYN (TCP Fast Open) would reach the server unread: the
    // client sends them again after the handshake.
    if seg.flags & (TCP_URG | TCP_SYN) != 0 || f.pkt.frag == FRAG_FIRST {
        count_reason(Reason::StreamDropped);
        return Action::Drop;
    }
    hand_off(f, &seg, true)
}

/// Writes the [`Handoff`] for the read program.
#[inline(always)]
fn hand_off(f: &Flow, seg: &Segment, gather: bool) -> Action {
    let Some(s) = read::scratch() else { return Action::Drop };
    let h = addr_of_mut!(s.hand);
    // SAFETY: the scratch's own hand-off, written in place.
    unsafe {
        addr_of_mut!((*h).key).write(*f.key);
        addr_of_mut!((*h).c).write(*f.c);
        addr_of_mut!((*h).seg).write(*seg);
        addr_of_mut!((*h).slot_idx).write(f.slot_idx);
        addr_of_mut!((*h).generation).write(f.meta.generation);
        addr_of_mut!((*h).gather).write(u32::from(gather));
    }
    Action::Read
}

/// The read program's part: the hand-off in the scratch, judged. The live
/// pack must still be the one the names program judged by; if it changed,
/// the segment is dropped and judged afresh when it comes again.
#[inline(always)]
pub fn read_and_judge<B: LoadBytes>(bytes: &B, len: u32, ifindex: u32) -> Action {
    let Some(s) = read::scratch() else { return Action::Drop };
    if s.hand.slot_idx == 0 { read_in(bytes, 0, &SLOT0, len, ifindex) } else { read_in(bytes, 1, &SLOT1, len, ifindex) }
}

#[inline(always)]
fn read_in<B: LoadBytes>(bytes: &B, slot_idx: u32, slot: &Slot, len: u32, ifindex: u32) -> Action {
    let Some(s) = read::scratch() else { return Action::Drop };
    let Some(meta) = EGV6_SLOT_META.get(slot_idx) else { return Action::Drop };
    let sp: *mut NameScratch = s;
    // SAFETY: the hand-off and the packet are fields of the scratch that
    // the reader below never writes (it writes the window, the comparison
    // bytes, the walks and the name).
    let (h, pkt) = unsafe { (&*addr_of!((*sp).hand), &*addr_of!((*sp).pkt)) };
    if meta.generation != h.generation {
        return Action::Drop;
    }
    let Some(st) = EGV6_CONNS.get_ptr_mut(&h.key) else { return Action::Drop };
    // SAFETY: as in `judge_named`.
    let st = unsafe { &mut *st };
    let probe = Probe::new(&h.key, meta.flow_seed);
    let f = Flow { slot_idx, slot, meta, pkt, key: &h.key, probe: &probe, c: &h.c, len, ifindex };
    if h.gather == 0 {
        return second(&f, st, None);
    }
    let seg = h.seg;
    let Some(rule) = slot.rules.get(h.c.rule) else {
        return unjudgeable(slot, meta, pkt, Reason::BadPack, ifindex);
    };
    // SAFETY: see above: `take` and `read_name` touch other fields.
    let s = unsafe { &mut *sp };
    match gather::take(bytes, s, &h.key, st, seg.seq, u32::from(pkt.payload_off), seg.payload) {
        Taken::Refused => {
            count_reason(Reason::StreamDropped);
            Action::Drop
        }
        Taken::Old => first(&f, rule, false),
        Taken::Lost => {
            read::keep_name(s, st, Reason::NameUnreadable, NAME_SOURCE_NONE);
            st.status = CONN_DONE;
            second(&f, st, Some(&seg))
        }
        Taken::New => match read::read_name(s, st.read) {
            None => {
                if gather::save(s, &h.key) {
                    st.buffered = 1;
                    first(&f, rule, false)
                } else {
                    read::keep_name(s, st, Reason::NameUnreadable, NAME_SOURCE_NONE);
                    st.status = CONN_DONE;
                    second(&f, st, Some(&seg))
                }
            }
            Some((reason, source)) => {
                read::keep_name(s, st, reason, source);
                st.status = CONN_DONE;
                if st.buffered != 0 {
                    gather::forget(&h.key);
                }
                second(&f, st, Some(&seg))
            }
        },
    }
}

/// A packet of a flow the reader has no state for: its SYN starts one;
/// anything else is a flow whose start was not seen, judged without a name.
#[inline(always)]
fn unknown_flow(f: &Flow, rule: &RuleInfo, seg: &Segment) -> Action {
    let Some(s) = read::scratch() else {
        return first(f, rule, true);
    };
    let conn = addr_of_mut!(s.conn);
    let syn = seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if syn && seg.payload != 0 {
        // Fast Open data would reach the server unread: the client sends it
        // again after a plain handshake.
        count_reason(Reason::StreamDropped);
        return Action::Drop;
    }
    // SAFETY: the scratch's own connection state, written in place.
    unsafe {
        addr_of_mut!((*conn).next_seq).write(seg.seq.wrapping_add(1));
        addr_of_mut!((*conn).read).write(0);
        addr_of_mut!((*conn).status).write(if syn { CONN_READING } else { CONN_DONE });
        addr_of_mut!((*conn).buffered).write(0);
        addr_of_mut!((*conn)._pad).write([0; 3]);
    }
    s.name.len = 0;
    read::keep_name(s, conn, Reason::NameUnreadable, NAME_SOURCE_NONE);
    if syn {
        let action = first(f, rule, true);
        if action != Action::Drop {
            let _ = EGV6_CONNS.insert(f.key, &s.conn, 0);
        }
        return action;
    }
    let _ = EGV6_CONNS.insert(f.key, &s.conn, 0);
    hand_off(f, seg, false)
}

/// The first decision, while the name is read: counted and acted on, not
/// cached (the flow's next packets come back to the reader); reported for
/// the flow's first packet as any new flow's.
#[inline(always)]
fn first(f: &Flow, rule: &RuleInfo, new_flow: bool) -> Action {
    let verdict = verdict_of(rule);
    count_reason(if new_flow { Reason::Rule } else { Reason::NameWaiting });
    count_rule(f.slot, rule.counter, verdict, f.len, new_flow);
    if new_flow && (rule.log != 0 || verdict != Verdict::Allowed) {
        let (sport_be, dport_be) = (f.key.sport_be, f.key.dport_be);
        crate::events::report_flow(
            f.pkt,
            sport_be,
            dport_be,
            verdict,
            Reason::Rule,
            f.c.rule,
            f.meta.generation,
            f.ifindex,
        );
    }
    action_of(verdict)
}

/// The second decision, by address and the flow's name (`st`): cached.
/// `just_read`: this segment finished the message (reported, and reset
/// when denied); otherwise the flow is judged again (a reload, an evicted
/// cache way) and a deny drops.
#[inline(always)]
fn second(f: &Flow, st: &ConnState, just_read: Option<&Segment>) -> Action {
    let named = if st.name_len == 0 { 0 } else { crate::dns::groups_of_name(f.slot_idx, &st.name, st.name_len) };
    let rule_idx = decide_named(f.slot_idx, f.c, named);
    let Some(rule) = f.slot.rules.get(rule_idx) else {
        return unjudgeable(f.slot, f.meta, f.pkt, Reason::BadPack, f.ifindex);
    };
    let verdict = verdict_of(rule);
    let reason = match st.reason {
        r if r == Reason::NameRead as u8 => Reason::NameRead,
        r if r == Reason::NameMissing as u8 => Reason::NameMissing,
        _ => Reason::NameUnreadable,
    };
    count_reason(reason);
    count_rule(f.slot, rule.counter, verdict, f.len, just_read.is_some() && rule_idx != f.c.rule);
    let value = FlowValue { generation: f.meta.generation, counter: rule.counter, verdict: verdict as u32 };
    if f.meta.flags & SLOT_FLAG_NO_FLOW_CACHE == 0 {
        flowcache::insert(f.probe, &value);
    }
    if f.pkt.frag == FRAG_FIRST {
        crate::judge::remember_first(f.pkt, &value);
    }
    let Some(seg) = just_read else { return action_of(verdict) };
    if rule.log != 0 || verdict != Verdict::Allowed || rule_idx != f.c.rule {
        crate::events::report_named(f.pkt, f.key, verdict, reason, rule_idx, f.meta.generation, f.ifindex, st);
    }
    if verdict.drops() {
        Action::Reset(crate::turn::ResetAt::answering(seg.seq, seg.ack, seg.payload))
    } else {
        Action::Pass
    }
}
