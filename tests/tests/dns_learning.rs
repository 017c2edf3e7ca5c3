//! DNS learning in the real datapath, through `BPF_PROG_TEST_RUN`: a query
//! leaves a workload through `egress_tc` (recorded), its answer comes back
//! through `egress_dns` (learned from), then SYNs through `egress_tc` show
//! what the `WebGroup` rule now lets through, and for whom.
//!
//! Table-driven: each case is (query, answer, twist) and expects the
//! addresses learned, with their clamped TTL, and the DNS counters that
//! move. Three tables: learning, spoofed or unwanted answers, and the
//! malformed messages of RFC 9267. Every answer, however bad, is passed.
//! Needs root (`CAP_BPF`, `CAP_NET_ADMIN`), as the whole suite does.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::clock::monotonic_ns;
use egress_agent::datapath::{DNS_PROGRAM, Datapath, TC_PROGRAM};
use egress_common::{DnsStat, LearnKey, LearnValue, fnv1a};
use egress_lab::dnsmsg::{
    CLASS_IN, Message, RESPONSE_FLAGS, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_TXT, encode_labels, encode_name, header,
    labels, pointer, question, rr, rr_with_len, tcp_framed,
};
use egress_lab::packet::Spec;
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
dns:
  resolvers: [10.10.0.2, "fd00:10::2"]
  min_ttl: 60
  max_ttl: 3600
smartgroups:
  workloads: { cidrs: [10.10.1.0/24, "fd00:10:1::/64"] }
webgroups:
  llm: { domains: [api.openai.com, "*.example.com", "**.deep.example.org", a234567890.b234567890.c234567890.d234567890.e234567.example.net, a234567890.b234567890.c234567890.d234567890.e2345678.example.net, "**.a234567890.b234567890.c234567890.d234567890.e234567890.f23.example.org"] }
rules:
  - { name: allow-llm, priority: 10, source: workloads, destination: { webgroup: llm }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, protocol: any, ports: [53], action: permit }
  - { name: deny-dns-exfil, priority: 30, source: workloads, destination: any, protocol: any, ports: [53], action: deny }
  - { name: default-deny, priority: 1000, source: workloads, destination: any, action: deny }
"#;

const PASS: u32 = -1i32 as u32; // TC_ACT_UNSPEC
const DROP: u32 = 2; // TC_ACT_SHOT

const WORKLOAD4: &str = "10.10.1.10";
const NEIGHBOUR4: &str = "10.10.1.11";
const RESOLVER4: &str = "10.10.0.2";
const WORKLOAD6: &str = "fd00:10:1::10";
const NEIGHBOUR6: &str = "fd00:10:1::11";
const RESOLVER6: &str = "fd00:10::2";
/// Never in any answer.
const STRANGER4: &str = "198.51.100.99";
const STRANGER6: &str = "2001:db8:99::99";

const API: &str = "api.openai.com";
/// Names on both sides of the short name table's limit (63 bytes), and a
/// long zone: each pattern is in the table it belongs in.
const LONG63: &str = "a234567890.b234567890.c234567890.d234567890.e234567.example.net";
const LONG64: &str = "a234567890.b234567890.c234567890.d234567890.e2345678.example.net";
const ZONE70: &str = "a234567890.b234567890.c234567890.d234567890.e234567890.f23.example.org";
const IN_ZONE70: &str = "x.a234567890.b234567890.c234567890.d234567890.e234567890.f23.example.org";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The learned table's address format: IPv4 as `::ffff:a.b.c.d`.
fn key16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn from_key16(k: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(k);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

fn v4(s: &str) -> [u8; 4] {
    match ip(s) {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => panic!("{s} is not IPv4"),
    }
}

fn v6(s: &str) -> [u8; 16] {
    match ip(s) {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => panic!("{s} is not IPv6"),
    }
}

/// One query/answer exchange between a workload and a resolver.
#[derive(Clone, Copy)]
struct Exchange {
    workload: IpAddr,
    resolver: IpAddr,
    port: u16,
    id: u16,
    tcp: bool,
}

impl Exchange {
    fn frame(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: Vec<u8>) -> Vec<u8> {
        let spec = if self.tcp { Spec::tcp(src, dst, sport, dport) } else { Spec::udp(src, dst, sport, dport) };
        spec.with_payload(payload).build()
    }

    fn payload(&self, msg: &[u8]) -> Vec<u8> {
        if self.tcp { tcp_framed(msg) } else { msg.to_vec() }
    }

    /// The query frame: workload:port -> resolver:53.
    fn query(&self, msg: &[u8]) -> Vec<u8> {
        self.frame(self.workload, self.port, self.resolver, 53, self.payload(msg))
    }

    /// An answer frame from `src`:53 to `dst`:`dport` with this payload.
    fn answer_raw(&self, src: IpAddr, dst: IpAddr, dport: u16, payload: Vec<u8>) -> Vec<u8> {
        self.frame(src, 53, dst, dport, payload)
    }

    /// The genuine answer frame: resolver:53 -> workload:port.
    fn answer(&self, msg: &[u8]) -> Vec<u8> {
        self.answer_raw(self.resolver, self.workload, self.port, self.payload(msg))
    }
}

/// What one run of `egress_dns` did.
struct Outcome {
    ret: u32,
    /// The frame as `egress_dns` let it go.
    out: Vec<u8>,
    /// Counter movement per `DnsStat` code.
    delta: Vec<u64>,
    /// Entries of the learned table that are new or changed.
    learned: Vec<(LearnKey, LearnValue)>,
    /// `CLOCK_MONOTONIC` just before and after the run.
    t0: u64,
    t1: u64,
}

struct Harness {
    dp: Datapath,
    /// The `llm` `WebGroup`'s bit, as a mask.
    llm: u64,
    next_port: u16,
    next_id: u16,
    next_syn_port: u16,
}

impl Harness {
    fn new() -> Self {
        let pack = load_sources(&[("test.yaml".into(), PACK.into())]).expect("test pack is valid");
        // The verifier accepts every program, `egress_dns` included.
        let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
        let bit = dp.webgroup_bit("llm").expect("the live pack has the `llm` WebGroup");
        assert!(bit < 64, "WebGroup bits fit a u64");
        Harness { dp, llm: 1 << bit, next_port: 53530, next_id: 0x1000, next_syn_port: 30000 }
    }

    fn run(&mut self, program: &str, frame: &[u8]) -> u32 {
        self.run_out(program, frame).0
    }

    /// Runs a program on a frame: its verdict and the frame as it left.
    fn run_out(&mut self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.dp.tc_program(program).expect("program");
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn stats(&self) -> Vec<u64> {
        self.dp.dns_stats().expect("dns stats")
    }

    fn table(&self) -> HashMap<LearnKey, LearnValue> {
        self.dp.learned().expect("learned table").into_iter().collect()
    }

    /// A fresh workload port and transaction id; the agent is up (its
    /// lease renewed), as it is while one runs.
    fn exchange(&mut self, v6: bool, tcp: bool) -> Exchange {
        self.dp.renew_lease().expect("lease");
        let (workload, resolver) = if v6 { (WORKLOAD6, RESOLVER6) } else { (WORKLOAD4, RESOLVER4) };
        self.next_port += 1;
        self.next_id += 1;
        Exchange { workload: ip(workload), resolver: ip(resolver), port: self.next_port, id: self.next_id, tcp }
    }

    /// Sends the query through `egress_tc`: permitted and recorded. The
    /// transaction id it left with, the gateway's, which the answer must
    /// carry.
    fn send_query(&mut self, name: &str, x: &Exchange, msg: &[u8]) -> u16 {
        let before = self.stats();
        let frame = x.query(msg);
        let (ret, out) = self.run_out(TC_PROGRAM, &frame);
        assert_eq!(ret, PASS, "{name}: the query to the resolver passes");
        let delta = diff(&before, &self.stats());
        expect_counts(&format!("{name} (query)"), &delta, &[(DnsStat::QueryTracked, 1)], true);
        let at = frame.len() - msg.len();
        assert_eq!(out.len(), frame.len(), "{name}: the query keeps its length");
        assert_eq!(out[at + 2..], frame[at + 2..], "{name}: only the id changed in the message");
        u16::from_be_bytes([out[at], out[at + 1]])
    }

    /// Runs an answer frame through `egress_dns`.
    fn deliver(&mut self, frame: &[u8]) -> Outcome {
        let before = self.stats();
        let table = self.table();
        let t0 = monotonic_ns();
        let (ret, out) = self.run_out(DNS_PROGRAM, frame);
        let t1 = monotonic_ns();
        let delta = diff(&before, &self.stats());
        let learned: Vec<_> = self.table().into_iter().filter(|(k, v)| table.get(k) != Some(v)).collect();
        // `address_new` counts the entries that did not exist before.
        let created = learned.iter().filter(|(k, _)| !table.contains_key(k)).count() as u64;
        assert_eq!(delta[DnsStat::AddressNew as usize], created, "address_new counts new entries");
        Outcome { ret, out, delta, learned: learned.into_iter().collect(), t0, t1 }
    }

    /// A TCP SYN from `src` to `dst`:`port` through `egress_tc`.
    fn syn(&mut self, src: IpAddr, dst: IpAddr, port: u16) -> u32 {
        self.next_syn_port += 1;
        // A SYN as clients send it, without data (data in a SYN, as TCP Fast
        // Open sends it, is dropped while a flow's name is to be read).
        let mut spec = Spec::tcp(src, dst, self.next_syn_port, port);
        spec.payload = 0;
        let frame = spec.build();
        self.run(TC_PROGRAM, &frame)
    }
}

fn diff(before: &[u64], after: &[u64]) -> Vec<u64> {
    assert_eq!(before.len(), after.len());
    assert!(after.len() >= DnsStat::ALL.len(), "a slot per DnsStat");
    before.iter().zip(after).map(|(b, a)| a.checked_sub(*b).expect("counters only grow")).collect()
}

/// The listed counters moved by exactly that much and every other one is
/// still; `AnswerSeen` is checked only if listed (or if `all`).
fn expect_counts(name: &str, delta: &[u64], want: &[(DnsStat, u64)], all: bool) {
    let wrong: Vec<String> = DnsStat::ALL
        .iter()
        .filter_map(|&stat| {
            let expected = match want.iter().find(|(s, _)| *s == stat) {
                Some(&(_, n)) => n,
                None if stat == DnsStat::AnswerSeen && !all => return None,
                // Checked against the table itself where the answer ran.
                None if stat == DnsStat::AddressNew => return None,
                None => 0,
            };
            let got = delta[stat as usize];
            (got != expected).then(|| format!("{} moved by {got}, want {expected}", stat.name()))
        })
        .collect();
    let moved: Vec<String> = DnsStat::ALL
        .iter()
        .filter(|&&s| delta[s as usize] != 0)
        .map(|&s| format!("{} +{}", s.name(), delta[s as usize]))
        .collect();
    assert!(wrong.is_empty(), "{name}: {} (all that moved: {})", wrong.join(", "), moved.join(", "));
    let unknown: u64 = delta[DnsStat::ALL.len()..].iter().sum();
    assert_eq!(unknown, 0, "{name}: a counter past the known codes moved");
}

/// Runs every case, then fails with the list of those that failed.
fn run_all(h: &mut Harness, cases: &[Case]) {
    let failed: Vec<&str> = cases
        .iter()
        .filter(|c| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(h, c))).is_err())
        .map(|c| c.name)
        .collect();
    assert!(failed.is_empty(), "{} of {} cases failed (see above): {failed:?}", failed.len(), cases.len());
}

