//! Queries leaving a workload for a listed resolver: recorded under an id
//! of the gateway's (see `txid`), so that only an answer to one teaches,
//! and filtered (the query filter lets through names of WebGroups that
//! `permit` rules use).

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use egress_common::{DnsStat, QUERY_FILTER_ENFORCE, QUERY_FILTER_OFF, QueryValue, SlotMeta, Spend, TUNNEL_GUARD_OFF};

use super::guard;
use super::message::{LoadBytes, agent_up, be16, byte, copy_message, message_span, scratch, second_span, stat};
use super::name::{name_groups, read_name};
use super::txid::{IdSwap, record};
use crate::maps::Slot;
use crate::parse::{IPPROTO_UDP, Packet};
use crate::scratch::Scratch;

/// What to do with a query.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum QueryAction {
    /// Let it go to the resolver.
    Forward,
    /// Recorded: let it go to the resolver with the gateway's id written
    /// in (dropped if that fails); a second query of the same TCP segment
    /// likewise (or [`IdSwap::NONE`]).
    Record(IdSwap, IdSwap),
    /// The query filter refuses it: answer REFUSED ([`super::refuse_in_place`]).
    Refuse,
    /// Drop it (refused, and it cannot be answered: DNS over TCP).
    Drop,
}

/// A permitted packet to port 53: record the query if it goes to a listed
/// resolver, and apply the query filter.
#[inline(always)]
pub fn on_query<B: LoadBytes>(bytes: &B, slot_idx: u32, slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> QueryAction {
    if slot.resolvers.get_ptr(pkt.dst).is_none() {
        return QueryAction::Forward;
    }
    let Some(s) = scratch() else {
        return QueryAction::Forward;
    };
    guard::start(s);
    let (off, len) = match message_span(bytes, pkt) {
        Ok(Some(span)) => span,
        Ok(None) => return QueryAction::Forward,
        Err(e) => return unreadable(meta, e),
    };
    // A TCP segment may carry a second whole query after the first (glibc's
    // A and AAAA pair): each is judged and recorded.
    let second = match second_span(bytes, pkt, (off, len)) {
        Ok(span) => span,
        Err(e) => return unreadable(meta, e),
    };
    // Both are judged before either is recorded: a packet that is dropped
    // leaves no query behind.
    let first = match one_query(bytes, slot_idx, slot, meta, pkt, s, off, len) {
        Ok(q) => q,
        Err(action) => return action,
    };
    let Some((off2, len2)) = second else {
        if guard_refuses(meta, pkt) {
            return refusal(pkt);
        }
        return recorded(pkt, off, &first).map_or(QueryAction::Forward, |swap| QueryAction::Record(swap, IdSwap::NONE));
    };
    let then = match one_query(bytes, slot_idx, slot, meta, pkt, s, off2, len2) {
        Ok(q) => q,
        Err(action) => return action,
    };
    if guard_refuses(meta, pkt) {
        return refusal(pkt);
    }
    match (recorded(pkt, off, &first), recorded(pkt, off2, &then)) {
        (Some(a), b) => QueryAction::Record(a, b.unwrap_or(IdSwap::NONE)),
        (None, Some(b)) => QueryAction::Record(b, IdSwap::NONE),
        (None, None) => QueryAction::Forward,
    }
}

/// Whether the tunnel guard refuses the packet's queries (weighed before
/// any is recorded: a refused packet leaves no query behind).
#[inline(always)]
fn guard_refuses(meta: &SlotMeta, pkt: &Packet) -> bool {
    meta.tunnel_guard != TUNNEL_GUARD_OFF && guard::refuses(pkt, meta.tunnel_guard)
}

/// A query that passed the filter: its record and the workload's own id.
struct Checked {
    value: QueryValue,
    workload_id: u16,
}

/// Records a checked query whose message starts at packet offset `off`,
/// if its sender's query budget has room (else it goes on unrecorded).
#[inline(always)]
fn recorded(pkt: &Packet, off: u32, q: &Checked) -> Option<IdSwap> {
    if !crate::budget::spend(Spend::Queries, &pkt.src, 1, 0) {
        stat(DnsStat::OverBudget);
        return None;
    }
    let swap = record(pkt, off, q.workload_id, &q.value);
    if swap.is_some() {
        stat(DnsStat::QueryTracked);
    }
    swap
}

/// One query, the message at packet offset `off` (`len` bytes), judged by
/// the query filter: what to record of it, or what to do with the whole
/// packet instead.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the packet, its message, the live slot and the scratch")]
fn one_query<B: LoadBytes>(
    bytes: &B,
    slot_idx: u32,
    slot: &Slot,
    meta: &SlotMeta,
    pkt: &Packet,
    s: &mut Scratch,
    off: u32,
    len: usize,
) -> Result<Checked, QueryAction> {
    if let Err(e) = copy_message(bytes, s, off, len) {
        return Err(unreadable(meta, e));
    }
    let flags = be16(&s.msg, 2);
    if flags & 0x8000 != 0 || flags & 0x7800 != 0 || be16(&s.msg, 4) != 1 {
        return Err(unreadable(meta, DnsStat::NotDns));
    }
    let name = match read_name(s, len, 12, true) {
        Ok(n) => n,
        Err(e) => return Err(unreadable(meta, e)),
    };
    if !name.clean {
        // Bytes other than letters, digits, `-` and `_`: the name cannot
        // be compared with the WebGroups' patterns.
        return Err(unreadable(meta, DnsStat::BadName));
    }
    if !plain_query(s, name.next, len) {
        return Err(unreadable(meta, DnsStat::NotDns));
    }
    if !agent_up() {
        // Fail closed: with no agent to vouch for it, no lookup is learned.
        stat(DnsStat::AgentDown);
        return match meta.query_filter {
            QUERY_FILTER_ENFORCE => Err(refusal(pkt)),
            _ => Err(QueryAction::Forward),
        };
    }
    if meta.query_filter != QUERY_FILTER_OFF {
        let qtype = be16(&s.msg, name.next);
        // Class IN only: the types allowed are IN's.
        let type_ok = be16(&s.msg, name.next + 2) == CLASS_IN
            && qtype < 256
            && meta.query_types[usize::from(qtype >> 6) & 3] >> (qtype & 63) & 1 != 0;
        if !type_ok {
            stat(DnsStat::QueryType);
        }
        // Only the WebGroups of `permit` rules whose source covers the
        // asking workload count.
        if !type_ok || name_groups(slot_idx, s, name.len) & asker_groups(slot, meta, pkt) == 0 {
            if meta.query_filter == QUERY_FILTER_ENFORCE {
                stat(DnsStat::QueryRefused);
                return Err(refusal(pkt));
            }
            stat(DnsStat::QueryWouldRefuse);
        }
    }
    if meta.tunnel_guard != TUNNEL_GUARD_OFF {
        if meta.query_filter == QUERY_FILTER_OFF {
            // The guard needs the zone that the filter's match finds.
            name_groups(slot_idx, s, name.len);
        }
        guard::note(s, name.len);
    }
    let workload_id = be16(&s.msg, 0);
    let (asker_ifindex, asker_mac) = crate::budget::sender();
    let value = QueryValue {
        name_hash: name.hash,
        // SAFETY: helper without preconditions.
        sent_ns: unsafe { bpf_ktime_get_coarse_ns() },
        qtype: be16(&s.msg, name.next),
        workload_txid_be: workload_id.to_be(),
        asker_ifindex,
        asker_mac,
        _pad: [0; 2],
    };
    Ok(Checked { value, workload_id })
}

/// The class of Internet names.
const CLASS_IN: u16 = 1;

/// Whether the message (`len` bytes, its one question's name ending at
/// `next`) is nothing but the question and, at most, an EDNS OPT record
/// with nothing but a cookie in it ([`plain_opt`]):
/// type and class whole, no answer or authority records, and no byte
/// after the question or the OPT record. Anything else could carry bytes
/// the filter does not judge.
#[inline(always)]
fn plain_query(s: &Scratch, next: usize, len: usize) -> bool {
    let end = next + 4;
    if end > len || be16(&s.msg, 6) != 0 || be16(&s.msg, 8) != 0 {
        return false;
    }
    match be16(&s.msg, 10) {
        0 => end == len,
        // The OPT record: the root name, type 41, then class, TTL and
        // its data's length, the data ending the message.
        1 => {
            byte(&s.msg, end) == 0
                && be16(&s.msg, end + 1) == 41
                && plain_opt(s, end + 5, usize::from(be16(&s.msg, end + 9)))
                && end + 11 + usize::from(be16(&s.msg, end + 9)) == len
        }
        _ => false,
    }
}

/// EDNS option code of a cookie (RFC 7873).
const OPTION_COOKIE: u16 = 10;

/// Whether an OPT record (its TTL at `ttl`, `rdlen` bytes of data after)
/// carries nothing but what a client may set: extended RCODE, version and
/// flags zero but for DO, and no option or one cookie (8 to 40 bytes).
/// Other options could carry bytes the filter does not judge, and some
/// (client subnet) are passed on upstream.
#[inline(always)]
fn plain_opt(s: &Scratch, ttl: usize, rdlen: usize) -> bool {
    // Folded into one word, zero when plain: every branch here would be
    // walked by the verifier for each query of a segment.
    let header = u64::from(be16(&s.msg, ttl)) | u64::from(be16(&s.msg, ttl + 2) & 0x7fff);
    let option = ttl + 6;
    let len = rdlen as u64;
    // Zero for one cookie of 8 to 40 bytes filling the data.
    let over12 = len.wrapping_sub(12);
    let cookie = u64::from(be16(&s.msg, option) ^ OPTION_COOKIE)
        | ((u64::from(be16(&s.msg, option + 2)) + 4) ^ len)
        | (over12 >> 6)
        | (over12.wrapping_add(31) >> 6);
    // All ones unless there is no data (then the cookie does not count).
    let some = ((len | len.wrapping_neg()) >> 63).wrapping_neg();
    let bad = header | (cookie & some);
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&raw const bad) == 0 }
}

