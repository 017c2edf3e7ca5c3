//! The flow cache: a set-associative table in the array `EGV6_FLOWS` (see
//! [`egress_common::FlowSlot`]). A lookup reads the [`FLOW_WAYS`] ways of
//! one set; an insert overwrites the way of its set that holds the same
//! flow, is empty or of another generation, or else was unused longest
//! among those not kept; a set of kept ways only takes no new flow. A way
//! is kept once its source's standing-flow budget paid for it (see
//! [`FlowSlot::due`]).
//! Every way is read and written whole with volatile accesses: other CPUs
//! write the same ways, and the check word is what tells a whole way from
//! a torn one.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use egress_common::{
    FLOW_STANDING_PERIOD_S, FLOW_WAYS, FlowKey, FlowSlot, FlowValue, Spend, flow_check, flow_clock, flow_hash,
    flow_set_start,
};

use crate::maps::EGV6_FLOWS;

/// The cache's clock ([`flow_clock`]): cheap to read.
#[inline(always)]
fn now() -> u32 {
    // SAFETY: helper without preconditions.
    flow_clock(unsafe { bpf_ktime_get_coarse_ns() })
}

/// A flow's key words and hash, computed once for lookup and insert.
pub struct Probe {
    words: [u64; 5],
    hash: u64,
}

impl Probe {
    /// The probe for `key` under the live pack's `seed`
    /// ([`egress_common::SlotMeta::flow_seed`]).
    #[inline(always)]
    pub fn new(key: &FlowKey, seed: u64) -> Self {
        let words = key.words();
        Probe { hash: flow_hash(&words, seed), words }
    }
}

/// Whether two keys are equal, as one comparison of an OR of XORs. `==`
/// on arrays becomes a call to the eBPF `memcmp` (a byte-at-a-time loop),
/// and LLVM would rewrite the OR of XORs into five comparisons, each a
/// branch for the verifier to follow; the volatile read keeps it whole.
#[inline(always)]
fn same(a: &[u64; 5], b: &[u64; 5]) -> bool {
    let diff = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]);
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&raw const diff) == 0 }
}

/// Reads way `index` whole, or `None` if out of range.
#[inline(always)]
fn read(index: u32) -> Option<(*mut FlowSlot, FlowSlot)> {
    let p = EGV6_FLOWS.get_ptr_mut(index)?;
    // SAFETY: a map value pointer; other CPUs may write it meanwhile, which
    // the check word detects.
    Some((p, unsafe { core::ptr::read_volatile(p) }))
}

/// The decision cached for the flow by pack `generation`, if any; marks
/// the way as used.
#[inline(always)]
pub fn lookup(probe: &Probe, generation: u32) -> Option<FlowValue> {
    let start = flow_set_start(probe.hash);
    for way in 0..FLOW_WAYS {
        let Some((p, slot)) = read(start + way) else { continue };
        if same(&slot.key, &probe.words)
            && slot.value.generation == generation
            && slot.check == flow_check(probe.hash, &slot.value, slot.born)
        {
            let t = now();
            if slot.due(t) {
                stand(p, probe, &slot, t);
            } else {
                // SAFETY: as in `read`; a racing insert at worst loses this mark.
                unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).used), t) };
            }
            return Some(slot.value);
        }
    }
    None
}

/// Makes the way at `p` (read as `slot`) standing at `t` if its source's
/// standing-flow budgets pay for it, or else born anew (see
/// [`FlowSlot::due`]). A racing reader may see the way torn meanwhile: a
/// miss, judged again.
#[inline(always)]
fn stand(p: *mut FlowSlot, probe: &Probe, slot: &FlowSlot, t: u32) {
    let paid = crate::budget::spend_words(Spend::Standing, (probe.words[0], probe.words[1]), 1, FLOW_STANDING_PERIOD_S);
    let born = if paid { FlowSlot::standing_since(t) } else { t };
    let check = flow_check(probe.hash, &slot.value, born);
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).born), born);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).used), t);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).check), check);
    }
}

/// Caches `value` for the flow, unless every way of its set is kept.
#[inline(always)]
pub fn insert(probe: &Probe, value: &FlowValue) {
    let start = flow_set_start(probe.hash);
    let t = now();
    // `FLOW_WAYS` (out of range) while no way may be taken.
    let (mut victim, mut oldest) = (start + FLOW_WAYS, 0u32);
    for way in 0..FLOW_WAYS {
        let Some((_, slot)) = read(start + way) else { continue };
        // A way of another generation (or never written) is free.
        if same(&slot.key, &probe.words) || slot.value.generation != value.generation {
            victim = start + way;
            break;
        }
        let age = t.wrapping_sub(slot.used);
        if !slot.kept(t) && (victim == start + FLOW_WAYS || age >= oldest) {
            (victim, oldest) = (start + way, age);
        }
    }
    if victim == start + FLOW_WAYS {
        return;
    }
    if let Some(p) = EGV6_FLOWS.get_ptr_mut(victim) {
        let check = flow_check(probe.hash, value, t);
        let slot = FlowSlot { key: probe.words, value: *value, used: t, born: t, check };
        // SAFETY: a map value pointer; see the module comment on races.
        unsafe { core::ptr::write_volatile(p, slot) };
    }
}
