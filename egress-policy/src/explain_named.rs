//! `egress-agent explain --name`: a TCP flow's second decision (contract
//! section "Connection names"), once its first client message has given
//! its name (TLS SNI or HTTP `Host`), walked rule by rule beside the first
//! decision, by address alone.
//!
//! The destination says, as for [`super::explain`], which WebGroups the
//! address was learned for: a name destination stands for an address the
//! workload learned by resolving that name (learned for the WebGroups
//! covering it), an address destination for one learned for none. The
//! connection name is a separate thing: `--dst api.openai.com --name
//! attacker.example` is a flow to an address of `api.openai.com` that
//! names another tenant of it.
//!
//! The walk follows the reference evaluator's
//! [`rule_matches_named`](super::evaluate::rule_matches_named);
//! [`check`] holds it against [`evaluate_named`] and the compiled
//! tables' [`NamesDecision::decide_named`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::compile::{NamesDecision, compile};
use super::domain::parse_pattern;
use super::evaluate::{Outcome, Probe, evaluate_learned, evaluate_named, name_covered};
use super::explain::{
    Explanation, Question, Target, decision, destination_mismatch, element, explain, header, proto_name, walk,
    walk_lines,
};
use super::model::{Action, Destination, DomainPattern, Mode, Pack, Rule};

/// Why a connection name cannot be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Only TCP flows have a name (and a second decision).
    #[error(
        "a connection name is read from TCP flows only (TLS SNI or HTTP Host): a {0} flow is judged by address alone"
    )]
    NotTcp(String),
    /// Not a domain name.
    #[error("`{name}` is not a connection name: {why}")]
    Malformed { name: String, why: String },
}

/// A connection name checked as a domain name and normalised (lowercase,
/// no trailing dot).
pub fn parse_name(text: &str) -> Result<String, NameError> {
    let malformed = |why: String| NameError::Malformed { name: text.to_owned(), why };
    match parse_pattern(text) {
        Ok(DomainPattern::Exact(name)) => Ok(name),
        Ok(_) => Err(malformed("a name has no wildcard label".to_owned())),
        Err(why) => Err(malformed(why)),
    }
}

/// Both decisions of a TCP flow with a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedExplanation {
    /// The connection name, normalised.
    pub name: String,
    /// The WebGroups that cover the name.
    pub name_webgroups: Vec<String>,
    /// The first decision, by address alone.
    pub by_address: Explanation,
    /// The second decision, by address and name: the one that stands.
    pub with_name: Explanation,
}

impl NamedExplanation {
    /// Whether the name changes the decision.
    pub fn changes(&self) -> bool {
        // Both walks are of one source: covered by a rule or not alike.
        let (a, b) = (&self.by_address, &self.with_name);
        (a.decided_by, a.covered) != (b.decided_by, b.covered)
    }
}

/// Walks `pack`'s rules for the TCP flow `q` named `name` (SNI or `Host`,
/// any case, a trailing dot ignored), by address and then by address and
/// name.
pub fn explain_named(pack: &Pack, q: &Question, name: &str) -> Result<NamedExplanation, NameError> {
    if q.proto != 6 {
        return Err(NameError::NotTcp(proto_name(q.proto)));
    }
    let name = parse_name(name)?;
    let name_webgroups: Vec<String> =
        pack.webgroups.values().filter(|g| name_covered(g, &name)).map(|g| g.name.clone()).collect();
    let by_address = explain(pack, q);
    let with_name = walk(pack, q, by_address.webgroups.clone(), |rule, learned| {
        destination_named(pack, rule, &q.dst, learned, &name, &name_webgroups)
    });
    Ok(NamedExplanation { name, name_webgroups, by_address, with_name })
}

