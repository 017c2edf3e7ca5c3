//! One policy file: the YAML tree read into a [`Fragment`], with every value
//! checked on its own. Checks that need all files (duplicates, references,
//! settings given twice) are `merge`'s job.

use super::domain::parse_pattern;
use super::fields::{self, Diag};
use super::model::{
    Action, Destination, DnsSettings, Location, Mode, PortRange, Protocol, QueryFilter, SmartGroup,
    WebGroup,
};
use super::yaml::{Kind, Node};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub at: Location,
}

/// A rule's `source` before references are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSource {
    Any,
    Groups(Vec<At<String>>),
}

/// A rule as written. A field is `None` when it was missing or wrong (an
/// error was recorded) or, for `ports` and `mode`, when it was omitted.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRule {
    pub at: Location,
    pub name: Option<At<String>>,
    pub priority: Option<At<u16>>,
    pub source: Option<RawSource>,
    pub destinations: Option<Vec<At<Destination>>>,
    pub protocol: Protocol,
    pub ports: Option<Vec<PortRange>>,
    pub action: Option<Action>,
    pub mode: Option<Mode>,
    pub log: bool,
}

/// What one file contributes to the pack. Top-level settings are `Some`
/// when the file sets them (even if their value was wrong).
#[derive(Debug, Default)]
pub struct Fragment {
    pub version: Option<At<Option<u32>>>,
    pub mode: Option<At<Option<Mode>>>,
    pub dns: Option<At<Option<DnsSettings>>>,
    pub smartgroups: Vec<SmartGroup>,
    pub webgroups: Vec<WebGroup>,
    pub rules: Vec<RawRule>,
}

const TOP_FIELDS: &[&str] = &["version", "mode", "dns", "smartgroups", "webgroups", "rules"];
const DNS_FIELDS: &[&str] = &["resolvers", "min_ttl", "max_ttl", "query_filter"];
const RULE_FIELDS: &[&str] =
    &["name", "priority", "source", "destination", "protocol", "ports", "action", "mode", "log"];
const MODES: &[(&str, Mode)] = &[("monitor", Mode::Monitor), ("enforce", Mode::Enforce)];

/// The fields of a mapping that stands for a record, keyed by name.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Reads `node` as a record of `what`, reporting unknown, duplicate and
    /// non-string keys. `None` (error recorded) if `node` is not a mapping.
    fn read(d: &mut Diag, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Self> {
        let Kind::Map(pairs) = &node.kind else {
            d.err(node, format!("expected {what} as a mapping, found {}", fields::describe(node)));
            return None;
        };
        let mut entries: Vec<(&'n str, &'n Node, &'n Node)> = Vec::new();
        for (key, value) in pairs {
            let Kind::Str(k) = &key.kind else {
                d.err(key, format!("expected a field name of {what}, found {}", fields::describe(key)));
                continue;
            };
            if !allowed.contains(&k.as_str()) {
                let expected: Vec<String> = allowed.iter().map(|f| format!("`{f}`")).collect();
                d.err(key, format!("unknown field `{k}` in {what}: expected one of {}", expected.join(", ")));
            } else if let Some((_, first, _)) = entries.iter().find(|(name, _, _)| name == k) {
                let first = d.at(first);
                d.err(key, format!("field `{k}` given twice in {what} (first at {first})"));
            } else {
                entries.push((k, key, value));
            }
        }
        Some(Self { entries })
    }

    /// The key and value of field `name`, if present.
    fn get(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.entries.iter().find(|(n, _, _)| *n == name).map(|(_, k, v)| (*k, *v))
    }

    /// The value of field `name`, if present.
    fn value(&self, name: &str) -> Option<&'n Node> {
        self.get(name).map(|(_, v)| v)
    }
}

