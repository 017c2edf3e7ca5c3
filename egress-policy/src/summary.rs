//! A human summary of a validated pack, printed by `egress-agent check`.

use std::fmt::Write;

use super::model::{Action, Destination, Mode, Pack, PortRange, Rule, Source};

/// Describes `pack`: version, mode, DNS settings, each `SmartGroup` and
/// WebGroup with its size, each rule in priority order, and the counts.
pub fn summary(pack: &Pack) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut s, pack);
    s
}

fn write_summary(s: &mut String, pack: &Pack) -> std::fmt::Result {
    writeln!(s, "policy pack version {}, default mode {}", pack.version, pack.mode.keyword())?;
    let resolvers: Vec<String> = pack.dns.resolvers.iter().map(ToString::to_string).collect();
    writeln!(
        s,
        "dns: resolvers [{}], ttl {}..{} s, query_filter {}, tunnel_guard {}",
        resolvers.join(", "),
        pack.dns.min_ttl,
        pack.dns.max_ttl,
        pack.dns.query_filter.keyword(),
        pack.dns.tunnel_guard.keyword()
    )?;
    writeln!(s, "smartgroups ({}):", pack.smartgroups.len())?;
    for g in pack.smartgroups.values() {
        let cidrs: Vec<String> = g.cidrs.iter().map(ToString::to_string).collect();
        writeln!(s, "  {} ({} cidrs): {}", g.name, g.cidrs.len(), cidrs.join(", "))?;
    }
    writeln!(s, "webgroups ({}):", pack.webgroups.len())?;
    for g in pack.webgroups.values() {
        let domains: Vec<String> = g.domains.iter().map(ToString::to_string).collect();
        writeln!(s, "  {} ({} domains): {}", g.name, g.domains.len(), domains.join(", "))?;
    }
    writeln!(s, "rules ({}, first match wins):", pack.rules.len())?;
    for r in &pack.rules {
        let source = match &r.source {
            Source::Any => "any".to_owned(),
            Source::Groups(g) => g.join(", "),
        };
        let dests: Vec<String> = r.destinations.iter().map(destination).collect();
        let ports = r.ports.as_deref().map_or_else(|| "all".to_owned(), ports);
        let log = if r.log { "" } else { " nolog" };
        let unverified = Rule::default_verify_names(r.action, &r.destinations) && !r.verify_names;
        let names = if unverified { " names-unverified" } else { "" };
        writeln!(
            s,
            "  {:>5} {}: {} -> {} proto {} ports {} {} ({}){log}{names}",
            r.priority,
            r.name,
            source,
            dests.join(", "),
            r.protocol.keyword(),
            ports,
            r.action.keyword(),
            r.mode.keyword(),
        )?;
    }
    writeln!(s, "  {:>5} implicit-deny: deny ({})", "-", pack.mode.keyword())?;
    match pack.uncovered {
        crate::model::Uncovered::Deny => {
            writeln!(s, "  {:>5} uncovered-source: deny ({}) sources no rule covers", "-", pack.mode.keyword())?;
        }
        crate::model::Uncovered::Pass => writeln!(s, "  {:>5} uncovered: pass (sources no rule covers)", "-")?,
    }
    let permits = pack.rules.iter().filter(|r| r.action == Action::Permit).count();
    let enforced = pack.rules.iter().filter(|r| r.mode == Mode::Enforce).count();
    writeln!(
        s,
        "totals: {} smartgroups, {} webgroups, {} rules ({} permit, {} deny; {} enforce, {} monitor)",
        pack.smartgroups.len(),
        pack.webgroups.len(),
        pack.rules.len(),
        permits,
        pack.rules.len() - permits,
        enforced,
        pack.rules.len() - enforced,
    )
}

fn destination(d: &Destination) -> String {
    match d {
        Destination::Any => "any".to_owned(),
        Destination::Resolvers => "resolvers".to_owned(),
        Destination::Gateway => "gateway".to_owned(),
        Destination::SmartGroup(n) => format!("smartgroup:{n}"),
        Destination::WebGroup(n) => format!("webgroup:{n}"),
        Destination::Cidrs(c) => {
            let c: Vec<String> = c.iter().map(ToString::to_string).collect();
            format!("cidrs:[{}]", c.join(", "))
        }
    }
}

fn ports(p: &[PortRange]) -> String {
    let p: Vec<String> =
        p.iter().map(|r| if r.lo == r.hi { r.lo.to_string() } else { format!("{}-{}", r.lo, r.hi) }).collect();
    p.join(",")
}
