//! The block reader: a hand-written reader for the plain block style
//! policies are written in, reading one line at a time without a general
//! YAML parser's event stream.
//!
//! It reads block mappings and sequences (including a mapping that starts
//! on a `- ` line and a sequence written at its key's indentation),
//! one-line flow collections (`[a, b]`, `{ k: v }`), plain scalars that
//! fit on their line, quoted scalars without escapes, comments and a
//! leading `---`. Anything else (tabs, CRLF, escapes, anchors, aliases,
//! tags, block scalars, multi-line scalars and flow collections, explicit
//! keys, directives, several documents, text outside ASCII except in
//! whole-line comments, and every syntax error) returns `None`: the
//! dispatcher asks the other readers, and serde-saphyr has the final word.
//! Tests hold this reader to serde-saphyr's tree on every policy of the
//! repository and on thousands of mutated ones.

use super::node::{Kind, MAX_DEPTH, MAX_NODES, Node};
use super::scalar::typed;

/// One line that holds something: its number, indentation and text after
/// the indentation (comment-only and blank lines are dropped).
#[derive(Clone, Copy)]
struct Line<'t> {
    no: usize,
    indent: usize,
    text: &'t str,
}

struct Reader<'t> {
    lines: Vec<Line<'t>>,
    next: usize,
    nodes: usize,
    depth: usize,
}

/// The tree of `text`, or `None` where the other readers must decide.
pub(crate) fn parse(text: &str) -> Option<Node> {
    let mut r = Reader { lines: lines(text)?, next: 0, nodes: 0, depth: 0 };
    let Some(first) = r.lines.first().copied() else {
        return Some(Node::empty_document());
    };
    let root = r.block(first)?;
    if r.next != r.lines.len() {
        return None;
    }
    // A null document is null at its start, whatever spells it.
    Some(match root.kind {
        Kind::Null => Node::empty_document(),
        _ => root,
    })
}

/// The lines that hold something, or `None` if the text has what this
/// reader leaves to the other readers at line level.
fn lines(text: &str) -> Option<Vec<Line<'_>>> {
    let mut out = Vec::with_capacity(text.len() / 24);
    let mut started = false;
    for (i, raw) in text.split('\n').enumerate() {
        let body = raw.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            if raw.contains(['\t', '\r']) || raw.starts_with('\u{feff}') {
                return None;
            }
            continue;
        }
        if !raw.is_ascii() || raw.contains(['\t', '\r']) {
            return None;
        }
        let indent = raw.len() - body.len();
        let text = body.trim_end_matches(' ');
        if indent == 0 && (text.starts_with("---") || text.starts_with("...") || text.starts_with('%')) {
            // One leading `---` alone on its line opens the only document.
            if text == "---" && !started && out.is_empty() {
                started = true;
                continue;
            }
            return None;
        }
        out.push(Line { no: i + 1, indent, text });
    }
    if started && out.is_empty() {
        return None; // `---` and nothing: the other readers say what that is
    }
    Some(out)
}

/// What an inline piece of a line starts with.
enum Start {
    /// `- ` or a lone `-`: a block sequence item.
    Item,
    /// `key:` followed by a space or the end: a block mapping entry.
    Entry,
    /// Anything else: a scalar or a flow collection.
    Value,
}

fn start_of(s: &str) -> Start {
    if s == "-" || s.starts_with("- ") {
        return Start::Item;
    }
    if s.starts_with(['[', '{']) {
        return Start::Value; // a flow collection, whatever it holds
    }
    match key_end(s) {
        Some(_) => Start::Entry,
        None => Start::Value,
    }
}

/// Where the key of a block mapping entry `s` ends (the `:`), if `s` is one.
fn key_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if let Some(&q @ (b'"' | b'\'')) = b.first() {
        let close = quoted_end(s, q)?;
        return (b.get(close) == Some(&b':') && matches!(b.get(close + 1), None | Some(b' '))).then_some(close);
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b':' if matches!(b.get(i + 1), None | Some(b' ')) => return Some(i),
            b'#' if i > 0 && b[i - 1] == b' ' => return None,
            _ => i += 1,
        }
    }
    None
}

