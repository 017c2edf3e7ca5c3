//! Packs of the shapes users write, generated: per-agent policy (one
//! `SmartGroup` per agent, each with destinations and ports of its own),
//! and filter sets in the styles of ClassBench (acl, fw, ipc).
//! Deterministic, so that a test and a bench see the same pack.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, bail};
use egress_policy::model::Pack;
use egress_policy::synth::{self, Rng};

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

/// The styles of ClassBench's filter sets: access lists (`acl`: mostly
/// host sources and destinations, exact service ports), firewalls (`fw`:
/// many wildcard sources and destinations, port ranges) and IP chains
/// (`ipc`: in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Acl,
    Fw,
    Ipc,
}

impl Style {
    /// Its name in bench rows (`shape`).
    pub fn name(self) -> &'static str {
        match self {
            Style::Acl => "acl",
            Style::Fw => "fw",
            Style::Ipc => "ipc",
        }
    }
}

/// How a style draws its rules: prefix lengths by weight (source, then
/// destination), the chances (in %) of no port (any), of one well-known
/// port (else a range), of an `any` source and of an `any` destination.
struct Mix {
    src_lens: &'static [(u8, u32)],
    dst_lens: &'static [(u8, u32)],
    any_port: u64,
    exact_port: u64,
    any_src: u64,
    any_dst: u64,
}

fn mix(style: Style) -> Mix {
    match style {
        Style::Acl => Mix {
            src_lens: &[(32, 50), (24, 15), (28, 10), (30, 8), (26, 7), (20, 5), (16, 5)],
            dst_lens: &[(32, 45), (24, 25), (28, 10), (16, 10), (20, 10)],
            any_port: 35,
            exact_port: 45,
            any_src: 2,
            any_dst: 5,
        },
        Style::Fw => Mix {
            src_lens: &[(32, 25), (24, 25), (16, 20), (8, 10), (20, 20)],
            dst_lens: &[(32, 40), (24, 30), (16, 20), (28, 10)],
            any_port: 25,
            exact_port: 35,
            any_src: 30,
            any_dst: 15,
        },
        Style::Ipc => Mix {
            src_lens: &[(32, 35), (24, 25), (16, 15), (28, 15), (20, 10)],
            dst_lens: &[(32, 35), (24, 25), (16, 15), (28, 15), (20, 10)],
            any_port: 40,
            exact_port: 40,
            any_src: 10,
            any_dst: 10,
        },
    }
}

const WELL_KNOWN: [u16; 30] = [
    80, 443, 22, 25, 53, 110, 143, 993, 995, 3306, 5432, 6379, 8080, 8443, 21, 23, 123, 161, 389, 636, 1433, 1521,
    2049, 3389, 5900, 9200, 27017, 11211, 5672, 9092,
];

/// A value of `items`, drawn by its weight.
fn weighted(rng: &mut Rng, items: &[(u8, u32)]) -> u8 {
    items[rng.weighted(items, |i| i.1)].0
}

/// A prefix of length drawn from `lens` under one of the /16 `bases`.
fn prefix(rng: &mut Rng, bases: &[u32], lens: &[(u8, u32)]) -> String {
    let len = weighted(rng, lens);
    let addr = (bases[rng.index(bases.len())] << 16) | (rng.next_u64() as u32 & 0xffff);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    format!("{}/{len}", Ipv4Addr::from(addr & mask))
}

