//! The kernel fuzzer: mutated frames (Ethernet through DNS and TLS)
//! through the real TC program under `BPF_PROG_TEST_RUN`, with two
//! invariants checked against reference readers written apart from the
//! datapath's parser:
//!
//! - verdicts: a frame the plain-packet reader reads has the verdict the
//!   compiled pack gives its (source, destination, protocol, port), under
//!   a realistic pack of 300 rules;
//! - the query filter: under `query_filter: enforce`, a frame to a
//!   resolver's port 53 that gets out is a DNS query `hickory-proto` reads,
//!   every question a name the source's permitted WebGroups cover, of an
//!   allowed type.
//!
//! Distinct outcomes (return code, reason counted, DNS event counted) grow
//! the corpus, a crude coverage signal. Prints one line of figures; exits
//! non-zero on any violation. `cargo xtask fuzz` runs it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, TC_PROGRAM};
use egress_common::{ACTION_DENY, MODE_ENFORCE};
use egress_lab::dnsmsg::Message;
use egress_lab::fuzzing::{mutate, plain, query_permitted};
use egress_lab::packet::{Spec, probe_frame};
use egress_policy::compile::{CompiledPack, Decision, compile};
use egress_policy::model::Pack;
use egress_policy::synth::{Rng, realistic_pack};

const PASS: u32 = -1i32 as u32;
const DROP: u32 = 2;

const QUERY_PACK: &str = r#"
version: 1
mode: enforce
dns: { resolvers: [10.10.0.2, "fd00:10::2"], query_filter: enforce }
smartgroups: { workloads: { cidrs: [10.10.1.0/24, "fd00:10:1::/64"] } }
webgroups: { llm: { domains: [api.openai.com, "**.azure.example"] } }
rules:
  - { name: allow-llm, priority: 10, source: workloads, destination: { webgroup: llm }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 100, source: workloads, destination: any, action: deny }
"#;

/// One fuzzed datapath: its pack, seeds and corpus.
struct Target {
    dp: Datapath,
    pack: Pack,
    compiled: CompiledPack,
    corpus: Vec<(Vec<u8>, usize)>,
    outcomes: std::collections::BTreeSet<(u32, usize, usize)>,
}

impl Target {
    fn new(pack: Pack, seeds: Vec<(Vec<u8>, usize)>) -> anyhow::Result<Target> {
        let compiled = compile(&pack)?;
        let mut dp = Datapath::load()?;
        dp.install(compiled.clone())?;
        Ok(Target { dp, pack, compiled, corpus: seeds, outcomes: std::collections::BTreeSet::new() })
    }

    /// Runs `frame`; the return code, and whether it was a new outcome.
    fn run(&mut self, frame: &[u8]) -> anyhow::Result<(u32, bool)> {
        let (reasons, dns) = (self.dp.reason_counts()?, self.dp.dns_stats()?);
        let prog = self.dp.tc_program(TC_PROGRAM)?;
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let ret = prog.test_run(opts)?.return_value;
        let moved = |a: &[u64], b: &[u64]| a.iter().zip(b).position(|(x, y)| x != y).map_or(usize::MAX, |i| i);
        let outcome = (ret, moved(&reasons, &self.dp.reason_counts()?), moved(&dns, &self.dp.dns_stats()?));
        Ok((ret, self.outcomes.insert(outcome)))
    }
}

/// Frames of probes the realistic pack decides, over TCP and UDP, both families.
fn verdict_seeds(pack: &Pack, compiled: &CompiledPack, rng: &mut Rng) -> Vec<(Vec<u8>, usize)> {
    let srcs: Vec<IpAddr> = pack.smartgroups.values().flat_map(|g| g.cidrs.iter().map(ipnet::IpNet::addr)).collect();
    let dsts: Vec<IpAddr> = compiled.dst.keys().map(ipnet::IpNet::addr).collect();
    let mut out = Vec::new();
    while out.len() < 200 {
        let (src, dst) = (srcs[rng.index(srcs.len())], dsts[rng.index(dsts.len())]);
        if src.is_ipv4() != dst.is_ipv4() {
            continue;
        }
        let proto = if rng.chance(50) { 6 } else { 17 };
        let dport = [22u16, 53, 80, 443, 5432, 8080][rng.index(6)];
        let p = egress_policy::evaluate::Probe { src, dst, proto, dport };
        out.push((probe_frame(&p), 14));
    }
    out
}

