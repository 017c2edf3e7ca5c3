//! Packs of the shapes users write load into the real datapath and decide
//! probe packets as the reference evaluator does (`BPF_PROG_TEST_RUN`).
//! Needs root (`CAP_BPF`, `CAP_NET_ADMIN`), as the whole suite does.

use std::net::{IpAddr, Ipv4Addr};

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, RuleTotals, TC_PROGRAM};
use egress_common::Verdict;
use egress_lab::packet::Spec;
use egress_lab::shapes::{Style, agent_addr, agent_dest, agent_port, classbench, per_agent};
use egress_policy::evaluate::{Outcome, Probe, evaluate};
use egress_policy::model::{Action, Destination, Pack, Protocol, Source};
use egress_policy::{compile::compile, load_sources};
use ipnet::IpNet;

const PASS: u32 = -1i32 as u32; // TC_ACT_UNSPEC
const DROP: u32 = 2; // TC_ACT_SHOT

fn packets(t: &RuleTotals, rule: &str, verdict: Verdict) -> u64 {
    t.get(rule).map_or(0, |c| c[verdict as usize].packets)
}

/// 2,000 agents of one address each, five rules each on a port range of
/// their own and 443: a cross product of sources and port classes needs
/// 20 million entries (the old classifier refused the pack at install,
/// after `check` had passed it); with a default per source, 12,000.
#[test]
fn a_pack_of_2000_agents_with_ports_of_their_own_loads_and_decides_by_rule() {
    const AGENTS: usize = 2_000;
    const RULES: usize = 5;
    let pack = load_sources(&[("agents.yaml".into(), per_agent(AGENTS, RULES))]).expect("the pack is valid");
    let compiled = compile(&pack).expect("check's compile takes the pack");
    assert!(compiled.sp.len() <= AGENTS * (RULES + 1), "{} (source, port) entries", compiled.sp.len());
    let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
    dp.install(compiled).expect("run installs what check took");
    let mut sport = 20_000u16;
    for i in (0..AGENTS).step_by(97).chain([AGENTS - 1]) {
        let other = (i + AGENTS / 2) % AGENTS;
        for j in [0, RULES - 1] {
            let own = agent_port(i, j, RULES) + 1;
            let theirs = agent_port(other, j, RULES);
            let rule = format!("a{i}-r{j}");
            for (dst, port, want) in [
                (agent_dest(i, j), own, Some(rule.as_str())),
                (agent_dest(i, j), 443, Some(rule.as_str())),
                (agent_dest(i, j), theirs, None),
                (agent_dest(other, j), 443, None),
            ] {
                sport += 1;
                let (src, dst) = (IpAddr::V4(agent_addr(i)), IpAddr::V4(dst));
                let probe = Probe { src, dst, proto: 6, dport: port };
                let reference = match evaluate(&pack, &probe) {
                    Outcome::Rule(r) => pack.rules[r].name.clone(),
                    other => panic!("agent {i} to {dst}:{port}: the evaluator says {other:?}"),
                };
                let name = want.unwrap_or("default-deny");
                assert_eq!(reference, name, "agent {i} to {dst}:{port}: the reference evaluator");
                let (ret, verdict) = if want.is_some() { (PASS, Verdict::Allowed) } else { (DROP, Verdict::Denied) };
                let before = dp.rule_totals().expect("rule totals");
                let frame = Spec::tcp(src, dst, sport, port).build();
                let prog = dp.tc_program(TC_PROGRAM).expect("program");
                let got = prog
                    .test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() })
                    .expect("BPF_PROG_TEST_RUN")
                    .return_value;
                assert_eq!(got, ret, "agent {i} to {dst}:{port}: returned {got:#x}");
                let after = dp.rule_totals().expect("rule totals");
                assert_eq!(
                    packets(&after, name, verdict),
                    packets(&before, name, verdict) + 1,
                    "agent {i} to {dst}:{port}: decided by {name}"
                );
            }
        }
    }
}

/// A packet that rule `r` of `pack` matches (its first source prefix, its
/// first destination prefix, a port of its first range), from `salt`'s
/// host bits inside the prefixes.
fn probe_of(pack: &Pack, r: usize, salt: u32) -> Probe {
    let rule = &pack.rules[r];
    let inside = |net: Option<IpNet>, fallback: Ipv4Addr| -> IpAddr {
        match net {
            Some(IpNet::V4(n)) => {
                let host = if n.prefix_len() == 32 { 0 } else { salt & (u32::MAX >> n.prefix_len()) };
                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
            }
            _ => IpAddr::V4(fallback),
        }
    };
    let src_net = match &rule.source {
        Source::Groups(g) => pack.smartgroups.get(&g[0]).and_then(|g| g.cidrs.first().copied()),
        Source::Any => None,
    };
    let dst_net = rule.destinations.iter().find_map(|d| match d {
        Destination::Cidrs(c) => c.first().copied(),
        _ => None,
    });
    let proto = if rule.protocol == Protocol::Udp { 17 } else { 6 };
    let dport =
        rule.ports.as_ref().and_then(|p| p.first()).map_or(7_777, |p| p.lo + (salt as u16 % (p.hi - p.lo + 1).max(1)));
    Probe {
        src: inside(src_net, Ipv4Addr::new(192, 168, 7, 7)),
        dst: inside(dst_net, Ipv4Addr::new(100, 64, 3, 3)),
        proto,
        dport,
    }
}

