//! Writes a [`Pack`] back out as policy YAML in the contract's format, so
//! benchmarks and tests of the reload path measure the agent's real work:
//! reading, parsing, validating and compiling files.
//!
//! `load(write(pack))` gives back `pack` but for locations (a round trip
//! the unit test below checks).

use std::fmt::Write as _;

use crate::model::{Destination, Pack, Rule, Source, WebGroup};

fn quoted(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", items.join(", "))
}

fn destination(d: &Destination) -> String {
    match d {
        Destination::Any => "any".into(),
        Destination::Resolvers => "resolvers".into(),
        Destination::Gateway => "gateway".into(),
        Destination::SmartGroup(g) => format!("{{ smartgroup: {g} }}"),
        Destination::WebGroup(g) => format!("{{ webgroup: {g} }}"),
        Destination::Cidrs(nets) => {
            format!("{{ cidrs: {} }}", quoted(nets.iter().map(std::string::ToString::to_string)))
        }
    }
}

/// The pack as one policy file.
pub fn to_yaml(pack: &Pack) -> String {
    let mut y = settings(pack);
    y.push_str(&webgroups(pack.webgroups.values()));
    y.push_str(&rules(&pack.rules));
    y
}

/// The pack as a directory's files `(name, text)`, the way a large pack is
/// kept: settings and `SmartGroups`, then one file per WebGroup, then the
/// rules, `rules_per_file` to a file. Names sort in that order.
pub fn to_yaml_files(pack: &Pack, rules_per_file: usize) -> Vec<(String, String)> {
    let mut files = vec![("00-settings.yaml".to_string(), settings(pack))];
    for (i, g) in pack.webgroups.values().enumerate() {
        files.push((format!("10-webgroup-{i:03}.yaml"), webgroups([g])));
    }
    for (i, chunk) in pack.rules.chunks(rules_per_file.max(1)).enumerate() {
        files.push((format!("20-rules-{i:04}.yaml"), rules(chunk)));
    }
    files
}

/// `version`, `mode`, `dns` and the `SmartGroups`.
fn settings(pack: &Pack) -> String {
    let mut y = String::with_capacity(4096);
    let _ = writeln!(
        y,
        "version: {}\nmode: {}\nuncovered: {}",
        pack.version.max(1),
        pack.mode.keyword(),
        pack.uncovered.keyword()
    );
    let filter = pack.dns.query_filter.keyword();
    let _ = writeln!(
        y,
        "dns:\n  resolvers: {}\n  min_ttl: {}\n  max_ttl: {}\n  query_filter: {filter}\n  tunnel_guard: {}\n  query_types: {}",
        quoted(pack.dns.resolvers.iter().map(std::string::ToString::to_string)),
        pack.dns.min_ttl,
        pack.dns.max_ttl,
        pack.dns.tunnel_guard.keyword(),
        quoted(pack.dns.query_types.iter().map(|t| crate::dns_types::type_name(*t)))
    );
    if !pack.smartgroups.is_empty() {
        y.push_str("smartgroups:\n");
        for g in pack.smartgroups.values() {
            let _ = writeln!(
                y,
                "  {}:\n    cidrs: {}",
                g.name,
                quoted(g.cidrs.iter().map(std::string::ToString::to_string))
            );
        }
    }
    y
}

fn webgroups<'a>(groups: impl IntoIterator<Item = &'a WebGroup>) -> String {
    let mut y = String::from("webgroups:\n");
    for g in groups {
        let _ = writeln!(y, "  {}:\n    domains: {}", g.name, quoted(g.domains.iter().map(ToString::to_string)));
    }
    if y.len() == "webgroups:\n".len() { String::new() } else { y }
}

fn rules(rules: &[Rule]) -> String {
    let mut y = String::with_capacity(256 * rules.len() + 8);
    y.push_str("rules:\n");
    for r in rules {
        let source = match &r.source {
            Source::Any => "any".to_string(),
            Source::Groups(g) => format!("[{}]", g.join(", ")),
        };
        let dests: Vec<String> = r.destinations.iter().map(destination).collect();
        let (protocol, action) = (r.protocol.keyword(), r.action.keyword());
        let _ = writeln!(
            y,
            "  - name: {}\n    priority: {}\n    source: {source}\n    destination: [{}]\n    protocol: {protocol}\n    action: {action}\n    mode: {}\n    log: {}",
            r.name,
            r.priority,
            dests.join(", "),
            r.mode.keyword(),
            r.log
        );
        if !r.verify_names && Rule::default_verify_names(r.action, &r.destinations) {
            y.push_str("    verify_names: false\n");
        }
        if let Some(ports) = &r.ports {
            let list: Vec<String> = ports
                .iter()
                .map(|p| if p.lo == p.hi { p.lo.to_string() } else { format!("\"{}-{}\"", p.lo, p.hi) })
                .collect();
            let _ = writeln!(y, "    ports: [{}]", list.join(", "));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_sources;
    use crate::model::Location;
    use crate::synth;

    fn strip(mut p: Pack) -> Pack {
        for r in &mut p.rules {
            r.location = Location::default();
            r.ports = r.ports.take().map(crate::merge_ranges); // merged on load
            for d in &mut r.destinations {
                if let crate::model::Destination::Cidrs(nets) = d {
                    let mut seen = std::collections::HashSet::new();
                    nets.retain(|n| seen.insert(*n)); // the loader drops repeats
                }
            }
        }
        for g in p.smartgroups.values_mut() {
            g.location = Location::default();
        }
        for g in p.webgroups.values_mut() {
            g.location = Location::default();
        }
        p
    }

    #[test]
    fn round_trips_synthetic_packs() {
        for rules in [1, 10, 300] {
            let mut pack = synth::with_webgroups(synth::realistic_pack(rules, 7), 200, 7);
            if let Some(r) = pack.rules.iter_mut().find(|r| r.verify_names) {
                r.verify_names = false; // written as `verify_names: false`
            }
            let text = to_yaml(&pack);
            let back = load_sources(&[("p.yaml".into(), text.clone())]).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let split = load_sources(&to_yaml_files(&pack, 7)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(strip(split), strip(back.clone()), "{rules} rules, split");
            let (back, pack) = (strip(back), strip(pack));
            assert_eq!(back.dns, pack.dns);
            assert_eq!(back.smartgroups, pack.smartgroups);
            assert_eq!(back.webgroups, pack.webgroups);
            for (b, p) in back.rules.iter().zip(&pack.rules) {
                assert_eq!(b, p);
            }
            assert_eq!(back, pack, "{rules} rules");
        }
    }
}