/// DNS queries over UDP from a workload to the resolvers: permitted names
/// and types, and others.
fn query_seeds() -> Vec<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    for (src, dst) in [("10.10.1.10", "10.10.0.2"), ("fd00:10:1::10", "fd00:10::2")] {
        let (src, dst) = (src.parse().expect("addr"), dst.parse().expect("addr"));
        let at = if matches!(src, IpAddr::V4(_)) { 14 + 28 } else { 14 + 48 };
        for (i, (name, qtype)) in [
            ("api.openai.com", 1u16),
            ("api.openai.com", 28),
            ("api.openai.com", 65),
            ("x.y.azure.example", 1),
            ("api.openai.com", 16),
            ("mfrggzdfmztwq2lk.evil.example", 1),
            ("openai.com", 1),
        ]
        .into_iter()
        .enumerate()
        {
            let msg = Message::query(0x100 + i as u16, name, qtype).to_bytes();
            out.push((Spec::udp(src, dst, 40_000 + i as u16, 53).with_payload(msg).build(), at));
        }
    }
    out
}

/// What the compiled pack says of a plain frame.
fn expected(compiled: &CompiledPack, p: &egress_lab::fuzzing::Plain) -> u32 {
    match compiled.decide(p.src, p.dst, p.proto, p.dport) {
        Decision::Uncovered => PASS,
        Decision::Rule(r) => {
            let info = compiled.rules[r as usize].info;
            if info.action == ACTION_DENY && info.mode == MODE_ENFORCE { DROP } else { PASS }
        }
    }
}

fn hex(f: &[u8]) -> String {
    f.iter().fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What one input came to.
enum Step {
    /// Not run (the kernel refuses it) or nothing to check.
    Unchecked,
    Checked,
    Violation(String),
}

/// One mutated input for `t`.
fn step(t: &mut Target, query: bool, rng: &mut Rng) -> Step {
    let (seed, from) = t.corpus[rng.index(t.corpus.len())].clone();
    let frame = mutate(&seed, from, rng);
    // What `BPF_PROG_TEST_RUN` takes: an Ethernet header, a frame of an MTU of 1500.
    if !(14..=1514).contains(&frame.len()) {
        return Step::Unchecked;
    }
    // The kernel refuses some inputs before any program runs (an IP header
    // cut short, say): nothing to check.
    let Ok((ret, new)) = t.run(&frame) else { return Step::Unchecked };
    if new && t.corpus.len() < 4096 {
        t.corpus.push((frame.clone(), from));
    }
    let Some(p) = plain(&frame) else { return Step::Unchecked };
    if !query {
        let want = expected(&t.compiled, &p);
        if ret != want {
            return Step::Violation(format!("verdict {ret:#x}, the pack says {want:#x}: {p:?} {}", hex(&frame)));
        }
        return Step::Checked;
    }
    if !(p.proto == 17 && p.dport == 53 && t.pack.dns.resolvers.contains(&p.dst)) {
        return Step::Unchecked;
    }
    if ret == PASS && !query_permitted(&t.pack, &["llm"], &frame[p.payload.0..p.payload.1]) {
        return Step::Violation(format!("query let through that the reference reader refuses: {p:?} {}", hex(&frame)));
    }
    Step::Checked
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let seconds =
        args.iter().position(|a| a == "--seconds").and_then(|i| args.get(i + 1)).map_or(Ok(60), |s| s.parse())?;
    let mut rng = Rng::new(u64::from(std::process::id()) ^ 0x6567_7265_7373);
    let pack = realistic_pack(300, 11);
    let compiled = compile(&pack)?;
    let seeds = verdict_seeds(&pack, &compiled, &mut rng);
    let mut verdicts = Target::new(pack, seeds)?;
    let qpack = egress_policy::load_sources(&[("q.yaml".into(), QUERY_PACK.into())])?;
    let mut queries = Target::new(qpack, query_seeds())?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut violations, mut checked) = (0u64, Vec::new(), [0u64; 2]);
    while Instant::now() < deadline {
        for _ in 0..256 {
            let query = runs % 2 == 1;
            let t = if query { &mut queries } else { &mut verdicts };
            match step(t, query, &mut rng) {
                Step::Unchecked => {}
                Step::Checked => checked[usize::from(query)] += 1,
                Step::Violation(v) => violations.push(v),
            }
            runs += 1;
        }
    }
    for v in violations.iter().take(10) {
        eprintln!("violation: {v}");
    }
    println!(
        "fuzz datapath: {runs} executions ({} verdicts and {} queries checked), {} distinct outcomes, corpus {}, crashes 0, invariant violations {}",
        checked[0],
        checked[1],
        verdicts.outcomes.len() + queries.outcomes.len(),
        verdicts.corpus.len() + queries.corpus.len(),
        violations.len()
    );
    if !violations.is_empty() {
        anyhow::bail!("{} invariant violations", violations.len());
    }
    Ok(())
}
