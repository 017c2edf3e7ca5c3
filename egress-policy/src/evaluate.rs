//! The reference evaluator: the contract's semantics written straight from
//! `policy-format.md`, rule by rule in priority order. It is slow on purpose
//! (no classes, no tables) and serves as the oracle for the compiled pack.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::model::{Destination, Pack, Protocol, Rule, Source};

/// What the reference evaluator decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The index (in `pack.rules`) of the first matching rule.
    Rule(usize),
    /// A covered source that no rule matched.
    ImplicitDeny,
    /// No rule's source covers the packet.
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

fn source_matches(pack: &Pack, rule: &Rule, src: IpAddr) -> bool {
    match &rule.source {
        Source::Any => true,
        Source::Groups(names) => {
            names.iter().filter_map(|n| pack.smartgroups.get(n)).any(|g| g.cidrs.iter().any(|c| c.contains(&src)))
        }
    }
}

fn destination_matches(pack: &Pack, rule: &Rule, dst: IpAddr, learned: &BTreeSet<String>) -> bool {
    rule.destinations.iter().any(|d| match d {
        Destination::Any => true,
        Destination::Resolvers => pack.dns.resolvers.contains(&dst),
        Destination::SmartGroup(g) => pack.smartgroups.get(g).is_some_and(|g| g.cidrs.iter().any(|c| c.contains(&dst))),
        Destination::Cidrs(c) => c.iter().any(|c| c.contains(&dst)),
        // The source resolved a name of the WebGroup to this address.
        Destination::WebGroup(g) => learned.contains(g),
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
        && destination_matches(pack, rule, p.dst, learned)
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
    if let Some(i) = pack.rules.iter().position(|r| rule_matches(pack, r, p, learned)) {
        return Outcome::Rule(i);
    }
    if pack.rules.iter().any(|r| source_matches(pack, r, p.src)) { Outcome::ImplicitDeny } else { Outcome::Uncovered }
}
