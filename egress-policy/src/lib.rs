//! Policy packs: the YAML format (described in `docs/POLICY.md`) parsed,
//! merged, validated and compiled. Pure logic: nothing here touches the
//! kernel, starts a thread or keeps state between calls.
//!
//! [`load`] reads a file or a directory (and the list files its groups
//! name), [`load_sources`] in-memory texts (which may name no list file);
//! both return a validated [`model::Pack`] or every error found, each at
//! `file:line:column`. A caller that loads again and again (the agent's
//! reloads) keeps a [`ParseCache`], so that only what changed is parsed
//! again. [`compile`] turns a pack into the datapath's tables;
//! [`summary`] describes a pack for `egress-agent check`.
//!
//! Inside, the reading goes one way: `yaml` (text to a tree of positioned
//! nodes) → `fields` and `record` (single values and records out of the
//! tree) → `rule` → `parse` (one file to a fragment) → `merge` (fragments to
//! a pack) → `load` (files, the parse cache, pieces of large files).

mod chunks;
pub mod dns_types;
pub mod domain;
mod error;
mod fields;
mod lists;
mod load;
mod load_lists;
mod merge;
pub mod model;
mod parse;
pub mod public_suffix;
mod record;
mod rule;
mod summary;
mod yaml;

pub use error::{PolicyError, PolicyErrors};
#[cfg(test)]
pub(crate) use fields::merge_ranges;
pub use lists::files_named as list_files_named;
pub use load::{ParseCache, Retired, is_policy_file_name, load, load_hashed, load_sources, read_policy_text};
pub use summary::summary;

pub mod bitset;
mod classes;
pub mod compile;
pub mod evaluate;
pub mod explain;
pub mod explain_named;

#[cfg(any(test, feature = "synth"))]
pub mod pack_yaml;
#[cfg(any(test, feature = "synth"))]
pub mod synth;

#[cfg(test)]
mod tests;
