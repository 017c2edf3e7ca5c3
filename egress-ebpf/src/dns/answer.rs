//! Answers on their way back to a workload: an answer from a listed
//! resolver to an outstanding query (named by the gateway's transaction
//! id, which it carries) teaches the addresses on the question's CNAME
//! chain, for the WebGroups whose patterns cover the question's name, to
//! the workload that asked; and gets the workload's own id back.
//!
//! The records are read whole first (any malformation fails the whole
//! message); only then is anything learned. Reading a record, learning an
//! address and sending the answer's event are `bpf_loop` callbacks: each is
//! verified once, and their frames are their own (the caller's is near the
//! 512-byte stack); what they need is in the scratch.

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use aya_ebpf::helpers::{bpf_ktime_get_coarse_ns, bpf_loop};
use egress_common::addr::ipv4_mapped;
use egress_common::{
    DnsStat, LearnKey, LearnValue, NAME_BUF, QUERY_TIMEOUT_NS, QueryValue, SlotMeta, Spend, clamp_ttl,
};

use super::message::{LoadBytes, agent_up, be16, byte, copy_message, failed, message_span, scratch, second_span, stat};
use super::name::{Name, name_groups, read_name};
use super::txid::{IdSwap, claim, claim_at};
use crate::maps::{EGV6_LEARNED, EGV6_LNAMES, Slot};
use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Packet};
use crate::scratch::{DONE, FAILED, MAX_CHAIN, MAX_LEARN, RUNNING, Scratch, vget, vset};

/// Answer records examined at most.
const MAX_RR: usize = 32;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

/// A packet leaving the LAN interface towards a workload: if it is an
/// answer from a listed resolver to an outstanding query, learn from it.
/// The swap that gives the workload its own transaction id back, for the
/// caller to write, whenever the answer named an outstanding query (taught
/// from or not); an answer that names none is left as it is. And whether
/// the answer taught (`s.report` says what).
#[inline(always)]
pub fn on_answer<B: LoadBytes>(
    bytes: &B,
    slot_idx: u32,
    slot: &Slot,
    meta: &SlotMeta,
    pkt: &Packet,
) -> (Option<IdSwap>, bool) {
    if (pkt.proto != IPPROTO_UDP && pkt.proto != IPPROTO_TCP) || pkt.sport != 53 || !pkt.has_l4() {
        return (None, false);
    }
    // Only from a listed resolver.
    if slot.resolvers.get_ptr(pkt.src).is_none() {
        return (None, false);
    }
    let claimed = claim(bytes, pkt);
    let (swap, query) = match claimed {
        Some((swap, query)) => (Some(swap), Some(query)),
        None => (None, None),
    };
    let span = match message_span(bytes, pkt) {
        Ok(Some(span)) => span,
        Ok(None) => return (swap, false),
        Err(e) => {
            stat(e);
            return (swap, false);
        }
    };
    stat(DnsStat::AnswerSeen);
    if !agent_up() {
        stat(DnsStat::AgentDown);
        return (swap, false);
    }
    let Some(s) = scratch() else {
        return (swap, false);
    };
    match learn(bytes, slot_idx, meta, pkt, s, span, query.as_ref()) {
        Ok(()) => (swap, true),
        Err(e) => {
            stat(e);
            (swap, false)
        }
    }
}

/// The second of two whole answers in one TCP segment from a listed
/// resolver (resolvers may write the answers to glibc's A and AAAA pair
/// together): learned from like the first, in a program of its own (the
/// answer program reaches it by tail call: learning twice in one program
/// is past the verifier's budget). The swap that gives it its workload's id
/// back, or [`IdSwap::NONE`].
#[inline(always)]
pub fn on_second_answer<B: LoadBytes>(bytes: &B, slot_idx: u32, slot: &Slot, meta: &SlotMeta, pkt: &Packet) -> IdSwap {
    if pkt.proto != IPPROTO_TCP || pkt.sport != 53 || !pkt.has_l4() || slot.resolvers.get_ptr(pkt.src).is_none() {
        return IdSwap::NONE;
    }
    let Ok(Some(first)) = message_span(bytes, pkt) else { return IdSwap::NONE };
    let Ok(Some(second)) = second_span(bytes, pkt, first) else { return IdSwap::NONE };
    let Some((swap, query)) = claim_at(bytes, pkt, second.0 - 2) else { return IdSwap::NONE };
    stat(DnsStat::AnswerSeen);
    if !agent_up() {
        stat(DnsStat::AgentDown);
        return swap;
    }
    let Some(s) = scratch() else { return swap };
    if let Err(e) = learn(bytes, slot_idx, meta, pkt, s, second, Some(&query)) {
        stat(e);
    }
    swap
}

