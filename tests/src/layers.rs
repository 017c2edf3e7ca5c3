//! A first-match pack as a few layers of sets, for the set-based
//! configurations of `bench compare`: nftables with concatenated interval
//! sets, and iptables with ipset.
//!
//! A set only says "one of these matched", not which came first, so the
//! translated lines ([`translate::atoms`]) are put in layers: a layer holds
//! lines of one verdict, and a line goes in the first layer of its verdict
//! that comes after every earlier line of the other verdict it overlaps.
//! Lines of one verdict never need an order among themselves, and two lines
//! that no packet matches both never do: the layers decide every packet as
//! the ordered lines do, in far fewer lookups (a test checks this on random
//! packs and packets).

use std::fmt::Write as _;

use ipnet::IpNet;

use super::translate::{Atom, atoms};
use egress_policy::model::Pack;

/// Lines of one verdict that may be looked up together.
#[derive(Debug, Clone)]
pub struct Layer {
    pub accept: bool,
    pub atoms: Vec<Atom>,
}

/// The first and last IPv4 address of `n` (all of them for `None`).
fn span(n: Option<IpNet>) -> (u32, u32) {
    match n {
        Some(IpNet::V4(n)) => (u32::from(n.network()), u32::from(n.broadcast())),
        _ => (0, u32::MAX),
    }
}

fn meets(a: (u32, u32), b: (u32, u32)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Whether some packet matches both lines.
pub fn overlap(a: &Atom, b: &Atom) -> bool {
    let proto = a.proto.is_none() || b.proto.is_none() || a.proto == b.proto;
    let ports = match (a.ports, b.ports) {
        (Some((alo, ahi)), Some((blo, bhi))) => alo <= bhi && blo <= ahi,
        _ => true,
    };
    proto && ports && meets(span(a.src), span(b.src)) && meets(span(a.dst), span(b.dst))
}

/// The pack's lines in layers, in the order they are looked up.
pub fn layers(pack: &Pack) -> Vec<Layer> {
    let lines: Vec<Atom> = pack.rules.iter().flat_map(|r| atoms(pack, r)).collect();
    let mut layer_of: Vec<usize> = Vec::with_capacity(lines.len());
    let mut out: Vec<Layer> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let after = lines[..i]
            .iter()
            .zip(&layer_of)
            .filter(|(earlier, _)| earlier.accept != line.accept && overlap(earlier, line))
            .map(|(_, &l)| l + 1)
            .max()
            .unwrap_or(0);
        let layer = (after..out.len()).find(|&k| out[k].accept == line.accept).unwrap_or_else(|| {
            out.push(Layer { accept: line.accept, atoms: Vec::new() });
            out.len() - 1
        });
        out[layer].atoms.push(line.clone());
        layer_of.push(layer);
    }
    out
}

/// One line as an element of a concatenated set.
fn element(a: &Atom) -> String {
    let mut e = format!("{} . {}", net(a.src), net(a.dst));
    if let Some(p) = a.proto {
        let _ = write!(e, " . {p}");
    }
    if let Some((lo, hi)) = a.ports {
        let _ = write!(e, " . {lo}-{hi}");
    }
    e
}

fn net(n: Option<IpNet>) -> String {
    n.map_or_else(|| "0.0.0.0/0".to_string(), |n| n.to_string())
}

/// Elements per `nft -f` transaction (one large transaction overflows the
/// netlink socket's buffer).
const NFT_ELEMENTS_PER_BATCH: usize = 1_000;

/// One kind of concatenated set of [`nft_sets`]: the lines it holds and
/// how the chain looks them up.
struct NftSetKind {
    /// Set name suffix.
    suffix: &'static str,
    /// The set's element type.
    ty: &'static str,
    /// The packet fields the chain looks up in the set.
    key: &'static str,
    /// Whether a line belongs in a set of this kind.
    fits: fn(&Atom) -> bool,
}

