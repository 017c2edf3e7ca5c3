//! DNS in the datapath: queries leaving a workload for a listed resolver
//! are recorded (and filtered); answers on their way back teach the
//! addresses of the question's name, for the workload that asked, before the
//! answer is forwarded.
//!
//! The message is copied into a per-CPU scratch buffer and parsed there with
//! masked indices. Names are compared in full (lowercased, right-aligned in
//! a 256-byte key), never by hash alone; the hash only ties an answer to the
//! question that was asked and tracks the CNAME chain inside one message.

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_loop};
use egress_common::{
    DnsStat, FNV_OFFSET, LearnKey, LearnValue, NAME_ANY_DEPTH, NAME_BUF, NAME_EXACT, NAME_ONE_LABEL,
    QUERY_FILTER_ENFORCE, QUERY_FILTER_OFF, QUERY_TIMEOUT_NS, QueryKey, QueryValue, SlotMeta, fnv1a_step,
};

use crate::maps::{
    EGV2_AGENT, EGV2_DNS_STATS, EGV2_LEARNED, EGV2_LNAMES, EGV2_QUERIES, EGV2_SCRATCH, SLOT0, SLOT1, Slot,
};
use crate::parse::{IPPROTO_TCP, IPPROTO_UDP, Packet};

/// Largest DNS message parsed (bigger ones teach nothing).
pub const MSG_MAX: usize = 4096;
const MSG_MASK: usize = MSG_MAX - 1;
/// Answer records examined at most.
const MAX_RR: usize = 32;
/// Addresses learned from one answer at most.
pub const MAX_LEARN: usize = 32;
/// CNAME chain names tracked at most.
pub const MAX_CHAIN: usize = 8;
/// Iterations of the name loop: 253 characters, 127 length bytes, pointers.
const NAME_STEPS: usize = 400;
/// Compression pointers followed in one name at most.
const MAX_POINTERS: u32 = 16;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

/// Per-CPU working memory (too large for the 512-byte stack), and the
/// state of the `bpf_loop` walkers, which reach it from their callbacks.
#[repr(C)]
pub struct Scratch {
    pub msg: [u8; MSG_MAX],
    pub name: [u8; NAME_BUF],
    pub key: [u8; NAME_BUF],
    pub addrs: [[u8; 16]; MAX_LEARN],
    pub ttls: [u32; MAX_LEARN],
    pub chain: [u64; MAX_CHAIN],
    pub walk: Walk,
    pub scan: Scan,
    pub records: Records,
    /// What the last answer taught, for its flow-log event.
    pub report: Report,
}

/// What an answer taught, handed to [`report_step`] for its event.
#[repr(C)]
pub struct Report {
    pub workload: [u8; 16],
    pub groups: u64,
    pub name_hash: u64,
    pub found: u32,
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub family: u32,
    /// `bpf_ktime_get_ns` when the answer was judged.
    pub now: u64,
}

/// State of a name walk ([`read_name`]).
#[repr(C)]
pub struct Walk {
    len: u64,
    pos: u64,
    lowest: u64,
    next: u64,
    label_left: u64,
    olen: u64,
    hash: u64,
    pointers: u64,
    jumped: u64,
    copy: u64,
    /// 0 running, 1 done, `2 + DnsStat` failed.
    status: u64,
}

/// State of the suffix scan ([`name_groups`]).
#[repr(C)]
pub struct Scan {
    i: u64,
    labels: u64,
    groups: u64,
    slot: u64,
}

/// State of the answer-record walk ([`learn`]).
#[repr(C)]
pub struct Records {
    len: u64,
    at: u64,
    chain_len: u64,
    found: u64,
    /// 0 running, 1 done, `2 + DnsStat` failed.
    status: u64,
    ancount: u64,
}

/// Volatile store (state handed to a `bpf_loop` callback).
///
/// # Safety
/// `p` must be valid for writes.
#[inline(always)]
unsafe fn vset<T>(p: *mut T, v: T) {
    // SAFETY: per the caller.
    unsafe { core::ptr::write_volatile(p, v) }
}