/// One answer record: on the question's CNAME chain, a CNAME extends the
/// chain and an A or AAAA is collected; off the chain, addresses are
/// counted and ignored. Any malformation fails the whole message.
extern "C" fn record_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    if index >= s.records.ancount {
        s.records.status = DONE;
        return 1;
    }
    match record(s) {
        Ok(()) => 0,
        Err(e) => {
            s.records.status = FAILED + e as u64;
            1
        }
    }
}

#[inline(always)]
fn record(s: &mut Scratch) -> Result<(), DnsStat> {
    let len = s.records.len as usize;
    if s.records.at as usize >= len {
        // ANCOUNT promises more records than the message holds.
        return Err(DnsStat::Malformed);
    }
    let at = s.records.at as usize;
    let owner = match chain_pointer(s, len, at) {
        Some(name) => name,
        None => read_name(s, len, at, false)?,
    };
    let fixed = owner.next;
    if fixed + 10 > len {
        return Err(DnsStat::Malformed);
    }
    let rtype = be16(&s.msg, fixed);
    let ttl = u32::from_be_bytes([
        byte(&s.msg, fixed + 4),
        byte(&s.msg, fixed + 5),
        byte(&s.msg, fixed + 6),
        byte(&s.msg, fixed + 7),
    ]);
    let rdlen = be16(&s.msg, fixed + 8) as usize;
    let rdata = fixed + 10;
    if rdata + rdlen > len {
        return Err(DnsStat::Malformed);
    }
    s.records.at = (rdata + rdlen) as u64;
    let chain_len = s.records.chain_len as usize;
    let mut on_chain = false;
    for c in 0..MAX_CHAIN {
        if c < chain_len && s.chain[c] == owner.hash {
            on_chain = true;
        }
    }
    if on_chain && !owner.clean {
        // A record that would teach, under a name with unreadable bytes
        // (whose hash a clean name can share: `a.b` as one label).
        return Err(DnsStat::BadName);
    }
    if rtype == TYPE_A || rtype == TYPE_AAAA {
        let want = if rtype == TYPE_A { 4 } else { 16 };
        if rdlen != want {
            return Err(DnsStat::BadRdata);
        }
        let found = s.records.found as usize;
        if !on_chain {
            stat(DnsStat::OffChain);
        } else if found < MAX_LEARN {
            let slot = found & (MAX_LEARN - 1);
            if rtype == TYPE_A {
                // The prefix, then the address bytes read straight into
                // place (reading them first costs the callback more stack).
                s.addrs[slot] = ipv4_mapped([0; 4]);
                for b in 0..4 {
                    s.addrs[slot][12 + b] = byte(&s.msg, rdata + b);
                }
            } else {
                for b in 0..16 {
                    s.addrs[slot][b] = byte(&s.msg, rdata + b);
                }
            }
            s.ttls[slot] = ttl;
            s.records.found += 1;
        }
    } else if rtype == TYPE_CNAME && on_chain && chain_len < MAX_CHAIN {
        let target = read_name(s, len, rdata, false)?;
        if !target.clean {
            return Err(DnsStat::BadName);
        }
        s.chain[chain_len & (MAX_CHAIN - 1)] = target.hash;
        s.chain_at[chain_len & (MAX_CHAIN - 1)] = rdata as u64;
        s.records.chain_len += 1;
    }
    Ok(())
}

/// The owner name at `at` when it is only a compression pointer to where
/// a chain name starts (as answers write it: `c0 0c` for the question):
/// that name, already read and clean, without a walk.
#[inline(always)]
fn chain_pointer(s: &Scratch, len: usize, at: usize) -> Option<Name> {
    if at + 2 > len || byte(&s.msg, at) & 0xc0 != 0xc0 {
        return None;
    }
    let target = (u64::from(byte(&s.msg, at) & 0x3f) << 8) | u64::from(byte(&s.msg, at + 1));
    let chain_len = s.records.chain_len as usize;
    let mut found = None;
    for c in 0..MAX_CHAIN {
        if c < chain_len && s.chain_at[c] == target {
            found = Some(s.chain[c]);
        }
    }
    found.map(|hash| Name { len: 0, next: at + 2, hash, clean: true })
}

