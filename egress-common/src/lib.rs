//! Types shared by the eBPF datapath (`egress-ebpf`) and the agent.
//!
//! Every map key and value is `#[repr(C)]`, made of fixed-width integers with
//! explicit zeroed padding, and has its size asserted beside it: the kernel
//! and userspace must agree on every byte. Fields in network byte order end in
//! `_be`. Addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
//! With the `user` feature the types implement `aya::Pod`.
#![no_std]
#![allow(
    clippy::inline_always,
    reason = "the eBPF programs call these functions, and the verifier needs every call inlined"
)]
#![allow(
    clippy::pub_underscore_fields,
    reason = "explicit padding is public so that kernel and agent build values with struct literals"
)]

pub mod addr;
pub mod budget;
pub mod conn;
pub mod dns;
pub mod flow;
pub mod guard;
pub mod host;
pub mod maps;
pub mod pack;
pub mod reason;

pub use budget::*;
pub use conn::*;
pub use dns::*;
pub use flow::*;
pub use guard::*;
pub use host::*;
pub use pack::*;
pub use reason::*;

pub use maps::{LAYOUT_VERSION, TAIL_NAMES, TAIL_QUERY, TAIL_READ, TAIL_SECOND_ANSWER, TAILS};

/// Implements `aya::Pod` for the listed types when built for userspace.
#[macro_export]
#[doc(hidden)]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `repr(C)`, `Copy`, made only of integers and
            // byte arrays with explicit padding, so every bit pattern is valid.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

/// Compile-time check of a type's size.
#[macro_export]
#[doc(hidden)]
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
