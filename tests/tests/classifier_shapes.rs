//! Packs of the shapes users write load into the real datapath and decide
//! probe packets as the reference evaluator does (`BPF_PROG_TEST_RUN`).
//! Needs root (`CAP_BPF`, `CAP_NET_ADMIN`), as the whole suite does.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions};
use egress_agent::datapath::{Datapath, RuleTotals, TC_PROGRAM};
use egress_common::Verdict;
use egress_lab::packet::Spec;
use egress_lab::shapes::{agent_addr, agent_dest, agent_port, per_agent};
use egress_policy::evaluate::{Outcome, Probe, evaluate};
use egress_policy::{compile::compile, load_sources};

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
