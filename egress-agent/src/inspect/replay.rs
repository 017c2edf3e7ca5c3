//! `egress-agent replay`: the flows a flow log recorded, judged again by a
//! candidate pack through the reference evaluator, and what would change
//! against what happened: flows newly denied (delivered then, dropped
//! now) and newly permitted (denied or `would_deny` then, allowed now),
//! by the rule that would decide them. A flow is judged as it was: its
//! destination learned for the WebGroups of the candidate pack that cover
//! the name it was resolved from (`fqdn`), and a TCP flow that sent a name
//! (`name`: SNI or Host) by its second decision, by address and name.
//!
//! A flow log holds the flows of logging rules and every denied or
//! `would_deny` flow: a permitted flow of a rule without `log: true` is
//! not in it, so replay judges what the log saw. Nothing is applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use egress_policy::evaluate::{Outcome, Probe, evaluate_learned, evaluate_named, name_covered};
use egress_policy::model::{Action, Mode, Pack, WebGroup};
use ipnet::IpNet;
use serde::Deserialize;

/// Why a replay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: not a flow-log record: {why}")]
    Record { file: String, line: usize, why: String },
    #[error("{file}:{line}: {why}")]
    Expect { file: String, line: usize, why: String },
}

/// One recorded flow (a flow-log line of `"type": "flow"`).
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: String,
    pub rule: String,
    pub verdict: String,
    #[serde(default)]
    pub fqdn: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A flow's verdict, and the rule that gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub rule: String,
    /// `allowed`, `denied` or `would_deny`, as flow logs say.
    pub verdict: &'static str,
}

/// Reads the flow records of a flow log's text (other records, such as
/// `dns` and `summary`, are skipped); `file` names it in errors. Returns
/// the flows and how many lines were skipped.
pub fn read_flows(file: &str, text: &str) -> Result<(Vec<Recorded>, usize), ReplayError> {
    let mut flows = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |why: String| ReplayError::Record { file: file.into(), line: i + 1, why };
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if value.get("type").and_then(serde_json::Value::as_str) != Some("flow") {
            skipped += 1;
            continue;
        }
        flows.push(serde_json::from_value(value).map_err(|e| bad(e.to_string()))?);
    }
    Ok((flows, skipped))
}

/// The IP protocol number of a flow log's `proto`.
fn proto_number(proto: &str) -> Option<u8> {
    match proto {
        "tcp" => Some(6),
        "udp" => Some(17),
        "icmp" => Some(1),
        "icmpv6" => Some(58),
        n => n.parse().ok(),
    }
}

/// How `pack` judges the recorded flow; `None` if its protocol is unknown.
pub fn judge(pack: &Pack, flow: &Recorded) -> Option<Judged> {
    let proto = proto_number(&flow.proto)?;
    let probe = Probe { src: flow.src, dst: flow.dst, proto, dport: flow.dport };
    let learned: BTreeSet<String> = match &flow.fqdn {
        Some(fqdn) => pack.webgroups.values().filter(|g| name_covered(g, fqdn)).map(|g| g.name.clone()).collect(),
        None => BTreeSet::new(),
    };
    let outcome = match &flow.name {
        Some(name) if proto == 6 => evaluate_named(pack, &probe, &learned, Some(name)),
        _ => evaluate_learned(pack, &probe, &learned),
    };
    let deny = |mode: Mode| if mode == Mode::Enforce { "denied" } else { "would_deny" };
    Some(match outcome {
        Outcome::Rule(i) => {
            let r = &pack.rules[i];
            let verdict = if r.action == Action::Permit { "allowed" } else { deny(r.mode) };
            Judged { rule: r.name.clone(), verdict }
        }
        Outcome::ImplicitDeny => Judged { rule: "implicit-deny".into(), verdict: deny(pack.mode) },
        Outcome::UncoveredDeny => Judged { rule: "uncovered-source".into(), verdict: deny(pack.mode) },
        Outcome::Uncovered => Judged { rule: "uncovered".into(), verdict: "allowed" },
    })
}

/// What must stay allowed (`--expect-allowed`): destinations by CIDR, and
/// names (the flow's `fqdn` or `name`) by domain pattern; one a line,
/// `#` comments, as list files take them.
#[derive(Debug, Default)]
pub struct Expect {
    cidrs: Vec<IpNet>,
    /// The names, as a WebGroup's (matched the same way).
    names: WebGroup,
}