#[inline(always)]
fn learn<B: LoadBytes>(
    bytes: &B,
    slot_idx: u32,
    meta: &SlotMeta,
    pkt: &Packet,
    s: &mut Scratch,
    (off, len): (u32, usize),
    query: Option<&QueryValue>,
) -> Result<(), DnsStat> {
    copy_message(bytes, s, off, len)?;
    let flags = be16(&s.msg, 2);
    if flags & 0x8000 == 0 || flags & 0x7800 != 0 || be16(&s.msg, 4) != 1 {
        return Err(DnsStat::NotDns);
    }
    // Only an answer carrying the gateway's id of a query seen leaving for
    // this resolver teaches, once (see `txid::claim`).
    let Some(query) = query else {
        return Err(DnsStat::Unsolicited);
    };
    // The coarse clock, as every DNS and learning stamp (a tick's
    // resolution against timeouts of seconds; a fine read costs more than
    // the rest of a record). A query stamped later than now (by a finer
    // clock: the lab's) is not old.
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.saturating_sub(query.sent_ns) > QUERY_TIMEOUT_NS {
        return Err(DnsStat::Unsolicited);
    }
    // The name is copied over whatever an earlier one left in the buffer:
    // only its `len` bytes are read, unless it is stored (below).
    let question = read_name(s, len, 12, true)?;
    if question.next + 4 > len {
        return Err(DnsStat::Malformed);
    }
    let qtype = be16(&s.msg, question.next);
    if question.hash != query.name_hash || qtype != query.qtype {
        return Err(DnsStat::QuestionMismatch);
    }
    if !question.clean {
        // Unreadable bytes: a leading NUL would vanish into the key's zero
        // padding, a `.` inside a label would read as a separator.
        return Err(DnsStat::BadName);
    }
    if flags & 0x000f != 0 {
        return Err(DnsStat::NoAnswer);
    }
    let groups = name_groups(slot_idx, s, question.len);
    if groups == 0 {
        return Err(DnsStat::NoWebGroup);
    }
    let ancount = u64::from(be16(&s.msg, 6));
    if ancount > MAX_RR as u64 {
        return Err(DnsStat::Malformed);
    }
    // Pass 1: read every answer record; collect on-chain addresses.
    let r = &raw mut s.records;
    // SAFETY: as in `read_name`: volatile hand-over through the scratch.
    let (status, found) = unsafe {
        vset(addr_of_mut!(s.chain[0]), question.hash);
        vset(addr_of_mut!(s.chain_at[0]), 12);
        vset(addr_of_mut!((*r).len), len as u64);
        vset(addr_of_mut!((*r).at), (question.next + 4) as u64);
        vset(addr_of_mut!((*r).chain_len), 1);
        vset(addr_of_mut!((*r).found), 0);
        vset(addr_of_mut!((*r).status), RUNNING);
        vset(addr_of_mut!((*r).ancount), ancount);
        bpf_loop(MAX_RR as u32 + 1, record_step as *mut c_void, core::ptr::null_mut(), 0);
        (vget(addr_of!((*r).status)), vget(addr_of!((*r).found)))
    };
    match status {
        DONE => {}
        code => return Err(failed(code).unwrap_or(DnsStat::Malformed)),
    }
    let found = found as usize;
    if found == 0 {
        return Err(DnsStat::NoAnswer);
    }
    paid_for(pkt, found, query)?;
    // Pass 2: the whole answer section parsed; learn. Each address is
    // learned in a `bpf_loop` callback, and the answer's event sent from
    // another: their frames are their own (this one is near the 512-byte
    // stack), and what they need is in the scratch.
    store_name(s, question.hash, question.len);
    let r = addr_of_mut!(s.report);
    // SAFETY: fields of the per-CPU scratch; volatile so the callbacks see them.
    unsafe {
        let w = addr_of_mut!((*r).workload).cast::<u8>();
        for b in 0..16 {
            vset(w.add(b), pkt.dst[b]);
        }
        vset(addr_of_mut!((*r).groups), groups);
        vset(addr_of_mut!((*r).name_hash), question.hash);
        vset(addr_of_mut!((*r).found), found as u32);
        vset(addr_of_mut!((*r).min_ttl), meta.min_ttl);
        vset(addr_of_mut!((*r).max_ttl), meta.max_ttl);
        vset(addr_of_mut!((*r).family), u32::from(pkt.family));
        vset(addr_of_mut!((*r).now), now);
        bpf_loop(MAX_LEARN as u32, learn_step as *mut c_void, core::ptr::null_mut(), 0);
        bpf_loop(1, report_step as *mut c_void, core::ptr::null_mut(), 0);
    }
    Ok(())
}

