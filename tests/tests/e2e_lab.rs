//! End to end: workload — gateway running `egress-agent run` — upstream,
//! in network namespaces, with real TCP, UDP and ICMP over IPv4 and IPv6.
//! Every denial is first shown to pass without the agent, so a test cannot
//! pass because the lab is broken.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::lab::{GATEWAY_V4, Lab};

const T: Duration = Duration::from_millis(1200);

const PACK: &str = r#"
version: 1
mode: enforce
dns:
  resolvers: [198.51.100.53]
smartgroups:
  runtime: { cidrs: [10.10.1.0/24, "fd00:10:1::/64"] }
  web: { cidrs: [203.0.113.10/32, "2001:db8:1::10/128"] }
rules:
  - { name: allow-web, priority: 10, source: runtime, destination: { smartgroup: web }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: runtime, destination: resolvers, protocol: udp, ports: [53], action: permit }
  - { name: allow-ping, priority: 30, source: runtime, destination: { smartgroup: web }, protocol: icmp, action: permit }
  - { name: allow-gateway-ping, priority: 40, source: runtime, destination: gateway, protocol: icmp, action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
"#;

/// A service listening on the gateway's LAN address.
const GATEWAY_SERVICE: &str = "10.10.1.1:2222";

const UPSTREAM: &[&str] = &["203.0.113.10", "203.0.113.20", "198.51.100.53", "2001:db8:1::10", "2001:db8:1::20"];

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn lab() -> Lab {
    let lab = Lab::new(UPSTREAM).expect("lab (run as root)");
    for a in ["203.0.113.10:443", "203.0.113.20:443", "[2001:db8:1::10]:443", "[2001:db8:1::20]:443"] {
        lab.tcp_echo(sa(a)).expect("tcp server");
    }
    for a in ["198.51.100.53:53", "203.0.113.20:53", "[2001:db8:1::20]:53"] {
        lab.udp_echo(sa(a)).expect("udp server");
    }
    lab
}

fn start(lab: &Lab, pack: &str) -> AgentProcess {
    AgentProcess::start(lab, &egress_lab::agent_binary(), pack).expect("agent starts")
}

/// The first flow record satisfying `want` (waits up to 5 s).
fn record(agent: &AgentProcess, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    match agent.wait_record(Duration::from_secs(5), want) {
        Some(v) => v,
        None => panic!("no matching flow record in {:#?}", agent.flow_records()),
    }
}

#[test]
fn enforce_mode_permits_and_denies_real_traffic() {
    let lab = lab();
    // Without the agent everything gets through: the lab itself works.
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "lab: tcp");
    assert!(lab.tcp_exchange(None, sa("[2001:db8:1::20]:443"), T).unwrap(), "lab: tcp6");
    assert!(lab.udp_exchange(sa("203.0.113.20:53"), T).unwrap(), "lab: udp");
    assert!(lab.ping(ip("203.0.113.20")).unwrap(), "lab: ping");

    lab.tcp_echo_in(&lab.gateway, sa(GATEWAY_SERVICE)).expect("a service on the gateway");
    assert!(lab.tcp_exchange(None, sa(GATEWAY_SERVICE), T).unwrap(), "lab: the gateway's service");
    let agent = start(&lab, PACK);
    // IPv4.
    assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap(), "permitted tcp");
    assert!(!lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "denied tcp");
    assert!(lab.udp_exchange(sa("198.51.100.53:53"), T).unwrap(), "permitted udp");
    assert!(!lab.udp_exchange(sa("203.0.113.20:53"), T).unwrap(), "denied udp");
    assert!(lab.ping(ip("203.0.113.10")).unwrap(), "permitted ping");
    assert!(!lab.ping(ip("203.0.113.20")).unwrap(), "denied ping");
    // IPv6.
    assert!(lab.tcp_exchange(None, sa("[2001:db8:1::10]:443"), T).unwrap(), "permitted tcp6");
    assert!(!lab.tcp_exchange(None, sa("[2001:db8:1::20]:443"), T).unwrap(), "denied tcp6");
    assert!(!lab.udp_exchange(sa("[2001:db8:1::20]:53"), T).unwrap(), "denied udp6");
    assert!(lab.ping(ip("2001:db8:1::10")).unwrap(), "permitted ping6");
    assert!(!lab.ping(ip("2001:db8:1::20")).unwrap(), "denied ping6");
    // The gateway's own services meet the rules: what a `gateway` rule
    // permits gets through, anything else is denied (before the `gateway`
    // destination, everything sent to the gateway passed unjudged).
    assert!(lab.ping(ip(GATEWAY_V4)).unwrap(), "allow-gateway-ping");
    assert!(!lab.tcp_exchange(None, sa(GATEWAY_SERVICE), T).unwrap(), "a service on the gateway is denied");
    record(&agent, |v| v["dst"] == GATEWAY_V4 && v["dport"] == 2222 && v["rule"] == "default-deny");

    let allowed = record(&agent, |v| v["rule"] == "allow-web" && v["dst"] == "203.0.113.10");
    assert_eq!(allowed["verdict"], "allowed");
    assert_eq!(allowed["action"], "permit");
    assert_eq!(allowed["mode"], "enforce");
    assert_eq!(allowed["proto"], "tcp");
    assert_eq!(allowed["dport"], 443);
    assert_eq!(allowed["src"], "10.10.1.10");
    assert!(allowed["sport"].as_u64().is_some_and(|p| p > 0));
    assert!(allowed["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    let denied = record(&agent, |v| v["dst"] == "2001:db8:1::20" && v["proto"] == "tcp");
    assert_eq!(denied["rule"], "default-deny");
    assert_eq!(denied["verdict"], "denied");
    record(&agent, |v| v["dst"] == "203.0.113.20" && v["proto"] == "icmp" && v["verdict"] == "denied");
    record(&agent, |v| v["dst"] == "198.51.100.53" && v["rule"] == "allow-dns" && v["verdict"] == "allowed");

    let m = agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_rule_packets_total{rule=\"default-deny\",verdict=\"denied\"}") >= 6, "{m}");
    assert!(metric(&m, "egress_rule_flows_total{rule=\"allow-web\",verdict=\"allowed\"}") >= 2, "{m}");
    assert_eq!(metric(&m, "egress_rule_packets_total{rule=\"default-deny\",verdict=\"would_deny\"}"), 0);
    assert!(metric(&m, "egress_rule_flows_total{rule=\"allow-gateway-ping\",verdict=\"allowed\"}") >= 1, "{m}");
    assert_eq!(metric(&m, "egress_datapath_packets_total{reason=\"to_gateway\"}"), 0, "nothing passes unjudged");

    assert_eq!(agent.stop().expect("stop"), Some(0), "agent exits 0 on SIGTERM");
    // Its pins lived in the bpffs it mounted in its own mount namespace
    // (`ip netns exec` remounts /sys), which goes with it: detached shortly.
    assert!(lab.exchange_becomes(sa("203.0.113.20:443"), true, Duration::from_secs(5)).unwrap(), "detached after stop");
}