/// Lines with ports, lines with only a protocol, lines with neither.
const NFT_SET_KINDS: [NftSetKind; 3] = [
    NftSetKind {
        suffix: "p",
        ty: "ipv4_addr . ipv4_addr . inet_proto . inet_service",
        key: "ip saddr . ip daddr . meta l4proto . th dport",
        fits: |a| a.ports.is_some(),
    },
    NftSetKind {
        suffix: "n",
        ty: "ipv4_addr . ipv4_addr . inet_proto",
        key: "ip saddr . ip daddr . meta l4proto",
        fits: |a| a.ports.is_none() && a.proto.is_some(),
    },
    NftSetKind { suffix: "a", ty: "ipv4_addr . ipv4_addr", key: "ip saddr . ip daddr", fits: |a| a.proto.is_none() },
];

/// `nft -f` inputs, to be run in order: per layer, concatenated interval
/// sets for lines with ports, for lines with only a protocol, and for lines
/// with neither; the table, sets and chain first, then the elements in
/// batches.
pub fn nft_sets(pack: &Pack) -> Vec<String> {
    let layers = layers(pack);
    let mut sets = String::new();
    let mut batches = Vec::new();
    let mut chain = String::from("    ct state established,related accept\n");
    for (k, layer) in layers.iter().enumerate() {
        let verdict = if layer.accept { "accept" } else { "drop" };
        for NftSetKind { suffix, ty, key, fits } in NFT_SET_KINDS {
            // The kernel refuses an element that starts or ends inside
            // another of the same set: lines that overlap go to sets of
            // their own (one verdict, so their order does not matter).
            let mut groups: Vec<Vec<&Atom>> = Vec::new();
            for a in layer.atoms.iter().filter(|a| fits(a)) {
                match groups.iter_mut().find(|g| !g.iter().any(|b| overlap(a, b))) {
                    Some(g) => g.push(a),
                    None => groups.push(vec![a]),
                }
            }
            for (g, group) in groups.iter().enumerate() {
                let elements: Vec<String> = group.iter().map(|a| element(a)).collect();
                let name = format!("l{k}{suffix}{g}");
                let _ = writeln!(sets, "  set {name} {{ type {ty}; flags interval; }}");
                let _ = writeln!(chain, "    {key} @{name} {verdict}");
                for batch in elements.chunks(NFT_ELEMENTS_PER_BATCH) {
                    batches.push(format!("add element ip egress_bench {name} {{ {} }}\n", batch.join(", ")));
                }
            }
        }
    }
    let table = format!(
        "table ip egress_bench {{\n{sets}  chain forward {{\n    type filter hook forward priority 0; policy accept;\n{chain}  }}\n}}\n"
    );
    std::iter::once(table).chain(batches).collect()
}

/// Port ranges wider than this are not expanded into ipset entries: such
/// lines share a `hash:net,net` set with lines of the same protocol and
/// range, matched by the iptables rule itself.
const IPSET_MAX_PORTS: u32 = 1_024;

