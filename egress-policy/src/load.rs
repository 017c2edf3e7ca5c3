//! Loading a pack from a file, a directory of files, or in-memory sources,
//! through a [`ParseCache`] that keeps what the last load parsed.

use std::path::Path;

use super::bitset::FastMap;
use super::error::{PolicyError, PolicyErrors};
use super::fields::ErrorSink;
use super::load_lists::ListSource;
use super::merge::merge;
use super::model::{Location, Pack};
use super::yaml::{Kind, Node};
use super::{chunks, load_lists, parse, yaml};

/// Loads, merges and validates the pack at `path`: one YAML file, or a
/// directory whose `*.yaml` / `*.yml` files are read in file-name order.
///
/// In a directory, hidden entries (leading `.`, which includes the `..data`
/// of a Kubernetes `ConfigMap` volume) and editor files (`*.swp`, `*~`,
/// `#…#`) are ignored; symlinks are followed, so a `ConfigMap`'s top-level
/// links into `..data/` are read. A directory without any policy file is an
/// error. Parses everything afresh: a caller that loads again and again
/// keeps a [`ParseCache`].
pub fn load(path: &Path) -> Result<Pack, PolicyErrors> {
    load_hashed(path).map(|(pack, _)| pack)
}

/// [`load`], with the hash of what was read (see [`ParseCache::load_hashed`]).
pub fn load_hashed(path: &Path) -> Result<(Pack, u64), PolicyErrors> {
    ParseCache::new().load_hashed(path)
}

/// Parses, merges and validates a pack from `(display name, text)` pairs
/// (see [`ParseCache::load_sources`]), parsing everything afresh.
pub fn load_sources(files: &[(String, String)]) -> Result<Pack, PolicyErrors> {
    ParseCache::new().load_sources(files)
}

/// What the last load parsed, so that the next one parses only what
/// changed: files whose text is unchanged are taken as they were, and of a
/// large file (cut into pieces, see `chunks.rs`) only the pieces whose text
/// changed are parsed again. An edit costs the parse of what was edited,
/// not the whole pack's.
///
/// Each load keeps only what it used. What the previous load held and the
/// new one no longer needs is not freed during the load: it waits in the
/// cache until the owner takes it with [`ParseCache::take_retired`] and
/// drops it where freeing costs nothing that matters (a thread of its own).
#[derive(Default)]
pub struct ParseCache {
    current: Parsed,
    retired: Vec<Parsed>,
}

/// What a [`ParseCache`] no longer needs, to be dropped by its owner
/// wherever it likes.
#[derive(Default)]
pub struct Retired(Vec<Parsed>);

impl Retired {
    /// Whether there is nothing to free.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Parsed::is_empty)
    }
}

impl ParseCache {
    /// An empty cache.
    pub const fn new() -> Self {
        ParseCache { current: Parsed::new(), retired: Vec::new() }
    }

    /// [`load`], reusing what this cache holds; returns the pack and a 64-bit
    /// hash of the files' names and texts in reading order (the pack hash
    /// `egress-agent status` shows: it tells packs apart, it is not a digest
    /// to trust against tampering).
    pub fn load_hashed(&mut self, path: &Path) -> Result<(Pack, u64), PolicyErrors> {
        let (sources, mut errors) = read_sources(path)?;
        let policy_bytes: u64 = sources.iter().map(|(_, text)| text.len() as u64).sum();
        let lists = (ListSource::Disk, MAX_PACK_BYTES.saturating_sub(policy_bytes));
        match self.load_cut(&sources, chunks::CUT_FROM_BYTES, lists) {
            Ok(pack) if errors.is_empty() => {
                let texts = sources.iter().flat_map(|(name, text)| [name.as_str(), text.as_str()]);
                Ok((pack, hash_texts(texts.chain(load_lists::texts(&self.current.lists)))))
            }
            Ok(_) => Err(PolicyErrors(errors)),
            Err(PolicyErrors(more)) => {
                errors.extend(more);
                Err(PolicyErrors(errors))
            }
        }
    }

    /// Parses, merges and validates a pack from `(display name, text)`
    /// pairs, in the given order (as [`load`] does for a directory's files),
    /// reusing what this cache holds. All errors of all files are reported;
    /// a YAML syntax error stops only its own file. Nothing is read from
    /// disk: a group that names a list file is an error.
    pub fn load_sources(&mut self, files: &[(String, String)]) -> Result<Pack, PolicyErrors> {
        self.load_cut(files, chunks::CUT_FROM_BYTES, (ListSource::Nowhere, 0))
    }

