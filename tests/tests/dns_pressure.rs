//! The learned-address table under pressure: bounded, least recently used
//! evicted, and the evictions counted (a small table, filled for real by
//! the DNS program under `BPF_PROG_TEST_RUN`).

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{DNS_PROGRAM, Datapath};
use egress_common::QueryKey;
use egress_lab::dnsmsg::Message;
use egress_lab::packet::Spec;
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
dns: { resolvers: [10.10.0.2] }
smartgroups: { workloads: { cidrs: [10.10.1.0/24] } }
webgroups: { web: { domains: ["**.pressure.example.com"] } }
rules:
  - { name: allow-web, priority: 10, source: workloads, destination: { webgroup: web }, protocol: tcp, ports: [443], action: permit }
  - { name: default-deny, priority: 100, source: workloads, destination: any, action: deny }
"#;

#[test]
fn a_full_table_evicts_and_counts() {
    const CAPACITY: u32 = 64;
    const ANSWERS: usize = 100;
    let pack = load_sources(&[("p.yaml".into(), PACK.into())]).expect("pack");
    let mut dp = Datapath::load_with_learned_capacity(CAPACITY).expect("datapath loads (run as root)");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    let workload: IpAddr = "10.10.1.10".parse().expect("addr");
    let resolver: IpAddr = "10.10.0.2".parse().expect("addr");
    let mapped = |a: IpAddr| match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    for i in 0..ANSWERS {
        let name = format!("n{i}.pressure.example.com");
        let txid = i as u16 + 1;
        let key = QueryKey {
            workload: mapped(workload),
            resolver: mapped(resolver),
            workload_port_be: 40_000u16.to_be(),
            txid_be: txid.to_be(),
            proto: 17,
            _pad: [0; 3],
        };
        dp.track_query(&key, &name, 1).expect("query");
        let msg = Message::response(txid, &name, 1).a(&name, [198, 18, 0, i as u8], 300).to_bytes();
        let frame = Spec::udp(resolver, workload, 53, 40_000).with_payload(msg).build();
        let prog = dp.tc_program(DNS_PROGRAM).expect("program");
        prog.test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() }).expect("run");
    }
    let p = dp.learned_pressure().expect("pressure");
    assert_eq!(p.capacity, u64::from(CAPACITY));
    assert_eq!(p.created, ANSWERS as u64, "every answer created an entry");
    assert!(p.entries > 0 && p.entries <= u64::from(CAPACITY), "bounded: {p:?}");
    assert!(p.evicted >= (ANSWERS - CAPACITY as usize) as u64, "evictions counted: {p:?}");
    assert_eq!(p.evicted, p.created - p.entries);
    // The most recent address survives; the first ones were evicted.
    let learned = dp.learned().expect("learned");
    let has = |last: u8| learned.iter().any(|(k, _)| k.addr[12..] == [198, 18, 0, last]);
    assert!(has((ANSWERS - 1) as u8), "newest kept");
    assert!(!has(0), "oldest evicted");
}
