//! `egress-agent explain`: which rule decides a packet and why, walking the
//! rules in priority order with the reference semantics of
//! [`super::evaluate`]. A destination may be a name: the rules then see it
//! as an address the workload learned by resolving that name through an
//! approved resolver, so WebGroup destinations covering the name match,
//! `any` matches, and address destinations cannot be judged.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::domain::pattern_matches;
use super::evaluate::{ports_match, protocol_matches};
use super::model::{Action, Destination, Mode, Pack, QueryFilter, Rule, Source, Uncovered};

/// What the packet goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(IpAddr),
    /// A domain name, normalised (lowercase, no trailing dot).
    Name(String),
}

/// The packet to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub src: IpAddr,
    pub dst: Target,
    /// IP protocol number (6, 17, 1 or 58).
    pub proto: u8,
    pub port: u16,
}

impl Question {
    /// The packet to explain from `explain`'s command-line words: a source
    /// address, a destination address or name, a protocol (`tcp`, `udp`,
    /// `icmp`, `icmpv6` or a number) and a port (needed for TCP and UDP).
    pub fn from_words(src: IpAddr, dst: &str, proto: &str, port: Option<u16>) -> Result<Question, String> {
        let proto = match (proto.to_ascii_lowercase().as_str(), src.is_ipv4()) {
            ("tcp", _) => 6,
            ("udp", _) => 17,
            ("icmp", true) | ("icmpv6", false) => 1 + 57 * u8::from(!src.is_ipv4()),
            ("icmp" | "icmpv6", _) => return Err("use icmp for IPv4 sources and icmpv6 for IPv6 ones".into()),
            (other, _) => other
                .parse::<u8>()
                .map_err(|_| format!("unknown protocol `{other}`: expected tcp, udp, icmp, icmpv6 or a number"))?,
        };
        let port = match (port, proto) {
            (Some(p), _) => p,
            (None, 6 | 17) => return Err("--port is needed for tcp and udp".into()),
            (None, _) => 0,
        };
        let dst = match dst.parse::<IpAddr>() {
            Ok(a) if a.is_ipv4() != src.is_ipv4() => {
                return Err("--src and --dst must be of the same address family".into());
            }
            Ok(a) => Target::Addr(a),
            Err(_) => match super::domain::parse_pattern(dst) {
                Ok(super::model::DomainPattern::Exact(name)) => Target::Name(name),
                Ok(_) => return Err("--dst is a name to explain, not a wildcard pattern".into()),
                Err(e) => return Err(format!("--dst `{dst}` is neither an address nor a domain name: {e}")),
            },
        };
        Ok(Question { src, dst, proto, port })
    }
}

/// How one rule compared with the packet: `None` where it matched, or the
/// first dimension that did not, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub rule: usize,
    pub mismatch: Option<String>,
    /// Why the matching dimensions matched (source group, destination).
    pub because: Vec<String>,
}

/// The walk and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub steps: Vec<Step>,
    /// The deciding rule's index, if a rule decides.
    pub decided_by: Option<usize>,
    /// Some rule's source covers the packet's source.
    pub covered: bool,
    /// WebGroups that admit the destination name.
    pub webgroups: Vec<String>,
}

pub(crate) fn proto_name(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => format!("protocol {n}"),
    }
}

fn source(pack: &Pack, rule: &Rule, src: IpAddr) -> Result<String, String> {
    match &rule.source {
        Source::Any => Ok("source any".into()),
        Source::Groups(names) => names
            .iter()
            .find(|n| pack.smartgroups.get(*n).is_some_and(|g| g.cidrs.iter().any(|c| c.contains(&src))))
            .map(|n| format!("source in {n}"))
            .ok_or_else(|| format!("{src} is in none of {}", names.join(", "))),
    }
}