/// A ClassBench-like filter set of `rules` rules in `style` (random but
/// deterministic by `seed`), as a pack: one SmartGroup per distinct source
/// prefix, destinations as CIDRs, 15 % of the rules `deny`, the rest
/// `permit`; no default rule (what no rule matches is `implicit-deny`).
/// Sources nest under 56 /16s of 10.0.0.0/8 and 172.16.0.0/12,
/// destinations under 300 /16s; ports are 30 well-known ones and 80
/// ranges (the wide ones of real sets, 1024-65535 and 0-1023 among them).
pub fn classbench(style: Style, rules: usize, seed: u64) -> String {
    let m = mix(style);
    let mut rng = Rng::new(seed);
    let src_bases: Vec<u32> = (0..40).map(|i| (10 << 8) | i).chain((0..16).map(|i| (172 << 8) | (16 + i))).collect();
    let dst_bases: Vec<u32> = (0..300).map(|_| (rng.next_u64() as u32 & 0xffff) | 0x0100).collect();
    let mut ranges: Vec<(u16, u16)> = vec![
        (1024, 65535),
        (0, 1023),
        (6000, 6063),
        (8000, 8999),
        (3000, 3999),
        (49152, 65535),
        (137, 139),
        (5060, 5061),
        (9000, 9100),
        (20000, 30000),
    ];
    for _ in 0..70 {
        let lo = 1024 + rng.below(59_000) as u16;
        ranges.push((lo, lo + [1, 5, 10, 50, 100, 1000][rng.index(6)]));
    }
    let mut sources: Vec<String> = (0..rules * 45 / 100).map(|_| prefix(&mut rng, &src_bases, m.src_lens)).collect();
    sources.sort();
    sources.dedup();
    let destinations: Vec<String> = (0..rules * 35 / 100).map(|_| prefix(&mut rng, &dst_bases, m.dst_lens)).collect();
    let mut y = String::from("version: 1\nmode: enforce\nsmartgroups:\n");
    for (i, s) in sources.iter().enumerate() {
        let _ = writeln!(y, "  s{i}: {{ cidrs: [{s}] }}");
    }
    y.push_str("rules:\n");
    for k in 0..rules {
        let src = if rng.chance(m.any_src) { "any".to_string() } else { format!("s{}", rng.index(sources.len())) };
        let dst = if rng.chance(m.any_dst) {
            "any".to_string()
        } else {
            format!("{{ cidrs: [{}] }}", destinations[rng.index(destinations.len())])
        };
        let proto = weighted(&mut rng, &[(0, 70), (1, 25), (2, 5)]);
        let x = rng.below(100);
        let ports = if proto == 2 || x < m.any_port {
            String::new()
        } else if x < m.any_port + m.exact_port {
            format!(", ports: [{}]", WELL_KNOWN[rng.index(WELL_KNOWN.len())])
        } else {
            let (lo, hi) = ranges[rng.index(ranges.len())];
            format!(", ports: [\"{lo}-{hi}\"]")
        };
        let proto = ["tcp", "udp", "any"][proto as usize];
        let action = if rng.chance(15) { "deny" } else { "permit" };
        let _ = writeln!(
            y,
            "  - {{ name: r{k}, priority: {}, source: {src}, destination: {dst}, protocol: {proto}{ports}, action: {action} }}",
            k + 1
        );
    }
    y
}

/// A shape of pack, as the benches name it (`shape` in their rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// [`synth::realistic_pack`]: 16 workload `SmartGroups`, many rules.
    Synthetic,
    /// [`per_agent`]: one `SmartGroup` per agent, five rules each.
    PerAgent,
    /// [`classbench`] in a style, with a final `default-deny`.
    ClassBench(Style),
}

impl Shape {
    /// Every shape, in the benches' order.
    pub const ALL: [Shape; 5] = [
        Shape::Synthetic,
        Shape::PerAgent,
        Shape::ClassBench(Style::Acl),
        Shape::ClassBench(Style::Fw),
        Shape::ClassBench(Style::Ipc),
    ];

    /// Its name in bench rows and options.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Synthetic => "synthetic",
            Shape::PerAgent => "per-agent",
            Shape::ClassBench(style) => style.name(),
        }
    }

    /// The shape named `name`.
    ///
    /// # Errors
    /// An unknown name (the message lists the known ones).
    pub fn parse(name: &str) -> Result<Shape> {
        match Shape::ALL.into_iter().find(|s| s.name() == name.trim()) {
            Some(s) => Ok(s),
            None => bail!("unknown shape `{name}` (known: {})", Shape::ALL.map(Shape::name).join(", ")),
        }
    }

    /// A pack of this shape: `size` rules (synthetic, ClassBench-like, the
    /// latter with a final `default-deny` after them) or `size` agents of
    /// five rules each (per-agent), drawn by `seed`.
    ///
    /// # Errors
    /// If the generated text does not load (a bug in the generator).
    pub fn pack(self, size: usize, seed: u64) -> Result<Pack> {
        let load = |text: String| {
            egress_policy::load_sources(&[(format!("{}.yaml", self.name()), text)]).context("the generated pack")
        };
        match self {
            Shape::Synthetic => Ok(synth::realistic_pack(size, seed)),
            Shape::PerAgent => load(per_agent(size, 5)),
            Shape::ClassBench(style) => {
                let last = format!(
                    "  - {{ name: default-deny, priority: {}, source: any, destination: any, action: deny }}\n",
                    size + 1
                );
                load(classbench(style, size, seed) + &last)
            }
        }
    }
}
