//! Builds the eBPF datapath (`egress-ebpf`) with the nightly toolchain and
//! bpf-linker, and embeds it in the agent. `cargo xtask setup` installs both.
//!
//! This does what `aya_build::build_ebpf` (aya-build 0.2.0) does: the same
//! command, flags, environment, target directory and output file
//! (`OUT_DIR/egress`, which `datapath::DATAPATH_OBJECT` embeds), and the
//! same rebuild triggers. But aya-build passes every line of the nested
//! cargo's output through as `cargo:warning=`, one `warning:` line per
//! crate compiled (35 on a fresh machine, at every eBPF change at least
//! `Compiling` and `Finished`). Here cargo's progress lines are dropped;
//! the eBPF build's diagnostics (warnings and errors, whole, as rustc
//! renders them) and anything else cargo says still come through, and a
//! failed build ends with one summary line.
use std::env;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Artifact, CompilerMessage, Message};

/// The toolchain the datapath is built with (`rustup run TOOLCHAIN`).
const TOOLCHAIN: &str = "nightly";
/// The eBPF package.
const PACKAGE: &str = "egress-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if let Some(skip) = env::var_os("AYA_BUILD_SKIP")
        && (skip == "1" || skip.eq_ignore_ascii_case("true"))
    {
        println!("cargo:warning=AYA_BUILD_SKIP={}; skipping eBPF build", skip.display());
        return Ok(());
    }
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == PACKAGE)
        .ok_or_else(|| anyhow!("{PACKAGE} package not found"))?;
    let root = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent"))?;
    // The build-dependency on egress-ebpf rebuilds us when its library
    // changes; this catches its binary (the programs) too.
    println!("cargo:rerun-if-changed={root}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    build(&out_dir)
}

/// `rustup run nightly PROGRAM`, or `PROGRAM` alone without rustup.
fn tool(rustup: Option<&Path>, program: &str) -> Command {
    match rustup {
        Some(rustup) => {
            let mut cmd = Command::new(rustup);
            cmd.args(["run", TOOLCHAIN, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// `name` on `PATH`, as `which` finds it.
fn on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// The bpf target of the host's byte order, e.g. `bpfel-unknown-none`.
fn bpf_target() -> anyhow::Result<String> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    match endian.as_str() {
        "little" => Ok("bpfel-unknown-none".to_owned()),
        "big" => Ok("bpfeb-unknown-none".to_owned()),
        other => bail!("unsupported endian={other}"),
    }
}

/// Whether `-Z build-std=core` is used: as aya-build decides it, from
/// `RUSTC_BOOTSTRAP` or else the toolchain's channel.
fn use_build_std(rustup: Option<&Path>) -> anyhow::Result<bool> {
    match env::var_os("RUSTC_BOOTSTRAP") {
        Some(v) if v == "1" || v == PACKAGE => return Ok(true),
        Some(v) if v == "-1" => return Ok(false),
        _ => {}
    }
    let out = tool(rustup, "rustc").arg("-vV").output().context("running `rustc -vV`")?;
    if !out.status.success() {
        bail!("`rustc -vV` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let release = text.lines().find_map(|l| l.strip_prefix("release: ")).unwrap_or_default();
    Ok(release.contains("nightly"))
}

/// A line of cargo's own progress (`   Compiling core v0.0.0 (...)`),
/// which is not shown.
fn is_progress(line: &str) -> bool {
    const VERBS: &[&str] = &[
        "Adding",
        "Blocking",
        "Building",
        "Checking",
        "Compiling",
        "Downloaded",
        "Downloading",
        "Finished",
        "Fresh",
        "Locking",
        "Removed",
        "Running",
        "Unpacking",
        "Updating",
    ];
    let trimmed = line.trim_start();
    trimmed.split_once(' ').is_some_and(|(verb, _)| VERBS.contains(&verb))
}

fn build(out_dir: &Path) -> anyhow::Result<()> {
    let target = bpf_target()?;
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") { "riscv64".to_owned() } else { arch };
    let rustup = on_path("rustup");
    if rustup.is_none() {
        println!("cargo:warning=rustup not found on PATH; building the eBPF datapath with the current toolchain");
    }
    let rustup = rustup.as_deref();

    let mut cmd = tool(rustup, "cargo");
    cmd.args(["build", "--package", PACKAGE, "--bins", "--message-format=json", "--release", "--target", &target]);
    if use_build_std(rustup)? {
        cmd.args(["-Z", "build-std=core"]);
    }
    cmd.args(["--features", ""]);
    let mut rustflags = OsString::new();
    for (i, flag) in [format!("--cfg=bpf_target_arch=\"{arch}\""), "-Cdebuginfo=2".into(), "-Clink-arg=--btf".into()]
        .iter()
        .enumerate()
    {
        if i > 0 {
            rustflags.push("\x1f");
        }
        rustflags.push(flag);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The toolchain's own rustc, not the one the outer cargo was given.
    cmd.env_remove("RUSTC").env_remove("RUSTC_WORKSPACE_WRAPPER");
    // What is forwarded is read as plain text.
    cmd.env("CARGO_TERM_COLOR", "never");
    // Apart from OUT_DIR's artifacts (cargo would wait on its own lock in
    // the outer target directory); aya-build's layout, so its cache is kept.
    let target_dir = out_dir.join("aya-build").join("target").join(PACKAGE);
    cmd.arg("--target-dir").arg(&target_dir);

    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to spawn {shown}"))?;
    let stderr = BufReader::new(child.stderr.take().context("stderr")?);
    // Cargo's own lines: progress is dropped, anything else kept.
    // Read to the end whatever the bytes (a pipe left undrained would stall
    // the nested build), decoded lossily.
    let stderr = std::thread::spawn(move || -> Vec<String> {
        stderr
            .split(b'\n')
            .map_while(Result::ok)
            .map(|l| String::from_utf8_lossy(&l).trim_end().to_string())
            .filter(|l| !is_progress(l))
            .collect()
    });

    let stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut executables = Vec::new();
    for message in Message::parse_stream(stdout) {
        let Ok(message) = message else {
            // Not cargo's JSON: keep draining, and let the exit status and
            // cargo's own lines say what went wrong.
            continue;
        };
        match message {
            Message::CompilerArtifact(Artifact { executable: Some(exe), target, .. }) => {
                executables.push((target.name, exe.into_std_path_buf()));
            }
            // Diagnostics (warnings, errors), whole, as rustc rendered them.
            Message::CompilerMessage(CompilerMessage { message, .. }) => {
                for line in message.rendered.unwrap_or_default().trim_end().lines() {
                    println!("cargo:warning={line}");
                }
            }
            Message::TextLine(line) if !line.trim().is_empty() => println!("cargo:warning={line}"),
            _ => {}
        }
    }
    let status = child.wait().with_context(|| format!("failed to wait for {shown}"))?;
    let cargo_lines = stderr.join().map_err(|_| anyhow!("reading cargo's stderr failed"))?;
    for line in &cargo_lines {
        println!("cargo:warning={line}");
    }
    if !status.success() {
        // One line, without the backtrace an `Err` from main would add.
        println!("cargo:warning=building the eBPF datapath ({PACKAGE}, {target}) failed: {status}");
        eprintln!("{shown} failed: {status}");
        std::process::exit(1);
    }
    for (name, binary) in executables {
        let dst = out_dir.join(&name);
        std::fs::copy(&binary, &dst)
            .with_context(|| format!("failed to copy {} to {}", binary.display(), dst.display()))?;
    }
    Ok(())
}