/// Volatile load (state a `bpf_loop` callback produced).
///
/// # Safety
/// `p` must be valid for reads.
#[inline(always)]
unsafe fn vget<T>(p: *const T) -> T {
    // SAFETY: per the caller.
    unsafe { core::ptr::read_volatile(p) }
}

const RUNNING: u64 = 0;
const DONE: u64 = 1;

#[inline(always)]
fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU scratch, used by one program run at a time.
    EGV2_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn failed(code: u64) -> Option<DnsStat> {
    match code {
        c if c == 2 + DnsStat::BadPointer as u64 => Some(DnsStat::BadPointer),
        c if c == 2 + DnsStat::BadName as u64 => Some(DnsStat::BadName),
        c if c == 2 + DnsStat::BadRdata as u64 => Some(DnsStat::BadRdata),
        c if c == 2 + DnsStat::Malformed as u64 => Some(DnsStat::Malformed),
        _ => None,
    }
}

/// Reads packet bytes into memory (skb or XDP helper).
pub trait LoadBytes {
    /// Copies `len` bytes at `offset` to `dst`; false on failure.
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool;
}

/// What to do with a query.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum QueryAction {
    /// Let it go to the resolver.
    Forward,
    /// The query filter refuses it: answer REFUSED ([`refuse_in_place`]).
    Refuse,
    /// Drop it (refused, and it cannot be answered: DNS over TCP).
    Drop,
}

/// Counts a DNS event.
#[inline(always)]
pub fn stat(s: DnsStat) {
    if let Some(cell) = EGV2_DNS_STATS.get_ptr_mut(s as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
}

#[inline(always)]
fn byte(msg: &[u8; MSG_MAX], i: usize) -> u8 {
    // SAFETY: the index is masked into the buffer.
    unsafe { *msg.get_unchecked(i & MSG_MASK) }
}

#[inline(always)]
fn be16(msg: &[u8; MSG_MAX], i: usize) -> u16 {
    u16::from_be_bytes([byte(msg, i), byte(msg, i + 1)])
}

/// A name read from the message.
#[derive(Clone, Copy)]
struct Name {
    /// Text length (copied names only).
    len: usize,
    /// Offset just after the name where it started.
    next: usize,
    /// FNV-1a of the lowercase dotted name.
    hash: u64,
}

/// One step of a name walk: one character, length byte or pointer.
extern "C" fn name_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let w = &mut s.walk;
    let fail = |w: &mut Walk, e: DnsStat| {
        w.status = 2 + e as u64;
        1
    };
    if w.pos >= w.len {
        // The name runs off the end: no root label.
        return fail(w, DnsStat::BadName);
    }
    let b = byte(&s.msg, w.pos as usize);
    if w.label_left > 0 {
        let c = if b.is_ascii_uppercase() { b + 32 } else { b };
        if w.copy != 0 {
            // SAFETY: masked index; olen stays below 253 (checked per label).
            unsafe { *s.name.get_unchecked_mut((w.olen as usize) & 0xff) = c };
        }
        w.hash = fnv1a_step(w.hash, c);
        w.olen += 1;
        w.label_left -= 1;
        w.pos += 1;
        return 0;
    }
    if b == 0 {
        if w.jumped == 0 {
            w.next = w.pos + 1;
        }
        w.status = DONE;
        return 1;
    }
    if b & 0xc0 == 0xc0 {
        if w.pos + 1 >= w.len {
            return fail(w, DnsStat::BadPointer);
        }
        // Pointers must go strictly before everything read for this name:
        // no loops, no forward or self pointers, never past the end.
        let target = (((b & 0x3f) as u64) << 8) | byte(&s.msg, w.pos as usize + 1) as u64;
        w.pointers += 1;
        if target >= w.lowest || w.pointers > MAX_POINTERS as u64 {
            return fail(w, DnsStat::BadPointer);
        }
        if w.jumped == 0 {
            w.next = w.pos + 2;
            w.jumped = 1;
        }
        w.lowest = target;
        w.pos = target;
        return 0;
    }
    if b & 0xc0 != 0 {
        // 64..=191: labels over 63 bytes and extended label types.
        return fail(w, DnsStat::BadName);
    }
    if w.olen != 0 {
        if w.copy != 0 {
            // SAFETY: masked index.
            unsafe { *s.name.get_unchecked_mut((w.olen as usize) & 0xff) = b'.' };
        }
        w.hash = fnv1a_step(w.hash, b'.');
        w.olen += 1;
    }
    if w.olen + b as u64 > (NAME_BUF - 3) as u64 {
        return fail(w, DnsStat::BadName);
    }
    w.label_left = b as u64;
    w.pos += 1;
    0
}

