//! The query filter's REFUSED answer, built in place by the real programs
//! under `BPF_PROG_TEST_RUN`: the output frame is checked byte by byte,
//! checksum included.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, TC_PROGRAM};
use egress_common::DnsStat;
use egress_lab::dnsmsg::{Message, encode_labels};
use egress_lab::packet::{L4, Spec};
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

const TC_ACT_REDIRECT: u32 = 7;
const PASS: u32 = -1i32 as u32;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One's-complement sum of 16-bit words.
fn sum16(bytes: &[u8], mut acc: u32) -> u32 {
    for c in bytes.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// UDP-over-IPv6 checksum of a frame (Ethernet, IPv6 without extension
/// headers), with the checksum field taken as zero.
fn udp6_checksum(frame: &[u8]) -> u16 {
    let ip6 = &frame[14..];
    let udp = &ip6[40..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip6[8..40]);
    pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let mut seg = udp.to_vec();
    seg[6] = 0;
    seg[7] = 0;
    let c = !fold(sum16(&seg, sum16(&pseudo, 0)));
    if c == 0 { 0xffff } else { c }
}

fn run(dp: &mut Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 64];
    let prog = dp.tc_program(TC_PROGRAM).expect("program");
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() })
        .expect("test run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// A sanctioned query over UDP and IPv4 (no checksum) is forwarded as it
/// came but for its transaction id, which is the gateway's on the wire.
fn forwarded(what: &str, frame: &[u8], (ret, out): (u32, Vec<u8>)) {
    assert_eq!(ret, PASS, "{what}: forwarded");
    let id = 14 + 20 + 8;
    assert_eq!(out.len(), frame.len(), "{what}: same length");
    assert_eq!((&out[..id], &out[id + 2..]), (&frame[..id], &frame[id + 2..]), "{what}: unchanged but for the id");
}

/// The datapath with `PACK` installed.
fn loaded() -> Datapath {
    let pack = load_sources(&[("t.yaml".into(), PACK.into())]).expect("pack");
    let mut dp = Datapath::load().expect("datapath loads (run as root)");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    dp
}

/// A DNS query for `name` (type A) in the frame `spec` describes; framed
/// for TCP when `spec` is TCP.
fn query(spec: Spec, id: u16, name: &str) -> Vec<u8> {
    let msg = Message::query(id, name, 1).to_bytes();
    let payload = if matches!(spec.l4, L4::Tcp { .. }) { egress_lab::dnsmsg::tcp_framed(&msg) } else { msg };
    spec.with_payload(payload).build()
}

#[test]
fn refused_queries_are_answered_in_place() {
    let mut dp = loaded();

    // A sanctioned name goes to the resolver untouched.
    let ok = query(Spec::udp(ip("10.10.1.10"), ip("10.10.0.2"), 5000, 53), 1, "api.openai.com");
    forwarded("a sanctioned name", &ok, run(&mut dp, &ok));

    // IPv4: an unsanctioned name is answered REFUSED.
    let before = dp.dns_stats().expect("stats")[DnsStat::QueryRefused as usize];
    let q = Spec::udp(ip("10.10.1.10"), ip("10.10.0.2"), 5001, 53)
        .with_payload(Message::query(0x1234, "tunnel.evil.example", 16).to_bytes())
        .build();
    let (ret, out) = run(&mut dp, &q);
    assert_eq!(ret, TC_ACT_REDIRECT, "sent back out of the interface");
    assert_eq!(dp.dns_stats().expect("stats")[DnsStat::QueryRefused as usize], before + 1);
    assert_eq!(&out[0..6], &q[6..12], "MACs swapped");
    assert_eq!(&out[6..12], &q[0..6]);
    assert_eq!(&out[14 + 12..14 + 16], &q[14 + 16..14 + 20], "addresses swapped");
    assert_eq!(&out[14 + 16..14 + 20], &q[14 + 12..14 + 16]);
    let udp = 14 + 20;
    assert_eq!(&out[udp..udp + 2], &q[udp + 2..udp + 4], "ports swapped");
    assert_eq!(&out[udp + 2..udp + 4], &q[udp..udp + 2]);
    let dns = udp + 8;
    assert_eq!(&out[dns..dns + 2], &[0x12, 0x34], "same transaction id");
    let flags = u16::from_be_bytes([out[dns + 2], out[dns + 3]]);
    assert_eq!(flags & 0x8000, 0x8000, "QR set");
    assert_eq!(flags & 0x000f, 5, "RCODE REFUSED");
    assert_eq!(flags & 0x0100, 0x0100, "RD kept");
    assert_eq!(&out[dns + 4..dns + 6], &[0, 1], "question kept");
    assert_eq!(&out[dns + 6..dns + 10], &[0, 0, 0, 0], "no answers, no authority");
    assert_eq!(&out[dns + 12..], &q[dns + 12..], "question echoed");

    // IPv6: the UDP checksum is mandatory and must stay valid.
    let mut q6 = Spec::udp(ip("fd00:10:1::10"), ip("fd00:10::2"), 5002, 53)
        .with_payload(Message::query(7, "x.evil.example", 1).to_bytes())
        .build();
    let c = udp6_checksum(&q6);
    q6[14 + 40 + 6..14 + 40 + 8].copy_from_slice(&c.to_be_bytes());
    let (ret, out) = run(&mut dp, &q6);
    assert_eq!(ret, TC_ACT_REDIRECT);
    assert_eq!(&out[14 + 8..14 + 24], &q6[14 + 24..14 + 40], "addresses swapped");
    let got = u16::from_be_bytes([out[14 + 40 + 6], out[14 + 40 + 7]]);
    assert_eq!(got, udp6_checksum(&out), "UDP checksum valid after the rewrite");

    // Over TCP a refused query cannot be answered in place: dropped.
    let t = query(Spec::tcp(ip("10.10.1.10"), ip("10.10.0.2"), 5003, 53), 9, "evil.example");
    assert_eq!(run(&mut dp, &t).0, 2, "TC_ACT_SHOT");
}

/// With the agent's lease run out (the agent is down) and the query filter
/// enforcing, every lookup is refused, sanctioned names too: nothing new can
/// be learned, so names fail closed. Renewed, sanctioned names pass again.
#[test]
fn with_the_lease_run_out_every_query_is_refused() {
    let mut dp = loaded();
    let ok = query(Spec::udp(ip("10.10.1.10"), ip("10.10.0.2"), 5000, 53), 1, "api.openai.com");
    let tcp = query(Spec::tcp(ip("10.10.1.10"), ip("10.10.0.2"), 5003, 53), 9, "api.openai.com");
    dp.release_lease().expect("release");
    let before = dp.dns_stats().expect("stats");
    let (ret, out) = run(&mut dp, &ok);
    assert_eq!(ret, TC_ACT_REDIRECT, "a sanctioned name is refused with the agent down");
    let dns = 14 + 20 + 8;
    assert_eq!(out[dns + 3] & 0x0f, 5, "RCODE REFUSED");
    assert_eq!(run(&mut dp, &tcp).0, 2, "over TCP: dropped (TC_ACT_SHOT)");
    let after = dp.dns_stats().expect("stats");
    assert_eq!(after[DnsStat::AgentDown as usize], before[DnsStat::AgentDown as usize] + 2);
    assert_eq!(after[DnsStat::QueryTracked as usize], before[DnsStat::QueryTracked as usize], "nothing recorded");
    assert_eq!(
        after[DnsStat::QueryRefused as usize],
        before[DnsStat::QueryRefused as usize],
        "not the filter's refusal"
    );

    dp.renew_lease().expect("renew");
    forwarded("once the agent is back", &ok, run(&mut dp, &ok));
}

/// What goes to a resolver's port 53 but is not one whole, readable query
/// cannot have its name checked. With the query filter enforcing it is
/// dropped (else a split or stacked message would tunnel past the filter);
/// monitoring, it is forwarded and reported as would-refuse. A TCP segment
/// without payload (the handshake) is no query and passes.
#[test]
fn what_the_filter_cannot_read_is_dropped_when_it_enforces() {
    use egress_lab::dnsmsg::tcp_framed;
    let workload = ip("10.10.1.10");
    let resolver = ip("10.10.0.2");
    let sanctioned = Message::query(1, "api.openai.com", 1).to_bytes();
    let tunnel = Message::query(2, "c2VjcmV0.evil.example", 16).to_bytes();
    let stacked = [tcp_framed(&sanctioned), tcp_framed(&tunnel)].concat();
    let mut two_questions = Message::query(3, "api.openai.com", 1).to_bytes();
    two_questions[5] = 2; // QDCOUNT 2
    let cut_name = sanctioned[..16].to_vec();
    // Found by the kernel fuzzer: a question without its class, and bytes
    // the counts say are records (or nothing says are there) after a
    // sanctioned question, went out unread.
    let no_class = sanctioned[..sanctioned.len() - 2].to_vec();
    let mut answer_count = sanctioned.clone();
    answer_count[7] = 1; // ANCOUNT 1, the "record" after the question
    answer_count.extend_from_slice(b"c2VjcmV0IGRhdGE");
    let trailing = [sanctioned.as_slice(), b"c2VjcmV0IGRhdGE"].concat();
    let mut not_opt = sanctioned.clone();
    not_opt[11] = 1; // ARCOUNT 1: a TXT record, not EDNS's OPT
    not_opt.extend_from_slice(&egress_lab::dnsmsg::rr(&[0], 16, 1, 0, b"\x0bc2VjcmV0IGRh"));
    let mut first_fragment = Spec::udp(workload, resolver, 5004, 53).with_payload(tunnel[..20].to_vec());
    first_fragment.ipv4_frag = Some((0, true, 77));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("two queries in one TCP segment", Spec::tcp(workload, resolver, 5010, 53).with_payload(stacked).build()),
        (
            "a TCP segment with only the length",
            Spec::tcp(workload, resolver, 5011, 53).with_payload(tcp_framed(&tunnel)[..2].to_vec()).build(),
        ),
        (
            "a TCP segment with half a query",
            Spec::tcp(workload, resolver, 5012, 53).with_payload(tcp_framed(&tunnel)[..20].to_vec()).build(),
        ),
        ("two questions", Spec::udp(workload, resolver, 5013, 53).with_payload(two_questions).build()),
        ("a name cut short", Spec::udp(workload, resolver, 5014, 53).with_payload(cut_name).build()),
        ("a first fragment", first_fragment.build()),
        ("a question without its class", Spec::udp(workload, resolver, 5015, 53).with_payload(no_class).build()),
        ("an answer record in a query", Spec::udp(workload, resolver, 5016, 53).with_payload(answer_count).build()),
        ("bytes after the question", Spec::udp(workload, resolver, 5017, 53).with_payload(trailing).build()),
        ("an additional record not OPT", Spec::udp(workload, resolver, 5018, 53).with_payload(not_opt).build()),
    ];
    let mut dp = loaded();
    dropped_and_refused(&mut dp, &cases);
    // EDNS's OPT record (a 1232-byte UDP size, a cookie option) is read.
    let mut edns = sanctioned.clone();
    edns[11] = 1;
    edns.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    edns.extend_from_slice(&[0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let edns = Spec::udp(workload, resolver, 5019, 53).with_payload(edns).build();
    assert_eq!(run(&mut dp, &edns).0, PASS, "a query with EDNS goes out");
    let mut handshake = Spec::tcp(workload, resolver, 5020, 53);
    handshake.payload = 0; // a SYN
    let handshake = handshake.build();
    assert_eq!(run(&mut dp, &handshake).0, PASS, "the TCP handshake passes");

    let monitoring = load_sources(&[("m.yaml".into(), PACK.replace("query_filter: enforce", "query_filter: monitor"))])
        .expect("pack");
    dp.install(compile(&monitoring).expect("compiles")).expect("installs");
    for (what, frame) in &cases {
        let before = dp.dns_stats().expect("stats");
        assert_eq!(run(&mut dp, frame).0, PASS, "{what}: monitoring, forwarded");
        let after = dp.dns_stats().expect("stats");
        assert_eq!(
            after[DnsStat::QueryWouldRefuse as usize],
            before[DnsStat::QueryWouldRefuse as usize] + 1,
            "{what}: reported"
        );
    }
}

/// Each frame of `cases` is dropped, counted refused, and not recorded.
fn dropped_and_refused(dp: &mut Datapath, cases: &[(&str, Vec<u8>)]) {
    for (what, frame) in cases {
        let before = dp.dns_stats().expect("stats");
        assert_eq!(run(dp, frame).0, 2, "{what}: dropped (TC_ACT_SHOT)");
        let after = dp.dns_stats().expect("stats");
        assert_eq!(
            after[DnsStat::QueryRefused as usize],
            before[DnsStat::QueryRefused as usize] + 1,
            "{what}: counted as refused"
        );
        assert_eq!(
            after[DnsStat::QueryTracked as usize],
            before[DnsStat::QueryTracked as usize],
            "{what}: not recorded"
        );
    }
}

/// Found in review: EDNS options other than a cookie (some, like the
/// client subnet, are passed upstream) and OPT header bits went out
/// unjudged. The filter takes an OPT with no option or one cookie, and no
/// bit set but DO.
#[test]
fn edns_options_other_than_a_cookie_are_dropped_when_the_filter_enforces() {
    let (workload, resolver) = (ip("10.10.1.10"), ip("10.10.0.2"));
    let sanctioned = Message::query(1, "api.openai.com", 1).to_bytes();
    let with_opt = |ttl: [u8; 4], data: &[u8]| {
        let mut m = sanctioned.clone();
        m[11] = 1;
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0]);
        m.extend_from_slice(&ttl);
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
        Spec::udp(workload, resolver, 5021, 53).with_payload(m).build()
    };
    let cookie = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an OPT with a client subnet", with_opt([0; 4], &[0, 8, 0, 8, 0, 1, 24, 0, 10, 1, 2, 0])),
        ("an OPT of another version", with_opt([0, 1, 0, 0], &[])),
        ("an OPT with an extended RCODE", with_opt([1, 0, 0, 0], &[])),
        ("an OPT with Z bits set", with_opt([0, 0, 0x40, 0x21], &[])),
        ("an OPT with two cookies", with_opt([0; 4], &[cookie, cookie].concat())),
        ("an OPT with a cookie too short", with_opt([0; 4], &[0, 10, 0, 4, 1, 2, 3, 4])),
    ];
    let mut dp = loaded();
    dropped_and_refused(&mut dp, &cases);
    assert_eq!(run(&mut dp, &with_opt([0; 4], &[])).0, PASS, "an OPT with nothing in it goes out");
    assert_eq!(run(&mut dp, &with_opt([0, 0, 0x80, 0], &cookie)).0, PASS, "a cookie, and DO, go out");
}

