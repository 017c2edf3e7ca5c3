//! Synthetic but realistic policy packs for benchmarks, and probe packets
//! that only the pack's final default rule decides.
//!
//! [`realistic_pack`] builds a [`Pack`] directly (no YAML): 16 `SmartGroups` of
//! workload subnets as sources (IPv4 and IPv6, some nested or overlapping),
//! 8 `SmartGroups` of internal services, destination prefixes in the style of
//! `ClassBench` ACL seeds (mostly `/32`, then `/24`, `/16`, `/20`, ... and some
//! IPv6), ports from a realistic vocabulary, protocols and actions mixed, some
//! rules in monitor mode; the last rule is always `default-deny` (source any,
//! destination any, deny, no log).
//!
//! The generator keeps every rule but the last away from the probes of
//! [`unmatched_probes`]: no destination prefix covers `100.64.0.0/10` or
//! `100::/8`, and no port list names [`PROBE_PORT`] (so rules whose
//! destination is `any` never match the probes). The probes' sources do sit
//! inside several workload groups, so a linear firewall compares them with
//! every rule: the worst case for it, an ordinary one for the classifier.
//!
//! Everything is deterministic in `(rules, seed)`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::evaluate::Probe;
use crate::model::{Action, Destination, Location, Mode, Pack, PortRange, Protocol, Rule, SmartGroup, Source};

/// The seed the benchmarks use unless told otherwise.
pub const DEFAULT_SEED: u64 = 0x00e9_7e55_c1a5_51f1;

/// Name of the final rule of every generated pack.
pub const DEFAULT_RULE: &str = "default-deny";

/// Destination port of the [`unmatched_probes`]: named by no generated rule
/// (TCP echo, below 1024 and outside every port range of the vocabulary).
pub const PROBE_PORT: u16 = 7;

/// Source port of the probes.
pub const PROBE_SPORT: u16 = 40_000;

/// Single ports rules name, with relative weights.
const PORTS: &[(u16, u32)] = &[
    (443, 30),
    (80, 12),
    (53, 10),
    (22, 8),
    (123, 4),
    (25, 3),
    (3306, 4),
    (5432, 4),
    (6379, 3),
    (8080, 6),
    (8443, 5),
    (9200, 3),
    (389, 1),
    (636, 1),
    (993, 1),
    (2049, 1),
    (5672, 2),
    (9092, 2),
    (27017, 2),
];

/// Port ranges rules name, with relative weights.
const RANGES: &[(u16, u16, u32)] =
    &[(1024, 65535, 4), (8000, 8999, 3), (30000, 32767, 3), (6000, 6063, 1), (9000, 9100, 1), (10250, 10259, 1)];

/// Destination prefix lengths (IPv4) with relative weights, ClassBench-ACL-like.
const V4_LENS: &[(u8, u32)] =
    &[(32, 55), (30, 3), (28, 5), (26, 3), (24, 15), (22, 4), (20, 6), (16, 6), (12, 2), (8, 1)];

/// Destination prefix lengths (IPv6) with relative weights.
const V6_LENS: &[(u8, u32)] = &[(128, 50), (64, 25), (56, 10), (48, 10), (32, 5)];

/// First octets of public IPv4 destinations: no 0, 10 (workloads and
/// services), 100 (the probes' 100.64.0.0/10), 127, 169.254, 172.16/12,
/// 192.168, multicast and above.
fn public_first_octet(rng: &mut Rng) -> u8 {
    loop {
        let o = 1 + rng.below(223) as u8; // 1..=223
        if !matches!(o, 10 | 100 | 127 | 169 | 172 | 192) {
            return o;
        }
    }
}

/// A small xorshift64* generator: deterministic, dependency-free, good
/// enough for synthetic workloads (not for anything secret).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }

    /// An index into `len` items (0 when there are none).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index into `items`, drawn by each one's `weight`.
    pub fn weighted<T>(&mut self, items: &[T], weight: impl Fn(&T) -> u32) -> usize {
        let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
        let mut r = self.below(total);
        for (i, item) in items.iter().enumerate() {
            let w = u64::from(weight(item));
            if r < w {
                return i;
            }
            r -= w;
        }
        items.len() - 1
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).expect("valid prefix length").trunc())
}