/// Reads the name at `start`, following compression pointers. With `copy`,
/// writes the lowercase dotted name into `s.name`.
#[inline(always)]
fn read_name(s: &mut Scratch, len: usize, start: usize, copy: bool) -> Result<Name, DnsStat> {
    // The callbacks change the scratch behind this function's back (it
    // holds `&mut`): hand state over field by field with volatile accesses
    // (no struct-sized temporaries on the 512-byte stack).
    let w = core::ptr::addr_of_mut!(s.walk);
    // SAFETY: `w` points into the per-CPU scratch; the callback only
    // touches the scratch.
    let (status, olen, next, hash) = unsafe {
        vset(addr_of_mut!((*w).len), len as u64);
        vset(addr_of_mut!((*w).pos), start as u64);
        vset(addr_of_mut!((*w).lowest), start as u64);
        vset(addr_of_mut!((*w).next), 0);
        vset(addr_of_mut!((*w).label_left), 0);
        vset(addr_of_mut!((*w).olen), 0);
        vset(addr_of_mut!((*w).hash), FNV_OFFSET);
        vset(addr_of_mut!((*w).pointers), 0);
        vset(addr_of_mut!((*w).jumped), 0);
        vset(addr_of_mut!((*w).copy), copy as u64);
        vset(addr_of_mut!((*w).status), RUNNING);
        bpf_loop(NAME_STEPS as u32, name_step as *mut c_void, core::ptr::null_mut(), 0);
        (vget(addr_of!((*w).status)), vget(addr_of!((*w).olen)), vget(addr_of!((*w).next)), vget(addr_of!((*w).hash)))
    };
    match status {
        DONE => Ok(Name { len: olen as usize, next: next as usize, hash }),
        code => Err(failed(code).unwrap_or(DnsStat::BadName)),
    }
}

/// One step of the suffix scan: zero one byte of the key; at a dot, the
/// key holds the next suffix: look it up as `*.` (first only) and `**.`.
extern "C" fn scan_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let i = s.scan.i as usize;
    if i >= NAME_BUF {
        return 1;
    }
    // SAFETY: masked index.
    let c = unsafe { *s.key.get_unchecked(i & 0xff) };
    unsafe { *s.key.get_unchecked_mut(i & 0xff) = 0 };
    s.scan.i += 1;
    if c == b'.' {
        let slot = if s.scan.slot == 0 { &SLOT0 } else { &SLOT1 };
        s.scan.labels += 1;
        if s.scan.labels == 1 {
            s.key[0] = NAME_ONE_LABEL;
            s.scan.groups |= lookup(slot, &s.key);
        }
        s.key[0] = NAME_ANY_DEPTH;
        s.scan.groups |= lookup(slot, &s.key);
    }
    0
}

