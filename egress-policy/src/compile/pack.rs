//! What a compile produces: the tables of one datapath slot, the names
//! reports use, and [`CompiledPack::decide`], the datapath's lookups done
//! in userspace (for tests and `explain`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use egress_common::{
    ClassDestKey, ClassWebGroupKey, DECISION_UNCOVERED, MAX_RULES, MAX_WEBGROUPS, NO_X, NameEntry, NameKey,
    PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_UDP, RuleInfo, SourcePortKey,
};
use ipnet::IpNet;

use crate::bitset::FastMap as HashMap;
use crate::bitset::SignedSets;
use crate::model::Mode;

/// The name under which the implicit default deny is reported.
pub const IMPLICIT_DENY: &str = "implicit-deny";
/// The rule that denies packets from sources no rule covers (`uncovered: deny`).
pub const UNCOVERED_SOURCE: &str = "uncovered-source";

/// Why a pack could not be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("the pack has {0} rules; the datapath holds at most {max}", max = MAX_RULES - 2)]
    TooManyRules(usize),
    #[error("the pack needs {needed} {table} entries; the datapath holds at most {max}{why}")]
    TooComplex {
        table: &'static str,
        needed: usize,
        max: u32,
        /// What drives the count (`; most come from ...`), or empty.
        why: String,
    },
    #[error("the pack has {0} webgroups; the datapath holds at most {max}", max = MAX_WEBGROUPS)]
    TooManyWebGroups(usize),
    #[error(
        "the pack's {groups} webgroups need a free bit each, but {retiring} of the {max} bits still belong to removed webgroups whose learned addresses are being cleared; try again in a few seconds",
        max = MAX_WEBGROUPS
    )]
    WebGroupBitsRetiring { groups: usize, retiring: usize },
}

/// A rule as compiled: its datapath info and the names reports use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    pub name: String,
    pub priority: u32,
    pub info: RuleInfo,
}

/// The compiled pack: every table of one datapath slot.
#[derive(Debug, Clone, Default)]
pub struct CompiledPack {
    /// Rules in priority order, then `implicit-deny`, then (with
    /// `uncovered: deny`) `uncovered-source`.
    pub rules: Vec<CompiledRule>,
    /// Index of `implicit-deny`.
    pub implicit_rule: u32,
    /// Index of `uncovered-source` (`implicit_rule + 1`) with `uncovered:
    /// deny`; `DECISION_UNCOVERED` with `pass`.
    pub uncovered_rule: u32,
    /// Whether some rule's source is `any`.
    pub any_source: bool,
    /// The pack's default mode.
    pub mode: Mode,
    /// The mode for packets the datapath cannot judge: enforce when any
    /// deny that could apply enforces (a rule's, or `implicit-deny`).
    pub unjudgeable_mode: Mode,
    /// Source prefixes → source class (classes start at 1; 0 is "no prefix").
    pub src: HashMap<IpNet, u32>,
    /// Destination prefixes → destination class (0 is "no prefix").
    pub dst: HashMap<IpNet, u32>,
    /// Port-class array as runs: `(first index, last index, class)`.
    pub ports: Vec<(u32, u32, u32)>,
    /// (source class, port class) → x (or `NO_X`: `implicit-deny`), where
    /// it differs from the source class's default.
    pub sp: HashMap<SourcePortKey, u32>,
    /// Source class → its default x (the x of the port classes `sp` does
    /// not list), or `NO_X`.
    pub src_default: Vec<u32>,
    /// Port class → the x of the wild rules (of any source, naming no
    /// WebGroup) there, or `NO_X`: looked up beside the source's x, and
    /// the earlier of the two rules decides.
    pub wild: Vec<u32>,
    /// (x, destination class) → rule, where it differs from `defaults[x]`.
    pub xd: HashMap<ClassDestKey, u32>,
    /// x → the rules its packets may match (empty for an unused x): kept
    /// so that the next compile gives the same sets the same x, and an
    /// edit rewrites only the entries it changes.
    pub x_sets: std::sync::Arc<SignedSets>,
    /// Port class → the rules its slots may match: kept, as `x_sets` is,
    /// so that an edit's new port boundary renumbers only its own classes.
    pub port_sets: std::sync::Arc<SignedSets>,
    /// x → rule index, `implicit_rule` or `DECISION_UNCOVERED`.
    pub defaults: Vec<u32>,
    /// WebGroup name → its bit in learned-address entries.
    pub webgroup_bits: BTreeMap<String, u32>,
    /// Name table: exact names and wildcard suffixes → WebGroup bits.
    pub names: HashMap<NameKey, NameEntry>,
    /// Zone id of each wildcard pattern → the pattern (`**.example.com`),
    /// for the tunnel guard's reports.
    pub zones: BTreeMap<u32, String>,
    /// The name lengths `names` holds, by kind (lookups skip the others).
    pub name_lengths: egress_common::NameLengths,
    /// (x, WebGroup bit) → first rule of x with that WebGroup as destination,
    /// where it comes before `defaults[x]`.
    pub xw: HashMap<ClassWebGroupKey, u32>,
    /// The tables of a TCP flow's second decision, by address and name.
    pub named: super::NamesDecision,
    /// WebGroups used by `permit` rules.
    pub permit_groups: u64,
    /// Source class → the WebGroups of the `permit` rules covering it: what
    /// the query filter lets a workload of the class ask for.
    pub src_permit: HashMap<u32, u64>,
    /// `dns.query_types` as a 256-bit set (bit `t` of word `t / 64`).
    pub query_types: [u64; 4],
    /// `QUERY_FILTER_*`.
    pub query_filter: u8,
    /// `dns.tunnel_guard` (`TUNNEL_GUARD_*`).
    pub tunnel_guard: u8,
    /// Clamp of learned addresses' lifetimes, seconds.
    pub min_ttl: u32,
    pub max_ttl: u32,
    /// The approved resolvers.
    pub resolvers: Vec<IpAddr>,
}

