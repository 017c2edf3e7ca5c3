//! Replay on flow logs written as the agent writes them.

use super::*;

/// The pack the flows were recorded under: monitor, a model provider
/// permitted by name, a tool by address.
const CANDIDATE: &str = "version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
webgroups:
  models: { domains: [api.model.example] }
  registries: { domains: [pypi.org, files.pythonhosted.org] }
rules:
  - { name: allow-models, priority: 10, source: runtime, destination: { webgroup: models }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-registries, priority: 20, source: runtime, destination: { webgroup: registries }, protocol: tcp, ports: [443], action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
";

fn flow(dst: &str, rule: &str, verdict: &str, fqdn: Option<&str>, name: Option<&str>) -> String {
    let fqdn = fqdn.map_or("null".into(), |f| format!("\"{f}\""));
    let name = name.map_or(String::new(), |n| format!(",\"name\":\"{n}\",\"name_source\":\"sni\""));
    format!(
        "{{\"ts\":\"2026-12-05T10:00:00.000Z\",\"type\":\"flow\",\"iface\":\"lan0\",\"src\":\"10.10.1.10\",\"sport\":40000,\
         \"dst\":\"{dst}\",\"dport\":443,\"proto\":\"tcp\",\"rule\":\"{rule}\",\"priority\":1000,\"action\":\"deny\",\
         \"mode\":\"monitor\",\"verdict\":\"{verdict}\",\"reason\":\"rule\",\"pack\":3,\"fqdn\":{fqdn}{name}}}\n"
    )
}

fn log() -> String {
    [
        // A registry the monitor pack did not permit: permitted now.
        flow("198.51.100.5", "default-deny", "would_deny", Some("pypi.org"), None),
        // The sanctioned model: allowed then, and now.
        flow("198.51.100.9", "allow-models", "allowed", Some("api.model.example"), Some("api.model.example")),
        // A tool the old pack allowed by address: denied now.
        flow("203.0.113.20", "allow-tools", "allowed", None, None),
        // The model's address with an attacker's SNI: the name decides.
        flow("198.51.100.9", "allow-models", "allowed", Some("api.model.example"), Some("attacker.example")),
        "{\"ts\":\"2026-12-05T10:00:01.000Z\",\"type\":\"dns\",\"workload\":\"10.10.1.10\",\"name\":\"pypi.org\"}\n"
            .into(),
    ]
    .concat()
}

fn candidate() -> Pack {
    egress_policy::load_sources(&[("candidate.yaml".into(), CANDIDATE.into())]).expect("the pack loads")
}

#[test]
fn changes_are_reported_by_the_rule_that_decides_now() {
    let (flows, skipped) = read_flows("flows.jsonl", &log()).expect("a flow log");
    assert_eq!((flows.len(), skipped), (4, 1));
    let report = replay(&candidate(), flows, &Expect::default());
    let rules = |m: &BTreeMap<String, Vec<Recorded>>| m.iter().map(|(r, f)| (r.clone(), f.len())).collect::<Vec<_>>();
    assert_eq!(rules(&report.newly_permitted), [("allow-registries".to_string(), 1)]);
    assert_eq!(rules(&report.newly_denied), [("default-deny".to_string(), 2)]);
    let denied: Vec<String> = report.newly_denied["default-deny"].iter().map(|f| f.dst.to_string()).collect();
    assert_eq!(denied, ["203.0.113.20", "198.51.100.9"], "the tool by address, the model's address with another name");
    assert!(report.unexpected.is_empty());
    let text = render(&report, Path::new("candidate.yaml"));
    assert!(
        text.starts_with("replay of 4 recorded flows against candidate.yaml: 2 newly denied, 1 newly permitted"),
        "{text}"
    );
    assert!(text.contains("newly permitted by allow-registries: 1 flows"), "{text}");
}

#[test]
fn a_newly_denied_flow_that_must_stay_allowed_is_named() {
    let (flows, _) = read_flows("flows.jsonl", &log()).expect("a flow log");
    let expect = Expect::parse("expect.txt", "# must keep working\n203.0.113.0/24\n*.model.example\n").expect("parses");
    let report = replay(&candidate(), flows, &expect);
    let unexpected: Vec<String> = report.unexpected.iter().map(|f| f.dst.to_string()).collect();
    assert_eq!(unexpected, ["203.0.113.20"], "the attacker SNI's flow is not a `*.model.example` name");
    assert!(
        render(&report, Path::new("p")).contains("EXPECTED ALLOWED, newly denied: 10.10.1.10 -> 203.0.113.20:443/tcp")
    );
    let e = Expect::parse("expect.txt", "ok.example\nnot a name\n").expect_err("a bad line").to_string();
    assert!(e.starts_with("expect.txt:2: "), "{e}");
}

#[test]
fn a_line_that_is_not_a_record_is_named() {
    let text = format!("{}not json\n", flow("192.0.2.1", "r", "denied", None, None));
    let e = read_flows("flows.jsonl", &text).expect_err("bad line").to_string();
    assert!(e.starts_with("flows.jsonl:2: not a flow-log record"), "{e}");
    let e = read_flows("f", "{\"type\":\"flow\",\"src\":\"10.0.0.1\"}\n").expect_err("fields missing").to_string();
    assert!(e.starts_with("f:1: not a flow-log record: missing field"), "{e}");
}