/// The WebGroups whose patterns cover the name in `s.name[..len]`: the name
/// itself, its suffix after one label for `*.`, every suffix for `**.`.
#[inline(always)]
fn name_groups(slot_idx: u32, s: &mut Scratch, len: usize) -> u64 {
    if len == 0 || len > NAME_BUF - 3 {
        return 0;
    }
    // The scan callback reads the key: write it with volatile stores so
    // that none is deferred past the `bpf_loop` call.
    let key = s.key.as_mut_ptr();
    for i in 0..NAME_BUF / 8 {
        // SAFETY: i < 32, 8-byte words inside the 256-byte key.
        unsafe { core::ptr::write_volatile(key.add(i * 8) as *mut u64, 0) };
    }
    let first = NAME_BUF - len;
    for i in 0..NAME_BUF - 3 {
        if i >= len {
            break;
        }
        // SAFETY: masked indices inside both 256-byte buffers.
        unsafe { core::ptr::write_volatile(key.add((first + i) & 0xff), *s.name.get_unchecked(i & 0xff)) };
    }
    // SAFETY: index 0 of the key.
    unsafe { core::ptr::write_volatile(key, NAME_EXACT) };
    let slot = if slot_idx == 0 { &SLOT0 } else { &SLOT1 };
    let exact = lookup(slot, &s.key);
    let scan = core::ptr::addr_of_mut!(s.scan);
    // SAFETY: as in `read_name`: volatile hand-over through the scratch.
    unsafe {
        vset(addr_of_mut!((*scan).i), first as u64);
        vset(addr_of_mut!((*scan).labels), 0);
        vset(addr_of_mut!((*scan).groups), exact);
        vset(addr_of_mut!((*scan).slot), slot_idx as u64);
        bpf_loop(NAME_BUF as u32, scan_step as *mut c_void, core::ptr::null_mut(), 0);
        vget(addr_of!((*scan).groups))
    }
}

#[inline(always)]
fn lookup(slot: &Slot, key: &[u8; NAME_BUF]) -> u64 {
    // SAFETY: NameKey is a repr(C) wrapper of the same 256 bytes.
    let key = unsafe { &*(key as *const [u8; NAME_BUF] as *const egress_common::NameKey) };
    match slot.names.get_ptr(key) {
        // SAFETY: value pointer from a successful lookup.
        Some(v) => unsafe { *v },
        None => 0,
    }
}

/// Where the DNS message sits in the packet: (offset, length), or `None`
/// when there is no payload to look at.
#[inline(always)]
fn message_span<B: LoadBytes>(bytes: &B, pkt: &Packet) -> Result<Option<(u32, usize)>, DnsStat> {
    let off = pkt.payload_off as usize;
    let end = pkt.ip_end as usize;
    if off == 0 {
        return Ok(None);
    }
    if pkt.proto == IPPROTO_UDP {
        // A datagram to or from port 53 with nothing in it is no DNS.
        if end <= off {
            return Err(DnsStat::Malformed);
        }
        return Ok(Some((off as u32, end - off)));
    }
    if end <= off {
        // TCP without payload (handshake, ACKs).
        return Ok(None);
    }
    let payload = end - off;
    // TCP: a 2-byte length, and the whole message in this segment.
    let mut framing = [0u8; 2];
    if payload < 2 || !bytes.load(off as u32, framing.as_mut_ptr(), 2) {
        return Err(DnsStat::TcpSegmented);
    }
    let dns_len = u16::from_be_bytes(framing) as usize;
    if dns_len + 2 != payload {
        return Err(DnsStat::TcpSegmented);
    }
    Ok(Some((off as u32 + 2, dns_len)))
}

/// Copies the message into the scratch buffer.
#[inline(always)]
fn copy_message<B: LoadBytes>(bytes: &B, s: &mut Scratch, off: u32, len: usize) -> Result<(), DnsStat> {
    if len < 12 {
        return Err(DnsStat::Malformed);
    }
    if len > MSG_MAX - 1 {
        return Err(DnsStat::Malformed);
    }
    let n = (len & MSG_MASK) as u32;
    if n == 0 || !bytes.load(off, s.msg.as_mut_ptr(), n) {
        return Err(DnsStat::Malformed);
    }
    Ok(())
}

