//! What the agent reports, checked against what the test sent: counters
//! move exactly as many times as packets and flows, every flow-log field is
//! right, and a flood of denied flows leaves permitted traffic flowing, the
//! agent responsive and every held-back event counted.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::lab::Lab;
use egress_lab::neighbour::{Neighbour, mac_of};
use egress_lab::netns::within;
use egress_lab::packet::Spec;

const T: Duration = Duration::from_millis(1500);

const PACK: &str = r"
version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
rules:
  - { name: allow-web, priority: 10, source: runtime, destination: { cidrs: [203.0.113.10/32] }, protocol: tcp, ports: [443], action: permit, log: true }
  - { name: allow-echo, priority: 20, source: runtime, destination: { cidrs: [203.0.113.10/32] }, protocol: udp, ports: [7777], action: permit, log: false }
  - { name: deny-sink, priority: 30, source: runtime, destination: { cidrs: [203.0.113.20/32] }, protocol: udp, action: deny, log: false }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
";

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

/// Sends `count` UDP datagrams of `payload` bytes from one socket in the
/// workload to `dst`, or to `dst`'s port + i for `spread`.
fn send_udp(lab: &Lab, dst: SocketAddr, count: usize, payload: usize, spread: bool) {
    within(&lab.workload.name, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let buf = vec![0x5a; payload];
        for i in 0..count {
            let mut to = dst;
            if spread {
                to.set_port(1 + (i % 65_000) as u16);
            }
            let _ = sock.send_to(&buf, to);
        }
        // Take the echoes: a closed port would answer them with ICMP
        // port-unreachable, which is traffic of its own.
        let _ = sock.set_read_timeout(Some(Duration::from_millis(300)));
        let mut back = vec![0u8; payload + 1];
        while sock.recv_from(&mut back).is_ok() {}
    })
    .expect("netns");
}

fn scrape(agent: &AgentProcess) -> String {
    agent.metrics().expect("metrics")
}

