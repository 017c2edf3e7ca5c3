//! The reference evaluator: the contract's semantics written straight from
//! `policy-format.md`, rule by rule in priority order. It is slow on purpose
//! (no classes, no tables) and serves as the oracle for the compiled pack.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::domain::pattern_matches;
use super::model::{Action, Destination, Pack, Protocol, Rule, Source, Uncovered, WebGroup};

/// What the reference evaluator decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The index (in `pack.rules`) of the first matching rule.
    Rule(usize),
    /// A covered source that no rule matched.
    ImplicitDeny,
    /// No rule's source covers the packet, and `uncovered: deny`: denied
    /// in the pack's mode as `uncovered-source`.
    UncoveredDeny,
    /// No rule's source covers the packet, and `uncovered: pass`.
    Uncovered,
}

/// A packet as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub proto: u8,
    /// Destination port (ignored for protocols without ports).
    pub dport: u16,
}

pub(crate) fn source_matches(pack: &Pack, rule: &Rule, src: IpAddr) -> bool {
    match &rule.source {
        Source::Any => true,
        Source::Groups(names) => {
            names.iter().filter_map(|n| pack.smartgroups.get(n)).any(|g| g.cidrs.iter().any(|c| c.contains(&src)))
        }
    }
}

/// Whether one of `rule`'s destinations admits `dst`; `webgroup` says
/// whether a WebGroup destination (by name) matches.
fn destination_matches(pack: &Pack, rule: &Rule, dst: IpAddr, webgroup: impl Fn(&str) -> bool) -> bool {
    rule.destinations.iter().any(|d| match d {
        Destination::Any => true,
        Destination::Resolvers => pack.dns.resolvers.contains(&dst),
        Destination::Gateway => pack.gateway.contains(&dst),
        Destination::SmartGroup(g) => pack.smartgroups.get(g).is_some_and(|g| g.cidrs.iter().any(|c| c.contains(&dst))),
        Destination::Cidrs(c) => c.iter().any(|c| c.contains(&dst)),
        Destination::WebGroup(g) => webgroup(g),
    })
}

/// Whether `rule`'s protocol is IP protocol `proto` (`icmp` is ICMPv6
/// for IPv6 sources).
pub(crate) fn protocol_matches(rule: &Rule, src: IpAddr, proto: u8) -> bool {
    let icmp = if src.is_ipv4() { 1 } else { 58 };
    match rule.protocol {
        Protocol::Any => true,
        Protocol::Tcp => proto == 6,
        Protocol::Udp => proto == 17,
        Protocol::Icmp => proto == icmp,
    }
}

/// Whether `rule`'s ports admit destination port `dport` of protocol `proto`.
pub(crate) fn ports_match(rule: &Rule, proto: u8, dport: u16) -> bool {
    match &rule.ports {
        None => true,
        Some(ranges) => (proto == 6 || proto == 17) && ranges.iter().any(|r| r.lo <= dport && dport <= r.hi),
    }
}

/// Whether `rule` matches the packet in every dimension; `learned` are the
/// WebGroups the source learned the destination for.
pub fn rule_matches(pack: &Pack, rule: &Rule, p: &Probe, learned: &BTreeSet<String>) -> bool {
    source_matches(pack, rule, p.src)
        // A WebGroup: the source resolved one of its names to this address.
        && destination_matches(pack, rule, p.dst, |g| learned.contains(g))
        && protocol_matches(rule, p.src, p.proto)
        && ports_match(rule, p.proto, p.dport)
}

/// First match over the pack's rules (sorted by priority), then the
/// implicit deny for covered sources.
pub fn evaluate(pack: &Pack, p: &Probe) -> Outcome {
    evaluate_learned(pack, p, &BTreeSet::new())
}

/// [`evaluate`] for a destination the source learned for the WebGroups
/// named in `learned`.
pub fn evaluate_learned(pack: &Pack, p: &Probe, learned: &BTreeSet<String>) -> Outcome {
    first_match(pack, p, |r| rule_matches(pack, r, p, learned))
}

/// The first rule that `matches` (in priority order), else the implicit
/// deny for covered sources.
fn first_match(pack: &Pack, p: &Probe, matches: impl Fn(&Rule) -> bool) -> Outcome {
    if let Some(i) = pack.rules.iter().position(matches) {
        return Outcome::Rule(i);
    }
    if pack.rules.iter().any(|r| source_matches(pack, r, p.src)) {
        Outcome::ImplicitDeny
    } else if pack.uncovered == Uncovered::Deny {
        Outcome::UncoveredDeny
    } else {
        Outcome::Uncovered
    }
}

/// Whether `group` covers the connection name `name` (any case, a trailing
/// dot ignored), with the matcher of DNS names.
pub fn name_covered(group: &WebGroup, name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    !name.is_empty() && group.domains.iter().any(|d| pattern_matches(d, name))
}

/// Whether `rule` matches the packet in the second decision (contract
/// section "Connection names"): `learned` are the WebGroups the source
/// learned the destination for, `name` the connection's name (SNI or
/// `Host`), if it has one. A WebGroup destination of a `permit` rule with
/// `verify_names` needs the address learned for the group and a name it
/// covers; one of a `deny` rule needs either; every other destination
/// matches as in the first decision.
pub fn rule_matches_named(pack: &Pack, rule: &Rule, p: &Probe, learned: &BTreeSet<String>, name: Option<&str>) -> bool {
    let webgroup = |g: &str| {
        let learned = learned.contains(g);
        let named = || name.is_some_and(|n| pack.webgroups.get(g).is_some_and(|w| name_covered(w, n)));
        match rule.action {
            Action::Permit if rule.verify_names => learned && named(),
            Action::Permit => learned,
            Action::Deny => learned || named(),
        }
    };
    source_matches(pack, rule, p.src)
        && destination_matches(pack, rule, p.dst, webgroup)
        && protocol_matches(rule, p.src, p.proto)
        && ports_match(rule, p.proto, p.dport)
}

/// The second decision of a TCP flow, by address and name: the first rule
/// that [`rule_matches_named`], then the implicit deny for covered sources.
/// (The first decision, by address alone, is [`evaluate_learned`].)
pub fn evaluate_named(pack: &Pack, p: &Probe, learned: &BTreeSet<String>, name: Option<&str>) -> Outcome {
    first_match(pack, p, |r| rule_matches_named(pack, r, p, learned, name))
}
