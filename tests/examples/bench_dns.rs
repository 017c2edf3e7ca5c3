//! `cargo xtask bench dns`: what learning from one DNS answer costs in the
//! kernel, by answer size, with and without name compression.
//!
//! For each case an outstanding query is planted, then the answer frame is
//! run once through the TC egress program with `BPF_PROG_TEST_RUN` (each
//! answer consumes its query, so runs are single); the kernel's duration of
//! each run is collected and the median reported, next to the empty program
//! measured the same way in the same run. Every answer is checked to teach
//! all of its addresses.
//!
//! Then the query path: a query leaving a workload for the resolver, run
//! through the TC ingress program (the judge, the tail call into the query
//! program, the gateway's id drawn and recorded, the query filter's match
//! of the name and the tunnel guard, both enforcing), each from a new
//! source port: a name by exact pattern, a name under a `**.` zone, and a
//! random-looking name under it (counted by the guard; workloads rotate so
//! that none reaches its threshold). Every query is checked forwarded.
//! Writes `target/bench/dns.json`: answers as `{records, compressed,
//! answer_ns, baseline_ns}`, queries as `{query, query_ns, baseline_ns}`.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{DNS_PROGRAM, Datapath, EMPTY_PROGRAM, TC_PROGRAM};
use egress_common::{DnsStat, QueryKey};
use egress_lab::dnsmsg::Message;
use egress_lab::packet::Spec;
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
dns: { resolvers: [10.10.0.2], query_filter: enforce, tunnel_guard: enforce }
smartgroups: { workloads: { cidrs: [10.10.0.0/16] } }
webgroups: { bench: { domains: ["**.bench.example.com", api.openai.com] } }
rules:
  - { name: allow-bench, priority: 10, source: workloads, destination: { webgroup: bench }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 100, source: workloads, destination: any, action: deny }
"#;

const NAME: &str = "api.bench.example.com";
const RUNS: usize = 3000;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn run_once(dp: &mut Datapath, program: &str, frame: &[u8]) -> u64 {
    let prog = dp.tc_program(program).expect("program");
    let r = prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run");
    r.duration.as_nanos() as u64
}

fn main() {
    let pack = load_sources(&[("bench.yaml".into(), PACK.into())]).expect("pack");
    let mut dp = Datapath::load().expect("datapath loads (run as root)");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    let workload: IpAddr = "10.10.1.10".parse().expect("addr");
    let resolver: IpAddr = "10.10.0.2".parse().expect("addr");
    let key = |txid: u16| QueryKey {
        workload: match workload {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        },
        resolver: match resolver {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        },
        workload_port_be: 40_000u16.to_be(),
        txid_be: txid.to_be(),
        proto: 17,
        _pad: [0; 3],
    };
    let mut rows = Vec::new();
    println!("DNS answer processing (TC egress, BPF_PROG_TEST_RUN, median of {RUNS} single runs)");
    println!("{:>8} {:>11} {:>12} {:>12} {:>12}", "records", "compressed", "answer_ns", "baseline_ns", "minus_base");
    for records in [1usize, 8, 32] {
        for compressed in [false, true] {
            let txid = (records * 2 + usize::from(compressed)) as u16;
            let mut msg = Message::response(txid, NAME, 1).compress(compressed);
            for i in 0..records {
                msg = msg.a(NAME, [198, 18, (i / 250) as u8, (i % 250) as u8 + 1], 300);
            }
            let frame = Spec::udp(resolver, workload, 53, 40_000).with_payload(msg.to_bytes()).build();
            let learned_before = dp.dns_stats().expect("stats")[DnsStat::AddressLearned as usize];
            let (mut answer, mut base) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
            for run in 0..RUNS {
                // As a running agent does: learning needs its lease.
                dp.renew_lease().expect("lease");
                // Budgets refilled now and then (not every run: the
                // syscalls would leave the caches cold for the next).
                if run % 100 == 0 {
                    dp.refill_budgets().expect("budgets");
                }
                dp.track_query(&key(txid), NAME, 1).expect("plant query");
                answer.push(run_once(&mut dp, DNS_PROGRAM, &frame));
                base.push(run_once(&mut dp, EMPTY_PROGRAM, &frame));
            }
            let learned = dp.dns_stats().expect("stats")[DnsStat::AddressLearned as usize] - learned_before;
            assert_eq!(learned, (records * RUNS) as u64, "every answer taught all its addresses");
            let (a, b) = (median(answer), median(base));
            println!("{records:>8} {compressed:>11} {a:>12} {b:>12} {:>12}", a.saturating_sub(b));
            rows.push(
                serde_json::json!({"records": records, "compressed": compressed, "answer_ns": a, "baseline_ns": b}),
            );
        }
    }
    queries(&mut dp, resolver, &mut rows);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("dns.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows).expect("json")).expect("write dns.json");
    println!("wrote {}", path.display());
}

/// The query path's rows (see the module's doc).
fn queries(dp: &mut Datapath, resolver: IpAddr, rows: &mut Vec<serde_json::Value>) {
    println!("\nDNS query processing (TC ingress, BPF_PROG_TEST_RUN, median of {RUNS} single runs)");
    println!("{:<16} {:>10} {:>12} {:>12}", "query", "query_ns", "baseline_ns", "minus_base");
    let cases = [("exact-name", false), ("zone-name", false), ("random-label", true)];
    for (i, (case, random)) in cases.into_iter().enumerate() {
        let forwarded_before = dp.dns_stats().expect("stats")[DnsStat::QueryTracked as usize];
        let (mut query, mut base) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
        for run in 0..RUNS {
            let name = match (i, random) {
                (0, _) => "api.openai.com".to_string(),
                (_, false) => NAME.to_string(),
                (_, true) => format!("{:032x}.bench.example.com", (run as u128) << 64 | 0xa5a5_5a5a),
            };
            // Up to 6 random-looking names per workload: under the guard's threshold.
            let src: IpAddr = format!("10.10.{}.{}", 2 + run / 6 / 250, 1 + run / 6 % 250).parse().expect("addr");
            let frame = Spec::udp(src, resolver, 10_000 + (i * RUNS + run) as u16 % 50_000, 53)
                .with_payload(Message::query(run as u16, &name, 1).to_bytes())
                .build();
            dp.renew_lease().expect("lease");
            if run % 100 == 0 {
                dp.refill_budgets().expect("budgets");
            }
            query.push(run_once(dp, TC_PROGRAM, &frame));
            base.push(run_once(dp, EMPTY_PROGRAM, &frame));
        }
        let tracked = dp.dns_stats().expect("stats")[DnsStat::QueryTracked as usize] - forwarded_before;
        assert_eq!(tracked, RUNS as u64, "{case}: every query recorded and forwarded");
        let (q, b) = (median(query), median(base));
        println!("{case:<16} {q:>10} {b:>12} {:>12}", q.saturating_sub(b));
        rows.push(serde_json::json!({"query": case, "query_ns": q, "baseline_ns": b}));
    }
}