/// Why destination `d` admits `dst`, or `None`; `learned` are the
/// WebGroups the destination was learned for (those covering a name
/// destination).
pub(crate) fn element(pack: &Pack, d: &Destination, dst: &Target, learned: &[String]) -> Option<String> {
    match (d, dst) {
        (Destination::Any, _) => Some("destination any".to_string()),
        (Destination::WebGroup(g), Target::Name(n)) => learned.contains(g).then(|| format!("{n} is in webgroup {g}")),
        (Destination::Resolvers, Target::Addr(a)) => pack.dns.resolvers.contains(a).then(|| "a resolver".into()),
        (Destination::Gateway, Target::Addr(a)) => pack.gateway.contains(a).then(|| "the gateway's".into()),
        (Destination::SmartGroup(g), Target::Addr(a)) => pack
            .smartgroups
            .get(g)
            .is_some_and(|s| s.cidrs.iter().any(|c| c.contains(a)))
            .then(|| format!("destination in {g}")),
        (Destination::Cidrs(c), Target::Addr(a)) => {
            c.iter().find(|c| c.contains(a)).map(|c| format!("destination in {c}"))
        }
        (Destination::WebGroup(_), Target::Addr(_)) | (_, Target::Name(_)) => None,
    }
}

/// Why none of `rule`'s destinations admits `dst`, judged by address.
pub(crate) fn destination_mismatch(rule: &Rule, dst: &Target) -> String {
    match dst {
        Target::Addr(a) if rule.destinations.iter().any(|d| matches!(d, Destination::WebGroup(_))) => {
            format!("{a} is not an address the workload learned for its webgroup (explain a name to see WebGroups)")
        }
        Target::Addr(a) => format!("{a} is not among its destinations"),
        Target::Name(n) => format!("{n} is in none of its webgroups (address destinations are not judged for a name)"),
    }
}

fn destination(pack: &Pack, rule: &Rule, dst: &Target, learned: &[String]) -> Result<String, String> {
    rule.destinations.iter().find_map(|d| element(pack, d, dst, learned)).ok_or_else(|| destination_mismatch(rule, dst))
}

fn protocol_and_ports(rule: &Rule, q: &Question) -> Result<(), String> {
    if !protocol_matches(rule, q.src, q.proto) {
        return Err(format!("protocol is {}, not {}", rule.protocol.keyword(), proto_name(q.proto)));
    }
    if !ports_match(rule, q.proto, q.port) {
        let list: Vec<String> = rule
            .ports
            .iter()
            .flatten()
            .map(|r| if r.lo == r.hi { r.lo.to_string() } else { format!("{}-{}", r.lo, r.hi) })
            .collect();
        return Err(format!("port {} is not in [{}]", q.port, list.join(", ")));
    }
    Ok(())
}

/// The WebGroups covering `dst` if it is a name: those the rules take its
/// address to be learned for. None for an address.
pub(crate) fn learned_for(pack: &Pack, dst: &Target) -> Vec<String> {
    match dst {
        Target::Name(n) => pack
            .webgroups
            .values()
            .filter(|g| g.domains.iter().any(|p| pattern_matches(p, n)))
            .map(|g| g.name.clone())
            .collect(),
        Target::Addr(_) => Vec::new(),
    }
}

/// Walks `pack`'s rules for `q` until one matches.
pub fn explain(pack: &Pack, q: &Question) -> Explanation {
    let webgroups = learned_for(pack, &q.dst);
    walk(pack, q, webgroups, |rule, learned| destination(pack, rule, &q.dst, learned))
}

