//! The gateway's transaction ids through `BPF_PROG_TEST_RUN` (issue 14,
//! item 2). A workload chooses every field of its query, so a recorded
//! query leaves `egress_tc` with an id the gateway drew, its checksum still
//! valid; only an answer carrying that id teaches, and it leaves
//! `egress_dns` with the workload's own id back, its checksum valid. An
//! answer with the workload's id (all that an accomplice who did not see
//! the query leave the gateway can know) passes unchanged and teaches
//! nothing. Needs root, as the whole suite does.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{DNS_PROGRAM, Datapath, TC_PROGRAM};
use egress_common::DnsStat;
use egress_lab::dnsmsg::{Message, TYPE_A, tcp_framed};
use egress_lab::packet::{Spec, l4_checksum, with_l4_checksum};
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
dns:
  resolvers: [10.10.0.2, "fd00:10::2"]
smartgroups:
  workloads: { cidrs: [10.10.1.0/24, "fd00:10:1::/64"] }
webgroups:
  llm: { domains: [api.openai.com] }
rules:
  - { name: allow-llm, priority: 10, source: workloads, destination: { webgroup: llm }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, protocol: any, ports: [53], action: permit }
  - { name: default-deny, priority: 1000, source: workloads, destination: any, action: deny }
"#;

const PASS: u32 = -1i32 as u32; // TC_ACT_UNSPEC
const DROP: u32 = 2; // TC_ACT_SHOT
const API: &str = "api.openai.com";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

struct Harness {
    dp: Datapath,
    next_port: u16,
}

/// One workload socket talking to a resolver.
#[derive(Clone, Copy)]
struct Flow {
    workload: IpAddr,
    resolver: IpAddr,
    port: u16,
    tcp: bool,
}

impl Flow {
    fn frame(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, msg: &[u8]) -> Vec<u8> {
        let spec = if self.tcp { Spec::tcp(src, dst, sport, dport) } else { Spec::udp(src, dst, sport, dport) };
        let payload = if self.tcp { tcp_framed(msg) } else { msg.to_vec() };
        with_l4_checksum(spec.with_payload(payload).build())
    }
    fn query(&self, msg: &[u8]) -> Vec<u8> {
        self.frame(self.workload, self.port, self.resolver, 53, msg)
    }
    fn answer(&self, msg: &[u8]) -> Vec<u8> {
        self.frame(self.resolver, 53, self.workload, self.port, msg)
    }
}

impl Harness {
    fn new() -> Self {
        let pack = load_sources(&[("test.yaml".into(), PACK.into())]).expect("test pack is valid");
        let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
        Harness { dp, next_port: 40000 }
    }

    fn flow(&mut self, v6: bool, tcp: bool) -> Flow {
        self.dp.renew_lease().expect("lease");
        self.next_port += 1;
        let (workload, resolver) = if v6 { ("fd00:10:1::10", "fd00:10::2") } else { ("10.10.1.10", "10.10.0.2") };
        Flow { workload: ip(workload), resolver: ip(resolver), port: self.next_port, tcp }
    }

