//! Budgets: how much of a shared resource one sender may take. A workload
//! with root can send from any address it can take (any address of its
//! IPv6 /64, any on-link IPv4 address), so no budget is keyed by the
//! source address alone: each spend is charged, in turn, to
//!
//! 1. the source address as sent by its host ([`Level::Address`], keyed by
//!    interface, MAC and address): what one workload may take when its
//!    addresses are its own (behind a router that checks them, as a VPC
//!    does); a neighbour that forges the address spends its own;
//! 2. the frame's sender, its interface and link-layer address
//!    ([`Level::Host`]): what every address one host sends from takes
//!    together, however many it cycles through. Behind a router, every
//!    workload shares the router's, so it is ten workloads' worth;
//! 3. everything at once ([`Level::All`]): the cap that keeps the shared
//!    table or ring whole when hosts multiply their link-layer addresses
//!    too (on a link that lets them: then it is all that is left).
//!
//! A spend goes through only when every level has room; a level without
//! room refuses it, and what the levels before it took is given back.
//! What an answer teaches is charged to the host that sent its query.
//!
//! Budgets are token buckets ([`Bucket`]): source addresses' and hosts' in
//! LRU tables keyed by [`BudgetKey`] (a bucket is made only for a spend
//! that went through), everyone's in an array by kind; their rates are here
//! ([`limit`]), stated in `POLICY.md`.

/// What a budget pays for (stable codes: part of the map key and of the
/// metric labels; never renumber).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// Events for the flow log (flow decisions, learned addresses, tunnel
    /// reports), through the ring buffer.
    Events = 0,
    /// Queries recorded in the outstanding-query table.
    Queries = 1,
    /// Addresses learned from answers into the learned table.
    Learned = 2,
    /// First fragments recorded in the fragment table.
    Fragments = 3,
    /// Reports of suspected DNS tunnels (a budget apart: a workload's own
    /// flow events cannot spend it to keep its tunnel out of the log).
    Alerts = 4,
    /// Flow-cache ways made standing (kept from churn) for a period.
    Standing = 5,
}

impl Spend {
    /// Every kind, in code order.
    pub const ALL: [Spend; 6] =
        [Spend::Events, Spend::Queries, Spend::Learned, Spend::Fragments, Spend::Alerts, Spend::Standing];

    /// The label value in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Spend::Events => "events",
            Spend::Queries => "queries",
            Spend::Learned => "learned",
            Spend::Fragments => "fragments",
            Spend::Alerts => "alerts",
            Spend::Standing => "standing_flows",
        }
    }

    /// The kind of code `code`.
    #[inline(always)]
    pub const fn from_code(code: u8) -> Option<Spend> {
        match code {
            0 => Some(Spend::Events),
            1 => Some(Spend::Queries),
            2 => Some(Spend::Learned),
            3 => Some(Spend::Fragments),
            4 => Some(Spend::Alerts),
            5 => Some(Spend::Standing),
            _ => None,
        }
    }
}

/// Who a bucket belongs to (stable codes, as [`Spend`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// One source address on one interface.
    Address = 0,
    /// One link-layer address on one interface.
    Host = 1,
    /// Every sender.
    All = 2,
}

/// Levels of [`Level`] (the stride of the budget counters).
pub const LEVELS: u32 = 4;

impl Level {
    /// Every level, in the order a spend is charged.
    pub const ALL: [Level; 3] = [Level::Address, Level::Host, Level::All];

    /// The label value in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Address => "address",
            Level::Host => "host",
            Level::All => "all",
        }
    }
}

/// A budget's rate: `per_s` a second on average, `burst` at once. A rate
/// of 0 refills `burst` once every period the spender names (see
/// [`Bucket::take`]): `FLOW_STANDING_PERIOD_S`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub per_s: u64,
    pub burst: u64,
}

