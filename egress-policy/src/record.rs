//! A YAML mapping read as a record (a rule, a group, `dns:`): its fields by
//! name, with unknown, duplicate and non-string keys reported, and values
//! kept with the place they were written.

use super::fields::{self, ErrorSink};
use super::model::Location;
use super::yaml::{Kind, Node};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub location: Location,
}

/// The fields of a mapping that stands for a record, keyed by name.
pub(super) struct Record<'n> {
    /// (field name, key node, value node), in the order written.
    pub(super) entries: Vec<(&'n str, &'n Node, &'n Node)>,
}

impl<'n> Record<'n> {
    /// Reads `node` as a record of `what`, reporting unknown, duplicate and
    /// non-string keys. `None` (error recorded) if `node` is not a mapping.
    pub(super) fn read(sink: &mut ErrorSink, node: &'n Node, what: &str, allowed: &[&str]) -> Option<Self> {
        let Kind::Map(pairs) = &node.kind else {
            sink.report(node, format!("expected {what} as a mapping, found {}", fields::describe(node)));
            return None;
        };
        let mut entries: Vec<(&'n str, &'n Node, &'n Node)> = Vec::new();
        for (key, value) in pairs {
            let Kind::Str(k) = &key.kind else {
                sink.report(key, format!("expected a field name of {what}, found {}", fields::describe(key)));
                continue;
            };
            if !allowed.contains(&k.as_str()) {
                let expected: Vec<String> = allowed.iter().map(|f| format!("`{f}`")).collect();
                sink.report(key, format!("unknown field `{k}` in {what}: expected one of {}", expected.join(", ")));
            } else if let Some((_, first, _)) = entries.iter().find(|(name, _, _)| name == k) {
                let first = sink.location_of(first);
                sink.report(key, format!("field `{k}` given twice in {what} (first at {first})"));
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

/// The value of a required field, or an error at `owner` naming it.
pub(super) fn required<'n>(
    sink: &mut ErrorSink,
    record: &Record<'n>,
    owner: &Node,
    name: &str,
    what: &str,
) -> Option<&'n Node> {
    let v = record.value(name);
    if v.is_none() {
        sink.report(owner, format!("missing field `{name}`: expected {what}"));
    }
    v
}