/// Walks `pack`'s rules for `q` until one matches, the destination judged
/// by `destination` (given the rule and `webgroups`, the WebGroups the
/// destination was learned for).
pub(crate) fn walk(
    pack: &Pack,
    q: &Question,
    webgroups: Vec<String>,
    destination: impl Fn(&Rule, &[String]) -> Result<String, String>,
) -> Explanation {
    let mut steps = Vec::new();
    let mut covered = false;
    for (i, rule) in pack.rules.iter().enumerate() {
        let mut because = Vec::new();
        let outcome = source(pack, rule, q.src)
            .inspect(|_| covered = true)
            .and_then(|s| {
                because.push(s);
                destination(rule, &webgroups)
            })
            .and_then(|d| {
                because.push(d);
                protocol_and_ports(rule, q)
            });
        let matched = outcome.is_ok();
        steps.push(Step { rule: i, mismatch: outcome.err(), because });
        if matched {
            return Explanation { steps, decided_by: Some(i), covered: true, webgroups };
        }
    }
    Explanation { steps, decided_by: None, covered, webgroups }
}

/// The explanation in words, one line per rule walked.
pub fn render(pack: &Pack, q: &Question, e: &Explanation) -> String {
    let mut out = String::new();
    header(&mut out, pack, q, e, "");
    walk_lines(&mut out, pack, e);
    let _ = writeln!(out, "decision: {}", decision(pack, e));
    out
}

/// The packet (`extra` after it), then for a name destination its
/// WebGroups and what the DNS query filter does with it.
pub(crate) fn header(out: &mut String, pack: &Pack, q: &Question, e: &Explanation, extra: &str) {
    let dst = match &q.dst {
        Target::Addr(a) => a.to_string(),
        Target::Name(n) => n.clone(),
    };
    let port = if q.proto == 6 || q.proto == 17 { format!("/{}", q.port) } else { String::new() };
    let _ = writeln!(out, "{} -> {dst} {}{port}{extra}", q.src, proto_name(q.proto));
    if let Target::Name(n) = &q.dst {
        if e.webgroups.is_empty() {
            let _ = writeln!(out, "  {n} is in no webgroup");
        } else {
            let _ = writeln!(out, "  {n} is in webgroup(s): {}", e.webgroups.join(", "));
        }
        // Only the permit rules whose source covers the asking workload count.
        let permitted = pack.rules.iter().any(|r| {
            r.action == Action::Permit
                && crate::evaluate::source_matches(pack, r, q.src)
                && r.destinations.iter().any(|d| matches!(d, Destination::WebGroup(g) if e.webgroups.contains(g)))
        });
        let filter = match pack.dns.query_filter {
            QueryFilter::Off => None,
            QueryFilter::Monitor => Some("monitor: reported as would-refuse, then forwarded"),
            QueryFilter::Enforce => Some("enforce: answered REFUSED, the resolver never sees it"),
        };
        if let (Some(what), false) = (filter, permitted) {
            let _ =
                writeln!(out, "  DNS query filter: no permit rule for {} covers {n}; a lookup of it is {what}", q.src);
        }
    }
}

/// One line per rule walked: why it did not match, or why it did.
pub(crate) fn walk_lines(out: &mut String, pack: &Pack, e: &Explanation) {
    for s in &e.steps {
        let r = &pack.rules[s.rule];
        match &s.mismatch {
            Some(why) => {
                let _ = writeln!(out, "  priority {:>5}  {:<32} no: {why}", r.priority, r.name);
            }
            None => {
                let _ = writeln!(out, "  priority {:>5}  {:<32} MATCH: {}", r.priority, r.name, s.because.join("; "));
            }
        }
    }
}

