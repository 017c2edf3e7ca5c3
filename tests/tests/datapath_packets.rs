//! `BPF_PROG_TEST_RUN` tests of the real datapath on crafted packets,
//! table-driven: (packet, expected action, reason, rule and verdict).
//! Needs root (`CAP_BPF`, `CAP_NET_ADMIN`), as the whole suite does.

use std::collections::BTreeSet;
use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, EMPTY_PROGRAM, TC_PROGRAM};
use egress_common::{Reason, Verdict};
use egress_lab::packet::{Ext, L4, Spec};
use egress_policy::{compile::compile, load_sources};

const PACK: &str = r#"
version: 1
mode: enforce
dns:
  resolvers: [10.10.0.2, "fd00:10::2"]
smartgroups:
  workloads: { cidrs: [10.10.1.0/24, "fd00:10:1::/64"] }
  monitored: { cidrs: [10.10.2.0/24] }
  upstream-web: { cidrs: [203.0.113.0/24, "2001:db8:1::/48"] }
rules:
  - { name: allow-web, priority: 10, source: workloads, destination: { smartgroup: upstream-web }, protocol: tcp, ports: [443, "8000-8099"], action: permit }
  - { name: allow-dns, priority: 20, source: workloads, destination: resolvers, ports: [53], action: permit }
  - { name: allow-ping, priority: 30, source: workloads, destination: { cidrs: [198.51.100.0/24, "2001:db8:2::/48"] }, protocol: icmp, action: permit }
  - { name: deny-dns-exfil, priority: 40, source: workloads, destination: any, ports: [53], action: deny }
  - { name: monitor-ntp, priority: 50, source: workloads, destination: any, protocol: udp, ports: [123], action: deny, mode: monitor }
  - { name: watch-legacy, priority: 60, source: monitored, destination: any, action: deny, mode: monitor }
  - { name: allow-gre, priority: 70, source: workloads, destination: { cidrs: [192.0.2.0/24] }, action: permit }
"#;

const PASS: u32 = -1i32 as u32; // TC_ACT_UNSPEC: on to the next program / the stack
const DROP: u32 = 2; // TC_ACT_SHOT

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// What a case expects.
struct Expect {
    ret: u32,
    reason: Reason,
    /// Rule name and verdict whose counter must move by one packet.
    rule: Option<(&'static str, Verdict)>,
}

fn allowed(rule: &'static str) -> Expect {
    Expect { ret: PASS, reason: Reason::Rule, rule: Some((rule, Verdict::Allowed)) }
}
fn denied(rule: &'static str) -> Expect {
    Expect { ret: DROP, reason: Reason::Rule, rule: Some((rule, Verdict::Denied)) }
}
fn would_deny(rule: &'static str) -> Expect {
    Expect { ret: PASS, reason: Reason::Rule, rule: Some((rule, Verdict::WouldDeny)) }
}
fn passed(reason: Reason) -> Expect {
    Expect { ret: PASS, reason, rule: None }
}
fn dropped(reason: Reason) -> Expect {
    Expect { ret: DROP, reason, rule: None }
}

fn with(mut s: Spec, f: impl FnOnce(&mut Spec)) -> Spec {
    f(&mut s);
    s
}

fn patched(s: &Spec, patches: &[(usize, u8)]) -> Vec<u8> {
    let mut b = s.build();
    for &(i, v) in patches {
        b[i] = v;
    }
    b
}

struct Harness {
    dp: Datapath,
}

impl Harness {
    fn new(pack: &str) -> Self {
        let pack = load_sources(&[("test.yaml".into(), pack.into())]).expect("test pack is valid");
        let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
        dp.install(compile(&pack).expect("compiles")).expect("installs");
        Harness { dp }
    }

    fn install(&mut self, pack: &str) {
        let pack = load_sources(&[("test.yaml".into(), pack.into())]).expect("valid");
        self.dp.install(compile(&pack).expect("compiles")).expect("installs");
    }

    fn run(&mut self, program: &str, frame: &[u8]) -> u32 {
        let prog = self.dp.tc_program(program).expect("program");
        let opts = TestRunOptions { data_in: Some(frame), ..Default::default() };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }

    fn run_xdp(&mut self, frame: &[u8]) -> u32 {
        let prog = self.dp.xdp_program().expect("program");
        let opts = TestRunOptions { data_in: Some(frame), ..Default::default() };
        prog.test_run(opts).expect("BPF_PROG_TEST_RUN").return_value
    }