#[inline(always)]
fn query_key(workload: &[u8; 16], resolver: &[u8; 16], workload_port: u16, txid: u16, proto: u8) -> QueryKey {
    QueryKey {
        workload: *workload,
        resolver: *resolver,
        workload_port_be: workload_port.to_be(),
        txid_be: txid.to_be(),
        proto,
        _pad: [0; 3],
    }
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
    let (off, len) = match message_span(bytes, pkt) {
        Ok(Some(span)) => span,
        Ok(None) => return QueryAction::Forward,
        Err(e) => return unreadable(meta, e),
    };
    if let Err(e) = copy_message(bytes, s, off, len) {
        return unreadable(meta, e);
    }
    let flags = be16(&s.msg, 2);
    if flags & 0x8000 != 0 || flags & 0x7800 != 0 || be16(&s.msg, 4) != 1 {
        return unreadable(meta, DnsStat::NotDns);
    }
    let name = match read_name(s, len, 12, true) {
        Ok(n) => n,
        Err(e) => return unreadable(meta, e),
    };
    if !agent_up() {
        // Fail closed: with no agent to vouch for it, no lookup is learned.
        stat(DnsStat::AgentDown);
        return match meta.query_filter {
            QUERY_FILTER_ENFORCE => refusal(pkt),
            _ => QueryAction::Forward,
        };
    }
    if meta.query_filter != QUERY_FILTER_OFF && name_groups(slot_idx, s, name.len) & meta.permit_groups == 0 {
        if meta.query_filter == QUERY_FILTER_ENFORCE {
            stat(DnsStat::QueryRefused);
            return refusal(pkt);
        }
        stat(DnsStat::QueryWouldRefuse);
    }
    let key = query_key(&pkt.src, &pkt.dst, pkt.sport, be16(&s.msg, 0), pkt.proto);
    let value = QueryValue {
        name_hash: name.hash,
        // SAFETY: helper without preconditions.
        sent_ns: unsafe { bpf_ktime_get_ns() },
        qtype: be16(&s.msg, name.next),
        _pad: [0; 6],
    };
    let _ = EGV2_QUERIES.insert(&key, &value, 0);
    stat(DnsStat::QueryTracked);
    QueryAction::Forward
}

/// A packet to a resolver's port 53 that is not one whole, readable query
/// (a TCP segment holding part of one or several, a first fragment, a
/// message the parser refuses). Its name cannot be checked, so with the
/// query filter enforcing it is dropped, as a refused query would be
/// (otherwise tunnelling would only need a split message); with the filter
/// monitoring it is forwarded and reported.
#[inline(always)]
fn unreadable(meta: &SlotMeta, why: DnsStat) -> QueryAction {
    stat(why);
    match meta.query_filter {
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

/// Whether the agent's lease still runs (see [`egress_common::AgentLease`]).
#[inline(always)]
fn agent_up() -> bool {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    EGV2_AGENT.get(0).is_some_and(|lease| now <= lease.until_ns)
}

/// What [`refuse_in_place`] changed in the DNS header, for the UDP checksum.
pub struct Refused {
    /// Offset of the UDP checksum.
    pub csum_off: u32,
    /// The three 16-bit words that changed: (old, new).
    pub words: [(u16, u16); 3],
}

/// Turns the UDP query in `[start, end)` around in place into a REFUSED
/// answer: MACs, addresses and ports swapped (checksum-neutral), QR, RA and
/// RCODE 5 set, answer and authority counts zeroed. The caller fixes the
/// UDP checksum for the changed words. Every header is read and written
/// back whole at one offset, and every read has a defined value even past
/// the end, so the verifier can follow it.
#[inline(always)]
pub fn refuse_in_place(start: usize, end: usize) -> Option<Refused> {
    let cur = crate::parse::Cursor::new(start, end);
    let mut pkt = Packet::empty();
    if crate::parse::parse(&cur, &mut pkt) != Ok(crate::parse::Parsed::Ip) || pkt.proto != IPPROTO_UDP {
        return None;
    }
    let l3 = pkt.l3_off as usize;
    let l4 = pkt.l4_off as usize;
    let dns = pkt.payload_off as usize;
    let (ok_mac, macs) = cur.read_or(0, [0u8; 12]);
    let (ok_udp, udp) = cur.read_or(l4, [0u8; 8]);
    let (ok_hdr, mut hdr) = cur.read_or(dns, [0u8; 12]);
    if !(ok_mac && ok_udp && ok_hdr) {
        return None;
    }
    let old_flags = u16::from_be_bytes([hdr[2], hdr[3]]);
    let new_flags = 0x8000 | (old_flags & 0x7900) | 0x0080 | 5;
    let old_an = u16::from_be_bytes([hdr[6], hdr[7]]);
    let old_ns = u16::from_be_bytes([hdr[8], hdr[9]]);
    hdr[2] = (new_flags >> 8) as u8;
    hdr[3] = new_flags as u8;
    hdr[6] = 0;
    hdr[7] = 0;
    hdr[8] = 0;
    hdr[9] = 0;
    let swapped_mac =
        [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]];
    let swapped_udp = [udp[2], udp[3], udp[0], udp[1], udp[4], udp[5], udp[6], udp[7]];
    let addrs_ok = if pkt.family == egress_common::FAMILY_V4 {
        let (ok, a) = cur.read_or(l3 + 12, [0u8; 8]);
        ok && cur.write(l3 + 12, [a[4], a[5], a[6], a[7], a[0], a[1], a[2], a[3]])
    } else {
        let (ok, a) = cur.read_or(l3 + 8, [0u8; 32]);
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&a[16..]);
        b[16..].copy_from_slice(&a[..16]);
        ok && cur.write(l3 + 8, b)
    };
    if addrs_ok && cur.write(0, swapped_mac) && cur.write(l4, swapped_udp) && cur.write(dns, hdr) {
        Some(Refused { csum_off: (l4 + 6) as u32, words: [(old_flags, new_flags), (old_an, 0), (old_ns, 0)] })
    } else {
        None
    }
}

