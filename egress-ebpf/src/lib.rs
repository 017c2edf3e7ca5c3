//! The datapath's host-side library. The datapath itself is a binary for the
//! bpf target (`src/main.rs`); this library lets the agent take a
//! build-dependency on this crate (and be rebuilt when the datapath
//! changes), and holds pure parsers for the datapath, tested here on the host
//! (`names`: connection names from TLS ClientHellos and HTTP request
//! heads).
#![cfg_attr(not(test), no_std)]
#![allow(
    clippy::inline_always,
    reason = "the parsers' steps are inlined into the `bpf_loop` callbacks that will call them: calls that are \
              not callbacks add frames to the 512-byte stack"
)]

pub mod names;
