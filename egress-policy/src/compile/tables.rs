//! The classification side of a compile: rules, source and destination
//! prefix classes, port classes, combined classes `x` and the `(x, d)` and
//! `(x, WebGroup)` tables. Everything of a compile but the name table.

use std::collections::BTreeMap;
use std::sync::Arc;

use egress_common::{
    ACTION_DENY, ACTION_PERMIT, ClassDestKey, ClassWebGroupKey, DECISION_UNCOVERED, MAX_PREFIXES, MAX_RULES,
    MAX_XD_ENTRIES, MAX_XW_ENTRIES, MODE_ENFORCE, MODE_MONITOR, QUERY_FILTER_ENFORCE, QUERY_FILTER_MONITOR,
    QUERY_FILTER_OFF, RuleInfo, SourcePortKey,
};
use ipnet::IpNet;

use super::combined::{Describe, Dimensions, combined_classes};
use super::names::rule_groups;
use super::pack::{
    CompileError, CompiledPack, CompiledRule, IMPLICIT_DENY, Previous, UNCOVERED_SOURCE, check, check_why,
};
use crate::bitset::FastMap as HashMap;
use crate::bitset::{RuleSet, SignedSets};
use crate::classes::{address_classes, port_classes, stable_port_classes};
use crate::model::{Action, Destination, Mode, Pack, QueryFilter, Source, TunnelGuard, Uncovered};

/// Every table of [`CompiledPack`] but the name table (left empty, as are
/// the WebGroup bits: the caller fills both in).
pub(super) fn classify(
    pack: &Pack,
    previous: &Previous,
    webgroup_bits: &BTreeMap<String, u32>,
) -> Result<CompiledPack, CompileError> {
    let n = pack.rules.len();
    // The rules, `implicit-deny` and `uncovered-source`.
    if n + 2 > MAX_RULES as usize {
        return Err(CompileError::TooManyRules(n));
    }
    let implicit = n as u32;
    let wild = wild_rules(pack);
    let sources = source_classes(pack, &wild);
    let destinations = destination_classes(pack);
    for (table, len) in [("source prefix", sources.classes.len()), ("destination prefix", destinations.classes.len())] {
        check(table, len, MAX_PREFIXES)?;
    }
    let (ports, port_sets) = stable_port_classes(port_classes(pack, n), (&previous.port_runs, &previous.port_sets));
    let combined = combine(pack, &sources, &port_sets, &wild, previous)?;
    let x_sets = combined.x_sets;
    // The (source, port) hash map is built beside the x tables.
    let (sp, x_tables) = std::thread::scope(|scope| {
        let entries = combined.sp;
        let sp = scope.spawn(move || entries.into_iter().collect::<HashMap<SourcePortKey, u32>>());
        let x_tables = XTables::of(pack, &x_sets, &destinations, webgroup_bits);
        (sp.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), x_tables)
    });
    let XTables { defaults, xd, xw, groups_of } = x_tables?;
    let permit_groups =
        pack.rules.iter().zip(&groups_of).filter(|(r, _)| r.action == Action::Permit).fold(0, |a, (_, g)| a | g);
    let src_permit = source_permit_groups(pack, &sources, &groups_of);
    Ok(CompiledPack {
        rules: compiled_rules(pack),
        implicit_rule: implicit,
        uncovered_rule: match pack.uncovered {
            Uncovered::Deny => implicit + 1,
            Uncovered::Pass => DECISION_UNCOVERED,
        },
        any_source: sources.any_source,
        mode: pack.mode,
        unjudgeable_mode: unjudgeable_mode(pack),
        src: sources.classes,
        dst: destinations.classes,
        ports,
        sp,
        src_default: combined.src_default,
        wild: combined.wild,
        xd,
        x_sets: Arc::new(x_sets),
        port_sets: Arc::new(port_sets),
        defaults,
        webgroup_bits: BTreeMap::new(),
        names: HashMap::default(),
        zones: BTreeMap::new(),
        name_lengths: egress_common::NameLengths::default(),
        xw,
        named: super::NamesDecision::default(),
        permit_groups,
        src_permit,
        query_types: crate::dns_types::type_set(&pack.dns.query_types),
        query_filter: match pack.dns.query_filter {
            QueryFilter::Off => QUERY_FILTER_OFF,
            QueryFilter::Monitor => QUERY_FILTER_MONITOR,
            QueryFilter::Enforce => QUERY_FILTER_ENFORCE,
        },
        tunnel_guard: match pack.dns.tunnel_guard {
            TunnelGuard::Off => egress_common::TUNNEL_GUARD_OFF,
            TunnelGuard::Monitor => egress_common::TUNNEL_GUARD_MONITOR,
            TunnelGuard::Enforce => egress_common::TUNNEL_GUARD_ENFORCE,
        },
        min_ttl: pack.dns.min_ttl,
        max_ttl: pack.dns.max_ttl,
        resolvers: pack.dns.resolvers.clone(),
    })
}

