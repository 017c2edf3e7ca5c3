//! One policy file: the YAML tree read into a [`Fragment`], with every value
//! checked on its own. Checks that need all files (duplicates, references,
//! settings given twice) are `merge`'s job. Rules are read in `rule`.

use super::domain::parse_pattern;
use super::fields::{self, ErrorSink};
use super::lists::{ListKind, ListRef};
use super::model::{
    DnsSettings, DomainPattern, Location, Mode, QueryFilter, SmartGroup, TunnelGuard, Uncovered, WebGroup,
};
use super::record::{Located, Record};
use super::rule::{self, RawRule};
use super::yaml::{Kind, Node};

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
    pub version: Option<Located<Option<u32>>>,
    pub mode: Option<Located<Option<Mode>>>,
    pub dns: Option<Located<Option<DnsSettings>>>,
    pub uncovered: Option<Located<Option<Uncovered>>>,
    pub smartgroups: Vec<SmartGroup>,
    pub webgroups: Vec<WebGroup>,
    pub rules: Vec<RawRule>,
    /// The list files its groups name (`cidrs_file`, `domains_file`): the
    /// load reads them and adds their entries to the groups.
    pub lists: Vec<ListRef>,
}

impl Fragment {
    /// Moves every location `delta` lines: a piece of a file read before,
    /// found again further up or down the file.
    pub(super) fn shift_lines(&mut self, delta: isize) {
        // Named in full: a new field with a location must be shifted too.
        let Fragment {
            broken: _,
            invalid_groups: _,
            version,
            mode,
            dns,
            uncovered,
            smartgroups,
            webgroups,
            rules,
            lists,
        } = self;
        let settings = [
            version.as_mut().map(|v| &mut v.location),
            mode.as_mut().map(|m| &mut m.location),
            dns.as_mut().map(|d| &mut d.location),
            uncovered.as_mut().map(|u| &mut u.location),
        ];
        for location in settings.into_iter().flatten() {
            location.shift(delta);
        }
        for group in smartgroups {
            group.location.shift(delta);
        }
        for group in webgroups {
            group.location.shift(delta);
        }
        for rule in rules {
            rule.shift_lines(delta);
        }
        for list in lists {
            list.location.shift(delta);
        }
    }
}

const TOP_FIELDS: &[&str] = &["version", "mode", "dns", "uncovered", "smartgroups", "webgroups", "rules"];
const DNS_FIELDS: &[&str] = &["resolvers", "min_ttl", "max_ttl", "query_filter", "query_types", "tunnel_guard"];

/// Reads one file's YAML tree. Errors go to `sink`; what could be read is returned.
pub fn fragment(sink: &mut ErrorSink, root: &Node) -> Fragment {
    let mut frag = Fragment::default();
    if root.kind == Kind::Null {
        return frag;
    }
    let Some(top) = Record::read(sink, root, "the policy file", TOP_FIELDS) else {
        frag.broken = true;
        return frag;
    };
    if let Some((key, v)) = top.get("version") {
        let version = if let Kind::Int(1, _) = v.kind {
            Some(1)
        } else {
            sink.report(v, format!("unsupported version: expected `version: 1`, found {}", fields::describe(v)));
            None
        };
        frag.version = Some(Located { value: version, location: sink.location_of(key) });
    }
    if let Some((key, v)) = top.get("mode") {
        let mode = fields::mode(sink, v);
        frag.mode = Some(Located { value: mode, location: sink.location_of(key) });
    }
    if let Some((key, v)) = top.get("dns") {
        let dns = dns(sink, v);
        frag.dns = Some(Located { value: dns, location: sink.location_of(key) });
    }
    if let Some((key, v)) = top.get("uncovered") {
        let uncovered = fields::keyword(sink, v, "uncovered", &[("deny", Uncovered::Deny), ("pass", Uncovered::Pass)]);
        frag.uncovered = Some(Located { value: uncovered, location: sink.location_of(key) });
    }
    if let Some(v) = top.value("smartgroups") {
        for (name, body, at) in groups(sink, v, "smartgroup", &mut frag.invalid_groups, &mut frag.broken) {
            let what = format!("smartgroup `{name}`");
            let kind = ("cidrs", ListKind::Cidrs, "a list of CIDRs");
            match group_entries(sink, body, (&what, &name), kind, &mut frag.lists, fields::cidrs) {
                Some(cidrs) => frag.smartgroups.push(SmartGroup { name, cidrs, location: at }),
                None => frag.invalid_groups.push(name),
            }
        }
    }
    if let Some(v) = top.value("webgroups") {
        for (name, body, at) in groups(sink, v, "webgroup", &mut frag.invalid_groups, &mut frag.broken) {
            let what = format!("webgroup `{name}`");
            let kind = ("domains", ListKind::Domains, "a list of domain names");
            match group_entries(sink, body, (&what, &name), kind, &mut frag.lists, domains) {
                Some(domains) => frag.webgroups.push(WebGroup { name, domains, location: at }),
                None => frag.invalid_groups.push(name),
            }
        }
    }
    if let Some(v) = top.value("rules")
        && v.kind != Kind::Null
    {
        for item in fields::list(sink, v, "rules").unwrap_or_default() {
            if let Some(r) = rule::rule(sink, item) {
                frag.rules.push(r);
            }
        }
    }
    frag
}

