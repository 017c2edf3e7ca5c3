//! `cargo xtask`: the project's one entry point for setting up a machine,
//! testing, benchmarking and the demo.
//!
//! - `setup`: makes a fresh machine ready (idempotent, seconds when done).
//! - `test`: setup, `cargo fmt --check`, clippy with warnings denied, then
//!   every test of the workspace, the lab's root-only ones included.
//! - `bench classifier`: `BPF_PROG_TEST_RUN` cost of the classifier by pack size.
//! - `bench dns`: cost of learning from a DNS answer, by records.
//! - `bench names`: cost of reading and judging a connection's name.
//! - `bench swap`: policy change to new pack enforced, by pack size.
//! - `bench compare`: the agent against iptables and nftables, same traffic.
//! - `fuzz`: the coverage-guided fuzzers and the kernel fuzzer, with figures.
//! - `demo`: the lab of network namespaces with the agent enforcing a pack.

mod fuzz;
mod setup;

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "egress project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need: nightly rust-src, bpf-linker, Debian packages.
    Setup,
    /// Run every test (unit, policy corpus, `BPF_PROG_TEST_RUN`, end-to-end in network namespaces).
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks; writes JSON under target/bench/.
    Bench {
        /// Which benchmark: `classifier`, `dns`, `swap` or `compare`.
        which: String,
        /// Options of the benchmark (e.g. `--quick`; `--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the policy loader, explain's inputs and the datapath's programs; prints figures.
    Fuzz {
        /// How long each fuzzer runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this fuzzer: `policy`, `explain` or `datapath`.
        target: Option<String>,
    },
    /// Build, create the lab, send permitted and forbidden traffic, show the decisions.
    Demo,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test { args } => {
            setup::run()?;
            lint()?;
            // The lab's tests run the agent binary of this profile.
            cargo(&["build", "-p", "egress-agent", "--bins"], &[])?;
            cargo(&["test", "--workspace", "--no-fail-fast"], &args)
        }
        Cmd::Bench { which, args } => {
            let example = match which.as_str() {
                "classifier" => "bench_classifier",
                "dns" => "bench_dns",
                "names" => "bench_names",
                "swap" => "bench_swap",
                "compare" => "bench_compare",
                other => bail!("unknown benchmark `{other}` (known: classifier, dns, names, swap, compare)"),
            };
            setup::run()?;
            let mut extra = vec!["--".to_string()];
            extra.extend(args);
            cargo(&["run", "--release", "-p", "egress-lab", "--example", example], &extra)
        }
        Cmd::Fuzz { seconds, target } => {
            setup::run()?;
            fuzz::run(seconds, target.as_deref())
        }
        Cmd::Demo => {
            setup::run()?;
            cargo(&["build", "--release", "-p", "egress-agent", "--bins"], &[])?;
            cargo(&["build", "--release", "-p", "egress-lab", "--examples"], &[])?;
            let root = setup::workspace_root();
            let status = Command::new(root.join("target/release/examples/demo"))
                .arg("--agent")
                .arg(root.join("target/release/egress-agent"))
                .status()
                .context("running the demo")?;
            if !status.success() {
                bail!("the demo failed ({status})");
            }
            Ok(())
        }
    }
}

/// The house rules CI holds: formatting, then clippy with every warning an
/// error, over every crate and target (tests, examples, the lab).
fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])
}

/// Runs cargo from the workspace root with the given arguments.
fn cargo(args: &[&str], extra: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .args(extra)
        .current_dir(setup::workspace_root())
        .status()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
