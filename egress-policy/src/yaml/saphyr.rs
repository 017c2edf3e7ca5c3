//! The reader with the final word: serde-saphyr turns the text into the
//! tree (every node carrying its line and column), for any YAML the faster
//! readers leave to it, and reports syntax errors with their positions.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::node::{Kind, MAX_NODES, Node, SyntaxError};

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

/// The tree of `text` as serde-saphyr reads it: everything YAML allows,
/// and the error messages.
pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        strict_booleans: true,
        with_snippet: false,
        // The defaults (250,000 nodes) stop short of a 10,000-rule pack.
        budget: serde_saphyr::budget! { max_nodes: MAX_NODES, max_events: 2 * MAX_NODES },
    };
    match serde_saphyr::from_str_with_options::<Option<Spanned<RawKind>>>(text, options) {
        Ok(Some(root)) => Ok(convert(root, text)),
        Ok(None) => Ok(Node::empty_document()),
        Err(e) => {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line() as usize, l.column() as usize));
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
