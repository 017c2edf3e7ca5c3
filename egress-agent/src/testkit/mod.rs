//! Helpers for tests, benchmarks and the demo: crafted packets, synthetic
//! packs and network-namespace labs running the real agent. Not used by
//! the agent itself.

pub mod agent;
pub mod bpffs;
pub mod cleanup;
pub mod client;
pub mod containment;
pub mod containment_report;
pub mod lab;
pub mod layers;
pub mod loadgen;
pub mod netns;
pub mod packet;
pub mod resolver;
pub mod synth;
pub mod translate;
pub mod traffic;
pub mod dnsmsg;
pub mod pack_yaml;
