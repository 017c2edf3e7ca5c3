//! Every map of the datapath. Names carry the layout version (`EGV6_`): an
//! agent that finds pins of another version must not reinterpret them.
//!
//! The pack is double-buffered: slot 0 and slot 1 each hold a whole compiled
//! pack, `EGV6_LIVE[0]` says which one is live. A packet reads `EGV6_LIVE`
//! once and uses only that slot, so it is judged wholly by one pack.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use egress_common::{
    ClassDestKey, ClassWebGroupKey, DNS_STAT_SLOTS, EVENT_RING_BYTES, FLOW_CACHE_ENTRIES, FRAG_ENTRIES, FlowValue,
    FragKey, LearnKey, LearnValue, LiveState, MAX_LEARNED, MAX_LEARNED_NAMES, MAX_LOCAL_ADDRS, MAX_NAMES, MAX_PREFIXES,
    MAX_QUERIES, MAX_RULES, MAX_SP_ENTRIES, MAX_WEBGROUPS, MAX_X_CLASSES, MAX_XD_ENTRIES, MAX_XW_ENTRIES, NameEntry,
    NameKey, NameText, NamedRules, PORT_INDEX_SLOTS, QueryKey, QueryValue, REASON_SLOTS, RuleCounter, RuleInfo,
    ShortNameKey, SlotMeta, SourcePortKey, VERDICTS, WebGroupName,
};

