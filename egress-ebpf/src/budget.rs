//! Budgets (see `egress_common::budget`): every spend of a shared table or
//! of the event ring is charged to its source address, to the host that
//! sent the frame (interface and link-layer address) and to everyone.
//!
//! The sender is noted once a packet ([`note_sender`]: by the judge for
//! what a workload sends; by the answer program, for what an answer
//! teaches, as the host that sent its query, recorded with it) in
//! the per-CPU [`BudgetWork`]; the programs that a packet reaches by tail
//! call spend with it. A spend is a global function ([`egress_spend`])
//! that reads the address from there: the verifier checks it once, however
//! many places spend.

use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use egress_common::{Bucket, BudgetKey, LEVELS, Level, Limit, Spend, budget_stat_slot, limit};

use crate::maps::{EGV6_ALLBUD, EGV6_BSCRATCH, EGV6_BUDGETS, EGV6_BUDSTATS, EGV6_HOSTBUD};
use crate::scratch::vset;

/// A spend's inputs and answer, and the key and fresh bucket it builds
/// (per CPU: nothing of it on a callback's stack).
#[repr(C)]
pub struct BudgetWork {
    /// The sender's interface.
    pub ifindex: u32,
    /// [`Spend`] code.
    pub kind: u32,
    /// The sender's link-layer address (two bytes of zero padding).
    pub mac: [u8; 8],
    /// The source address charged.
    pub addr: [u8; 16],
    /// The spend: tokens, refill period of rate-0 budgets, and when.
    pub n: u64,
    pub period_s: u64,
    pub now: u64,
    /// Which levels had a bucket already (`HAD_*`).
    pub had: u64,
    /// The source address's bucket key, and the host's.
    pub key: BudgetKey,
    pub hkey: BudgetKey,
    pub fresh: Bucket,
}

#[inline(always)]
fn work() -> Option<&'static mut BudgetWork> {
    // SAFETY: per-CPU scratch, used by one program run at a time.
    EGV6_BSCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Notes the sender of the packet being judged: interface `ifindex`,
/// link-layer address `mac`.
#[inline(always)]
pub fn note_sender(ifindex: u32, mac: &[u8; 6]) {
    let Some(w) = work() else { return };
    w.ifindex = ifindex;
    w.mac[..6].copy_from_slice(mac);
    w.mac[6] = 0;
    w.mac[7] = 0;
}

/// The sender noted for the packet: its interface and link-layer address.
#[inline(always)]
pub fn sender() -> (u32, [u8; 6]) {
    let Some(w) = work() else { return (0, [0; 6]) };
    (w.ifindex, [w.mac[0], w.mac[1], w.mac[2], w.mac[3], w.mac[4], w.mac[5]])
}

/// Takes `n` of `kind` for `addr` from the noted sender's budgets; `false`
/// when one of them has no room (then nothing is taken from any).
/// `period_s` is the refill period of budgets of rate 0 (standing flows).
#[inline(always)]
pub fn spend(kind: Spend, addr: &[u8; 16], n: u64, period_s: u64) -> bool {
    let Some(w) = work() else { return false };
    let p: *mut BudgetWork = w;
    // SAFETY: fields of the per-CPU scratch; volatile so that the spend
    // reads them.
    unsafe {
        let to = addr_of_mut!((*p).addr).cast::<u64>();
        let from = addr.as_ptr().cast::<u64>();
        vset(to, from.read_unaligned());
        vset(to.add(1), from.add(1).read_unaligned());
    }
    egress_spend(kind as u32, n, period_s) == 1
}

/// [`spend`] for an address held as two words (a flow key's first two).
#[inline(always)]
pub fn spend_words(kind: Spend, addr: (u64, u64), n: u64, period_s: u64) -> bool {
    let Some(w) = work() else { return false };
    let p: *mut BudgetWork = w;
    // SAFETY: fields of the per-CPU scratch; volatile so that the spend
    // reads them.
    unsafe {
        let to = addr_of_mut!((*p).addr).cast::<u64>();
        vset(to, addr.0);
        vset(to.add(1), addr.1);
    }
    egress_spend(kind as u32, n, period_s) == 1
}