    /// Runs one case and checks action, reason counter and rule counter.
    fn check(&mut self, name: &str, frame: &[u8], want: &Expect) {
        let reasons = self.dp.reason_counts().expect("reasons");
        let rules = self.dp.rule_totals().expect("rule totals");
        let events: u64 = self.dp.event_stats().expect("events").iter().sum();
        let ret = self.run(TC_PROGRAM, frame);
        if want.rule.is_none() && want.ret == DROP {
            // Dropped without a rule (cannot be judged): reported all the same.
            let after: u64 = self.dp.event_stats().expect("events").iter().sum();
            assert_eq!(after, events + 1, "{name}: one flow event accounted for the unjudgeable drop");
        }
        assert_eq!(ret, want.ret, "{name}: program returned {ret:#x}");
        let after = self.dp.reason_counts().expect("reasons");
        let r = want.reason as usize;
        assert_eq!(after[r], reasons[r] + 1, "{name}: reason {} not counted once", want.reason.name());
        let moved: u64 = after.iter().sum::<u64>() - reasons.iter().sum::<u64>();
        assert_eq!(moved, 1, "{name}: exactly one reason counted");
        let rules_after = self.dp.rule_totals().expect("rule totals");
        let total = |t: &egress_agent::datapath::RuleTotals| -> u64 {
            t.values().flat_map(|c| c.iter()).map(|c| c.packets).sum()
        };
        match want.rule {
            Some((rule, verdict)) => {
                let get =
                    |t: &egress_agent::datapath::RuleTotals| t.get(rule).map_or(0, |c| c[verdict as usize].packets);
                assert_eq!(get(&rules_after), get(&rules) + 1, "{name}: {rule}/{} not counted", verdict.name());
                assert_eq!(total(&rules_after), total(&rules) + 1, "{name}: one rule counter moved");
            }
            None => assert_eq!(total(&rules_after), total(&rules), "{name}: no rule counter moves"),
        }
    }
}

/// A case: its name, the frame, what the datapath must do with it.
type Case = (&'static str, Vec<u8>, Expect);

/// The addresses the cases use: a workload and a web server per family.
#[derive(Clone, Copy)]
struct Addrs {
    w4: IpAddr,
    w6: IpAddr,
    web4: IpAddr,
    web6: IpAddr,
}

fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Spec {
    Spec::tcp(src, dst, sport, dport)
}

fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Spec {
    Spec::udp(src, dst, sport, dport)
}

/// The enforce pack's cases, in play order (later ones rely on the flows
/// and fragments earlier ones leave behind): destination, protocol and port.
fn match_dimension_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w4, w6, web4, web6 } = *a;
    vec![
        // Destination, protocol and port dimensions (IPv4).
        ("tcp 443 to web", tcp(w4, web4, 1000, 443).build(), allowed("allow-web")),
        ("tcp in port range", tcp(w4, web4, 1001, 8050).build(), allowed("allow-web")),
        ("tcp past the range", tcp(w4, web4, 1002, 8100).build(), denied("implicit-deny")),
        ("tcp 443 elsewhere", tcp(w4, ip("198.51.100.1"), 1003, 443).build(), denied("implicit-deny")),
        ("udp 443 to web", udp(w4, web4, 1004, 443).build(), denied("implicit-deny")),
        ("udp dns to resolver", udp(w4, ip("10.10.0.2"), 1005, 53).build(), allowed("allow-dns")),
        ("tcp dns to resolver", tcp(w4, ip("10.10.0.2"), 1006, 53).build(), allowed("allow-dns")),
        ("dns elsewhere", udp(w4, ip("8.8.8.8"), 1007, 53).build(), denied("deny-dns-exfil")),
        ("tcp dns elsewhere", tcp(w4, ip("8.8.8.8"), 1008, 53).build(), denied("deny-dns-exfil")),
        ("ping allowed", Spec::ping(w4, ip("198.51.100.1")).build(), allowed("allow-ping")),
        ("ping elsewhere", Spec::ping(w4, web4).build(), denied("implicit-deny")),
        (
            "monitor rule before a later permit",
            udp(w4, ip("192.0.2.200"), 1009, 123).build(),
            would_deny("monitor-ntp"),
        ),
        ("monitor rule elsewhere", udp(w4, ip("1.2.3.4"), 1010, 123).build(), would_deny("monitor-ntp")),
        ("monitored group", tcp(ip("10.10.2.5"), web4, 1011, 22).build(), would_deny("watch-legacy")),
        ("other protocol", Spec::new(w4, ip("192.0.2.1"), L4::Raw { proto: 47 }).build(), allowed("allow-gre")),
        ("other protocol elsewhere", Spec::new(w4, web4, L4::Raw { proto: 47 }).build(), denied("implicit-deny")),
        // `uncovered` is `deny` by default (it passed before the setting).
        ("uncovered source", tcp(ip("10.99.0.1"), web4, 1012, 22).build(), denied("uncovered-source")),
        // IPv6.
        ("tcp6 443 to web", tcp(w6, web6, 1013, 443).build(), allowed("allow-web")),
        ("tcp6 elsewhere", tcp(w6, ip("2001:db8:9::1"), 1014, 443).build(), denied("implicit-deny")),
        ("ping6 allowed", Spec::ping(w6, ip("2001:db8:2::1")).build(), allowed("allow-ping")),
        ("udp6 dns to resolver", udp(w6, ip("fd00:10::2"), 1015, 53).build(), allowed("allow-dns")),
        ("udp6 dns elsewhere", udp(w6, ip("2001:4860::8888"), 1016, 53).build(), denied("deny-dns-exfil")),
        ("uncovered v6", tcp(ip("fd00:99::1"), web6, 1017, 22).build(), denied("uncovered-source")),
    ]
}