    fn run(&mut self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.dp.tc_program(program).expect("program");
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn stat(&self, stat: DnsStat) -> u64 {
        self.dp.dns_stats().expect("dns stats")[stat as usize]
    }

    /// Sends a query for `API` with id `id`: recorded, passed with only
    /// its id changed and a valid checksum. The id it left with.
    fn query(&mut self, what: &str, f: &Flow, id: u16) -> u16 {
        let msg = Message::query(id, API, TYPE_A).to_bytes();
        let frame = f.query(&msg);
        let tracked = self.stat(DnsStat::QueryTracked);
        let (ret, out) = self.run(TC_PROGRAM, &frame);
        assert_eq!(ret, PASS, "{what}: the query passes");
        assert_eq!(self.stat(DnsStat::QueryTracked), tracked + 1, "{what}: recorded");
        let at = frame.len() - msg.len();
        assert_eq!(out.len(), frame.len(), "{what}: same length");
        assert_eq!(out[at + 2..], frame[at + 2..], "{what}: the message is the same past its id");
        checksum_valid(what, &out);
        let (field, _) = l4_checksum(&out);
        let mut masked = (out.clone(), frame.clone());
        for f in [&mut masked.0, &mut masked.1] {
            f[at..at + 2].fill(0);
            f[field..field + 2].fill(0);
        }
        assert_eq!(masked.0, masked.1, "{what}: nothing but the id and the checksum changed");
        u16::from_be_bytes([out[at], out[at + 1]])
    }

    /// Whether `addr` was learned for the workload, and (from an IPv4
    /// workload) a SYN to `addr`:443 passes accordingly.
    fn reaches(&mut self, f: &Flow, addr: &str) -> bool {
        let mapped = |a: IpAddr| match a {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let (workload, target) = (mapped(f.workload), mapped(ip(addr)));
        let learned =
            self.dp.learned().expect("learned table").iter().any(|(k, _)| k.workload == workload && k.addr == target);
        if f.workload.is_ipv4() {
            self.next_port += 1;
            // A SYN without data, as clients send it.
            let mut spec = Spec::tcp(f.workload, ip(addr), self.next_port, 443);
            spec.payload = 0;
            let frame = spec.build();
            let (ret, _) = self.run(TC_PROGRAM, &frame);
            assert_eq!(ret == PASS, learned, "a SYN to {addr}:443 passes if and only if it was learned");
            assert!(ret == PASS || ret == DROP, "a verdict");
        }
        learned
    }
}

/// The frame's TCP or UDP checksum is right (an absent IPv4 UDP checksum
/// stays absent; TCP's 0 and `0xffff` are the same one's-complement zero).
fn checksum_valid(what: &str, frame: &[u8]) {
    let (field, want) = l4_checksum(frame);
    let got = u16::from_be_bytes([frame[field], frame[field + 1]]);
    let same = got == want || (got | want == 0xffff && got & want == 0);
    assert!(same, "{what}: checksum {got:#06x}, want {want:#06x}");
}

fn api_answer(id: u16, addr: [u8; 4]) -> Vec<u8> {
    Message::response(id, API, TYPE_A).a(API, addr, 300).to_bytes()
}

#[test]
fn each_query_leaves_with_the_gateways_id_and_its_answer_brings_the_workloads_back() {
    let mut h = Harness::new();
    let mut changed = 0;
    for (i, (v6, tcp)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
        for round in 0..2u8 {
            let what =
                format!("{} over {}, round {round}", if v6 { "IPv6" } else { "IPv4" }, if tcp { "TCP" } else { "UDP" });
            let f = h.flow(v6, tcp);
            let id = 0x7100 + i as u16 * 2 + u16::from(round);
            let up = h.query(&what, &f, id);
            changed += usize::from(up != id);
            let addr = [203, 0, 113, 100 + (i as u8) * 2 + round];
            let addr_s = std::net::Ipv4Addr::from(addr).to_string();
            let msg = api_answer(up, addr);
            let frame = f.answer(&msg);
            let learned = h.stat(DnsStat::AddressLearned);
            let (ret, out) = h.run(DNS_PROGRAM, &frame);
            assert_eq!(ret, PASS, "{what}: the answer passes");
            assert_eq!(h.stat(DnsStat::AddressLearned), learned + 1, "{what}: the gateway's id teaches");
            let at = frame.len() - msg.len();
            assert_eq!(out[at..at + 2], id.to_be_bytes(), "{what}: the workload's own id is back");
            assert_eq!(out[at + 2..], frame[at + 2..], "{what}: the message is the same past its id");
            checksum_valid(&what, &out);
            assert!(h.reaches(&f, &addr_s), "{what}: the address was learned");
        }
    }
    assert!(changed > 0, "the ids on the wire are the gateway's, not the workload's");

    // An absent IPv4 UDP checksum stays absent.
    let f = h.flow(false, false);
    let msg = Message::query(0x7200, API, TYPE_A).to_bytes();
    let mut frame = f.query(&msg);
    let (field, _) = l4_checksum(&frame);
    frame[field..field + 2].fill(0);
    let (ret, out) = h.run(TC_PROGRAM, &frame);
    assert_eq!(ret, PASS);
    assert_eq!(out[field..field + 2], [0, 0], "no checksum stays no checksum");
}

#[test]
fn an_answer_with_the_workloads_own_id_teaches_nothing() {
    let mut h = Harness::new();
    for (v6, tcp) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!("{} over {}", if v6 { "IPv6" } else { "IPv4" }, if tcp { "TCP" } else { "UDP" });
        // The workload's id and the gateway's differ (drawn again in the
        // rare case they do not).
        let (f, id, up) = loop {
            let f = h.flow(v6, tcp);
            let up = h.query(&what, &f, 0x4242);
            if up != 0x4242 {
                break (f, 0x4242, up);
            }
        };
        let evil = [203, 0, 113, 66];
        let forged = f.answer(&api_answer(id, evil));
        let (unsolicited, learned) = (h.stat(DnsStat::Unsolicited), h.stat(DnsStat::AddressLearned));
        let (ret, out) = h.run(DNS_PROGRAM, &forged);
        assert_eq!(ret, PASS, "{what}: the forged answer passes");
        assert_eq!(out, forged, "{what}: unchanged");
        assert_eq!(h.stat(DnsStat::AddressLearned), learned, "{what}: the forged answer taught nothing");
        assert_eq!(h.stat(DnsStat::Unsolicited), unsolicited + 1, "{what}: counted as unsolicited");
        assert!(!h.reaches(&f, "203.0.113.66"), "{what}: the forged address stays denied");

        // The query is still outstanding: the resolver's answer teaches.
        let (ret, out) = h.run(DNS_PROGRAM, &f.answer(&api_answer(up, [203, 0, 113, 67])));
        assert_eq!(ret, PASS);
        assert_eq!(h.stat(DnsStat::AddressLearned), learned + 1, "{what}: the genuine answer teaches");
        checksum_valid(&what, &out);
        assert!(h.reaches(&f, "203.0.113.67"), "{what}: the genuine address is reachable");
        assert!(!h.reaches(&f, "203.0.113.66"), "{what}: the forged one still is not");
    }
}

/// Issue 14, hole 1 (answers): a resolver may write its answers to glibc's
/// A and AAAA pair into one TCP segment. Both teach, and both get their
/// workload's id back (the second by the second-answer program, reached by
/// tail call). Fails on the code before: only the first message of a
/// segment was read, and its second answer kept the gateway's id.
#[test]
fn two_answers_in_one_tcp_segment_both_teach_and_both_get_their_ids_back() {
    let mut h = Harness::new();
    let f = h.flow(false, true);
    let (id1, id2) = (0x7301, 0x7302);
    let up1 = h.query("first query", &f, id1);
    let up2 = h.query("second query", &f, id2);
    let (m1, m2) = (api_answer(up1, [203, 0, 113, 150]), api_answer(up2, [203, 0, 113, 151]));
    let spec = Spec::tcp(f.resolver, f.workload, 53, f.port);
    let frame = with_l4_checksum(spec.with_payload([tcp_framed(&m1), tcp_framed(&m2)].concat()).build());
    let learned = h.stat(DnsStat::AddressLearned);
    let (ret, out) = h.run(DNS_PROGRAM, &frame);
    assert_eq!(ret, PASS, "the segment passes");
    assert_eq!(h.stat(DnsStat::AddressLearned), learned + 2, "both answers teach");
    let at1 = frame.len() - (m1.len() + 2 + m2.len());
    let at2 = frame.len() - m2.len();
    assert_eq!(out[at1..at1 + 2], id1.to_be_bytes(), "the first answer has its workload's id back");
    assert_eq!(out[at2..at2 + 2], id2.to_be_bytes(), "the second answer has its workload's id back");
    checksum_valid("two answers", &out);
    assert!(h.reaches(&f, "203.0.113.150") && h.reaches(&f, "203.0.113.151"), "both addresses learned");
}