/// `dns:` settings with defaults filled in.
fn dns(sink: &mut ErrorSink, node: &Node) -> Option<DnsSettings> {
    let f = Record::read(sink, node, "`dns`", DNS_FIELDS)?;
    let errors = sink.errors.len();
    let mut dns = DnsSettings::default();
    if let Some(v) = f.value("resolvers") {
        for item in fields::list(sink, v, "resolver IP addresses").unwrap_or_default() {
            if let Some(ip) = fields::ip_addr(sink, item)
                && !dns.resolvers.contains(&ip)
            {
                dns.resolvers.push(ip);
            }
        }
    }
    let ttl = |sink: &mut ErrorSink, name: &str, default: u32| match f.value(name) {
        Some(v) => {
            fields::integer(sink, v, 0, i128::from(u32::MAX), &format!("`{name}`")).and_then(|n| u32::try_from(n).ok())
        }
        None => Some(default),
    };
    let (min, max) = (ttl(sink, "min_ttl", dns.min_ttl), ttl(sink, "max_ttl", dns.max_ttl));
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            let at = f.get("min_ttl").or(f.get("max_ttl")).map_or(node, |(k, _)| k);
            sink.report(at, format!("`min_ttl` ({min}) is above `max_ttl` ({max}): expected min_ttl <= max_ttl"));
        }
        (dns.min_ttl, dns.max_ttl) = (min, max);
    }
    if let Some(v) = f.value("query_filter") {
        let words = [QueryFilter::Off, QueryFilter::Monitor, QueryFilter::Enforce];
        dns.query_filter = off_monitor_enforce(sink, v, "query_filter", words).unwrap_or_default();
    }
    if let Some(v) = f.value("tunnel_guard") {
        let words = [TunnelGuard::Off, TunnelGuard::Monitor, TunnelGuard::Enforce];
        dns.tunnel_guard = off_monitor_enforce(sink, v, "tunnel_guard", words).unwrap_or_default();
    }
    if let Some(v) = f.value("query_types") {
        dns.query_types = query_types(sink, v);
    }
    (sink.errors.len() == errors).then_some(dns)
}

/// An `off | monitor | enforce` setting (`words` in that order). A YAML
/// 1.1 reader may turn an unquoted `off` into `false`.
fn off_monitor_enforce<T: Copy>(sink: &mut ErrorSink, node: &Node, field: &str, words: [T; 3]) -> Option<T> {
    match node.kind {
        Kind::Bool(false, _) => Some(words[0]),
        _ => fields::keyword(sink, node, field, &[("off", words[0]), ("monitor", words[1]), ("enforce", words[2])]),
    }
}