/// VLAN tags, IPv4 options and fragments.
fn tag_and_ipv4_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w4, web4, .. } = *a;
    vec![
        // Tags.
        ("802.1Q", with(tcp(w4, web4, 1018, 443), |s| s.tags = vec![0x8100]).build(), allowed("allow-web")),
        (
            "802.1ad+802.1Q",
            with(tcp(w4, web4, 1019, 443), |s| s.tags = vec![0x88a8, 0x8100]).build(),
            allowed("allow-web"),
        ),
        ("802.1Q denied", with(tcp(w4, web4, 1020, 22), |s| s.tags = vec![0x8100]).build(), denied("implicit-deny")),
        (
            "three tags",
            with(tcp(w4, web4, 1021, 443), |s| s.tags = vec![0x88a8, 0x8100, 0x8100]).build(),
            dropped(Reason::UnknownTag),
        ),
        (
            "legacy QinQ tag",
            with(tcp(w4, web4, 1022, 443), |s| s.tags = vec![0x9100]).build(),
            dropped(Reason::UnknownTag),
        ),
        // IPv4 options and fragments.
        ("ipv4 options", with(tcp(w4, web4, 1023, 443), |s| s.ipv4_options = vec![1; 8]).build(), allowed("allow-web")),
        (
            "ipv4 options denied",
            with(tcp(w4, web4, 1024, 22), |s| s.ipv4_options = vec![1; 40]).build(),
            denied("implicit-deny"),
        ),
        (
            "first fragment",
            with(tcp(w4, web4, 1025, 443), |s| s.ipv4_frag = Some((0, true, 77))).build(),
            allowed("allow-web"),
        ),
        (
            "later fragment",
            with(tcp(w4, web4, 1025, 443), |s| s.ipv4_frag = Some((3, false, 77))).build(),
            Expect { ret: PASS, reason: Reason::FragmentFollowed, rule: Some(("allow-web", Verdict::Allowed)) },
        ),
        (
            "unseen fragment",
            with(tcp(w4, web4, 1026, 443), |s| s.ipv4_frag = Some((3, false, 78))).build(),
            dropped(Reason::FragmentUnseen),
        ),
        (
            "denied first fragment",
            with(tcp(w4, web4, 1027, 22), |s| s.ipv4_frag = Some((0, true, 79))).build(),
            denied("implicit-deny"),
        ),
        (
            "its later fragment",
            with(tcp(w4, web4, 1027, 22), |s| s.ipv4_frag = Some((5, false, 79))).build(),
            Expect { ret: DROP, reason: Reason::FragmentFollowed, rule: Some(("implicit-deny", Verdict::Denied)) },
        ),
        (
            "uncovered fragment",
            with(tcp(ip("10.99.0.1"), web4, 1028, 443), |s| s.ipv4_frag = Some((3, false, 80))).build(),
            dropped(Reason::FragmentUnseen),
        ),
    ]
}

/// IPv6 extension headers and fragments, truncation and bad headers.
fn ipv6_and_malformed_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w4, w6, web4, web6 } = *a;
    vec![
        // IPv6 extension headers and fragments.
        (
            "ipv6 ext headers",
            with(tcp(w6, web6, 1029, 443), |s| s.ipv6_ext = vec![Ext::HopByHop, Ext::Routing, Ext::DestOpts]).build(),
            allowed("allow-web"),
        ),
        (
            "too many ext headers",
            with(tcp(w6, web6, 1030, 443), |s| s.ipv6_ext = vec![Ext::DestOpts; 9]).build(),
            dropped(Reason::TooManyExtHeaders),
        ),
        (
            "ipv6 first fragment",
            with(tcp(w6, web6, 1031, 443), |s| s.ipv6_ext = vec![Ext::Fragment { offset: 0, more: true, id: 9 }])
                .build(),
            allowed("allow-web"),
        ),
        (
            "ipv6 later fragment",
            with(tcp(w6, web6, 1031, 443), |s| s.ipv6_ext = vec![Ext::Fragment { offset: 8, more: false, id: 9 }])
                .build(),
            Expect { ret: PASS, reason: Reason::FragmentFollowed, rule: Some(("allow-web", Verdict::Allowed)) },
        ),
        (
            "ipv6 unseen fragment",
            with(tcp(w6, web6, 1032, 443), |s| s.ipv6_ext = vec![Ext::Fragment { offset: 8, more: false, id: 10 }])
                .build(),
            dropped(Reason::FragmentUnseen),
        ),
        // Truncation and bad headers.
        (
            "truncated tcp",
            with(tcp(w4, web4, 1033, 443), |s| {
                s.truncate = Some(14 + 20 + 10);
                s.payload = 0;
            })
            .build(),
            dropped(Reason::Truncated),
        ),
        (
            "truncated udp6",
            with(udp(w6, web6, 1034, 53), |s| {
                s.truncate = Some(14 + 40 + 4);
                s.payload = 0;
            })
            .build(),
            dropped(Reason::Truncated),
        ),
        (
            "truncated vlan tag",
            with(tcp(w4, web4, 1036, 443), |s| {
                s.tags = vec![0x8100];
                s.truncate = Some(16);
            })
            .build(),
            dropped(Reason::Truncated),
        ),
        (
            "truncated ext header",
            with(tcp(w6, web6, 1037, 443), |s| {
                s.ipv6_ext = vec![Ext::HopByHop];
                s.truncate = Some(14 + 40 + 4);
            })
            .build(),
            dropped(Reason::Truncated),
        ),
        ("ihl below 5", patched(&tcp(w4, web4, 1038, 443), &[(14, 0x44)]), dropped(Reason::BadIpHeader)),
        ("version mismatch", patched(&tcp(w4, web4, 1039, 443), &[(14, 0x65)]), dropped(Reason::BadIpHeader)),
    ]
}

