//! One item of `rules:` read into a [`RawRule`]: every field checked on its
//! own; names are resolved against the groups later, in `merge`.

use super::fields::{self, Diag};
use super::model::{Action, Destination, Location, Mode, PortRange, Protocol};
use super::parse::{At, Fields, MODES, required};
use super::yaml::{Kind, Node};

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

impl RawRule {
    /// Moves every location of the rule `delta` lines.
    pub(super) fn shift_lines(&mut self, delta: isize) {
        // Named in full: a new field with a location must be shifted too.
        let RawRule { at, name, priority, source, destinations, protocol: _, ports: _, action: _, mode: _, log: _ } =
            self;
        at.shift(delta);
        if let Some(n) = name {
            n.at.shift(delta);
        }
        if let Some(p) = priority {
            p.at.shift(delta);
        }
        if let Some(RawSource::Groups(groups)) = source {
            groups.iter_mut().for_each(|g| g.at.shift(delta));
        }
        for d in destinations.iter_mut().flatten() {
            d.at.shift(delta);
        }
    }
}

const RULE_FIELDS: &[&str] =
    &["name", "priority", "source", "destination", "protocol", "ports", "action", "mode", "log"];

/// One item of `rules:`.
pub(super) fn rule(d: &mut Diag, node: &Node) -> Option<RawRule> {
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
    let source =
        required(d, &f, node, "source", "`any`, a SmartGroup name, or a list of names").and_then(|v| source(d, v));
    let destinations = required(d, &f, node, "destination", DEST_EXPECTED).and_then(|v| destinations(d, v));
    let protocol = f.value("protocol").map_or(Some(Protocol::Any), |v| {
        let choices =
            [("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("icmp", Protocol::Icmp), ("any", Protocol::Any)];
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