fn v6(segments: [u16; 8], len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(segments), len).expect("valid prefix length").trunc())
}

fn group(name: &str, cidrs: Vec<IpNet>) -> SmartGroup {
    SmartGroup { name: name.to_string(), cidrs, location: Location::default() }
}

/// The 16 workload groups (sources) and 8 service groups (destinations).
/// `wl-00` holds the probes' sources; `wl-12` and `wl-13` contain it too.
fn smartgroups(rng: &mut Rng) -> (BTreeMap<String, SmartGroup>, Vec<String>, Vec<String>) {
    let mut groups = BTreeMap::new();
    let mut workloads = Vec::new();
    for i in 0..12u8 {
        let mut cidrs = Vec::new();
        let subnets = 1 + rng.below(3) as u8;
        for j in 0..subnets {
            cidrs.push(v4(10, i, j, 0, 24));
            if j == 0 && (i == 0 || rng.chance(60)) {
                cidrs.push(v6([0xfd00, u16::from(i), u16::from(j), 0, 0, 0, 0, 0], 64));
            }
        }
        workloads.push((format!("wl-{i:02}"), cidrs));
    }
    // Nested and overlapping groups.
    workloads.push(("wl-12-site-a".into(), vec![v4(10, 0, 0, 0, 16), v6([0xfd00, 0, 0, 0, 0, 0, 0, 0], 32)]));
    workloads.push(("wl-13-all".into(), vec![v4(10, 0, 0, 0, 12), v6([0xfd00, 0, 0, 0, 0, 0, 0, 0], 16)]));
    workloads.push(("wl-14-db".into(), vec![v4(10, 1, 0, 64, 26), v4(10, 2, 1, 128, 25)]));
    workloads.push((
        "wl-15-batch".into(),
        vec![v4(10, 3, 0, 0, 23), v4(10, 4, 0, 0, 22), v6([0xfd00, 3, 0, 0, 0, 0, 0, 0], 48)],
    ));
    let mut services = Vec::new();
    for k in 0..8u8 {
        let mut cidrs = vec![v4(10, 200, k, 0, 24)];
        if rng.chance(50) {
            cidrs.push(v6([0xfd10, u16::from(k), 0, 0, 0, 0, 0, 0], 64));
        }
        services.push((format!("svc-{k:02}"), cidrs));
    }
    let wl_names = workloads.iter().map(|(n, _)| n.clone()).collect();
    let svc_names = services.iter().map(|(n, _)| n.clone()).collect();
    for (name, cidrs) in workloads.into_iter().chain(services) {
        groups.insert(name.clone(), group(&name, cidrs));
    }
    (groups, wl_names, svc_names)
}

/// One destination prefix: public IPv4 (most), internal IPv4 services, or
/// public IPv6 (`2000::/3`). Never covers the probes' destinations.
fn destination_prefix(rng: &mut Rng) -> IpNet {
    let r = rng.below(100);
    if r < 70 {
        let len = V4_LENS[rng.weighted(V4_LENS, |l| l.1)].0;
        let a = public_first_octet(rng);
        let bits = rng.next_u64() as u32;
        v4(a, (bits >> 16) as u8, (bits >> 8) as u8, bits as u8, len)
    } else if r < 82 {
        // Internal services outside the workload range: 10.128.0.0/9.
        let len = [32u8, 32, 32, 28, 24, 24, 20, 16][rng.below(8) as usize];
        let bits = rng.next_u64() as u32;
        v4(10, 128 | (bits >> 16) as u8, (bits >> 8) as u8, bits as u8, len)
    } else {
        let len = V6_LENS[rng.weighted(V6_LENS, |l| l.1)].0;
        let mut s = [0u16; 8];
        for x in &mut s {
            *x = rng.next_u64() as u16;
        }
        s[0] = 0x2000 | (s[0] & 0x1fff); // 2000::/3
        v6(s, len)
    }
}