/// Reads one file's YAML tree. Errors go to `d`; what could be read is returned.
pub fn fragment(d: &mut Diag, root: &Node) -> Fragment {
    let mut frag = Fragment::default();
    if root.kind == Kind::Null {
        return frag;
    }
    let Some(top) = Fields::read(d, root, "the policy file", TOP_FIELDS) else {
        return frag;
    };
    if let Some((key, v)) = top.get("version") {
        let version = match v.kind {
            Kind::Int(1, _) => Some(1),
            _ => {
                d.err(v, format!("unsupported version: expected `version: 1`, found {}", fields::describe(v)));
                None
            }
        };
        frag.version = Some(At { value: version, at: d.at(key) });
    }
    if let Some((key, v)) = top.get("mode") {
        let mode = fields::keyword(d, v, "mode", MODES);
        frag.mode = Some(At { value: mode, at: d.at(key) });
    }
    if let Some((key, v)) = top.get("dns") {
        let dns = dns(d, v);
        frag.dns = Some(At { value: dns, at: d.at(key) });
    }
    if let Some(v) = top.value("smartgroups") {
        for (name, body, at) in groups(d, v, "smartgroup") {
            let cidrs = Fields::read(d, body, &format!("smartgroup `{name}`"), &["cidrs"])
                .and_then(|f| required(d, &f, body, "cidrs", "a list of CIDRs"))
                .and_then(|n| fields::cidrs(d, n));
            if let Some(cidrs) = cidrs {
                frag.smartgroups.push(SmartGroup { name, cidrs, location: at });
            }
        }
    }
    if let Some(v) = top.value("webgroups") {
        for (name, body, at) in groups(d, v, "webgroup") {
            let domains = Fields::read(d, body, &format!("webgroup `{name}`"), &["domains"])
                .and_then(|f| required(d, &f, body, "domains", "a list of domain names"))
                .and_then(|n| domains(d, n));
            if let Some(domains) = domains {
                frag.webgroups.push(WebGroup { name, domains, location: at });
            }
        }
    }
    if let Some(v) = top.value("rules") {
        if v.kind != Kind::Null {
            for item in fields::list(d, v, "rules").unwrap_or_default() {
                if let Some(r) = rule(d, item) {
                    frag.rules.push(r);
                }
            }
        }
    }
    frag
}

/// The value of a required field, or an error at `owner` naming it.
fn required<'n>(d: &mut Diag, f: &Fields<'n>, owner: &Node, name: &str, what: &str) -> Option<&'n Node> {
    let v = f.value(name);
    if v.is_none() {
        d.err(owner, format!("missing field `{name}`: expected {what}"));
    }
    v
}

/// `dns:` settings with defaults filled in.
fn dns(d: &mut Diag, node: &Node) -> Option<DnsSettings> {
    let f = Fields::read(d, node, "`dns`", DNS_FIELDS)?;
    let errors = d.errors.len();
    let mut dns = DnsSettings::default();
    if let Some(v) = f.value("resolvers") {
        for item in fields::list(d, v, "resolver IP addresses").unwrap_or_default() {
            if let Some(ip) = fields::ip_addr(d, item) {
                if !dns.resolvers.contains(&ip) {
                    dns.resolvers.push(ip);
                }
            }
        }
    }
    let ttl = |d: &mut Diag, name: &str, default: u32| match f.value(name) {
        Some(v) => fields::integer(d, v, 0, i128::from(u32::MAX), &format!("`{name}`"))
            .and_then(|n| u32::try_from(n).ok()),
        None => Some(default),
    };
    let (min, max) = (ttl(d, "min_ttl", dns.min_ttl), ttl(d, "max_ttl", dns.max_ttl));
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            let at = f.get("min_ttl").or(f.get("max_ttl")).map_or(node, |(k, _)| k);
            d.err(at, format!("`min_ttl` ({min}) is above `max_ttl` ({max}): expected min_ttl <= max_ttl"));
        }
        (dns.min_ttl, dns.max_ttl) = (min, max);
    }
    if let Some(v) = f.value("query_filter") {
        // A YAML 1.1 reader may turn an unquoted `off` into `false`.
        let filter = match v.kind {
            Kind::Bool(false, _) => Some(QueryFilter::Off),
            _ => fields::keyword(d, v, "query_filter", &[
                ("off", QueryFilter::Off),
                ("monitor", QueryFilter::Monitor),
                ("enforce", QueryFilter::Enforce),
            ]),
        };
        dns.query_filter = filter.unwrap_or_default();
    }
    (d.errors.len() == errors).then_some(dns)
}

