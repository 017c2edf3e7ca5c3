//! Policy packs: the YAML contract (`../shared/policy-format.md`) parsed,
//! merged, validated and compiled. Pure logic: nothing here touches the kernel.
//!
//! [`load`] reads a file or a directory, [`load_sources`] in-memory texts;
//! both return a validated [`model::Pack`] or every error found, each at
//! `file:line:column`. [`summary`] describes a pack for `egress-agent check`.

mod chunks;
pub mod domain;
mod error;
mod fields;
mod load;
mod merge;
pub mod model;
mod parse;
pub mod public_suffix;
mod rule;
mod summary;
mod yaml;
mod yaml_block;
mod yaml_fast;

pub use error::{PolicyError, PolicyErrors};
#[cfg(test)]
pub(crate) use fields::merge_ranges;
pub use load::{is_policy_file_name, load, load_hashed, load_sources};
pub use summary::summary;

pub mod bitset;
mod classes;
pub mod compile;
pub mod evaluate;
pub mod explain;

#[cfg(any(test, feature = "synth"))]
pub mod pack_yaml;
#[cfg(any(test, feature = "synth"))]
pub mod synth;

#[cfg(test)]
mod tests;