/// `dns.query_types`: type names (`A`, `TXT`, `TYPE65`, any case), as
/// sorted type numbers.
fn query_types(sink: &mut ErrorSink, node: &Node) -> Vec<u16> {
    use crate::dns_types::{TypeError, known, query_type};
    let mut types = Vec::new();
    for item in fields::list(sink, node, "DNS query type names").unwrap_or_default() {
        let Some(name) = fields::string(sink, item, "a DNS query type name") else { continue };
        match query_type(name) {
            Ok(t) => types.push(t),
            Err(TypeError::Unknown) => {
                sink.report(item, format!("unknown DNS query type `{name}`: expected one of {}, or TYPEn", known()));
            }
            Err(TypeError::OutOfRange(n)) => sink.report(
                item,
                format!("DNS query type `{name}` ({n}) cannot be checked: the query filter checks types 0 to 255"),
            ),
        }
    }
    types.sort_unstable();
    types.dedup();
    types
}

/// The entries of a `smartgroups:` or `webgroups:` mapping whose names are
/// valid: (name, body, location of the name).
/// Names that are not valid go to `invalid`; if `node` is not a mapping at
/// all, the file is `broken` (which groups it meant to define is unknown).
fn groups<'n>(
    sink: &mut ErrorSink,
    node: &'n Node,
    kind: &str,
    invalid: &mut Vec<String>,
    broken: &mut bool,
) -> Vec<(String, &'n Node, Location)> {
    let pairs = match &node.kind {
        Kind::Null => return Vec::new(),
        Kind::Map(pairs) => pairs,
        _ => {
            sink.report(
                node,
                format!("expected {kind}s as a mapping of NAME: {{...}}, found {}", fields::describe(node)),
            );
            *broken = true;
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (key, body) in pairs {
        match fields::name(sink, key, true) {
            Some(name) => out.push((name, body, sink.location_of(key))),
            None => invalid.extend(fields::scalar_text(key).map(str::to_owned)),
        }
    }
    out
}

/// A group's entries: its inline list (`inline`, e.g. `cidrs`, read by
/// `read`) if written, and its list file (`cidrs_file`) noted in `lists`
/// (its entries are added by the load); one of the two is required.
/// `None` (reported): the body is wrong. `what`: the group as errors name
/// it, and its name; `expected`: what the inline list holds.
fn group_entries<T>(
    sink: &mut ErrorSink,
    body: &Node,
    (what, name): (&str, &str),
    (inline, kind, expected): (&str, ListKind, &str),
    lists: &mut Vec<ListRef>,
    read: impl FnOnce(&mut ErrorSink, &Node) -> Option<Vec<T>>,
) -> Option<Vec<T>> {
    let file_field = kind.field();
    let record = Record::read(sink, body, what, &[inline, file_field])?;
    let mut file_ok = None;
    if let Some(v) = record.value(file_field) {
        let path = fields::string(sink, v, "the path of a list file");
        let problem = path.and_then(super::lists::path_problem);
        if let Some(problem) = &problem {
            sink.report(v, format!("`{file_field}`: {problem}"));
        }
        let ok = path.is_some() && problem.is_none();
        if let Some(path) = path.filter(|_| ok) {
            let location = sink.location_of(v);
            lists.push(ListRef { group: name.to_string(), kind, path: path.to_string(), location });
        }
        file_ok = Some(ok);
    }
    let entries = match record.value(inline) {
        // Beside a list file, an empty inline list is no error.
        Some(n) if file_ok.is_some() && matches!(&n.kind, Kind::Seq(items) if items.is_empty()) => Some(Vec::new()),
        Some(n) => read(sink, n),
        None if file_ok.is_some() => Some(Vec::new()),
        None => {
            sink.report(
                body,
                format!("missing field `{inline}`: expected {expected} (or `{file_field}`, a file of them)"),
            );
            None
        }
    };
    if file_ok == Some(false) { None } else { entries }
}

/// A non-empty list of domain patterns, duplicates removed.
fn domains(sink: &mut ErrorSink, node: &Node) -> Option<Vec<DomainPattern>> {
    let items = fields::list(sink, node, "domain names")?;
    if items.is_empty() {
        sink.report(node, "empty `domains`: expected at least one domain name (an empty group never means any)");
        return None;
    }
    fields::distinct(sink, items, "a domain name", parse_pattern)
}