/// One's-complement update of a 16-bit checksum for one changed word
/// (RFC 1624), for XDP, where no checksum helper exists. A zero IPv4 UDP
/// checksum (none) stays zero.
#[inline(always)]
pub fn csum_fold_words(csum: u16, words: &[(u16, u16); 3]) -> u16 {
    if csum == 0 {
        return 0;
    }
    let mut c = csum;
    for (old, new) in words {
        let mut sum = (!c) as u32 + (!*old) as u32 + *new as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        c = !(sum as u16);
    }
    if c == 0 { 0xffff } else { c }
}

/// A packet leaving the LAN interface towards a workload: if it is an
/// answer from a listed resolver to an outstanding query, learn from it.
#[inline(always)]
pub fn on_answer<B: LoadBytes>(bytes: &B, slot_idx: u32, slot: &Slot, meta: &SlotMeta, pkt: &Packet) {
    if (pkt.proto != IPPROTO_UDP && pkt.proto != IPPROTO_TCP) || pkt.sport != 53 || !pkt.has_l4() {
        return;
    }
    if slot.resolvers.get_ptr(pkt.src).is_none() {
        return;
    }
    let (off, len) = match message_span(bytes, pkt) {
        Ok(Some(span)) => span,
        Ok(None) => return,
        Err(e) => {
            stat(e);
            return;
        }
    };
    stat(DnsStat::AnswerSeen);
    if !agent_up() {
        stat(DnsStat::AgentDown);
        return;
    }
    let Some(s) = scratch() else {
        return;
    };
    if let Err(e) = learn(bytes, slot_idx, meta, pkt, s, off, len) {
        stat(e);
    }
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
            s.records.status = 2 + e as u64;
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
    let owner = read_name(s, len, s.records.at as usize, false)?;
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
                s.addrs[slot] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
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
        s.chain[chain_len & (MAX_CHAIN - 1)] = target.hash;
        s.records.chain_len += 1;
    }
    Ok(())
}