/// Issue 14, hole 1: a TCP segment to the resolver cut into IP fragments,
/// whose first fragment holds a whole, sanctioned query and whose later
/// fragment would carry a second message the filter never reads (the
/// resolver reassembles both). With the filter enforcing, every fragment to
/// a resolver's port 53 is dropped. Fails on the code before it: the first
/// fragment's readable query was forwarded, and the later one followed.
#[test]
fn fragments_to_a_resolver_are_dropped_while_the_filter_enforces() {
    use egress_lab::dnsmsg::tcp_framed;
    let (workload, resolver) = (ip("10.10.1.10"), ip("10.10.0.2"));
    let sanctioned = tcp_framed(&Message::query(1, "api.openai.com", 1).to_bytes());
    let mut first = Spec::tcp(workload, resolver, 5030, 53).with_payload(sanctioned);
    first.ipv4_frag = Some((0, true, 78));
    let mut later = Spec::tcp(workload, resolver, 5030, 53);
    later.ipv4_frag = Some((8, false, 78));
    let mut dp = loaded();
    let before = dp.dns_stats().expect("stats");
    assert_eq!(run(&mut dp, &first.build()).0, 2, "the first fragment, a readable query: dropped");
    assert_eq!(run(&mut dp, &later.build()).0, 2, "the later fragment: no verdict to follow, dropped");
    let after = dp.dns_stats().expect("stats");
    let moved = |s: DnsStat| after[s as usize] - before[s as usize];
    assert_eq!(moved(DnsStat::QueryFragment), 1, "counted");
    assert_eq!(moved(DnsStat::QueryTracked), 0, "not recorded");
    // The same query unfragmented is forwarded.
    let whole = Spec::tcp(workload, resolver, 5031, 53)
        .with_payload(tcp_framed(&Message::query(2, "api.openai.com", 1).to_bytes()));
    assert_eq!(run(&mut dp, &whole.build()).0, PASS, "one whole query in one segment");
}