/// Stores the question's name (`len` bytes in the scratch, FNV-1a `hash`)
/// in the learned-name table, unless it is there already (a name asked
/// again: a lookup costs less than writing its 256 bytes anew). A new one
/// is stored zero-padded: its tail is cleared first, from the scratch's
/// zeros, in one copy.
#[inline(always)]
fn store_name(s: &mut Scratch, hash: u64, len: usize) {
    if EGV6_LNAMES.get_ptr(&hash).is_some() {
        return;
    }
    let r = addr_of_mut!(s.report);
    // SAFETY: a field of the per-CPU scratch.
    let at = unsafe {
        vset(addr_of_mut!((*r).name_len), len as u64);
        vget(addr_of!((*r).name_len)) as usize & 0xff
    };
    // SAFETY: `at` < 256 into the name, `NAME_BUF - at` bytes from the
    // zeros (the verifier sees at most 256 more bytes, which the scratch
    // holds past the name: the key).
    unsafe {
        let dst = s.name.as_mut_ptr().add(at).cast::<c_void>();
        bpf_probe_read_kernel(dst, (NAME_BUF - at) as u32, s.zeros.as_ptr().cast::<c_void>());
    }
    let _ = EGV6_LNAMES.insert(&hash, &s.name, 0);
}

/// Pays for learning `found` addresses for the workload `pkt` goes to, from
/// the learned-address budgets of that address and of the host that sent
/// the `query` (a workload that forges a neighbour's source address spends
/// its own, not the neighbour's), and everyone's.
#[inline(always)]
fn paid_for(pkt: &Packet, found: usize, query: &QueryValue) -> Result<(), DnsStat> {
    crate::budget::note_sender(query.asker_ifindex, &query.asker_mac);
    if crate::budget::spend(Spend::Learned, &pkt.dst, found as u64, 0) { Ok(()) } else { Err(DnsStat::OverBudget) }
}

/// Sends the event of what an answer taught (see [`Report`]).
extern "C" fn report_step(_index: u64, _ctx: *mut c_void) -> i64 {
    if let Some(s) = scratch() {
        crate::events::report_learn(s);
    }
    1
}

/// Learns address `index` of the answer (see [`Report`]); stops past the last.
extern "C" fn learn_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let i = index as usize;
    if i >= MAX_LEARN || i as u32 >= s.report.found {
        return 1;
    }
    let r = &s.report;
    let ttl = clamp_ttl(s.ttls[i], r.min_ttl, r.max_ttl);
    let key = LearnKey { workload: r.workload, addr: s.addrs[i] };
    let expires_ns = r.now + u64::from(ttl) * 1_000_000_000;
    if let Some(old) = EGV6_LEARNED.get_ptr_mut(&key) {
        // Updated in place: one lookup, no new element. A reader on another
        // CPU sees the old entry, the new one, or (between the writes) the
        // new groups under the old expiry: never groups the name lacks
        // with a time it was not given.
        // SAFETY: value pointer from a successful lookup.
        unsafe {
            if (*old).expires_ns > r.now {
                (*old).groups |= r.groups;
                if expires_ns > (*old).expires_ns {
                    (*old).expires_ns = expires_ns;
                }
            } else {
                (*old).groups = r.groups;
                (*old).expires_ns = expires_ns;
            }
            (*old).name_hash = r.name_hash;
        }
    } else {
        stat(DnsStat::AddressNew);
        let value = LearnValue { groups: r.groups, expires_ns, name_hash: r.name_hash };
        let _ = EGV6_LEARNED.insert(&key, &value, 0);
    }
    stat(DnsStat::AddressLearned);
    0
}
