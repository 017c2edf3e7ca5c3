//! The second path of [`super::yaml::parse`] (after the block reader):
//! builds the [`Node`] tree
//! straight from the YAML parser's events (granit-parser, the parser under
//! serde-saphyr), about four times faster than going through serde with a
//! span on every value, which made YAML most of a reload.
//!
//! It handles what policies are made of: block and flow mappings and
//! sequences, plain and quoted scalars. Anything else (anchors, aliases,
//! tags, merge keys, several documents, numbers outside the plain decimal,
//! hex and `1.5` forms, syntax errors) returns `None`, and the caller takes
//! the serde-saphyr path, which has the final word on all of it. A test
//! holds the two paths to the same trees on every policy in the repository.

use granit_parser::{Event, Parser, ScalarStyle, Span};

use super::yaml::{Kind, MAX_DEPTH, Node};

/// The tree of `text`, or `None` where the full path must decide.
pub(crate) fn parse(text: &str) -> Option<Node> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new(); // (collection, pending map key)
    let mut root: Option<Node> = None;
    let mut documents = 0;
    let mut nodes = 0usize;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.ok()?;
        // Past the full path's limits (its budget decides and reports).
        nodes += 1;
        if stack.len() > MAX_DEPTH || nodes > super::yaml::MAX_NODES {
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
                stack.push((at(&span, Kind::Seq(Vec::new())), None));
                continue;
            }
            Event::MappingStart(_, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                stack.push((at(&span, Kind::Map(Vec::new())), None));
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
    Some(root.unwrap_or(Node { line: 1, column: 1, kind: Kind::Null }))
}

fn at(span: &Span, kind: Kind) -> Node {
    Node { line: span.start.line().max(1), column: span.start.col() + 1, kind }
}

/// A scalar at `line`:`column`, typed as the YAML 1.2 core schema with
/// strict booleans types it (a quoted scalar is always a string); `None`
/// where only the full path can say which number it is.
pub(super) fn typed(value: &str, plain: bool, line: usize, column: usize) -> Option<Node> {
    if !plain {
        return Some(Node { line, column, kind: Kind::Str(value.to_string()) });
    }
    let kind = match value {
        "" | "~" | "null" | "Null" | "NULL" => Kind::Null,
        "true" | "True" | "TRUE" => Kind::Bool(true, value.to_string()),
        "false" | "False" | "FALSE" => Kind::Bool(false, value.to_string()),
        v if is_decimal(v) => Kind::Int(v.parse().ok()?, v.to_string()),
        v if v.len() > 2 && v.starts_with("0x") && v[2..].bytes().all(|b| b.is_ascii_hexdigit()) => {
            Kind::Int(i128::from_str_radix(&v[2..], 16).ok()?, v.to_string())
        }
        v if is_simple_float(v) => Kind::Float(v.parse().ok()?, v.to_string()),
        v if may_be_number(v) => return None,
        v => Kind::Str(v.to_string()),
    };
    Some(Node { line, column, kind })
}

/// `0`, `443`, `-12`: no leading zeros, at most 30 digits.
fn is_decimal(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty()
        && digits.len() <= 30
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// `1.5`, `-0.25`.
fn is_simple_float(v: &str) -> bool {
    let body = v.strip_prefix('-').unwrap_or(v);
    match body.split_once('.') {
        Some((int, frac)) => {
            !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && (int == "0" || !int.starts_with('0'))
        }
        None => false,
    }
}

/// Whether some YAML reading could take `v` as a number (or infinity, or
/// not-a-number) that the forms above do not cover: the full path decides.
/// Text that no reading takes as a number (an address, `8000-8100`) stays
/// on the fast path.
fn may_be_number(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    if [".inf", ".nan", "inf", "nan", "infinity"].contains(&body) || v.starts_with('+') {
        return true;
    }
    let Some(first) = body.bytes().next() else { return false };
    if !(first.is_ascii_digit() || first == b'.') {
        return false;
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')) {
        return false; // `10.0.0.0/8`, `fd00::1`
    }
    if body.matches('.').count() > 1 {
        return false; // `10.0.0.1`
    }
    // A sign inside a number only follows an exponent's `e`.
    let bytes = body.as_bytes();
    let stray_sign =
        bytes.iter().enumerate().any(|(i, b)| matches!(b, b'+' | b'-') && (i == 0 || !matches!(bytes[i - 1], b'e')));
    !stray_sign
}

#[cfg(test)]
mod tests {
    /// The fast path, where it answers, gives the full path's tree: on every
    /// policy file of the repository (examples and the invalid corpus) and
    /// on synthetic packs, and on scalars chosen to be awkward.
    #[test]
    fn agrees_with_the_full_path() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut texts: Vec<(String, String)> = Vec::new();
        for dir in ["policies", "tests/policy-corpus", "tests/policy-corpus/invalid", "tests/policy-corpus/valid"] {
            for e in std::fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    texts.push((e.path().display().to_string(), t));
                }
            }
        }
        let pack = crate::synth::with_webgroups(crate::synth::realistic_pack(300, 5), 300, 5);
        texts.push(("synth".into(), crate::pack_yaml::to_yaml(&pack)));
        let awkward = r#"a: [0, 00, 007, -0, 1.0, 01.5, .5, 1e3, 1e-3, 1_000, 0o17, 0b11, 0x1F, +1, -1, .inf, -.Inf, .NaN,                        8000-8100, "443", '1', 10.0.0.1, 10.0.0.0/8, "fd00::/64", yes, no, on, off, True, FALSE, ~, null,                        12abc, 1.2.3, -, '', x, 2001:db8::1]
b:
c: |
  text
"#;
        texts.push(("awkward".into(), awkward.into()));
        let plain = "a: [0, -12, 443, 1.5, -0.25, 0x1F, 8000-8100, \"443\", '1', 10.0.0.1, 10.0.0.0/8, fd00::/64, yes, no,\n  \
                     on, off, True, FALSE, ~, null, Null, '', x, \"2001:db8::1\", api.example.com, \"*.a.b\"]\nb:\nc: |\n  t\n";
        assert!(super::parse(plain).is_some(), "the fast path answers for plain policy text");
        texts.push(("plain".into(), plain.into()));
        let mut fast = 0;
        for (name, text) in &texts {
            let full = super::super::yaml::parse_full(text);
            if let Some(tree) = super::parse(text) {
                fast += 1;
                assert_eq!(Ok(tree), full, "{name}");
            }
        }
        assert!(fast * 2 > texts.len(), "the fast path answers for most files: {fast} of {}", texts.len());
    }
}
