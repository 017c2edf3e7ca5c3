//! The tables of a TCP flow's second decision, by address and name
//! (contract section "Connection names"), built so that the datapath
//! decides it with as many lookups as the first: per WebGroup bit of the
//! flow (learned for the address, or covering the name) one `(x, WebGroup)`
//! entry, read in the column that says how the flow stands to the group.
//!
//! A rule of x with WebGroup destination w matches through w:
//! - learned for w and named in w: every such rule (`both`);
//! - learned only: `deny` rules and `permit` rules without `verify_names`
//!   (`learned_only`);
//! - named only: `deny` rules (`named_only`).
//!
//! The decision is then the first of x's address rule (`(x, d)` or
//! `defaults[x]`, as in the first decision) and those entries.
//!
//! The tables are built with every compile ([`NamesDecision::build`], in
//! [`super::compile_stable_with`]) and installed beside the first
//! decision's (`XW` holds all three columns, `NAME_DENY` x's first
//! name-only `deny`).
//!
//! Whether a flow needs its name at all: the second decision can differ
//! from the first (by address, every WebGroup learned counting as both)
//! only if a name-only `deny` comes before the first decision
//! (`first_name_deny[x]`), or if the first decision's rule matched only
//! through a WebGroup whose rule needs the name (the name-less second
//! decision differs from the first; a `verify_names` permit whose other
//! destination, a CIDR say, admits the address needs none). Both take
//! one more column of the entries the first decision reads anyway.

use std::net::IpAddr;

use egress_common::{ClassWebGroupKey, NAME_ANY_DEPTH, NAME_EXACT, NAME_ONE_LABEL, NameKey, NamedRules};

use super::names::rule_groups;
use super::pack::{CompiledPack, Decision, Lookup};
use crate::bitset::FastMap as HashMap;
use crate::model::{Action, Pack};

/// An entry or `first_name_deny` with no rule before x's default.
pub const NO_RULE: u32 = u32::MAX;

/// No rule in any column.
const NONE: NamedRules = NamedRules { both: NO_RULE, learned_only: NO_RULE, named_only: NO_RULE, _pad: 0 };

/// The second decision's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamesDecision {
    /// (x, WebGroup bit) → the three first rules, where one of them comes
    /// before `defaults[x]`.
    pub xw: HashMap<ClassWebGroupKey, NamedRules>,
    /// x → its first `deny` rule with a WebGroup destination, where it comes
    /// before `defaults[x]`, else [`NO_RULE`].
    pub first_name_deny: Vec<u32>,
}

impl NamesDecision {
    /// The tables of `compiled`, the compiled form of `pack`.
    pub fn build(pack: &Pack, compiled: &CompiledPack) -> NamesDecision {
        let groups_of: Vec<u64> =
            pack.rules.iter().map(|r| rule_groups(&r.destinations, &compiled.webgroup_bits)).collect();
        let (x_sets, defaults) = (&compiled.x_sets, &compiled.defaults);
        let mut xw: HashMap<ClassWebGroupKey, NamedRules> = HashMap::default();
        let mut first_name_deny = vec![NO_RULE; x_sets.len()];
        for (x, set) in x_sets.iter().enumerate() {
            for r in set.iter().filter(|r| groups_of[*r] != 0) {
                if r as u32 >= defaults[x] {
                    break;
                }
                let rule = &pack.rules[r];
                let deny = rule.action == Action::Deny;
                if deny && first_name_deny[x] == NO_RULE {
                    first_name_deny[x] = r as u32;
                }
                for bit in each_bit(groups_of[r]) {
                    let e = xw.entry(ClassWebGroupKey { x_class: x as u32, group: bit }).or_insert(NONE);
                    let first = |slot: &mut u32, admits: bool| {
                        if admits && *slot == NO_RULE {
                            *slot = r as u32;
                        }
                    };
                    first(&mut e.both, true);
                    first(&mut e.learned_only, deny || !rule.verify_names);
                    first(&mut e.named_only, deny);
                }
            }
        }
        NamesDecision { xw, first_name_deny }
    }

    /// Whether some TCP flow's second decision can differ from its first:
    /// a name-only `deny` before some class's default, or a `permit` rule
    /// that verifies names. Without one, the datapath never reads names.
    pub fn any(&self) -> bool {
        self.first_name_deny.iter().any(|r| *r != NO_RULE) || self.xw.values().any(|e| e.learned_only != e.both)
    }

    /// The second decision of a TCP flow of `compiled` exactly as the
    /// datapath's lookups make it: the destination learned for the
    /// WebGroups in `learned`, the connection's name covered by those in
    /// `named` (0: no name, or one no WebGroup covers; see
    /// [`CompiledPack::name_groups`]).
    #[allow(clippy::too_many_arguments, reason = "a packet's four fields and the flow's two group sets")]
    pub fn decide_named(
        &self,
        compiled: &CompiledPack,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        dport: u16,
        learned: u64,
        named: u64,
    ) -> Decision {
        match compiled.lookup_x(src, dst, proto, dport) {
            Lookup::Decided(d) => d,
            Lookup::Class { x, address_rule } => {
                let mut rule = address_rule;
                for group in each_bit(learned | named) {
                    if let Some(e) = self.xw.get(&ClassWebGroupKey { x_class: x, group }) {
                        rule = rule.min(e.rule(learned & 1 << group != 0, named & 1 << group != 0));
                    }
                }
                Decision::of(rule)
            }
        }
    }

    /// Whether a TCP flow's second decision could differ from its first
    /// (the destination learned for the WebGroups in `learned`) for some
    /// name, or for none: whether the datapath must read its name. Looked
    /// up as the datapath does: the first decision, the name-less second
    /// one and x's first name-only `deny`.
    pub fn needs_name(
        &self,
        compiled: &CompiledPack,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        dport: u16,
        learned: u64,
    ) -> bool {
        let Lookup::Class { x, address_rule } = compiled.lookup_x(src, dst, proto, dport) else {
            return false;
        };
        let (mut first, mut nameless) = (address_rule, address_rule);
        for group in each_bit(learned) {
            if let Some(e) = self.xw.get(&ClassWebGroupKey { x_class: x, group }) {
                first = first.min(e.both);
                nameless = nameless.min(e.learned_only);
            }
        }
        let name_deny = self.first_name_deny.get(x as usize).copied().unwrap_or(NO_RULE);
        nameless != first || name_deny < first
    }
}

/// The WebGroup bits of `bits` in turn.
fn each_bit(mut bits: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let bit = bits.trailing_zeros();
            bits &= bits - 1;
            bit
        })
    })
}

impl CompiledPack {
    /// The WebGroups (bits) whose patterns cover the connection name `name`
    /// (any case, a trailing dot ignored), looked up in the name table as
    /// the datapath does for DNS names: the name itself, its suffix after
    /// the first label for `*.`, every suffix for `**.`.
    pub fn name_groups(&self, name: &str) -> u64 {
        let lower = name.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let look = |kind: u8, text: &str| {
            NameKey::new(kind, text.as_bytes()).and_then(|k| self.names.get(&k).map(|e| e.groups)).unwrap_or(0)
        };
        if name.is_empty() {
            return 0;
        }
        let mut groups = look(NAME_EXACT, name);
        for (i, (dot, _)) in name.match_indices('.').enumerate() {
            let suffix = &name[dot + 1..];
            if i == 0 {
                groups |= look(NAME_ONE_LABEL, suffix);
            }
            groups |= look(NAME_ANY_DEPTH, suffix);
        }
        groups
    }
}
