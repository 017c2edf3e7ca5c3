//! End to end with a real resolver (dnsmasq) and real clients (the glibc
//! resolver, then a TCP connection, as applications do): addresses are
//! learned in the kernel before the answer reaches the workload, for that
//! workload only, for their TTL; the query filter refuses what no permitted
//! `WebGroup` covers.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::bpffs::Bpffs;
use egress_lab::lab::{Lab, NEIGHBOUR_V4, ping_in};
use egress_lab::neighbour::{Neighbour, mac_of};
use egress_lab::netns::within;
use egress_lab::packet::{Spec, with_l4_checksum};
use egress_lab::resolver::{Resolver, Zone};

const RESOLVER: &str = "198.51.100.53";
const RESOLVER_V6: &str = "2001:db8:53::53";
const FRESH: usize = 1000;

fn pack(query_filter: &str, min_ttl: u32, max_ttl: u32) -> String {
    format!(
        r#"
version: 1
mode: enforce
dns:
  resolvers: [{RESOLVER}, "{RESOLVER_V6}"]
  min_ttl: {min_ttl}
  max_ttl: {max_ttl}
  query_filter: {query_filter}
smartgroups:
  runtime: {{ cidrs: [10.10.1.0/24, "fd00:10:1::/64"] }}
webgroups:
  sanctioned: {{ domains: ["**.fresh.test", api.openai.com, "*.example.com", "**.deep.example.org"] }}
rules:
  - {{ name: allow-sanctioned, priority: 10, source: runtime, destination: {{ webgroup: sanctioned }}, protocol: tcp, ports: [443], action: permit }}
  - {{ name: allow-dns, priority: 20, source: runtime, destination: resolvers, ports: [53], action: permit }}
  - {{ name: deny-dns-exfil, priority: 30, source: runtime, destination: any, ports: [53], action: deny }}
  - {{ name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }}
"#
    )
}

fn fresh_v4(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, (i / 250) as u8, (i % 250) as u8 + 1))
}
fn fresh_v6(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, i as u16 + 1))
}

fn zone(ttl: u32) -> Zone {
    let mut hosts: Vec<(String, Vec<IpAddr>)> =
        (0..FRESH).map(|i| (format!("n{i:04}.fresh.test"), vec![fresh_v4(i), fresh_v6(i)])).collect();
    for (name, last) in [
        ("api.openai.com", 1u8),
        ("a.example.com", 2),
        ("a.b.example.com", 3),
        ("x.y.deep.example.org", 4),
        ("edge.cdn.net", 5),
        ("evil.example.net", 6),
        ("short.fresh.test", 7),
    ] {
        hosts.push((name.to_string(), vec![IpAddr::V4(Ipv4Addr::new(198, 18, 10, last))]));
    }
    Zone { hosts, cnames: vec![("alias.fresh.test".into(), "edge.cdn.net".into())], wildcards: vec![], ttl }
}

struct Dns {
    lab: Lab,
    resolver: Resolver,
    agent: AgentProcess,
}

fn start(pack: &str, ttl: u32) -> Dns {
    start_with(pack, ttl, &[])
}

fn start_with(pack: &str, ttl: u32, extra: &[&str]) -> Dns {
    let lab = Lab::new(&[RESOLVER, RESOLVER_V6]).expect("lab (run as root)");
    lab.any_ip("198.18.0.0/16", "2001:db8:100::/48").expect("any-ip routes");
    lab.tcp_echo("[::]:443".parse().expect("addr")).expect("server (dual stack)");
    let listen: Vec<IpAddr> = [RESOLVER, RESOLVER_V6].iter().map(|a| a.parse().expect("addr")).collect();
    let resolver = Resolver::start(&lab, &listen, &zone(ttl)).expect("dnsmasq");
    // The lab is open before the agent: an address nobody resolved is reachable.
    assert!(lab.tcp_exchange(None, SocketAddr::new(fresh_v4(999), 443), Duration::from_secs(1)).unwrap(), "lab works");
    let agent = AgentProcess::start_with(&lab, &egress_lab::agent_binary(), pack, extra).expect("agent");
    Dns { lab, resolver, agent }
}