/// The outcome of a walk in words: what happens to the packet and which
/// rule says so.
pub(crate) fn decision(pack: &Pack, e: &Explanation) -> String {
    match e.decided_by.map(|i| &pack.rules[i]) {
        Some(r) => {
            let action = if r.action == Action::Permit { "permit" } else { "deny" };
            let effect = match (r.action, r.mode) {
                (Action::Permit, _) => "allowed",
                (Action::Deny, Mode::Enforce) => "denied",
                (Action::Deny, Mode::Monitor) => "would_deny (monitor: passes, reported)",
            };
            let at = if r.location.line > 0 { format!(" at {}", r.location) } else { String::new() };
            format!("{effect}: {action} by rule `{}` (priority {}, {}){at}", r.name, r.priority, r.mode.keyword())
        }
        None if e.covered => format!(
            "{}: implicit-deny (the source is covered by some rule, but no rule matches; pack mode {})",
            if pack.mode == Mode::Enforce { "denied" } else { "would_deny (monitor)" },
            pack.mode.keyword()
        ),
        None if pack.uncovered == Uncovered::Deny => format!(
            "{}: uncovered-source (no rule's source covers this source; `uncovered: deny`, pack mode {})",
            if pack.mode == Mode::Enforce { "denied" } else { "would_deny (monitor)" },
            pack.mode.keyword()
        ),
        None => "uncovered: no rule's source covers this source; `uncovered: pass` lets it through untouched".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_sources;

    const PACK: &str = r#"
version: 1
mode: enforce
dns: { resolvers: [10.0.0.2], query_filter: enforce }
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
  tools: { cidrs: [203.0.113.20/32] }
webgroups:
  models: { domains: [api.openai.com, "*.anthropic.com"] }
rules:
  - { name: allow-models, priority: 10, source: runtime, destination: { webgroup: models }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-tools, priority: 20, source: runtime, destination: { smartgroup: tools }, protocol: tcp, ports: [443, "8000-8100"], action: permit }
  - { name: watch-ntp, priority: 30, source: runtime, destination: any, protocol: udp, ports: [123], action: deny, mode: monitor }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
"#;

    fn run(src: &str, dst: Target, proto: u8, port: u16) -> (Explanation, String) {
        let pack = load_sources(&[("p.yaml".into(), PACK.into())]).expect("valid pack");
        let q = Question { src: src.parse().unwrap(), dst, proto, port };
        let e = explain(&pack, &q);
        let text = render(&pack, &q, &e);
        (e, text)
    }

    #[test]
    fn a_name_matches_by_its_webgroups() {
        let (e, text) = run("10.10.1.5", Target::Name("api.openai.com".into()), 6, 443);
        assert_eq!(e.decided_by, Some(0), "{text}");
        assert_eq!(e.webgroups, vec!["models".to_string()]);
        assert!(text.contains("allowed: permit by rule `allow-models` (priority 10, enforce) at p.yaml:"), "{text}");
        let (e, text) = run("10.10.1.5", Target::Name("evil.example".into()), 6, 443);
        assert_eq!(e.decided_by, Some(3), "{text}");
        assert!(text.contains("is in none of its webgroups"), "{text}");
        assert!(text.contains("a lookup of it is enforce: answered REFUSED"), "{text}");
    }

    #[test]
    fn every_rule_walked_says_why_it_did_not_match() {
        let (e, text) = run("10.10.1.5", Target::Addr("203.0.113.20".parse().unwrap()), 6, 9000);
        assert_eq!(e.decided_by, Some(3));
        assert!(text.contains("port 9000 is not in [443, 8000-8100]"), "{text}");
        assert!(text.contains("protocol is udp, not tcp"), "{text}");
        assert!(text.contains("denied: deny by rule `default-deny`"), "{text}");
        let (e, _) = run("10.10.1.5", Target::Addr("203.0.113.20".parse().unwrap()), 6, 8050);
        assert_eq!(e.decided_by, Some(1));
    }

    #[test]
    fn monitor_and_uncovered_sources() {
        let (_, text) = run("10.10.1.5", Target::Addr("192.0.2.1".parse().unwrap()), 17, 123);
        assert!(text.contains("would_deny (monitor: passes, reported): deny by rule `watch-ntp`"), "{text}");
        let (e, text) = run("10.99.0.1", Target::Addr("192.0.2.1".parse().unwrap()), 6, 443);
        assert!(!e.covered && e.decided_by.is_none());
        assert!(text.contains("uncovered"), "{text}");
        assert!(text.contains("10.99.0.1 is in none of runtime"), "{text}");
    }
}