    /// What earlier loads held and the last one no longer needs.
    pub fn take_retired(&mut self) -> Retired {
        Retired(std::mem::take(&mut self.retired))
    }

    /// [`ParseCache::load_sources`], cutting files of `cut_from` bytes or
    /// more into pieces, with list files from `lists` (and at most that
    /// many bytes of them).
    pub(super) fn load_cut(
        &mut self,
        files: &[(String, String)],
        cut_from: usize,
        (lists, budget): (ListSource, u64),
    ) -> Result<Pack, PolicyErrors> {
        let mut old_lists = std::mem::take(&mut self.current.lists);
        let (mut fragments, mut errors) = self.parse_files(files, cut_from);
        self.current.lists = load_lists::add_lists(&mut fragments, lists, (&mut old_lists, budget), &mut errors);
        // The lists this load no longer uses are retired with the rest.
        if !old_lists.is_empty() {
            self.retired.push(Parsed { lists: old_lists, ..Parsed::default() });
        }
        let Some((first, _)) = files.first() else {
            return Err(one(PolicyError::whole_file("<policy>", "no policy file: expected at least one")));
        };
        let pack = merge(first, fragments, &mut errors);
        // Merge adds its errors after the files'; present them in file order.
        let order = |file: &str| files.iter().position(|(n, _)| n == file).unwrap_or(usize::MAX);
        // List files come after the policy files, each file's errors together.
        errors.sort_by(|a, b| {
            let key = |e: &PolicyError| {
                (order(&e.location.file[..]), e.location.file.clone(), e.location.line, e.location.column)
            };
            key(a).cmp(&key(b))
        });
        match pack {
            Some(pack) if errors.is_empty() => Ok(pack),
            _ => Err(PolicyErrors(errors)),
        }
    }

    /// Every file parsed (from the cache where its text is unchanged): what
    /// each contributes, and their errors. The cache then holds exactly
    /// what was used; the rest is retired.
    fn parse_files(&mut self, files: &[(String, String)], cut_from: usize) -> (Vec<parse::Fragment>, Vec<PolicyError>) {
        let mut errors = Vec::new();
        let mut fragments = Vec::new();
        let mut kept = Parsed::default();
        let old = &mut self.current;
        for (name, text) in files {
            if let Some((pieces, their_errors)) = read_pieces(name, text, cut_from, &mut old.pieces, &mut kept.pieces) {
                fragments.extend(pieces);
                errors.extend(their_errors);
                continue;
            }
            // A parse of another text stays in `old`, to be retired with it.
            let reusable = old.files.get(name).is_some_and(|hit| hit.text == *text);
            let parsed = reusable.then(|| old.files.remove(name)).flatten().unwrap_or_else(|| parse_file(name, text));
            fragments.push(parsed.fragment.clone());
            errors.extend(parsed.errors.iter().cloned());
            kept.files.insert(name.clone(), parsed);
        }
        let unused = std::mem::replace(&mut self.current, kept);
        if !unused.is_empty() {
            self.retired.push(unused);
        }
        (fragments, errors)
    }
}

/// `(display name, text)` of policy files, in reading order.
type Sources = Vec<(String, String)>;

/// The `(display name, text)` of the policy file at `path`, or of the
/// policy files of the directory at `path` in name order, and the errors
/// of files that could not be read. `Err`: nothing to load at all.
fn read_sources(path: &Path) -> Result<(Sources, Vec<PolicyError>), PolicyErrors> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| one(PolicyError::whole_file(&shown, format!("cannot read: {e}"))))?;
    if !meta.is_dir() {
        let text = read(path, &shown).map_err(one)?;
        return Ok((vec![(shown, text)], Vec::new()));
    }
    let (names, mut errors) = policy_file_names(path, &shown)?;
    if names.is_empty() {
        errors.push(PolicyError::whole_file(
            &shown,
            "no policy file: expected `*.yaml` or `*.yml` files in the directory",
        ));
        return Err(PolicyErrors(errors));
    }
    // The pack's size from the files' sizes, before any is read (each file
    // is held to its own limit while it is read).
    let total: u64 = names.iter().filter_map(|n| std::fs::metadata(path.join(n)).ok()).map(|m| m.len()).sum();
    if total > MAX_PACK_BYTES {
        let msg = format!(
            "its policy files come to {} MiB together; a pack may be at most {} MiB",
            total >> 20,
            MAX_PACK_BYTES >> 20
        );
        return Err(one(PolicyError::whole_file(&shown, msg)));
    }
    let mut sources = Vec::new();
    for name in names {
        let file = path.join(&name);
        let file_shown = file.display().to_string();
        match read(&file, &file_shown) {
            Ok(text) => sources.push((file_shown, text)),
            Err(e) => errors.push(e),
        }
    }
    Ok((sources, errors))
}

