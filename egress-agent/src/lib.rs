//! The egress agent as a library: the datapath loader and the operator-facing
//! services (the policy logic is the `egress-policy` crate). `main.rs` is a thin CLI over this.

pub mod clock;
pub mod datapath;
pub mod flowlog;
pub mod free;
pub mod learned;
pub mod metrics;
pub mod reload;
pub mod run;
pub mod status;
pub mod watch;

/// mimalloc for every binary of the agent: a reload builds and drops a few
/// hundred thousand small objects (YAML nodes, names, rule fields), which
/// glibc's allocator served at a third of the speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
