//! Flow cache, fragment tracking and flow events.

/// Address family codes.
pub const FAMILY_V4: u8 = 4;
/// IPv6.
pub const FAMILY_V6: u8 = 6;

/// 5-tuple of a flow as the workload sent it (before any NAT).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
crate::assert_size!(FlowKey, 40);

/// A cached decision, valid while `generation` is the live one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub generation: u32,
    /// Counter of the deciding rule ([`crate::RuleInfo::counter`]) in the
    /// pack of that generation.
    pub counter: u32,
    /// A [`crate::Verdict`] code in the low byte (a whole word: no padding
    /// to zero, which in eBPF costs a call to `memset`). In a `FRAGS` entry,
    /// bits 8..24 say how far the first fragment's L4 header reaches into
    /// the datagram's fragmentable part, in 8-byte units (0 in entries
    /// written before: then only TCP's fixed header is known).
    pub verdict: u32,
}
crate::assert_size!(FlowValue, 12);

/// Identity of a fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
crate::assert_size!(FragKey, 40);

/// One way of the flow cache (`FLOWS`, an array): a 5-tuple and the
/// decision cached for it, with a check word over both. The cache is
/// set-associative ([`FLOW_WAYS`] ways a set, the set chosen by
/// [`flow_hash`] keyed with the pack's [`crate::SlotMeta::flow_seed`]): a
/// lookup reads one set, an insert overwrites a way with plain stores (no
/// allocation, no lock, no LRU list to rotate). CPUs may write a way at
/// once; a reader takes a way only if its check word matches the key and
/// decision it holds, so a torn way reads as a miss.
///
/// A way whose flow passes and is hit [`FLOW_KEEP_AFTER`] or more after it
/// was cached becomes *standing* if its source's standing-flow budget pays
/// for it (`budget::Spend::Standing`): it is then *kept*, and no new flow
/// replaces it until it has been idle for [`FLOW_KEPT_IDLE`], so a
/// neighbour's churn cannot make a standing flow's packets meet the rules
/// again (when its learned address may have expired). Standing lasts
/// [`FLOW_STANDING_PERIOD`] and is paid for again by the first hit after
/// it: what a host holds standing at once is bounded by its budget, and no
/// workload can fill the cache with kept ways. A new flow whose set holds
/// only kept ways is judged on every packet instead of cached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// The [`FlowKey`] as five words ([`FlowKey::words`]).
    pub key: [u64; 5],
    /// The cached decision ([`FlowValue`]); generation 0 is never live,
    /// so an all-zero way is empty.
    pub value: FlowValue,
    /// [`flow_clock`] of the way's last hit: an insert replaces the way of
    /// its set unused longest among those not kept.
    pub used: u32,
    /// [`flow_clock`] when the way was written.
    pub born: u32,
    /// [`flow_check`] of key, value and `born`.
    pub check: u32,
}
crate::assert_size!(FlowSlot, 64);

/// Ways a set of the flow cache.
pub const FLOW_WAYS: u32 = 4;
/// Ways of the flow cache in all (a power of two).
pub const FLOW_CACHE_ENTRIES: u32 = 262_144;
/// Sets of the flow cache.
pub const FLOW_SETS: u32 = FLOW_CACHE_ENTRIES / FLOW_WAYS;
const _: () = assert!(FLOW_SETS.is_power_of_two());

/// The flow cache's clock: `bpf_ktime_get_coarse_ns` in units of 2^20 ns
/// (about 1.05 ms), low 32 bits (it wraps after 52 days; ages are taken
/// with wrapping subtraction).
#[inline(always)]
pub const fn flow_clock(coarse_ns: u64) -> u32 {
    (coarse_ns >> 20) as u32
}
/// A passing flow hit this long (in [`flow_clock`] units: about 1.07 s)
/// after it was cached is kept (see [`FlowSlot`]).
pub const FLOW_KEEP_AFTER: u32 = 1 << 10;
/// A kept way idle this long (about 9 minutes) may be replaced again.
pub const FLOW_KEPT_IDLE: u32 = 1 << 19;
/// How long a way stays standing once paid for (about 9 minutes).
pub const FLOW_STANDING_PERIOD: u32 = 1 << 19;
/// [`FLOW_STANDING_PERIOD`] in whole seconds, rounded up: the refill
/// period of the standing-flow budgets.
pub const FLOW_STANDING_PERIOD_S: u64 = ((FLOW_STANDING_PERIOD as u64) << 20).div_ceil(1_000_000_000);

impl FlowSlot {
    /// Whether a new flow must not replace this way at `now` (see
    /// [`FlowSlot`]); only meaningful for a way of the live generation.
    #[inline(always)]
    pub fn kept(&self, now: u32) -> bool {
        // Signed: a racing lookup can leave `used` just behind `born`.
        self.passes()
            && self.used.wrapping_sub(self.born) as i32 >= FLOW_KEEP_AFTER as i32
            && now.wrapping_sub(self.used) < FLOW_KEPT_IDLE
            && now.wrapping_sub(self.born) < FLOW_KEEP_AFTER + FLOW_STANDING_PERIOD
    }

