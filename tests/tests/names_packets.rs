//! Connection names, packet by packet (`BPF_PROG_TEST_RUN` on the loaded
//! TC program, which tail-calls the names and read programs): a table of
//! first messages (TLS ClientHellos, HTTP request heads) cut into 1 to 8
//! segments, sent in order, out of order, retransmitted with the same or
//! other bytes, or with URG. A flow to a partner's address that a CIDR rule
//! permits is denied by an earlier `deny` rule whose WebGroup covers its
//! name: the segment that completes the message is turned around into a
//! reset; every segment before it passes; what the reader cannot place is
//! dropped.

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, TC_PROGRAM};
use egress_lab::hello::{ACK, PSH_ACK, SERVER_ISN, SYN, URG, client_hello, tcp_segment};
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

const PASS: u32 = -1i32 as u32; // TC_ACT_UNSPEC
const DROP: u32 = 2; // TC_ACT_SHOT
const RESET: u32 = 7; // TC_ACT_REDIRECT: turned around
const RST_ACK: u8 = 0x14;
const ISN: u32 = 1_000_000;

/// One TCP segment from the workload 10.10.1.10 to 198.18.20.1:443.
fn segment(sport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_segment([10, 10, 1, 10], ([198, 18, 20, 1], 443), sport, seq, flags, payload)
}

struct Harness {
    dp: Datapath,
    next_port: u16,
}

impl Harness {
    fn new() -> Self {
        let pack = load_sources(&[("test.yaml".into(), PACK.into())]).expect("test pack is valid");
        let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
        Harness { dp, next_port: 40000 }
    }

    /// Runs `egress_tc` on a frame: its verdict and the frame as it left.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog = self.dp.tc_program(TC_PROGRAM).expect("program");
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..Default::default() };
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// A new flow: its SYN (which must pass) and its source port.
    fn open(&mut self) -> u16 {
        self.next_port += 1;
        let port = self.next_port;
        assert_eq!(self.run(&segment(port, ISN, SYN, &[])).0, PASS, "the SYN passes on the first decision");
        assert_eq!(self.run(&segment(port, ISN + 1, ACK, &[])).0, PASS, "the handshake's ACK passes");
        port
    }
}

/// `msg` cut into `k` nearly equal parts: (offset, bytes).
fn cut(msg: &[u8], k: usize) -> Vec<(usize, Vec<u8>)> {
    let step = msg.len().div_ceil(k);
    msg.chunks(step).enumerate().map(|(i, c)| (i * step, c.to_vec())).collect()
}

struct Message {
    what: &'static str,
    bytes: Vec<u8>,
    /// The verdict of the segment that completes it.
    last: u32,
}

fn messages() -> Vec<Message> {
    let http = |host: &str| format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n").into_bytes();
    vec![
        Message { what: "ClientHello, a partner's name", bytes: client_hello("api.partner.test", 0), last: PASS },
        Message { what: "ClientHello, a denied name", bytes: client_hello("x.evil.test", 0), last: RESET },
        Message { what: "ClientHello, denied name, any case", bytes: client_hello("A.B.Evil.Test", 0), last: RESET },
        Message {
            what: "ClientHello, denied name after 1.2 KiB",
            bytes: client_hello("x.evil.test", 1200),
            last: RESET,
        },
        Message { what: "HTTP request, a partner's Host", bytes: http("api.partner.test"), last: PASS },
        Message { what: "HTTP request, a denied Host with a port", bytes: http("x.evil.test:443"), last: RESET },
        Message {
            what: "HTTP request, two Host headers (no name)",
            bytes: b"GET / HTTP/1.1\r\nHost: a.partner.test\r\nHost: x.evil.test\r\n\r\n".to_vec(),
            last: PASS,
        },
    ]
}

