//! Helpers for tests, benchmarks and the demo: crafted packets and
//! network-namespace labs. Not used by the agent itself.

pub mod lab;
pub mod netns;
pub mod packet;
pub mod synth;
