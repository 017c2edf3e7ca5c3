//! The names of the datapath's maps, in one place: the agent opens, pins and
//! reports maps by these names.
//!
//! Every name starts with `EGV{LAYOUT_VERSION}_`: pins of another layout are
//! never taken for this one's. The kernel programs name their maps by the
//! identifiers of their `#[map]` statics (the `#[map]` macro takes only a
//! literal), which spell the same names; the lab's `map_names` test checks
//! that the names here are exactly the maps of the built object.
//!
//! The pack is double-buffered: every per-slot table is two maps, `{base}_0`
//! and `{base}_1` (see [`PER_SLOT`]).

/// Layout version of every pinned map. Bumped whenever any type in this
/// crate changes size or meaning; it is part of every map's name.
pub const LAYOUT_VERSION: u32 = 6;

/// `[0]`: the live slot and its generation ([`crate::LiveState`]).
pub const LIVE: &str = "EGV6_LIVE";
/// `[0]`: what the agent last installed ([`crate::PackStatus`]).
pub const STATUS: &str = "EGV6_STATUS";
/// `[0]`: the agent's lease on DNS learning ([`crate::AgentLease`]).
pub const AGENT: &str = "EGV6_AGENT";
/// Per slot: [`crate::SlotMeta`].
pub const SLOT_META: &str = "EGV6_SLOT_META";
/// The flow cache ([`crate::FlowSlot`] ways).
pub const FLOWS: &str = "EGV6_FLOWS";
/// First fragments seen ([`crate::FragKey`] → [`crate::FlowValue`]).
pub const FRAGS: &str = "EGV6_FRAGS";
/// Packets per [`crate::Reason`] code (per CPU).
pub const REASONS: &str = "EGV6_REASONS";
/// The event ring buffer ([`crate::FlowEvent`], [`crate::LearnEvent`]).
pub const EVENTS: &str = "EGV6_EVENTS";
/// Source addresses' budgets: [`crate::BudgetKey`] → [`crate::Bucket`] (LRU).
pub const BUDGETS: &str = "EGV6_BUDGETS";
/// Hosts' budgets: [`crate::BudgetKey`] → [`crate::Bucket`] (LRU).
pub const HOST_BUDGETS: &str = "EGV6_HOSTBUD";
/// Everyone's budgets, per [`crate::Spend`] code ([`crate::Bucket`]).
pub const ALL_BUDGETS: &str = "EGV6_ALLBUD";
/// Spends refused per kind and level (per CPU; see [`crate::budget_stat_slot`]).
pub const BUDGET_STATS: &str = "EGV6_BUDSTATS";
/// Per-CPU working memory of the budgets.
pub const BUDGET_SCRATCH: &str = "EGV6_BSCRATCH";
/// Events per [`crate::EventStat`] code (per CPU).
pub const EVENT_STATS: &str = "EGV6_EVSTATS";
/// Outstanding DNS queries ([`crate::QueryKey`] → [`crate::QueryValue`]).
pub const QUERIES: &str = "EGV6_QUERIES";
/// Learned addresses ([`crate::LearnKey`] → [`crate::LearnValue`]).
pub const LEARNED: &str = "EGV6_LEARNED";
/// Names that taught addresses, by hash ([`crate::NameText`]).
pub const LEARNED_NAMES: &str = "EGV6_LNAMES";
/// WebGroup names by bit ([`crate::WebGroupName`]).
pub const WEBGROUPS: &str = "EGV6_WEBGROUPS";
/// DNS counters per [`crate::DnsStat`] code (per CPU).
pub const DNS_STATS: &str = "EGV6_DNS_STATS";
/// Tail calls of the TC ingress program.
pub const TAILS_TC: &str = "EGV6_TAILS_TC";
/// Tail calls of the XDP program.
pub const TAILS_XDP: &str = "EGV6_TAILS_XDP";
/// Per-CPU working memory of the DNS parser.
pub const SCRATCH: &str = "EGV6_SCRATCH";
/// The interfaces the agent attached to.
pub const LAN_IFS: &str = "EGV6_LAN_IFS";

/// Per TCP flow whose name is read: [`crate::FlowKey`] → [`crate::ConnState`].
pub const CONNS: &str = "EGV6_CONNS";
/// First client bytes of flows whose message spans segments
/// ([`crate::FlowKey`] → [`crate::StreamBuf`]).
pub const STREAMS: &str = "EGV6_STREAMS";
/// Per-CPU working memory of the name reader.
pub const NAME_SCRATCH: &str = "EGV6_NSCRATCH";
/// The DNS tunnel guard: [`crate::GuardKey`] → [`crate::GuardState`] (LRU).
pub const GUARDS: &str = "EGV6_GUARDS";
/// `[0]`: the tunnel guard's secret hash seed.
pub const GUARD_SEED: &str = "EGV6_GUARD_SEED";
/// Hosts on the LAN links: [`crate::HostKey`] → [`crate::HostAddrs`] (LRU).
pub const HOSTS: &str = "EGV6_HOSTS";