/// The names of the policy files in directory `dir` (shown as `shown`),
/// sorted, and errors met while listing it.
fn policy_file_names(dir: &Path, shown: &str) -> Result<(Vec<String>, Vec<PolicyError>), PolicyErrors> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| one(PolicyError::whole_file(shown, format!("cannot read directory: {e}"))))?;
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                errors.push(PolicyError::whole_file(shown, format!("cannot read directory: {e}")));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        // `metadata` follows symlinks: a dangling link or a directory is skipped.
        if is_policy_file_name(&name) && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(name);
        }
    }
    names.sort();
    Ok((names, errors))
}

/// A 64-bit hash of `texts` in order, each ended by a 0 byte (so that
/// where one ends is part of what is hashed).
fn hash_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    use std::hash::Hasher as _;
    let mut h = super::bitset::FxHasher::default();
    for text in texts {
        h.write(text.as_bytes());
        h.write_u8(0);
    }
    h.finish()
}

/// Whether a directory entry named `name` is read as a policy file.
pub fn is_policy_file_name(name: &str) -> bool {
    let extension_is = |ext: &str| Path::new(name).extension().is_some_and(|e| e.eq_ignore_ascii_case(ext));
    let editor = name.ends_with('~') || extension_is("swp") || (name.starts_with('#') && name.ends_with('#'));
    !name.starts_with('.') && !editor && (extension_is("yaml") || extension_is("yml"))
}

/// One file's text, parsed: what it contributes and what is wrong with it.
struct ParsedFile {
    text: String,
    fragment: parse::Fragment,
    errors: Vec<PolicyError>,
}

/// A piece of a large file, parsed (see [`chunks`]): what it contributes,
/// what is wrong with it, and the file's line its items started on.
struct ParsedPiece {
    name: String,
    header: Option<String>,
    body: String,
    fragment: parse::Fragment,
    errors: Vec<PolicyError>,
    body_line: usize,
}

/// What one load parsed: whole files by name, pieces of large files by a
/// hash of file name and text (the text itself is compared on a hit), and
/// list files by path.
#[derive(Default)]
struct Parsed {
    files: std::collections::BTreeMap<String, ParsedFile>,
    pieces: FastMap<u64, Vec<ParsedPiece>>,
    lists: load_lists::Lists,
}

