//! Property test on the shape that made the (source, port) cross product
//! explode: many sources, each with rules on ports of its own, overlapping
//! source prefixes, `any`-source rules and port ranges that cut each other.
//! The compiled tables (a default combined class per source, entries only
//! where a source's port classes differ from it) decide what the reference
//! evaluator decides.

use std::net::{IpAddr, Ipv4Addr};

use egress_policy::compile::compile;
use egress_policy::evaluate::{Probe, evaluate};
use egress_policy::model::*;
use ipnet::{IpNet, Ipv4Net};
use proptest::prelude::*;

/// A source prefix in 10.0.0.0/26: nested and overlapping ones are common.
fn source_net() -> impl Strategy<Value = IpNet> {
    (0u8..64, prop_oneof![4 => Just(32u8), 1 => Just(30u8), 1 => Just(28u8), 1 => Just(26u8)])
        .prop_map(|(h, len)| IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, h), len).expect("valid length").trunc()))
}

/// Ports from a small universe (0..24), so that ranges cut each other.
fn ports() -> impl Strategy<Value = Option<Vec<PortRange>>> {
    prop_oneof![
        1 => Just(None),
        4 => prop::collection::vec((0u16..24, 0u16..4).prop_map(|(lo, w)| PortRange { lo, hi: lo + w }), 1..3)
            .prop_map(Some),
    ]
}

/// (source group or any, destination in 192.0.2.0/29 or any, protocol, ports, deny)
type Parts = (Option<usize>, Option<u8>, u8, Option<Vec<PortRange>>, bool);

fn pack() -> impl Strategy<Value = Pack> {
    (2usize..40).prop_flat_map(|groups| {
        let rule = (
            prop_oneof![1 => Just(None), 6 => (0..groups).prop_map(Some)],
            prop_oneof![1 => Just(None), 3 => (0u8..8).prop_map(Some)],
            0u8..3,
            ports(),
            prop::bool::weighted(0.3),
        );
        (prop::collection::vec(prop::collection::vec(source_net(), 1..3), groups), prop::collection::vec(rule, 1..80))
            .prop_map(build)
    })
}

fn build((nets, rules): (Vec<Vec<IpNet>>, Vec<Parts>)) -> Pack {
    let mut p = Pack { version: 1, ..Pack::default() };
    for (i, cidrs) in nets.into_iter().enumerate() {
        let name = format!("g{i}");
        p.smartgroups.insert(name.clone(), SmartGroup { name, cidrs, location: Location::default() });
    }
    for (i, (src, dst, proto, ports, deny)) in rules.into_iter().enumerate() {
        let destination = match dst {
            None => Destination::Any,
            Some(h) => Destination::Cidrs(vec![IpNet::V4(Ipv4Net::new(Ipv4Addr::new(192, 0, 2, h), 32).expect("/32"))]),
        };
        let action = if deny { Action::Deny } else { Action::Permit };
        let destinations = vec![destination];
        p.rules.push(Rule {
            name: format!("r{i}"),
            priority: i as u16,
            source: src.map_or(Source::Any, |g| Source::Groups(vec![format!("g{g}")])),
            verify_names: Rule::default_verify_names(action, &destinations),
            destinations,
            protocol: [Protocol::Tcp, Protocol::Udp, Protocol::Any][proto as usize],
            ports,
            action,
            mode: Mode::Enforce,
            log: true,
            location: Location::default(),
        });
    }
    p
}

fn probe() -> impl Strategy<Value = Probe> {
    (0u8..70, 0u8..9, prop::bool::ANY, 0u16..26).prop_map(|(s, d, udp, dport)| Probe {
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, s)),
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, d)),
        proto: if udp { 17 } else { 6 },
        dport,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn many_sources_with_ports_of_their_own_decide_like_the_reference(
        pack in pack(),
        probes in prop::collection::vec(probe(), 60),
    ) {
        let compiled = compile(&pack).expect("compiles");
        for p in probes {
            let got = compiled.decide(p.src, p.dst, p.proto, p.dport);
            prop_assert_eq!(compiled.outcome(got), evaluate(&pack, &p), "probe {:?}", p);
        }
    }
}

