//! Property test: on random packs and random packets, the compiled tables
//! (looked up exactly as the datapath does) decide what the reference
//! evaluator, written straight from the contract, decides.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::compile::{CompiledPack, NamesDecision, Previous, compile, compile_stable};
use egress_policy::evaluate::{Probe, evaluate_learned, evaluate_named, name_covered};
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
/// destination prefixes, protocol, ports, deny, enforce, and whether a
/// `permit` rule with a WebGroup destination keeps `verify_names` at its
/// default (`true`) or sets it `false`.
type RuleParts = (Option<Vec<usize>>, Vec<u8>, Vec<IpNet>, u8, Option<Vec<PortRange>>, bool, bool, bool);

fn rule(groups: usize) -> impl Strategy<Value = RuleParts> {
    (
        prop_oneof![1 => Just(None), 4 => prop::collection::vec(0..groups, 1..3).prop_map(Some)],
        prop::collection::vec(0u8..8, 1..3),
        prop::collection::vec(net(), 1..3),
        0u8..4,
        port_ranges(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.8),
    )
}

fn pack() -> impl Strategy<Value = Pack> {
    let groups = 4usize;
    (
        prop::collection::vec(prop::collection::vec(net(), 1..4), groups),
        prop::collection::vec(rule(groups), 1..14),
        prop::collection::vec(addr(), 0..3),
        any::<bool>(),
        prop::collection::vec(addr(), 0..3),
    )
        .prop_map(move |(group_nets, rules, resolvers, pass_uncovered, gateway)| {
            let uncovered = if pass_uncovered { Uncovered::Pass } else { Uncovered::Deny };
            let mut p = Pack { version: 1, uncovered, gateway, ..Pack::default() };
            p.dns.resolvers = resolvers;
            for (i, cidrs) in group_nets.into_iter().enumerate() {
                let name = format!("g{i}");
                p.smartgroups.insert(name.clone(), SmartGroup { name, cidrs, location: Location::default() });
            }
            p.webgroups = BTreeMap::new();
            for (w, domains) in webgroup_domains() {
                let name = w.to_string();
                p.webgroups.insert(name.clone(), WebGroup { name, domains, location: Location::default() });
            }
            for (i, (src, dkinds, dnets, proto, ports, deny, enforce, verify)) in rules.into_iter().enumerate() {
                let protocol = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Any][proto as usize];
                let ports = if protocol == Protocol::Icmp { None } else { ports };
                let destinations: Vec<Destination> = dkinds
                    .iter()
                    .map(|k| match k {
                        0 => Destination::Any,
                        1 => Destination::Resolvers,
                        2 => Destination::SmartGroup(format!("g{}", i % groups)),
                        3 | 5 | 6 => Destination::WebGroup(format!("w{}", (i + usize::from(*k)) % WEBGROUPS.len())),
                        7 => Destination::Gateway,
                        _ => Destination::Cidrs(dnets.clone()),
                    })
                    .collect();
                let action = if deny { Action::Deny } else { Action::Permit };
                let verify_names = Rule::default_verify_names(action, &destinations) && verify;
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

/// The WebGroups of every random pack.
const WEBGROUPS: [&str; 3] = ["w0", "w1", "w2"];

/// Their patterns: names may be covered by none, one or several of them.
fn webgroup_domains() -> [(&'static str, Vec<DomainPattern>); 3] {
    let exact = |n: &str| DomainPattern::Exact(n.to_string());
    let one = |n: &str| DomainPattern::OneLabel(n.to_string());
    let any = |n: &str| DomainPattern::AnyDepth(n.to_string());
    [
        ("w0", vec![exact("api.shared.example.com"), one("w0.example.com"), one("cdn.example.com")]),
        ("w1", vec![any("cdn.example.com"), exact("w1.example.com")]),
        ("w2", vec![exact("api.shared.example.com"), one("w2.example.com")]),
    ]
}

/// Connection names and the WebGroups that cover them.
const NAMES: [(&str, &[&str]); 11] = [
    ("chat.w0.example.com", &["w0"]),
    ("w1.example.com", &["w1"]),
    ("q.w2.example.com", &["w2"]),
    ("api.shared.example.com", &["w0", "w2"]),
    ("x.cdn.example.com", &["w0", "w1"]),
    ("a.b.cdn.example.com", &["w1"]),
    ("W1.Example.COM.", &["w1"]),
    ("Q.W2.example.com.", &["w2"]),
    ("attacker-tenant.example", &[]),
    ("cdn.example.com", &[]),
    ("a.b.w0.example.com", &[]),
];

/// The WebGroups of `WEBGROUPS` whose bit is set in `mask`.
fn learned_set(mask: u8) -> BTreeSet<String> {
    WEBGROUPS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, w)| w.to_string()).collect()
}

/// The compiled pack's bits of the WebGroups `groups`.
fn bits<'a>(compiled: &CompiledPack, groups: impl IntoIterator<Item = &'a String>) -> u64 {
    groups.into_iter().map(|w| 1u64 << compiled.webgroup_bits[w]).fold(0, |a, b| a | b)
}

/// The pack compiled afresh (`before` 0), after another pack (1), or after
/// itself with its first rule's ports edited (2): class numbers kept from
/// the pack before must never change a decision.
fn compiled(pack: &Pack, other: &Pack, before: u8) -> CompiledPack {
    let previous = match before {
        0 => Previous::default(),
        1 => compile(other).expect("compiles").previous(),
        _ => {
            let mut edited = pack.clone();
            if let Some(r) = edited.rules.first_mut() {
                r.ports = match r.ports {
                    Some(_) => None,
                    None => Some(vec![PortRange { lo: 443, hi: 443 }]),
                };
            }
            compile(&edited).expect("compiles").previous()
        }
    };
    compile_stable(pack, &previous).expect("compiles")
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
        probes in prop::collection::vec((probe(), 0u8..8), 40),
    ) {
        let compiled = compiled(&pack, &other, before);
        for (p, learned_bits) in probes {
            // The WebGroups the source learned the destination for.
            let learned = learned_set(learned_bits);
            let groups = bits(&compiled, &learned);
            let want = evaluate_learned(&pack, &p, &learned);
            let got = compiled.decide_learned(p.src, p.dst, p.proto, p.dport, groups);
            prop_assert_eq!(compiled.outcome(got), want, "probe {:?} learned {:?}", p, learned);
        }
    }

    /// The second decision (address and name): the compiled tables decide
    /// what the reference decides, for every name (covered by no, one or
    /// several WebGroups) and none; the name table says which WebGroups
    /// cover a name as the reference matcher does; and `needs_name` holds
    /// exactly when some name, or none, changes the first decision.
    #[test]
    fn compiled_second_decision_is_the_reference(
        pack in pack(),
        other in pack(),
        before in 0u8..3,
        probes in prop::collection::vec((probe(), 0u8..8), 30),
    ) {
        let compiled = compiled(&pack, &other, before);
        let names = NamesDecision::build(&pack, &compiled);
        // `both` is the first decision's `(x, WebGroup)` entry.
        prop_assert_eq!(names.xw.len(), compiled.xw.len());
        for (key, entry) in &names.xw {
            prop_assert_eq!(compiled.xw.get(key), Some(&entry.both));
        }
        for (name, covered_by) in NAMES {
            let want: BTreeSet<String> =
                pack.webgroups.values().filter(|w| name_covered(w, name)).map(|w| w.name.clone()).collect();
            prop_assert_eq!(&want, &covered_by.iter().map(ToString::to_string).collect(), "{}", name);
            prop_assert_eq!(compiled.name_groups(name), bits(&compiled, &want), "{}", name);
        }
        for (p, learned_bits) in probes {
            let learned = learned_set(learned_bits);
            let groups = bits(&compiled, &learned);
            let first = evaluate_learned(&pack, &p, &learned);
            let mut changes = false;
            for name in NAMES.iter().map(|(n, _)| Some(*n)).chain([None]) {
                let want = evaluate_named(&pack, &p, &learned, name);
                let named = name.map_or(0, |n| compiled.name_groups(n));
                let got = names.decide_named(&compiled, p.src, p.dst, p.proto, p.dport, groups, named);
                prop_assert_eq!(compiled.outcome(got), want, "probe {:?} learned {:?} name {:?}", p, learned, name);
                changes |= want != first;
            }
            let needs = names.needs_name(&compiled, p.src, p.dst, p.proto, p.dport, groups);
            prop_assert_eq!(needs, changes, "probe {:?} learned {:?} first {:?}", p, learned, first);
        }
    }
}