/// What is odd about an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Twist {
    None,
    /// The answer comes from this address (port 53), not the resolver.
    From(&'static str),
    /// From the resolver, to another port of the workload.
    WrongPort,
    /// From the resolver, to the neighbour (same port and id).
    ToNeighbour,
    /// Another transaction id.
    WrongId,
    /// No query was sent.
    NoQuery,
    /// The genuine answer is delivered twice; the second is checked.
    Twice,
    /// DNS over TCP whose length prefix says this much more than the segment holds.
    LongFraming(u16),
}

/// Builds the answer message for a transaction id.
type Answer = fn(u16) -> Vec<u8>;

struct Case {
    name: &'static str,
    v6: bool,
    tcp: bool,
    qname: &'static str,
    qtype: u16,
    answer: Answer,
    twist: Twist,
    /// Addresses learned for the querying workload, with their clamped TTL (s).
    learns: Vec<(&'static str, u64)>,
    /// Counters that move.
    counts: Vec<(DnsStat, u64)>,
    /// Addresses that the workload still cannot reach on 443 afterwards.
    blocked: Vec<&'static str>,
}

fn case(name: &'static str, qname: &'static str, qtype: u16, answer: Answer) -> Case {
    Case {
        name,
        v6: false,
        tcp: false,
        qname,
        qtype,
        answer,
        twist: Twist::None,
        learns: vec![],
        counts: vec![],
        blocked: vec![],
    }
}

impl Case {
    fn v6(mut self) -> Self {
        self.v6 = true;
        self
    }
    fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }
    fn twist(mut self, t: Twist) -> Self {
        self.twist = t;
        self
    }
    /// Learns these addresses, each with its clamped TTL: one
    /// `AddressLearned` each, nothing else but `AnswerSeen`.
    fn learns(mut self, addrs: &[(&'static str, u64)]) -> Self {
        self.learns = addrs.to_vec();
        self.counts = vec![(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, addrs.len() as u64)];
        self
    }
    /// Learns nothing; the answer was examined and `stat` counted once.
    fn fails(mut self, stat: DnsStat) -> Self {
        self.counts = vec![(DnsStat::AnswerSeen, 1), (stat, 1)];
        self
    }
    fn counts(mut self, counts: &[(DnsStat, u64)]) -> Self {
        self.counts = counts.to_vec();
        self
    }
    fn blocked(mut self, addrs: &[&'static str]) -> Self {
        self.blocked = addrs.to_vec();
        self
    }
}

fn neighbour_of(workload: IpAddr) -> IpAddr {
    if workload.is_ipv4() { ip(NEIGHBOUR4) } else { ip(NEIGHBOUR6) }
}

fn run_case(h: &mut Harness, c: &Case) {
    let name = c.name;
    let x = h.exchange(c.v6, c.tcp);
    // The answer carries the id the query left with: the gateway's.
    let query = Message::query(x.id, c.qname, c.qtype).to_bytes();
    let id = if c.twist == Twist::NoQuery { x.id } else { h.send_query(name, &x, &query) };
    let msg = (c.answer)(id);
    let genuine = x.answer(&msg);
    let frame = match c.twist {
        Twist::None | Twist::NoQuery => genuine.clone(),
        Twist::From(src) => x.answer_raw(ip(src), x.workload, x.port, x.payload(&msg)),
        Twist::WrongPort => x.answer_raw(x.resolver, x.workload, x.port + 1000, x.payload(&msg)),
        Twist::ToNeighbour => x.answer_raw(x.resolver, neighbour_of(x.workload), x.port, x.payload(&msg)),
        Twist::WrongId => {
            let mut other_id = msg.clone();
            other_id[..2].copy_from_slice(&(id ^ 0x5a5a).to_be_bytes());
            x.answer(&other_id)
        }
        Twist::Twice => {
            let first = h.deliver(&genuine);
            assert_eq!(first.ret, PASS, "{name}: first answer passes");
            assert!(!first.learned.is_empty(), "{name}: the first answer teaches");
            genuine.clone()
        }
        Twist::LongFraming(extra) => {
            assert!(x.tcp, "{name}: framing is for TCP");
            let mut payload = tcp_framed(&msg);
            payload[..2].copy_from_slice(&(msg.len() as u16 + extra).to_be_bytes());
            x.answer_raw(x.resolver, x.workload, x.port, payload)
        }
    };
    let outcome = h.deliver(&frame);
    assert_eq!(outcome.ret, PASS, "{name}: egress_dns passes every packet (returned {:#x})", outcome.ret);
    expect_counts(name, &outcome.delta, &c.counts, false);
    if !c.learns.is_empty() {
        gave_id_back(name, &frame, &outcome.out, msg.len(), x.id);
    }

    // Exactly the expected addresses, for the workload that asked.
    let got: BTreeSet<(IpAddr, IpAddr)> =
        outcome.learned.iter().map(|(k, _)| (from_key16(k.workload), from_key16(k.addr))).collect();
    let want: BTreeSet<(IpAddr, IpAddr)> = c.learns.iter().map(|&(a, _)| (x.workload, ip(a))).collect();
    assert_eq!(got, want, "{name}: learned entries");
    let hash = fnv1a(c.qname.trim_end_matches('.').to_ascii_lowercase().as_bytes());
    for &(addr, ttl) in &c.learns {
        let (_, entry) = outcome.learned.iter().find(|(k, _)| k.addr == key16(ip(addr))).expect("learned");
        assert_ne!(entry.groups & h.llm, 0, "{name}: {addr} learned for `llm` (groups {:#x})", entry.groups);
        assert_eq!(entry.groups & !h.llm, 0, "{name}: {addr} learned for `llm` only (groups {:#x})", entry.groups);
        assert_eq!(entry.name_hash, hash, "{name}: {addr} names the question");
        let (lo, hi) = (outcome.t0 + ttl * 1_000_000_000, outcome.t1 + ttl * 1_000_000_000);
        // The datapath stamps with the coarse clock, which lags the test's
        // by up to a tick (4 or 10 ms, by the kernel's HZ).
        let slack = 20_000_000; // 20 ms
        assert!(
            entry.expires_ns + slack >= lo && entry.expires_ns <= hi + slack,
            "{name}: {addr} expires {} ns after the answer, want {ttl} s",
            i128::from(entry.expires_ns) - i128::from(outcome.t0)
        );
    }

    // What the WebGroup rule now lets through.
    let stranger = if x.workload.is_ipv4() { ip(STRANGER4) } else { ip(STRANGER6) };
    for &(addr, _) in &c.learns {
        let addr = ip(addr);
        assert_eq!(h.syn(x.workload, addr, 443), PASS, "{name}: the workload reaches {addr}:443");
        assert_eq!(h.syn(x.workload, addr, 80), DROP, "{name}: only on the permitted port");
        assert_eq!(h.syn(neighbour_of(x.workload), addr, 443), DROP, "{name}: the neighbour did not ask for {addr}");
    }
    if !c.learns.is_empty() {
        assert_eq!(h.syn(x.workload, stranger, 443), DROP, "{name}: an address nobody answered stays out");
    }
    for &addr in &c.blocked {
        assert_eq!(h.syn(x.workload, ip(addr), 443), DROP, "{name}: {addr} was not learned");
    }

    // A spoof or misdelivery left the outstanding query alone: the genuine
    // answer still teaches what it holds.
    if matches!(c.twist, Twist::From(_) | Twist::WrongPort | Twist::WrongId | Twist::ToNeighbour) {
        let then = h.deliver(&genuine);
        let withheld = c.blocked.len() as u64;
        expect_counts(
            &format!("{name} (then the genuine answer)"),
            &then.delta,
            &[(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, withheld)],
            true,
        );
        for &addr in &c.blocked {
            assert_eq!(h.syn(x.workload, ip(addr), 443), PASS, "{name}: {addr} learned from the genuine answer");
        }
    }
}

/// The answer `frame` (whose message is its last `msg_len` bytes) left
/// `egress_dns` as `out`: with the workload's own id, nothing else changed.
fn gave_id_back(name: &str, frame: &[u8], out: &[u8], msg_len: usize, id: u16) {
    let at = frame.len() - msg_len;
    assert_eq!(out[at..at + 2], id.to_be_bytes(), "{name}: the workload's own id given back");
    assert_eq!(out[at + 2..], frame[at + 2..], "{name}: nothing else changed in the message");
}

/// `api.openai.com A` answered with these records in the answer section.
fn api_a(id: u16, addrs: &[&str], ttl: u32) -> Vec<u8> {
    addrs.iter().fold(Message::response(id, API, TYPE_A), |m, a| m.a(API, v4(a), ttl)).to_bytes()
}

/// `name A` answered by one A record.
fn one_a(id: u16, name: &str, addr: &str) -> Vec<u8> {
    Message::response(id, name, TYPE_A).a(name, v4(addr), 300).to_bytes()
}

#[test]
fn programs_load() {
    let mut dp = Datapath::load().expect("the verifier accepts the datapath, egress_dns included (run as root)");
    dp.tc_program(DNS_PROGRAM).expect("egress_dns is loaded");
    dp.tc_program(TC_PROGRAM).expect("egress_tc is loaded");
    assert!(dp.dns_stats().expect("dns stats").iter().all(|&c| c == 0), "counters start at zero");
    assert!(dp.learned().expect("learned table").is_empty(), "nothing learned before any answer");
}

/// With the agent's lease run out (the agent is down), a query is let
/// through unrecorded (query filter off) and an answer to a query recorded
/// before teaches nothing; renewed, learning resumes.
#[test]
fn with_the_lease_run_out_nothing_is_learned() {
    let mut h = Harness::new();
    let x = h.exchange(false, false);
    let up = h.send_query("recorded while up", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    h.dp.release_lease().expect("release");
    let outcome = h.deliver(&x.answer(&api_a(up, &["203.0.113.7"], 300)));
    assert_eq!(outcome.ret, PASS, "answers pass");
    expect_counts("answer, agent down", &outcome.delta, &[(DnsStat::AnswerSeen, 1), (DnsStat::AgentDown, 1)], true);
    assert!(outcome.learned.is_empty(), "nothing learned with the agent down");
    assert_eq!(h.syn(x.workload, ip("203.0.113.7"), 443), DROP, "so the address stays denied");

    let y = h.exchange(false, false);
    h.dp.release_lease().expect("release");
    let before = h.stats();
    assert_eq!(h.run(TC_PROGRAM, &y.query(&Message::query(y.id, API, TYPE_A).to_bytes())), PASS, "filter off: passes");
    expect_counts("query, agent down", &diff(&before, &h.stats()), &[(DnsStat::AgentDown, 1)], true);
    let outcome = h.deliver(&y.answer(&api_a(y.id, &["203.0.113.8"], 300)));
    assert!(outcome.learned.is_empty(), "an unrecorded query's answer teaches nothing: {:?}", outcome.delta);

    let z = h.exchange(false, false);
    let up = h.send_query("renewed", &z, &Message::query(z.id, API, TYPE_A).to_bytes());
    let outcome = h.deliver(&z.answer(&api_a(up, &["203.0.113.9"], 300)));
    expect_counts(
        "answer, agent back",
        &outcome.delta,
        &[(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, 1)],
        true,
    );
    assert_eq!(h.syn(z.workload, ip("203.0.113.9"), 443), PASS, "learned again once the lease is renewed");
}

/// Learning: TTL clamping, families and transports, case.
fn learning_cases() -> Vec<Case> {
    vec![
        // TTL clamping to min_ttl..max_ttl.
        case("A, TTL 5 clamped up to min_ttl", API, TYPE_A, |id| api_a(id, &["203.0.113.1"], 5))
            .learns(&[("203.0.113.1", 60)]),
        case("A, TTL 100000 clamped down to max_ttl", API, TYPE_A, |id| api_a(id, &["203.0.113.2"], 100_000))
            .learns(&[("203.0.113.2", 3600)]),
        case("A, TTL within the bounds", API, TYPE_A, |id| api_a(id, &["203.0.113.3"], 300))
            .learns(&[("203.0.113.3", 300)]),
        case("several A records", API, TYPE_A, |id| api_a(id, &["203.0.113.16", "203.0.113.17"], 300))
            .learns(&[("203.0.113.16", 300), ("203.0.113.17", 300)]),
        // Families and transports.
        case("AAAA over IPv6", API, TYPE_AAAA, |id| {
            Message::response(id, API, TYPE_AAAA).aaaa(API, v6("2001:db8:1::7"), 300).to_bytes()
        })
        .v6()
        .learns(&[("2001:db8:1::7", 300)]),
        case("A over TCP, one segment", API, TYPE_A, |id| api_a(id, &["203.0.113.4"], 300))
            .tcp()
            .learns(&[("203.0.113.4", 300)]),
        case("AAAA over TCP and IPv6", API, TYPE_AAAA, |id| {
            Message::response(id, API, TYPE_AAAA).aaaa(API, v6("2001:db8:1::8"), 300).to_bytes()
        })
        .v6()
        .tcp()
        .learns(&[("2001:db8:1::8", 300)]),
        // Case-insensitive everywhere.
        case("mixed-case question, lowercase owner", "Api.OpenAI.com", TYPE_A, |id| {
            Message::response(id, "Api.OpenAI.com", TYPE_A).a(API, v4("203.0.113.5"), 300).to_bytes()
        })
        .learns(&[("203.0.113.5", 300)]),
        case("mixed case under a wildcard", "A.Example.COM", TYPE_A, |id| {
            Message::response(id, "A.Example.COM", TYPE_A)
                .a("A.Example.COM", v4("203.0.113.6"), 300)
                .compress(true)
                .to_bytes()
        })
        .learns(&[("203.0.113.6", 300)]),
    ]
}

/// Learning: wildcards, CNAME chains, and answers with nothing to learn.
fn name_matching_cases() -> Vec<Case> {
    vec![
        // Wildcards.
        case("*.example.com covers one label", "a.example.com", TYPE_A, |id| {
            one_a(id, "a.example.com", "203.0.113.10")
        })
        .learns(&[("203.0.113.10", 300)]),
        case("*.example.com, two labels", "a.b.example.com", TYPE_A, |id| one_a(id, "a.b.example.com", "203.0.113.11"))
            .fails(DnsStat::NoWebGroup)
            .blocked(&["203.0.113.11"]),
        case("*.example.com never covers example.com", "example.com", TYPE_A, |id| {
            one_a(id, "example.com", "203.0.113.12")
        })
        .fails(DnsStat::NoWebGroup)
        .blocked(&["203.0.113.12"]),
        case("**.deep.example.org, one label", "x.deep.example.org", TYPE_A, |id| {
            one_a(id, "x.deep.example.org", "203.0.113.13")
        })
        .learns(&[("203.0.113.13", 300)]),
        case("**.deep.example.org, two labels", "x.y.deep.example.org", TYPE_A, |id| {
            one_a(id, "x.y.deep.example.org", "203.0.113.14")
        })
        .learns(&[("203.0.113.14", 300)]),
        case("a 63-byte name (the short table's longest)", LONG63, TYPE_A, |id| one_a(id, LONG63, "203.0.113.16"))
            .learns(&[("203.0.113.16", 300)]),
        case("a 64-byte name (the long table's shortest)", LONG64, TYPE_A, |id| one_a(id, LONG64, "203.0.113.17"))
            .learns(&[("203.0.113.17", 300)]),
        case("a name under a 70-byte **. zone", IN_ZONE70, TYPE_A, |id| one_a(id, IN_ZONE70, "203.0.113.18"))
            .learns(&[("203.0.113.18", 300)]),
        case("a long zone's own suffix is not in it", &ZONE70[11..], TYPE_A, |id| {
            one_a(id, &ZONE70[11..], "203.0.113.19")
        })
        .fails(DnsStat::NoWebGroup)
        .blocked(&["203.0.113.19"]),
        case("**.deep.example.org never covers deep.example.org", "deep.example.org", TYPE_A, |id| {
            one_a(id, "deep.example.org", "203.0.113.15")
        })
        .fails(DnsStat::NoWebGroup)
        .blocked(&["203.0.113.15"]),
        // CNAME chains.
        case("CNAME chain", API, TYPE_A, |id| {
            Message::response(id, API, TYPE_A)
                .cname(API, "edge.cdn.net", 300)
                .a("edge.cdn.net", v4("203.0.113.7"), 300)
                .to_bytes()
        })
        .learns(&[("203.0.113.7", 300)]),
        case("CNAME chain, compressed", API, TYPE_A, |id| {
            Message::response(id, API, TYPE_A)
                .cname(API, "edge.cdn.net", 300)
                .a("edge.cdn.net", v4("203.0.113.8"), 300)
                .compress(true)
                .to_bytes()
        })
        .learns(&[("203.0.113.8", 300)]),
        case("two CNAMEs, compressed", API, TYPE_A, |id| {
            Message::response(id, API, TYPE_A)
                .cname(API, "a.cdn.net", 300)
                .cname("a.cdn.net", "b.cdn.net", 300)
                .a("b.cdn.net", v4("203.0.113.9"), 300)
                .compress(true)
                .to_bytes()
        })
        .learns(&[("203.0.113.9", 300)]),
        // Nothing to learn.
        case("a name in no WebGroup", "evil.com", TYPE_A, |id| one_a(id, "evil.com", "203.0.113.20"))
            .fails(DnsStat::NoWebGroup)
            .blocked(&["203.0.113.20"]),
        case("NXDOMAIN", API, TYPE_A, |id| Message::response(id, API, TYPE_A).rcode(3).to_bytes())
            .fails(DnsStat::NoAnswer),
        case("NOERROR, no records", API, TYPE_A, |id| Message::response(id, API, TYPE_A).to_bytes())
            .fails(DnsStat::NoAnswer),
    ]
}

#[test]
fn learns_addresses_of_webgroup_names() {
    let mut h = Harness::new();
    let cases: Vec<Case> = learning_cases().into_iter().chain(name_matching_cases()).collect();
    run_all(&mut h, &cases);
}

#[test]
fn spoofed_and_unwanted_answers_teach_nothing() {
    let mut h = Harness::new();
    let cases = vec![
        case("answer from a non-resolver address", API, TYPE_A, |id| api_a(id, &["203.0.113.40"], 300))
            .twist(Twist::From("10.10.0.3"))
            // Not from a resolver: not even examined.
            .counts(&[(DnsStat::AnswerSeen, 0)])
            .blocked(&["203.0.113.40"]),
        case("answer to another port of the workload", API, TYPE_A, |id| api_a(id, &["203.0.113.41"], 300))
            .twist(Twist::WrongPort)
            .fails(DnsStat::Unsolicited)
            .blocked(&["203.0.113.41"]),
        case("wrong transaction id", API, TYPE_A, |id| api_a(id, &["203.0.113.42"], 300))
            .twist(Twist::WrongId)
            .fails(DnsStat::Unsolicited)
            .blocked(&["203.0.113.42"]),
        case("answer to the neighbour, who did not ask", API, TYPE_A, |id| api_a(id, &["203.0.113.53"], 300))
            .twist(Twist::ToNeighbour)
            .fails(DnsStat::Unsolicited)
            .blocked(&["203.0.113.53"]),
        case("no query outstanding", API, TYPE_A, |id| api_a(id, &["203.0.113.43"], 300))
            .twist(Twist::NoQuery)
            .fails(DnsStat::Unsolicited)
            .blocked(&["203.0.113.43"]),
        case("the same answer twice", API, TYPE_A, |id| api_a(id, &["203.0.113.44"], 300))
            .twist(Twist::Twice)
            .fails(DnsStat::Unsolicited),
        case("an A record off the chain", API, TYPE_A, |id| {
            Message::response(id, API, TYPE_A)
                .a(API, v4("203.0.113.45"), 300)
                .a("evil.com", v4("203.0.113.46"), 300)
                .to_bytes()
        })
        .learns(&[("203.0.113.45", 300)])
        .counts(&[(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, 1), (DnsStat::OffChain, 1)])
        .blocked(&["203.0.113.46"]),
        case("A records only in authority and additional", API, TYPE_A, |id| {
            Message::response(id, API, TYPE_A)
                .authority_a(API, v4("203.0.113.47"), 300)
                .additional_a(API, v4("203.0.113.48"), 300)
                .to_bytes()
        })
        .fails(DnsStat::NoAnswer)
        .blocked(&["203.0.113.47", "203.0.113.48"]),
        case("an additional A beside the answer", API, TYPE_A, |id| {
            Message::response(id, API, TYPE_A)
                .a(API, v4("203.0.113.49"), 300)
                .authority_a(API, v4("203.0.113.54"), 300)
                .additional_a(API, v4("203.0.113.50"), 300)
                .compress(true)
                .to_bytes()
        })
        .learns(&[("203.0.113.49", 300)])
        .blocked(&["203.0.113.50", "203.0.113.54"]),
        case("question not the one asked", "evil.com", TYPE_A, |id| api_a(id, &["203.0.113.51"], 300))
            .fails(DnsStat::QuestionMismatch)
            .blocked(&["203.0.113.51"]),
        case("question type not the one asked", API, TYPE_AAAA, |id| api_a(id, &["203.0.113.52"], 300))
            .fails(DnsStat::QuestionMismatch)
            .blocked(&["203.0.113.52"]),
        case("DNS over TCP split over segments", API, TYPE_A, |id| api_a(id, &["203.0.113.55"], 300))
            .tcp()
            .twist(Twist::LongFraming(100))
            .counts(&[(DnsStat::TcpSegmented, 1)])
            .blocked(&["203.0.113.55"]),
    ];
    run_all(&mut h, &cases);
}

/// A response header and the echoed question `api.openai.com` of `qtype`.
fn head(id: u16, qtype: u16, ancount: u16) -> Vec<u8> {
    let mut m = header(id, RESPONSE_FLAGS, 1, ancount, 0, 0);
    m.extend(question(&encode_name(API), qtype, CLASS_IN));
    m
}

/// An A record with this owner (wire form).
fn a_rr(owner: &[u8], addr: &str) -> Vec<u8> {
    rr(owner, TYPE_A, CLASS_IN, 300, &v4(addr))
}

/// Answers for `api.openai.com A` broken as RFC 9267 describes.
fn malformed() -> Vec<Case> {
    malformed_pointers().into_iter().chain(malformed_names()).chain(malformed_records()).collect()
}

/// `api.openai.com A`, answered by `answer`.
fn api_case(name: &'static str, answer: Answer) -> Case {
    case(name, API, TYPE_A, answer)
}

/// Bad compression pointers.
fn malformed_pointers() -> Vec<Case> {
    let q = api_case;
    vec![
        q("self pointer", |id| {
            let mut m = head(id, TYPE_A, 1);
            let at = m.len() as u16;
            m.extend(a_rr(&pointer(at), "203.0.113.60"));
            m
        })
        .fails(DnsStat::BadPointer)
        .blocked(&["203.0.113.60"]),
        q("pointer loop", |id| {
            // Record 1 (TXT) holds a pointer to record 2's owner, which
            // points back at it: entered backwards, then a loop.
            let mut m = head(id, TYPE_A, 2);
            let txt_rdata = m.len() + 2 + 10;
            let second_owner = txt_rdata + 2;
            m.extend(rr(&pointer(12), TYPE_TXT, CLASS_IN, 300, &pointer(second_owner as u16)));
            assert_eq!(m.len(), second_owner);
            m.extend(a_rr(&pointer(txt_rdata as u16), "203.0.113.61"));
            m
        })
        .fails(DnsStat::BadPointer)
        .blocked(&["203.0.113.61"]),
        q("forward pointer", |id| {
            // The A record's owner points forward at a later RDATA holding
            // `api.openai.com` in full: a lax parser would learn.
            let mut m = head(id, TYPE_A, 2);
            let target = m.len() + (2 + 10 + 4) + (2 + 10);
            m.extend(a_rr(&pointer(target as u16), "203.0.113.62"));
            m.extend(rr(&pointer(12), TYPE_TXT, CLASS_IN, 300, &encode_name(API)));
            m
        })
        .fails(DnsStat::BadPointer)
        .blocked(&["203.0.113.62"]),
        q("pointer past the end", |id| {
            let mut m = head(id, TYPE_A, 1);
            m.extend(a_rr(&pointer(0x3fff), "203.0.113.63"));
            m
        })
        .fails(DnsStat::BadPointer)
        .blocked(&["203.0.113.63"]),
        q("pointer cut by the end of the message", |id| {
            let mut m = head(id, TYPE_A, 1);
            m.push(0xc0);
            m
        })
        .fails(DnsStat::BadPointer),
    ]
}

/// Bad names: labels or names too long, no root label.
fn malformed_names() -> Vec<Case> {
    let q = api_case;
    vec![
        q("label of 64 bytes", |id| {
            let mut m = head(id, TYPE_A, 1);
            m.extend(a_rr(&encode_name(&format!("{}.openai.com", "a".repeat(64))), "203.0.113.64"));
            m
        })
        .fails(DnsStat::BadName)
        .blocked(&["203.0.113.64"]),
        q("name over 255 bytes", |id| {
            let mut m = head(id, TYPE_A, 1);
            let long = vec!["a".repeat(60); 5].join(".");
            m.extend(a_rr(&encode_name(&long), "203.0.113.65"));
            m
        })
        .fails(DnsStat::BadName)
        .blocked(&["203.0.113.65"]),
        q("name over 255 bytes through a pointer", |id| {
            // Two 63-byte labels, then a pointer to two more: each part
            // fits, the name (257 bytes on the wire) does not.
            let mut m = head(id, TYPE_A, 2);
            let tail = m.len() + 2 + 10;
            m.extend(rr(
                &pointer(12),
                TYPE_TXT,
                CLASS_IN,
                300,
                &encode_name(&format!("{}.{}", "c".repeat(63), "d".repeat(63))),
            ));
            let mut owner = labels(&format!("{}.{}", "a".repeat(63), "b".repeat(63)));
            owner.extend(pointer(tail as u16));
            m.extend(a_rr(&owner, "203.0.113.66"));
            m
        })
        .fails(DnsStat::BadName)
        .blocked(&["203.0.113.66"]),
        q("owner name without root label", |id| {
            let mut m = head(id, TYPE_A, 1);
            m.extend(labels(API));
            m
        })
        .fails(DnsStat::BadName),
        q("question without root label", |id| {
            let mut m = header(id, RESPONSE_FLAGS, 1, 0, 0, 0);
            m.extend(labels(API));
            m
        })
        .fails(DnsStat::BadName),
    ]
}

/// Bad RDATA, counts that lie, and messages that are not DNS answers.
fn malformed_records() -> Vec<Case> {
    let q = api_case;
    vec![
        q("A with RDLENGTH 5", |id| {
            let mut m = head(id, TYPE_A, 1);
            m.extend(rr(&pointer(12), TYPE_A, CLASS_IN, 300, &[203, 0, 113, 67, 0]));
            m
        })
        .fails(DnsStat::BadRdata)
        .blocked(&["203.0.113.67"]),
        case("AAAA with RDLENGTH 4", API, TYPE_AAAA, |id| {
            let mut m = head(id, TYPE_AAAA, 1);
            m.extend(rr(&pointer(12), TYPE_AAAA, CLASS_IN, 300, &[203, 0, 113, 68]));
            m
        })
        .fails(DnsStat::BadRdata)
        .blocked(&["203.0.113.68"]),
        q("RDATA past the end of the message", |id| {
            let mut m = head(id, TYPE_A, 1);
            m.extend(rr_with_len(&pointer(12), TYPE_A, CLASS_IN, 300, 4, &[203, 0]));
            m
        })
        .fails(DnsStat::Malformed),
        q("ANCOUNT 65535 with one record", |id| {
            Message::response(id, API, TYPE_A).a(API, v4("203.0.113.69"), 300).ancount(65535).to_bytes()
        })
        .fails(DnsStat::Malformed)
        .blocked(&["203.0.113.69"]),
        q("ANCOUNT 2 with one record", |id| {
            Message::response(id, API, TYPE_A).a(API, v4("203.0.113.70"), 300).ancount(2).to_bytes()
        })
        .fails(DnsStat::Malformed)
        .blocked(&["203.0.113.70"]),
        q("truncated header", |id| Message::response(id, API, TYPE_A).to_bytes()[..8].to_vec())
            .fails(DnsStat::Malformed),
        // An empty message is a header cut to nothing: examined or not, it
        // is malformed.
        q("empty UDP payload", |_| Vec::new()).counts(&[(DnsStat::Malformed, 1)]),
        q("not DNS: random bytes, QR clear", |_| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut b: Vec<u8> = (0..48)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            b[2] &= 0x7f;
            b
        })
        .fails(DnsStat::NotDns),
        q("not DNS: opcode STATUS", |id| {
            Message::response(id, API, TYPE_A)
                .a(API, v4("203.0.113.71"), 300)
                .flags(RESPONSE_FLAGS | 2 << 11)
                .to_bytes()
        })
        .fails(DnsStat::NotDns)
        .blocked(&["203.0.113.71"]),
        q("not DNS: no question", |id| {
            Message::response(id, API, TYPE_A).a(API, v4("203.0.113.72"), 300).qdcount(0).to_bytes()
        })
        .fails(DnsStat::NotDns)
        .blocked(&["203.0.113.72"]),
    ]
}

#[test]
fn malformed_answers_teach_nothing_and_pass() {
    let mut h = Harness::new();
    let mut cases = malformed();
    // The parser is left in a sane state: a good answer still teaches.
    cases.push(
        case("good answer after the malformed ones", API, TYPE_A, |id| api_a(id, &["203.0.113.99"], 300))
            .learns(&[("203.0.113.99", 300)]),
    );
    run_all(&mut h, &cases);
}

#[test]
fn malformed_answers_over_tcp_and_ipv6() {
    // The same messages, framed for TCP over IPv6: nothing learned, the
    // same counter ("empty UDP payload" becomes a zero length prefix). The
    // blocked addresses are IPv4, so only counters and the learned table
    // are compared here.
    let mut h = Harness::new();
    let cases: Vec<Case> = malformed()
        .into_iter()
        .map(|mut c| {
            c.blocked.clear();
            c.v6().tcp()
        })
        .collect();
    run_all(&mut h, &cases);
}

/// A `WebGroup` removed from the pack opens nothing for the groups after it:
/// its bit, still carried by the addresses learned for it, goes to no
/// other group until it is cleared from every learned entry; then it is
/// freed and may be reused, and those addresses stay denied.
#[test]
fn a_removed_webgroups_addresses_open_no_other_group() {
    use egress_policy::compile::compile_stable;
    let mut h = Harness::new();
    let x = h.exchange(false, false);
    let up = h.send_query("llm", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    h.deliver(&x.answer(&api_a(up, &["203.0.113.7"], 300)));
    assert_eq!(h.syn(x.workload, ip("203.0.113.7"), 443), PASS, "learned for llm");
    let llm_bit = h.llm.trailing_zeros();

    let swap = |h: &mut Harness, groups: &[&str]| {
        let webgroups = groups.iter().fold(String::new(), |mut out, g| {
            let _ = writeln!(out, "  {g}: {{ domains: [{g}.example.net] }}");
            out
        });
        let rules = groups.iter().enumerate().fold(String::new(), |mut out, (i, g)| {
            let _ = writeln!(out, "  - {{ name: allow-{g}, priority: {p}, source: workloads, destination: {{ webgroup: {g} }}, protocol: tcp, ports: [443], action: permit }}", p = i + 1);
            out
        });
        let text = format!(
            "version: 1\nmode: enforce\ndns: {{ resolvers: [10.10.0.2] }}\nsmartgroups:\n  workloads: {{ cidrs: [10.10.1.0/24] }}\nwebgroups:\n{webgroups}rules:\n{rules}  - {{ name: default-deny, priority: 1000, source: workloads, destination: any, action: deny }}\n"
        );
        let pack = load_sources(&[("swap.yaml".into(), text)]).expect("valid");
        h.dp.install(compile_stable(&pack, &h.dp.previous()).expect("compiles")).expect("installs");
        h.dp.retire_webgroup_bits().expect("retire")
    };
    // llm removed, pastebin added: pastebin does not get llm's bit.
    swap(&mut h, &["pastebin"]);
    assert_ne!(h.dp.webgroup_bit("pastebin"), Some(llm_bit), "a removed group's bit is not handed on while taken");
    assert_eq!(h.syn(x.workload, ip("203.0.113.7"), 443), DROP, "llm's address opens no other group");
    // The strip clears the bit from the learned entry; the next pass frees it.
    h.dp.wait_retiring().expect("strip");
    assert_eq!(h.dp.retire_webgroup_bits().expect("retire"), 1, "llm's bit freed");
    let key = LearnKey { workload: key16(x.workload), addr: key16(ip("203.0.113.7")) };
    assert_eq!(h.table()[&key].groups & h.llm, 0, "cleared from the learned entry");
    // Now reusable: a new group may get it, and the old address still opens nothing.
    swap(&mut h, &["pastebin", "other"]);
    assert_eq!(h.dp.webgroup_bit("other"), Some(llm_bit), "the freed bit is reused");
    assert_eq!(h.syn(x.workload, ip("203.0.113.7"), 443), DROP, "and llm's address still opens nothing");
}

/// An agent that adopts a pinned datapath keeps the `WebGroup` bits the
/// addresses in its learned table were learned under (numbering them
/// afresh would give one group's addresses to another).
#[test]
fn an_adopted_datapath_keeps_webgroup_bits() {
    use egress_agent::datapath::pin::PinDir;
    use egress_lab::bpffs::Bpffs;
    use egress_policy::compile::compile_stable;
    let pins = Bpffs::new("bits").expect("bpffs");
    let pack = |groups: &[&str]| {
        let webgroups = groups.iter().fold(String::new(), |mut out, g| {
            let _ = writeln!(out, "  {g}: {{ domains: [{g}.example.net] }}");
            out
        });
        let text = format!(
            "version: 1\nmode: enforce\ndns: {{ resolvers: [10.10.0.2] }}\nsmartgroups:\n  workloads: {{ cidrs: [10.10.1.0/24] }}\nwebgroups:\n{webgroups}rules:\n  - {{ name: default-deny, priority: 1000, source: workloads, destination: any, action: deny }}\n"
        );
        load_sources(&[("p.yaml".into(), text)]).expect("valid")
    };
    let before = {
        let mut dp = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
        dp.install(compile_stable(&pack(&["zeta"]), &dp.previous()).expect("compiles")).expect("installs");
        dp.install(compile_stable(&pack(&["zeta", "alpha"]), &dp.previous()).expect("compiles")).expect("installs");
        (dp.webgroup_bit("zeta").expect("zeta"), dp.webgroup_bit("alpha").expect("alpha"))
    }; // the agent goes; the pins stay
    assert_eq!(before, (0, 1), "numbered in order of arrival");
    let mut adopting = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
    assert!(adopting.adopted());
    adopting
        .install(compile_stable(&pack(&["zeta", "alpha"]), &adopting.previous()).expect("compiles"))
        .expect("installs");
    let after = (adopting.webgroup_bit("zeta").expect("zeta"), adopting.webgroup_bit("alpha").expect("alpha"));
    assert_eq!(after, before, "the same bits after adoption");
}

/// An answer that came in on a LAN interface (a workload forging the
/// resolver's answer, turned around by the gateway) teaches nothing, though
/// it matches the outstanding query in every field; the same answer from
/// upstream does.
#[test]
fn an_answer_that_came_in_on_a_lan_interface_teaches_nothing() {
    let mut h = Harness::new();
    h.dp.mark_lan("lo").expect("lo stands for a LAN interface here");
    let x = h.exchange(false, false);
    let up = h.send_query("forged", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    let answer = x.answer(&api_a(up, &["203.0.113.66"], 300));
    // `struct __sk_buff` with ingress_ifindex (offset 36) = lo's index, 1.
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&1u32.to_ne_bytes());
    let before = h.stats();
    let ret = {
        let prog = h.dp.tc_program(DNS_PROGRAM).expect("program");
        let opts = TestRunOptions { data_in: Some(&answer), ctx_in: Some(&ctx), ..Default::default() };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    };
    assert_eq!(ret, PASS, "passed, never dropped");
    expect_counts("from the LAN", &diff(&before, &h.stats()), &[(DnsStat::FromLan, 1)], true);
    assert_eq!(h.syn(x.workload, ip("203.0.113.66"), 443), DROP, "nothing learned");
    let o = h.deliver(&answer);
    expect_counts(
        "from upstream",
        &o.delta,
        &[(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, 1), (DnsStat::AddressNew, 1)],
        true,
    );
    assert_eq!(h.syn(x.workload, ip("203.0.113.66"), 443), PASS, "the same answer from upstream teaches");
}

/// A LAN interface that a resolver is reached through (one interface for
/// both sides) is left out of the interfaces the learner distrusts: real
/// answers arrive on it too.
#[test]
fn a_lan_interface_the_resolver_is_reached_through_is_not_distrusted() {
    let pack = |resolver: &str| {
        let text = PACK.replace("resolvers: [10.10.0.2, \"fd00:10::2\"]", &format!("resolvers: [{resolver}]"));
        compile(&load_sources(&[("p.yaml".into(), text)]).expect("valid")).expect("compiles")
    };
    let mut dp = Datapath::load().expect("datapath");
    dp.install(pack("127.0.0.5")).expect("installs"); // reached through lo
    dp.mark_lan("lo").expect("mark");
    assert!(dp.lans_shared_with_resolvers().contains("lo"), "lo carries the resolver's traffic");
    dp.install(pack("10.10.0.2")).expect("installs");
    dp.sync_lan_marks().expect("sync");
    assert!(dp.lans_shared_with_resolvers().is_empty(), "no resolver through lo any more");
}

/// Right after an adoption (no pack of the new agent's installed yet) a
/// resolver that is one of the gateway's own addresses stays a resolver:
/// its queries are judged and recorded, not passed as the gateway's own.
#[test]
fn a_resolver_on_the_gateway_stays_judged_across_an_adoption() {
    use egress_agent::datapath::local::local_addresses;
    use egress_agent::datapath::pin::PinDir;
    use egress_common::Reason;
    use egress_lab::bpffs::Bpffs;
    let pins = Bpffs::new("resolver").expect("bpffs");
    let text = PACK.replace("resolvers: [10.10.0.2, \"fd00:10::2\"]", "resolvers: [127.0.0.1]");
    let pack = load_sources(&[("p.yaml".into(), text)]).expect("valid");
    {
        let mut dp = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
    } // the agent goes; the pins stay
    let mut dp = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
    assert!(dp.adopted());
    dp.set_local_addresses(&local_addresses().expect("addresses")).expect("local"); // as a reload does first
    let before = dp.dns_stats().expect("stats")[DnsStat::QueryTracked as usize];
    let reasons = dp.reason_counts().expect("reasons");
    let frame = Spec::udp(ip(WORKLOAD4), ip("127.0.0.1"), 40000, 53)
        .with_payload(Message::query(7, API, TYPE_A).to_bytes())
        .build();
    let prog = dp.tc_program(TC_PROGRAM).expect("program");
    let ret = prog.test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() }).expect("run").return_value;
    assert_eq!(ret, PASS, "permitted to the resolver");
    let after = dp.reason_counts().expect("reasons");
    assert_eq!(
        after[Reason::ToGateway as usize],
        reasons[Reason::ToGateway as usize],
        "not passed as the gateway's own"
    );
    assert_eq!(after[Reason::Rule as usize], reasons[Reason::Rule as usize] + 1, "decided by a rule");
    assert_eq!(dp.dns_stats().expect("stats")[DnsStat::QueryTracked as usize], before + 1, "and recorded");
}

/// Pins whose live slot never got a pack (an agent that failed before its
/// first install) are no datapath to adopt: they judge nothing. And an
/// adopting agent with no pack of its own yet retires no `WebGroup` bit (it
/// does not know which the adopted pack uses).
#[test]
fn only_an_enforcing_datapath_is_adopted_and_its_bits_are_kept() {
    use egress_agent::datapath::pin::PinDir;
    use egress_lab::bpffs::Bpffs;
    let pins = Bpffs::new("gen0").expect("bpffs");
    drop(Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath")); // no install
    let dp = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
    assert!(!dp.adopted(), "generation 0 is nothing to adopt");
    drop(dp);
    {
        let mut dp = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
        let pack = load_sources(&[("t.yaml".into(), PACK.into())]).expect("valid");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
    }
    let mut dp = Datapath::load_pinned(PinDir::prepare(&pins.0).expect("pins")).expect("datapath");
    assert!(dp.adopted());
    assert_eq!(dp.retire_webgroup_bits().expect("retire"), 0);
    dp.wait_retiring().expect("wait");
    assert_eq!(dp.retire_webgroup_bits().expect("retire"), 0, "no strip was started");
    assert!(dp.previous().webgroup_bits.contains_key("llm"), "the adopted pack's bit stays taken");
}

/// A group removed and added back while its bit is being retired keeps
/// its bit, and the strip leaves it alone from then on.
#[test]
fn a_group_added_back_while_its_bit_retires_keeps_it() {
    use egress_policy::compile::compile_stable;
    let mut h = Harness::new();
    let llm_bit = h.llm.trailing_zeros();
    let llm_line = PACK.lines().find(|l| l.starts_with("  llm:")).expect("the llm WebGroup");
    let without =
        PACK.replace(llm_line, "  other: { domains: [other.example.net] }").replace("webgroup: llm", "webgroup: other");
    let install = |h: &mut Harness, text: &str| {
        let pack = load_sources(&[("t.yaml".into(), text.to_string())]).expect("valid");
        h.dp.install(compile_stable(&pack, &h.dp.previous()).expect("compiles")).expect("installs");
        h.dp.retire_webgroup_bits().expect("retire");
    };
    install(&mut h, &without); // llm's bit starts retiring
    install(&mut h, PACK); // and llm is back
    assert_eq!(h.dp.webgroup_bit("llm"), Some(llm_bit), "its old bit");
    let x = h.exchange(false, false);
    let up = h.send_query("back", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    h.deliver(&x.answer(&api_a(up, &["203.0.113.77"], 300)));
    // Let every strip run out (llm's, then `other`'s, now gone too).
    for _ in 0..3 {
        h.dp.wait_retiring().expect("strip ends");
        h.dp.retire_webgroup_bits().expect("retire");
    }
    assert_eq!(h.dp.previous().webgroup_bits.get("llm"), Some(&llm_bit), "llm's bit is not freed");
    assert!(!h.dp.previous().webgroup_bits.contains_key("other"), "the group gone since is retired and freed");
    assert_eq!(h.syn(x.workload, ip("203.0.113.77"), 443), PASS, "not stripped from what llm learned since");
}

/// An answer to the question `q` (wire form, type A) holding `records`.
fn answer_to(id: u16, q: &[u8], records: &[Vec<u8>]) -> Vec<u8> {
    let mut m = header(id, RESPONSE_FLAGS, 1, u16::try_from(records.len()).expect("few records"), 0, 0);
    m.extend(question(q, TYPE_A, CLASS_IN));
    for r in records {
        m.extend_from_slice(r);
    }
    m
}

/// Delivers an answer frame: passed, exactly `want` counted (`AnswerSeen`
/// included); the addresses learned.
/// `frame`, an answer whose names have unreadable bytes, teaches nothing
/// (counted `bad_name`), and `addr`, which it gave, stays closed to
/// `workload`.
fn teaches_nothing(h: &mut Harness, what: &str, workload: IpAddr, frame: &[u8], addr: IpAddr) {
    let bad = [(DnsStat::AnswerSeen, 1), (DnsStat::BadName, 1)];
    assert_eq!(taught(h, what, frame, &bad), Vec::<IpAddr>::new(), "{what}: nothing learned");
    assert_eq!(h.syn(workload, addr, 443), DROP, "{what}: not opened");
}

fn taught(h: &mut Harness, what: &str, frame: &[u8], want: &[(DnsStat, u64)]) -> Vec<IpAddr> {
    let out = h.deliver(frame);
    assert_eq!(out.ret, PASS, "{what}: passed");
    expect_counts(what, &out.delta, want, true);
    out.learned.iter().map(|(k, _)| from_key16(k.addr)).collect()
}

/// Names whose labels hold bytes other than letters, digits, `-` and `_`
/// teach nothing (`bad_name`): a question `\000api.openai.com` (the NUL
/// would vanish into the zero padding of the right-aligned name key and
/// match `api.openai.com`), and on the question's chain an owner or CNAME
/// target with a `.` inside a label (`api.openai` `com` hashes as
/// `api.openai.com` does). Off the chain such an owner is only off the
/// chain. The query program no longer records such a question at all.
#[test]
fn names_with_unreadable_bytes_teach_nothing() {
    use egress_common::QueryKey;
    let mut h = Harness::new();
    let nul_api = encode_labels(&[b"\0api", b"openai", b"com"]);
    let dotted_api = encode_labels(&[b"api.openai", b"com"]);
    let dotted_cdn = encode_labels(&[b"cdn.x", b"net"]);

    // The question `\000api.openai.com`: the query program does not record
    // it; recorded by hand, its answer still teaches nothing.
    let x = h.exchange(false, false);
    let before = h.stats();
    let mut q = answer_to(x.id, &nul_api, &[]);
    q[2..4].copy_from_slice(&egress_lab::dnsmsg::QUERY_FLAGS.to_be_bytes());
    assert_eq!(h.run(TC_PROGRAM, &x.query(&q)), PASS, "query filter off: passed");
    expect_counts("NUL question (query)", &diff(&before, &h.stats()), &[(DnsStat::BadName, 1)], true);
    let key = QueryKey {
        workload: key16(x.workload),
        resolver: key16(x.resolver),
        workload_port_be: x.port.to_be(),
        txid_be: x.id.to_be(),
        proto: 17,
        _pad: [0; 3],
    };
    h.dp.track_query(&key, "\0api.openai.com", TYPE_A).expect("recorded");
    let msg = answer_to(x.id, &nul_api, &[a_rr(&pointer(12), "203.0.113.80")]);
    teaches_nothing(&mut h, "NUL question", x.workload, &x.answer(&msg), ip("203.0.113.80"));

    // A clean question; on its chain, an owner with a `.` inside a label.
    let x = h.exchange(false, false);
    let up = h.send_query("dotted owner", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    let msg = answer_to(up, &encode_name(API), &[a_rr(&dotted_api, "203.0.113.81")]);
    teaches_nothing(&mut h, "dotted owner", x.workload, &x.answer(&msg), ip("203.0.113.81"));

    // A CNAME to a target with a `.` inside a label, whose address is
    // given under the clean name that hashes alike.
    let x = h.exchange(false, false);
    let up = h.send_query("dotted CNAME target", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    let msg = answer_to(
        up,
        &encode_name(API),
        &[rr(&pointer(12), TYPE_CNAME, CLASS_IN, 300, &dotted_cdn), a_rr(&encode_name("cdn.x.net"), "203.0.113.82")],
    );
    teaches_nothing(&mut h, "dotted CNAME target", x.workload, &x.answer(&msg), ip("203.0.113.82"));

    // Off the chain, such an owner does not spoil the answer.
    let x = h.exchange(false, false);
    let up = h.send_query("off-chain", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    let msg = answer_to(
        up,
        &encode_name(API),
        &[a_rr(&pointer(12), "203.0.113.83"), a_rr(&encode_labels(&[b"x y", b"example"]), "203.0.113.84")],
    );
    let got = taught(
        &mut h,
        "off-chain",
        &x.answer(&msg),
        &[(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, 1), (DnsStat::OffChain, 1)],
    );
    assert_eq!(got, vec![ip("203.0.113.83")], "off-chain: the chain's address learned");
}

/// Devices made for a test in this namespace, deleted on drop.
struct Links(Vec<String>);

impl Links {
    fn ip(&mut self, args: &[&str], name: &str) -> std::io::Result<()> {
        egress_lab::netns::ip(args)?;
        self.0.push(name.to_string());
        Ok(())
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let _ = egress_lab::netns::ip(&["link", "del", name]);
        }
    }
}

fn ifindex(name: &str) -> u32 {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).expect("the device exists");
    text.trim().parse().expect("an ifindex")
}

/// Runs an answer frame through `egress_dns` as if it came in on `ifindex`
/// (`struct __sk_buff`'s `ingress_ifindex`, offset 36).
fn deliver_on(h: &mut Harness, frame: &[u8], ifindex: u32) -> Vec<u64> {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ifindex.to_ne_bytes());
    let before = h.stats();
    let prog = h.dp.tc_program(DNS_PROGRAM).expect("program");
    let opts = TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), ..Default::default() };
    assert_eq!(prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value, PASS, "passed, never dropped");
    diff(&before, &h.stats())
}

/// An answer that came in on an upper device of a LAN interface (a VLAN
/// `lan.100` after the kernel stripped the tag, a macvlan, a bridge the
/// LAN is a port of, and so on up) teaches nothing either; the uppers are
/// marked on the upkeep after they appear, and unmarked once they are gone.
#[test]
fn an_answer_that_came_in_on_an_upper_device_of_a_lan_teaches_nothing() {
    let mut h = Harness::new();
    let n = std::process::id() % 100_000;
    let (lan, peer, bridge) = (format!("egl{n}a"), format!("egl{n}b"), format!("egl{n}br"));
    let mut links = Links(Vec::new());
    links.ip(&["link", "add", &lan, "type", "veth", "peer", "name", &peer], &lan).expect("veth pair");
    h.dp.mark_lan(&lan).expect("mark");
    assert_eq!(h.dp.lan_ifindexes().expect("marks"), BTreeSet::from([ifindex(&lan)]), "the LAN alone so far");

    // Created after the LAN was marked, as a VLAN added while the agent
    // runs: an 802.1Q device, or a macvlan where the kernel has no 8021q.
    let vlan = format!("{lan}.100");
    let upper = match links.ip(&["link", "add", "link", &lan, "name", &vlan, "type", "vlan", "id", "100"], &vlan) {
        Ok(()) => vlan,
        Err(e) => {
            eprintln!("no VLAN device ({e}); a macvlan stands in for it");
            let mac = format!("egl{n}m");
            links.ip(&["link", "add", "link", &lan, "name", &mac, "type", "macvlan"], &mac).expect("macvlan");
            mac
        }
    };
    // ... and a bridge with the VLAN device as a port: two levels up.
    links.ip(&["link", "add", &bridge, "type", "bridge"], &bridge).expect("bridge");
    egress_lab::netns::ip(&["link", "set", &upper, "master", &bridge]).expect("enslave");
    h.dp.sync_lan_marks().expect("upkeep"); // what the agent's 5 s upkeep runs
    let want = BTreeSet::from([ifindex(&lan), ifindex(&upper), ifindex(&bridge)]);
    assert_eq!(h.dp.lan_ifindexes().expect("marks"), want, "the LAN and its uppers after one upkeep");

    for (on, addr) in [(&upper, "203.0.113.67"), (&bridge, "203.0.113.68")] {
        let x = h.exchange(false, false);
        let up = h.send_query(on, &x, &Message::query(x.id, API, TYPE_A).to_bytes());
        let answer = x.answer(&api_a(up, &[addr], 300));
        let delta = deliver_on(&mut h, &answer, ifindex(on));
        expect_counts(&format!("from {on}"), &delta, &[(DnsStat::FromLan, 1)], true);
        assert_eq!(h.syn(x.workload, ip(addr), 443), DROP, "nothing learned from {on}");
        let o = h.deliver(&answer);
        expect_counts(
            "from upstream",
            &o.delta,
            &[(DnsStat::AnswerSeen, 1), (DnsStat::AddressLearned, 1), (DnsStat::AddressNew, 1)],
            true,
        );
        assert_eq!(h.syn(x.workload, ip(addr), 443), PASS, "the same answer from upstream teaches");
    }

    egress_lab::netns::ip(&["link", "del", &bridge]).expect("bridge deleted");
    h.dp.sync_lan_marks().expect("upkeep");
    let want = BTreeSet::from([ifindex(&lan), ifindex(&upper)]);
    assert_eq!(h.dp.lan_ifindexes().expect("marks"), want, "a deleted upper is unmarked");
}

/// A LAN interface a resolver is reached through stays unmarked, and so do
/// its upper devices; a resolver reached through an upper leaves that
/// upper unmarked, while the LAN under it stays marked.
#[test]
fn the_uppers_of_a_lan_the_resolver_is_reached_through_stay_unmarked() {
    let n = std::process::id() % 100_000;
    let net = format!("10.213.{}", n % 250);
    let (lan, peer, mac) = (format!("egs{n}a"), format!("egs{n}b"), format!("egs{n}m"));
    let mut links = Links(Vec::new());
    links.ip(&["link", "add", &lan, "type", "veth", "peer", "name", &peer], &lan).expect("veth pair");
    links.ip(&["link", "add", "link", &lan, "name", &mac, "type", "macvlan"], &mac).expect("macvlan");
    for dev in [&peer, &lan, &mac] {
        egress_lab::netns::ip(&["link", "set", dev, "up"]).expect("up");
    }
    egress_lab::netns::ip(&["addr", "add", &format!("{net}.1/28"), "dev", &lan]).expect("address on the LAN");
    egress_lab::netns::ip(&["addr", "add", &format!("{net}.17/28"), "dev", &mac]).expect("address on the upper");
    let pack = |resolver: &str| {
        let text = PACK.replace("resolvers: [10.10.0.2, \"fd00:10::2\"]", &format!("resolvers: [{resolver}]"));
        compile(&load_sources(&[("p.yaml".into(), text)]).expect("valid")).expect("compiles")
    };
    let mut dp = Datapath::load().expect("datapath");
    dp.install(pack(&format!("{net}.5"))).expect("installs"); // reached through the LAN
    dp.mark_lan(&lan).expect("mark");
    assert!(dp.lans_shared_with_resolvers().contains(&lan), "the LAN carries the resolver's traffic");
    assert_eq!(dp.lan_ifindexes().expect("marks"), BTreeSet::new(), "neither the LAN nor its upper is marked");
    dp.install(pack(&format!("{net}.21"))).expect("installs"); // reached through the upper
    dp.sync_lan_marks().expect("sync");
    assert!(dp.lans_shared_with_resolvers().contains(&mac), "the upper carries the resolver's traffic");
    assert_eq!(dp.lan_ifindexes().expect("marks"), BTreeSet::from([ifindex(&lan)]), "the LAN alone is marked");
    dp.install(pack("10.10.0.2")).expect("installs");
    dp.sync_lan_marks().expect("sync");
    assert_eq!(dp.lan_ifindexes().expect("marks"), BTreeSet::from([ifindex(&lan), ifindex(&mac)]), "both marked");
}

/// Found by the kernel fuzzer: a receiver reads a UDP datagram only as
/// far as its length says, so an answer record past that length (in the
/// IP datagram, never in the message the workload reads) teaches nothing.
/// On the code before it the record was learned.
#[test]
fn records_past_the_udp_length_teach_nothing() {
    let mut h = Harness::new();
    let x = h.exchange(false, false);
    let id = h.send_query("udp length", &x, &Message::query(x.id, API, TYPE_A).to_bytes());
    let one = api_a(id, &["198.51.100.61"], 300);
    let two = api_a(id, &["198.51.100.61", "198.51.100.62"], 300);
    let mut frame = x.answer(&two);
    let udp = 14 + 20;
    frame[udp + 4..udp + 6].copy_from_slice(&u16::try_from(8 + one.len()).expect("short").to_be_bytes());
    let out = h.deliver(&frame);
    assert_eq!(out.ret, PASS, "passed");
    let learned: Vec<IpAddr> = out.learned.iter().map(|(k, _)| from_key16(k.addr)).collect();
    assert!(!learned.contains(&ip("198.51.100.62")), "the record past the UDP length: {learned:?}");
    assert_eq!(h.syn(x.workload, ip("198.51.100.62"), 443), DROP, "not opened");
}