/// Traffic the firewall leaves alone, and verdicts from the flow cache.
fn not_judged_and_cached_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w4, w6, web4, web6 } = *a;
    vec![
        // Not the firewall's business.
        ("arp", with(tcp(w4, web4, 1040, 443), |s| s.ethertype = Some(0x0806)).build(), passed(Reason::NotIp)),
        (
            "neighbour solicitation to the gateway",
            Spec::new(w6, ip("fd00:10:1::1"), L4::Icmp { kind: 135 }).build(),
            passed(Reason::LinkLocal),
        ),
        (
            "neighbour solicitation multicast",
            Spec::new(w6, ip("ff02::1:ff00:1"), L4::Icmp { kind: 135 }).build(),
            passed(Reason::LinkLocal),
        ),
        (
            "router solicitation",
            Spec::new(ip("fe80::1"), ip("ff02::2"), L4::Icmp { kind: 133 }).build(),
            passed(Reason::LinkLocal),
        ),
        ("dhcp discover", udp(ip("0.0.0.0"), ip("255.255.255.255"), 68, 67).build(), passed(Reason::LinkLocal)),
        ("dhcp to the gateway", udp(w4, ip("10.10.1.1"), 68, 67).build(), passed(Reason::LinkLocal)),
        ("dhcp ports to the internet", udp(w4, ip("8.8.4.4"), 68, 67).build(), denied("implicit-deny")),
        (
            "neighbour solicitation to the internet",
            Spec::new(w6, ip("2001:db8:9::1"), L4::Icmp { kind: 135 }).build(),
            denied("implicit-deny"),
        ),
        ("dns by broadcast is judged", udp(w4, ip("255.255.255.255"), 1043, 53).build(), denied("deny-dns-exfil")),
        ("dns by link-local multicast is judged", udp(w6, ip("ff02::1"), 1044, 53).build(), denied("deny-dns-exfil")),
        (
            "tiny tcp fragment",
            with(tcp(w4, web4, 1045, 443), |s| s.ipv4_frag = Some((1, false, 81))).build(),
            dropped(Reason::TinyFragment),
        ),
        (
            "ipv6 first fragment, options after it",
            with(tcp(w6, web6, 1046, 443), |s| {
                s.ipv6_ext = vec![Ext::Fragment { offset: 0, more: true, id: 11 }, Ext::DestOpts];
            })
            .build(),
            allowed("allow-web"),
        ),
        (
            "its later fragment",
            with(tcp(w6, web6, 1046, 443), |s| {
                s.ipv6_ext = vec![Ext::Fragment { offset: 8, more: false, id: 11 }, Ext::DestOpts];
            })
            .build(),
            Expect { ret: PASS, reason: Reason::FragmentFollowed, rule: Some(("allow-web", Verdict::Allowed)) },
        ),
        // Only control protocols pass unjudged on link-local destinations:
        // mDNS, or a service on the gateway's fe80:: address, meet the
        // rules (they passed before).
        ("mdns", udp(w4, ip("224.0.0.251"), 5353, 5353).build(), denied("implicit-deny")),
        (
            "a service on the gateway's link-local address",
            tcp(w6, ip("fe80::1"), 1064, 1080).build(),
            denied("implicit-deny"),
        ),
        (
            "udp broadcast to a gateway service",
            udp(w4, ip("255.255.255.255"), 1065, 123).build(),
            would_deny("monitor-ntp"),
        ),
        ("igmp report", Spec::new(w4, ip("224.0.0.22"), L4::Raw { proto: 2 }).build(), passed(Reason::LinkLocal)),
        ("mld report", Spec::new(w6, ip("ff02::16"), L4::Icmp { kind: 143 }).build(), passed(Reason::LinkLocal)),
        // Anything else sent to the gateway meets the rules (it passed
        // unjudged before the `gateway` destination).
        ("to the gateway", tcp(w4, ip("10.10.1.1"), 1041, 22).build(), denied("implicit-deny")),
        ("ping the gateway", Spec::ping(w6, ip("fd00:10:1::1")).build(), denied("implicit-deny")),
        ("resolver on the gateway is judged", tcp(w4, ip("10.10.0.2"), 1042, 22).build(), denied("implicit-deny")),
        // The flow cache.
        (
            "cached permit",
            tcp(w4, web4, 1000, 443).build(),
            Expect { ret: PASS, reason: Reason::FlowCache, rule: Some(("allow-web", Verdict::Allowed)) },
        ),
        (
            "cached deny",
            tcp(w4, web4, 1002, 8100).build(),
            Expect { ret: DROP, reason: Reason::FlowCache, rule: Some(("implicit-deny", Verdict::Denied)) },
        ),
    ]
}