#[test]
fn counters_and_records_match_what_was_sent() {
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    lab.tcp_echo(sa("203.0.113.10:443")).expect("server");
    lab.udp_echo(sa("203.0.113.10:7777")).expect("server");
    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), PACK).expect("agent");
    let before = scrape(&agent);

    // 25 datagrams of 100 bytes on one flow each way: one permitted, one denied.
    send_udp(&lab, sa("203.0.113.10:7777"), 25, 100, false);
    send_udp(&lab, sa("203.0.113.20:9999"), 25, 100, false);
    // 3 permitted TCP flows.
    for _ in 0..3 {
        assert!(lab.tcp_exchange(None, sa("203.0.113.10:443"), T).unwrap());
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(&agent);
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    let frame = 14 + 20 + 8 + 100; // Ethernet, IPv4, UDP, payload
    assert_eq!(delta("egress_rule_packets_total{rule=\"allow-echo\",verdict=\"allowed\"}"), 25);
    assert_eq!(delta("egress_rule_flows_total{rule=\"allow-echo\",verdict=\"allowed\"}"), 1);
    assert_eq!(delta("egress_rule_bytes_total{rule=\"allow-echo\",verdict=\"allowed\"}"), 25 * frame);
    assert_eq!(delta("egress_rule_packets_total{rule=\"deny-sink\",verdict=\"denied\"}"), 25);
    assert_eq!(delta("egress_rule_flows_total{rule=\"deny-sink\",verdict=\"denied\"}"), 1);
    assert_eq!(delta("egress_rule_bytes_total{rule=\"deny-sink\",verdict=\"denied\"}"), 25 * frame);
    assert_eq!(delta("egress_rule_flows_total{rule=\"allow-web\",verdict=\"allowed\"}"), 3);
    // Events: 3 logged flows and 1 denied flow (whose rule does not log: denies always report).
    assert_eq!(delta("egress_flow_events_total{outcome=\"sent\"}"), 4, "{:#?}", agent.flow_records());
    assert!(after.contains("egress_build{version=\""), "{after}");
    assert!(after.contains("egress_pack{hash=\""), "{after}");

    let denied = agent
        .wait_record(Duration::from_secs(3), |v| v["rule"] == "deny-sink")
        .expect("a record for the denied flow, though its rule does not log");
    let fields = [
        ("type", "flow"),
        ("iface", "lan0"),
        ("src", "10.10.1.10"),
        ("dst", "203.0.113.20"),
        ("proto", "udp"),
        ("action", "deny"),
        ("mode", "enforce"),
        ("verdict", "denied"),
        ("reason", "rule"),
    ];
    for (k, v) in fields {
        assert_eq!(denied[k], v, "{k} in {denied}");
    }
    assert_eq!(denied["dport"], 9999);
    assert!(denied["sport"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(denied["priority"], 30);
    assert!(denied["pack"].as_u64().is_some_and(|g| g >= 1));
    assert!(denied["fqdn"].is_null(), "no name was resolved: {denied}");
    let ts = denied["ts"].as_str().expect("ts");
    assert!(humantime::parse_rfc3339(ts).is_ok(), "RFC 3339: {ts}");
    let logged = || agent.flow_records().into_iter().filter(|v| v["rule"] == "allow-web").count();
    // The records are written as the agent drains the ring: wait for all three.
    let deadline = Instant::now() + Duration::from_secs(3);
    while logged() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(logged(), 3, "one record per logged flow");
    assert!(
        agent.flow_records().iter().all(|v| v["rule"] != "allow-echo"),
        "no record for a permitted flow of a rule that does not log"
    );
}

#[test]
fn a_flood_of_denied_flows_is_counted_and_starves_nothing() {
    const FLOOD: usize = 100_000;
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    lab.tcp_echo(sa("203.0.113.10:443")).expect("server");
    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), PACK).expect("agent");
    let before = scrape(&agent);
    let flood = {
        let lab_ns = lab.workload.name.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            within(&lab_ns, move || {
                let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                for i in 0..FLOOD {
                    // A new flow each time: another destination port (and address).
                    let to = SocketAddr::from(([203, 0, 113, 20 + (i / 65_000) as u8], 1 + (i % 65_000) as u16));
                    let _ = sock.send_to(b"flood", to);
                }
            })
            .expect("netns");
            started.elapsed()
        })
    };
    // Permitted traffic keeps flowing during the flood, and the agent answers.
    let mut exchanges = 0;
    while !flood.is_finished() {
        // Not starved: generous bounds, this is no speed target (the flood
        // holds one of two cores).
        assert!(
            lab.tcp_exchange(None, sa("203.0.113.10:443"), Duration::from_secs(5)).unwrap(),
            "permitted flow during the flood"
        );
        exchanges += 1;
        let t = Instant::now();
        scrape(&agent);
        assert!(t.elapsed() < Duration::from_secs(5), "metrics answered in {:?}", t.elapsed());
    }
    let took = flood.join().expect("flood");
    std::thread::sleep(Duration::from_millis(500));
    let after = scrape(&agent);
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    let denied_flows = delta("egress_rule_flows_total{rule=\"deny-sink\",verdict=\"denied\"}")
        + delta("egress_rule_flows_total{rule=\"default-deny\",verdict=\"denied\"}");
    assert_eq!(denied_flows, FLOOD as u64, "every flood packet was a new denied flow");
    let (sent, lost, suppressed) = (
        delta("egress_flow_events_total{outcome=\"sent\"}"),
        delta("egress_flow_events_total{outcome=\"lost\"}"),
        delta("egress_flow_events_total{outcome=\"suppressed\"}"),
    );
    // Every denied flow's event is accounted for: sent, lost or held back
    // (plus the permitted exchanges' logged flows, which were sent).
    assert_eq!(sent + lost + suppressed, FLOOD as u64 + exchanges, "sent {sent} lost {lost} suppressed {suppressed}");
    assert!(suppressed > FLOOD as u64 / 2, "the source's budget held most back: {suppressed}");
    let own = egress_common::limit(egress_common::Spend::Events, egress_common::Level::Address);
    let budget = own.burst + own.per_s * (took.as_millis() as u64 / 1000 + 2);
    let records = agent.flow_records();
    let flood_records = records.iter().filter(|v| v["verdict"] == "denied").count() as u64;
    assert!(flood_records <= budget, "{flood_records} records for a budget of {budget} in {took:?}");
    eprintln!(
        "flood of {FLOOD} in {took:?}: {exchanges} permitted exchanges, events sent {sent} lost {lost} suppressed {suppressed}"
    );
    // The loss is reported in the flow log too, within a summary period. A
    // periodic summary may fall in the middle of the flood and count only
    // part of it; the next one (at most one period later) covers all of it.
    let covers_flood = |v: &serde_json::Value| {
        v["type"] == "summary" && v["events_suppressed"].as_u64().is_some_and(|n| n >= suppressed)
    };
    let summary = agent.wait_record(Duration::from_secs(12), covers_flood);
    assert!(
        summary.is_some(),
        "no summary counting all {suppressed} held-back events within a period; summaries: {:?}",
        agent.flow_records().into_iter().filter(|v| v["type"] == "summary").collect::<Vec<_>>()
    );
}

