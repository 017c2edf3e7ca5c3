//! A large policy file cut into pieces that are read on their own, so that
//! a reload after an edit reads only the pieces that changed (as a
//! directory of files reads only the files that changed).
//!
//! A piece is a YAML document made of one section's header line (`rules:`,
//! `webgroups:`, `smartgroups:`) and a run of that section's items, or the
//! head of the file (every other setting, which must come first). Where
//! items end is decided by their own text (content-defined, as rsync
//! does), so inserting or deleting a rule changes one piece, not every
//! piece after it. The pieces of a file say the same as the file: each
//! section is given once, and a section's items are merged in order, as
//! the files of a directory are. A file whose layout is anything else is
//! not cut (it is read whole).

use std::hash::Hasher as _;

use super::bitset::FxHasher;

/// Files smaller than this are read whole.
pub(super) const CUT_FROM_BYTES: usize = 64 * 1024;

/// Sections whose items are cut into pieces, and whether their items are
/// sequence items (`- `) rather than mapping entries.
const SECTIONS: &[(&str, bool)] = &[("rules", true), ("webgroups", false), ("smartgroups", false)];

/// Items end a piece when their text hashes to 0 modulo this (about one
/// piece per 48 items) or when the piece holds `MAX_ITEMS`.
const CUT_EVERY: u64 = 48;
const MAX_ITEMS: usize = 160;

/// One piece of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece<'t> {
    /// The section's header line (`rules:`), or `None` for the head.
    pub header: Option<&'t str>,
    /// The line of the file the header is on.
    pub header_line: usize,
    /// The section's items (or the head), whole lines.
    pub body: &'t str,
    /// The line of the file `body` starts on.
    pub body_line: usize,
}

impl Piece<'_> {
    /// The piece as a YAML document ([`Piece::line_of`] places its lines
    /// in the file).
    pub fn document(&self) -> String {
        match self.header {
            Some(h) => format!("{h}\n{}", self.body),
            None => self.body.to_string(),
        }
    }

    /// The file's line for line `l` (1-based) of [`Piece::document`].
    pub fn line_of(&self, l: usize) -> usize {
        match self.header {
            Some(_) if l == 1 => self.header_line,
            Some(_) => l - 2 + self.body_line,
            None => l - 1 + self.body_line,
        }
    }
}

/// One line: where it starts in the text, its indentation and content.
struct Line<'t> {
    start: usize,
    indent: usize,
    body: &'t str,
}

/// The pieces of `text`, or `None` if it is not cut (too small, or laid
/// out in a way the pieces would not say the same as the whole).
pub(super) fn cut(text: &str, from_bytes: usize) -> Option<Vec<Piece<'_>>> {
    if text.len() < from_bytes || !text.ends_with('\n') {
        return None;
    }
    let lines = split_lines(text);
    let mut pieces = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut i = 0;
    let mut head_end: Option<usize> = None; // line index where the head ends
    while i < lines.len() {
        let l = &lines[i];
        if is_blank(l) {
            i += 1;
            continue;
        }
        // A top-level key: `key:` alone opens a section, `key: value` is a setting.
        if l.indent != 0 || l.body.starts_with(['-', '"', '\'', '?', '[', '{', '&', '!', '*', '%', '.']) {
            return None;
        }
        let key = top_key(l.body)?;
        if seen.contains(&key) {
            return None;
        }
        seen.push(key);
        let section = SECTIONS.iter().find(|(k, _)| *k == key).filter(|_| is_header(l.body, key));
        let Some(&(_, sequence)) = section else {
            if head_end.is_some() {
                return None; // a setting after a cut section
            }
            i += 1;
            while i < lines.len() && (is_blank(&lines[i]) || lines[i].indent > 0) {
                i += 1;
            }
            continue;
        };
        head_end.get_or_insert(i);
        i = section_pieces(text, &lines, i, sequence, &mut pieces)?;
    }
    let head_end = head_end?;
    let head_end_at = lines.get(head_end).map_or(text.len(), |l| l.start);
    if text[..head_end_at].bytes().any(|b| !b.is_ascii_whitespace()) {
        pieces.insert(0, Piece { header: None, header_line: 1, body: &text[..head_end_at], body_line: 1 });
    }
    (pieces.len() > 1).then_some(pieces)
}

/// Every line of `text` (which ends with a newline).
fn split_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::with_capacity(text.len() / 24);
    let mut start = 0;
    for raw in text.split_inclusive('\n') {
        let content = raw.trim_end_matches('\n');
        let body = content.trim_start_matches(' ');
        lines.push(Line { start, indent: content.len() - body.len(), body });
        start += raw.len();
    }
    lines
}

/// Whether a line holds nothing (blank, or only a comment).
fn is_blank(l: &Line) -> bool {
    l.body.is_empty() || l.body.starts_with('#')
}

