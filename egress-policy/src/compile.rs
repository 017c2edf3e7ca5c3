//! Compiles a validated pack into the datapath's tables (see
//! `egress_common::pack` for the lookup scheme).
//!
//! Each dimension is cut into equivalence classes, each class the set of
//! rules that match there: source prefixes (longest prefix wins, so a
//! prefix's set includes its ancestors'), destination prefixes, and
//! protocol/port intervals. Source × port classes are merged into combined
//! classes `x`; `(x, destination class)` entries are stored only where a
//! destination-specific rule comes before `x`'s first `any`-destination rule.
//! The cost of a lookup does not depend on the number of rules.

use std::collections::BTreeMap;

use super::bitset::FastMap as HashMap;
use std::net::IpAddr;

use egress_common::{
    ACTION_DENY, ACTION_PERMIT, DECISION_UNCOVERED, MAX_NAMES, MAX_PREFIXES, MAX_RULES, MAX_SP_ENTRIES, MAX_WEBGROUPS,
    MAX_X_CLASSES, MAX_XD_ENTRIES, MODE_ENFORCE, MODE_MONITOR, NAME_ANY_DEPTH, NAME_EXACT, NAME_ONE_LABEL, NameKey,
    PORT_INDEX_ICMP, PORT_INDEX_OTHER, PORT_INDEX_UDP, QUERY_FILTER_ENFORCE, QUERY_FILTER_MONITOR, QUERY_FILTER_OFF,
    RuleInfo, SpKey, XdKey, XwKey,
};
use ipnet::IpNet;

use super::bitset::RuleSet;
use super::classes::{Numbering, address_classes, port_classes, stable_x_ids};
use super::model::{Action, Destination, DomainPattern, Mode, Pack, QueryFilter, Source};

/// The name under which the implicit default deny is reported.
pub const IMPLICIT_DENY: &str = "implicit-deny";

/// Why a pack could not be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompileError {
    #[error("the pack has {0} rules; the datapath holds at most {max}", max = MAX_RULES - 1)]
    TooManyRules(usize),
    #[error("the pack needs {needed} {table} entries; the datapath holds at most {max}")]
    TooComplex { table: &'static str, needed: usize, max: u32 },
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
    /// Rules in priority order; the last one is `implicit-deny`.
    pub rules: Vec<CompiledRule>,
    /// Index of `implicit-deny`.
    pub implicit_rule: u32,
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
    /// (source class, port class) → x.
    pub sp: HashMap<SpKey, u32>,
    /// (x, destination class) → rule, where it differs from `defaults[x]`.
    pub xd: HashMap<XdKey, u32>,
    /// x → the rules its packets may match (empty for an unused x): kept
    /// so that the next compile gives the same sets the same x, and an
    /// edit rewrites only the entries it changes.
    pub x_sets: std::sync::Arc<Vec<RuleSet>>,
    /// x → rule index, `implicit_rule` or `DECISION_UNCOVERED`.
    pub defaults: Vec<u32>,
    /// WebGroup name → its bit in learned-address entries.
    pub webgroup_bits: BTreeMap<String, u32>,
    /// Name table: exact names and wildcard suffixes → WebGroup bits.
    pub names: HashMap<NameKey, u64>,
    /// (x, WebGroup bit) → first rule of x with that WebGroup as destination,
    /// where it comes before `defaults[x]`.
    pub xw: HashMap<XwKey, u32>,
    /// WebGroups used by `permit` rules (what the query filter lets through).
    pub permit_groups: u64,
    /// `QUERY_FILTER_*`.
    pub query_filter: u8,
    /// Clamp of learned addresses' lifetimes, seconds.
    pub min_ttl: u32,
    pub max_ttl: u32,
    /// The approved resolvers.
    pub resolvers: Vec<IpAddr>,
}

/// What decided a packet, in the compiled pack's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Rule index (possibly `implicit_rule`).
    Rule(u32),
    /// No rule's source covers the packet.
    Uncovered,
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
                .flat_map(|g| g.cidrs.iter().map(|c| c.trunc()))
                .collect(),
        ),
    }
}

fn check(table: &'static str, needed: usize, max: u32) -> Result<(), CompileError> {
    if needed > max as usize {
        return Err(CompileError::TooComplex { table, needed, max });
    }
    Ok(())
}