/// Not a test: this binary, re-run inside the workload namespace with
/// `EGRESS_CLIENT_NAMES` set, is the client (so that the namespace's
/// `resolv.conf` applies to glibc).
#[test]
fn lab_client() {
    let Ok(list) = std::env::var("EGRESS_CLIENT_NAMES") else { return };
    let family = std::env::var("EGRESS_CLIENT_FAMILY").ok().and_then(|f| f.parse().ok()).unwrap_or(4);
    let names: Vec<String> = std::fs::read_to_string(list).unwrap_or_default().lines().map(str::to_string).collect();
    for record in resolve_connect_here(&names, family) {
        println!("{record}");
    }
}

fn resolve_connect_here(names: &[String], family: u8) -> Vec<serde_json::Value> {
    egress_lab::client::resolve_connect(names, 443, Duration::from_secs(1), family)
}

/// Resolves and connects from the workload; one JSON record per name.
fn resolve_connect(lab: &Lab, names: &[String], family: u8) -> Vec<serde_json::Value> {
    let list: PathBuf = std::env::temp_dir().join(format!("egress-names-{}", lab.workload.name));
    std::fs::write(&list, names.join("\n")).expect("names file");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.workload.name])
        .arg(std::env::current_exe().expect("test binary"))
        .args(["--exact", "lab_client", "--nocapture", "--test-threads", "1"])
        .env("EGRESS_CLIENT_NAMES", &list)
        .env("EGRESS_CLIENT_FAMILY", family.to_string())
        .output()
        .expect("run the client");
    let _ = std::fs::remove_file(&list);
    // libtest prints `test lab_client ... ` before the first record, on the same line.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
        .collect()
}

fn one(lab: &Lab, name: &str, family: u8) -> serde_json::Value {
    resolve_connect(lab, &[name.to_string()], family).pop().expect("a record")
}

