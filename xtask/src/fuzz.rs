//! `cargo xtask fuzz`: the coverage-guided fuzzers of `fuzz/` (libFuzzer,
//! built with `SanitizerCoverage` instrumentation on the stable toolchain,
//! in a target directory of their own so that the workspace's builds are
//! not redone), then the kernel fuzzer (`egress-lab`'s `fuzz_datapath`
//! example: mutated packets through the real programs with
//! `BPF_PROG_TEST_RUN`). Each runs `--seconds` (default 60) from the seed
//! corpus in the repository plus what earlier runs found (under
//! `target/fuzz/`); a crash or broken invariant fails the task and leaves
//! the input under `target/fuzz/artifacts/`. Prints one line of figures per
//! fuzzer.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::setup::workspace_root;

/// The userspace fuzz targets (binaries of `egress-fuzz`) and the longest
/// input each is given.
const TARGETS: [(&str, &str, usize); 2] = [("fuzz_policy", "policy", 16_384), ("fuzz_explain", "explain", 512)];

/// Instrumentation as cargo-fuzz sets it, without a sanitizer (the
/// targets are safe Rust; panics and overflow checks are what they find).
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
     -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
     -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

/// The host triple: with `--target` given, `RUSTFLAGS` reach the targets
/// only, not build scripts or proc macros.
const HOST: &str = "x86_64-unknown-linux-gnu";

/// `cargo xtask fuzz [--seconds N] [TARGET]`.
pub fn run(seconds: u64, only: Option<&str>) -> Result<()> {
    let root = workspace_root();
    let dir = root.join("target/fuzz");
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    if TARGETS.iter().any(|(_, short, _)| wanted(short)) {
        build(&root, &dir)?;
    }
    let mut lines = Vec::new();
    for (bin, short, max_len) in TARGETS {
        if wanted(short) {
            lines.push(libfuzzer(&root, &dir, bin, short, max_len, seconds)?);
        }
    }
    if wanted("datapath") {
        crate::cargo(
            &["run", "-p", "egress-lab", "--example", "fuzz_datapath", "--"],
            &["--seconds".into(), seconds.to_string()],
        )?;
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn build(root: &Path, dir: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "egress-fuzz", "--features", "libfuzzer", "--bins", "--target", HOST])
        .arg("--target-dir")
        .arg(dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .current_dir(root)
        .status()
        .context("building the fuzzers")?;
    if !status.success() {
        bail!("building the fuzzers failed ({status})");
    }
    Ok(())
}

/// Runs one libFuzzer binary; its figures as one line.
fn libfuzzer(root: &Path, dir: &Path, bin: &str, short: &str, max_len: usize, seconds: u64) -> Result<String> {
    let corpus = dir.join("corpus").join(short);
    let artifacts = dir.join("artifacts").join(short);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let out = Command::new(dir.join(HOST).join("release").join(bin))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={max_len}"))
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .arg(root.join("fuzz/seeds").join(short))
        .stdout(Stdio::inherit())
        .output()
        .with_context(|| format!("running {bin}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("{log}");
        bail!("{bin} found a failure ({}); the input is under {}", out.status, artifacts.display());
    }
    Ok(figures(short, &log))
}

/// `fuzz policy: 1234567 executions, 2345 edges, 3456 features, corpus 210, crashes 0`.
fn figures(short: &str, log: &str) -> String {
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or("?".to_string(), |v| v.trim().trim_start_matches(':').trim().to_string())
    };
    let last = log.lines().rev().find(|l| l.contains(" cov: ")).unwrap_or_default();
    let field = |name: &str| {
        let words: Vec<&str> = last.split_whitespace().collect();
        words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1)).map_or("?", |v| v)
    };
    format!(
        "fuzz {short}: {} executions, {} edges, {} features, corpus {}, crashes 0",
        stat("stat::number_of_executed_units"),
        field("cov:"),
        field("ft:"),
        field("corp:").split('/').next().unwrap_or("?"),
    )
}
