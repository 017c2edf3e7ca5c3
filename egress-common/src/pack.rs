//! The compiled pack as the datapath reads it.
//!
//! Classification is by equivalence classes (recursive flow classification):
//! the source address gives a source class (LPM trie), the destination address
//! a destination class (LPM trie), protocol and port a port class (array).
//! `(source class, port class)` gives a combined class `x` (hash; a pair it
//! does not hold reads as the source class's default, `SDEF`); `(x,
//! destination class)` gives the first matching rule (sparse hash), falling
//! back to `DEFAULTS[x]`, the first rule of `x` whose destination is `any`.
//! Rules of any source that name no WebGroup are in no source's `x`: the
//! port class gives their own combined class (`WILD`), looked up the same
//! way, and the earlier of the two rules decides. Every lookup is one map
//! access whatever the size of the pack.

/// Decision value: no rule's source covers the packet; it passes untouched.
pub const DECISION_UNCOVERED: u32 = u32::MAX;

/// Index of protocol and port in the port-class array: TCP ports first,
/// then UDP ports, then one slot for ICMP/ICMPv6 and one for other protocols.
pub const PORT_INDEX_TCP: u32 = 0;
/// First UDP slot.
pub const PORT_INDEX_UDP: u32 = 65_536;
/// The ICMP and ICMPv6 slot.
pub const PORT_INDEX_ICMP: u32 = 131_072;
/// The slot of every other protocol.
pub const PORT_INDEX_OTHER: u32 = 131_073;
/// Entries of the port-class array.
pub const PORT_INDEX_SLOTS: u32 = 131_074;

/// Capacity of the per-slot rule table (rules plus `implicit-deny` and
/// `uncovered-source`).
pub const MAX_RULES: u32 = 65_540;
/// Capacity of each LPM trie (prefixes of one family and direction).
pub const MAX_PREFIXES: u32 = 262_144;
/// Capacity of the `(source class, port class)` table. The kernel sizes a
/// hash's bucket array by capacity even without preallocation (16 bytes a
/// bucket: 8 MiB for this one, per slot), so these are what realistic
/// packs need with room to spare, not the most possible: a pack that
/// needs more is rejected with a clear error. ClassBench-like filter sets
/// of 10,000 rules need up to 373,000 entries here (`tests/src/shapes.rs`).
pub const MAX_SP_ENTRIES: u32 = 1 << 19;
/// A combined class that no rule matches (`implicit-deny`): in the
/// `(source class, port class)` table and as a source class's default.
pub const NO_X: u32 = u32::MAX;
/// Capacity of the `(combined class, WebGroup)` table.
pub const MAX_XW_ENTRIES: u32 = 1 << 17;
/// Capacity of the combined-class table (`DEFAULTS`).
pub const MAX_X_CLASSES: u32 = 1 << 18;
/// Capacity of the sparse `(x, destination class)` table.
pub const MAX_XD_ENTRIES: u32 = 1 << 20;
/// Capacity of the gateway-address table.
pub const MAX_LOCAL_ADDRS: u32 = 1024;

/// Rule action codes in [`RuleInfo::action`].
pub const ACTION_PERMIT: u8 = 0;
/// Deny.
pub const ACTION_DENY: u8 = 1;
/// Rule mode codes in [`RuleInfo::mode`] and [`SlotMeta::mode`].
pub const MODE_MONITOR: u8 = 0;
/// Enforce.
pub const MODE_ENFORCE: u8 = 1;

/// A rule as the datapath needs it, indexed by rule index (priority order;
/// the last index of a pack is `implicit-deny`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// `ACTION_PERMIT` or `ACTION_DENY`.
    pub action: u8,
    /// `MODE_MONITOR` or `MODE_ENFORCE`.
    pub mode: u8,
    /// 1 when the rule writes a flow-log record for new flows.
    pub log: u8,
    pub _pad: u8,
    /// The rule's cell in the slot's counters (`counter * VERDICTS +
    /// verdict`). The agent keeps one counter per rule name across packs,
    /// so installing a pack never has to move or zero counters.
    pub counter: u32,
}
crate::assert_size!(RuleInfo, 8);

/// Key of a slot's `(source class, port class)` table, whose value is
/// the combined class `x`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourcePortKey {
    pub src_class: u32,
    pub port_class: u32,
}
crate::assert_size!(SourcePortKey, 8);

/// Key of a slot's sparse `(combined class, destination class)` table,
/// whose value is the first matching rule.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassDestKey {
    pub x_class: u32,
    pub dst_class: u32,
}
crate::assert_size!(ClassDestKey, 8);

/// LPM trie key data for IPv4 (network order bytes).
pub type Ipv4KeyData = [u8; 4];
/// LPM trie key data for IPv6 (network order bytes).
pub type Ipv6KeyData = [u8; 16];

/// `LIVE[0]`: which slot of the double-buffered pack is live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveState {
    /// 0 or 1.
    pub slot: u32,
    /// Generation of the pack in the live slot (0: no pack yet, pass all).
    pub generation: u32,
}
crate::assert_size!(LiveState, 8);