/// The same pack in monitor mode: cached verdicts of the old generation
/// are judged again, and what cannot be judged passes.
fn monitor_pack_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w4, web4, .. } = *a;
    vec![
        ("re-judged after swap", tcp(w4, web4, 1002, 8100).build(), would_deny("implicit-deny")),
        ("permit re-judged", tcp(w4, web4, 1000, 443).build(), allowed("allow-web")),
        (
            "monitor passes truncated",
            with(tcp(w4, web4, 1050, 443), |s| {
                s.truncate = Some(14 + 20 + 10);
                s.payload = 0;
            })
            .build(),
            passed(Reason::Truncated),
        ),
        (
            "monitor passes unseen fragment",
            with(tcp(w4, web4, 1051, 443), |s| s.ipv4_frag = Some((3, false, 99))).build(),
            passed(Reason::FragmentUnseen),
        ),
        ("rules inherit the pack mode", udp(w4, ip("8.8.8.8"), 1052, 53).build(), would_deny("deny-dns-exfil")),
        (
            "uncovered-source in the pack mode",
            tcp(ip("10.99.0.1"), web4, 1053, 22).build(),
            would_deny("uncovered-source"),
        ),
    ]
}

/// `uncovered: pass`: sources no rule covers pass untouched, counted.
fn uncovered_pass_cases(a: &Addrs) -> Vec<Case> {
    let web4 = a.web4;
    vec![
        ("uncovered passes", tcp(ip("10.99.0.1"), web4, 1070, 22).build(), passed(Reason::Uncovered)),
        ("uncovered v6 passes", tcp(ip("fd00:99::1"), a.web6, 1071, 22).build(), passed(Reason::Uncovered)),
        (
            "uncovered fragment passes",
            with(tcp(ip("10.99.0.1"), web4, 1072, 443), |s| s.ipv4_frag = Some((3, false, 81))).build(),
            passed(Reason::Uncovered),
        ),
        ("covered still judged", tcp(a.w4, web4, 1073, 22).build(), denied("implicit-deny")),
    ]
}

/// A monitor pack whose deny rule enforces: what cannot be judged is
/// dropped, or a workload could slip past that rule with odd packets.
fn enforcing_deny_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w4, w6, web4, web6 } = *a;
    vec![
        ("enforcing deny rule", udp(w4, ip("8.8.8.8"), 1060, 53).build(), denied("deny-dns-exfil")),
        (
            "too many ext headers under an enforcing deny",
            with(tcp(w6, web6, 1061, 443), |s| s.ipv6_ext = vec![Ext::DestOpts; 9]).build(),
            dropped(Reason::TooManyExtHeaders),
        ),
        (
            "unseen fragment under an enforcing deny",
            with(tcp(w4, web4, 1062, 443), |s| s.ipv4_frag = Some((3, false, 98))).build(),
            dropped(Reason::FragmentUnseen),
        ),
    ]
}

/// A later fragment that starts inside the first fragment's L4 header
/// behind extension headers would rewrite what the verdict was given for
/// (before, only TCP at offsets 0-2 was caught, and only when the fragment
/// header named TCP itself).
fn fragment_overlap_cases(a: &Addrs) -> Vec<Case> {
    let Addrs { w6, web6, .. } = *a;
    vec![
        (
            "ipv6 first fragment, 24 bytes of options before tcp",
            with(tcp(w6, web6, 1047, 443), |s| {
                s.ipv6_ext =
                    vec![Ext::Fragment { offset: 0, more: true, id: 12 }, Ext::DestOpts, Ext::DestOpts, Ext::DestOpts];
            })
            .build(),
            allowed("allow-web"),
        ),
        (
            "a later fragment inside its tcp header",
            with(tcp(w6, web6, 1047, 443), |s| {
                s.ipv6_ext = vec![Ext::Fragment { offset: 3, more: false, id: 12 }, Ext::DestOpts];
            })
            .build(),
            dropped(Reason::TinyFragment),
        ),
        (
            "a later fragment past its tcp header",
            with(tcp(w6, web6, 1047, 443), |s| {
                s.ipv6_ext = vec![Ext::Fragment { offset: 6, more: false, id: 12 }, Ext::DestOpts];
            })
            .build(),
            Expect { ret: PASS, reason: Reason::FragmentFollowed, rule: Some(("allow-web", Verdict::Allowed)) },
        ),
        (
            "ipv6 first fragment, options before udp",
            with(udp(w6, web6, 1048, 123), |s| {
                s.ipv6_ext = vec![Ext::Fragment { offset: 0, more: true, id: 13 }, Ext::DestOpts];
            })
            .build(),
            would_deny("monitor-ntp"),
        ),
        (
            "a later fragment over its udp ports",
            with(udp(w6, web6, 1048, 123), |s| {
                s.ipv6_ext = vec![Ext::Fragment { offset: 1, more: false, id: 13 }, Ext::DestOpts];
            })
            .build(),
            dropped(Reason::TinyFragment),
        ),
    ]
}