/// A query (type A) whose name is `name_wire` as it is.
fn raw_query(id: u16, name_wire: &[u8]) -> Vec<u8> {
    use egress_lab::dnsmsg::{CLASS_IN, QUERY_FLAGS, TYPE_A, header, question};
    let mut m = header(id, QUERY_FLAGS, 1, 0, 0, 0);
    m.extend(question(name_wire, TYPE_A, CLASS_IN));
    m
}

/// Name bytes other than letters, digits, `-` and `_` make a query
/// unreadable: a leading NUL would vanish into the zero padding of the
/// right-aligned name key (`\000api.openai.com` read as `api.openai.com`),
/// a `.` inside a label would read as a separator. With the query filter
/// enforcing such a query is dropped and counted as refused (`bad_name`);
/// monitoring, forwarded and reported. The root name and names of letters,
/// digits, `-` and `_` in any case stay readable.
#[test]
fn names_with_unreadable_bytes_are_refused_when_the_filter_enforces() {
    let workload = ip("10.10.1.10");
    let resolver = ip("10.10.0.2");
    let unclean: Vec<(&str, Vec<u8>)> = vec![
        ("`\\000api.openai.com`", encode_labels(&[b"\0api", b"openai", b"com"])),
        ("NULs before the first label's text", encode_labels(&[b"\0\0\0api", b"openai", b"com"])),
        ("a label of one NUL", encode_labels(&[b"\0", b"api", b"openai", b"com"])),
        ("a dot inside a label", encode_labels(&[b"api.openai", b"com"])),
        ("one label holding the whole name", encode_labels(&[b"api.openai.com"])),
        ("a space", encode_labels(&[b"api openai", b"com"])),
        ("a byte over 127", encode_labels(&[b"api\xc3\xa9", b"openai", b"com"])),
    ];
    let mut dp = loaded();
    let udp = |port: u16, msg: Vec<u8>| Spec::udp(workload, resolver, port, 53).with_payload(msg).build();
    let tcp = |port: u16, msg: &[u8]| {
        Spec::tcp(workload, resolver, port, 53).with_payload(egress_lab::dnsmsg::tcp_framed(msg)).build()
    };
    for (i, (what, name)) in unclean.iter().enumerate() {
        let msg = raw_query(0x100 + i as u16, name);
        for (how, frame) in [("UDP", udp(6000 + i as u16, msg.clone())), ("TCP", tcp(6100 + i as u16, &msg))] {
            let before = dp.dns_stats().expect("stats");
            assert_eq!(run(&mut dp, &frame).0, 2, "{what} ({how}): dropped (TC_ACT_SHOT)");
            let after = dp.dns_stats().expect("stats");
            for (stat, n) in [(DnsStat::QueryRefused, 1), (DnsStat::BadName, 1), (DnsStat::QueryTracked, 0)] {
                assert_eq!(
                    after[stat as usize],
                    before[stat as usize] + n,
                    "{what} ({how}): {} moved by {n}",
                    stat.name()
                );
            }
        }
    }

    // Readable names: in any case, with `-` and `_`; the root name.
    let sanctioned = raw_query(0x200, &encode_labels(&[b"API", b"OpenAI", b"Com"]));
    let frame = udp(6200, sanctioned);
    forwarded("a sanctioned name in any case", &frame, run(&mut dp, &frame));
    for (what, name) in [
        ("underscores and hyphens", encode_labels(&[b"_acme-challenge", b"Web_1-x", b"example", b"com"])),
        ("the root name", encode_labels(&[])),
    ] {
        let before = dp.dns_stats().expect("stats");
        assert_eq!(
            run(&mut dp, &udp(6201, raw_query(0x201, &name))).0,
            TC_ACT_REDIRECT,
            "{what}: read, refused in place"
        );
        let after = dp.dns_stats().expect("stats");
        assert_eq!(after[DnsStat::BadName as usize], before[DnsStat::BadName as usize], "{what}: readable");
    }

    let monitoring = load_sources(&[("m.yaml".into(), PACK.replace("query_filter: enforce", "query_filter: monitor"))])
        .expect("pack");
    dp.install(compile(&monitoring).expect("compiles")).expect("installs");
    for (i, (what, name)) in unclean.iter().enumerate() {
        let before = dp.dns_stats().expect("stats");
        let frame = udp(6300 + i as u16, raw_query(0x300 + i as u16, name));
        assert_eq!(run(&mut dp, &frame).0, PASS, "{what}: monitoring, forwarded");
        let after = dp.dns_stats().expect("stats");
        for (stat, n) in [(DnsStat::QueryWouldRefuse, 1), (DnsStat::BadName, 1), (DnsStat::QueryTracked, 0)] {
            assert_eq!(
                after[stat as usize],
                before[stat as usize] + n,
                "{what} (monitor): {} moved by {n}",
                stat.name()
            );
        }
    }
}

