//! The policy loader and compiler: any bytes, as one or more policy files,
//! are loaded (YAML, validation) and, when valid, compiled; the compiled
//! tables must then decide random packets exactly as the reference
//! evaluator does, by address (with any WebGroups learned) and, for TCP,
//! with a connection name. Errors must render; nothing may panic.

use std::collections::BTreeSet;
use std::net::IpAddr;

use egress_policy::compile::{CompiledPack, NamesDecision, compile};
use egress_policy::evaluate::{evaluate_learned, evaluate_named};
use egress_policy::model::{DomainPattern, Pack};

use egress_policy::synth::Rng;

use crate::probes::{prefixes, probe, rng_of};

/// Packets asked of each pack that compiles.
const PROBES: usize = 48;

/// A line that starts another file: `#>>> NAME`.
const FILE_MARK: &str = "#>>> ";

/// The input's files: the text up to the first mark is `00-pack.yaml`.
pub fn files(text: &str) -> Vec<(String, String)> {
    let mut out = vec![("00-pack.yaml".to_string(), String::new())];
    for line in text.split_inclusive('\n') {
        match line.strip_prefix(FILE_MARK) {
            Some(name) if out.len() < 8 => out.push((name.trim().to_string(), String::new())),
            _ => out.last_mut().map_or((), |f| f.1.push_str(line)),
        }
    }
    out
}

/// One input: see the module comment.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut pack = match egress_policy::load_sources(&files(text)) {
        Ok(pack) => pack,
        Err(errors) => {
            assert!(!errors.to_string().is_empty(), "an error says something");
            return;
        }
    };
    pack.gateway = gateway().to_vec();
    let compiled = match compile(&pack) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error says something");
            return;
        }
    };
    let _ = egress_policy::summary(&pack);
    agree(&pack, &compiled, &mut rng_of(data));
}

/// A name that one of the pack's patterns covers, or does not quite.
fn name(pack: &Pack, rng: &mut Rng) -> String {
    let patterns: Vec<&DomainPattern> = pack.webgroups.values().flat_map(|g| &g.domains).collect();
    let base = match patterns.get(rng.index(patterns.len().max(1))) {
        None => return "example.com".into(),
        Some(DomainPattern::Exact(n)) => n.clone(),
        Some(DomainPattern::OneLabel(s)) => format!("a.{s}"),
        Some(DomainPattern::AnyDepth(s)) => format!("a.b.{s}"),
    };
    match rng.below(4) {
        0 => format!("x{base}"),
        1 => format!("{}.", base.to_ascii_uppercase()),
        _ => base,
    }
}

/// The compiled tables and the reference evaluator decide every probe alike.
fn agree(pack: &Pack, compiled: &CompiledPack, rng: &mut Rng) {
    let prefixes = prefixes(pack);
    let names = NamesDecision::build(pack, compiled);
    let groups: Vec<(&String, &u32)> = compiled.webgroup_bits.iter().collect();
    for _ in 0..PROBES {
        let p = probe(&prefixes, rng);
        let mut learned = BTreeSet::new();
        let mut bits = 0u64;
        for (group, bit) in &groups {
            if rng.chance(33) {
                learned.insert((*group).clone());
                bits |= 1 << **bit;
            }
        }
        let reference = evaluate_learned(pack, &p, &learned);
        let decided = compiled.outcome(compiled.decide_learned(p.src, p.dst, p.proto, p.dport, bits));
        assert_eq!(decided, reference, "by address: {p:?}, learned {learned:?}");
        if p.proto != 6 {
            continue;
        }
        let n = name(pack, rng);
        let reference = evaluate_named(pack, &p, &learned, Some(&n));
        let covering = compiled.name_groups(&n);
        let decided = compiled.outcome(names.decide_named(compiled, p.src, p.dst, 6, p.dport, bits, covering));
        assert_eq!(decided, reference, "with name {n}: {p:?}, learned {learned:?}");
    }
}

/// The gateway's addresses as the fuzzer sets them (for seeds that name them).
pub fn gateway() -> [IpAddr; 2] {
    ["192.0.2.1".parse().expect("addr"), "2001:db8::1".parse().expect("addr")]
}

#[cfg(test)]
mod tests {
    /// Every seed runs clean, and the seeds that are valid packs compile.
    #[test]
    fn seeds() {
        let mut compiled = 0;
        for (path, data) in crate::seeds("policy") {
            super::run(&data);
            let text = String::from_utf8(data).expect("UTF-8 seed");
            if egress_policy::load_sources(&super::files(&text)).is_ok() {
                compiled += 1;
            }
            eprintln!("{} ran", path.display());
        }
        assert!(compiled >= 3, "the seeds include valid packs");
    }
}