    /// Whether a hit at `now` must pay for the way to stand: it passes, is
    /// old enough, and is not standing yet or its standing has run out.
    /// Paid for, it is written back [`FlowSlot::standing_since`] `now`;
    /// refused, born anew at `now` (so it asks again a while later).
    #[inline(always)]
    pub fn due(&self, now: u32) -> bool {
        let age = now.wrapping_sub(self.born);
        self.passes()
            && age as i32 >= FLOW_KEEP_AFTER as i32
            && ((self.used.wrapping_sub(self.born) as i32) < FLOW_KEEP_AFTER as i32
                || age >= FLOW_KEEP_AFTER + FLOW_STANDING_PERIOD)
    }

    /// The `born` of a way made standing at `now` (so that it reads as
    /// standing for [`FLOW_STANDING_PERIOD`] from `now`).
    #[inline(always)]
    pub const fn standing_since(now: u32) -> u32 {
        now.wrapping_sub(FLOW_KEEP_AFTER)
    }

    #[inline(always)]
    fn passes(&self) -> bool {
        self.value.verdict as u8 != crate::Verdict::Denied as u8
    }
}

impl FlowKey {
    /// The key's 40 bytes as five words (padding is zero).
    #[inline(always)]
    pub fn words(&self) -> [u64; 5] {
        // SAFETY: `FlowKey` is `repr(C)`, 40 bytes of integers with no
        // implicit padding; any bytes are a valid `[u64; 5]`.
        unsafe { core::mem::transmute::<FlowKey, [u64; 5]>(*self) }
    }

    /// The key held as five words (see [`FlowKey::words`]).
    #[inline(always)]
    pub fn from_words(words: [u64; 5]) -> FlowKey {
        // SAFETY: any 40 bytes are a valid `FlowKey` (integers only).
        unsafe { core::mem::transmute::<[u64; 5], FlowKey>(words) }
    }
}

/// 64-bit finaliser (murmur3's fmix64).
#[inline(always)]
const fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hash of a flow key's words, keyed with `seed` (the pack's
/// [`crate::SlotMeta::flow_seed`], drawn at random for each install, so
/// that no workload can choose flows that fall in another's set): the low
/// bits choose the set.
#[inline(always)]
pub fn flow_hash(key: &[u64; 5], seed: u64) -> u64 {
    // Each word is mixed whole into a state that depends on the seed: no
    // difference in one word can be cancelled by one in the next without
    // knowing the state (a multiply-and-rotate round let a flipped top bit
    // be cancelled by the bit it rotated to, under any seed).
    let mut h = fmix(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut i = 0;
    while i < 5 {
        h = fmix(h ^ key[i]);
        i += 1;
    }
    h
}

/// The check word of a way holding `value`, written at `born`, for the
/// key of hash `hash`.
#[inline(always)]
pub fn flow_check(hash: u64, value: &FlowValue, born: u32) -> u32 {
    let decision = u64::from(value.generation) | (u64::from(value.counter) << 32);
    let extra = (u64::from(value.verdict) << 7) ^ (u64::from(born) << 32);
    fmix(hash ^ fmix(decision ^ extra ^ 0x5bd1_e995_0000_0001)) as u32
}

/// The first way of the set a key of hash `hash` belongs to.
#[inline(always)]
pub fn flow_set_start(hash: u64) -> u32 {
    (hash as u32 & (FLOW_SETS - 1)) * FLOW_WAYS
}
/// Capacity of the fragment table (LRU).
pub const FRAG_ENTRIES: u32 = 16_384;
/// Size of the flow-event ring buffer in bytes.
pub const EVENT_RING_BYTES: u32 = 1 << 22;

/// What became of flow events, per CPU, by stable code. Never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStat {
    /// Submitted to the ring buffer.
    Sent = 0,
    /// The ring buffer was full: the event is lost.
    Lost = 1,
    /// Held back by a budget (see [`crate::budget`]).
    Suppressed = 2,
}

/// Slots of the event counters.
pub const EVENT_STAT_SLOTS: u32 = 4;

impl EventStat {
    /// Every code, for exporters.
    pub const ALL: [EventStat; 3] = [EventStat::Sent, EventStat::Lost, EventStat::Suppressed];

    /// The label value in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            EventStat::Sent => "sent",
            EventStat::Lost => "lost",
            EventStat::Suppressed => "suppressed",
        }
    }
}

/// A decision on a new flow, sent to the agent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_coarse_ns` (monotonic, a tick's resolution) when the
    /// packet was judged.
    pub ktime_ns: u64,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    /// A [`crate::Verdict`] code.
    pub verdict: u8,
    /// A [`crate::Reason`] code.
    pub reason: u8,
    /// Rule index in the pack of `generation`.
    pub rule: u32,
    pub generation: u32,
    pub ifindex: u32,
    /// [`EVENT_KIND_FLOW`].
    pub kind: u8,
    pub _pad: [u8; 3],
}
crate::assert_size!(FlowEvent, 64);