/// A rule's port list: `None` (every port) only where `allow_all`.
fn ports(rng: &mut Rng, allow_all: bool) -> Option<Vec<PortRange>> {
    let single = |rng: &mut Rng| {
        let p = PORTS[rng.weighted(PORTS, |p| p.1)].0;
        PortRange { lo: p, hi: p }
    };
    let r = rng.below(100);
    let mut list = if allow_all && r < 20 {
        return None;
    } else if r < 70 {
        vec![single(rng)]
    } else if r < 85 {
        (0..2 + rng.below(2)).map(|_| single(rng)).collect()
    } else {
        let (lo, hi, _) = RANGES[rng.weighted(RANGES, |r| r.2)];
        let mut v = vec![PortRange { lo, hi }];
        if rng.chance(30) {
            v.push(single(rng));
        }
        v
    };
    list.sort();
    list.dedup();
    Some(list)
}

/// A realistic pack of exactly `rules` rules (at least 1), the last one
/// `default-deny` (source any, destination any, deny, enforce, no log).
///
/// The other rules: sources are one workload group (80 %), two (15 %) or any
/// (5 %); destinations are 1-3 prefixes drawn from a shared pool (so
/// destinations recur across rules, as servers do), sometimes a service
/// group, and for 5 % of rules `any` (then always with a port list or ICMP);
/// protocol TCP 55 %, UDP 15 %, ICMP 5 %, any 25 %; ports a single port
/// (most), a few ports, a range, or every port (20 %, only where the
/// destination is specific); permit 70 %, deny 30 %; 10 % in monitor mode
/// (the pack is enforce); 30 % log.
pub fn realistic_pack(rules: usize, seed: u64) -> Pack {
    assert!(rules >= 1, "a pack needs at least its default rule");
    let mut rng = Rng::new(seed);
    let (smartgroups, workloads, services) = smartgroups(&mut rng);
    let pool: Vec<IpNet> = (0..(rules * 3 / 4).max(8)).map(|_| destination_prefix(&mut rng)).collect();
    // Priorities spread over the u16 range, leaving room for insertions.
    let step = (60_000 / rules).clamp(1, 10) as u16;
    let mut out = Vec::with_capacity(rules);
    for i in 0..rules - 1 {
        let source = match rng.below(100) {
            0..80 => Source::Groups(vec![workloads[rng.index(workloads.len())].clone()]),
            80..95 => {
                let a = rng.index(workloads.len());
                let b = (a + 1 + rng.below(workloads.len() as u64 - 1) as usize) % workloads.len();
                Source::Groups(vec![workloads[a].clone(), workloads[b].clone()])
            }
            _ => Source::Any,
        };
        let dest_any = !matches!(source, Source::Any) && rng.chance(5);
        let destinations = if dest_any {
            vec![Destination::Any]
        } else if rng.chance(10) {
            vec![Destination::SmartGroup(services[rng.index(services.len())].clone())]
        } else {
            let n = match rng.below(100) {
                0..70 => 1,
                70..90 => 2,
                _ => 3,
            };
            let nets = (0..n)
                .map(|_| if rng.chance(85) { pool[rng.index(pool.len())] } else { destination_prefix(&mut rng) })
                .collect();
            vec![Destination::Cidrs(nets)]
        };
        let protocol = match rng.below(100) {
            0..55 => Protocol::Tcp,
            55..70 => Protocol::Udp,
            70..75 => Protocol::Icmp,
            _ => Protocol::Any,
        };
        let ports = if protocol == Protocol::Icmp { None } else { ports(&mut rng, !dest_any) };
        let action = if rng.chance(70) { Action::Permit } else { Action::Deny };
        let mode = if rng.chance(10) { Mode::Monitor } else { Mode::Enforce };
        let verb = if action == Action::Permit { "allow" } else { "deny" };
        let verify_names = Rule::default_verify_names(action, &destinations);
        out.push(Rule {
            name: format!("r{i:05}-{verb}"),
            priority: (i as u16 + 1) * step,
            source,
            destinations,
            protocol,
            ports,
            action,
            mode,
            log: rng.chance(30),
            verify_names,
            location: Location::default(),
        });
    }
    out.push(Rule {
        name: DEFAULT_RULE.to_string(),
        priority: u16::MAX,
        source: Source::Any,
        destinations: vec![Destination::Any],
        protocol: Protocol::Any,
        ports: None,
        action: Action::Deny,
        mode: Mode::Enforce,
        log: false,
        verify_names: false,
        location: Location::default(),
    });
    Pack { version: 1, mode: Mode::Enforce, smartgroups, rules: out, ..Pack::default() }
}

