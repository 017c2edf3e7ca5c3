//! Policy packs: the YAML contract (`../shared/policy-format.md`) parsed,
//! merged, validated and compiled. Pure logic: nothing here touches the kernel.

pub mod model;
mod yaml;
