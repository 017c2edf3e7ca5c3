//! The event reader: builds the [`Node`] tree straight from the YAML
//! parser's events (granit-parser, the parser under serde-saphyr), without
//! going through serde with a span on every value.
//!
//! It handles what policies are made of: block and flow mappings and
//! sequences, plain and quoted scalars. Anything else (anchors, aliases,
//! tags, merge keys, several documents, numbers outside the plain decimal,
//! hex and `1.5` forms, syntax errors) returns `None`, and the dispatcher
//! asks serde-saphyr, which has the final word on all of it. A test holds
//! the two to the same trees on every policy in the repository.

use granit_parser::{Event, Parser, ScalarStyle, Span};

use super::node::{Kind, MAX_DEPTH, MAX_NODES, Node};
use super::scalar::typed;

/// The tree of `text`, or `None` where serde-saphyr must decide.
pub(crate) fn parse(text: &str) -> Option<Node> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new(); // (collection, pending map key)
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut nodes = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.ok()?;
        // Past serde-saphyr's limits (its budget decides and reports).
        nodes += 1;
        if stack.len() > MAX_DEPTH || nodes > MAX_NODES {
            return None;
        }
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Comment(..) => continue,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return None;
                }
                continue;
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                typed(&value, style == ScalarStyle::Plain, span.start.line().max(1), span.start.col() + 1)?
            }
            Event::SequenceStart(_, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                stack.push((collection_at(&span, Kind::Seq(Vec::new())), None));
                continue;
            }
            Event::MappingStart(_, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                stack.push((collection_at(&span, Kind::Map(Vec::new())), None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, pending) = stack.pop()?;
                if pending.is_some() {
                    return None;
                }
                node
            }
            _ => return None, // aliases, anchors
        };
        match stack.last_mut() {
            None => root = Some(node),
            Some((parent, pending)) => match &mut parent.kind {
                Kind::Seq(items) => items.push(node),
                Kind::Map(entries) => match pending.take() {
                    None => {
                        if matches!(&node.kind, Kind::Str(k) if k == "<<") {
                            return None; // a merge key
                        }
                        *pending = Some(node);
                    }
                    Some(key) => entries.push((key, node)),
                },
                _ => return None,
            },
        }
    }
    if !stack.is_empty() {
        return None;
    }
    Some(root.unwrap_or_else(Node::empty_document))
}

/// A collection that starts where `span` does.
fn collection_at(span: &Span, kind: Kind) -> Node {
    Node { line: span.start.line().max(1), column: span.start.col() + 1, kind }
}