/// The entries of a `smartgroups:` or `webgroups:` mapping whose names are
/// valid: (name, body, location of the name).
fn groups<'n>(d: &mut Diag, node: &'n Node, kind: &str) -> Vec<(String, &'n Node, Location)> {
    let pairs = match &node.kind {
        Kind::Null => return Vec::new(),
        Kind::Map(pairs) => pairs,
        _ => {
            d.err(node, format!("expected {kind}s as a mapping of NAME: {{...}}, found {}", fields::describe(node)));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, body) in pairs {
        if let Some(name) = fields::name(d, key, true) {
            out.push((name, body, d.at(key)));
        }
    }
    out
}

/// A non-empty list of domain patterns, duplicates removed.
fn domains(d: &mut Diag, node: &Node) -> Option<Vec<super::model::DomainPattern>> {
    let items = fields::list(d, node, "domain names")?;
    if items.is_empty() {
        d.err(node, "empty `domains`: expected at least one domain name (an empty group never means any)");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match fields::string(d, item, "a domain name").map(parse_pattern) {
            Some(Ok(p)) if !out.contains(&p) => out.push(p),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                d.err(item, e);
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One item of `rules:`.
fn rule(d: &mut Diag, node: &Node) -> Option<RawRule> {
    let f = Fields::read(d, node, "a rule", RULE_FIELDS)?;
    let name = required(d, &f, node, "name", "a rule name").and_then(|v| {
        let name = fields::name(d, v, false)?;
        if name == "implicit-deny" {
            d.err(v, "the rule name `implicit-deny` is reserved for the implicit default deny: choose another name");
            return None;
        }
        Some(At { value: name, at: d.at(v) })
    });
    let priority = required(d, &f, node, "priority", "an integer 0..=65535").and_then(|v| {
        let p = fields::integer(d, v, 0, 65535, "`priority`")?;
        Some(At { value: u16::try_from(p).ok()?, at: d.at(v) })
    });
    let source = required(d, &f, node, "source", "`any`, a SmartGroup name, or a list of names")
        .and_then(|v| source(d, v));
    let destinations = required(d, &f, node, "destination", DEST_EXPECTED).and_then(|v| destinations(d, v));
    let protocol = f.value("protocol").map_or(Some(Protocol::Any), |v| {
        let choices = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("icmp", Protocol::Icmp), ("any", Protocol::Any)];
        fields::keyword(d, v, "protocol", &choices)
    });
    let ports = f.value("ports").and_then(|v| {
        if protocol == Some(Protocol::Icmp) {
            d.err(v, "`ports` is not allowed with protocol `icmp`: ICMP has no ports");
            return None;
        }
        fields::ports(d, v)
    });
    let action = required(d, &f, node, "action", "`permit` or `deny`")
        .and_then(|v| fields::keyword(d, v, "action", &[("permit", Action::Permit), ("deny", Action::Deny)]));
    let mode = f.value("mode").and_then(|v| fields::keyword(d, v, "mode", MODES));
    let log = f.value("log").map_or(Some(true), |v| fields::boolean(d, v, "log"));
    Some(RawRule {
        at: d.at(node),
        name,
        priority,
        source,
        destinations,
        protocol: protocol.unwrap_or_default(),
        ports,
        action,
        mode,
        log: log.unwrap_or(true),
    })
}

const DEST_EXPECTED: &str =
    "`any`, `resolvers`, `{smartgroup: NAME}`, `{webgroup: NAME}`, `{cidrs: [...]}` or a list of these";

/// A rule's `source`.
fn source(d: &mut Diag, node: &Node) -> Option<RawSource> {
    let single = |d: &mut Diag, n: &Node| fields::name(d, n, true).map(|name| At { value: name, at: d.at(n) });
    match &node.kind {
        Kind::Str(s) if s == "any" => Some(RawSource::Any),
        Kind::Seq(items) if items.is_empty() => {
            d.err(node, "empty `source` list: expected at least one SmartGroup name, or `any`");
            None
        }
        Kind::Seq(items) => {
            let mut out: Vec<At<String>> = Vec::new();
            let mut ok = true;
            for item in items {
                if matches!(&item.kind, Kind::Str(s) if s == "any") {
                    d.err(item, "`any` in a `source` list: use `any` alone, as `source: any`");
                    ok = false;
                } else if let Some(g) = single(d, item) {
                    if !out.iter().any(|o| o.value == g.value) {
                        out.push(g);
                    }
                } else {
                    ok = false;
                }
            }
            ok.then_some(RawSource::Groups(out))
        }
        Kind::Map(_) => {
            d.err(node, "expected `source` as `any`, a SmartGroup name, or a list of names, found a mapping");
            None
        }
        _ => single(d, node).map(|g| RawSource::Groups(vec![g])),
    }
}

/// A rule's `destination`: one element or a non-empty list of them.
fn destinations(d: &mut Diag, node: &Node) -> Option<Vec<At<Destination>>> {
    let Kind::Seq(items) = &node.kind else {
        return destination(d, node).map(|x| vec![x]);
    };
    if items.is_empty() {
        d.err(node, format!("empty `destination` list: expected {DEST_EXPECTED}"));
        return None;
    }
    let mut out: Vec<At<Destination>> = Vec::new();
    let mut ok = true;
    for item in items {
        match destination(d, item) {
            Some(x) if x.value == Destination::Any && items.len() > 1 => {
                d.err(item, "`any` in a `destination` list: use `any` alone, as `destination: any`");
                ok = false;
            }
            Some(x) if !out.iter().any(|o| o.value == x.value) => out.push(x),
            Some(_) => {}
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// One destination element.
fn destination(d: &mut Diag, node: &Node) -> Option<At<Destination>> {
    let at = d.at(node);
    let value = match &node.kind {
        Kind::Str(s) if s == "any" => Destination::Any,
        Kind::Str(s) if s == "resolvers" => Destination::Resolvers,
        Kind::Map(_) => {
            let errors = d.errors.len();
            let f = Fields::read(d, node, "a destination", &["smartgroup", "webgroup", "cidrs"])?;
            let [(key, _, v)] = f.entries.as_slice() else {
                if f.entries.len() > 1 {
                    d.err(node, "expected exactly one of `smartgroup`, `webgroup` or `cidrs` in a destination; use a list for several");
                } else if d.errors.len() == errors {
                    d.err(node, format!("empty destination: expected {DEST_EXPECTED}"));
                }
                return None;
            };
            match *key {
                "smartgroup" => Destination::SmartGroup(fields::name(d, v, true)?),
                "webgroup" => Destination::WebGroup(fields::name(d, v, true)?),
                _ => Destination::Cidrs(fields::cidrs(d, v)?),
            }
        }
        Kind::Str(s) => {
            d.err(node, format!(
                "invalid destination `{s}`: expected {DEST_EXPECTED} (a group is written `{{smartgroup: {s}}}` or `{{webgroup: {s}}}`)"
            ));
            return None;
        }
        _ => {
            d.err(node, format!("expected a destination: {DEST_EXPECTED}, found {}", fields::describe(node)));
            return None;
        }
    };
    Some(At { value, at })
}