/// The budget of `kind` at `level`.
#[allow(clippy::match_same_arms, reason = "a table: each budget on its own line")]
pub const fn limit(kind: Spend, level: Level) -> Limit {
    const fn l(per_s: u64, burst: u64) -> Limit {
        Limit { per_s, burst }
    }
    match (kind, level) {
        // The ring holds 4 MiB: 20,000 of the largest events.
        (Spend::Events, Level::Address) => l(100, 200),
        (Spend::Events, Level::Host) => l(1_000, 2_000),
        (Spend::Events, Level::All) => l(10_000, 20_000),
        // The query table holds MAX_QUERIES (131,072); a query's answer
        // teaches for 10 s: everyone's cap lets no unanswered query be
        // evicted sooner (20,000 + 10 x 10,000 < 131,072).
        (Spend::Queries, Level::Address) => l(1_000, 2_000),
        (Spend::Queries, Level::Host) => l(2_000, 10_000),
        (Spend::Queries, Level::All) => l(10_000, 20_000),
        // Addresses taught (new or renewed) into the learned table, which
        // holds MAX_LEARNED (1,048,576): one host needs an hour and a half
        // to turn it over, everyone together nine minutes.
        (Spend::Learned, Level::Address) => l(20, 4_096),
        (Spend::Learned, Level::Host) => l(200, 32_768),
        (Spend::Learned, Level::All) => l(2_000, 65_536),
        // A first fragment's entry is needed for milliseconds; the table
        // holds FRAG_ENTRIES (16,384).
        (Spend::Fragments, Level::Address) => l(200, 400),
        (Spend::Fragments, Level::Host) => l(1_000, 2_000),
        (Spend::Fragments, Level::All) => l(8_000, 8_000),
        // One report per workload, zone and window at most.
        (Spend::Alerts, Level::Address) => l(10, 20),
        (Spend::Alerts, Level::Host) => l(100, 200),
        (Spend::Alerts, Level::All) => l(1_000, 2_000),
        // Standing flows, paid for every FLOW_STANDING_PERIOD: a host holds
        // at most 2 x 4,096 at once, everyone 65,536 of the cache's 262,144
        // ways (a set of four kept ways, which caches nothing new, stays
        // rare).
        (Spend::Standing, Level::Address) => l(0, 1_024),
        (Spend::Standing, Level::Host) => l(0, 4_096),
        (Spend::Standing, Level::All) => l(0, 32_768),
    }
}

/// Source addresses' buckets tracked at once (LRU). A bucket is made only
/// for a spend that every level let through: cycling addresses churns this
/// table no faster than the host's budget allows, and never the hosts'
/// (their own table) or everyone's (an array).
pub const MAX_BUDGETS: u32 = 131_072;
/// Hosts' buckets tracked at once (LRU).
pub const MAX_HOST_BUDGETS: u32 = 65_536;
/// Kinds of [`Spend`] room is kept for (everyone's buckets, by code).
pub const SPEND_KINDS: u32 = 8;

/// `BUDGETS` and `HOST_BUDGETS` key: one bucket of a source address or
/// of a host (everyone's are an array by kind).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    /// [`Spend`] code.
    pub kind: u8,
    /// [`Level`] code.
    pub level: u8,
    pub _pad: [u8; 2],
    /// The interface.
    pub ifindex: u32,
    /// The host's link-layer address, zero-padded: an address's bucket is
    /// its host's too, so a neighbour that sends from it spends its own.
    pub mac: [u8; 8],
    /// [`Level::Address`]: the source address (IPv4-mapped); zero for a host.
    pub addr: [u8; 16],
}
crate::assert_size!(BudgetKey, 32);

/// A token bucket, in thousandths of a token.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub milli_tokens: u64,
    /// `bpf_ktime_get_coarse_ns` of the last refill.
    pub last_ns: u64,
}
crate::assert_size!(Bucket, 16);

impl Bucket {
    /// A new bucket at `now`, full.
    #[inline(always)]
    pub const fn full(limit: Limit, now: u64) -> Bucket {
        Bucket { milli_tokens: limit.burst * 1000, last_ns: now }
    }

    /// Refills for the time since the last refill, then takes `n` tokens if
    /// it holds them; `false` (nothing taken) when it does not. A limit of
    /// rate 0 refills `burst` every `period_s` seconds (at least 1).
    #[inline(always)]
    pub fn take(&mut self, limit: Limit, now: u64, n: u64, period_s: u64) -> bool {
        let full = limit.burst * 1000;
        // Capped so that no product below overflows (a gap of 49 days
        // refills any bucket anyway). Within the same millisecond (every
        // spend but the first of a busy one) no division is made: the
        // datapath has none in hardware to spare.
        let gap_ns = now.saturating_sub(self.last_ns);
        let elapsed_ms = if gap_ns < 1_000_000 { 0 } else { (gap_ns / 1_000_000).min(1 << 32) };
        let period_s = if period_s == 0 { 1 } else { period_s };
        let (refill, bought_ns) = if limit.per_s != 0 {
            (elapsed_ms * limit.per_s, elapsed_ms * 1_000_000)
        } else {
            // burst * 1000 milli-tokens per period_s * 1000 ms; the time
            // taken is what those milli-tokens cost, so no fraction is lost.
            let refill = elapsed_ms * limit.burst / period_s;
            (refill, (refill * period_s * 1_000_000).checked_div(limit.burst).unwrap_or(0))
        };
        let tokens = if refill >= full { full } else { (self.milli_tokens + refill).min(full) };
        if refill >= full {
            self.last_ns = now;
        } else {
            self.last_ns += bought_ns;
        }
        self.milli_tokens = tokens;
        if tokens < n * 1000 {
            return false;
        }
        self.milli_tokens = tokens - n * 1000;
        true
    }

