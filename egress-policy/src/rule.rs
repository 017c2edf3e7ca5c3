//! One item of `rules:` read into a [`RawRule`]: every field checked on its
//! own; names are resolved against the groups later, in `merge`.

use super::fields::{self, ErrorSink};
use super::model::{Action, Destination, Location, Mode, PortRange, Protocol};
use super::record::{Located, Record, required};
use super::yaml::{Kind, Node};

/// A rule's `source` before references are checked.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSource {
    Any,
    Groups(Vec<Located<String>>),
}

/// A rule as written. A field is `None` when it was missing or wrong (an
/// error was recorded) or, for `ports`, `mode` and `verify_names`, when it
/// was omitted.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRule {
    pub location: Location,
    pub name: Option<Located<String>>,
    pub priority: Option<Located<u16>>,
    pub source: Option<RawSource>,
    pub destinations: Option<Vec<Located<Destination>>>,
    pub protocol: Protocol,
    pub ports: Option<Vec<PortRange>>,
    pub action: Option<Action>,
    pub mode: Option<Mode>,
    pub log: bool,
    /// `verify_names` as written; only ever `Some` on a `permit` rule with
    /// a WebGroup destination (elsewhere it is an error).
    pub verify_names: Option<bool>,
}

impl RawRule {
    /// Moves every location of the rule `delta` lines.
    pub(super) fn shift_lines(&mut self, delta: isize) {
        // Named in full: a new field with a location must be shifted too.
        let RawRule {
            location,
            name,
            priority,
            source,
            destinations,
            protocol: _,
            ports: _,
            action: _,
            mode: _,
            log: _,
            verify_names: _,
        } = self;
        location.shift(delta);
        if let Some(n) = name {
            n.location.shift(delta);
        }
        if let Some(p) = priority {
            p.location.shift(delta);
        }
        if let Some(RawSource::Groups(groups)) = source {
            for g in groups {
                g.location.shift(delta);
            }
        }
        for dest in destinations.iter_mut().flatten() {
            dest.location.shift(delta);
        }
    }
}

const RULE_FIELDS: &[&str] =
    &["name", "priority", "source", "destination", "protocol", "ports", "action", "mode", "log", "verify_names"];