#[test]
fn classifies_every_match_dimension_and_odd_packet() {
    let mut h = Harness::new(PACK);
    // The gateway's addresses; 10.10.0.2 is also a listed resolver, so it is judged.
    let gw: BTreeSet<IpAddr> = [ip("10.10.1.1"), ip("fd00:10:1::1"), ip("10.10.0.2")].into();
    h.dp.set_local_addresses(&gw).expect("local addresses");
    let a = Addrs { w4: ip("10.10.1.10"), w6: ip("fd00:10:1::10"), web4: ip("203.0.113.5"), web6: ip("2001:db8:1::5") };

    let cases = [
        match_dimension_cases(&a),
        tag_and_ipv4_cases(&a),
        ipv6_and_malformed_cases(&a),
        not_judged_and_cached_cases(&a),
        fragment_overlap_cases(&a),
    ];
    for (name, frame, want) in cases.iter().flatten() {
        h.check(name, frame, want);
    }

    // The baseline program passes everything untouched.
    assert_eq!(h.run(EMPTY_PROGRAM, &tcp(a.w4, a.web4, 1002, 8100).build()), PASS);

    h.install(&PACK.replace("mode: enforce", "mode: monitor"));
    for (name, frame, want) in &monitor_pack_cases(&a) {
        h.check(name, frame, want);
    }

    h.install(
        &PACK
            .replace("mode: enforce", "mode: monitor")
            .replace("ports: [53], action: deny }", "ports: [53], action: deny, mode: enforce }"),
    );
    for (name, frame, want) in &enforcing_deny_cases(&a) {
        h.check(name, frame, want);
    }

    h.install(&PACK.replace("mode: enforce", "mode: enforce\nuncovered: pass"));
    for (name, frame, want) in &uncovered_pass_cases(&a) {
        h.check(name, frame, want);
    }
}

/// Traffic to the gateway's own addresses is judged: the `gateway`
/// destination names them (the agent compiles the pack with the host's
/// addresses, and again when they change).
#[test]
fn the_gateway_destination_names_the_gateways_addresses() {
    let text = PACK.to_string()
        + "  - { name: allow-gateway-ssh, priority: 80, source: workloads, destination: gateway, protocol: tcp, ports: [22], action: permit }\n";
    let mut pack = load_sources(&[("test.yaml".into(), text)]).expect("valid");
    pack.gateway = vec![ip("10.10.1.1"), ip("fd00:10:1::1")];
    let mut h = Harness::new(PACK);
    h.dp.install(compile(&pack).expect("compiles")).expect("installs");
    let w4 = ip("10.10.1.10");
    h.check("ssh to the gateway", &Spec::tcp(w4, ip("10.10.1.1"), 40_000, 22).build(), &allowed("allow-gateway-ssh"));
    let w6 = ip("fd00:10:1::10");
    h.check("over ipv6", &Spec::tcp(w6, ip("fd00:10:1::1"), 40_001, 22).build(), &allowed("allow-gateway-ssh"));
    h.check("another port", &Spec::tcp(w4, ip("10.10.1.1"), 40_002, 80).build(), &denied("implicit-deny"));
    h.check("ssh elsewhere", &Spec::tcp(w4, ip("198.51.100.1"), 40_003, 22).build(), &denied("implicit-deny"));
    // The address becomes the gateway's: the pack is compiled again with it.
    let syn = Spec::tcp(w4, ip("198.51.100.1"), 40_004, 22).build();
    h.check("denied and cached", &syn, &denied("implicit-deny"));
    pack.gateway.push(ip("198.51.100.1"));
    h.dp.install(compile(&pack).expect("compiles")).expect("installs");
    h.check("now the gateway's", &syn, &allowed("allow-gateway-ssh"));
}

/// TCP flows from the workload to port 443 in 203.0.113.0/24 whose cache
/// ways fall in one set: (destination, source port).
/// The set depends on the live pack's seed.
fn same_set_flows(dp: &Datapath, n: usize) -> Vec<(IpAddr, u16)> {
    use egress_common::{FAMILY_V4, FlowKey, flow_hash, flow_set_start};
    let seed = dp.flow_seed().expect("the live pack's seed");
    let set = |last: u8, sport: u16| {
        let key = FlowKey {
            src: std::net::Ipv4Addr::new(10, 10, 1, 10).to_ipv6_mapped().octets(),
            dst: std::net::Ipv4Addr::new(203, 0, 113, last).to_ipv6_mapped().octets(),
            sport_be: sport.to_be(),
            dport_be: 443u16.to_be(),
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        flow_set_start(flow_hash(&key.words(), seed))
    };
    let target = set(1, 10_000);
    (1..=254u8)
        .flat_map(|last| (10_000..60_000u16).map(move |p| (last, p)))
        .filter(|&(last, p)| set(last, p) == target)
        .take(n)
        .map(|(last, p)| (IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, last)), p))
        .collect()
}

