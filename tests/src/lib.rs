//! The lab: network-namespace labs running the real agent, crafted packets,
//! DNS messages, real TLS servers and clients, load generators and the
//! translations of a pack for iptables and nftables. Used by the root-only
//! tests under `tests/`, the benches and the demo; never by the agent.

pub mod agent;
pub mod bpffs;
pub mod cleanup;
pub mod client;
pub mod containment;
pub mod containment_report;
pub mod dnsmsg;
pub mod fuzzing;
pub mod hello;
pub mod lab;
pub mod layers;
pub mod loadgen;
pub mod neighbour;
pub mod netns;
pub mod packet;
pub mod resolver;
pub mod shapes;
pub mod tls;
pub mod tls_load;
pub mod traffic;
pub mod translate;

/// The agent binary of this build profile (`target/<profile>/egress-agent`,
/// beside the directory of the running test or example), which
/// `cargo xtask test` builds before the lab's tests.
///
/// # Panics
/// If it is not there: the message says how to build it.
#[must_use]
pub fn agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe.parent().expect("the executable's directory").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let bin = dir.join("egress-agent");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p egress-agent` (cargo xtask test does)",
        bin.display()
    );
    bin
}
