//! YAML text to a generic tree of nodes that remember where they were
//! written.
//!
//! The policy is read in two steps: a reader turns the text into [`Node`]s
//! (every node carrying its line and column), and `parse` (the policy
//! reader) walks the tree by hand. Walking by hand reports *every* unknown
//! field and bad value of a file, each at its own place, instead of
//! stopping at the first one.
//!
//! Three readers, fastest first, each answering only for text it is sure
//! of: the block reader ([`block`], plain block-style policies), the event
//! reader ([`events`], any YAML the policy format uses), then serde-saphyr
//! ([`saphyr`]), which has the final word and reports syntax errors. Each
//! reader depends only on the tree ([`node`]) and, for the two that type
//! scalars themselves, on [`scalar`]; only this module chooses between them.

mod block;
mod events;
mod node;
mod saphyr;
mod scalar;

pub(crate) use node::{Kind, Node, SyntaxError};

/// Parses one YAML document. An empty document (or one with only comments)
/// is `Kind::Null`.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    if let Some(tree) = block::parse(text) {
        return Ok(tree);
    }
    match events::parse(text) {
        Some(tree) => Ok(tree),
        None => saphyr::parse(text),
    }
}

/// The tree of `text` if it is in the plain block style the block reader
/// reads, else `None` (read such text whole with [`parse`], which says
/// what is wrong and where). For pieces of a large file, whose line
/// numbers the caller maps back to the file.
pub(crate) fn parse_block_style(text: &str) -> Option<Node> {
    block::parse(text)
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod block_tests;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
