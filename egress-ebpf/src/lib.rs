//! Host-side stub: the datapath is a binary for the bpf target (`src/main.rs`).
//! This library exists so that the agent can take a build-dependency on this
//! crate and be rebuilt when the datapath changes.
#![no_std]