/// What decided a packet, in the compiled pack's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Rule index (possibly `implicit_rule` or `uncovered_rule`).
    Rule(u32),
    /// No rule's source covers the packet, and `uncovered: pass`.
    Uncovered,
}

/// An error if a table needs more than `max` entries.
pub(super) fn check(table: &'static str, needed: usize, max: u32) -> Result<(), CompileError> {
    check_why(table, needed, max, String::new)
}

/// [`check`], with what drives the count (`why`, asked only on an error).
pub(super) fn check_why(
    table: &'static str,
    needed: usize,
    max: u32,
    why: impl FnOnce() -> String,
) -> Result<(), CompileError> {
    if needed > max as usize {
        return Err(CompileError::TooComplex { table, needed, max, why: why() });
    }
    Ok(())
}

/// What a compile keeps from the live pack so that the new one differs
/// from it only where the policy did: WebGroup bits (addresses learned
/// under the live pack keep their meaning) and combined-class numbers.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    /// Every WebGroup bit taken: the live pack's groups, and groups gone
    /// whose bit learned addresses may still carry.
    pub webgroup_bits: BTreeMap<String, u32>,
    pub x_sets: std::sync::Arc<SignedSets>,
    /// The live pack's port classes' rule sets, by number.
    pub port_sets: std::sync::Arc<SignedSets>,
    /// The live pack's port runs (`CompiledPack::ports`).
    pub port_runs: Vec<(u32, u32, u32)>,
}

impl CompiledPack {
    /// What the next compile keeps from this pack.
    pub fn previous(&self) -> Previous {
        Previous {
            webgroup_bits: self.webgroup_bits.clone(),
            x_sets: self.x_sets.clone(),
            port_sets: self.port_sets.clone(),
            port_runs: self.ports.clone(),
        }
    }
}

/// Longest-prefix match of `addr` in `table`.
fn lpm(table: &HashMap<IpNet, u32>, addr: IpAddr) -> Option<u32> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (0..=max).rev().find_map(|len| IpNet::new(addr, len).ok().and_then(|n| table.get(&n.trunc()).copied()))
}

/// The port-array slot of a packet, as the datapath computes it.
pub fn port_index(family_v4: bool, proto: u8, dport: u16) -> u32 {
    match proto {
        6 => u32::from(dport),
        17 => PORT_INDEX_UDP + u32::from(dport),
        1 if family_v4 => PORT_INDEX_ICMP,
        58 if !family_v4 => PORT_INDEX_ICMP,
        _ => PORT_INDEX_OTHER,
    }
}

