//! Budgets keyed by what a workload cannot multiply, in the real programs
//! under `BPF_PROG_TEST_RUN`: a host that cycles through thousands of
//! source addresses gets one host's budget, not a fresh one per address;
//! hosts that multiply their link-layer addresses too meet everyone's cap;
//! and another host's spends go through meanwhile.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{DNS_PROGRAM, Datapath, TC_PROGRAM};
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
  - { name: allow-web, priority: 15, source: workloads, destination: { cidrs: [198.51.100.0/24] }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 100, source: workloads, destination: any, action: deny }
"#;

/// `TC_ACT_UNSPEC`: the packet goes on.
const PASS: u32 = -1i32 as u32;

fn loaded() -> Datapath {
    let pack = load_sources(&[("t.yaml".into(), PACK.into())]).expect("pack");
    let mut dp = Datapath::load().expect("datapath loads (run as root)");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    dp
}

fn run(dp: &mut Datapath, frame: &[u8]) -> u32 {
    run_out(dp, TC_PROGRAM, frame).0
}

/// Runs `program` on `frame`: its return value and the frame as it left.
fn run_out(dp: &mut Datapath, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 64];
    let prog = dp.tc_program(program).expect("program");
    let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
    let r = prog.test_run(opts).expect("test run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
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
    const CYCLED: u64 = 20_000;
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
    for i in 0..3_000u16 {
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

/// A workload learns no more addresses than its budget: answers past it
/// teach nothing (and are counted), while another workload of the same
/// host still learns.
#[test]
fn a_workload_learns_no_more_than_its_budget_of_addresses() {
    const PER_ANSWER: u64 = 32;
    let mut dp = loaded();
    dp.renew_lease().expect("lease");
    let own = limit(Spend::Learned, Level::Address).burst;
    let answers = own / PER_ANSWER + 10;
    let resolver: IpAddr = "fd00:10::2".parse().expect("address");
    let ask = |dp: &mut Datapath, workload: IpAddr, k: u64| {
        let sport = 7_000 + k as u16;
        let q = query(workload, sport, k as u16);
        let (_, out) = run_out(dp, TC_PROGRAM, &q);
        let at = q.len() - Message::query(0, "api.openai.com", 1).to_bytes().len();
        let id = u16::from_be_bytes([out[at], out[at + 1]]);
        let msg = (0..PER_ANSWER).fold(Message::response(id, "api.openai.com", 1), |m, j| {
            let n = (k * PER_ANSWER + j) as u32;
            m.a("api.openai.com", [100, 64 + (n >> 16) as u8, (n >> 8) as u8, n as u8], 300)
        });
        let answer = Spec::udp(resolver, workload, 53, sport).with_payload(msg.to_bytes()).build();
        run_out(dp, DNS_PROGRAM, &answer);
    };
    let learned_by = |dp: &Datapath, w: IpAddr| {
        let IpAddr::V6(w) = w else { unreachable!() };
        dp.learned().expect("learned").iter().filter(|(k, _)| k.workload == w.octets()).count() as u64
    };
    let stat = |dp: &Datapath| dp.dns_stats().expect("stats")[DnsStat::OverBudget as usize];
    let before = stat(&dp);
    let started = Instant::now();
    for k in 0..answers {
        ask(&mut dp, cycled(0), k);
    }
    let learned = learned_by(&dp, cycled(0));
    let secs = started.elapsed().as_secs_f64();
    let bound = refill(Spend::Learned, Level::Address, secs);
    eprintln!("{answers} answers of {PER_ANSWER} to one workload in {secs:.2} s: {learned} addresses learned");
    assert!(learned >= own && learned <= bound, "the workload learned {learned}: its budget is {bound}");
    assert_eq!(stat(&dp) - before, answers - learned / PER_ANSWER, "each answer past it counted over budget");
    ask(&mut dp, cycled(1), answers);
    assert_eq!(learned_by(&dp, cycled(1)), PER_ANSWER, "another workload of the host learns");
}

/// First fragments from one host are remembered within its budget: the
/// later fragments of those past it find no verdict and are dropped.
#[test]
fn a_host_remembers_first_fragments_within_its_budget() {
    const SENT: u16 = 3_000;
    let mut dp = loaded();
    let frag = |i: u16, offset: u16| {
        // 250 addresses: each stays within its own budget.
        let src = IpAddr::V4(std::net::Ipv4Addr::new(10, 10, 1, 1 + (i % 250) as u8));
        let mut spec = Spec::tcp(src, "198.51.100.1".parse().expect("address"), 2_000 + i, 443);
        spec.ipv4_frag = Some((offset, offset == 0, i));
        from_host(spec.build(), 7)
    };
    let started = Instant::now();
    for i in 0..SENT {
        assert_eq!(run(&mut dp, &frag(i, 0)), PASS, "first fragment {i} permitted");
    }
    let bound = refill(Spend::Fragments, Level::Host, started.elapsed().as_secs_f64());
    let followed = (0..SENT).filter(|&i| run(&mut dp, &frag(i, 3)) == PASS).count() as u64;
    eprintln!("{SENT} first fragments from one host: {followed} later fragments followed");
    assert!(followed <= bound, "{followed} remembered: the host's budget is {bound}");
    assert!(followed >= limit(Spend::Fragments, Level::Host).burst, "its burst remembered: {followed}");
    let refused = dp.budget_stats().expect("budget stats")[budget_stat_slot(Spend::Fragments, Level::Host) as usize];
    assert_eq!(refused, u64::from(SENT) - followed, "each one not remembered counted");
}

/// Found in review: a neighbour that sends with a workload's source
/// address spends its own budgets, not the workload's: its queries are
/// charged to its own MAC, and what their answers teach (to the
/// workload's address) to the host that asked.
#[test]
fn a_neighbour_forging_an_address_spends_its_own_budgets() {
    const PER_ANSWER: u64 = 32;
    let mut dp = loaded();
    dp.renew_lease().expect("lease");
    let victim = cycled(0);
    let resolver: IpAddr = "fd00:10::2".parse().expect("address");
    // A query from `host` with the victim's address, and an answer to it
    // that teaches 32 addresses; whether the query was recorded.
    let ask = |dp: &mut Datapath, host: u16, k: u64| {
        let sport = 20_000 + k as u16;
        let q = from_host(query(victim, sport, k as u16), host);
        let (_, out) = run_out(dp, TC_PROGRAM, &q);
        let at = q.len() - Message::query(0, "api.openai.com", 1).to_bytes().len();
        let id = u16::from_be_bytes([out[at], out[at + 1]]);
        // Recorded, the query left with an id of the gateway's (the same
        // as the workload's once in 65,536 draws).
        if id == k as u16 {
            return false;
        }
        let msg = (0..PER_ANSWER).fold(Message::response(id, "api.openai.com", 1), |m, j| {
            let n = (k * PER_ANSWER + j) as u32;
            m.a("api.openai.com", [100, 80 + (n >> 16) as u8, (n >> 8) as u8, n as u8], 300)
        });
        let answer = Spec::udp(resolver, victim, 53, sport).with_payload(msg.to_bytes()).build();
        run_out(dp, DNS_PROGRAM, &answer);
        true
    };
    // The neighbour (host 9) asks as the victim until a query goes
    // unrecorded: its budgets for the victim's address are spent (learning,
    // then queries). It asks faster than the query budget refills (1,000 a
    // second) however busy the machine, so the burst runs out; how many
    // queries that takes depends on the machine's speed.
    let most = limit(Spend::Queries, Level::Address).burst + 50_000;
    let mut queries = 0;
    while queries < most && ask(&mut dp, 9, queries) {
        queries += 1;
    }
    assert!(queries < most, "the neighbour's queries past its budget went unrecorded: {queries} recorded");
    let queries = queries + 1; // the unrecorded one
    let over = dp.dns_stats().expect("stats")[DnsStat::OverBudget as usize];
    let learned = limit(Spend::Learned, Level::Address).burst / PER_ANSWER;
    assert!(over >= queries - learned - 10, "the neighbour's answers past its budget taught nothing: {over}");
    // The victim (host 1) still has all of its own.
    let before = dp.learned().expect("learned").len();
    assert!(ask(&mut dp, 1, 100_000), "the victim's query is recorded");
    let taught = dp.learned().expect("learned").len() - before;
    assert_eq!(taught as u64, PER_ANSWER, "the victim's answer teaches");
}