#[test]
fn first_connection_after_a_lookup_is_never_dropped() {
    let d = start(&pack("off", 60, 3600), 300);
    let names: Vec<String> = (0..FRESH).map(|i| format!("n{i:04}.fresh.test")).collect();
    let records = resolve_connect(&d.lab, &names, 4);
    assert_eq!(records.len(), FRESH, "one record per name");
    // The firewall dropped no first connection: it would have denied it
    // (default-deny), and a denial is counted and logged.
    let m = d.agent.metrics().expect("metrics");
    let denied = metric(&m, "egress_rule_flows_total{rule=\"default-deny\",verdict=\"denied\"}");
    let failed: Vec<_> = records.iter().filter(|r| r["connected"] != true).collect();
    let first_denied = d.agent.flow_records().into_iter().find(|v| v["verdict"] == "denied");
    assert_eq!(denied, 0, "{denied} first connections denied, e.g. {first_denied:?}; failed: {failed:?}");
    // A SYN lost elsewhere (the lab's veth backlog on a loaded machine, with
    // the other tests running) is not the firewall's: such a connection
    // goes through when tried again, still with nothing denied.
    for r in &failed {
        let name = r["name"].as_str().expect("name");
        assert_eq!(one(&d.lab, name, 4)["connected"], true, "{name} connects when tried again: {r}");
    }
    assert!(failed.len() <= 2, "{} of {FRESH} first connections failed, e.g. {:?}", failed.len(), failed.first());
    let m = d.agent.metrics().expect("metrics");
    assert_eq!(metric(&m, "egress_rule_flows_total{rule=\"default-deny\",verdict=\"denied\"}"), 0, "{m}");
    // A dropped first SYN would cost the 1 s retransmission timeout.
    let connected = records.iter().filter(|r| r["connected"] == true);
    let slowest = connected.filter_map(|r| r["connect_ms"].as_f64()).fold(0.0, f64::max);
    assert!(slowest < 800.0, "slowest first connection took {slowest:.1} ms");

    // The flow log names what the workload resolved.
    let rec = d
        .agent
        .wait_record(Duration::from_secs(3), |v| v["dst"] == fresh_v4(0).to_string() && v["rule"] == "allow-sanctioned")
        .expect("a record of the first connection");
    assert_eq!(rec["fqdn"], "n0000.fresh.test", "{rec}");
    // And what each answer taught, as records of their own.
    let dns = d
        .agent
        .wait_record(Duration::from_secs(3), |v| {
            v["type"] == "dns" && v["name"] == "n0000.fresh.test" && v["addresses"][0] == fresh_v4(0).to_string()
        })
        .expect("a DNS record of the answer");
    assert_eq!(dns["workload"], "10.10.1.10", "{dns}");
    assert_eq!(dns["ttl"], 300, "{dns}");
    assert_eq!(dns["addresses_total"], 1, "{dns}");
    assert_eq!(dns["webgroups"], serde_json::json!(["sanctioned"]), "{dns}");
    assert!(dns["ts"].as_str().is_some_and(|t| humantime::parse_rfc3339(t).is_ok()), "{dns}");

    // Learned for the workload that asked, not for its neighbour.
    let learned = SocketAddr::new(fresh_v4(0), 443);
    let n0 = "n0000.fresh.test";
    assert!(d.lab.tls_exchange(None, learned, n0, Duration::from_secs(1)).unwrap(), "asker reaches it");
    let neighbour: IpAddr = NEIGHBOUR_V4.parse().expect("addr");
    assert!(!d.lab.tls_exchange(Some(neighbour), learned, n0, Duration::from_secs(1)).unwrap(), "neighbour denied");
    // Never resolved: denied.
    assert!(!d.lab.tcp_exchange(None, SocketAddr::new(fresh_v4(999 + 1), 443), Duration::from_secs(1)).unwrap());

    // IPv6: asked over IPv6, so learned for the workload's IPv6 address.
    d.resolver.use_nameserver(RESOLVER_V6.parse().expect("addr")).expect("resolv.conf");
    for i in 0..5 {
        let r = one(&d.lab, &format!("n{i:04}.fresh.test"), 6);
        assert_eq!(r["connected"], true, "ipv6: {r}");
        assert_eq!(r["addr"], fresh_v6(i).to_string());
    }
    d.resolver.use_nameserver(RESOLVER.parse().expect("addr")).expect("resolv.conf");
    // Wildcard depth, case, CNAME chains.
    assert_eq!(one(&d.lab, "api.openai.com", 4)["connected"], true, "exact");
    assert_eq!(one(&d.lab, "A.Example.COM", 4)["connected"], true, "*. one label, any case");
    let deeper = one(&d.lab, "a.b.example.com", 4);
    assert_eq!(deeper["resolved"], true);
    assert_eq!(deeper["connected"], false, "*. does not cover two labels");
    assert_eq!(one(&d.lab, "x.y.deep.example.org", 4)["connected"], true, "**. any depth");
    let alias = one(&d.lab, "alias.fresh.test", 4);
    assert_eq!(alias["addr"], "198.18.10.5");
    assert_eq!(alias["connected"], true, "CNAME chain");
    let evil = one(&d.lab, "evil.example.net", 4);
    assert_eq!(evil["resolved"], true, "query filter off: resolves");
    assert_eq!(evil["connected"], false, "but no WebGroup covers it");

    // `egress-agent learned` lists them from the live maps.
    let out = Command::new(egress_lab::agent_binary())
        .args(["learned", "--pid", &d.agent.pid().to_string()])
        .output()
        .expect("egress-agent learned");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let line = listing.lines().find(|l| l.contains("n0000.fresh.test")).unwrap_or_else(|| panic!("{listing}"));
    assert!(line.contains("10.10.1.10") && line.contains("198.18.0.1") && line.contains("sanctioned"), "{line}");
    let alias = listing.lines().find(|l| l.contains("198.18.10.5")).unwrap_or_else(|| panic!("{listing}"));
    assert!(alias.contains("alias.fresh.test"), "learned under the question's name: {alias}");

    assert!(listing.contains("0 evicted"), "{listing}");

    let m = d.agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_dns_events_total{event=\"address_learned\"}") >= FRESH as u64, "{m}");
    assert!(metric(&m, "egress_learned_addresses") >= FRESH as u64, "{m}");
    assert_eq!(metric(&m, "egress_learned_capacity"), u64::from(egress_common::MAX_LEARNED));
    assert_eq!(metric(&m, "egress_learned_evictions_total"), 0);
    assert!(metric(&m, "egress_dns_events_total{event=\"query_tracked\"}") >= 2 * FRESH as u64, "{m}");
}