/// Whether one of `rule`'s destinations admits the flow in the second
/// decision: a WebGroup of a `permit` rule with `verify_names` needs the
/// address learned for it and the name covered by it; one of a `deny` rule
/// either; everything else matches as by address.
fn destination_named(
    pack: &Pack,
    rule: &Rule,
    dst: &Target,
    learned: &[String],
    name: &str,
    named: &[String],
) -> Result<String, String> {
    let mut why_not = Vec::new();
    for d in &rule.destinations {
        let Destination::WebGroup(g) = d else {
            if let Some(why) = element(pack, d, dst, learned) {
                return Ok(why);
            }
            continue;
        };
        let learned_words = || match dst {
            Target::Name(n) => format!("{n} is in webgroup {g}"),
            Target::Addr(a) => format!("{a} was learned for webgroup {g}"),
        };
        match (rule.action, rule.verify_names, learned.contains(g), named.contains(g)) {
            (Action::Permit, true, true, true) => {
                return Ok(format!("{} and the name {name} is one it covers", learned_words()));
            }
            (Action::Permit, true, true, false) => {
                why_not.push(format!("the name {name} is not one webgroup {g} covers"));
            }
            (Action::Permit, false, true, _) => {
                return Ok(format!("{} (verify_names: false, the name is not checked)", learned_words()));
            }
            (Action::Deny, _, true, _) => return Ok(learned_words()),
            (Action::Deny, _, false, true) => {
                return Ok(format!(
                    "the name {name} is in webgroup {g} (a deny matches it by name, whatever the address)"
                ));
            }
            _ => {}
        }
    }
    let webgroup = rule.destinations.iter().any(|d| matches!(d, Destination::WebGroup(_)));
    Err(match rule.action {
        _ if !why_not.is_empty() => why_not.join("; "),
        Action::Deny if webgroup => format!("{}, nor is the name {name}", destination_mismatch(rule, dst)),
        _ => destination_mismatch(rule, dst),
    })
}

/// The walk's outcome as the reference evaluator gives it.
fn outcome(pack: &Pack, e: &Explanation) -> Outcome {
    match e.decided_by {
        Some(i) => Outcome::Rule(i),
        None if e.covered => Outcome::ImplicitDeny,
        None if pack.uncovered == crate::model::Uncovered::Deny => Outcome::UncoveredDeny,
        None => Outcome::Uncovered,
    }
}

/// The deciding rule's name (or `implicit-deny`, `uncovered`).
fn decider(pack: &Pack, e: &Explanation) -> String {
    match outcome(pack, e) {
        Outcome::Rule(i) => pack.rules[i].name.clone(),
        Outcome::ImplicitDeny => "implicit-deny".to_owned(),
        Outcome::UncoveredDeny => crate::compile::UNCOVERED_SOURCE.to_owned(),
        Outcome::Uncovered => "uncovered".to_owned(),
    }
}

/// Both decisions in words: the second walk rule by rule, then each
/// decision, then whether and why the name changes it.
pub fn render_named(pack: &Pack, q: &Question, e: &NamedExplanation) -> String {
    let mut out = String::new();
    let name = &e.name;
    header(&mut out, pack, q, &e.by_address, &format!(", connection name {name}"));
    if e.name_webgroups.is_empty() {
        let _ = writeln!(out, "  the name {name} is in no webgroup");
    } else {
        let _ = writeln!(out, "  the name {name} is in webgroup(s): {}", e.name_webgroups.join(", "));
    }
    let _ = writeln!(out, "  by address and name (the second decision, once the first client message is read):");
    walk_lines(&mut out, pack, &e.with_name);
    let _ = writeln!(out, "by address (first packet): {}", decision(pack, &e.by_address));
    let _ = writeln!(out, "decision: with name {name}: {}", decision(pack, &e.with_name));
    let (first, second) = (decider(pack, &e.by_address), decider(pack, &e.with_name));
    if !e.changes() {
        let _ = writeln!(out, "the name does not change the decision ({first})");
        return out;
    }
    let why = change_reason(e).map(|w| format!(" ({w})")).unwrap_or_default();
    let _ = writeln!(out, "the name changes the decision: by address: {first}; with name {name}: {second}{why}");
    let deny_mode = match e.with_name.decided_by.map(|i| &pack.rules[i]) {
        Some(r) => (r.action == Action::Deny).then_some(r.mode),
        None => e.with_name.covered.then_some(pack.mode),
    };
    let effect = match deny_mode {
        Some(Mode::Enforce) => {
            "the flow is dropped once its first client message is read, the workload's side reset at once"
        }
        Some(Mode::Monitor) => "monitor: the flow is reported as would_deny and continues",
        None => return out,
    };
    let _ = writeln!(out, "  {effect}");
    out
}