impl Parsed {
    const fn new() -> Self {
        Parsed {
            files: std::collections::BTreeMap::new(),
            pieces: FastMap::with_hasher(std::hash::BuildHasherDefault::new()),
            lists: load_lists::Lists::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.pieces.values().all(Vec::is_empty) && self.lists.is_empty()
    }
}

/// The hash a piece is cached under.
fn piece_hash(name: &str, piece: &chunks::Piece<'_>) -> u64 {
    hash_texts([name, piece.header.unwrap_or(""), piece.body])
}

/// The pieces of `text` parsed, from `old` where their text is unchanged
/// (moved up or down the file: locations shifted), each kept in `kept`,
/// in file order. `None`: the file is read whole (not cut, or a piece the
/// block reader does not answer for, where only the whole file's reading
/// can say what is wrong and where).
fn read_pieces(
    name: &str,
    text: &str,
    cut_from: usize,
    old: &mut FastMap<u64, Vec<ParsedPiece>>,
    kept: &mut FastMap<u64, Vec<ParsedPiece>>,
) -> Option<(Vec<parse::Fragment>, Vec<PolicyError>)> {
    let pieces = chunks::cut(text, cut_from)?;
    let mut fragments = Vec::with_capacity(pieces.len());
    let mut errors = Vec::new();
    for piece in &pieces {
        let hash = piece_hash(name, piece);
        let same = |p: &ParsedPiece| p.name == name && p.header.as_deref() == piece.header && p.body == piece.body;
        let hit = old.get_mut(&hash).and_then(|list| list.iter().position(same).map(|i| list.swap_remove(i)));
        let parsed = match hit {
            Some(hit) if hit.body_line == piece.body_line => hit,
            Some(mut hit) if hit.errors.is_empty() => {
                hit.fragment.shift_lines(piece.body_line as isize - hit.body_line as isize);
                hit.body_line = piece.body_line;
                hit
            }
            stale => {
                // A hit whose errors sit at other lines is read again; it
                // goes back to `old`, to be retired with it.
                if let Some(stale) = stale {
                    old.entry(hash).or_default().push(stale);
                }
                parse_piece(name, piece)?
            }
        };
        fragments.push(parsed.fragment.clone());
        errors.extend(parsed.errors.iter().cloned());
        kept.entry(hash).or_default().push(parsed);
    }
    Some((fragments, errors))
}

fn parse_piece(name: &str, piece: &chunks::Piece<'_>) -> Option<ParsedPiece> {
    let mut root = yaml::parse_block_style(&piece.document())?;
    relocate(&mut root, &|l| piece.line_of(l));
    let mut sink = ErrorSink::new(name);
    let fragment = parse::fragment(&mut sink, &root);
    Some(ParsedPiece {
        name: name.to_string(),
        header: piece.header.map(str::to_string),
        body: piece.body.to_string(),
        fragment,
        errors: sink.errors,
        body_line: piece.body_line,
    })
}

/// Gives every node of `node` its line in the file.
fn relocate(node: &mut Node, line_of: &impl Fn(usize) -> usize) {
    node.line = line_of(node.line);
    match &mut node.kind {
        Kind::Seq(items) => items.iter_mut().for_each(|n| relocate(n, line_of)),
        Kind::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            relocate(k, line_of);
            relocate(v, line_of);
        }),
        _ => {}
    }
}

fn parse_file(name: &str, text: &str) -> ParsedFile {
    let mut sink = ErrorSink::new(name);
    let fragment = match yaml::parse(text) {
        Ok(root) => parse::fragment(&mut sink, &root),
        Err(e) => {
            let at = Location { file: name.into(), line: e.line, column: e.column };
            sink.errors.push(PolicyError::new(at, format!("invalid YAML: {}", e.message)));
            parse::Fragment { broken: true, ..Default::default() }
        }
    };
    ParsedFile { text: text.to_string(), fragment, errors: sink.errors }
}

/// `open(2)` flags (Linux): do not wait for a writer or a device; do not
/// take a terminal as the controlling one.
const O_NONBLOCK: i32 = 0o4000;
const O_NOCTTY: i32 = 0o400;

/// Largest policy file read (bigger ones are refused before they are read).
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Largest pack: every file of a directory together.
pub const MAX_PACK_BYTES: u64 = 256 << 20;

/// The text of the policy or list file at `path`, held to
/// [`MAX_FILE_BYTES`] as the loader holds it.
///
/// # Errors
/// The file cannot be read, is too large or is not UTF-8.
pub fn read_policy_text(path: &Path) -> Result<String, PolicyError> {
    read(path, &path.display().to_string())
}

pub(super) fn read(path: &Path, shown: &str) -> Result<String, PolicyError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let cannot = |e: std::io::Error| PolicyError::whole_file(shown, format!("cannot read: {e}"));
    // Opened without blocking (a FIFO or a terminal put in its place would
    // block the load) and read only if it is a plain file.
    let file = std::fs::File::options().read(true).custom_flags(O_NONBLOCK | O_NOCTTY).open(path).map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err(PolicyError::whole_file(shown, "cannot read: not a regular file"));
    }
    let too_big = || {
        PolicyError::whole_file(
            shown,
            format!("the file is larger than {} MiB, the most a policy file may be", MAX_FILE_BYTES >> 20),
        )
    };
    if file.metadata().map_err(cannot)?.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    // Read at most one byte past the limit: a file that grows while it is
    // read (or a device) cannot make the agent read without end.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| PolicyError::whole_file(shown, "not UTF-8 text: expected a YAML file"))
}

fn one(e: PolicyError) -> PolicyErrors {
    PolicyErrors(vec![e])
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
