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
//!   allowed type;
//! - learning: an answer to a recorded query (mutated after the gateway's
//!   transaction id is written in) teaches an address only if
//!   `hickory-proto` reads it as a response to that question with the
//!   address in an A or AAAA record of its answer section.
//!
//! Distinct outcomes (return code, reason counted, DNS event counted) grow
//! the corpus, a crude coverage signal. Prints one line of figures; exits
//! non-zero on any violation. `cargo xtask fuzz` runs it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{DNS_PROGRAM, Datapath, TC_PROGRAM};
use egress_common::{ACTION_DENY, MODE_ENFORCE};
use egress_lab::dnsmsg::Message;
use egress_lab::fuzzing::{answer_gives, ip_cut_short, mutate, plain, query_permitted, udp_message};
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

const ANSWER_PACK: &str = r#"
version: 1
mode: enforce
dns: { resolvers: [10.10.0.2], min_ttl: 60, max_ttl: 3600 }
smartgroups: { workloads: { cidrs: [10.10.1.0/24] } }
webgroups: { llm: { domains: [api.openai.com, "*.example.com", "**.deep.example.org"] } }
rules:
  - { name: allow-llm, priority: 10, source: workloads, destination: { webgroup: llm }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 1000, source: workloads, destination: any, action: deny }
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
    if ret == PASS && !query_permitted(&t.pack, &["llm"], udp_message(&frame).unwrap_or_default()) {
        return Step::Violation(format!("query let through that the reference reader refuses: {p:?} {}", hex(&frame)));
    }
    Step::Checked
}

/// The answer fuzzer: answers (name asked, type, message) to queries
/// recorded afresh for each input, and the learned table as last read.
struct Answers {
    t: Target,
    seeds: Vec<(String, u16, Vec<u8>)>,
    table: std::collections::HashMap<egress_common::LearnKey, egress_common::LearnValue>,
    port: u16,
}

/// Answers for sanctioned names (plain, with a CNAME chain, AAAA) and others.
fn answer_seeds() -> Vec<(String, u16, Vec<u8>)> {
    let v4 = |i: u8| [198, 18, 0, i];
    let mut v6 = [0u8; 16];
    v6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    v6[15] = 1;
    let plain = |name: &str| Message::response(1, name, 1).a(name, v4(1), 300).a(name, v4(2), 300).to_bytes();
    let chain = Message::response(1, "api.openai.com", 1)
        .cname("api.openai.com", "edge.cdn.example.net", 60)
        .a("edge.cdn.example.net", v4(3), 60)
        .to_bytes();
    let aaaa = Message::response(1, "x.example.com", 28).aaaa("x.example.com", v6, 300).to_bytes();
    let compressed =
        Message::response(1, "a.b.deep.example.org", 1).a("a.b.deep.example.org", v4(4), 30).compress(true);
    vec![
        ("api.openai.com".into(), 1, plain("api.openai.com")),
        ("api.openai.com".into(), 1, chain),
        ("x.example.com".into(), 28, aaaa),
        ("a.b.deep.example.org".into(), 1, compressed.to_bytes()),
        ("evil.example.net".into(), 1, plain("evil.example.net")),
    ]
}