#[test]
fn expired_addresses_deny_new_flows_but_keep_established_ones() {
    // Learned for min_ttl = 3 s (the zone says 1): time enough to open the
    // held connection from this process on a loaded machine.
    let d = start(&pack("off", 3, 4), 1);
    assert_eq!(one(&d.lab, "short.fresh.test", 4)["connected"], true);
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 10, 7)), 443);
    let mut held = within(&d.lab.workload.name, move || TcpStream::connect_timeout(&target, Duration::from_secs(1)))
        .expect("netns")
        .expect("connects while learned");
    held.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    // The flow named its host while the address was learned.
    let hello = egress_lab::hello::client_hello("short.fresh.test", 0);
    held.write_all(&hello).expect("hello");
    let mut echo = vec![0u8; hello.len()];
    held.read_exact(&mut echo).expect("hello echoed while learned");
    std::thread::sleep(Duration::from_millis(5500));
    assert!(!d.lab.tcp_exchange(None, target, Duration::from_secs(1)).unwrap(), "expired: new flow denied");
    held.write_all(b"still here").expect("write on the established flow");
    let mut buf = [0u8; 10];
    held.read_exact(&mut buf).expect("echo on the established flow");
    assert_eq!(&buf, b"still here");
}

/// A standing flow keeps its verdict whatever its neighbours do: while a
/// neighbour floods two million new flows (enough to replace every way of
/// the flow cache many times over), a permitted connection sits idle past
/// its address's TTL; then it carries on with no packet lost, and the
/// workload opened new flows all along.
#[test]
fn a_standing_flow_outlives_a_flood_of_new_ones() {
    const FLOOD: u64 = 2_000_000;
    let d = start(&pack("off", 3, 4), 1);
    let neighbour = Neighbour::new(&d.lab, "10.10.1.20", "fd00:10:1::20").expect("neighbour");
    assert_eq!(one(&d.lab, "short.fresh.test", 4)["connected"], true);
    let learned = std::time::Instant::now();
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 10, 7)), 443);
    let mut held = within(&d.lab.workload.name, move || TcpStream::connect_timeout(&target, Duration::from_secs(1)))
        .expect("netns")
        .expect("connects while learned");
    let sport = held.local_addr().expect("local address").port();
    held.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut exchange = |text: &[u8]| {
        held.write_all(text).expect("write on the standing flow");
        let mut echo = vec![0u8; text.len()];
        held.read_exact(&mut echo).map(|()| echo == text)
    };
    let hello = egress_lab::hello::client_hello("short.fresh.test", 0);
    assert!(exchange(&hello).expect("hello echoed"), "hello echoed");
    // A stream in use: a second segment a while later.
    std::thread::sleep(Duration::from_millis(1300));
    assert!(exchange(b"first tokens").expect("echo"), "echo");

    // The flood: payload-less SYNs from the neighbour's own MAC, each a new
    // flow (denied by `default-deny`, and cached like any other: the
    // gateway knows the neighbour's address, so none is provisional).
    let _ = ping_in(&d.lab.gateway, "10.10.1.20".parse().expect("addr"));
    let entry = egress_lab::netns::exec(&d.lab.gateway.name, &["ip", "neigh", "show", "10.10.1.20"]).expect("ip neigh");
    assert!(String::from_utf8_lossy(&entry.stdout).contains("lladdr"), "the gateway resolved the neighbour");
    let (gateway_mac, nb_mac) =
        (mac_of(&d.lab.gateway, "lan0").expect("gateway MAC"), mac_of(&neighbour.ns, "nb0").expect("MAC"));
    let flooder = std::thread::spawn(move || {
        let sent = neighbour.flood(FLOOD, move |i| {
            let dst = Ipv4Addr::from(0x6440_0000u32 + (i / 50_000) as u32);
            let mut spec =
                Spec::tcp("10.10.1.20".parse().expect("addr"), IpAddr::V4(dst), 10_000 + (i % 50_000) as u16, 443);
            spec.payload = 0;
            let mut bytes = spec.build();
            bytes[..6].copy_from_slice(&gateway_mac);
            bytes[6..12].copy_from_slice(&nb_mac);
            bytes
        });
        (neighbour, sent)
    });
    // Meanwhile the workload opens new flows as it always does.
    let names: Vec<String> = (10..30).map(|i| format!("n{i:04}.fresh.test")).collect();
    let during = resolve_connect(&d.lab, &names, 4);
    let (_neighbour, sent) = flooder.join().expect("flooder");
    assert!(sent.expect("flood") >= FLOOD * 9 / 10, "the flood was sent");
    let refused: Vec<_> = during.iter().filter(|r| r["connected"] != true).collect();
    assert_eq!(during.len(), names.len(), "{during:?}");
    assert!(refused.is_empty(), "new flows during the flood: {refused:?}");
    let m = d.agent.metrics().expect("metrics");
    let judged = metric(&m, "egress_rule_flows_total{rule=\"default-deny\",verdict=\"denied\"}");
    assert!(judged >= FLOOD * 9 / 10, "the flood's flows were judged: {judged}");

    // Past the TTL (learned for at most 4 s), the standing flow carries on.
    std::thread::sleep(Duration::from_millis(5500).saturating_sub(learned.elapsed()));
    assert!(!d.lab.tcp_exchange(None, target, Duration::from_secs(1)).unwrap(), "expired: a new flow is denied");
    assert!(exchange(b"more tokens").expect("echo after the flood"), "echo after the flood");
    let lost: Vec<_> =
        d.agent.flow_records().into_iter().filter(|v| v["sport"] == sport && v["verdict"] == "denied").collect();
    assert!(lost.is_empty(), "no packet of the standing flow denied: {lost:?}");
}