/// The tables keyed by combined class x.
struct XTables {
    /// x → its default rule (its first `any`-destination rule, or
    /// `implicit-deny`).
    defaults: Vec<u32>,
    xd: HashMap<ClassDestKey, u32>,
    xw: HashMap<ClassWebGroupKey, u32>,
    /// Each rule's WebGroup bits.
    groups_of: Vec<u64>,
}

impl XTables {
    fn of(
        pack: &Pack,
        x_sets: &[RuleSet],
        destinations: &DestinationClasses,
        webgroup_bits: &BTreeMap<String, u32>,
    ) -> Result<XTables, CompileError> {
        let n = pack.rules.len();
        let defaults: Vec<u32> = x_sets
            .iter()
            .map(|set| set.intersection(&destinations.any).first().map_or(n as u32, |r| r as u32))
            .collect();
        let xd = xd_table(x_sets, destinations, &defaults, n, &|r| rule_text(pack, r))?;
        let groups_of: Vec<u64> = pack.rules.iter().map(|r| rule_groups(&r.destinations, webgroup_bits)).collect();
        let xw = xw_table(x_sets, &groups_of, &defaults);
        check("(combined, webgroup) class", xw.len(), MAX_XW_ENTRIES)?;
        Ok(XTables { defaults, xd, xw, groups_of })
    }
}

/// The combined classes (see [`combined_classes`]), with what an error
/// names: sources by their prefixes, rules by their names.
fn combine(
    pack: &Pack,
    sources: &SourceClasses,
    port_sets: &SignedSets,
    wild: &RuleSet,
    previous: &Previous,
) -> Result<super::combined::CombinedClasses, CompileError> {
    let source_text = |class: u32| -> String {
        let mut nets: Vec<String> =
            sources.classes.iter().filter(|(_, c)| **c == class).map(|(net, _)| net.to_string()).collect();
        nets.sort();
        if nets.is_empty() { "any".to_string() } else { nets.join(" ") }
    };
    let rule = |r: u32| rule_text(pack, r);
    let any_source = |r: u32| pack.rules.get(r as usize).is_some_and(|r| r.source == Source::Any);
    let describe = Describe { source: &source_text, rule: &rule, any_source: &any_source };
    let dims = Dimensions { source_sets: &sources.sets, any_source: sources.any_source, port_sets, wild };
    combined_classes(&dims, previous, pack.rules.len(), &describe)
}

/// A rule's name, by index.
fn rule_text(pack: &Pack, r: u32) -> String {
    pack.rules.get(r as usize).map_or_else(|| format!("#{r}"), |r| r.name.clone())
}

/// The pack's rules in priority order as the datapath sees them, then
/// `implicit-deny`, then (with `uncovered: deny`) `uncovered-source`.
fn compiled_rules(pack: &Pack) -> Vec<CompiledRule> {
    let implicit = pack.rules.len() as u32;
    let mut rules: Vec<CompiledRule> = pack
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| CompiledRule {
            name: r.name.clone(),
            priority: u32::from(r.priority),
            info: RuleInfo {
                action: if r.action == Action::Deny { ACTION_DENY } else { ACTION_PERMIT },
                mode: mode_code(r.mode),
                log: u8::from(r.log),
                _pad: 0,
                // The rule's index; the datapath gives each rule name its
                // own lasting counter when it installs the pack.
                counter: i as u32,
            },
        })
        .collect();
    rules.push(CompiledRule {
        name: IMPLICIT_DENY.to_string(),
        priority: u32::MAX,
        info: RuleInfo { action: ACTION_DENY, mode: mode_code(pack.mode), log: 1, _pad: 0, counter: implicit },
    });
    if pack.uncovered == Uncovered::Deny {
        rules.push(CompiledRule {
            name: UNCOVERED_SOURCE.to_string(),
            priority: u32::MAX,
            info: RuleInfo { action: ACTION_DENY, mode: mode_code(pack.mode), log: 1, _pad: 0, counter: implicit + 1 },
        });
    }
    rules
}