/// [`FlowEvent::rule`] of a packet no rule decided (it could not be judged).
pub const NO_RULE: u32 = u32::MAX;

/// Byte offset of the event kind, the same in every event type.
pub const EVENT_KIND_OFFSET: usize = 60;
/// [`FlowEvent::kind`].
pub const EVENT_KIND_FLOW: u8 = 0;
/// [`LearnEvent::kind`].
pub const EVENT_KIND_LEARN: u8 = 1;

/// Addresses one [`LearnEvent`] carries at most.
pub const LEARN_EVENT_ADDRS: usize = 8;

/// What one DNS answer taught a workload, for the flow log's DNS records.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnEvent {
    pub ktime_ns: u64,
    /// The workload that asked (IPv4 mapped into 16 bytes).
    pub workload: [u8; 16],
    /// WebGroup bits the addresses were learned for.
    pub groups: u64,
    /// The question name's hash (its text is in `EGV6_LNAMES`).
    pub name_hash: u64,
    /// Shortest lifetime among the addresses, after clamping, seconds.
    pub ttl_s: u32,
    /// Addresses learned from the answer (the first
    /// [`LEARN_EVENT_ADDRS`] are in `addrs`).
    pub count: u8,
    /// Family of `workload`.
    pub family: u8,
    pub _pad0: [u8; 14],
    /// [`EVENT_KIND_LEARN`], at [`EVENT_KIND_OFFSET`].
    pub kind: u8,
    pub _pad1: [u8; 3],
    /// The addresses (IPv4 mapped).
    pub addrs: [[u8; 16]; LEARN_EVENT_ADDRS],
}
crate::assert_size!(LearnEvent, 192);

crate::impl_pod!(FlowSlot, FlowKey, FlowValue, FragKey, FlowEvent, LearnEvent);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8, dport: u16) -> [u64; 5] {
        let mut dst = [0u8; 16];
        dst[10..12].copy_from_slice(&[0xff, 0xff]);
        dst[12..].copy_from_slice(&[203, 0, 113, last]);
        let mut src = dst;
        src[12..].copy_from_slice(&[10, 10, 1, 10]);
        let k = FlowKey {
            src,
            dst,
            sport_be: 40_000u16.to_be(),
            dport_be: dport.to_be(),
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        k.words()
    }

    /// Found in review: with a multiply-and-rotate round, flipping the top
    /// bit of one word and the bit it rotates to in the next cancelled out,
    /// so two flows (one permitted, one not) had the same hash, and so the
    /// same check word, under every seed. Each word is now mixed whole.
    #[test]
    fn flows_differing_in_paired_bits_hash_apart() {
        for seed in [0u64, 1, 0x6567_7265_7373, u64::MAX] {
            let a = key(7, 443);
            let b = key(7 ^ 0x80, 0x01bb ^ 0x10);
            assert_ne!(a, b);
            assert_ne!(flow_hash(&a, seed), flow_hash(&b, seed), "seed {seed:#x}");
        }
    }

    /// A way whose `used` a racing lookup left behind its `born` (an
    /// insert replaced it meanwhile) is not taken for a standing flow.
    #[test]
    fn a_way_used_before_it_was_born_is_not_kept() {
        let mut slot = FlowSlot { born: 5_000, used: 4_999, ..FlowSlot::default() };
        assert!(!slot.kept(5_001));
        slot.used = 5_000 + FLOW_KEEP_AFTER;
        assert!(slot.kept(5_000 + FLOW_KEEP_AFTER));
    }

    /// A way stands only once paid for, for one period; then its next hit
    /// is due to pay again, and unpaid it is not kept.
    #[test]
    fn standing_is_paid_for_and_runs_out() {
        let t0 = 1_000_000u32;
        let mut slot = FlowSlot { born: t0, used: t0, ..FlowSlot::default() };
        assert!(!slot.due(t0 + FLOW_KEEP_AFTER - 1), "too young");
        let t1 = t0 + FLOW_KEEP_AFTER + 5;
        assert!(slot.due(t1), "old enough: due");
        assert!(!slot.kept(t1), "not kept before it is paid for");
        (slot.born, slot.used) = (FlowSlot::standing_since(t1), t1);
        assert!(slot.kept(t1) && !slot.due(t1 + 10), "paid for: kept, nothing due");
        slot.used = t1 + FLOW_STANDING_PERIOD - 1;
        assert!(slot.kept(t1 + FLOW_STANDING_PERIOD - 1), "kept through the period");
        let t2 = t1 + FLOW_STANDING_PERIOD;
        assert!(!slot.kept(t2), "the period ran out");
        assert!(slot.due(t2), "due to pay again");
        // A denied flow never stands.
        slot.value.verdict = crate::Verdict::Denied as u32;
        assert!(!slot.due(t2) && !slot.kept(t1));
        assert_eq!(FLOW_STANDING_PERIOD_S, 550);
    }
}