    /// Gives back `n` tokens taken by [`Bucket::take`] (a later level
    /// refused the spend), up to the burst.
    #[inline(always)]
    pub fn refund(&mut self, limit: Limit, n: u64) {
        self.milli_tokens = (self.milli_tokens + n * 1000).min(limit.burst * 1000);
    }
}

const _: () = assert!(Spend::ALL.len() <= SPEND_KINDS as usize);

/// Slots of the budget counters: `kind * 4 + level`, what ran out.
pub const BUDGET_STAT_SLOTS: u32 = 24;

/// The counter slot of a spend of `kind` refused at `level`.
#[inline(always)]
pub const fn budget_stat_slot(kind: Spend, level: Level) -> u32 {
    kind as u32 * LEVELS + level as u32
}

crate::impl_pod!(BudgetKey, Bucket);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let l = Limit { per_s: 100, burst: 200 };
        let mut b = Bucket::full(l, 5 * S);
        let first = (0..1_000).filter(|_| b.take(l, 5 * S, 1, 1)).count();
        assert_eq!(first, 200);
        // Half a second later: 50 more.
        let then = (0..1_000).filter(|_| b.take(l, 5 * S + S / 2, 1, 1)).count();
        assert_eq!(then, 50);
        // Never more than the burst, however long it waited.
        let later = (0..1_000).filter(|_| b.take(l, 500 * S, 1, 1)).count();
        assert_eq!(later, 200);
    }

    #[test]
    fn refills_in_small_steps_are_not_lost() {
        let l = Limit { per_s: 100, burst: 200 };
        let mut b = Bucket::full(l, 0);
        assert!(b.take(l, 0, 200, 1));
        // Every 100 us for a second: the tenths of a millisecond add up.
        let got = (1..=10_000u64).filter(|i| b.take(l, i * 100_000, 1, 1)).count();
        assert!((99..=101).contains(&got), "{got}");
    }

    #[test]
    fn a_period_budget_refills_its_burst_once_a_period() {
        let l = Limit { per_s: 0, burst: 4_096 };
        let mut b = Bucket::full(l, 0);
        assert!(b.take(l, 0, 4_000, 300));
        assert!(!b.take(l, 0, 100, 300));
        assert!(b.take(l, 150 * S, 2_000, 300));
        assert!(!b.take(l, 150 * S, 200, 300));
        assert!(b.take(l, 10_000 * S, 4_096, 300));
    }

    /// Found in review: a slow budget spent often lost the fractions of
    /// each refill (up to half its rate).
    #[test]
    fn a_slow_budget_spent_often_refills_at_its_rate() {
        let l = Limit { per_s: 0, burst: 1_024 };
        let mut b = Bucket::full(l, 0);
        assert!(b.take(l, 0, 1_024, 550));
        // A try every 5 ms for 55 s: a tenth of the period, 102 tokens.
        let got = (1..=11_000u64).filter(|i| b.take(l, i * 5_000_000, 1, 550)).count();
        assert!((101..=103).contains(&got), "{got}");
    }

    #[test]
    fn a_refund_gives_back_up_to_the_burst() {
        let l = Limit { per_s: 100, burst: 10 };
        let mut b = Bucket::full(l, 0);
        assert!(b.take(l, 0, 4, 1));
        b.refund(l, 4);
        assert!(b.take(l, 0, 10, 1));
        b.refund(l, 50);
        assert_eq!(b.milli_tokens, 10_000);
    }

    #[test]
    fn a_refused_take_takes_nothing() {
        let l = Limit { per_s: 100, burst: 10 };
        let mut b = Bucket::full(l, 0);
        assert!(!b.take(l, 0, 11, 1));
        assert!(b.take(l, 0, 10, 1));
    }
}
