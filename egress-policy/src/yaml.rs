//! YAML text to a generic tree of nodes that remember where they were written.
//!
//! The policy is read in two steps: serde-saphyr turns the text into [`Node`]s
//! (every node carrying its line and column), and `parse` walks the tree by
//! hand. Walking by hand lets us report *every* unknown field and bad value of
//! a file, each at its own place, instead of stopping at the first one.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// One YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub line: usize,
    pub column: usize,
    pub kind: Kind,
}

/// What a [`Node`] holds. Scalars keep the type the YAML core schema gives
/// them; `text` of a non-string scalar is its source spelling when known.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool, String),
    Int(i128, String),
    Float(f64, String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// The tree as serde-saphyr hands it over, before spans are flattened.
enum RawKind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawKind>>),
    Map(Vec<(Spanned<RawKind>, Spanned<RawKind>)>),
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKind, E> {
        Ok(RawKind::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKind, E> {
        i128::try_from(v).map(RawKind::Int).map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawKind>>()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawKind>>()? {
            let value = map.next_value::<Spanned<RawKind>>()?;
            entries.push((key, value));
        }
        Ok(RawKind::Map(entries))
    }
}

/// A YAML syntax error: where, and what the parser said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Most YAML nodes one policy file may hold: room for well over 100,000
/// rules, and still a bound on what a hostile file can make us allocate.
pub(crate) const MAX_NODES: usize = 5_000_000;

/// Deepest nesting the fast readers build (serde-saphyr's default limit;
/// deeper text goes to serde-saphyr, which decides).
pub(crate) const MAX_DEPTH: usize = 64;

/// Parses one YAML document. An empty document (or one with only comments)
/// is `Kind::Null`. Three readers, fastest first, each answering only for
/// text it is sure of: the block reader (plain block-style policies), the
/// event reader (any YAML the policy format uses), then serde-saphyr.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    if let Some(tree) = super::yaml_block::parse(text) {
        return Ok(tree);
    }
    match super::yaml_fast::parse(text) {
        Some(tree) => Ok(tree),
        None => parse_full(text),
    }
}

/// [`parse`] through serde-saphyr alone: everything YAML allows, and the
/// error messages.
pub(crate) fn parse_full(text: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        with_snippet: false,
        // The defaults (250,000 nodes) stop short of a 10,000-rule pack.
        budget: serde_saphyr::budget! { max_nodes: MAX_NODES, max_events: 2 * MAX_NODES },
    };
    match serde_saphyr::from_str_with_options::<Option<Spanned<RawKind>>>(text, options) {
        Ok(Some(root)) => Ok(convert(root, text)),
        Ok(None) => Ok(Node { line: 1, column: 1, kind: Kind::Null }),
        Err(e) => {
            let (line, column) = e.location().map(|l| (l.line() as usize, l.column() as usize)).unwrap_or((1, 1));
            let message =
                serde_saphyr::MessageFormatter::format_message(&serde_saphyr::DefaultMessageFormatter, &e).into_owned();
            Err(SyntaxError { line: line.max(1), column: column.max(1), message })
        }
    }
}

fn source_text(s: &Spanned<RawKind>, text: &str) -> String {
    let span = s.defined.span();
    if let (Some(start), Some(len)) = (span.byte_offset(), span.byte_len()) {
        let (start, len) = (start as usize, len as usize);
        if let Some(raw) = text.get(start..start.saturating_add(len)) {
            return raw.to_owned();
        }
    }
    String::new()
}

fn convert(s: Spanned<RawKind>, text: &str) -> Node {
    let line = s.referenced.line() as usize;
    let column = s.referenced.column() as usize;
    let raw = match &s.value {
        RawKind::Bool(..) | RawKind::Int(..) | RawKind::Float(..) => source_text(&s, text),
        _ => String::new(),
    };
    let kind = match s.value {
        RawKind::Null => Kind::Null,
        RawKind::Bool(b) => Kind::Bool(b, raw),
        RawKind::Int(i) => Kind::Int(i, raw),
        RawKind::Float(f) => Kind::Float(f, raw),
        RawKind::Str(v) => Kind::Str(v),
        RawKind::Seq(items) => Kind::Seq(items.into_iter().map(|i| convert(i, text)).collect()),
        RawKind::Map(entries) => {
            Kind::Map(entries.into_iter().map(|(k, v)| (convert(k, text), convert(v, text))).collect())
        }
    };
    Node { line: line.max(1), column: column.max(1), kind }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &[(Node, Node)] {
        match &n.kind {
            Kind::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn scalars_keep_types_text_and_positions() {
        let root = parse("a: 1\nb: off\nc: [10.10.1.0/24, \"fd00::/64\", 0x10, 1.5]\n").expect("parses");
        let m = map(&root);
        assert_eq!((m[0].1.line, m[0].1.column), (1, 4));
        assert_eq!(m[0].1.kind, Kind::Int(1, "1".into()));
        // Strict YAML 1.2 booleans: `off` stays a string.
        assert_eq!(m[1].1.kind, Kind::Str("off".into()));
        let Kind::Seq(items) = &m[2].1.kind else { panic!("not a list") };
        assert_eq!(items[0].kind, Kind::Str("10.10.1.0/24".into()));
        assert_eq!(items[1].kind, Kind::Str("fd00::/64".into()));
        assert_eq!((items[1].line, items[1].column), (3, 19));
        assert_eq!(items[2].kind, Kind::Int(16, "0x10".into()));
        assert_eq!(items[3].kind, Kind::Float(1.5, "1.5".into()));
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_caller() {
        let root = parse("a: 1\na: 2\n").expect("parses");
        assert_eq!(map(&root).len(), 2);
    }

    #[test]
    fn empty_documents_are_null() {
        assert_eq!(parse("").expect("parses").kind, Kind::Null);
        assert_eq!(parse("# comment only\n").expect("parses").kind, Kind::Null);
    }

    #[test]
    fn aliases_take_the_anchored_text() {
        let root = parse("x: &a 0x1\ny: *a\n").expect("parses");
        assert_eq!(map(&root)[1].1.kind, Kind::Int(1, "0x1".into()));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("a: [1, 2\n").expect_err("unclosed");
        assert_eq!((e.line, e.column), (1, 4));
        assert!(e.message.contains("bracket"), "{}", e.message);
    }
}