/// The mode for packets the datapath cannot judge: enforce when any deny
/// that could apply enforces (a rule's, or `implicit-deny`).
fn unjudgeable_mode(pack: &Pack) -> Mode {
    let enforcing_deny = pack.rules.iter().any(|r| r.action == Action::Deny && r.mode == Mode::Enforce);
    if pack.mode == Mode::Enforce || enforcing_deny { Mode::Enforce } else { Mode::Monitor }
}

/// The source dimension cut into classes.
struct SourceClasses {
    /// Source prefix → class (0 is "no prefix").
    classes: HashMap<IpNet, u32>,
    /// Class → the rules whose source matches there (the `any` rules included).
    sets: Vec<RuleSet>,
    /// Whether some rule's source is `any`.
    any_source: bool,
}

/// Source class → the WebGroups of the `permit` rules whose source covers
/// it (what the query filter lets a workload of that class ask for), where
/// there are any.
fn source_permit_groups(pack: &Pack, sources: &SourceClasses, groups_of: &[u64]) -> HashMap<u32, u64> {
    let permits: Vec<bool> = pack.rules.iter().map(|r| r.action == Action::Permit).collect();
    sources
        .sets
        .iter()
        .enumerate()
        .filter_map(|(class, set)| {
            let groups = set.iter().filter(|r| permits[*r]).fold(0, |a, r| a | groups_of[r]);
            (groups != 0).then_some((class as u32, groups))
        })
        .collect()
}

/// The rules of any source that name no WebGroup: classified by port and
/// destination alone, apart from the sources (in every source's sets they
/// would multiply each source's entries by their ports).
fn wild_rules(pack: &Pack) -> RuleSet {
    let mut wild = RuleSet::new(pack.rules.len());
    for (i, r) in pack.rules.iter().enumerate() {
        if r.source == Source::Any && !r.destinations.iter().any(|d| matches!(d, Destination::WebGroup(_))) {
            wild.insert(i);
        }
    }
    wild
}

/// The source dimension, the `wild` rules left out of its sets (but not of
/// `any_source`: they cover every source).
fn source_classes(pack: &Pack, wild: &RuleSet) -> SourceClasses {
    let n = pack.rules.len();
    let mut any_src = RuleSet::new(n);
    let mut own_src: HashMap<IpNet, Vec<u32>> = HashMap::default();
    let mut any_source = false;
    for (i, r) in pack.rules.iter().enumerate() {
        match source_prefixes(pack, &r.source) {
            None => {
                any_source = true;
                if !wild.contains(i) {
                    any_src.insert(i);
                }
            }
            Some(nets) => {
                for p in nets {
                    own_src.entry(p).or_default().push(i as u32);
                }
            }
        }
    }
    let (classes, src_own) = address_classes(&own_src);
    let sets = src_own
        .iter()
        .map(|own| {
            let mut set = any_src.clone();
            for &r in own {
                set.insert(r as usize);
            }
            set
        })
        .collect();
    SourceClasses { classes, sets, any_source }
}

/// The destination dimension cut into classes.
struct DestinationClasses {
    /// Destination prefix → class (0 is "no prefix").
    classes: HashMap<IpNet, u32>,
    /// Class → the rules that name a prefix of it (ascending; `any` rules not included).
    sets: Vec<Vec<u32>>,
    /// The rules whose destination is `any`.
    any: RuleSet,
}

fn destination_classes(pack: &Pack) -> DestinationClasses {
    let mut any = RuleSet::new(pack.rules.len());
    let mut own_dst: HashMap<IpNet, Vec<u32>> = HashMap::default();
    for (i, r) in pack.rules.iter().enumerate() {
        let (nets, is_any) = destination_prefixes(pack, &r.destinations);
        if is_any {
            any.insert(i);
        }
        for p in nets {
            own_dst.entry(p).or_default().push(i as u32);
        }
    }
    let (classes, sets) = address_classes(&own_dst);
    DestinationClasses { classes, sets, any }
}