/// ClassBench-like filter sets of 10,000 rules in the acl, fw and ipc
/// styles (`egress_lab::shapes::classbench`) load through the real
/// datapath, and packets aimed at 150 of their rules each are decided
/// (action and rule) as the reference evaluator decides them. Before
/// rules of any source were combined with the ports alone and the
/// (source, port) table held 524,288 entries, each set was refused.
#[test]
fn classbench_like_sets_of_10000_rules_load_and_decide_as_the_reference() {
    let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
    for style in [Style::Acl, Style::Fw, Style::Ipc] {
        let pack = load_sources(&[("set.yaml".into(), classbench(style, 10_000, 7))]).expect("the set is valid");
        let compiled = compile(&pack).unwrap_or_else(|e| panic!("{}: check's compile: {e}", style.name()));
        dp.install(compiled).unwrap_or_else(|e| panic!("{}: run installs what check took: {e}", style.name()));
        let before = dp.rule_totals().expect("rule totals");
        let mut want: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for (k, r) in (0..pack.rules.len()).step_by(67).enumerate() {
            let p = probe_of(&pack, r, 0x9e37_79b9_u32.wrapping_mul(k as u32 + 1));
            let (name, permit) = match evaluate(&pack, &p) {
                Outcome::Rule(i) => (pack.rules[i].name.clone(), pack.rules[i].action == Action::Permit),
                Outcome::ImplicitDeny => ("implicit-deny".to_string(), false),
                other => panic!("{}: {p:?}: the evaluator says {other:?}", style.name()),
            };
            let frame = egress_lab::packet::probe_frame(&p);
            let prog = dp.tc_program(TC_PROGRAM).expect("program");
            let got = prog
                .test_run(TestRunOptions { data_in: Some(&frame), ..Default::default() })
                .expect("BPF_PROG_TEST_RUN")
                .return_value;
            assert_eq!(got, if permit { PASS } else { DROP }, "{}: {p:?} (the reference: {name})", style.name());
            *want.entry(name).or_default() += 1;
        }
        let after = dp.rule_totals().expect("rule totals");
        for (name, n) in &want {
            let moved: u64 = [Verdict::Allowed, Verdict::Denied]
                .into_iter()
                .map(|v| packets(&after, name, v) - packets(&before, name, v))
                .sum();
            assert_eq!(moved, *n, "{}: {name} decided {n} probes", style.name());
        }
    }
}

/// The kernel memory `check` gives for a pack's entries is what the kernel
/// accounts once the pack is installed: per table, what a slot's map
/// holds over a slot holding a pack of one rule (the `memlock` of its
/// fdinfo). An acl-like set (prefix tries, (source, port) and (x,
/// destination) entries) and a synthetic pack with WebGroups (names).
#[test]
fn checks_kernel_memory_figure_is_what_the_kernel_accounts() {
    use egress_agent::datapath::memory::entry_bytes;
    let load = |text: String| load_sources(&[("p.yaml".into(), text)]).expect("the pack is valid");
    let tiny = compile(&load(per_agent(1, 1))).expect("compiles");
    let webgroups = egress_policy::synth::with_webgroups(egress_policy::synth::realistic_pack(1_000, 3), 2_000, 3);
    for (what, pack) in [("acl-like", load(classbench(Style::Acl, 10_000, 1))), ("webgroups", webgroups)] {
        let big = compile(&pack).expect("compiles");
        let mut dp = Datapath::load().expect("datapath loads (run the tests as root)");
        dp.install(tiny.clone()).expect("installs");
        let before = dp.live_slot_memlock().expect("memlock");
        dp.install(big.clone()).expect("installs");
        let after = dp.live_slot_memlock().expect("memlock");
        let measured = |table: &str| {
            let of = |m: &[(&str, u64)]| m.iter().find(|t| t.0 == table).map_or(0, |t| t.1);
            of(&after).saturating_sub(of(&before))
        };
        let (small, large) = (entry_bytes(&tiny), entry_bytes(&big));
        let mut checked = 0;
        for ((table, est), (_, est_tiny)) in large.iter().zip(&small) {
            let (want, got) = (est - est_tiny, measured(table));
            let slack = want / 50 + 4_096;
            assert!(want.abs_diff(got) <= slack, "{what}: {table}: check says {want} bytes, the kernel {got}");
            checked += u32::from(want > 100_000);
        }
        assert!(checked >= 2, "{what}: too few large tables to check: {large:?}");
    }
}