/// Index in `TAILS_TC`/`TAILS_XDP` of the DNS query program.
pub const TAIL_QUERY: u32 = 0;
/// Index in `TAILS_TC`/`TAILS_XDP` of the names program (the stream reader).
pub const TAIL_NAMES: u32 = 1;
/// Index in `TAILS_TC`/`TAILS_XDP` of the read program (the stream
/// reader's gathering and the second decision).
pub const TAIL_READ: u32 = 2;
/// Index in `TAILS_TC` of the second-answer program, tail-called by the
/// answer program (TC egress) for a TCP segment that carries two answers.
pub const TAIL_SECOND_ANSWER: u32 = 3;
/// Entries of each tail-call array.
pub const TAILS: u32 = 4;

/// Every map shared by both slots.
pub const SHARED: [&str; 29] = [
    LIVE,
    STATUS,
    SLOT_META,
    FLOWS,
    FRAGS,
    REASONS,
    EVENTS,
    BUDGETS,
    HOST_BUDGETS,
    ALL_BUDGETS,
    BUDGET_STATS,
    BUDGET_SCRATCH,
    EVENT_STATS,
    QUERIES,
    LEARNED,
    LEARNED_NAMES,
    WEBGROUPS,
    DNS_STATS,
    TAILS_TC,
    TAILS_XDP,
    SCRATCH,
    AGENT,
    LAN_IFS,
    CONNS,
    STREAMS,
    NAME_SCRATCH,
    GUARDS,
    GUARD_SEED,
    HOSTS,
];

/// Slots of the double-buffered pack.
pub const SLOTS: usize = 2;

/// A per-slot table: its map in each slot, indexed by slot.
pub type SlotNames = [&'static str; SLOTS];

/// Source address (IPv4) → source class.
pub const SRC4: SlotNames = ["EGV6_SRC4_0", "EGV6_SRC4_1"];
/// Source address (IPv6) → source class.
pub const SRC6: SlotNames = ["EGV6_SRC6_0", "EGV6_SRC6_1"];
/// Destination address (IPv4) → destination class.
pub const DST4: SlotNames = ["EGV6_DST4_0", "EGV6_DST4_1"];
/// Destination address (IPv6) → destination class.
pub const DST6: SlotNames = ["EGV6_DST6_0", "EGV6_DST6_1"];
/// Protocol and port → port class.
pub const PORTS: SlotNames = ["EGV6_PORTS_0", "EGV6_PORTS_1"];
/// [`crate::SourcePortKey`] → combined class.
pub const SOURCE_PORT: SlotNames = ["EGV6_SP_0", "EGV6_SP_1"];
/// [`crate::ClassDestKey`] → rule index.
pub const CLASS_DEST: SlotNames = ["EGV6_XD_0", "EGV6_XD_1"];
/// Source class → its default combined class (or `NO_X`).
pub const SRC_DEFAULT: SlotNames = ["EGV6_SDEF_0", "EGV6_SDEF_1"];
/// Port class → the combined class of the rules of any source that name no
/// WebGroup (or `NO_X`).
pub const WILD: SlotNames = ["EGV6_WILD_0", "EGV6_WILD_1"];
/// Combined class → default rule index.
pub const DEFAULTS: SlotNames = ["EGV6_DEFAULTS_0", "EGV6_DEFAULTS_1"];
/// Rule index → [`crate::RuleInfo`].
pub const RULES: SlotNames = ["EGV6_RULES_0", "EGV6_RULES_1"];
/// Per-rule, per-verdict [`crate::RuleCounter`]s (per CPU).
pub const COUNTERS: SlotNames = ["EGV6_COUNTERS_0", "EGV6_COUNTERS_1"];
/// The gateway's own addresses.
pub const LOCAL: SlotNames = ["EGV6_LOCAL_0", "EGV6_LOCAL_1"];
/// [`crate::NameKey`] of a name of [`crate::NAME_SHORT`] bytes or more →
/// WebGroup bits and zone.
pub const NAMES: SlotNames = ["EGV6_NAMES_0", "EGV6_NAMES_1"];
/// [`crate::ShortNameKey`] → WebGroup bits and zone.
pub const SHORT_NAMES: SlotNames = ["EGV6_SNAMES_0", "EGV6_SNAMES_1"];
/// Source class → the WebGroups the query filter lets it ask for.
pub const SRC_PERMIT: SlotNames = ["EGV6_SPERMIT_0", "EGV6_SPERMIT_1"];
/// Combined class → its first `deny` rule with a WebGroup destination.
pub const NAME_DENY: SlotNames = ["EGV6_NDENY_0", "EGV6_NDENY_1"];
/// [`crate::ClassWebGroupKey`] → [`crate::NamedRules`].
pub const CLASS_WEBGROUP: SlotNames = ["EGV6_XW_0", "EGV6_XW_1"];
/// The approved resolvers.
pub const RESOLVERS: SlotNames = ["EGV6_RESOLV_0", "EGV6_RESOLV_1"];

/// Every per-slot table.
pub const PER_SLOT: [SlotNames; 19] = [
    SRC4,
    SRC6,
    DST4,
    DST6,
    PORTS,
    SOURCE_PORT,
    SRC_DEFAULT,
    WILD,
    CLASS_DEST,
    DEFAULTS,
    RULES,
    COUNTERS,
    LOCAL,
    NAMES,
    SHORT_NAMES,
    CLASS_WEBGROUP,
    RESOLVERS,
    NAME_DENY,
    SRC_PERMIT,
];

/// Every map of the datapath: the shared ones, then slot 0's and slot 1's.
pub fn all() -> impl Iterator<Item = &'static str> {
    let per_slot = (0..SLOTS).flat_map(|slot| PER_SLOT.iter().map(move |table| table[slot]));
    SHARED.iter().copied().chain(per_slot)
}