/// `(x, destination class)` → rule, where a destination-specific rule
/// comes before x's default (its first `any`-destination rule).
fn xd_table(
    x_sets: &[RuleSet],
    destinations: &DestinationClasses,
    defaults: &[u32],
    n: usize,
    rule_text: &dyn Fn(u32) -> String,
) -> Result<HashMap<ClassDestKey, u32>, CompileError> {
    let any_dst = &destinations.any;
    let mut xs_of_rule: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (x, set) in x_sets.iter().enumerate() {
        for r in set.difference(any_dst).iter() {
            xs_of_rule[r].push(x as u32);
        }
    }
    let mut xd = HashMap::with_capacity_and_hasher(n * 8, std::hash::BuildHasherDefault::default());
    // Per x, the last destination class it was entered for.
    let mut stamp = vec![u32::MAX; x_sets.len()];
    // Entries per rule, for an error to name the rules that drive them.
    let mut per_rule = vec![0usize; n];
    for (d, dset) in destinations.sets.iter().enumerate().skip(1) {
        for r in dset.iter().map(|&r| r as usize).filter(|&r| !any_dst.contains(r)) {
            for &x in &xs_of_rule[r] {
                if stamp[x as usize] == d as u32 {
                    continue;
                }
                stamp[x as usize] = d as u32;
                if (r as u32) < defaults[x as usize] {
                    xd.insert(ClassDestKey { x_class: x, dst_class: d as u32 }, r as u32);
                    per_rule[r] += 1;
                }
            }
        }
        check_why("(combined, destination) class", xd.len(), MAX_XD_ENTRIES, || {
            let mut top: Vec<(usize, usize)> = per_rule.iter().enumerate().map(|(r, &c)| (c, r)).collect();
            top.sort_unstable_by(|a, b| b.cmp(a));
            let named: Vec<String> =
                top.iter().take(3).map(|&(c, r)| format!("{} ({c} entries)", rule_text(r as u32))).collect();
            format!(
                "; most come from the rules {} (a rule's destination prefixes, and every prefix they contain, in each combined class that holds the rule)",
                named.join(", ")
            )
        })?;
    }
    Ok(xd)
}

/// `(x, WebGroup bit)` → the first rule of x naming the WebGroup, where it
/// comes before x's default. `groups_of`: each rule's WebGroup bits.
fn xw_table(x_sets: &[RuleSet], groups_of: &[u64], defaults: &[u32]) -> HashMap<ClassWebGroupKey, u32> {
    let mut xw = HashMap::default();
    for (x, set) in x_sets.iter().enumerate() {
        for r in set.iter().filter(|r| groups_of[*r] != 0) {
            if r as u32 >= defaults[x] {
                break;
            }
            let mut g = groups_of[r];
            while g != 0 {
                let bit = g.trailing_zeros();
                g &= g - 1;
                xw.entry(ClassWebGroupKey { x_class: x as u32, group: bit }).or_insert(r as u32);
            }
        }
    }
    xw
}

fn mode_code(mode: Mode) -> u8 {
    match mode {
        Mode::Monitor => MODE_MONITOR,
        Mode::Enforce => MODE_ENFORCE,
    }
}

/// The destination prefixes of a rule, and whether it matches any destination.
/// WebGroups contribute no prefix: they match through learned addresses
/// (the `xw` table), never as "any".
fn destination_prefixes(pack: &Pack, dests: &[Destination]) -> (Vec<IpNet>, bool) {
    let mut nets = Vec::new();
    let mut any = false;
    for d in dests {
        match d {
            Destination::Any => any = true,
            Destination::Resolvers => nets.extend(pack.dns.resolvers.iter().map(|a| IpNet::from(*a))),
            Destination::Gateway => nets.extend(pack.gateway.iter().map(|a| IpNet::from(*a))),
            Destination::SmartGroup(g) => {
                if let Some(g) = pack.smartgroups.get(g) {
                    nets.extend(g.cidrs.iter().copied());
                }
            }
            Destination::Cidrs(c) => nets.extend(c.iter().copied()),
            Destination::WebGroup(_) => {}
        }
    }
    (nets.into_iter().map(|n| n.trunc()).collect(), any)
}

fn source_prefixes(pack: &Pack, source: &Source) -> Option<Vec<IpNet>> {
    match source {
        Source::Any => None,
        Source::Groups(names) => Some(
            names
                .iter()
                .filter_map(|n| pack.smartgroups.get(n))
                .flat_map(|g| g.cidrs.iter().map(ipnet::IpNet::trunc))
                .collect(),
        ),
    }
}