/// A permitted packet to a resolver's port 53 goes on to the query program
/// by tail call. Should that call fail (the program array's slot empty),
/// the query has been neither filtered nor recorded: with the query filter
/// enforcing it is dropped, by TC and XDP alike, and counted
/// (`query_unfiltered`, `query_refused`); monitoring, passed and counted
/// (`query_unfiltered`, `query_would_refuse`); with the filter off, passed.
#[test]
fn a_failed_tail_call_into_the_query_program_drops_when_the_filter_enforces() {
    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    let workload = ip("10.10.1.10");
    let resolver = ip("10.10.0.2");
    let frames = [
        ("a sanctioned name", query(Spec::udp(workload, resolver, 7000, 53), 1, "api.openai.com")),
        ("a tunnel", query(Spec::udp(workload, resolver, 7001, 53), 2, "c2VjcmV0.evil.example")),
        ("over TCP", query(Spec::tcp(workload, resolver, 7002, 53), 3, "c2VjcmV0.evil.example")),
    ];
    let run_xdp = |dp: &mut Datapath, frame: &[u8]| {
        let prog = dp.xdp_program().expect("program");
        prog.test_run(TestRunOptions { data_in: Some(frame), ..Default::default() }).expect("test run").return_value
    };
    let mut dp = loaded();
    dp.remove_query_programs().expect("query programs removed");
    let modes = [
        ("enforce", (2, XDP_DROP), DnsStat::QueryRefused),
        ("monitor", (PASS, XDP_PASS), DnsStat::QueryWouldRefuse),
        ("off", (PASS, XDP_PASS), DnsStat::QueryUnfiltered),
    ];
    for (mode, (tc_ret, xdp_ret), counted) in modes {
        let pack =
            load_sources(&[("p.yaml".into(), PACK.replace("query_filter: enforce", &format!("query_filter: {mode}")))])
                .expect("pack");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
        for (what, frame) in &frames {
            let before = dp.dns_stats().expect("stats");
            assert_eq!(run(&mut dp, frame).0, tc_ret, "{mode}, {what}: TC");
            assert_eq!(run_xdp(&mut dp, frame), xdp_ret, "{mode}, {what}: XDP");
            let after = dp.dns_stats().expect("stats");
            let moved = |s: DnsStat| after[s as usize] - before[s as usize];
            assert_eq!(moved(DnsStat::QueryUnfiltered), 2, "{mode}, {what}: counted unfiltered");
            if counted != DnsStat::QueryUnfiltered {
                assert_eq!(moved(counted), 2, "{mode}, {what}: counted as {}", counted.name());
            }
            assert_eq!(moved(DnsStat::QueryTracked), 0, "{mode}, {what}: not recorded");
        }
    }
}

