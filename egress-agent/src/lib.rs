//! The egress agent as a library: the datapath loader and the operator-facing
//! services (the policy logic is the `egress-policy` crate). `main.rs` is a thin CLI over this.
//!
//! - [`daemon`]: `egress-agent run`: the wiring, the reloader (the one path
//!   by which a pack becomes live) and the policy watcher that feeds it.
//! - [`datapath`]: the only module that touches aya: load, install, attach, pins.
//! - [`reporting`]: Prometheus metrics and the flow log.
//! - [`inspect`]: `status` and `learned`, read from the kernel's maps.

pub mod background_drop;
pub mod clock;
pub mod daemon;
pub mod datapath;
pub mod inspect;
pub mod reporting;

/// mimalloc for every binary of the agent: a reload builds and drops a few
/// hundred thousand small objects (YAML nodes, names, rule fields), which
/// glibc's allocator served at a third of the speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