/// Flag: allocate hash entries on demand (large, mostly sparse tables).
const NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`: the agent writes these arrays through a shared
/// mapping (one copy of 512 KiB instead of 131,074 syscalls per install).
const MMAPABLE: u32 = 1 << 10;

/// `[0]`: the live slot and its generation.
#[map]
pub static EGV6_LIVE: Array<LiveState> = Array::with_max_entries(1, 0);

/// `[0]`: what the agent last installed (hash, time, counts), for
/// `egress-agent status`; written by the agent, never read here.
#[map]
pub static EGV6_STATUS: Array<egress_common::PackStatus> = Array::with_max_entries(1, 0);

/// `[0]`: the running agent's lease on DNS learning; past it, names fail
/// closed (see [`egress_common::AgentLease`]). Written by the agent.
#[map]
pub static EGV6_AGENT: Array<egress_common::AgentLease> = Array::with_max_entries(1, 0);

/// Per slot: generation, mode, implicit-deny index, `any` source flag.
#[map]
pub static EGV6_SLOT_META: Array<SlotMeta> = Array::with_max_entries(2, 0);

/// The flow cache: 5-tuple → decision of the pack generation that made it,
/// set-associative over an array (see [`crate::flowcache`]).
#[map]
pub static EGV6_FLOWS: Array<egress_common::FlowSlot> = Array::with_max_entries(FLOW_CACHE_ENTRIES, MMAPABLE);

/// First fragments seen: later fragments of the datagram follow their verdict.
#[map]
pub static EGV6_FRAGS: LruHashMap<FragKey, FlowValue> = LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// Packets per [`egress_common::Reason`] code (per CPU).
#[map]
pub static EGV6_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_SLOTS, 0);

/// New-flow decisions of logging rules, and every deny and `would_deny`,
/// for flow logs.
#[map]
pub static EGV6_EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Budgets: per kind, the buckets of source addresses (with their host;
/// LRU; see [`crate::budget`]).
#[map]
pub static EGV6_BUDGETS: LruHashMap<egress_common::BudgetKey, egress_common::Bucket> =
    LruHashMap::with_max_entries(egress_common::MAX_BUDGETS, 0);

/// Budgets: per kind, the buckets of hosts (interface and MAC; LRU).
#[map]
pub static EGV6_HOSTBUD: LruHashMap<egress_common::BudgetKey, egress_common::Bucket> =
    LruHashMap::with_max_entries(egress_common::MAX_HOST_BUDGETS, 0);

/// Budgets: everyone's bucket, per [`egress_common::Spend`] code.
#[map]
pub static EGV6_ALLBUD: Array<egress_common::Bucket> = Array::with_max_entries(egress_common::SPEND_KINDS, 0);

/// Spends refused, per kind and the level that ran out (per CPU; slot
/// [`egress_common::budget_stat_slot`]).
#[map]
pub static EGV6_BUDSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(egress_common::BUDGET_STAT_SLOTS, 0);

/// Per-CPU working memory of the budgets: the sender a packet's spends are
/// charged to, and a spend's inputs.
#[map]
pub static EGV6_BSCRATCH: PerCpuArray<crate::budget::BudgetWork> = PerCpuArray::with_max_entries(1, 0);

/// Flow events per [`egress_common::EventStat`] code (per CPU).
#[map]
pub static EGV6_EVSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(egress_common::EVENT_STAT_SLOTS, 0);

/// Queries seen leaving for a resolver, awaiting their answer (LRU).
#[map]
pub static EGV6_QUERIES: LruHashMap<QueryKey, QueryValue> = LruHashMap::with_max_entries(MAX_QUERIES, 0);

/// (workload, address) → WebGroups it was learned for, and expiry (LRU).
#[map]
pub static EGV6_LEARNED: LruHashMap<LearnKey, LearnValue> = LruHashMap::with_max_entries(MAX_LEARNED, 0);

/// Names that taught addresses, by the hash stored in learned entries (LRU):
/// lets `egress-agent learned` print names from the live maps.
#[map]
pub static EGV6_LNAMES: LruHashMap<u64, NameText> = LruHashMap::with_max_entries(MAX_LEARNED_NAMES, 0);

/// The interfaces the agent attached to (ifindex -> 1, written by the
/// agent): a packet that came in on one of them is a workload's, whatever
/// its source address says, and never teaches addresses.
#[map]
pub static EGV6_LAN_IFS: HashMap<u32, u32> = HashMap::with_max_entries(egress_common::MAX_LAN_IFACES, 0);

/// WebGroup names by bit (written by the agent; bits are stable across packs).
#[map]
pub static EGV6_WEBGROUPS: Array<WebGroupName> = Array::with_max_entries(MAX_WEBGROUPS, 0);

/// DNS counters per [`egress_common::DnsStat`] code (per CPU).
#[map]
pub static EGV6_DNS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DNS_STAT_SLOTS, 0);

/// Tail calls of the TC ingress program: `[TAIL_QUERY]` the DNS query
/// program, `[TAIL_NAMES]` the names program.
#[map]
pub static EGV6_TAILS_TC: ProgramArray = ProgramArray::with_max_entries(egress_common::TAILS, 0);

/// Tail calls of the XDP program, as [`EGV6_TAILS_TC`].
#[map]
pub static EGV6_TAILS_XDP: ProgramArray = ProgramArray::with_max_entries(egress_common::TAILS, 0);

/// Per-CPU working memory of the DNS parser.
#[map]
pub static EGV6_SCRATCH: PerCpuArray<crate::scratch::Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per TCP flow whose name is read: where the reader stands and, once
/// read, the name (LRU; see [`crate::stream`]).
#[map]
pub static EGV6_CONNS: LruHashMap<egress_common::FlowKey, egress_common::ConnState> =
    LruHashMap::with_max_entries(egress_common::MAX_CONNS, 0);

/// The first client bytes of flows whose first message spans segments (LRU).
#[map]
pub static EGV6_STREAMS: LruHashMap<egress_common::FlowKey, egress_common::StreamBuf> =
    LruHashMap::with_max_entries(egress_common::MAX_STREAMS, 0);

/// The DNS tunnel guard: per workload and allowed zone, the distinct
/// random-looking names of the window and any refusal in force (LRU; see
/// [`crate::dns::guard`]).
#[map]
pub static EGV6_GUARDS: LruHashMap<egress_common::GuardKey, egress_common::GuardState> =
    LruHashMap::with_max_entries(egress_common::MAX_GUARDS, 0);

/// `[0]`: the secret seed of the tunnel guard's name hashes (drawn by the
/// datapath on first use; 0 until then).
#[map]
pub static EGV6_GUARD_SEED: Array<u64> = Array::with_max_entries(1, 0);

/// Hosts on the LAN links: per (interface, link-layer address), the
/// addresses it asked a listed resolver from (LRU; see [`crate::hosts`]).
#[map]
pub static EGV6_HOSTS: LruHashMap<egress_common::HostKey, egress_common::HostAddrs> =
    LruHashMap::with_max_entries(egress_common::MAX_HOSTS, 0);

/// Per-CPU working memory of the name reader.
#[map]
pub static EGV6_NSCRATCH: PerCpuArray<crate::stream::NameScratch> = PerCpuArray::with_max_entries(1, 0);

/// Declares one slot's tables.
macro_rules! slot_maps {
    ($src4:ident, $src6:ident, $dst4:ident, $dst6:ident, $ports:ident, $sp:ident, $sdef:ident, $wild:ident,
     $xd:ident, $defaults:ident, $rules:ident, $counters:ident, $local:ident, $names:ident, $snames:ident,
     $xw:ident, $resolvers:ident, $name_deny:ident, $src_permit:ident) => {
        /// The gateway's own addresses (IPv4-mapped), less this slot's
        /// resolvers: packets to them are not judged.
        #[map]
        pub static $local: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);
        /// Names and wildcard suffixes of `NAME_SHORT` bytes or more
        /// (`NameKey`) → WebGroup bits and zone.
        #[map]
        pub static $names: HashMap<NameKey, NameEntry> = HashMap::with_max_entries(MAX_NAMES, NO_PREALLOC);
        /// The shorter ones (`ShortNameKey`: a quarter of the bytes to hash).
        #[map]
        pub static $snames: HashMap<ShortNameKey, NameEntry> = HashMap::with_max_entries(MAX_NAMES, NO_PREALLOC);
        /// (x, WebGroup bit) → first rules of x naming that WebGroup, by
        /// how a flow stands to it (learned, named, both).
        #[map]
        pub static $xw: HashMap<ClassWebGroupKey, NamedRules> = HashMap::with_max_entries(MAX_XW_ENTRIES, NO_PREALLOC);
        /// x → its first `deny` rule with a WebGroup destination, where it
        /// comes before x's default, else `NO_RULE`.
        #[map]
        pub static $name_deny: Array<u32> = Array::with_max_entries(MAX_X_CLASSES, MMAPABLE);
        /// Source class → the WebGroups of the `permit` rules covering it
        /// (what the query filter lets a workload of the class ask for).
        #[map]
        pub static $src_permit: HashMap<u32, u64> = HashMap::with_max_entries(MAX_PREFIXES, NO_PREALLOC);
        /// The approved resolvers (IPv4-mapped).
        #[map]
        pub static $resolvers: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);
        /// Source address (IPv4) → source class.
        #[map]
        pub static $src4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
        /// Source address (IPv6) → source class.
        #[map]
        pub static $src6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
        /// Destination address (IPv4) → destination class.
        #[map]
        pub static $dst4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
        /// Destination address (IPv6) → destination class.
        #[map]
        pub static $dst6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(MAX_PREFIXES, 0);
        /// Protocol and destination port (see `PORT_INDEX_*`) → port class.
        #[map]
        pub static $ports: Array<u32> = Array::with_max_entries(PORT_INDEX_SLOTS, MMAPABLE);
        /// (source class, port class) → combined class `x` (or `NO_X`),
        /// where it differs from the source class's default.
        #[map]
        pub static $sp: HashMap<SourcePortKey, u32> = HashMap::with_max_entries(MAX_SP_ENTRIES, NO_PREALLOC);
        /// Source class → its default `x` (or `NO_X`): the x of the port
        /// classes `$sp` does not list for it.
        #[map]
        pub static $sdef: Array<u32> = Array::with_max_entries(MAX_PREFIXES, MMAPABLE);
        /// Port class → the `x` of the rules of any source that name no
        /// WebGroup (or `NO_X`), looked up beside the source's.
        #[map]
        pub static $wild: Array<u32> = Array::with_max_entries(PORT_INDEX_SLOTS, MMAPABLE);
        /// (x, destination class) → rule index, where it differs from the default.
        #[map]
        pub static $xd: HashMap<ClassDestKey, u32> = HashMap::with_max_entries(MAX_XD_ENTRIES, NO_PREALLOC);
        /// x → rule index of its first `any`-destination rule, `implicit-deny`,
        /// or `DECISION_UNCOVERED`.
        #[map]
        pub static $defaults: Array<u32> = Array::with_max_entries(MAX_X_CLASSES, MMAPABLE);
        /// Rule index → action, mode, log and counter index.
        #[map]
        pub static $rules: Array<RuleInfo> = Array::with_max_entries(MAX_RULES, MMAPABLE);
        /// `counter * VERDICTS + verdict` → packets, bytes, flows (per CPU);
        /// `counter` is the rule's lasting [`RuleInfo::counter`].
        #[map]
        pub static $counters: PerCpuArray<RuleCounter> = PerCpuArray::with_max_entries(MAX_RULES * VERDICTS, 0);
    };
}

slot_maps!(
    EGV6_SRC4_0,
    EGV6_SRC6_0,
    EGV6_DST4_0,
    EGV6_DST6_0,
    EGV6_PORTS_0,
    EGV6_SP_0,
    EGV6_SDEF_0,
    EGV6_WILD_0,
    EGV6_XD_0,
    EGV6_DEFAULTS_0,
    EGV6_RULES_0,
    EGV6_COUNTERS_0,
    EGV6_LOCAL_0,
    EGV6_NAMES_0,
    EGV6_SNAMES_0,
    EGV6_XW_0,
    EGV6_RESOLV_0,
    EGV6_NDENY_0,
    EGV6_SPERMIT_0
);
slot_maps!(
    EGV6_SRC4_1,
    EGV6_SRC6_1,
    EGV6_DST4_1,
    EGV6_DST6_1,
    EGV6_PORTS_1,
    EGV6_SP_1,
    EGV6_SDEF_1,
    EGV6_WILD_1,
    EGV6_XD_1,
    EGV6_DEFAULTS_1,
    EGV6_RULES_1,
    EGV6_COUNTERS_1,
    EGV6_LOCAL_1,
    EGV6_NAMES_1,
    EGV6_SNAMES_1,
    EGV6_XW_1,
    EGV6_RESOLV_1,
    EGV6_NDENY_1,
    EGV6_SPERMIT_1
);

/// One slot's tables, by reference.
pub struct Slot {
    pub src4: &'static LpmTrie<[u8; 4], u32>,
    pub src6: &'static LpmTrie<[u8; 16], u32>,
    pub dst4: &'static LpmTrie<[u8; 4], u32>,
    pub dst6: &'static LpmTrie<[u8; 16], u32>,
    pub ports: &'static Array<u32>,
    pub sp: &'static HashMap<SourcePortKey, u32>,
    pub src_default: &'static Array<u32>,
    pub wild: &'static Array<u32>,
    pub xd: &'static HashMap<ClassDestKey, u32>,
    pub defaults: &'static Array<u32>,
    pub rules: &'static Array<RuleInfo>,
    pub counters: &'static PerCpuArray<RuleCounter>,
    pub local: &'static HashMap<[u8; 16], u8>,
    pub names: &'static HashMap<NameKey, NameEntry>,
    pub short_names: &'static HashMap<ShortNameKey, NameEntry>,
    pub xw: &'static HashMap<ClassWebGroupKey, NamedRules>,
    pub resolvers: &'static HashMap<[u8; 16], u8>,
    pub name_deny: &'static Array<u32>,
    pub src_permit: &'static HashMap<u32, u64>,
}

/// Slot 0's tables.
pub const SLOT0: Slot = Slot {
    src4: &EGV6_SRC4_0,
    src6: &EGV6_SRC6_0,
    dst4: &EGV6_DST4_0,
    dst6: &EGV6_DST6_0,
    ports: &EGV6_PORTS_0,
    sp: &EGV6_SP_0,
    src_default: &EGV6_SDEF_0,
    wild: &EGV6_WILD_0,
    xd: &EGV6_XD_0,
    defaults: &EGV6_DEFAULTS_0,
    rules: &EGV6_RULES_0,
    counters: &EGV6_COUNTERS_0,
    local: &EGV6_LOCAL_0,
    names: &EGV6_NAMES_0,
    short_names: &EGV6_SNAMES_0,
    xw: &EGV6_XW_0,
    resolvers: &EGV6_RESOLV_0,
    name_deny: &EGV6_NDENY_0,
    src_permit: &EGV6_SPERMIT_0,
};

/// Slot 1's tables.
pub const SLOT1: Slot = Slot {
    src4: &EGV6_SRC4_1,
    src6: &EGV6_SRC6_1,
    dst4: &EGV6_DST4_1,
    dst6: &EGV6_DST6_1,
    ports: &EGV6_PORTS_1,
    sp: &EGV6_SP_1,
    src_default: &EGV6_SDEF_1,
    wild: &EGV6_WILD_1,
    xd: &EGV6_XD_1,
    defaults: &EGV6_DEFAULTS_1,
    rules: &EGV6_RULES_1,
    counters: &EGV6_COUNTERS_1,
    local: &EGV6_LOCAL_1,
    names: &EGV6_NAMES_1,
    short_names: &EGV6_SNAMES_1,
    xw: &EGV6_XW_1,
    resolvers: &EGV6_RESOLV_1,
    name_deny: &EGV6_NDENY_1,
    src_permit: &EGV6_SPERMIT_1,
};