/// The flow cache is set-associative: a set holds `FLOW_WAYS` flows; one
/// more replaces the way unused longest, whose flow is then judged afresh
/// (the same decision, counted as a new flow) while the others stay cached.
#[test]
fn a_full_cache_set_replaces_the_way_unused_longest() {
    let mut h = Harness::new(PACK);
    let ways = egress_common::FLOW_WAYS as usize;
    let ports = same_set_flows(&h.dp, ways + 1);
    assert_eq!(ports.len(), ways + 1, "enough flows in one set");
    let frame = |(dst, p): (IpAddr, u16)| Spec::tcp(ip("10.10.1.10"), dst, p, 443).build();
    let cached = Expect { reason: Reason::FlowCache, ..allowed("allow-web") };
    // Fill the set, the clock (jiffies) moving between flows.
    let pause = || std::thread::sleep(std::time::Duration::from_millis(15));
    for (i, &p) in ports[..ways].iter().enumerate() {
        h.check(&format!("flow {i} judged"), &frame(p), &allowed("allow-web"));
        pause();
    }
    // Flow 0 is used again, so flow 1 is now the one unused longest.
    h.check("flow 0 from the cache", &frame(ports[0]), &cached);
    pause();
    h.check("one flow more: judged", &frame(ports[ways]), &allowed("allow-web"));
    h.check("flow 1 was replaced: judged afresh", &frame(ports[1]), &allowed("allow-web"));
    h.check("flow 0 stayed", &frame(ports[0]), &cached);
    h.check("the newest stayed", &frame(ports[ways]), &cached);
}

/// A permitted flow used again a second or more after it was cached is
/// kept: however many new flows fall in its set, none replaces it (they go
/// uncached instead), so it keeps its decision when the address it was
/// permitted for is no longer learned.
#[test]
fn a_standing_flow_is_never_replaced() {
    let mut h = Harness::new(PACK);
    let ways = egress_common::FLOW_WAYS as usize;
    let ports = same_set_flows(&h.dp, 3 * ways);
    assert_eq!(ports.len(), 3 * ways, "enough flows in one set");
    let frame = |(dst, p): (IpAddr, u16)| Spec::tcp(ip("10.10.1.10"), dst, p, 443).build();
    let cached = Expect { reason: Reason::FlowCache, ..allowed("allow-web") };
    h.check("the standing flow judged", &frame(ports[0]), &allowed("allow-web"));
    std::thread::sleep(std::time::Duration::from_millis(1300));
    h.check("and used again later", &frame(ports[0]), &cached);
    for (i, &p) in ports[1..].iter().enumerate() {
        h.check(&format!("new flow {i} judged"), &frame(p), &allowed("allow-web"));
    }
    h.check("the standing flow stayed", &frame(ports[0]), &cached);
    // The newest of the others took the ways left.
    h.check("the newest is cached", &frame(ports[3 * ways - 1]), &cached);
}

/// Standing is paid for from the source's budgets: a workload that has
/// made its budget's worth of flows standing cannot make more, so the
/// ways of its further flows stay open to new flows (those of any
/// workload) instead of filling its sets with kept ways.
#[test]
fn standing_flows_beyond_the_budget_are_not_kept() {
    let mut h = Harness::new(PACK);
    let ways = egress_common::FLOW_WAYS as usize;
    let ports = same_set_flows(&h.dp, ways + 1);
    assert_eq!(ports.len(), ways + 1, "enough flows in one set");
    let own = egress_common::limit(egress_common::Spend::Standing, egress_common::Level::Address).burst as u16;
    // The budget's worth and a few more (its refill over the test's second).
    let fillers: Vec<_> =
        (0..own + 8).map(|i| Spec::tcp(ip("10.10.1.10"), ip("203.0.113.250"), 1_000 + i, 443).build()).collect();
    let frame = |(dst, p): (IpAddr, u16)| Spec::tcp(ip("10.10.1.10"), dst, p, 443).build();
    let cached = Expect { reason: Reason::FlowCache, ..allowed("allow-web") };
    for (i, f) in fillers.iter().enumerate() {
        h.check(&format!("filler {i} judged"), f, &allowed("allow-web"));
    }
    for (i, &p) in ports[..ways].iter().enumerate() {
        h.check(&format!("flow {i} of the set judged"), &frame(p), &allowed("allow-web"));
    }
    std::thread::sleep(std::time::Duration::from_millis(1300));
    // Used again a second later: the fillers take the address's budget...
    for (i, f) in fillers.iter().enumerate() {
        h.check(&format!("filler {i} again"), f, &cached);
    }
    // ... so the set's flows, used again too, find none left.
    for (i, &p) in ports[..ways].iter().enumerate() {
        h.check(&format!("flow {i} of the set again"), &frame(p), &cached);
    }
    let refused = h.dp.budget_stats().expect("budget stats")
        [egress_common::budget_stat_slot(egress_common::Spend::Standing, egress_common::Level::Address) as usize];
    assert!(refused >= ways as u64, "the set's flows were refused standing: {refused}");
    // Not kept: a new flow in the set is cached in one of their ways.
    h.check("a new flow in the set judged", &frame(ports[ways]), &allowed("allow-web"));
    h.check("and cached", &frame(ports[ways]), &cached);
}