/// Why the second decision differs from the first: the rule that now
/// matches first says why it matches, or the rule that decided by address
/// says why it no longer does.
fn change_reason(e: &NamedExplanation) -> Option<String> {
    let (first, second) = (e.by_address.decided_by, e.with_name.decided_by);
    match (first, second) {
        (_, Some(s)) if first.is_none_or(|f| s < f) => {
            e.with_name.steps.get(s).and_then(|st| st.because.get(1).cloned())
        }
        (Some(f), _) => e.with_name.steps.get(f).and_then(|st| st.mismatch.clone()),
        (None, _) => None,
    }
}

/// How [`check`] came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The walk, the reference evaluator and the compiled tables agree.
    Agrees,
    /// Something could not be checked, and why.
    Skipped(String),
    /// They disagree (a bug), and how.
    Disagrees(String),
}

/// Holds both walks of `e` against the reference evaluator
/// ([`evaluate_learned`], [`evaluate_named`]) and the second against the
/// compiled tables ([`NamesDecision::decide_named`]). A name destination
/// stands for an address no address destination of the pack contains;
/// without one (a `0.0.0.0/0` destination, say) nothing is checked.
pub fn check(pack: &Pack, q: &Question, e: &NamedExplanation) -> Check {
    let dst = match &q.dst {
        Target::Addr(a) => *a,
        Target::Name(_) => match stand_in(pack, q.src.is_ipv4()) {
            Some(a) => a,
            None => return Check::Skipped("every address is some rule's destination: no stand-in address".into()),
        },
    };
    let probe = Probe { src: q.src, dst, proto: q.proto, dport: q.port };
    let learned: BTreeSet<String> = e.by_address.webgroups.iter().cloned().collect();
    let (first, second) = (outcome(pack, &e.by_address), outcome(pack, &e.with_name));
    let reference_first = evaluate_learned(pack, &probe, &learned);
    let reference = evaluate_named(pack, &probe, &learned, Some(&e.name));
    if (reference_first, reference) != (first, second) {
        return Check::Disagrees(format!(
            "the reference evaluator decides {reference_first:?} by address and {reference:?} with the name; the walk {first:?} and {second:?}"
        ));
    }
    let compiled = match compile(pack) {
        Ok(c) => c,
        Err(err) => return Check::Skipped(format!("the pack does not compile ({err}): the tables were not checked")),
    };
    let tables = NamesDecision::build(pack, &compiled);
    let bits = learned.iter().filter_map(|g| compiled.webgroup_bits.get(g)).fold(0u64, |a, b| a | 1 << b);
    let covering = compiled.name_groups(&e.name);
    let decided = tables.decide_named(&compiled, q.src, dst, 6, q.port, bits, covering);
    let decided = compiled.outcome(decided);
    if decided != reference {
        return Check::Disagrees(format!(
            "the compiled tables decide {decided:?} with the name, the reference {reference:?}"
        ));
    }
    Check::Agrees
}

/// An address of the family (IPv4 if `v4`) that no resolver, `SmartGroup`
/// or CIDR destination of `pack` contains: what a name destination's
/// address is to the walk.
fn stand_in(pack: &Pack, v4: bool) -> Option<IpAddr> {
    let candidates: &[&str] = if v4 {
        &["192.0.2.1", "198.51.100.1", "203.0.113.1", "240.0.0.1", "100.64.0.1", "169.254.0.1", "127.0.0.1"]
    } else {
        &["2001:db8::1", "3fff::1", "100::1", "fe80::1", "::1", "fd00::1"]
    };
    let claimed = |a: &IpAddr| {
        pack.dns.resolvers.contains(a)
            || pack.smartgroups.values().any(|g| g.cidrs.iter().any(|c| c.contains(a)))
            || pack.rules.iter().flat_map(|r| &r.destinations).any(|d| match d {
                Destination::Cidrs(c) => c.iter().any(|c| c.contains(a)),
                _ => false,
            })
    };
    candidates.iter().filter_map(|c| c.parse::<IpAddr>().ok()).find(|a| !claimed(a))
}

#[cfg(test)]
#[path = "explain_named_tests.rs"]
mod tests;
