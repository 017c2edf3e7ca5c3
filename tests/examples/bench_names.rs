//! `cargo xtask bench names`: what reading and judging a connection's name
//! costs in the kernel, by first message (a classic ClientHello, a
//! post-quantum one in two segments, a 16 KiB worst case with the name at
//! its end, an HTTP request head).
//!
//! Each run opens a new flow (its SYN and ACK, not timed) and sends the
//! message's segments through the TC ingress program with
//! `BPF_PROG_TEST_RUN`; the kernel's durations of the message's segments
//! are summed (the judge, the names and read programs they are handed to,
//! the parse and the second decision), and the median over the runs is
//! reported next to the empty program run on the same frames in the same
//! run. Every run is checked to end with the flow permitted by its name.
//! Each case runs under two packs: `one-pattern` (a deny WebGroup of one
//! `**.` pattern before the CIDR permit of the partner's address) and
//! `every-length` (the same with 80 patterns of every length the name's
//! suffixes have, so that the name table's length filter skips no lookup).
//! Writes `target/bench/names.json`: `[{pack, case, segments, bytes, ns,
//! baseline_ns}]`.
//!
//! Options: `--runs N` (flows per case, 2,000 by default), `--case NAME`
//! (one case only: with many runs, a steady load to profile with `perf`).

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, EMPTY_PROGRAM, TC_PROGRAM};
use egress_lab::hello::{ACK, PSH_ACK, SYN, client_hello, tcp_segment};
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
smartgroups:
  runtime: { cidrs: [10.10.1.0/24] }
webgroups:
  evil: { domains: ["**.evil.test"] }
rules:
  - { name: deny-evil, priority: 5, source: runtime, destination: { webgroup: evil }, protocol: tcp, ports: [443], action: deny }
  - { name: allow-partner, priority: 10, source: runtime, destination: { cidrs: [198.18.20.0/24] }, protocol: tcp, ports: [443], action: permit }
  - { name: default-deny, priority: 1000, source: runtime, destination: any, action: deny }
"#;

const RUNS: usize = 2000;

/// `--runs N` and `--case NAME`.
fn opts() -> (usize, Option<String>) {
    let (mut runs, mut case) = (RUNS, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--runs", Some(n)) => runs = n.parse().expect("--runs N"),
            ("--case", Some(c)) => case = Some(c),
            _ => panic!("unknown argument `{a}` (--runs N, --case NAME)"),
        }
    }
    (runs.max(1), case)
}
const PASS: u32 = -1i32 as u32;
const ISN: u32 = 1_000_000;
const NAME: &str = "api.partner.test";

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn run_once(dp: &mut Datapath, program: &str, frame: &[u8]) -> (u32, u64) {
    let prog = dp.tc_program(program).expect("program");
    let r = prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run");
    (r.return_value, r.duration.as_nanos() as u64)
}

/// A ClientHello naming [`NAME`] of `bytes` bytes in all.
fn hello_of(bytes: usize) -> Vec<u8> {
    client_hello(NAME, bytes - client_hello(NAME, 0).len())
}

/// [`PACK`] with 80 more patterns in its deny WebGroup, of every length
/// from 9 to 48 bytes and of every kind: every suffix of [`NAME`] has a
/// length some pattern has, so that no lookup of the name is skipped (the
/// name table's length filter's worst case).
fn every_length_pack() -> String {
    let q = |i: usize| "q".repeat(i);
    let mut patterns: Vec<String> = (0..40).map(|i| format!("\"**.z{}.example\"", q(i))).collect();
    patterns.extend((0..20).map(|i| format!("\"*.y{}.test\"", q(i))));
    patterns.extend((0..20).map(|i| format!("h{}.partner.test", q(i))));
    PACK.replace("\"**.evil.test\"", &format!("\"**.evil.test\", {}", patterns.join(", ")))
}

fn main() {
    let (runs, only) = opts();
    let mut dp = Datapath::load().expect("datapath loads (run as root)");
    let http =
        format!("GET /v1/models HTTP/1.1\r\nHost: {NAME}\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n").into_bytes();
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("clienthello-517", hello_of(517), 1),
        ("clienthello-x25519mlkem768", hello_of(1_843), 2),
        ("clienthello-16k-worst", hello_of(16_384), 12),
        ("http-request", http, 1),
    ];
    let dst = ([198, 18, 20, 1], 443);
    let mut port = 1024u16;
    let mut rows = Vec::new();
    println!("Reading and judging a connection's name (TC ingress, BPF_PROG_TEST_RUN, median of {runs} flows)");
    println!(
        "{:<13} {:<28} {:>8} {:>7} {:>10} {:>12} {:>12}",
        "pack", "case", "segments", "bytes", "ns", "baseline_ns", "minus_base"
    );
    let packs = [("one-pattern", PACK.to_string()), ("every-length", every_length_pack())];
    let measured = packs.iter().flat_map(|p| cases.iter().map(move |c| (p, c)));
    for ((label, yaml), (case, msg, segments)) in measured {
        if only.as_ref().is_some_and(|c| c != case) {
            continue;
        }
        let pack = load_sources(&[("bench.yaml".into(), yaml.clone())]).expect("pack");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
        let (case, segments) = (*case, *segments);
        let step = msg.len().div_ceil(segments);
        let (mut ns, mut base) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for _ in 0..runs {
            port = if port == u16::MAX { 1024 } else { port + 1 };
            for (seq, flags) in [(ISN, SYN), (ISN + 1, ACK)] {
                assert_eq!(
                    run_once(&mut dp, TC_PROGRAM, &tcp_segment([10, 10, 1, 10], dst, port, seq, flags, &[])).0,
                    PASS
                );
            }
            let (mut total, mut empty, mut last) = (0, 0, 0);
            for (i, part) in msg.chunks(step).enumerate() {
                let frame = tcp_segment([10, 10, 1, 10], dst, port, ISN + 1 + (i * step) as u32, PSH_ACK, part);
                let (ret, t) = run_once(&mut dp, TC_PROGRAM, &frame);
                total += t;
                last = ret;
                empty += run_once(&mut dp, EMPTY_PROGRAM, &frame).1;
            }
            assert_eq!(last, PASS, "{case}: the partner's name is permitted");
            ns.push(total);
            base.push(empty);
        }
        let (n, b) = (median(ns), median(base));
        println!("{label:<13} {case:<28} {segments:>8} {:>7} {n:>10} {b:>12} {:>12}", msg.len(), n.saturating_sub(b));
        rows.push(serde_json::json!({"pack": label, "case": case, "segments": segments, "bytes": msg.len(), "ns": n, "baseline_ns": b}));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("names.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rows).expect("json")).expect("write names.json");
    println!("wrote {}", path.display());
}
