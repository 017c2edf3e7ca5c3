//! Layers decide every packet as the ordered lines do.

use super::*;
use egress_policy::synth;

/// A packet as the translated lines see it.
#[derive(Debug, Clone, Copy)]
struct Probe {
    proto: &'static str,
    src: u32,
    dst: u32,
    port: u16,
}

fn matches(a: &Atom, p: &Probe) -> bool {
    let proto = a.proto.is_none_or(|x| x == p.proto);
    let port = a.ports.is_none_or(|(lo, hi)| matches!(p.proto, "tcp" | "udp") && (lo..=hi).contains(&p.port));
    let (s, d) = (span(a.src), span(a.dst));
    proto && port && (s.0..=s.1).contains(&p.src) && (d.0..=d.1).contains(&p.dst)
}

#[test]
fn layers_decide_as_the_ordered_lines() {
    let mut rng = synth::Rng::new(0x1234_5678_9abc_def1);
    for seed in 1..4 {
        let pack = synth::realistic_pack(300, seed);
        let lines: Vec<Atom> = pack.rules.iter().flat_map(|r| atoms(&pack, r)).collect();
        let layers = layers(&pack);
        assert!(layers.len() * 4 < lines.len(), "{} layers for {} lines", layers.len(), lines.len());
        // Packets aimed at a line (inside it, or just off one of its
        // edges), and packets from anywhere to anywhere.
        let within = |(lo, hi): (u32, u32), r: u64| match r % 4 {
            0 => lo.wrapping_sub(1),
            1 => hi.wrapping_add(1),
            _ => lo.wrapping_add((r >> 8) as u32 % (hi - lo).saturating_add(1).max(1)),
        };
        let (mut accepted, mut dropped) = (0, 0);
        for i in 0..6_000 {
            let line = &lines[rng.index(lines.len())];
            let (r1, r2, r3) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
            let aimed = i % 4 != 0;
            let p = Probe {
                proto: match line.proto {
                    Some(p) if aimed && r3 % 5 != 0 => p,
                    _ => ["tcp", "udp", "icmp", "gre"][(r3 % 4) as usize],
                },
                src: if aimed { within(span(line.src), r1) } else { r1 as u32 },
                dst: if aimed { within(span(line.dst), r2) } else { r2 as u32 },
                port: match line.ports {
                    Some(range) if aimed => within((range.0.into(), range.1.into()), r3 >> 3) as u16,
                    _ => (r3 >> 16) as u16,
                },
            };
            let linear = lines.iter().find(|a| matches(a, &p)).is_none_or(|a| a.accept);
            let layered = layers.iter().find(|l| l.atoms.iter().any(|a| matches(a, &p))).is_none_or(|l| l.accept);
            assert_eq!(layered, linear, "seed {seed}: {p:?}");
            if linear { accepted += 1 } else { dropped += 1 }
        }
        assert!(accepted > 500 && dropped > 500, "probes reach both verdicts: {accepted} accepted, {dropped} dropped");
    }
}

#[test]
fn writes_sets_for_nft_and_ipset() {
    let pack = synth::realistic_pack(200, 3);
    let nft = nft_sets(&pack);
    assert!(
        nft[0].contains("set l0p0 { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags interval; }"),
        "{}",
        nft[0]
    );
    assert!(nft[0].contains("ip saddr . ip daddr . meta l4proto . th dport @l0p0"), "{}", nft[0]);
    assert!(nft[1..].iter().all(|b| b.starts_with("add element ip egress_bench l")), "elements follow in batches");
    let (sets, rules) = ipset(&pack);
    assert!(sets.contains("create eb0p hash:net,port,net"), "{sets}");
    assert!(!sets.contains("/0,") && !sets.contains(",0.0.0.0/0"), "no /0 in hash:net types");
    assert!(rules.contains("-m set --match-set eb0p src,dst,dst -j "), "{rules}");
    assert_eq!(ipset_names(&sets).len(), sets.matches("create ").count());
    let (sets, rules) = ipset_by_source(&pack);
    assert!(sets.contains("create eb0s0p hash:net,port") && !sets.contains("net,net"), "{sets}");
    assert!(!sets.contains("/0,") && !sets.contains(" 0.0.0.0/0"), "no /0 in hash:net types");
    assert!(rules.contains("-m set --match-set eb0s0p dst,dst -j "), "{rules}");
    assert!(
        rules.lines().filter(|l| l.contains("--match-set")).all(|l| sets.contains(&format!(
            "create {} ",
            l.split("--match-set ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("?")
        ))),
        "every rule's set is created"
    );
}