#[test]
fn monitor_mode_passes_and_reports_would_deny() {
    let lab = lab();
    let agent = start(&lab, &PACK.replace("mode: enforce", "mode: monitor"));
    assert!(lab.tcp_exchange(None, sa("203.0.113.20:443"), T).unwrap(), "monitor passes tcp");
    assert!(lab.tcp_exchange(None, sa("[2001:db8:1::20]:443"), T).unwrap(), "monitor passes tcp6");
    assert!(lab.udp_exchange(sa("203.0.113.20:53"), T).unwrap(), "monitor passes udp");
    assert!(lab.ping(ip("203.0.113.20")).unwrap(), "monitor passes ping");
    let rec = record(&agent, |v| v["dst"] == "203.0.113.20" && v["proto"] == "tcp");
    assert_eq!(rec["verdict"], "would_deny");
    assert_eq!(rec["rule"], "default-deny");
    assert_eq!(rec["mode"], "monitor");
    record(&agent, |v| v["dst"] == "2001:db8:1::20" && v["verdict"] == "would_deny");
    let m = agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_rule_packets_total{rule=\"default-deny\",verdict=\"would_deny\"}") >= 4, "{m}");
    assert_eq!(metric(&m, "egress_rule_packets_total{rule=\"default-deny\",verdict=\"denied\"}"), 0);
    assert_eq!(agent.stop().expect("stop"), Some(0));
}