/// The WebGroups the workload sending `pkt` may ask for: those of the
/// `permit` rules whose source covers it (none for a workload no rule
/// covers).
#[inline(always)]
fn asker_groups(slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> u64 {
    let class = match crate::classify::src_class(slot, pkt) {
        Some(class) => class,
        None if meta.any_source != 0 => 0,
        None => return 0,
    };
    match slot.src_permit.get_ptr(&class) {
        // SAFETY: value pointer from a successful lookup.
        Some(groups) => unsafe { *groups },
        None => 0,
    }
}

/// A packet to a resolver's port 53 that is not one whole, readable query
/// (a TCP segment holding part of one or several, a first fragment, a
/// message the parser refuses, a name with bytes other than letters,
/// digits, `-` and `_`). Its name cannot be checked, so with the query
/// filter enforcing it is dropped, as a refused query would be (otherwise
/// tunnelling would only need a split message); with the filter monitoring
/// it is forwarded and reported.
#[inline(always)]
fn unreadable(meta: &SlotMeta, why: DnsStat) -> QueryAction {
    unfiltered(meta.query_filter, why)
}

/// A packet to a resolver's port 53 whose query could not be checked (see
/// [`unreadable`]), for `why`, under the live slot's `query_filter`:
/// dropped and counted as refused (enforce), forwarded and counted as
/// would-refuse (monitor), forwarded (off). Also the judge's answer when
/// its tail call into the query program fails.
#[inline(always)]
pub fn unfiltered(query_filter: u8, why: DnsStat) -> QueryAction {
    stat(why);
    match query_filter {
        QUERY_FILTER_ENFORCE => {
            stat(DnsStat::QueryRefused);
            QueryAction::Drop
        }
        QUERY_FILTER_OFF => QueryAction::Forward,
        _ => {
            stat(DnsStat::QueryWouldRefuse);
            QueryAction::Forward
        }
    }
}

/// How a query is refused: a REFUSED answer for UDP, a drop for TCP.
#[inline(always)]
fn refusal(pkt: &Packet) -> QueryAction {
    if pkt.proto == IPPROTO_UDP { QueryAction::Refuse } else { QueryAction::Drop }
}