/// With the agent dead (SIGKILL) and the datapath pinned, names fail
/// closed: addresses learned before keep working until their TTL, but once
/// the agent's lease has run out new lookups are refused (REFUSED at once,
/// sanctioned names too) and nothing new is learned; unresolved addresses
/// stay denied; `status` says the agent is down.
#[test]
fn with_the_agent_down_names_fail_closed() {
    const TTL: u64 = 15;
    let pins = Bpffs::new("dns-down").expect("bpffs");
    let Dns { lab, resolver: _resolver, agent } =
        start_with(&pack("enforce", TTL as u32, TTL as u32), 1, &["--pin-dir", &pins.arg()]);
    let learned_at = std::time::Instant::now();
    assert_eq!(one(&lab, "short.fresh.test", 4)["connected"], true, "learned while the agent runs");
    // Learned between `learned_at` and now.
    let answered_by = std::time::Instant::now();
    let learned = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 10, 7)), 443);
    agent.kill().expect("SIGKILL");
    let short = "short.fresh.test";
    assert!(
        lab.tls_exchange(None, learned, short, Duration::from_secs(1)).unwrap(),
        "learned address works with no agent"
    );
    // The lease was renewed at most a second before the kill.
    std::thread::sleep(Duration::from_nanos(egress_common::LEASE_NS) + Duration::from_millis(500));
    assert!(learned_at.elapsed() < Duration::from_secs(TTL - 2), "the test outran the learned TTL");
    assert!(
        lab.tls_exchange(None, learned, short, Duration::from_secs(1)).unwrap(),
        "learned address works until its TTL"
    );
    for name in ["n0001.fresh.test", "short.fresh.test", "evil.example.net"] {
        let r = one(&lab, name, 4);
        assert_eq!(r["resolved"], false, "lookups fail closed with the agent down: {r}");
        assert!(r["resolve_ms"].as_f64().is_some_and(|ms| ms < 500.0), "refused at once, not a timeout: {r}");
    }
    assert!(
        !lab.tcp_exchange(None, SocketAddr::new(fresh_v4(1), 443), Duration::from_secs(1)).unwrap(),
        "not learned: denied"
    );
    let bin = &egress_lab::agent_binary();
    let out = Command::new(bin).args(["status", "--pin-dir", &pins.arg()]).output().expect("status");
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("agent: down") && status.contains("fails closed"), "{status}");
    assert!(out.status.success(), "status answers with the agent down");
    let live = Command::new(bin).args(["status", "--live", "--pin-dir", &pins.arg()]).output().expect("status");
    assert!(!live.status.success(), "the liveness probe fails with the agent down");
    std::thread::sleep(Duration::from_millis(TTL * 1000 + 1500).saturating_sub(answered_by.elapsed()));
    assert!(!lab.tls_exchange(None, learned, short, Duration::from_secs(1)).unwrap(), "expired with no agent: denied");
    let out = Command::new(bin).args(["detach", "--pin-dir", &pins.arg()]).output().expect("detach");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn query_filter_refuses_at_once_or_reports() {
    let d = start(&pack("enforce", 60, 3600), 300);
    // The query never reaches the resolver; the workload gets REFUSED at
    // once instead of waiting for its 1 s timeout.
    let evil = one(&d.lab, "evil.example.net", 4);
    assert_eq!(evil["resolved"], false, "refused: {evil}");
    assert!(evil["resolve_ms"].as_f64().is_some_and(|ms| ms < 500.0), "an answer, not a timeout: {evil}");
    assert_eq!(one(&d.lab, "api.openai.com", 4)["connected"], true, "sanctioned names still work");
    let m = d.agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_dns_events_total{event=\"query_refused\"}") >= 1, "{m}");
    // glibc over TCP (`use-vc`) sends A and AAAA in one segment: each is
    // judged and recorded, the lookup works with the filter enforcing, and
    // the answers teach (issue 14, hole 1; refused before).
    d.resolver.use_nameserver_with(RESOLVER.parse().expect("addr"), "use-vc").expect("resolv.conf");
    let tracked = metric(&m, "egress_dns_events_total{event=\"query_tracked\"}");
    let over_tcp = one(&d.lab, "n0002.fresh.test", 4);
    assert_eq!(over_tcp["resolved"], true, "A and AAAA over TCP, one segment: {over_tcp}");
    assert_eq!(over_tcp["connected"], true, "and the address was learned: {over_tcp}");
    let m = d.agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_dns_events_total{event=\"query_tracked\"}") >= tracked + 2, "{m}");
    drop(d);

    let d = start(&pack("monitor", 60, 3600), 300);
    assert_eq!(one(&d.lab, "evil.example.net", 4)["resolved"], true, "monitor forwards");
    let m = d.agent.metrics().expect("metrics");
    assert!(metric(&m, "egress_dns_events_total{event=\"query_would_refuse\"}") >= 1, "{m}");
    assert_eq!(metric(&m, "egress_dns_events_total{event=\"query_refused\"}"), 0);
}