/// `SLOT_META[slot]`: facts about the pack installed in a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotMeta {
    /// The pack's generation (increments on every install).
    pub generation: u32,
    /// Index of `implicit-deny` in the slot's rule table.
    pub implicit_rule: u32,
    /// The mode applied to packets the datapath cannot judge: enforce when
    /// any deny that could apply (a rule's or `implicit-deny`) enforces.
    pub mode: u8,
    /// 1 when some rule's source is `any` (every source is covered).
    pub any_source: u8,
    /// `SLOT_FLAG_*` bits.
    pub flags: u8,
    /// `dns.query_filter`: 0 off, 1 monitor, 2 enforce.
    pub query_filter: u8,
    /// `dns.tunnel_guard` (`TUNNEL_GUARD_*`).
    pub tunnel_guard: u8,
    /// `uncovered` (`UNCOVERED_*`): with [`UNCOVERED_DENY`], a packet from
    /// a source no rule covers is decided by rule `implicit_rule + 1`
    /// (`uncovered-source`). 0 (pass) in pins written before the setting.
    pub uncovered: u8,
    pub _pad: [u8; 2],
    /// `dns.min_ttl` and `dns.max_ttl`, seconds.
    pub min_ttl: u32,
    pub max_ttl: u32,
    /// WebGroups used by `permit` rules (the query filter reads the asking
    /// workload's own, from `SRC_PERMIT`).
    pub permit_groups: u64,
    /// Key of the flow cache's hash ([`crate::flow_hash`]): drawn at random
    /// for each install (a new generation's flows are cached afresh anyway).
    pub flow_seed: u64,
    /// `dns.query_types`: bit `t % 64` of word `t / 64` set for each query
    /// type the query filter lets through.
    pub query_types: [u64; 4],
    /// The name lengths the slot's name table holds, by kind.
    pub name_lengths: crate::NameLengths,
}

/// [`SlotMeta::uncovered`]: a packet from a source no rule covers passes
/// untouched, only counted.
pub const UNCOVERED_PASS: u8 = 0;
/// [`SlotMeta::uncovered`]: it is denied in the pack's mode by rule
/// `uncovered-source`, the one after `implicit-deny`.
pub const UNCOVERED_DENY: u8 = 1;

/// `STATUS[0]`: what the agent last installed, for `egress-agent status`
/// (read from the pins, also while no agent runs). The kernel never reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackStatus {
    /// Generation of the live pack.
    pub generation: u32,
    /// Rules of the pack (without `implicit-deny`).
    pub rules: u32,
    /// When it was installed: nanoseconds since the Unix epoch.
    pub installed_unix_ns: u64,
    /// Hash of the policy files' names and texts, in reading order.
    pub hash: u64,
    pub smartgroups: u32,
    pub webgroups: u32,
    /// Domain patterns over all WebGroups.
    pub domains: u32,
    /// The pack's default mode: [`MODE_MONITOR`] or [`MODE_ENFORCE`].
    pub mode: u8,
    /// [`HOOK_TC`] or [`HOOK_XDP`].
    pub hook: u8,
    pub _pad: [u8; 2],
}
crate::assert_size!(PackStatus, 40);

/// [`PackStatus::hook`]: TC (tcx) ingress.
pub const HOOK_TC: u8 = 0;
/// [`PackStatus::hook`]: XDP.
pub const HOOK_XDP: u8 = 1;

/// [`SlotMeta::query_filter`] values.
pub const QUERY_FILTER_OFF: u8 = 0;
/// Forward and report.
pub const QUERY_FILTER_MONITOR: u8 = 1;
/// Refuse.
pub const QUERY_FILTER_ENFORCE: u8 = 2;

/// [`SlotMeta::flags`]: decide every packet afresh, never insert into the
/// flow cache. Only benchmarks set it, to measure the new-flow path.
pub const SLOT_FLAG_NO_FLOW_CACHE: u8 = 1;
/// [`SlotMeta::flags`]: some rule has a WebGroup destination, so new flows
/// look up learned addresses.
pub const SLOT_FLAG_WEBGROUPS: u8 = 2;
/// [`SlotMeta::flags`]: some TCP flow's decision can change with its name
/// (a `permit` rule verifies names, or a `deny` rule has a WebGroup
/// destination), so new TCP flows look up `NAME_DENY` and the `XW` columns.
pub const SLOT_FLAG_NAMES: u8 = 4;
crate::assert_size!(SlotMeta, 200);

/// Per-CPU counter cell, indexed `rule * VERDICTS + verdict` in a slot's
/// counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounter {
    pub packets: u64,
    pub bytes: u64,
    /// New flows (cache misses) the rule decided.
    pub flows: u64,
}
crate::assert_size!(RuleCounter, 24);

crate::impl_pod!(RuleInfo, SourcePortKey, ClassDestKey, LiveState, SlotMeta, RuleCounter, PackStatus);