/// The spend itself: a global function, which the verifier checks once
/// for the whole object rather than at every place that spends (its
/// arguments are plain numbers; the address is in the scratch).
///
/// Taken level by level; a level without room refuses the spend, is
/// counted, and what the levels before it took is given back, so a
/// refused spend costs nobody anything. A new address's or host's bucket
/// is made only once the spend went through.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn egress_spend(kind: u32, n: u64, period_s: u64) -> u64 {
    let Some(w) = work() else { return 0 };
    let Some(spend) = Spend::from_code(kind as u8) else { return 0 };
    // Everything the levels share is kept in the scratch, not in
    // registers or pointers: values live across helper calls spill to this
    // function's frame, which adds to its callers' (a tunnel report's,
    // deep in the query program's callbacks, has 64 bytes to spare).
    w.kind = kind;
    w.n = n;
    w.period_s = period_s;
    // The coarse clock (a tick's resolution, a fraction of a fine read's
    // cost): buckets refill by the millisecond and are only ever compared
    // with this clock.
    // SAFETY: helper without preconditions.
    w.now = unsafe { bpf_ktime_get_coarse_ns() };
    keys(w, spend);
    w.had = 0;
    if let Some(b) = EGV6_BUDGETS.get_ptr_mut(&w.key) {
        w.had |= HAD_ADDRESS;
        // SAFETY: value pointer from a successful lookup.
        if !unsafe { (*b).take(limit(spend, Level::Address), w.now, w.n, w.period_s) } {
            return refused(spend, Level::Address);
        }
    }
    if let Some(b) = EGV6_HOSTBUD.get_ptr_mut(&w.hkey) {
        w.had |= HAD_HOST;
        // SAFETY: as above.
        if !unsafe { (*b).take(limit(spend, Level::Host), w.now, w.n, w.period_s) } {
            give_back(w, spend, HAD_ADDRESS);
            return refused(spend, Level::Host);
        }
    }
    let Some(all) = EGV6_ALLBUD.get_ptr_mut(kind) else { return 0 };
    // SAFETY: as above.
    if !unsafe { (*all).take(limit(spend, Level::All), w.now, w.n, w.period_s) } {
        give_back(w, spend, HAD_ADDRESS | HAD_HOST);
        return refused(spend, Level::All);
    }
    if w.had & HAD_HOST == 0 {
        fresh(w, limit(spend, Level::Host));
        let _ = EGV6_HOSTBUD.insert(&w.hkey, &w.fresh, 0);
    }
    if w.had & HAD_ADDRESS == 0 {
        fresh(w, limit(spend, Level::Address));
        let _ = EGV6_BUDGETS.insert(&w.key, &w.fresh, 0);
    }
    1
}

/// `BudgetWork::had`: the address's bucket existed (and was taken from).
const HAD_ADDRESS: u64 = 1;
/// `BudgetWork::had`: the host's bucket existed (and was taken from).
const HAD_HOST: u64 = 2;

/// Gives the spend back to the levels in `which` that were taken from (a
/// later level refused it), looking their buckets up again.
#[inline(always)]
fn give_back(w: &mut BudgetWork, spend: Spend, which: u64) {
    let had = w.had & which;
    if had & HAD_ADDRESS != 0
        && let Some(b) = EGV6_BUDGETS.get_ptr_mut(&w.key)
    {
        // SAFETY: value pointer from a successful lookup.
        unsafe { (*b).refund(limit(spend, Level::Address), w.n) };
    }
    if had & HAD_HOST != 0
        && let Some(b) = EGV6_HOSTBUD.get_ptr_mut(&w.hkey)
    {
        // SAFETY: as above.
        unsafe { (*b).refund(limit(spend, Level::Host), w.n) };
    }
}

/// Writes the spend's address and host keys into the scratch, word by word.
#[inline(always)]
fn keys(w: &mut BudgetWork, spend: Spend) {
    let p: *mut BudgetWork = w;
    // SAFETY: fields of the per-CPU scratch, 8-aligned words.
    unsafe {
        let addr = addr_of!((*p).addr).cast::<u64>();
        key(addr_of_mut!((*p).key), spend, Level::Address, p, (addr.read(), addr.add(1).read()));
        key(addr_of_mut!((*p).hkey), spend, Level::Host, p, (0, 0));
    }
}

/// Writes one key at `k`: the spend, the level, the sender in `p`, and the
/// address `words`.
///
/// # Safety
/// `k` and `p` point into the per-CPU scratch.
#[inline(always)]
unsafe fn key(k: *mut BudgetKey, spend: Spend, level: Level, p: *const BudgetWork, words: (u64, u64)) {
    // SAFETY: per the caller; every field is written whole, padding too.
    unsafe {
        let head = k.cast::<u64>();
        // kind, level, two bytes of padding, then the interface (little-endian).
        // Volatile: LLVM would turn zero words into a call to `memset`, a
        // frame of its own on top of this one.
        vset(head, u64::from(spend as u8) | (u64::from(level as u8) << 8) | (u64::from((*p).ifindex) << 32));
        vset(head.add(1), addr_of!((*p).mac).cast::<u64>().read());
        vset(head.add(2), words.0);
        vset(head.add(3), words.1);
    }
}

/// A full bucket less the spend, in the scratch, to insert.
#[inline(always)]
fn fresh(w: &mut BudgetWork, l: Limit) {
    w.fresh = Bucket::full(l, w.now);
    w.fresh.milli_tokens -= (w.n * 1000).min(w.fresh.milli_tokens);
}

/// Counts a spend of `spend` refused at `level`; the spend's answer (0).
#[inline(always)]
fn refused(spend: Spend, level: Level) -> u64 {
    if let Some(cell) = EGV6_BUDSTATS.get_ptr_mut(budget_stat_slot(spend, level)) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
    0
}

const _: () = assert!(LEVELS as usize >= Level::ALL.len());