/// A host that cycles through 10,000 source addresses of its /64 (frames
/// written whole, from its own MAC) gets one host's event budget, not one
/// per address: it cannot fill the flow log with itself, and the
/// workload's denied flow, sent meanwhile, is logged.
#[test]
fn a_host_cycling_10000_addresses_gets_one_hosts_event_budget() {
    const CYCLED: u64 = 10_000;
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20"]).expect("lab (run as root)");
    let agent = AgentProcess::start(&lab, &egress_lab::agent_binary(), PACK).expect("agent");
    let neighbour = Neighbour::new(&lab, "10.10.1.20", "fd00:10:1::20").expect("neighbour");
    let (gateway_mac, nb_mac) =
        (mac_of(&lab.gateway, "lan0").expect("gateway MAC"), mac_of(&neighbour.ns, "nb0").expect("MAC"));
    let cycled = |i: u64| Ipv6Addr::from(0xfd00_0010_0001_0000_0000_0001_0000_0000u128 + u128::from(i));
    let started = Instant::now();
    let sent = neighbour
        .flood(CYCLED, move |i| {
            // Uncovered sources: denied and reported (`uncovered-source`).
            let mut frame = Spec::udp(IpAddr::V6(cycled(i)), "2001:db8::20".parse().expect("address"), 4000, 9).build();
            frame[..6].copy_from_slice(&gateway_mac);
            frame[6..12].copy_from_slice(&nb_mac);
            frame
        })
        .expect("flood");
    let took = started.elapsed();
    assert_eq!(sent, CYCLED, "every frame sent");
    // The workload's own denied flow, after the flood, is logged.
    send_udp(&lab, sa("203.0.113.20:9999"), 1, 16, false);
    let logged = agent.wait_record(Duration::from_secs(5), |v| v["src"] == "10.10.1.10" && v["verdict"] == "denied");
    assert!(logged.is_some(), "the workload's denied flow is in the flow log");
    std::thread::sleep(Duration::from_millis(500));
    let from_cycler = agent
        .flow_records()
        .iter()
        .filter(|v| v["src"].as_str().is_some_and(|s| s.starts_with("fd00:10:1::1:")))
        .count() as u64;
    let host = egress_common::limit(egress_common::Spend::Events, egress_common::Level::Host);
    let budget = host.burst + host.per_s * (took.as_millis() as u64 / 1000 + 2);
    eprintln!("{CYCLED} addresses of one host in {took:?}: {from_cycler} records");
    assert!(from_cycler >= 100, "the cycler's flows were reported: {from_cycler}");
    assert!(
        from_cycler <= budget,
        "{from_cycler} records from one host cycling {CYCLED} addresses: its budget is {budget}"
    );
    let m = scrape(&agent);
    let held = metric(&m, "egress_budget_refused_total{budget=\"events\",level=\"host\"}");
    assert!(held >= CYCLED - budget, "held back at the host's level: {held}");
}