/// Issue 14, hole 3: the query filter is per workload and per type. A TXT
/// (or NULL) query for a sanctioned name is a tunnel to that zone's name
/// servers: refused unless `dns.query_types` lists the type; and a name is
/// let through only for a workload that a `permit` rule using its WebGroup
/// covers (here `batch` may use the resolver but no WebGroup). Both fail on
/// the code before: the filter looked at the name only, against every
/// permit rule's WebGroups.
#[test]
fn the_filter_is_per_workload_and_per_query_type() {
    const TWO: &str = r"
version: 1
mode: enforce
dns: { resolvers: [10.10.0.2], query_filter: enforce }
smartgroups:
  workloads: { cidrs: [10.10.1.0/24] }
  batch: { cidrs: [10.10.2.0/24] }
webgroups: { llm: { domains: [api.openai.com] } }
rules:
  - { name: allow-llm, priority: 10, source: workloads, destination: { webgroup: llm }, protocol: tcp, ports: [443], action: permit }
  - { name: allow-dns, priority: 20, source: [workloads, batch], destination: resolvers, ports: [53], action: permit }
  - { name: default-deny, priority: 100, source: [workloads, batch], destination: any, action: deny }
";
    let mut dp = loaded();
    let typed = |src: &str, port: u16, qtype: u16| {
        Spec::udp(ip(src), ip("10.10.0.2"), port, 53)
            .with_payload(Message::query(0x4242, "api.openai.com", qtype).to_bytes())
            .build()
    };
    let ok = typed("10.10.1.10", 5100, 1);
    forwarded("A for the sanctioned name", &ok, run(&mut dp, &ok));
    let aaaa = typed("10.10.1.10", 5101, 28);
    forwarded("AAAA, a default type", &aaaa, run(&mut dp, &aaaa));
    for (qtype, what) in [(16u16, "TXT"), (10, "NULL"), (255, "ANY")] {
        let before = dp.dns_stats().expect("stats");
        let (ret, _) = run(&mut dp, &typed("10.10.1.10", 5102 + qtype, qtype));
        assert_eq!(ret, TC_ACT_REDIRECT, "{what} for a sanctioned name: answered REFUSED");
        let after = dp.dns_stats().expect("stats");
        assert_eq!(after[DnsStat::QueryType as usize], before[DnsStat::QueryType as usize] + 1, "{what} counted");
    }
    // Only class IN: the types listed are IN's (CHAOS, HESIOD and ANY
    // would reach the resolver's other trees).
    for class in [3u16, 4, 255] {
        let mut q = typed("10.10.1.10", 5110, 1);
        let at = q.len() - 2;
        q[at..].copy_from_slice(&class.to_be_bytes());
        let before = dp.dns_stats().expect("stats");
        assert_eq!(run(&mut dp, &q).0, TC_ACT_REDIRECT, "class {class}: answered REFUSED");
        let after = dp.dns_stats().expect("stats");
        assert_eq!(after[DnsStat::QueryType as usize], before[DnsStat::QueryType as usize] + 1, "class {class}");
    }
    // A pack that lists TXT lets it through.
    let with_txt = PACK.replace("query_filter: enforce }", "query_filter: enforce, query_types: [A, AAAA, TXT] }");
    let pack = load_sources(&[("t.yaml".into(), with_txt)]).expect("pack");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    let txt = typed("10.10.1.10", 5200, 16);
    forwarded("TXT, listed", &txt, run(&mut dp, &txt));

    // Per workload: `batch` is covered by no permit rule using `llm`.
    let pack = load_sources(&[("t.yaml".into(), TWO.into())]).expect("pack");
    dp.install(compile(&pack).expect("compiles")).expect("installs");
    let own = typed("10.10.1.10", 5300, 1);
    forwarded("the workload a permit rule covers", &own, run(&mut dp, &own));
    let (ret, _) = run(&mut dp, &typed("10.10.2.10", 5301, 1));
    assert_eq!(ret, TC_ACT_REDIRECT, "a workload no permit rule using the WebGroup covers: REFUSED");
}