/// Packets that no rule of a [`realistic_pack`] decides but the last:
/// IPv4 TCP `10.0.0.10 → 100.64.0.1:7` and IPv6 TCP `fd00::10 → 100::1:7`.
/// Their sources are in `wl-00`, `wl-12-site-a` and `wl-13-all`.
pub fn unmatched_probes() -> [Probe; 2] {
    [
        Probe {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10)),
            dst: IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
            proto: 6,
            dport: PROBE_PORT,
        },
        Probe {
            src: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10)),
            dst: IpAddr::V6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 1)),
            proto: 6,
            dport: PROBE_PORT,
        },
    ]
}

/// `pack` with `domains` domain patterns in WebGroups (`web-00`, ...; one
/// group per 200 domains, 1 to 48 groups; 80 % exact names, 10 % `*.`, 10 %
/// `**.`), each group the destination of one `permit` TCP 443 rule that
/// replaces one of the pack's first rules (the rule count is unchanged; the
/// default rule stays last). The resolver is `10.200.0.53`.
pub fn with_webgroups(mut pack: Pack, domains: usize, seed: u64) -> Pack {
    use crate::model::{DomainPattern, WebGroup};
    if domains == 0 {
        return pack;
    }
    let mut rng = Rng::new(seed ^ 0x005e_edd0_u64);
    let groups = (domains / 200).clamp(1, 48).min(pack.rules.len().saturating_sub(1)).max(1);
    pack.dns.resolvers = vec![IpAddr::V4(Ipv4Addr::new(10, 200, 0, 53))];
    for g in 0..groups {
        let name = format!("web-{g:02}");
        let count = domains / groups + usize::from(g < domains % groups);
        let list = (0..count)
            .map(|j| match rng.below(10) {
                0 => DomainPattern::OneLabel(format!("n{j}.w{g}.example.net")),
                1 => DomainPattern::AnyDepth(format!("n{j}.d{g}.example.org")),
                _ => DomainPattern::Exact(format!("h{j}.g{g}.example.com")),
            })
            .collect();
        pack.webgroups
            .insert(name.clone(), WebGroup { name: name.clone(), domains: list, location: Location::default() });
        if let Some(rule) = pack.rules.get_mut(g).filter(|r| r.name != DEFAULT_RULE) {
            rule.destinations = vec![Destination::WebGroup(name)];
            rule.protocol = Protocol::Tcp;
            rule.ports = Some(vec![PortRange { lo: 443, hi: 443 }]);
            rule.action = Action::Permit;
            rule.verify_names = true;
        }
    }
    pack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{Decision, compile};
    use crate::evaluate::{Outcome, evaluate};

    #[test]
    fn probes_reach_only_the_default_rule() {
        for &n in &[1, 2, 10, 300] {
            for seed in 0..4 {
                let pack = realistic_pack(n, seed);
                assert_eq!(pack.rules.len(), n);
                assert!(pack.rules.windows(2).all(|w| w[0].priority < w[1].priority));
                let compiled = compile(&pack).expect("compiles");
                for p in unmatched_probes() {
                    assert_eq!(evaluate(&pack, &p), Outcome::Rule(n - 1), "n={n} seed={seed} {p:?}");
                    assert_eq!(compiled.decide(p.src, p.dst, p.proto, p.dport), Decision::Rule(n as u32 - 1));
                }
            }
        }
    }

    #[test]
    fn deterministic() {
        assert_eq!(realistic_pack(50, 7), realistic_pack(50, 7));
        assert_ne!(realistic_pack(50, 7), realistic_pack(50, 8));
    }

    #[test]
    fn vocabulary_avoids_the_probe_port() {
        assert!(PORTS.iter().all(|p| p.0 != PROBE_PORT));
        assert!(RANGES.iter().all(|r| !(r.0..=r.1).contains(&PROBE_PORT)));
    }
}