/// One item of `rules:`.
pub(super) fn rule(sink: &mut ErrorSink, node: &Node) -> Option<RawRule> {
    let f = Record::read(sink, node, "a rule", RULE_FIELDS)?;
    let name = required(sink, &f, node, "name", "a rule name").and_then(|v| {
        let name = fields::name(sink, v, false)?;
        if name == "implicit-deny" || name == "uncovered-source" {
            let what = if name == "implicit-deny" { "the implicit default deny" } else { "`uncovered: deny`" };
            sink.report(v, format!("the rule name `{name}` is reserved for {what}: choose another name"));
            return None;
        }
        Some(Located { value: name, location: sink.location_of(v) })
    });
    let priority = required(sink, &f, node, "priority", "an integer 0..=65535").and_then(|v| {
        let p = fields::integer(sink, v, 0, 65535, "`priority`")?;
        Some(Located { value: u16::try_from(p).ok()?, location: sink.location_of(v) })
    });
    let source = required(sink, &f, node, "source", "`any`, a SmartGroup name, or a list of names")
        .and_then(|v| source(sink, v));
    let destinations = required(sink, &f, node, "destination", DEST_EXPECTED).and_then(|v| destinations(sink, v));
    let protocol = f.value("protocol").map_or(Some(Protocol::Any), |v| {
        let choices =
            [("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("icmp", Protocol::Icmp), ("any", Protocol::Any)];
        fields::keyword(sink, v, "protocol", &choices)
    });
    let ports = f.value("ports").and_then(|v| {
        if protocol == Some(Protocol::Icmp) {
            sink.report(v, "`ports` is not allowed with protocol `icmp`: ICMP has no ports");
            return None;
        }
        fields::ports(sink, v)
    });
    let action = required(sink, &f, node, "action", "`permit` or `deny`")
        .and_then(|v| fields::keyword(sink, v, "action", &[("permit", Action::Permit), ("deny", Action::Deny)]));
    let mode = f.value("mode").and_then(|v| fields::mode(sink, v));
    let log = f.value("log").map_or(Some(true), |v| fields::boolean(sink, v, "log"));
    let verify_names =
        f.get("verify_names").and_then(|(k, v)| verify_names(sink, k, v, action, destinations.as_deref()));
    Some(RawRule {
        location: sink.location_of(node),
        name,
        priority,
        source,
        destinations,
        protocol: protocol.unwrap_or_default(),
        ports,
        action,
        mode,
        log: log.unwrap_or(true),
        verify_names,
    })
}

/// `verify_names` (key `key`, value `value`): a boolean, allowed only on a
/// `permit` rule with a WebGroup destination. Where the action or the
/// destinations are wrong themselves (already reported), only the value is
/// checked.
fn verify_names(
    sink: &mut ErrorSink,
    key: &Node,
    value: &Node,
    action: Option<Action>,
    destinations: Option<&[Located<Destination>]>,
) -> Option<bool> {
    let webgroup = destinations.map(|d| d.iter().any(|d| matches!(d.value, Destination::WebGroup(_))));
    if action == Some(Action::Deny) {
        sink.report(
            key,
            "`verify_names` is not allowed on a `deny` rule: a deny rule's WebGroup destinations always match both \
             an address learned for the WebGroup and any connection whose name the WebGroup covers",
        );
        return None;
    }
    if webgroup == Some(false) {
        sink.report(
            key,
            "`verify_names` is only allowed on a `permit` rule with a `{webgroup: NAME}` destination: this rule's \
             destinations are judged by address alone",
        );
        return None;
    }
    fields::boolean(sink, value, "verify_names")
}

const DEST_EXPECTED: &str =
    "`any`, `resolvers`, `gateway`, `{smartgroup: NAME}`, `{webgroup: NAME}`, `{cidrs: [...]}` or a list of these";

/// A rule's `source`.
fn source(sink: &mut ErrorSink, node: &Node) -> Option<RawSource> {
    let single = |sink: &mut ErrorSink, n: &Node| {
        fields::name(sink, n, true).map(|name| Located { value: name, location: sink.location_of(n) })
    };
    match &node.kind {
        Kind::Str(s) if s == "any" => Some(RawSource::Any),
        Kind::Seq(items) if items.is_empty() => {
            sink.report(node, "empty `source` list: expected at least one SmartGroup name, or `any`");
            None
        }
        Kind::Seq(items) => {
            let mut out: Vec<Located<String>> = Vec::new();
            let mut ok = true;
            for item in items {
                if matches!(&item.kind, Kind::Str(s) if s == "any") {
                    sink.report(item, "`any` in a `source` list: use `any` alone, as `source: any`");
                    ok = false;
                } else if let Some(g) = single(sink, item) {
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
            sink.report(node, "expected `source` as `any`, a SmartGroup name, or a list of names, found a mapping");
            None
        }
        _ => single(sink, node).map(|g| RawSource::Groups(vec![g])),
    }
}

/// A rule's `destination`: one element or a non-empty list of them.
fn destinations(sink: &mut ErrorSink, node: &Node) -> Option<Vec<Located<Destination>>> {
    let Kind::Seq(items) = &node.kind else {
        return destination(sink, node).map(|x| vec![x]);
    };
    if items.is_empty() {
        sink.report(node, format!("empty `destination` list: expected {DEST_EXPECTED}"));
        return None;
    }
    let mut out: Vec<Located<Destination>> = Vec::new();
    let mut ok = true;
    for item in items {
        match destination(sink, item) {
            Some(x) if x.value == Destination::Any && items.len() > 1 => {
                sink.report(item, "`any` in a `destination` list: use `any` alone, as `destination: any`");
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
fn destination(sink: &mut ErrorSink, node: &Node) -> Option<Located<Destination>> {
    let location = sink.location_of(node);
    let value = match &node.kind {
        Kind::Str(s) if s == "any" => Destination::Any,
        Kind::Str(s) if s == "resolvers" => Destination::Resolvers,
        Kind::Str(s) if s == "gateway" => Destination::Gateway,
        Kind::Map(_) => {
            let errors = sink.errors.len();
            let f = Record::read(sink, node, "a destination", &["smartgroup", "webgroup", "cidrs"])?;
            let [(key, _, v)] = f.entries.as_slice() else {
                if f.entries.len() > 1 {
                    sink.report(node, "expected exactly one of `smartgroup`, `webgroup` or `cidrs` in a destination; use a list for several");
                } else if sink.errors.len() == errors {
                    sink.report(node, format!("empty destination: expected {DEST_EXPECTED}"));
                }
                return None;
            };
            match *key {
                "smartgroup" => Destination::SmartGroup(fields::name(sink, v, true)?),
                "webgroup" => Destination::WebGroup(fields::name(sink, v, true)?),
                _ => Destination::Cidrs(fields::cidrs(sink, v)?),
            }
        }
        Kind::Str(s) => {
            sink.report(node, format!(
                "invalid destination `{s}`: expected {DEST_EXPECTED} (a group is written `{{smartgroup: {s}}}` or `{{webgroup: {s}}}`)"
            ));
            return None;
        }
        _ => {
            sink.report(node, format!("expected a destination: {DEST_EXPECTED}, found {}", fields::describe(node)));
            return None;
        }
    };
    Some(Located { value, location })
}
