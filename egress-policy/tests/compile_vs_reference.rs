//! Property test: on random packs and random packets, the compiled tables
//! (looked up exactly as the datapath does) decide what the reference
//! evaluator, written straight from the contract, decides.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::compile::{Decision, Previous, compile, compile_stable};
use egress_policy::evaluate::{Outcome, Probe, evaluate_learned};
use egress_policy::model::*;
use ipnet::IpNet;
use proptest::prelude::*;

/// Addresses from a small universe so that prefixes overlap and nest.
fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..8).prop_map(|(b, c)| IpAddr::V4(Ipv4Addr::new(10, b, 0, c))),
        (0u8..4).prop_map(|b| IpAddr::V4(Ipv4Addr::new(192, 168, b, 1))),
        (0u16..4, 0u16..8).prop_map(|(b, c)| IpAddr::V6(Ipv6Addr::new(0xfd00, b, 0, 0, 0, 0, 0, c))),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    (addr(), 0u8..=100).prop_map(|(a, l)| {
        let len = match a {
            IpAddr::V4(_) => [8, 16, 24, 29, 30, 31, 32][l as usize % 7],
            IpAddr::V6(_) => [16, 32, 64, 125, 126, 127, 128][l as usize % 7],
        };
        IpNet::new(a, len).expect("valid length").trunc()
    })
}

fn port_ranges() -> impl Strategy<Value = Option<Vec<PortRange>>> {
    prop_oneof![
        Just(None),
        prop::collection::vec(
            prop_oneof![
                (0u16..6)
                    .prop_map(|i| [22u16, 53, 80, 443, 8080, 0][i as usize])
                    .prop_map(|p| PortRange { lo: p, hi: p }),
                (0u16..3)
                    .prop_map(|i| [(1000u16, 2000u16), (50, 100), (0, 65535)][i as usize])
                    .prop_map(|(lo, hi)| PortRange { lo, hi }),
            ],
            1..3
        )
        .prop_map(Some),
    ]
}

/// A random rule's parts: source groups (`None`: any), destination kinds,
/// destination prefixes, protocol, ports, deny, enforce.
type RuleParts = (Option<Vec<usize>>, Vec<u8>, Vec<IpNet>, u8, Option<Vec<PortRange>>, bool, bool);

fn rule(groups: usize) -> impl Strategy<Value = RuleParts> {
    (
        prop_oneof![1 => Just(None), 4 => prop::collection::vec(0..groups, 1..3).prop_map(Some)],
        prop::collection::vec(0u8..5, 1..3),
        prop::collection::vec(net(), 1..3),
        0u8..4,
        port_ranges(),
        any::<bool>(),
        any::<bool>(),
    )
}

fn pack() -> impl Strategy<Value = Pack> {
    let groups = 4usize;
    (
        prop::collection::vec(prop::collection::vec(net(), 1..4), groups),
        prop::collection::vec(rule(groups), 1..14),
        prop::collection::vec(addr(), 0..3),
    )
        .prop_map(move |(group_nets, rules, resolvers)| {
            let mut p = Pack { version: 1, ..Pack::default() };
            p.dns.resolvers = resolvers;
            for (i, cidrs) in group_nets.into_iter().enumerate() {
                let name = format!("g{i}");
                p.smartgroups.insert(name.clone(), SmartGroup { name, cidrs, location: Location::default() });
            }
            p.webgroups = BTreeMap::new();
            for w in ["w0", "w1"] {
                p.webgroups.insert(
                    w.to_string(),
                    WebGroup {
                        name: w.to_string(),
                        domains: vec![DomainPattern::Exact(format!("{w}.example.com"))],
                        location: Location::default(),
                    },
                );
            }
            for (i, (src, dkinds, dnets, proto, ports, deny, enforce)) in rules.into_iter().enumerate() {
                let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Any][proto as usize];
                let ports = if protocol == Protocol::Icmp { None } else { ports };
                let destinations: Vec<Destination> = dkinds
                    .iter()
                    .map(|k| match k {
                        0 => Destination::Any,
                        1 => Destination::Resolvers,
                        2 => Destination::SmartGroup(format!("g{}", i % groups)),
                        3 => Destination::WebGroup(format!("w{}", i % 2)),
                        _ => Destination::Cidrs(dnets.clone()),
                    })
                    .collect();
                let action = if deny { Action::Deny } else { Action::Permit };
                let verify_names = Rule::default_verify_names(action, &destinations);
                p.rules.push(Rule {
                    name: format!("r{i}"),
                    priority: (i * 10) as u16,
                    source: match src {
                        None => Source::Any,
                        Some(g) => Source::Groups(g.into_iter().map(|g| format!("g{g}")).collect()),
                    },
                    destinations,
                    protocol,
                    ports,
                    action,
                    mode: if enforce { Mode::Enforce } else { Mode::Monitor },
                    log: true,
                    verify_names,
                    location: Location::default(),
                });
            }
            p
        })
}

fn probe() -> impl Strategy<Value = Probe> {
    (any::<bool>(), addr(), addr(), 0u8..5, 0u16..8).prop_map(|(v4, a, b, proto, port)| {
        // Keep both addresses in one family.
        let (src, dst) = match (v4, a, b) {
            (_, IpAddr::V4(_), IpAddr::V4(_)) | (_, IpAddr::V6(_), IpAddr::V6(_)) => (a, b),
            (true, _, _) => (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 1, 0, 3))),
            (false, _, _) => (a.to_canonical(), IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2))),
        };
        let (src, dst) = if src.is_ipv4() == dst.is_ipv4() { (src, dst) } else { (src, src) };
        let icmp = if src.is_ipv4() { 1 } else { 58 };
        let proto = [6, 17, icmp, 47, if src.is_ipv4() { 58 } else { 1 }][proto as usize];
        let dport = [22, 53, 80, 443, 1500, 8080, 75, 65535][port as usize];
        Probe { src, dst, proto, dport }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn compiled_pack_decides_like_the_reference(
        pack in pack(),
        other in pack(),
        before in 0u8..3,
        probes in prop::collection::vec((probe(), 0u8..4), 40),
    ) {
        // Compiled afresh, or after another pack, or after this pack with
        // its first rule's ports edited (class numbers are kept from the
        // pack before: they must never change a decision).
        let previous = match before {
            0 => Previous::default(),
            1 => compile(&other).expect("compiles").previous(),
            _ => {
                let mut edited = pack.clone();
                if let Some(r) = edited.rules.first_mut() {
                    r.ports = match r.ports { Some(_) => None, None => Some(vec![PortRange { lo: 443, hi: 443 }]) };
                }
                compile(&edited).expect("compiles").previous()
            }
        };
        let compiled = compile_stable(&pack, &previous).expect("compiles");
        for (p, learned_bits) in probes {
            // The WebGroups the source learned the destination for.
            let learned: BTreeSet<String> =
                ["w0", "w1"].iter().enumerate().filter(|(i, _)| learned_bits & (1 << i) != 0).map(|(_, w)| w.to_string()).collect();
            let groups = learned.iter().map(|w| 1u64 << compiled.webgroup_bits[w]).fold(0, |a, b| a | b);
            let want = evaluate_learned(&pack, &p, &learned);
            let got = compiled.decide_learned(p.src, p.dst, p.proto, p.dport, groups);
            let got = match got {
                Decision::Uncovered => Outcome::Uncovered,
                Decision::Rule(r) if r == compiled.implicit_rule => Outcome::ImplicitDeny,
                Decision::Rule(r) => Outcome::Rule(r as usize),
            };
            prop_assert_eq!(got, want, "probe {:?} learned {:?}", p, learned);
        }
    }
}
