//! A pack translated to the firewalls operators already have, for `bench
//! compare`: iptables (one linear FORWARD chain after an ESTABLISHED
//! accept, for `iptables-restore`, legacy or `nf_tables` back end) and
//! nftables (the same linear chain). First match wins in all of them, as in
//! the pack: each rule becomes one line per (protocol, source prefix,
//! destination prefix, port range); a `monitor`-mode deny lets traffic
//! through, as the agent does. IPv4 only (the bench measures IPv4 flows);
//! `WebGroup` and `resolvers` destinations are not translated (synthetic
//! packs have none).

use std::fmt::Write as _;

use ipnet::IpNet;

use egress_policy::model::{Action, Destination, Mode, Pack, Protocol, Rule, Source};

/// One translated line: protocol, source, destination, port range, accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atom {
    pub proto: Option<&'static str>,
    pub src: Option<IpNet>,
    pub dst: Option<IpNet>,
    pub ports: Option<(u16, u16)>,
    pub accept: bool,
}

fn v4(nets: Vec<IpNet>) -> Vec<IpNet> {
    nets.into_iter().filter(|n| matches!(n, IpNet::V4(_))).collect()
}

/// The lines of one rule, in order. Empty when the rule cannot match IPv4.
pub fn atoms(pack: &Pack, rule: &Rule) -> Vec<Atom> {
    let srcs: Vec<Option<IpNet>> = match &rule.source {
        Source::Any => vec![None],
        Source::Groups(g) => {
            v4(g.iter().filter_map(|n| pack.smartgroups.get(n)).flat_map(|g| g.cidrs.clone()).collect())
                .into_iter()
                .map(Some)
                .collect()
        }
    };
    let mut dsts: Vec<Option<IpNet>> = Vec::new();
    for d in &rule.destinations {
        match d {
            Destination::Any => dsts.push(None),
            Destination::Cidrs(c) => dsts.extend(v4(c.clone()).into_iter().map(Some)),
            Destination::SmartGroup(g) => dsts
                .extend(v4(pack.smartgroups.get(g).map(|g| g.cidrs.clone()).unwrap_or_default()).into_iter().map(Some)),
            Destination::Resolvers | Destination::Gateway | Destination::WebGroup(_) => {}
        }
    }
    let protos: Vec<Option<&'static str>> = match (rule.protocol, &rule.ports) {
        (Protocol::Tcp, _) => vec![Some("tcp")],
        (Protocol::Udp, _) => vec![Some("udp")],
        (Protocol::Icmp, _) => vec![Some("icmp")],
        (Protocol::Any, Some(_)) => vec![Some("tcp"), Some("udp")],
        (Protocol::Any, None) => vec![None],
    };
    let ports: Vec<Option<(u16, u16)>> = match &rule.ports {
        None => vec![None],
        Some(r) => r.iter().map(|p| Some((p.lo, p.hi))).collect(),
    };
    let accept = rule.action == Action::Permit || rule.mode == Mode::Monitor;
    let mut out = Vec::new();
    for &proto in &protos {
        for &src in &srcs {
            for &dst in &dsts {
                for &p in &ports {
                    out.push(Atom { proto, src, dst, ports: p, accept });
                }
            }
        }
    }
    out
}

/// `iptables-restore` input: the filter table's FORWARD chain.
pub fn iptables(pack: &Pack) -> String {
    let mut s = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    for rule in &pack.rules {
        for a in atoms(pack, rule) {
            s.push_str("-A FORWARD");
            if let Some(p) = a.proto {
                let _ = write!(s, " -p {p}");
            }
            if let Some(n) = a.src {
                let _ = write!(s, " -s {n}");
            }
            if let Some(n) = a.dst {
                let _ = write!(s, " -d {n}");
            }
            if let Some((lo, hi)) = a.ports {
                let _ = write!(s, " --dport {lo}:{hi}");
            }
            let _ = writeln!(s, " -j {}", if a.accept { "ACCEPT" } else { "DROP" });
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// `nft -f` input: a table of its own with one linear forward chain.
pub fn nft_linear(pack: &Pack) -> String {
    let mut s = String::from(
        "table ip egress_bench {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
    );
    s.push_str("    ct state established,related accept\n");
    for rule in &pack.rules {
        for a in atoms(pack, rule) {
            s.push_str("    ");
            if let Some(n) = a.src {
                let _ = write!(s, "ip saddr {n} ");
            }
            if let Some(n) = a.dst {
                let _ = write!(s, "ip daddr {n} ");
            }
            match (a.proto, a.ports) {
                (Some(p @ ("tcp" | "udp")), Some((lo, hi))) if lo == hi => {
                    let _ = write!(s, "{p} dport {lo} ");
                }
                (Some(p @ ("tcp" | "udp")), Some((lo, hi))) => {
                    let _ = write!(s, "{p} dport {lo}-{hi} ");
                }
                (Some("icmp"), _) => s.push_str("meta l4proto icmp "),
                (Some(p), _) => {
                    let _ = write!(s, "meta l4proto {p} ");
                }
                (None, _) => {}
            }
            let _ = writeln!(s, "{}", if a.accept { "accept" } else { "drop" });
        }
    }
    s.push_str("  }\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_policy::load_sources;

    #[test]
    fn rules_become_first_match_lines() {
        let pack = load_sources(&[(
            "p.yaml".into(),
            r#"
version: 1
mode: enforce
smartgroups:
  wl: { cidrs: [10.0.0.0/24, "fd00::/64"] }
rules:
  - { name: a, priority: 1, source: wl, destination: { cidrs: [1.2.3.4/32, 5.6.0.0/16] }, protocol: any, ports: [443, "8000-8100"], action: permit }
  - { name: b, priority: 2, source: wl, destination: any, protocol: udp, ports: [53], action: deny, mode: monitor }
  - { name: c, priority: 3, source: any, destination: any, action: deny }
"#
            .into(),
        )])
        .expect("pack");
        let ipt = iptables(&pack);
        assert!(ipt.contains("-A FORWARD -p tcp -s 10.0.0.0/24 -d 1.2.3.4/32 --dport 443:443 -j ACCEPT\n"), "{ipt}");
        assert!(ipt.contains("-A FORWARD -p udp -s 10.0.0.0/24 -d 5.6.0.0/16 --dport 8000:8100 -j ACCEPT\n"), "{ipt}");
        assert!(
            ipt.contains("-A FORWARD -p udp -s 10.0.0.0/24 --dport 53:53 -j ACCEPT\n"),
            "monitor deny passes: {ipt}"
        );
        assert!(ipt.ends_with("-A FORWARD -j DROP\nCOMMIT\n"), "{ipt}");
        assert_eq!(ipt.matches("-A FORWARD").count(), 1 + 8 + 1 + 1);
        let nft = nft_linear(&pack);
        assert!(nft.contains("    ip saddr 10.0.0.0/24 ip daddr 5.6.0.0/16 tcp dport 8000-8100 accept\n"), "{nft}");
        assert!(nft.contains("    drop\n"), "{nft}");
    }
}
