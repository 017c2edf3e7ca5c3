//! Budgets (see `egress_common::budget`): every spend of a shared table or
//! of the event ring is charged to its source address, to the host that
//! sent the frame (interface and link-layer address) and to everyone.
//!
//! The sender is noted once a packet ([`note_sender`], by the judge for
//! what a workload sends, by the answer program for what it receives) in
//! the per-CPU [`BudgetWork`]; the programs that a packet reaches by tail
//! call spend with it. A spend is a global function ([`egress_spend`])
//! that reads the address from there: the verifier checks it once, however
//! many places spend.

use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::bpf_ktime_get_ns;
use egress_common::{Bucket, BudgetKey, LEVELS, Level, Spend, budget_stat_slot, limit};

use crate::dns::LoadBytes;
use crate::maps::{EGV5_BSCRATCH, EGV5_BUDGETS, EGV5_BUDSTATS};
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
    /// The spend: tokens, refill period of rate-0 budgets (`dns.max_ttl`),
    /// and when.
    pub n: u64,
    pub period_s: u64,
    pub now: u64,
    pub key: BudgetKey,
    pub fresh: Bucket,
}

#[inline(always)]
fn work() -> Option<&'static mut BudgetWork> {
    // SAFETY: per-CPU scratch, used by one program run at a time.
    EGV5_BSCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
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

/// Notes the host a frame read through `bytes` goes to: interface
/// `ifindex`, the frame's destination address.
#[inline(always)]
pub fn note_receiver<B: LoadBytes>(bytes: &B, ifindex: u32) {
    let Some(w) = work() else { return };
    w.ifindex = ifindex;
    w.mac = [0; 8];
    // Loaded straight into the scratch: nothing on the caller's stack.
    let _ = bytes.load(0, w.mac.as_mut_ptr(), 6);
}

/// Takes `n` of `kind` for `addr` from the noted sender's budgets; `false`
/// when one of them has no room (nothing is taken from the later ones).
/// `period_s` is the refill period of the learned-address budgets.
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
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn egress_spend(kind: u32, n: u64, period_s: u64) -> u64 {
    let Some(w) = work() else { return 0 };
    // Everything the levels share is kept in the scratch, not in
    // registers: values live across helper calls spill to this function's
    // frame, which adds to the judge's (80 bytes to spare).
    w.kind = kind;
    w.n = n;
    w.period_s = period_s;
    // SAFETY: helper without preconditions.
    w.now = unsafe { bpf_ktime_get_ns() };
    for level in 0..LEVELS_CHARGED {
        if !charge(w, level) {
            return 0;
        }
    }
    1
}

/// Levels a spend is charged to, in order ([`Level`] codes).
const LEVELS_CHARGED: u8 = 3;

/// Charges the spend in `w` to its bucket at level code `level` (a new,
/// full one if there is none); counts a refusal. Concurrent spends on
/// other CPUs race: a few more may go through.
#[inline(always)]
fn charge(w: &mut BudgetWork, level: u8) -> bool {
    let Some(kind) = Spend::from_code(w.kind as u8) else { return false };
    let level = match level {
        0 => Level::Address,
        1 => Level::Host,
        _ => Level::All,
    };
    w.key.kind = kind as u8;
    w.key.level = level as u8;
    w.key._pad = [0; 2];
    let p: *mut BudgetWork = w;
    // SAFETY: fields of the per-CPU scratch, 8-aligned words.
    unsafe {
        let id = addr_of_mut!((*p).key.id).cast::<u64>();
        let (hi, lo) = match level {
            Level::Address => {
                let a = addr_of!((*p).addr).cast::<u64>();
                (a.read(), a.add(1).read())
            }
            Level::Host => (addr_of!((*p).mac).cast::<u64>().read(), 0),
            Level::All => (0, 0),
        };
        id.write(hi);
        id.add(1).write(lo);
    }
    w.key.ifindex = if level == Level::All { 0 } else { w.ifindex };
    let l = limit(kind, level);
    let ok = if let Some(b) = EGV5_BUDGETS.get_ptr_mut(&w.key) {
        // SAFETY: value pointer from a successful lookup.
        unsafe { (*b).take(l, w.now, w.n, w.period_s) }
    } else {
        w.fresh = Bucket::full(l, w.now);
        let ok = w.fresh.take(l, w.now, w.n, w.period_s);
        let _ = EGV5_BUDGETS.insert(&w.key, &w.fresh, 0);
        ok
    };
    if !ok && let Some(cell) = EGV5_BUDSTATS.get_ptr_mut(budget_stat_slot(kind, level)) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
    ok
}

const _: () = assert!(LEVELS as usize >= Level::ALL.len());
