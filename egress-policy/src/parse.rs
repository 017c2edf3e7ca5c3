//! One policy file: the YAML tree read into a [`Fragment`], with every value
//! checked on its own. Checks that need all files (duplicates, references,
//! settings given twice) are `merge`'s job. Rules are read in `rule`.

use super::domain::parse_pattern;
use super::fields::{self, Diag};
use super::model::{DnsSettings, DomainPattern, Location, Mode, QueryFilter, SmartGroup, WebGroup};
use super::rule::{self, RawRule};
use super::yaml::{Kind, Node};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub at: Location,
}

/// What one file contributes to the pack. Top-level settings are `Some`
/// when the file sets them (even if their value was wrong).
#[derive(Debug, Default, Clone)]
pub struct Fragment {
    /// The file could not be read as a policy mapping at all (YAML syntax
    /// error, not a mapping): what it defines is unknown.
    pub broken: bool,
    /// Groups that are defined but invalid (already reported); references
    /// to them are not reported again as undefined.
    pub invalid_groups: Vec<String>,
    pub version: Option<At<Option<u32>>>,
    pub mode: Option<At<Option<Mode>>>,
    pub dns: Option<At<Option<DnsSettings>>>,
    pub smartgroups: Vec<SmartGroup>,
    pub webgroups: Vec<WebGroup>,
    pub rules: Vec<RawRule>,
}

impl Fragment {
    /// Moves every location `delta` lines: a piece of a file read before,
    /// found again further up or down the file.
    pub(super) fn shift_lines(&mut self, delta: isize) {
        // Named in full: a new field with a location must be shifted too.
        let Fragment { broken: _, invalid_groups: _, version, mode, dns, smartgroups, webgroups, rules } = self;
        for at in
            [version.as_mut().map(|a| &mut a.at), mode.as_mut().map(|a| &mut a.at), dns.as_mut().map(|a| &mut a.at)]
                .into_iter()
                .flatten()
        {
            at.shift(delta);
        }
        smartgroups.iter_mut().for_each(|g| g.location.shift(delta));
        webgroups.iter_mut().for_each(|g| g.location.shift(delta));
        rules.iter_mut().for_each(|r| r.shift_lines(delta));
    }
}

const TOP_FIELDS: &[&str] = &["version", "mode", "dns", "smartgroups", "webgroups", "rules"];
const DNS_FIELDS: &[&str] = &["resolvers", "min_ttl", "max_ttl", "query_filter"];
/// The spellings of `mode`.
pub(super) const MODES: &[(&str, Mode)] = &[("monitor", Mode::Monitor), ("enforce", Mode::Enforce)];

/// The fields of a mapping that stands for a record, keyed by name.
pub(super) struct Fields<'n> {
    pub(super) entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// Reads `node` as a record of `what`, reporting unknown, duplicate and
    /// non-string keys. `None` (error recorded) if `node` is not a mapping.
    pub(super) fn read(d: &mut Diag, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Self> {
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
    pub(super) fn get(&self, name: &str) -> Option<(&'n Node, &'n Node)> {
        self.entries.iter().find(|(n, _, _)| *n == name).map(|(_, k, v)| (*k, *v))
    }

    /// The value of field `name`, if present.
    pub(super) fn value(&self, name: &str) -> Option<&'n Node> {
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
        frag.broken = true;
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
        for (name, body, at) in groups(d, v, "smartgroup", &mut frag.invalid_groups, &mut frag.broken) {
            let cidrs = Fields::read(d, body, &format!("smartgroup `{name}`"), &["cidrs"])
                .and_then(|f| required(d, &f, body, "cidrs", "a list of CIDRs"))
                .and_then(|n| fields::cidrs(d, n));
            match cidrs {
                Some(cidrs) => frag.smartgroups.push(SmartGroup { name, cidrs, location: at }),
                None => frag.invalid_groups.push(name),
            }
        }
    }
    if let Some(v) = top.value("webgroups") {
        for (name, body, at) in groups(d, v, "webgroup", &mut frag.invalid_groups, &mut frag.broken) {
            let domains = Fields::read(d, body, &format!("webgroup `{name}`"), &["domains"])
                .and_then(|f| required(d, &f, body, "domains", "a list of domain names"))
                .and_then(|n| domains(d, n));
            match domains {
                Some(domains) => frag.webgroups.push(WebGroup { name, domains, location: at }),
                None => frag.invalid_groups.push(name),
            }
        }
    }
    if let Some(v) = top.value("rules")
        && v.kind != Kind::Null
    {
        for item in fields::list(d, v, "rules").unwrap_or_default() {
            if let Some(r) = rule::rule(d, item) {
                frag.rules.push(r);
            }
        }
    }
    frag
}

/// The value of a required field, or an error at `owner` naming it.
pub(super) fn required<'n>(d: &mut Diag, f: &Fields<'n>, owner: &Node, name: &str, what: &str) -> Option<&'n Node> {
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
            if let Some(ip) = fields::ip_addr(d, item)
                && !dns.resolvers.contains(&ip)
            {
                dns.resolvers.push(ip);
            }
        }
    }
    let ttl = |d: &mut Diag, name: &str, default: u32| match f.value(name) {
        Some(v) => {
            fields::integer(d, v, 0, i128::from(u32::MAX), &format!("`{name}`")).and_then(|n| u32::try_from(n).ok())
        }
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
            _ => fields::keyword(
                d,
                v,
                "query_filter",
                &[("off", QueryFilter::Off), ("monitor", QueryFilter::Monitor), ("enforce", QueryFilter::Enforce)],
            ),
        };
        dns.query_filter = filter.unwrap_or_default();
    }
    (d.errors.len() == errors).then_some(dns)
}

/// The entries of a `smartgroups:` or `webgroups:` mapping whose names are
/// valid: (name, body, location of the name).
/// Names that are not valid go to `invalid`; if `node` is not a mapping at
/// all, the file is `broken` (which groups it meant to define is unknown).
fn groups<'n>(
    d: &mut Diag,
    node: &'n Node,
    kind: &str,
    invalid: &mut Vec<String>,
    broken: &mut bool,
) -> Vec<(String, &'n Node, Location)> {
    let pairs = match &node.kind {
        Kind::Null => return Vec::new(),
        Kind::Map(pairs) => pairs,
        _ => {
            d.err(node, format!("expected {kind}s as a mapping of NAME: {{...}}, found {}", fields::describe(node)));
            *broken = true;
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, body) in pairs {
        match fields::name(d, key, true) {
            Some(name) => out.push((name, body, d.at(key))),
            None => invalid.extend(fields::scalar_text(key).map(str::to_owned)),
        }
    }
    out
}

/// A non-empty list of domain patterns, duplicates removed.
fn domains(d: &mut Diag, node: &Node) -> Option<Vec<DomainPattern>> {
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
