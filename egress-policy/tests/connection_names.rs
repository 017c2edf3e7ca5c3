//! The contract's cases of a TCP flow's second decision, by address and
//! name (section "Connection names"), decided by the reference evaluator
//! and by the compiled tables, which must agree.

use std::collections::BTreeSet;
use std::net::IpAddr;

use egress_policy::compile::{CompiledPack, Decision, NamesDecision, compile};
use egress_policy::evaluate::{Outcome, Probe, evaluate_learned, evaluate_named};
use egress_policy::load_sources;
use egress_policy::model::Pack;

const PACK: &str = r#"
version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
webgroups:
  llm-providers: { domains: [api.openai.com, api.anthropic.com, "**.openai.azure.com"] }
  blocked-tenants: { domains: ["*.evil.example", exfil.example] }
rules:
  - { name: deny-blocked, priority: 10, source: runtime, destination: { webgroup: blocked-tenants }, protocol: tcp, ports: [443], action: deny }
  - { name: allow-sanctioned-models, priority: 20, source: runtime, destination: { webgroup: llm-providers }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-cdn, priority: 30, source: runtime, destination: { cidrs: [203.0.113.0/24] }, protocol: tcp, ports: [443], action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, protocol: any, action: deny }
"#;

/// A CDN address shared by the sanctioned API and other tenants.
const CDN: &str = "198.51.100.7";

struct Case {
    pack: Pack,
    compiled: CompiledPack,
    names: NamesDecision,
}

impl Case {
    fn new() -> Case {
        let pack = load_sources(&[("p.yaml".to_string(), PACK.to_string())]).unwrap_or_else(|e| panic!("{e}"));
        let compiled = compile(&pack).expect("compiles");
        let names = NamesDecision::build(&pack, &compiled);
        Case { pack, compiled, names }
    }

    /// The second decision of a TCP 443 flow from the runtime to `dst`,
    /// learned for `learned`, named `name`, as the rule's name; the
    /// reference and the compiled tables must agree.
    fn decide(&self, dst: &str, learned: &[&str], name: Option<&str>) -> String {
        let probe = Probe { src: ip("10.10.1.5"), dst: ip(dst), proto: 6, dport: 443 };
        let set: BTreeSet<String> = learned.iter().map(ToString::to_string).collect();
        let want = evaluate_named(&self.pack, &probe, &set, name);
        let bits = self.bits(learned);
        let named = name.map_or(0, |n| self.compiled.name_groups(n));
        let got = self.names.decide_named(&self.compiled, probe.src, probe.dst, 6, 443, bits, named);
        assert_eq!(self.outcome(got), want, "{dst} learned {learned:?} name {name:?}");
        match want {
            Outcome::Rule(i) => self.pack.rules[i].name.clone(),
            other => format!("{other:?}"),
        }
    }

    /// The first decision (by address) as the rule's name.
    fn first(&self, dst: &str, learned: &[&str]) -> String {
        let probe = Probe { src: ip("10.10.1.5"), dst: ip(dst), proto: 6, dport: 443 };
        let set: BTreeSet<String> = learned.iter().map(ToString::to_string).collect();
        match evaluate_learned(&self.pack, &probe, &set) {
            Outcome::Rule(i) => self.pack.rules[i].name.clone(),
            other => format!("{other:?}"),
        }
    }

    fn needs_name(&self, dst: &str, learned: &[&str]) -> bool {
        self.names.needs_name(&self.compiled, ip("10.10.1.5"), ip(dst), 6, 443, self.bits(learned))
    }

    fn bits(&self, groups: &[&str]) -> u64 {
        groups.iter().map(|g| 1u64 << self.compiled.webgroup_bits[*g]).fold(0, |a, b| a | b)
    }