/// The index just past the closing quote of the quoted scalar opening `s`.
fn quoted_end(s: &str, q: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        if b[i] == q {
            if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Whether what follows a value on its line is nothing or a comment.
fn only_comment(rest: &str) -> bool {
    let trimmed = rest.trim_start_matches(' ');
    trimmed.is_empty() || (trimmed.starts_with('#') && trimmed.len() < rest.len())
}

impl<'t> Reader<'t> {
    fn count(&mut self) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= MAX_NODES).then_some(())
    }

    fn peek(&self) -> Option<Line<'t>> {
        self.lines.get(self.next).copied()
    }

    /// The block node that starts at the beginning of `line` (the next line).
    fn block(&mut self, line: Line<'t>) -> Option<Node> {
        match start_of(line.text) {
            Start::Item => self.deeper(|r| r.sequence(line.indent, false)),
            Start::Entry => self.deeper(|r| r.mapping(line, line.indent)),
            Start::Value => {
                let node = self.inline(line, line.indent)?;
                self.next += 1;
                Some(node)
            }
        }
    }

    /// `read` one level deeper, or `None` past [`MAX_DEPTH`] (the other
    /// readers decide there).
    fn deeper<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let out = read(self);
        self.depth -= 1;
        out
    }

    /// A block sequence whose `-` are at column `indent`, from the next line.
    /// It starts at its first `-`, or, `indentless` (written at its key's
    /// indentation), at its first item's text.
    fn sequence(&mut self, indent: usize, indentless: bool) -> Option<Node> {
        let first = self.peek()?;
        self.count()?;
        let mut column = indent + 1;
        if indentless {
            let text = first.text[1..].trim_start_matches(' ');
            if text.is_empty() || text.starts_with('#') {
                return None; // the item's text is on later lines
            }
            column = first.indent + first.text.len() - text.len() + 1;
        }
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !matches!(start_of(line.text), Start::Item) {
                break;
            }
            let after = &line.text[1..];
            let pad = after.len() - after.trim_start_matches(' ').len();
            let col = indent + 1 + pad;
            let rest = &line.text[1 + pad..];
            let item = if rest.is_empty() || rest.starts_with('#') {
                if !rest.is_empty() && pad == 0 {
                    return None; // `-#`
                }
                self.next += 1;
                match self.peek() {
                    Some(next) if next.indent > indent => self.block(next)?,
                    _ => return None, // an empty item: where its null sits is the parser's call
                }
            } else {
                match start_of(rest) {
                    Start::Item => return None, // `- - a`: left to the other readers
                    Start::Entry => self.deeper(|r| r.mapping(line, col))?,
                    Start::Value => {
                        let node = self.inline(line, col)?;
                        self.next += 1;
                        node
                    }
                }
            };
            items.push(item);
            self.ended_at(indent)?;
        }
        Some(Node { line: first.no, column, kind: Kind::Seq(items) })
    }

    /// A block mapping whose keys are at column `indent`; the first entry is
    /// on `first` at that column (which may follow a `- `).
    fn mapping(&mut self, first: Line<'t>, indent: usize) -> Option<Node> {
        self.count()?;
        let mut entries = Vec::new();
        let mut line = first;
        let mut col = indent;
        loop {
            let text = &line.text[col - line.indent..];
            let colon = key_end(text)?;
            let key = self.scalar_at(&text[..colon], line.no, col)?;
            if matches!(&key.kind, Kind::Str(k) if k == "<<") || matches!(key.kind, Kind::Null) {
                return None; // merge keys, empty keys
            }
            let rest = &text[colon + 1..];
            let value = if only_comment(rest) {
                self.next += 1;
                match self.peek() {
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && matches!(start_of(next.text), Start::Item) => {
                        self.deeper(|r| r.sequence(indent, true))?
                    }
                    _ => self.child_of(indent, line, col + colon)?,
                }
            } else {
                let pad = rest.len() - rest.trim_start_matches(' ').len();
                let vcol = col + colon + 1 + pad;
                if !matches!(start_of(&line.text[vcol - line.indent..]), Start::Value) {
                    return None; // `a: b: c`, `a: - b`
                }
                let node = self.inline(line, vcol)?;
                self.next += 1;
                node
            };
            entries.push((key, value));
            match self.peek() {
                Some(next) if next.indent == indent && matches!(start_of(next.text), Start::Entry) => {
                    line = next;
                    col = indent;
                }
                Some(next) if next.indent > indent => return None,
                _ => break,
            }
        }
        Some(Node { line: first.no, column: indent + 1, kind: Kind::Map(entries) })
    }

    /// The value of an entry with nothing after its `:` on `line`: the
    /// block on the next lines, indented past `indent`, or null (at `col`,
    /// the colon's).
    fn child_of(&mut self, indent: usize, line: Line<'t>, col: usize) -> Option<Node> {
        match self.peek() {
            Some(next) if next.indent > indent => self.block(next),
            _ => {
                self.count()?;
                Some(Node { line: line.no, column: col + 1, kind: Kind::Null })
            }
        }
    }

    /// After an item or entry: the next line must not be indented past the
    /// collection at `indent` (a continuation line, which is left to the
    /// other readers).
    fn ended_at(&self, indent: usize) -> Option<()> {
        match self.peek() {
            Some(next) if next.indent > indent => None,
            _ => Some(()),
        }
    }

    /// A scalar or flow collection at column `col` of `line` that must end
    /// the line (a comment may follow). Only a plain scalar reads otherwise
    /// than inside a flow collection.
    fn inline(&mut self, line: Line<'t>, col: usize) -> Option<Node> {
        let text = &line.text[col - line.indent..];
        let b = text.as_bytes();
        let (node, used) = match b.first()? {
            b'[' | b'{' | b'"' | b'\'' => self.flow_item(line, col)?,
            _ => {
                let end = text.find(" #").unwrap_or(text.len());
                let value = text[..end].trim_end_matches(' ');
                if !plain_block_ok(value) {
                    return None;
                }
                (self.scalar_at(value, line.no, col)?, end)
            }
        };
        only_comment(&text[used..]).then_some(node)
    }

    /// A flow collection opening at `col` of `line`, closed on that line:
    /// the node and the bytes it used from `col`.
    fn flow(&mut self, line: Line<'t>, col: usize) -> Option<(Node, usize)> {
        self.count()?;
        let text = &line.text[col - line.indent..];
        let b = text.as_bytes();
        let map = b[0] == b'{';
        let close = if map { b'}' } else { b']' };
        let mut items = Vec::new();
        let mut entries = Vec::new();
        let mut i = skip_spaces(b, 1);
        if b.get(i) != Some(&close) {
            loop {
                let (item, used) = self.flow_item(line, col + i)?;
                i = skip_spaces(b, i + used);
                if map {
                    if matches!(&item.kind, Kind::Str(k) if k == "<<")
                        || b.get(i) != Some(&b':')
                        || b.get(i + 1) != Some(&b' ')
                    {
                        return None; // merge keys, `{a}`, `{a:[]}`
                    }
                    i = skip_spaces(b, i + 1);
                    if matches!(b.get(i), None | Some(b',' | b'}')) {
                        return None; // `{a:}`: an empty value
                    }
                    let (value, used) = self.flow_item(line, col + i)?;
                    entries.push((item, value));
                    i = skip_spaces(b, i + used);
                } else {
                    items.push(item);
                }
                match b.get(i) {
                    Some(b',') => {
                        i = skip_spaces(b, i + 1);
                        if matches!(b.get(i), None | Some(b',' | b']' | b'}')) {
                            return None; // trailing or doubled commas
                        }
                    }
                    Some(&c) if c == close => break,
                    _ => return None,
                }
            }
        }
        let kind = if map { Kind::Map(entries) } else { Kind::Seq(items) };
        Some((Node { line: line.no, column: col + 1, kind }, i + 1))
    }

    /// One scalar or nested collection inside a flow collection.
    fn flow_item(&mut self, line: Line<'t>, col: usize) -> Option<(Node, usize)> {
        let text = &line.text[col - line.indent..];
        let b = text.as_bytes();
        match b.first()? {
            b'[' | b'{' => self.deeper(|r| r.flow(line, col)),
            q @ (b'"' | b'\'') => {
                let end = quoted_end(text, *q)?;
                Some((self.quoted(&text[..end], line.no, col)?, end))
            }
            _ => {
                let mut end = 0;
                while end < b.len() {
                    match b[end] {
                        b',' | b'[' | b']' | b'{' | b'}' => break,
                        b':' if matches!(b.get(end + 1), None | Some(b' ' | b',' | b'[' | b']' | b'{' | b'}')) => break,
                        b'#' if end > 0 && b[end - 1] == b' ' => return None,
                        _ => end += 1,
                    }
                }
                let value = text[..end].trim_end_matches(' ');
                if !plain_first_ok(value) {
                    return None;
                }
                Some((self.scalar_at(value, line.no, col)?, end))
            }
        }
    }

    /// A quoted scalar `q` (quotes included) without escapes.
    fn quoted(&mut self, q: &str, line: usize, col: usize) -> Option<Node> {
        self.count()?;
        let body = &q[1..q.len() - 1];
        let value = if q.starts_with('"') {
            if body.contains('\\') {
                return None;
            }
            body.to_string()
        } else {
            body.replace("''", "'")
        };
        Some(Node { line, column: col + 1, kind: Kind::Str(value) })
    }

    /// A plain scalar or a quoted key at `col` (0-based) of line `line`.
    fn scalar_at(&mut self, s: &str, line: usize, col: usize) -> Option<Node> {
        if s.starts_with(['"', '\'']) {
            return (quoted_end(s, s.as_bytes()[0]) == Some(s.len())).then(|| self.quoted(s, line, col))?;
        }
        if !plain_first_ok(s) || s.ends_with(' ') {
            return None;
        }
        self.count()?;
        typed(s, true, line, col + 1)
    }
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Whether a plain scalar may start the way `s` does (and is not empty):
/// no indicator first, and `-`, `?`, `:` only before a character that
/// cannot end it.
fn plain_first_ok(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        None
        | Some(
            b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\'' | b'"' | b'%' | b'@'
            | b'`',
        ) => false,
        Some(b'-' | b'?' | b':') => {
            matches!(b.get(1), Some(c) if !matches!(c, b' ' | b',' | b'[' | b']' | b'{' | b'}'))
        }
        Some(_) => true,
    }
}

/// Whether `s` is a plain scalar in block context as this reader takes
/// it: a safe first character and no `: ` inside (an error in YAML).
fn plain_block_ok(s: &str) -> bool {
    plain_first_ok(s) && !s.contains(": ") && !s.ends_with(':')
}