#[test]
fn every_message_cut_into_one_to_eight_segments_is_judged_when_whole() {
    let mut h = Harness::new();
    for m in messages() {
        for k in 1..=8 {
            let port = h.open();
            let parts = cut(&m.bytes, k);
            let n = parts.len();
            for (i, (off, part)) in parts.into_iter().enumerate() {
                let (got, out) = h.run(&segment(port, ISN + 1 + off as u32, PSH_ACK, &part));
                let want = if i + 1 == n { m.last } else { PASS };
                assert_eq!(got, want, "{}: part {} of {n}", m.what, i + 1);
                if got == RESET {
                    // Turned around in place: to the workload, RST|ACK, its
                    // sequence number what the workload expects next.
                    assert_eq!(&out[26..30], &[198, 18, 20, 1], "{}: from the server's address", m.what);
                    assert_eq!(&out[30..34], &[10, 10, 1, 10], "{}: to the workload", m.what);
                    assert_eq!(out[47], RST_ACK, "{}: RST|ACK", m.what);
                    assert_eq!(&out[38..42], &(SERVER_ISN + 1).to_be_bytes(), "{}: seq", m.what);
                    let end = ISN + 1 + m.bytes.len() as u32;
                    assert_eq!(&out[42..46], &end.to_be_bytes(), "{}: ack", m.what);
                }
            }
            // The second decision stands for the flow's later packets.
            let after = h.run(&segment(port, ISN + 1 + m.bytes.len() as u32, PSH_ACK, b"more")).0;
            let want = if m.last == RESET { DROP } else { PASS };
            assert_eq!(after, want, "{}, {k} parts: the flow's next segment", m.what);
        }
    }
}

#[test]
fn out_of_order_other_bytes_and_urgent_data_are_dropped_until_the_message_is_read() {
    let mut h = Harness::new();
    let hello = client_hello("x.evil.test", 600);
    let parts = cut(&hello, 3);
    let seg = |port: u16, i: usize, flags: u8| segment(port, ISN + 1 + parts[i].0 as u32, flags, &parts[i].1);

    // Out of order: the second part before the first is dropped; once the
    // first came, the second (retransmitted) is read.
    let port = h.open();
    assert_eq!(h.run(&seg(port, 1, PSH_ACK)).0, DROP, "a gap before it: dropped");
    assert_eq!(h.run(&seg(port, 0, PSH_ACK)).0, PASS, "the first part");
    assert_eq!(h.run(&seg(port, 1, PSH_ACK)).0, PASS, "the second, now in order");
    assert_eq!(h.run(&seg(port, 2, PSH_ACK)).0, RESET, "the last: the name denies it");

    // A retransmission with the same bytes passes; with other bytes (a name
    // the reader never saw for the server to read) it is dropped.
    let port = h.open();
    assert_eq!(h.run(&seg(port, 0, PSH_ACK)).0, PASS);
    assert_eq!(h.run(&seg(port, 0, PSH_ACK)).0, PASS, "the same bytes again");
    let mut other = parts[0].1.clone();
    let last = other.len() - 1;
    other[last] ^= 0xff;
    assert_eq!(h.run(&segment(port, ISN + 1, PSH_ACK, &other)).0, DROP, "other bytes where bytes were read");
    // Overlapping what was read and going on: the same bytes, then new ones.
    let mut overlap = parts[0].1[parts[0].1.len() - 10..].to_vec();
    overlap.extend_from_slice(&parts[1].1);
    let at = ISN + 1 + parts[1].0 as u32 - 10;
    assert_eq!(h.run(&segment(port, at, PSH_ACK, &overlap)).0, PASS, "overlap with the same bytes");
    assert_eq!(h.run(&seg(port, 2, PSH_ACK)).0, RESET, "read whole across the overlap");

    // Urgent data while the name is read: dropped.
    let port = h.open();
    assert_eq!(h.run(&seg(port, 0, PSH_ACK | URG)).0, DROP, "URG");
    // Data in a SYN (TCP Fast Open) would reach the server unread.
    h.next_port += 1;
    let (got, _) = h.run(&segment(h.next_port, ISN, SYN, &hello));
    assert_eq!(got, DROP, "a SYN with data");
}