/// A SmartGroup `agent-{i}` of one host, 10.0.0.0 + `i`, for each `i`
/// below `agents`.
fn host_groups(p: &mut Pack, agents: u32) {
    for i in 0..agents {
        let cidr = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).expect("/32"));
        group(p, format!("agent-{i}"), cidr);
    }
}

fn group(p: &mut Pack, name: String, cidr: IpNet) {
    p.smartgroups.insert(name.clone(), SmartGroup { name, cidrs: vec![cidr], location: Location::default() });
}

/// A TCP permit to any destination (its priority set by [`numbered`]).
fn tcp_permit(name: String, source: Source, ports: Option<Vec<PortRange>>) -> Rule {
    Rule {
        name,
        priority: 0,
        source,
        verify_names: false,
        destinations: vec![Destination::Any],
        protocol: Protocol::Tcp,
        ports,
        action: Action::Permit,
        mode: Mode::Enforce,
        log: true,
        location: Location::default(),
    }
}

/// One port, as a list of ranges.
fn port(p: u16) -> Vec<PortRange> {
    vec![PortRange { lo: p, hi: p }]
}

/// The pack's rules in the order they were pushed, by priority.
fn numbered(p: &mut Pack) {
    for (i, r) in p.rules.iter_mut().enumerate() {
        r.priority = i as u16;
    }
}

/// A pack past the (source, port) table's capacity: `check`'s error says
/// which sources drive the count and which rules pick out their ports
/// (here: the rules of a /16 on ports of their own, in every /32 inside).
#[test]
fn a_pack_past_the_tables_names_the_sources_and_rules_that_drive_it() {
    let mut p = Pack { version: 1, ..Pack::default() };
    // 2,700 x 200 entries: past the 524,288 the table holds.
    host_groups(&mut p, 2_700);
    group(&mut p, "all".into(), IpNet::V4(Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 16).expect("/16")));
    for i in 0..2_700 {
        p.rules.push(tcp_permit(format!("own-{i}"), Source::Groups(vec![format!("agent-{i}")]), None));
    }
    for k in 0..200u16 {
        p.rules.push(tcp_permit(format!("wide-{k}"), Source::Groups(vec!["all".into()]), Some(port(1000 + k))));
    }
    numbered(&mut p);
    let error = compile(&p).expect_err("past the table").to_string();
    assert!(error.contains("(source, port) class entries"), "{error}");
    assert!(error.contains("most come from the sources 10.0."), "{error}");
    assert!(error.contains("0 of them for any source"), "{error}");
    assert!(error.contains("wide-"), "{error}");
}

/// The same ports on rules of any source cost no (source, port) entry:
/// they are combined with the port classes alone.
#[test]
fn rules_of_any_source_on_ports_of_their_own_are_not_multiplied_by_the_sources() {
    let mut p = Pack { version: 1, ..Pack::default() };
    host_groups(&mut p, 1_000);
    for i in 0..1_000 {
        p.rules.push(tcp_permit(format!("own-{i}"), Source::Groups(vec![format!("agent-{i}")]), None));
    }
    for k in 0..200u16 {
        p.rules.push(tcp_permit(format!("wild-{k}"), Source::Any, Some(port(1000 + k))));
    }
    numbered(&mut p);
    let compiled = compile(&p).expect("compiles");
    assert!(compiled.sp.len() <= 2_000, "{} (source, port) entries", compiled.sp.len());
    for (i, port, want) in [(0u32, 1_005u16, "own-0"), (999, 80, "own-999")] {
        let src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let probe = Probe { src, dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), proto: 6, dport: port };
        let got = compiled.outcome(compiled.decide(src, probe.dst, 6, port));
        assert_eq!(got, evaluate(&p, &probe));
        assert_eq!(got, egress_policy::evaluate::Outcome::Rule(p.rules.iter().position(|r| r.name == want).unwrap()));
    }
    let stranger = IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9));
    let got = compiled.outcome(compiled.decide(stranger, stranger, 6, 1_005));
    assert_eq!(got, egress_policy::evaluate::Outcome::Rule(1_005), "a source of no group: wild-5");
}