impl CompiledPack {
    /// The port class at a port-array slot.
    pub fn port_class(&self, idx: u32) -> u32 {
        let i = self.ports.partition_point(|(_, hi, _)| *hi < idx);
        self.ports.get(i).map_or(0, |(_, _, c)| *c)
    }

    /// A decision as the reference evaluator states it: `implicit_rule`
    /// and `uncovered_rule` by name, any other rule by its index.
    pub fn outcome(&self, d: Decision) -> crate::evaluate::Outcome {
        use crate::evaluate::Outcome;
        match d {
            Decision::Uncovered => Outcome::Uncovered,
            Decision::Rule(r) if r == self.implicit_rule => Outcome::ImplicitDeny,
            Decision::Rule(r) if r == self.uncovered_rule => Outcome::UncoveredDeny,
            Decision::Rule(r) => Outcome::Rule(r as usize),
        }
    }

    /// Decides a packet exactly as the datapath's lookups do, for a
    /// destination the source learned for no WebGroup.
    pub fn decide(&self, src: IpAddr, dst: IpAddr, proto: u8, dport: u16) -> Decision {
        self.decide_learned(src, dst, proto, dport, 0)
    }

    /// Decides a packet whose destination the source learned for the
    /// WebGroups in `groups` (bits of `webgroup_bits`).
    pub fn decide_learned(&self, src: IpAddr, dst: IpAddr, proto: u8, dport: u16, groups: u64) -> Decision {
        let (x_class, mut rule) = match self.lookup_x(src, dst, proto, dport) {
            Lookup::Decided(d) => return d,
            Lookup::Class { x, address_rule } => (x, address_rule),
        };
        let mut remaining = groups;
        while remaining != 0 {
            let group = remaining.trailing_zeros();
            remaining &= remaining - 1;
            if let Some(&r) = self.xw.get(&ClassWebGroupKey { x_class, group }) {
                rule = rule.min(r);
            }
        }
        Decision::of(rule)
    }

    /// The lookups of both decisions up to the WebGroups: the combined
    /// class x and the first rule of x by address (the `(x, d)` entry, else
    /// `defaults[x]`), or the decision when the packet has no x.
    pub(super) fn lookup_x(&self, src: IpAddr, dst: IpAddr, proto: u8, dport: u16) -> Lookup {
        let src_class = match lpm(&self.src, src) {
            Some(class) => class,
            None if self.any_source => 0,
            None => return Lookup::Decided(Decision::of(self.uncovered_rule)),
        };
        let port_class = self.port_class(port_index(src.is_ipv4(), proto, dport));
        let x = match self.sp.get(&SourcePortKey { src_class, port_class }) {
            Some(&x) => x,
            None => self.src_default.get(src_class as usize).copied().unwrap_or(NO_X),
        };
        let dst_class = lpm(&self.dst, dst).unwrap_or(0);
        // The wild rules (any source, no WebGroup), by port and destination.
        let wild = self.wild.get(port_class as usize).copied().unwrap_or(NO_X);
        let wild_rule = self.address_rule(wild, dst_class);
        if x == NO_X {
            return Lookup::Decided(Decision::Rule(wild_rule));
        }
        Lookup::Class { x, address_rule: self.address_rule(x, dst_class).min(wild_rule) }
    }

    /// The first rule of `x` for destination class `dst_class`: the
    /// `(x, d)` entry, else `defaults[x]`; `implicit_rule` for [`NO_X`].
    fn address_rule(&self, x: u32, dst_class: u32) -> u32 {
        if x == NO_X {
            return self.implicit_rule;
        }
        match self.xd.get(&ClassDestKey { x_class: x, dst_class }) {
            Some(&r) => r,
            None => self.defaults.get(x as usize).copied().unwrap_or(self.implicit_rule),
        }
    }
}

/// Where the lookups up to the WebGroups got.
pub(super) enum Lookup {
    /// The packet is decided without a combined class.
    Decided(Decision),
    /// Its combined class and x's first rule by address.
    Class { x: u32, address_rule: u32 },
}

impl Decision {
    /// The decision of a rule index from the tables.
    pub(super) fn of(rule: u32) -> Decision {
        if rule == DECISION_UNCOVERED { Decision::Uncovered } else { Decision::Rule(rule) }
    }
}