/// Compiles a validated pack, numbering its WebGroups afresh.
pub fn compile(pack: &Pack) -> Result<CompiledPack, CompileError> {
    compile_stable(pack, &Previous::default())
}

/// What a compile keeps from the live pack so that the new one differs
/// from it only where the policy did: WebGroup bits (addresses learned
/// under the live pack keep their meaning) and combined-class numbers.
#[derive(Debug, Clone, Default)]
pub struct Previous {
    /// Every WebGroup bit taken: the live pack's groups, and groups gone
    /// whose bit learned addresses may still carry.
    pub webgroup_bits: BTreeMap<String, u32>,
    pub x_sets: std::sync::Arc<Vec<RuleSet>>,
}

impl CompiledPack {
    /// What the next compile keeps from this pack.
    pub fn previous(&self) -> Previous {
        Previous { webgroup_bits: self.webgroup_bits.clone(), x_sets: self.x_sets.clone() }
    }
}

/// Gives each WebGroup a bit, keeping the bit it had in `previous` (so that
/// addresses learned under an earlier pack keep their meaning). A bit in
/// `previous` whose group is gone is not handed to another group: learned
/// addresses may still carry it (the datapath frees it once it has cleared
/// it from the learned table, and only then leaves it out of `previous`).
fn assign_bits(pack: &Pack, previous: &BTreeMap<String, u32>) -> Result<BTreeMap<String, u32>, CompileError> {
    if pack.webgroups.len() > MAX_WEBGROUPS as usize {
        return Err(CompileError::TooManyWebGroups(pack.webgroups.len()));
    }
    let mut bits: BTreeMap<String, u32> =
        previous.iter().filter(|(n, _)| pack.webgroups.contains_key(*n)).map(|(n, b)| (n.clone(), *b)).collect();
    let taken: Vec<u32> = previous.values().copied().collect();
    let mut free = (0..MAX_WEBGROUPS).filter(|b| !taken.contains(b));
    for name in pack.webgroups.keys() {
        if !bits.contains_key(name) {
            let retiring = previous.keys().filter(|n| !pack.webgroups.contains_key(*n)).count();
            let bit =
                free.next().ok_or(CompileError::WebGroupBitsRetiring { groups: pack.webgroups.len(), retiring })?;
            bits.insert(name.clone(), bit);
        }
    }
    Ok(bits)
}

/// The name table: every domain pattern as the datapath looks it up.
fn name_table(pack: &Pack, bits: &BTreeMap<String, u32>) -> Result<HashMap<NameKey, u64>, CompileError> {
    let mut names: HashMap<NameKey, u64> = HashMap::default();
    for (name, group) in &pack.webgroups {
        let bit = 1u64 << bits[name];
        for d in &group.domains {
            let (kind, text) = match d {
                DomainPattern::Exact(t) => (NAME_EXACT, t),
                DomainPattern::OneLabel(t) => (NAME_ONE_LABEL, t),
                DomainPattern::AnyDepth(t) => (NAME_ANY_DEPTH, t),
            };
            // Validation bounds names to 253 bytes, so every pattern fits.
            if let Some(key) = NameKey::new(kind, text.as_bytes()) {
                *names.entry(key).or_insert(0) |= bit;
            }
        }
    }
    check("domain name", names.len(), MAX_NAMES)?;
    Ok(names)
}

/// The WebGroup bits a rule's destination names.
fn rule_groups(dests: &[Destination], bits: &BTreeMap<String, u32>) -> u64 {
    dests
        .iter()
        .filter_map(|d| match d {
            Destination::WebGroup(g) => bits.get(g).map(|b| 1u64 << b),
            _ => None,
        })
        .fold(0, |a, b| a | b)
}

/// Compiles a validated pack, keeping what it can of `previous` (the live
/// pack's [`CompiledPack::previous`]).
pub fn compile_stable(pack: &Pack, previous: &Previous) -> Result<CompiledPack, CompileError> {
    let webgroup_bits = assign_bits(pack, &previous.webgroup_bits)?;
    let domains: usize = pack.webgroups.values().map(|g| g.domains.len()).sum();
    let (names, compiled) = if domains < 1_000 {
        (name_table(pack, &webgroup_bits), classify(pack, previous, &webgroup_bits))
    } else {
        // The name table needs nothing else: a large one is built alongside.
        std::thread::scope(|s| {
            let names = s.spawn(|| name_table(pack, &webgroup_bits));
            let compiled = classify(pack, previous, &webgroup_bits);
            (names.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), compiled)
        })
    };
    let mut compiled = compiled?;
    compiled.names = names?;
    compiled.webgroup_bits = webgroup_bits;
    Ok(compiled)
}