/// Adds the pieces of the section whose header is `lines[header]` (runs of
/// its items, `sequence` items or mapping entries) to `pieces`; returns the
/// index of the first line after the section. `None`: the section is laid
/// out in a way that is not cut.
fn section_pieces<'t>(
    text: &'t str,
    lines: &[Line<'t>],
    header: usize,
    sequence: bool,
    pieces: &mut Vec<Piece<'t>>,
) -> Option<usize> {
    let (items, after) = section_items(lines, header + 1, sequence)?;
    let at = |line: usize| lines.get(line).map_or(text.len(), |l| l.start);
    let mut run_start = items[0].0;
    let mut count = 0;
    for (k, &(first, end)) in items.iter().enumerate() {
        count += 1;
        let mut h = FxHasher::default();
        h.write(&text.as_bytes()[at(first)..at(end)]);
        if h.finish() % CUT_EVERY == 0 || count >= MAX_ITEMS || k + 1 == items.len() {
            pieces.push(Piece {
                header: Some(lines[header].body),
                header_line: header + 1,
                body: &text[at(run_start)..at(end)],
                body_line: run_start + 1,
            });
            run_start = end;
            count = 0;
        }
    }
    Some(after)
}

/// The items of a section whose first line after the header is
/// `lines[from]`: `(first line, end line)` of each (markers at the
/// indentation of the first one), and the index of the first line after
/// the section.
fn section_items(lines: &[Line<'_>], from: usize, sequence: bool) -> Option<(Vec<(usize, usize)>, usize)> {
    let first = (from..lines.len()).find(|&j| !is_blank(&lines[j]))?;
    let indent = lines[first].indent;
    let is_marker = |l: &Line| {
        l.indent == indent
            && !is_blank(l)
            && if sequence { l.body == "-" || l.body.starts_with("- ") } else { !l.body.starts_with('-') }
    };
    if !is_marker(&lines[first]) || (indent == 0 && !sequence) {
        return None; // an empty section (what it means is the whole file's reading)
    }
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut j = first;
    while j < lines.len() {
        let l = &lines[j];
        if is_blank(l) || l.indent > indent {
            j += 1;
            continue;
        }
        if !is_marker(l) {
            if l.indent == 0 {
                break; // the next top-level key
            }
            return None;
        }
        if let Some(last) = items.last_mut() {
            *last = (last.0, j);
        }
        items.push((j, j));
        j += 1;
    }
    if let Some(last) = items.last_mut() {
        *last = (last.0, j);
    }
    Some((items, j))
}

/// The key of a top-level line `key:` or `key: value`, if it is a plain
/// lower-case name.
fn top_key(body: &str) -> Option<&str> {
    let (key, rest) = body.split_once(':')?;
    let simple = !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (simple && (rest.is_empty() || rest.starts_with(' '))).then_some(key)
}

/// Whether `body` is `key:` with nothing after it but a comment.
fn is_header(body: &str, key: &str) -> bool {
    let rest = body[key.len() + 1..].trim_start_matches(' ');
    rest.is_empty() || (rest.starts_with('#') && body.len() > key.len() + 1 && body.as_bytes()[key.len() + 1] == b' ')
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn cuts_sections_into_runs_of_whole_items() {
        let mut text = String::from("version: 1\nmode: enforce\ndns:\n  resolvers: [10.0.0.2]\n\nwebgroups:\n");
        for i in 0..300 {
            writeln!(text, "  g{i}:\n    domains: [a{i}.example.com]").expect("a String takes any text");
        }
        text.push_str("rules:\n# a comment\n");
        for i in 0..500 {
            writeln!(text, "- name: r{i}\n  priority: {i}\n\n  action: deny").expect("a String takes any text");
        }
        let pieces = cut(&text, 0).expect("cut");
        assert_eq!(pieces[0].header, None);
        assert!(pieces[0].body.starts_with("version: 1\n") && pieces[0].body.ends_with("\n\n"));
        let total: usize = pieces.iter().map(|p| p.body.len()).sum();
        let headers = "webgroups:\nrules:\n# a comment\n".len();
        assert_eq!(total + headers, text.len(), "every item is in exactly one piece");
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        for p in &pieces[1..] {
            let first = p.body.lines().next().expect("a line");
            assert!(first.starts_with("  g") || first.starts_with("- name: r"), "{first}");
            let doc = p.document();
            let nth = doc.lines().nth(1).expect("a line");
            assert_eq!(text.lines().nth(p.line_of(2) - 1), Some(nth), "line numbers map back");
        }
        // An inserted item changes the piece it lands in, not the others.
        let edited = text.replace("- name: r250\n", "- name: new\n  priority: 1\n  action: deny\n- name: r250\n");
        let after = cut(&edited, 0).expect("cut");
        let same = after.iter().filter(|p| pieces.iter().any(|q| q.body == p.body)).count();
        assert!(same + 2 >= after.len(), "{same} of {} pieces unchanged", after.len());
    }

    #[test]
    fn leaves_other_layouts_whole() {
        let big = "  - name: x\n    action: deny\n".repeat(10);
        for text in [
            format!("rules:\n{big}version: 1\n"),         // a setting after a section
            format!("rules:\n{big}rules:\n{big}"),        // a section twice
            "rules: [] # none\nversion: 1\n".to_string(), // nothing to cut
            format!("rules:\n{big} bad: indent\n"),       // a stray line
            format!("---\nrules:\n{big}"),                // a document marker
            format!("rules:\n{}", big.trim_end()),        // no final newline
        ] {
            assert_eq!(cut(&text, 0), None, "{text}");
        }
    }
}