#[inline(always)]
fn learn<B: LoadBytes>(
    bytes: &B,
    slot_idx: u32,
    meta: &SlotMeta,
    pkt: &Packet,
    s: &mut Scratch,
    off: u32,
    len: usize,
) -> Result<(), DnsStat> {
    copy_message(bytes, s, off, len)?;
    let flags = be16(&s.msg, 2);
    if flags & 0x8000 == 0 || flags & 0x7800 != 0 || be16(&s.msg, 4) != 1 {
        return Err(DnsStat::NotDns);
    }
    // Only an answer to a query seen leaving for this resolver teaches, once.
    let key = query_key(&pkt.dst, &pkt.src, pkt.dport, be16(&s.msg, 0), pkt.proto);
    let Some(query) = EGV2_QUERIES.get_ptr(&key) else {
        return Err(DnsStat::Unsolicited);
    };
    // SAFETY: value pointer from a successful lookup.
    let query = unsafe { *query };
    let _ = EGV2_QUERIES.remove(&key);
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(query.sent_ns) > QUERY_TIMEOUT_NS {
        return Err(DnsStat::Unsolicited);
    }
    let name = s.name.as_mut_ptr();
    for i in 0..NAME_BUF / 8 {
        // SAFETY: i < 32, 8-byte words of the 256-byte name; volatile so
        // the walk callback sees them.
        unsafe { vset(name.add(i * 8) as *mut u64, 0) };
    }
    let question = read_name(s, len, 12, true)?;
    if question.next + 4 > len {
        return Err(DnsStat::Malformed);
    }
    let qtype = be16(&s.msg, question.next);
    if question.hash != query.name_hash || qtype != query.qtype {
        return Err(DnsStat::QuestionMismatch);
    }
    if flags & 0x000f != 0 {
        return Err(DnsStat::NoAnswer);
    }
    let groups = name_groups(slot_idx, s, question.len);
    if groups == 0 {
        return Err(DnsStat::NoWebGroup);
    }
    let ancount = be16(&s.msg, 6) as u64;
    if ancount > MAX_RR as u64 {
        return Err(DnsStat::Malformed);
    }
    // Pass 1: read every answer record; collect on-chain addresses.
    let r = core::ptr::addr_of_mut!(s.records);
    // SAFETY: as in `read_name`: volatile hand-over through the scratch.
    let (status, found) = unsafe {
        vset(addr_of_mut!(s.chain[0]), question.hash);
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
    // Pass 2: the whole answer section parsed; learn. Each address is
    // learned in a `bpf_loop` callback, and the answer's event sent from
    // another: their frames are their own (this one is near the 512-byte
    // stack), and what they need is in the scratch.
    let _ = EGV2_LNAMES.insert(&question.hash, &s.name, 0);
    let r = addr_of_mut!(s.report);
    // SAFETY: fields of the per-CPU scratch; volatile so the callbacks see them.
    unsafe {
        let w = addr_of_mut!((*r).workload) as *mut u8;
        for b in 0..16 {
            vset(w.add(b), pkt.dst[b]);
        }
        vset(addr_of_mut!((*r).groups), groups);
        vset(addr_of_mut!((*r).name_hash), question.hash);
        vset(addr_of_mut!((*r).found), found as u32);
        vset(addr_of_mut!((*r).min_ttl), meta.min_ttl);
        vset(addr_of_mut!((*r).max_ttl), meta.max_ttl);
        vset(addr_of_mut!((*r).family), pkt.family as u32);
        vset(addr_of_mut!((*r).now), now);
        bpf_loop(MAX_LEARN as u32, learn_step as *mut c_void, core::ptr::null_mut(), 0);
        bpf_loop(1, report_step as *mut c_void, core::ptr::null_mut(), 0);
    }
    Ok(())
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
    let ttl = s.ttls[i].clamp(r.min_ttl, r.max_ttl.max(r.min_ttl));
    let key = LearnKey { workload: r.workload, addr: s.addrs[i] };
    let mut value =
        LearnValue { groups: r.groups, expires_ns: r.now + ttl as u64 * 1_000_000_000, name_hash: r.name_hash };
    match EGV2_LEARNED.get_ptr(&key) {
        Some(old) => {
            // SAFETY: value pointer from a successful lookup.
            let old = unsafe { *old };
            if old.expires_ns > r.now {
                value.groups |= old.groups;
                value.expires_ns = value.expires_ns.max(old.expires_ns);
            }
        }
        None => stat(DnsStat::AddressNew),
    }
    let _ = EGV2_LEARNED.insert(&key, &value, 0);
    stat(DnsStat::AddressLearned);
    0
}