/// The set of a flow is keyed with a seed drawn for each install: flows
/// chosen to share a set under one pack do not under the next, so a
/// workload cannot aim at another's ways.
#[test]
fn flows_that_share_a_set_are_spread_by_the_next_install() {
    let mut h = Harness::new(PACK);
    let ways = egress_common::FLOW_WAYS as usize;
    let ports = same_set_flows(&h.dp, 2 * ways);
    assert_eq!(ports.len(), 2 * ways, "enough flows in one set");
    let before = h.dp.flow_seed().expect("seed");
    h.install(PACK);
    assert_ne!(h.dp.flow_seed().expect("seed"), before, "a new seed");
    let frame = |(dst, p): (IpAddr, u16)| Spec::tcp(ip("10.10.1.10"), dst, p, 443).build();
    let cached = Expect { reason: Reason::FlowCache, ..allowed("allow-web") };
    for (i, &p) in ports.iter().enumerate() {
        h.check(&format!("flow {i} judged"), &frame(p), &allowed("allow-web"));
    }
    for (i, &p) in ports.iter().enumerate() {
        h.check(&format!("flow {i} still cached"), &frame(p), &cached);
    }
}

/// Many installs of packs of different sizes through the same two slots:
/// after each one the datapath decides like the compiled pack, so no entry
/// of an older pack survives (shrinking then growing tables included).
#[test]
fn successive_installs_leave_nothing_stale() {
    use egress_policy::compile::Decision;
    use egress_policy::evaluate::Probe;
    use egress_policy::synth::{Rng, realistic_pack};

    let mut dp = Datapath::load().expect("datapath loads");
    let mut rng = Rng::new(7);
    let mut sport = 20_000u16;
    for (round, size) in [400usize, 12, 300, 5, 500, 40, 250].into_iter().enumerate() {
        let pack = realistic_pack(size, round as u64 + 1);
        let compiled = compile(&pack).expect("compiles");
        dp.install(compiled.clone()).expect("installs");
        // Probe sources inside the pack's groups and destinations from its rules.
        let srcs: Vec<IpAddr> =
            pack.smartgroups.values().flat_map(|g| g.cidrs.iter().map(ipnet::IpNet::addr)).collect();
        let dsts: Vec<IpAddr> = compiled.dst.keys().map(ipnet::IpNet::addr).chain(srcs.iter().copied()).collect();
        let mut checked = 0;
        for _ in 0..300 {
            let src = srcs[rng.below(srcs.len() as u64) as usize];
            let dst = dsts[rng.below(dsts.len() as u64) as usize];
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            let (proto, dport) = match rng.below(3) {
                0 => (6u8, [22u16, 53, 80, 443, 5432, 8080, 30000][rng.below(7) as usize]),
                1 => (17u8, [53u16, 123, 443, 8000][rng.below(4) as usize]),
                _ => (if src.is_ipv4() { 1 } else { 58 }, 0),
            };
            sport = sport.wrapping_add(1).max(1024);
            let spec = match proto {
                6 => Spec::tcp(src, dst, sport, dport),
                17 => Spec::udp(src, dst, sport, dport),
                _ => Spec::ping(src, dst),
            };
            let want = match compiled.decide(src, dst, proto, dport) {
                Decision::Uncovered => PASS,
                Decision::Rule(r) => {
                    let info = compiled.rules[r as usize].info;
                    if info.action == egress_common::ACTION_DENY && info.mode == egress_common::MODE_ENFORCE {
                        DROP
                    } else {
                        PASS
                    }
                }
            };
            let prog = dp.tc_program(TC_PROGRAM).expect("program");
            let frame = spec.build();
            let got = prog
                .test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() })
                .expect("run")
                .return_value;
            assert_eq!(got, want, "round {round} ({size} rules): {:?}", Probe { src, dst, proto, dport });
            checked += 1;
        }
        assert!(checked > 100, "round {round}: too few probes");
    }
}

#[test]
fn xdp_program_judges_like_tc() {
    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    let mut h = Harness::new(PACK);
    let w4 = ip("10.10.1.10");
    let web4 = ip("203.0.113.5");
    assert_eq!(h.run_xdp(&Spec::tcp(w4, web4, 2000, 443).build()), XDP_PASS);
    assert_eq!(h.run_xdp(&Spec::tcp(w4, web4, 2001, 22).build()), XDP_DROP);
    assert_eq!(h.run_xdp(&Spec::udp(w4, ip("8.8.8.8"), 2002, 53).build()), XDP_DROP);
    // A source no rule covers: `uncovered-source` (the pack leaves `uncovered` at `deny`).
    assert_eq!(h.run_xdp(&Spec::tcp(ip("10.99.0.1"), web4, 2003, 22).build()), XDP_DROP);
    let three_tags = with(Spec::tcp(w4, web4, 2004, 443), |s| s.tags = vec![0x88a8, 0x8100, 0x8100]);
    assert_eq!(h.run_xdp(&three_tags.build()), XDP_DROP);
    // The skb test harness refuses frames whose IPv4 header is cut short
    // (EINVAL); XDP's takes them, and runs the same parser.
    let before = h.dp.reason_counts().expect("reasons")[Reason::Truncated as usize];
    let cut = with(Spec::tcp(w4, web4, 2005, 443), |s| s.truncate = Some(14 + 12));
    assert_eq!(h.run_xdp(&cut.build()), XDP_DROP);
    let after = h.dp.reason_counts().expect("reasons")[Reason::Truncated as usize];
    assert_eq!(after, before + 1, "truncated IPv4 header counted");
}