/// Everything of [`compile_stable`] but the name table.
fn classify(
    pack: &Pack,
    previous: &Previous,
    webgroup_bits: &BTreeMap<String, u32>,
) -> Result<CompiledPack, CompileError> {
    let n = pack.rules.len();
    if n + 1 > MAX_RULES as usize {
        return Err(CompileError::TooManyRules(n));
    }
    let implicit = n as u32;
    let mut rules: Vec<CompiledRule> = pack
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| CompiledRule {
            name: r.name.clone(),
            priority: r.priority as u32,
            info: RuleInfo {
                action: if r.action == Action::Deny { ACTION_DENY } else { ACTION_PERMIT },
                mode: mode_code(r.mode),
                log: r.log as u8,
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

    // Sources.
    let mut any_src = RuleSet::new(n);
    let mut own_src: HashMap<IpNet, Vec<u32>> = HashMap::default();
    for (i, r) in pack.rules.iter().enumerate() {
        match source_prefixes(pack, &r.source) {
            None => any_src.insert(i),
            Some(nets) => {
                for p in nets {
                    own_src.entry(p).or_default().push(i as u32);
                }
            }
        }
    }
    let any_source = !any_src.is_empty();
    let (src, src_own) = address_classes(own_src);
    let src_sets: Vec<RuleSet> = src_own
        .iter()
        .map(|own| {
            let mut set = any_src.clone();
            for &r in own {
                set.insert(r as usize);
            }
            set
        })
        .collect();

    // Destinations.
    let mut any_dst = RuleSet::new(n);
    let mut own_dst: HashMap<IpNet, Vec<u32>> = HashMap::default();
    for (i, r) in pack.rules.iter().enumerate() {
        let (nets, any) = destination_prefixes(pack, &r.destinations);
        if any {
            any_dst.insert(i);
        }
        for p in nets {
            own_dst.entry(p).or_default().push(i as u32);
        }
    }
    let (dst, dst_sets) = address_classes(own_dst);
    for (table, len) in [("source prefix", src.len()), ("destination prefix", dst.len())] {
        check(table, len, MAX_PREFIXES)?;
    }

    // Ports, then source × port → x.
    let (ports, port_sets) = port_classes(pack, n);
    let mut x_sets: Numbering<RuleSet> = Numbering::default();
    let mut sp = HashMap::default();
    for (s, sset) in src_sets.iter().enumerate() {
        if s == 0 && !any_source {
            continue; // the datapath answers `uncovered` before looking here
        }
        for (p, pset) in port_sets.iter().enumerate() {
            let set = sset.intersection(pset);
            if set.is_empty() {
                continue; // a missing entry reads as `implicit-deny`
            }
            let x = x_sets.number(set);
            sp.insert(SpKey { src_class: s as u32, port_class: p as u32 }, x);
        }
    }
    check("(source, port) class", sp.len(), MAX_SP_ENTRIES)?;
    let (ids, x_sets) = stable_x_ids(x_sets.sets, &previous.x_sets, n);
    for x in sp.values_mut() {
        *x = ids[*x as usize];
    }
    check("combined class", x_sets.len(), MAX_X_CLASSES)?;
    let defaults: Vec<u32> =
        x_sets.iter().map(|set| set.intersection(&any_dst).first().map_or(implicit, |r| r as u32)).collect();

    // (x, destination class) where a destination-specific rule comes first.
    let mut xs_of_rule: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (x, set) in x_sets.iter().enumerate() {
        for r in set.difference(&any_dst).iter() {
            xs_of_rule[r].push(x as u32);
        }
    }
    let mut xd = HashMap::with_capacity_and_hasher(n * 8, Default::default());
    let mut stamp = vec![u32::MAX; x_sets.len()];
    for (d, dset) in dst_sets.iter().enumerate().skip(1) {
        for r in dset.iter().map(|&r| r as usize).filter(|&r| !any_dst.contains(r)) {
            for &x in &xs_of_rule[r] {
                if stamp[x as usize] == d as u32 {
                    continue;
                }
                stamp[x as usize] = d as u32;
                if (r as u32) < defaults[x as usize] {
                    xd.insert(XdKey { x_class: x, dst_class: d as u32 }, r as u32);
                }
            }
        }
        check("(combined, destination) class", xd.len(), MAX_XD_ENTRIES)?;
    }

    // (x, WebGroup): the first rule of x naming the WebGroup, if it comes
    // before x's default.
    let groups_of: Vec<u64> = pack.rules.iter().map(|r| rule_groups(&r.destinations, webgroup_bits)).collect();
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
                xw.entry(XwKey { x_class: x as u32, group: bit }).or_insert(r as u32);
            }
        }
    }
    let permit_groups =
        pack.rules.iter().zip(&groups_of).filter(|(r, _)| r.action == Action::Permit).fold(0, |a, (_, g)| a | g);
    Ok(CompiledPack {
        rules,
        implicit_rule: implicit,
        any_source,
        mode: pack.mode,
        unjudgeable_mode: if pack.mode == Mode::Enforce
            || pack.rules.iter().any(|r| r.action == Action::Deny && r.mode == Mode::Enforce)
        {
            Mode::Enforce
        } else {
            Mode::Monitor
        },
        src,
        dst,
        ports,
        sp,
        xd,
        x_sets: std::sync::Arc::new(x_sets),
        defaults,
        webgroup_bits: BTreeMap::new(),
        names: HashMap::default(),
        xw,
        permit_groups,
        query_filter: match pack.dns.query_filter {
            QueryFilter::Off => QUERY_FILTER_OFF,
            QueryFilter::Monitor => QUERY_FILTER_MONITOR,
            QueryFilter::Enforce => QUERY_FILTER_ENFORCE,
        },
        min_ttl: pack.dns.min_ttl,
        max_ttl: pack.dns.max_ttl,
        resolvers: pack.dns.resolvers.clone(),
    })
}