/// A tunnel through an allowed zone, as a workload's own DNS client sends
/// it (one hex chunk per name under `**.fresh.test`): the agent's guard
/// refuses the zone to that workload from the 8th distinct name, counts it
/// and writes a `dns_tunnel_suspected` record naming the zone and a sample;
/// the workload's exact names still resolve (issue 14, tunnel guard).
#[test]
fn a_dns_tunnel_is_refused_and_reported() {
    let pack =
        pack("enforce", 60, 3600).replace("query_filter: enforce", "query_filter: enforce\n  tunnel_guard: enforce");
    let d = start(&pack, 300);
    let resolver: SocketAddr = format!("{RESOLVER}:53").parse().expect("addr");
    within(&d.lab.workload.name, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("socket");
        sock.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let mut buf = [0u8; 512];
        for i in 0..12u16 {
            let chunk = format!(
                "{:016x}{:016x}",
                u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                0xdead_beef_u64 + u64::from(i)
            );
            let name = format!("{chunk}.{i}.x.fresh.test");
            let query = egress_lab::dnsmsg::Message::query(0x4000 + i, &name, 1).to_bytes();
            sock.send_to(&query, resolver).expect("send");
            let _ = sock.recv(&mut buf); // an answer, REFUSED or not, or none
        }
    })
    .expect("netns");
    let rec = d
        .agent
        .wait_record(Duration::from_secs(3), |v| v["type"] == "dns_tunnel_suspected")
        .expect("a dns_tunnel_suspected record");
    assert_eq!(rec["zone"], "**.fresh.test", "{rec}");
    assert_eq!(rec["workload"], egress_lab::lab::WORKLOAD_V4.to_string(), "{rec}");
    assert_eq!(rec["action"], "refused", "{rec}");
    assert!(rec["sample_names"][0].as_str().is_some_and(|n| n.ends_with(".x.fresh.test")), "{rec}");
    let m = d.agent.metrics().expect("metrics");
    assert_eq!(metric(&m, "egress_dns_events_total{event=\"tunnel_suspected\"}"), 1, "{m}");
    assert!(metric(&m, "egress_dns_events_total{event=\"tunnel_refused\"}") >= 5, "{m}");
    assert_eq!(one(&d.lab, "api.openai.com", 4)["connected"], true, "an exact name is not in the zone");
}

