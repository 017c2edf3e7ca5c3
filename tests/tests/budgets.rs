//! Budgets keyed by what a workload cannot multiply, in the real programs
//! under `BPF_PROG_TEST_RUN`: a host that cycles through thousands of
//! source addresses gets one host's budget, not a fresh one per address;
//! hosts that multiply their link-layer addresses too meet everyone's cap;
//! and another host's spends go through meanwhile.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, TC_PROGRAM};
use egress_common::{DnsStat, EventStat, Level, Spend, budget_stat_slot, limit};
use egress_lab::dnsmsg::Message;
use egress_lab::packet::Spec;
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
dns: { resolvers: [10.10.0.2, "fd00:10::2"], query_filter: enforce }
smartgroups: { workloads: { cidrs: [10.10.1.0/24, "fd00:10:1::/64"] } }
webgroups: { llm: { domains: [api.openai.com] } }
rules:
  - { name: allow-llm, priority: 10, source: workloads, destination: { webgroup: llm }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 100, source: workloads, destination: any, action: deny }
"#;

fn loaded() -> Datapath {
    let pack = load_sources(&[("t.yaml".into(), PACK.into())]).expect("pack");
    let mut dp = Datapath::load().expect("datapath loads (run as root)");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    dp
}

fn run(dp: &mut Datapath, frame: &[u8]) -> u32 {
    let prog = dp.tc_program(TC_PROGRAM).expect("program");
    prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
}

/// Address `i` of the workloads' IPv6 /64.
fn cycled(i: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0xfd00_0010_0001_0000_0000_0001_0000_0000u128 + u128::from(i)))
}

/// `frame` as sent by the host with link-layer address `02:00:00:00:hi:lo`.
fn from_host(mut frame: Vec<u8>, host: u16) -> Vec<u8> {
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0x5e, (host >> 8) as u8, host as u8]);
    frame
}

/// A query for the sanctioned name from `src` port `sport`.
fn query(src: IpAddr, sport: u16, id: u16) -> Vec<u8> {
    let resolver: IpAddr = if src.is_ipv4() { "10.10.0.2" } else { "fd00:10::2" }.parse().expect("address");
    Spec::udp(src, resolver, sport, 53).with_payload(Message::query(id, "api.openai.com", 1).to_bytes()).build()
}

/// How many a budget may have let through in `secs`: its burst and its
/// rate, with half a second of slack for the test's own clock.
fn refill(kind: Spend, level: Level, secs: f64) -> u64 {
    let l = limit(kind, level);
    l.burst + l.per_s * ((secs * 1000.0) as u64 + 500) / 1000
}

#[test]
fn a_host_cycling_addresses_records_queries_within_one_hosts_budget() {
    const CYCLED: u64 = 10_000;
    let mut dp = loaded();
    let stat = |dp: &Datapath, s: DnsStat| dp.dns_stats().expect("stats")[s as usize];
    let tracked_before = stat(&dp, DnsStat::QueryTracked);
    let started = Instant::now();
    for i in 0..CYCLED {
        // Each from another address of the /64, all from one MAC.
        run(&mut dp, &from_host(query(cycled(i), 5000, i as u16), 1));
    }
    let secs = started.elapsed().as_secs_f64();
    let tracked = stat(&dp, DnsStat::QueryTracked) - tracked_before;
    let bound = refill(Spend::Queries, Level::Host, secs);
    assert!(tracked <= bound, "{tracked} of {CYCLED} queries recorded in {secs:.2} s: the host's budget is {bound}");
    assert!(tracked >= limit(Spend::Queries, Level::Host).burst, "the host's burst was recorded: {tracked}");
    let over = stat(&dp, DnsStat::OverBudget);
    eprintln!("{CYCLED} addresses of one host in {secs:.2} s: {tracked} queries recorded, {over} over budget");
    assert_eq!(tracked + over, CYCLED, "each query recorded or counted over budget");
    let refused = dp.budget_stats().expect("budget stats")[budget_stat_slot(Spend::Queries, Level::Host) as usize];
    assert_eq!(refused, over, "refused at the host's level");

    // Another host on the link is not held back by the first one's spending.
    let before = stat(&dp, DnsStat::QueryTracked);
    for i in 0..20 {
        run(&mut dp, &from_host(query(cycled(100_000 + i), 6000, i as u16), 2));
    }
    assert_eq!(stat(&dp, DnsStat::QueryTracked) - before, 20, "the other host's queries are recorded");

    // And one address alone has its own, smaller budget.
    let before = (stat(&dp, DnsStat::QueryTracked), Instant::now());
    for i in 0..1_000u16 {
        run(&mut dp, &from_host(query(cycled(200_000), 10_000 + i, i), 3));
    }
    let tracked = stat(&dp, DnsStat::QueryTracked) - before.0;
    let bound = refill(Spend::Queries, Level::Address, before.1.elapsed().as_secs_f64());
    assert!(tracked <= bound && tracked >= limit(Spend::Queries, Level::Address).burst, "{tracked} for {bound}");
}

#[test]
fn hosts_multiplying_their_macs_meet_everyones_event_cap() {
    const HOSTS: u64 = 40;
    const PER_HOST: u64 = 1_000;
    let mut dp = loaded();
    let events = |dp: &Datapath| {
        let e = dp.event_stats().expect("event stats");
        (e[EventStat::Sent as usize], e[EventStat::Suppressed as usize])
    };
    let before = events(&dp);
    let started = Instant::now();
    for h in 0..HOSTS {
        for i in 0..PER_HOST {
            // A denied new flow, from another address and another MAC.
            let src = cycled(h * PER_HOST + i);
            let frame = Spec::udp(src, "2001:db8::9".parse().expect("address"), 4000, 9).build();
            run(&mut dp, &from_host(frame, 100 + h as u16));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = events(&dp);
    let (sent, suppressed) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(sent + suppressed, HOSTS * PER_HOST, "every denied flow's event sent or held back");
    let bound = refill(Spend::Events, Level::All, secs);
    eprintln!("{HOSTS} hosts x {PER_HOST} addresses in {secs:.2} s: {sent} events sent, {suppressed} held back");
    assert!(sent <= bound, "{sent} events sent in {secs:.2} s: everyone's budget is {bound}");
    let cut = dp.budget_stats().expect("budget stats")[budget_stat_slot(Spend::Events, Level::All) as usize];
    assert!(cut >= suppressed && cut > 0, "held back by everyone's budget: {cut} of {suppressed}");
}
