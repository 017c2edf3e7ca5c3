//! End to end: a workload that takes an address no `SmartGroup` lists gains
//! nothing (`uncovered: deny`, the default), and the gateway's IPv6
//! reverse-path filter (`scripts/ipv6-rpfilter.nft`) drops sources whose
//! way back is another interface. Each denial is first shown to pass
//! without it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::lab::{Lab, NEIGHBOUR_V4, WORKLOAD_V4, WORKLOAD_V6};
use egress_lab::netns::exec;

const T: Duration = Duration::from_millis(1200);
const WEB4: &str = "203.0.113.10:443";
const WEB6: &str = "[2001:db8:1::10]:443";
/// Another address of the workload's own IPv6 /64, which no `SmartGroup` lists.
const OTHER_V6: &str = "fd00:10:1::99";

/// Only the workload's own two addresses are its `SmartGroup`; the neighbour
/// alias `NEIGHBOUR_V4` and the rest of the subnets are not.
fn pack(uncovered: &str) -> String {
    format!(
        r#"
version: 1
mode: enforce
uncovered: {uncovered}
smartgroups:
  runtime: {{ cidrs: [{WORKLOAD_V4}/32, "{WORKLOAD_V6}/128"] }}
rules:
  - {{ name: allow-web, priority: 10, source: runtime, destination: {{ cidrs: [203.0.113.10/32, "2001:db8:1::10/128"] }}, protocol: tcp, ports: [443], action: permit }}
  - {{ name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }}
"#
    )
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn lab() -> Lab {
    let lab = Lab::new(&["203.0.113.10", "2001:db8:1::10"]).expect("lab (run as root)");
    lab.tcp_echo(sa(WEB4)).expect("tcp server");
    lab.tcp_echo(sa(WEB6)).expect("tcp6 server");
    lab.workload.ip(&["addr", "add", &format!("{OTHER_V6}/64"), "dev", "wl0", "nodad"]).expect("another address");
    lab
}

#[test]
fn a_workload_outside_its_smartgroups_is_denied() {
    let lab = lab();
    let (other4, other6) = (ip(NEIGHBOUR_V4), ip(OTHER_V6));
    // Without the agent, every address of the workload gets through.
    assert!(lab.tcp_exchange(Some(other4), sa(WEB4), T).unwrap(), "lab: other IPv4 address");
    assert!(lab.tcp_exchange(Some(other6), sa(WEB6), T).unwrap(), "lab: other IPv6 address");

    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), &pack("deny")).expect("agent");
    assert!(lab.tcp_exchange(None, sa(WEB4), T).unwrap(), "its own address is permitted");
    assert!(lab.tcp_exchange(Some(ip(WORKLOAD_V6)), sa(WEB6), T).unwrap(), "its own IPv6 address too");
    // Before `uncovered`, these passed untouched (and still do with `pass`).
    assert!(!lab.tcp_exchange(Some(other4), sa(WEB4), T).unwrap(), "another IPv4 address is denied");
    assert!(!lab.tcp_exchange(Some(other6), sa(WEB6), T).unwrap(), "another IPv6 address is denied");
    let rec = agent
        .wait_record(Duration::from_secs(5), |v| v["src"] == OTHER_V6 && v["verdict"] == "denied")
        .unwrap_or_else(|| panic!("no record of the denial in {:#?}", agent.flow_records()));
    assert_eq!(rec["rule"], "uncovered-source", "{rec}");
    let m = agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_rule_flows_total{rule=\"uncovered-source\",verdict=\"denied\"}") >= 2, "{m}");
    drop(agent);

    // `uncovered: pass` lets them through untouched.
    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), &pack("pass")).expect("agent");
    assert!(lab.tcp_exchange(Some(other6), sa(WEB6), T).unwrap(), "uncovered: pass");
    assert!(!lab.tcp_exchange(Some(ip(WORKLOAD_V6)), sa("[2001:db8:1::10]:22"), T).unwrap(), "covered: judged");
    let m = agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_datapath_packets_total{reason=\"uncovered\"}") >= 1, "{m}");
}

/// The packets `scripts/ipv6-rpfilter.nft` dropped in the gateway.
fn rpfilter_drops(lab: &Lab) -> u64 {
    let out = exec(&lab.gateway.name, &["nft", "list", "table", "ip6", "egress_rpfilter"]).expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("drop")).unwrap_or_else(|| panic!("no drop rule in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "packets").expect("a counter");
    words[at + 1].parse().expect("a number")
}

#[test]
fn the_ipv6_reverse_path_filter_drops_sources_from_the_wrong_side() {
    let lab = lab();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ipv6-rpfilter.nft");
    let script = script.to_str().expect("path").to_string();
    let out = exec(&lab.gateway.name, &["nft", "-f", &script]).expect("nft");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Loading it again replaces it (the boot unit and the script both load it).
    assert!(exec(&lab.gateway.name, &["nft", "-f", &script]).expect("nft").status.success());
    // The workload's own addresses are routed back through its interface: they pass.
    assert!(lab.tcp_exchange(Some(ip(WORKLOAD_V6)), sa(WEB6), T).unwrap(), "a real source passes");
    assert!(lab.ping(ip("2001:db8:ffff::2")).unwrap(), "neighbour discovery still works");
    assert_eq!(rpfilter_drops(&lab), 0);
    // A source whose way back is the upstream side (an address of the
    // internet's, taken by the workload) is dropped before routing.
    let forged = "2001:db8:ffff::77";
    lab.workload.ip(&["addr", "add", &format!("{forged}/128"), "dev", "wl0", "nodad"]).expect("forged address");
    assert!(!lab.tcp_exchange(Some(ip(forged)), sa(WEB6), T).unwrap());
    assert!(rpfilter_drops(&lab) >= 1, "the forged SYN was dropped by the filter");
}