impl Expect {
    /// Parses an expect-allowed file's text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Expect, ReplayError> {
        let mut expect = Expect::default();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split_once('#').map_or(line, |(before, _)| before).trim();
            if entry.is_empty() {
                continue;
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                expect.cidrs.push(net);
            } else if let Ok(addr) = entry.parse::<IpAddr>() {
                expect.cidrs.push(IpNet::from(addr));
            } else {
                let pattern = egress_policy::domain::parse_pattern(entry).map_err(|why| ReplayError::Expect {
                    file: file.into(),
                    line: i + 1,
                    why: format!("{why} (expected a CIDR, an address or a domain pattern)"),
                })?;
                expect.names.domains.push(pattern);
            }
        }
        Ok(expect)
    }

    /// Whether the flow is one that must stay allowed: its destination by
    /// CIDR, or by name the one it talked to (its connection's name, else
    /// the name it was resolved from).
    fn covers(&self, flow: &Recorded) -> bool {
        let name = flow.name.as_deref().or(flow.fqdn.as_deref());
        self.cidrs.iter().any(|c| c.contains(&flow.dst)) || name.is_some_and(|n| name_covered(&self.names, n))
    }
}

/// What changed, by the rule that would decide now.
#[derive(Debug, Default)]
pub struct Report {
    pub flows: usize,
    /// Lines of other records, and flows of an unknown protocol.
    pub skipped: usize,
    /// Delivered then (`allowed`, `would_deny`), `denied` now.
    pub newly_denied: BTreeMap<String, Vec<Recorded>>,
    /// `denied` or `would_deny` then, `allowed` now.
    pub newly_permitted: BTreeMap<String, Vec<Recorded>>,
    /// Newly denied flows that `--expect-allowed` says must stay allowed.
    pub unexpected: Vec<Recorded>,
}

/// Judges `flows` with `pack` against what happened.
pub fn replay(pack: &Pack, flows: Vec<Recorded>, expect: &Expect) -> Report {
    let mut report = Report { flows: flows.len(), ..Report::default() };
    for flow in flows {
        let Some(now) = judge(pack, &flow) else {
            report.skipped += 1;
            continue;
        };
        let delivered_then = matches!(flow.verdict.as_str(), "allowed" | "would_deny");
        if delivered_then && now.verdict == "denied" {
            if expect.covers(&flow) {
                report.unexpected.push(flow.clone());
            }
            report.newly_denied.entry(now.rule).or_default().push(flow);
        } else if !matches!(flow.verdict.as_str(), "allowed") && now.verdict == "allowed" {
            report.newly_permitted.entry(now.rule).or_default().push(flow);
        }
    }
    report
}

/// The report in words: counts, then each change by rule with a few flows.
pub fn render(report: &Report, policy: &Path) -> String {
    use std::fmt::Write as _;
    let count = |m: &BTreeMap<String, Vec<Recorded>>| m.values().map(Vec::len).sum::<usize>();
    let mut out = format!(
        "replay of {} recorded flows against {}: {} newly denied, {} newly permitted ({} lines skipped)\n",
        report.flows,
        policy.display(),
        count(&report.newly_denied),
        count(&report.newly_permitted),
        report.skipped
    );
    for (what, changes) in [("newly denied", &report.newly_denied), ("newly permitted", &report.newly_permitted)] {
        for (rule, flows) in changes {
            let _ = writeln!(out, "{what} by {rule}: {} flows", flows.len());
            for f in flows.iter().take(5) {
                let name = f.fqdn.as_deref().or(f.name.as_deref()).map_or(String::new(), |n| format!(" ({n})"));
                let _ = writeln!(
                    out,
                    "  {} -> {}:{}/{}{name}, was {} by {}",
                    f.src, f.dst, f.dport, f.proto, f.verdict, f.rule
                );
            }
        }
    }
    for f in &report.unexpected {
        let _ = writeln!(out, "EXPECTED ALLOWED, newly denied: {} -> {}:{}/{}", f.src, f.dst, f.dport, f.proto);
    }
    out
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
