use super::*;
use crate::load_sources;

const PACK: &str = r#"
version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
webgroups:
  llm-providers: { domains: [api.openai.com, "**.openai.azure.com"] }
  blocked-tenants: { domains: ["*.evil.example"] }
  mirrors: { domains: [pypi.org] }
rules:
  - { name: deny-blocked, priority: 10, source: runtime, destination: { webgroup: blocked-tenants }, protocol: tcp, ports: [443], action: deny }
  - { name: allow-models, priority: 20, source: runtime, destination: { webgroup: llm-providers }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-mirrors, priority: 25, source: runtime, destination: { webgroup: mirrors }, protocol: tcp, ports: [443], action: permit, verify_names: false }
  - { name: allow-cdn, priority: 30, source: runtime, destination: { cidrs: [203.0.113.0/24] }, protocol: tcp, ports: [443], action: permit }
  - { name: watch-rest, priority: 40, source: runtime, destination: { webgroup: blocked-tenants }, action: deny, mode: monitor }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
"#;

fn pack() -> Pack {
    load_sources(&[("p.yaml".into(), PACK.into())]).unwrap_or_else(|e| panic!("{e}"))
}

fn target(dst: &str) -> Target {
    dst.parse().map_or_else(|_| Target::Name(dst.to_owned()), Target::Addr)
}

/// Both decisions' deciders, the text, and the check (which must agree).
fn run(dst: &str, port: u16, name: &str) -> (String, String, String) {
    let pack = pack();
    let q = Question { src: "10.10.1.5".parse().expect("address"), dst: target(dst), proto: 6, port };
    let e = explain_named(&pack, &q, name).unwrap_or_else(|err| panic!("{err}"));
    let text = render_named(&pack, &q, &e);
    assert_eq!(check(&pack, &q, &e), Check::Agrees, "{text}");
    (decider(&pack, &e.by_address), decider(&pack, &e.with_name), text)
}

#[test]
fn another_tenant_on_a_learned_address_is_denied_by_name() {
    let (first, second, text) = run("api.openai.com", 443, "attacker.example");
    assert_eq!((first.as_str(), second.as_str()), ("allow-models", "default-deny"), "{text}");
    assert!(
        text.contains(
            "the name changes the decision: by address: allow-models; with name attacker.example: default-deny \
             (the name attacker.example is not one webgroup llm-providers covers)"
        ),
        "{text}"
    );
    assert!(text.contains("the name attacker.example is in no webgroup"), "{text}");
    assert!(text.contains("decision: with name attacker.example: denied: deny by rule `default-deny`"), "{text}");
    assert!(text.contains("the workload's side reset at once"), "{text}");
    assert!(text.contains("deny-blocked                     no: api.openai.com is in none of its webgroups (address destinations are not judged for a name), nor is the name attacker.example"), "{text}");
}

#[test]
fn the_sanctioned_name_keeps_the_decision_in_any_case() {
    let (first, second, text) = run("api.openai.com", 443, "EastUS.OpenAI.Azure.com.");
    assert_eq!((first.as_str(), second.as_str()), ("allow-models", "allow-models"), "{text}");
    assert!(text.contains("the name eastus.openai.azure.com is in webgroup(s): llm-providers"), "{text}");
    assert!(text.contains("and the name eastus.openai.azure.com is one it covers"), "{text}");
    assert!(text.contains("the name does not change the decision (allow-models)"), "{text}");
}

#[test]
fn a_deny_webgroup_matches_by_name_whatever_the_address() {
    let (first, second, text) = run("203.0.113.9", 443, "x.evil.example");
    assert_eq!((first.as_str(), second.as_str()), ("allow-cdn", "deny-blocked"), "{text}");
    assert!(
        text.contains("(the name x.evil.example is in webgroup blocked-tenants (a deny matches it by name"),
        "{text}"
    );
    // In monitor mode, on another port.
    let (first, second, text) = run("203.0.113.9", 8443, "x.evil.example");
    assert_eq!((first.as_str(), second.as_str()), ("default-deny", "watch-rest"), "{text}");
    assert!(text.contains("would_deny (monitor: passes, reported): deny by rule `watch-rest`"), "{text}");
    assert!(text.contains("monitor: the flow is reported as would_deny and continues"), "{text}");
}

#[test]
fn a_covered_name_on_an_address_learned_for_nothing_is_not_permitted() {
    let (first, second, text) = run("198.51.100.7", 443, "api.openai.com");
    assert_eq!((first.as_str(), second.as_str()), ("default-deny", "default-deny"), "{text}");
    assert!(text.contains("is not an address the workload learned for its webgroup"), "{text}");
}

#[test]
fn verify_names_false_does_not_check_the_name() {
    let (first, second, text) = run("pypi.org", 443, "attacker.example");
    assert_eq!((first.as_str(), second.as_str()), ("allow-mirrors", "allow-mirrors"), "{text}");
    assert!(text.contains("pypi.org is in webgroup mirrors (verify_names: false, the name is not checked)"), "{text}");
}

#[test]
fn the_walk_agrees_with_the_reference_and_the_tables() {
    let dsts = ["api.openai.com", "pypi.org", "a.evil.example", "nothing.example", "203.0.113.9", "198.51.100.7"];
    let names = ["api.openai.com", "b.evil.example", "pypi.org", "x.openai.azure.com", "other.example"];
    for dst in dsts {
        for name in names {
            for port in [443, 80] {
                run(dst, port, name); // asserts Check::Agrees
            }
        }
    }
}

#[test]
fn only_tcp_flows_and_well_formed_names() {
    let pack = pack();
    let mut q = Question { src: "10.10.1.5".parse().expect("address"), dst: target("pypi.org"), proto: 17, port: 443 };
    let err = explain_named(&pack, &q, "pypi.org").expect_err("udp");
    assert_eq!(err, NameError::NotTcp("udp".into()));
    assert!(err.to_string().contains("judged by address alone"), "{err}");
    q.proto = 6;
    for bad in ["", "a..b", "*.example.com", "exa mple.com", "x:443"] {
        let err = explain_named(&pack, &q, bad).expect_err(bad);
        assert!(matches!(err, NameError::Malformed { .. }), "{bad}: {err}");
    }
    assert_eq!(parse_name("Api.OpenAI.com."), Ok("api.openai.com".into()));
}