/// Issue 14, hole 1: glibc sends its A and AAAA queries in one TCP segment.
/// Each is judged and recorded, and each leaves with an id of the
/// gateway's; a second query the filter refuses drops the segment, and
/// nothing of it is recorded. Fails on the code before: two messages in a
/// segment were unreadable, and dropped while the filter enforces.
#[test]
fn two_queries_in_one_tcp_segment_are_each_judged_and_recorded() {
    use egress_lab::dnsmsg::tcp_framed;
    let (workload, resolver) = (ip("10.10.1.10"), ip("10.10.0.2"));
    let a = Message::query(0x0a0a, "api.openai.com", 1).to_bytes();
    let aaaa = Message::query(0x0b0b, "api.openai.com", 28).to_bytes();
    let pair = [tcp_framed(&a), tcp_framed(&aaaa)].concat();
    let frame = Spec::tcp(workload, resolver, 5400, 53).with_payload(pair).build();
    let mut dp = loaded();
    let before = dp.dns_stats().expect("stats");
    let (ret, out) = run(&mut dp, &frame);
    assert_eq!(ret, PASS, "A and AAAA in one segment: forwarded");
    let after = dp.dns_stats().expect("stats");
    assert_eq!(after[DnsStat::QueryTracked as usize] - before[DnsStat::QueryTracked as usize], 2, "both recorded");
    // Both ids rewritten in place: the first after the first framing, the
    // second after the second.
    let first_id = 14 + 20 + 20 + 2;
    let second_id = first_id + a.len() + 2;
    assert_eq!(out.len(), frame.len(), "same length");
    assert_ne!(&out[first_id..first_id + 2], &frame[first_id..first_id + 2], "the first id is the gateway's");
    assert_ne!(&out[second_id..second_id + 2], &frame[second_id..second_id + 2], "the second id is the gateway's");
    assert_eq!(&out[first_id + 2..second_id], &frame[first_id + 2..second_id], "nothing else changed");

    // A sanctioned query stacked with a tunnel: dropped, nothing recorded.
    let tunnel = Message::query(0x0c0c, "c2VjcmV0.evil.example", 16).to_bytes();
    let mixed = [tcp_framed(&a), tcp_framed(&tunnel)].concat();
    let before = dp.dns_stats().expect("stats");
    let (ret, _) = run(&mut dp, &Spec::tcp(workload, resolver, 5401, 53).with_payload(mixed).build());
    assert_eq!(ret, 2, "a refused second query drops the segment");
    let after = dp.dns_stats().expect("stats");
    assert_eq!(after[DnsStat::QueryTracked as usize], before[DnsStat::QueryTracked as usize], "nothing recorded");
}