/// Issue 14, item 7 (on the code before it, the IPv6 connection met
/// `default-deny`): a dual-stack host's addresses share what either
/// learned, and nobody else's do.
#[test]
fn a_dual_stack_host_shares_what_either_address_learned() {
    let d = start(&pack("enforce", 60, 3600), 300);
    let neighbour = Neighbour::new(&d.lab, "10.10.1.20", "fd00:10:1::20").expect("neighbour");
    // Asked over IPv4 (the workload's resolver is an IPv4 address), answered
    // AAAA: the connection from the workload's IPv6 address goes through.
    let r = one(&d.lab, "n0001.fresh.test", 6);
    assert_eq!(r["addr"], fresh_v6(1).to_string(), "{r}");
    assert_eq!(r["connected"], true, "asked over IPv4, connected over IPv6: {r}");
    // The same when the gateway has no neighbour entry for the IPv6 source
    // yet (a host that took the gateway's MAC from a router advertisement
    // never asked for it): the SYN passes uncached, the gateway resolves the
    // source to send the SYN-ACK, and the handshake's last segment is
    // judged with its entry. A dropped SYN would cost a 1 s retransmission.
    d.lab.gateway.ip(&["-6", "neigh", "flush", "dev", "lan0"]).expect("flush the gateway's IPv6 neighbours");
    let r = one(&d.lab, "n0002.fresh.test", 6);
    assert_eq!(r["connected"], true, "source not yet resolved by the gateway: {r}");
    assert!(r["connect_ms"].as_f64().is_some_and(|ms| ms < 800.0), "first SYN passed: {r}");
    // And the other way: asked over IPv6, connected over IPv4.
    d.resolver.use_nameserver(RESOLVER_V6.parse().expect("addr")).expect("resolv.conf");
    let r = one(&d.lab, "n0003.fresh.test", 4);
    assert_eq!(r["addr"], fresh_v4(3).to_string(), "{r}");
    assert_eq!(r["connected"], true, "asked over IPv6, connected over IPv4: {r}");
    d.resolver.use_nameserver(RESOLVER.parse().expect("addr")).expect("resolv.conf");

    // A neighbour with a link-layer address of its own reaches none of it,
    // in either family.
    let second = Duration::from_secs(1);
    assert!(!neighbour.tcp_exchange(SocketAddr::new(fresh_v6(1), 443), second).unwrap(), "neighbour, IPv6");
    assert!(!neighbour.tcp_exchange(SocketAddr::new(fresh_v4(3), 443), second).unwrap(), "neighbour, IPv4");
    // Nor by putting the workload's MAC on its frames: the gateway's
    // neighbour entry for its address names its own.
    let workload_mac = mac_of(&d.lab.workload, "wl0").expect("workload MAC");
    let gateway_mac = mac_of(&d.lab.gateway, "lan0").expect("gateway MAC");
    let src: IpAddr = "fd00:10:1::20".parse().expect("addr");
    let mut frame = Spec::tcp(src, fresh_v6(1), 40_001, 443);
    frame.payload = 0;
    let mut bytes = frame.build();
    bytes[..6].copy_from_slice(&gateway_mac);
    bytes[6..12].copy_from_slice(&workload_mac);
    neighbour.send_frame(with_l4_checksum(bytes)).expect("send the forged SYN");
    // (Were the SYN let through, the neighbour's kernel would answer the
    // SYN-ACK with a reset from its own MAC, denied: judge the SYN alone.)
    let forged = |v: &serde_json::Value| v["src"] == "fd00:10:1::20" && v["sport"] == 40_001;
    let denied = d.agent.wait_record(Duration::from_secs(3), |v| forged(v) && v["verdict"] == "denied");
    assert!(denied.is_some(), "the forged SYN is denied: {:?}", d.agent.flow_records());
    let allowed: Vec<_> =
        d.agent.flow_records().into_iter().filter(|v| forged(v) && v["verdict"] != "denied").collect();
    assert!(allowed.is_empty(), "the forged SYN is not let through: {allowed:?}");
    // The workload itself still connects.
    assert_eq!(one(&d.lab, "n0004.fresh.test", 6)["connected"], true);
}
