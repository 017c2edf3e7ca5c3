//! Packs of the shapes users write, generated: per-agent policy (one
//! `SmartGroup` per agent, each with destinations and ports of its own).
//! Deterministic, so that a test and a bench see the same pack.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The address of agent `i` (one /32 each, from 10.20.0.0 up).
pub fn agent_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 20 + (i / 250) as u8, (i % 250) as u8, 1)
}

/// The destination of agent `i`'s rule `j`.
pub fn agent_dest(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18 + j as u8, (i / 250) as u8, (i % 250) as u8)
}

/// The first port of agent `i`'s rule `j`'s own range (three ports wide).
pub fn agent_port(i: usize, j: usize, rules: usize) -> u16 {
    (1024 + (i * rules * 3 + j * 3) % 60_000) as u16
}

/// A per-agent pack: `agents` `SmartGroups` of one address each; agent `i`
/// has `rules` permits `a{i}-r{j}` to a destination of its own, on 443 and
/// a three-port range of its own; then `default-deny` for everyone.
pub fn per_agent(agents: usize, rules: usize) -> String {
    let mut y = String::from("version: 1\nmode: enforce\nsmartgroups:\n");
    for i in 0..agents {
        let _ = writeln!(y, "  agent-{i}: {{ cidrs: [{}/32] }}", agent_addr(i));
    }
    y.push_str("rules:\n");
    let mut priority = 1;
    for i in 0..agents {
        for j in 0..rules {
            let lo = agent_port(i, j, rules);
            let _ = writeln!(
                y,
                "  - {{ name: a{i}-r{j}, priority: {priority}, source: agent-{i}, destination: {{ cidrs: [{}/32] }}, protocol: tcp, ports: [443, \"{lo}-{}\"], action: permit }}",
                agent_dest(i, j),
                lo + 2
            );
            priority += 1;
        }
    }
    let _ =
        writeln!(y, "  - {{ name: default-deny, priority: {priority}, source: any, destination: any, action: deny }}");
    y
}