impl Answers {
    /// One input: a query recorded, then a mutated answer to it.
    fn step(&mut self, rng: &mut Rng) -> anyhow::Result<Step> {
        let (name, qtype, msg) = self.seeds[rng.index(self.seeds.len())].clone();
        let (workload, resolver): (IpAddr, IpAddr) = ("10.10.1.10".parse()?, "10.10.0.2".parse()?);
        self.port = self.port.wrapping_add(1).max(1024);
        let query =
            Spec::udp(workload, resolver, self.port, 53).with_payload(Message::query(7, &name, qtype).to_bytes());
        let query = query.build();
        let prog = self.t.dp.tc_program(TC_PROGRAM)?;
        let mut out = vec![0u8; query.len() + 64];
        let r =
            prog.test_run(TestRunOptions { data_in: Some(&query), data_out: Some(&mut out), ..Default::default() })?;
        if r.return_value != PASS {
            return Ok(Step::Unchecked);
        }
        // The gateway's transaction id, after Ethernet, IPv4 and UDP.
        let id = &out[42..44];
        let mut answer = msg.clone();
        if let Some(first) = answer.get_mut(..2) {
            first.copy_from_slice(id);
        }
        let frame = Spec::udp(resolver, workload, 53, self.port).with_payload(answer).build();
        let frame = mutate(&frame, 44, rng);
        if !(14..=1514).contains(&frame.len()) {
            return Ok(Step::Unchecked);
        }
        let before = self.t.dp.dns_stats()?;
        let prog = self.t.dp.tc_program(DNS_PROGRAM)?;
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions { data_in: Some(&frame), data_out: Some(&mut out), ..Default::default() };
        let Ok(run) = prog.test_run(opts) else { return Ok(Step::Unchecked) };
        let after = self.t.dp.dns_stats()?;
        let moved: Vec<usize> = (0..after.len()).filter(|&i| after[i] != before[i]).collect();
        let outcome = (run.return_value, moved.first().copied().unwrap_or(usize::MAX), moved.len());
        let p = plain(&frame);
        if let Some(p) = p
            && self.t.outcomes.insert(outcome)
            && self.seeds.len() < 4096
        {
            self.seeds.push((name.clone(), qtype, frame[p.payload.0..p.payload.1].to_vec()));
        }
        let learned = egress_common::DnsStat::AddressLearned as usize;
        if after[learned] == before[learned] {
            return Ok(Step::Checked);
        }
        let table: std::collections::HashMap<_, _> = self.t.dp.learned()?.into_iter().collect();
        let changed: Vec<IpAddr> = table
            .iter()
            .filter(|(k, v)| self.table.get(k) != Some(v))
            .map(|(k, _)| std::net::Ipv6Addr::from(k.addr).to_canonical())
            .collect();
        self.table = table;
        if ip_cut_short(&frame) {
            return Ok(Step::Unchecked);
        }
        let payload = udp_message(&frame).unwrap_or_default();
        match changed.iter().find(|a| !answer_gives(payload, &name, **a)) {
            Some(a) => Ok(Step::Violation(format!(
                "learned {a} from an answer to {name} the reference reader refuses: {}",
                hex(&frame)
            ))),
            None => Ok(Step::Checked),
        }
    }
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
    let apack = egress_policy::load_sources(&[("a.yaml".into(), ANSWER_PACK.into())])?;
    let mut answers = Answers {
        t: Target::new(apack, Vec::new())?,
        seeds: answer_seeds(),
        table: std::collections::HashMap::new(),
        port: 20_000,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut violations, mut checked) = (0u64, Vec::new(), [0u64; 3]);
    while Instant::now() < deadline {
        // As a running agent does: with its lease run out, DNS fails closed.
        for dp in [&mut verdicts.dp, &mut queries.dp, &mut answers.t.dp] {
            dp.renew_lease()?;
        }
        for _ in 0..256 {
            let which = (runs % 3) as usize;
            let result = match which {
                0 => step(&mut verdicts, false, &mut rng),
                1 => step(&mut queries, true, &mut rng),
                _ => answers.step(&mut rng)?,
            };
            match result {
                Step::Unchecked => {}
                Step::Checked => checked[which] += 1,
                Step::Violation(v) => violations.push(v),
            }
            runs += 1;
        }
    }
    for v in violations.iter().take(10) {
        eprintln!("violation: {v}");
    }
    println!(
        "fuzz datapath: {runs} executions ({} verdicts, {} queries, {} answers checked), {} distinct outcomes, corpus {}, crashes 0, invariant violations {}",
        checked[0],
        checked[1],
        checked[2],
        verdicts.outcomes.len() + queries.outcomes.len() + answers.t.outcomes.len(),
        verdicts.corpus.len() + queries.corpus.len() + answers.seeds.len(),
        violations.len()
    );
    if !violations.is_empty() {
        anyhow::bail!("{} invariant violations", violations.len());
    }
    Ok(())
}
