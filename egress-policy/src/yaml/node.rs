//! The tree every YAML reader builds: nodes that remember where they were
//! written, and the limits every reader keeps to.

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

impl Node {
    /// The tree of an empty document (or one with only comments): null at
    /// the start of the text.
    pub(crate) fn empty_document() -> Self {
        Node { line: 1, column: 1, kind: Kind::Null }
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
