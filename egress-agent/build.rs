//! Builds the eBPF datapath (`egress-ebpf`) with the nightly toolchain and
//! bpf-linker, and embeds it in the agent. `cargo xtask setup` installs both.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "egress-ebpf")
        .ok_or_else(|| anyhow!("egress-ebpf package not found"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent"))?;
    aya_build::build_ebpf(
        [Package { name: "egress-ebpf", root_dir: root.as_str(), ..Default::default() }],
        Toolchain::default(),
    )
}