/// The names of the sets an [`ipset`] restore input creates (to destroy them).
pub fn ipset_names(restore: &str) -> Vec<String> {
    restore
        .lines()
        .filter_map(|l| l.strip_prefix("create "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// `ipset restore` input and `iptables-restore` input: per layer, a
/// `hash:net,port,net` set for lines with a port or a small range, and a
/// `hash:net,net` set for each (protocol, wide range) of the others.
pub fn ipset(pack: &Pack) -> (String, String) {
    ipset_restore(pack, false)
}

/// Like [`ipset`], for kernels built without the three-part and net,net
/// set types (`hash:net,port,net`, `hash:net,net`): the source goes in the
/// iptables rule. Per layer and source, a `hash:net,port` set of
/// (destination, protocol:port) for lines with a port or a small range,
/// and a `hash:net` set of destinations for each (protocol, wide range) of
/// the others.
pub fn ipset_by_source(pack: &Pack) -> (String, String) {
    ipset_restore(pack, true)
}

/// The set types and element forms of [`ipset`] (source in the sets) or
/// [`ipset_by_source`] (source in the rule).
struct SetShape {
    ported: &'static str,
    ported_match: &'static str,
    wide: &'static str,
    wide_match: &'static str,
}

fn ipset_restore(pack: &Pack, by_source: bool) -> (String, String) {
    let shape = if by_source {
        SetShape { ported: "hash:net,port", ported_match: "dst,dst", wide: "hash:net", wide_match: "dst" }
    } else {
        SetShape {
            ported: "hash:net,port,net",
            ported_match: "src,dst,dst",
            wide: "hash:net,net",
            wide_match: "src,dst",
        }
    };
    let mut sets = String::new();
    let mut rules = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    rules.push_str("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    // hash:net types take prefixes of 1 to 32 bits: all addresses are two /1.
    let nets = |n: Option<IpNet>| match n {
        Some(n) if n.prefix_len() > 0 => vec![n.to_string()],
        _ => vec!["0.0.0.0/1".to_string(), "128.0.0.0/1".to_string()],
    };
    // An element's source part (none where the rule matches the source).
    let sources = |a: &Atom| {
        if by_source { vec![String::new()] } else { nets(a.src).into_iter().map(|s| format!("{s},")).collect() }
    };
    for (k, layer) in layers(pack).iter().enumerate() {
        let verdict = if layer.accept { "ACCEPT" } else { "DROP" };
        let mut atoms: Vec<&Atom> = layer.atoms.iter().collect();
        atoms.sort_by_key(|a| (if by_source { a.src } else { None }, a.proto, a.ports));
        let groups: Vec<&[&Atom]> =
            if by_source { atoms.chunk_by(|a, b| a.src == b.src).collect() } else { vec![&atoms[..]] };
        for (i, atoms) in groups.into_iter().enumerate() {
            let (prefix, source) = match (by_source, atoms.first().and_then(|a| a.src)) {
                (true, Some(n)) => (format!("eb{k}s{i}"), format!(" -s {n}")),
                (true, None) => (format!("eb{k}s{i}"), String::new()),
                (false, _) => (format!("eb{k}"), String::new()),
            };
            let (ported, wide): (Vec<&Atom>, Vec<&Atom>) = atoms.iter().partition(|a| {
                matches!((a.proto, a.ports), (Some("tcp" | "udp"), Some((lo, hi))) if u32::from(hi) - u32::from(lo) < IPSET_MAX_PORTS)
            });
            if !ported.is_empty() {
                let name = format!("{prefix}p");
                let _ = writeln!(sets, "create {name} {} maxelem 4000000", shape.ported);
                for a in ported {
                    let (proto, (lo, hi)) = (a.proto.unwrap_or("tcp"), a.ports.unwrap_or((0, 0)));
                    let port = if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") };
                    for s in sources(a) {
                        for d in nets(a.dst) {
                            let element = if by_source {
                                format!("{d},{proto}:{port}")
                            } else {
                                format!("{s}{proto}:{port},{d}")
                            };
                            let _ = writeln!(sets, "add {name} {element}");
                        }
                    }
                }
                let _ =
                    writeln!(rules, "-A FORWARD{source} -m set --match-set {name} {} -j {verdict}", shape.ported_match);
            }
            for (g, group) in wide.chunk_by(|a, b| (a.proto, a.ports) == (b.proto, b.ports)).enumerate() {
                let name = format!("{prefix}g{g}");
                let _ = writeln!(sets, "create {name} {} maxelem 4000000", shape.wide);
                for a in group {
                    for s in sources(a) {
                        for d in nets(a.dst) {
                            let _ = writeln!(sets, "add {name} {s}{d}");
                        }
                    }
                }
                let mut m = source.clone();
                if let Some(p) = group[0].proto {
                    let _ = write!(m, " -p {p}");
                }
                if let Some((lo, hi)) = group[0].ports {
                    let _ = write!(m, " --dport {lo}:{hi}");
                }
                let _ = writeln!(rules, "-A FORWARD{m} -m set --match-set {name} {} -j {verdict}", shape.wide_match);
            }
        }
    }
    rules.push_str("COMMIT\n");
    (sets, rules)
}

#[cfg(test)]
#[path = "layers_tests.rs"]
mod tests;