    fn outcome(&self, d: Decision) -> Outcome {
        match d {
            Decision::Uncovered => Outcome::Uncovered,
            Decision::Rule(r) if r == self.compiled.implicit_rule => Outcome::ImplicitDeny,
            Decision::Rule(r) if r == self.compiled.uncovered_rule => Outcome::UncoveredDeny,
            Decision::Rule(r) => Outcome::Rule(r as usize),
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn verify_names_defaults_to_permit_rules_with_a_webgroup_destination() {
    let case = Case::new();
    let verify: Vec<(&str, bool)> = case.pack.rules.iter().map(|r| (r.name.as_str(), r.verify_names)).collect();
    assert_eq!(
        verify,
        [("deny-blocked", false), ("allow-sanctioned-models", true), ("allow-cdn", false), ("default-deny", false)]
    );
}

#[test]
fn shared_cdn_address_opens_only_the_names_of_its_webgroup() {
    let case = Case::new();
    // The address was learned for api.openai.com: the first decision permits.
    assert_eq!(case.first(CDN, &["llm-providers"]), "allow-sanctioned-models");
    assert!(case.needs_name(CDN, &["llm-providers"]));
    // The sanctioned name on it is permitted, another tenant's is not.
    assert_eq!(case.decide(CDN, &["llm-providers"], Some("api.openai.com")), "allow-sanctioned-models");
    assert_eq!(case.decide(CDN, &["llm-providers"], Some("API.OpenAI.com.")), "allow-sanctioned-models");
    assert_eq!(case.decide(CDN, &["llm-providers"], Some("eastus.openai.azure.com")), "allow-sanctioned-models");
    assert_eq!(case.decide(CDN, &["llm-providers"], Some("attacker-tenant.example")), "default-deny");
    // A covered name on an address not learned for the group is not permitted.
    assert_eq!(case.decide(CDN, &[], Some("api.openai.com")), "default-deny");
}

#[test]
fn no_name_does_not_match_a_verify_names_permit() {
    let case = Case::new();
    assert_eq!(case.decide(CDN, &["llm-providers"], None), "default-deny");
}

#[test]
fn a_deny_webgroup_covering_the_name_comes_before_a_cidr_permit() {
    let case = Case::new();
    let cdn = "203.0.113.9";
    // By address the CIDR rule permits, but a name could meet the deny first.
    assert_eq!(case.first(cdn, &[]), "allow-cdn");
    assert!(case.needs_name(cdn, &[]));
    assert_eq!(case.decide(cdn, &[], Some("x.evil.example")), "deny-blocked");
    assert_eq!(case.decide(cdn, &[], Some("exfil.example")), "deny-blocked");
    assert_eq!(case.decide(cdn, &[], Some("a.b.evil.example")), "allow-cdn");
    assert_eq!(case.decide(cdn, &[], Some("www.example.org")), "allow-cdn");
    assert_eq!(case.decide(cdn, &[], None), "allow-cdn");
    // An address learned for the deny group is denied whatever the name.
    assert_eq!(case.decide(cdn, &["blocked-tenants"], None), "deny-blocked");
}

#[test]
fn flows_that_no_name_can_change_need_none() {
    let case = Case::new();
    let pack = load_sources(&[(
        "p.yaml".to_string(),
        PACK.replace("priority: 10, source: runtime", "priority: 100, source: runtime"),
    )])
    .unwrap_or_else(|e| panic!("{e}"));
    let late_deny = compile(&pack).expect("compiles");
    let late_names = NamesDecision::build(&pack, &late_deny);
    // The CIDR permit comes before the (now later) deny WebGroup.
    assert!(!late_names.needs_name(&late_deny, ip("10.10.1.5"), ip("203.0.113.9"), 6, 443, 0));
    // Other ports and sources are decided by rules no name changes.
    assert!(!case.names.needs_name(&case.compiled, ip("10.10.1.5"), ip(CDN), 6, 80, case.bits(&["llm-providers"])));
    assert!(!case.names.needs_name(&case.compiled, ip("10.99.0.1"), ip(CDN), 6, 443, case.bits(&["llm-providers"])));
    assert_eq!(case.decide(CDN, &[], None), "default-deny");
}