/// The kernel keeps 15 bytes of a map's name (`BPF_OBJ_NAME_LEN` with its
/// NUL); the agent finds loaded maps by that name, so none may be longer.
const KERNEL_NAME_MAX: usize = 15;

/// Whether `name` is `EGV{LAYOUT_VERSION}_` and a tail of at most
/// [`KERNEL_NAME_MAX`] bytes in all.
const fn well_formed(name: &str) -> bool {
    let b = name.as_bytes();
    if b.len() > KERNEL_NAME_MAX || b.len() < 5 || b[0] != b'E' || b[1] != b'G' || b[2] != b'V' {
        return false;
    }
    let mut version = 0u32;
    let mut i = 3;
    while i < b.len() && b[i].is_ascii_digit() {
        version = version * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    i > 3 && version == LAYOUT_VERSION && i + 1 < b.len() && b[i] == b'_'
}

/// Whether the two names of a per-slot table are one base with the
/// suffixes `_0` and `_1`.
const fn slot_pair(names: SlotNames) -> bool {
    let (a, b) = (names[0].as_bytes(), names[1].as_bytes());
    let n = a.len();
    if n != b.len() || n < 3 || a[n - 2] != b'_' || a[n - 1] != b'0' || b[n - 1] != b'1' {
        return false;
    }
    let mut i = 0;
    while i < n - 1 {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const _: () = {
    let mut i = 0;
    while i < SHARED.len() {
        assert!(well_formed(SHARED[i]), "a shared map name lacks the layout prefix or is too long");
        i += 1;
    }
    let mut t = 0;
    while t < PER_SLOT.len() {
        assert!(slot_pair(PER_SLOT[t]), "a per-slot table's names are not one base with `_0` and `_1`");
        assert!(well_formed(PER_SLOT[t][0]) && well_formed(PER_SLOT[t][1]), "a per-slot map name is malformed");
        t += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_counted() {
        let names: [&str; SHARED.len() + SLOTS * PER_SLOT.len()] = {
            let mut out = [""; SHARED.len() + SLOTS * PER_SLOT.len()];
            for (o, n) in out.iter_mut().zip(all()) {
                *o = n;
            }
            out
        };
        assert_eq!(all().count(), names.len());
        for (i, a) in names.iter().enumerate() {
            assert!(names[i + 1..].iter().all(|b| a != b), "{a} twice");
        }
    }

    #[test]
    fn malformed_names_are_caught() {
        assert!(well_formed("EGV6_LIVE"));
        assert!(!well_formed("EGV2_LIVE"));
        assert!(!well_formed("EGV6_"));
        assert!(!well_formed("EGV6_DEFAULTS_10"));
        assert!(slot_pair(["EGV6_XW_0", "EGV6_XW_1"]));
        assert!(!slot_pair(["EGV6_XW_0", "EGV6_XD_1"]));
    }
}