/// Longest-prefix match of `addr` in `table`.
fn lpm(table: &HashMap<IpNet, u32>, addr: IpAddr) -> Option<u32> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (0..=max).rev().find_map(|len| IpNet::new(addr, len).ok().and_then(|n| table.get(&n.trunc()).copied()))
}

/// The port-array slot of a packet, as the datapath computes it.
pub fn port_index(family_v4: bool, proto: u8, dport: u16) -> u32 {
    match proto {
        6 => dport as u32,
        17 => PORT_INDEX_UDP + dport as u32,
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

    /// Decides a packet exactly as the datapath's lookups do, for a
    /// destination the source learned for no WebGroup.
    pub fn decide(&self, src: IpAddr, dst: IpAddr, proto: u8, dport: u16) -> Decision {
        self.decide_learned(src, dst, proto, dport, 0)
    }

    /// Decides a packet whose destination the source learned for the
    /// WebGroups in `groups` (bits of `webgroup_bits`).
    pub fn decide_learned(&self, src: IpAddr, dst: IpAddr, proto: u8, dport: u16, groups: u64) -> Decision {
        let s = match lpm(&self.src, src) {
            Some(s) => s,
            None if self.any_source => 0,
            None => return Decision::Uncovered,
        };
        let p = self.port_class(port_index(src.is_ipv4(), proto, dport));
        let Some(&x) = self.sp.get(&SpKey { src_class: s, port_class: p }) else {
            return Decision::Rule(self.implicit_rule);
        };
        let d = lpm(&self.dst, dst).unwrap_or(0);
        let mut rule = match self.xd.get(&XdKey { x_class: x, dst_class: d }) {
            Some(&r) => r,
            None => self.defaults.get(x as usize).copied().unwrap_or(self.implicit_rule),
        };
        let mut g = groups;
        while g != 0 {
            let bit = g.trailing_zeros();
            g &= g - 1;
            if let Some(&r) = self.xw.get(&XwKey { x_class: x, group: bit }) {
                rule = rule.min(r);
            }
        }
        if rule == DECISION_UNCOVERED { Decision::Uncovered } else { Decision::Rule(rule) }
    }
}
