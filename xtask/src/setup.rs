//! Makes a machine ready to build and test egress, with nothing done by
//! hand: nightly `rust-src`, bpf-linker built against the nightly's own
//! libLLVM, and the Debian packages the tests use. Idempotent.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Debian packages the tests and the demo use: `ip` (iproute2) for network
/// namespaces, `ping` for ICMP, bpftool for inspecting the datapath, and
/// dnsmasq (the binary only, no system service) as the lab's resolver,
/// `setpriv` to run the agent with fewer capabilities, `systemd-analyze` to
/// verify the shipped unit, iptables, ipset and nftables for `bench compare`,
/// curl and openssl as the real TLS and HTTP clients and server of the
/// connection-name tests and the containment lab, g++ for libFuzzer (built
/// by `libfuzzer-sys` for `cargo xtask fuzz`).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "/usr/sbin/ip"),
    ("iputils-ping", "/usr/bin/ping"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("dnsmasq-base", "/usr/sbin/dnsmasq"),
    ("util-linux", "/usr/bin/setpriv"),
    ("systemd", "/usr/bin/systemd-analyze"),
    ("iptables", "/usr/sbin/iptables-legacy"),
    ("nftables", "/usr/sbin/nft"),
    ("ipset", "/usr/sbin/ipset"),
    ("curl", "/usr/bin/curl"),
    ("openssl", "/usr/bin/openssl"),
    ("g++", "/usr/bin/g++"),
];

/// The workspace root (parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.parent().unwrap_or(dir).to_path_buf()
}

/// Runs every setup step.
pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    Ok(())
}

fn output(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("{cmd} {} failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = output("rustc", &["+nightly", "--print", "sysroot"])
        .context("the nightly toolchain is needed to build the eBPF datapath")?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn rust_src() -> Result<()> {
    let lib = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if lib.exists() {
        return Ok(());
    }
    eprintln!("setup: adding rust-src to the nightly toolchain");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The `llvm-NN` feature of bpf-linker matching the nightly's LLVM.
fn llvm_feature() -> Result<String> {
    let vv = output("rustc", &["+nightly", "-vV"])?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("`rustc +nightly -vV` shows no LLVM version")?;
    Ok(format!("llvm-{major}"))
}

fn bpf_linker_works() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let feature = llvm_feature()?;
    let home = std::env::var("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home).join(".local/rust-llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let rust_lib = nightly_sysroot()?.join("lib");
    let so = std::fs::read_dir(&rust_lib)
        .with_context(|| format!("reading {}", rust_lib.display()))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so")))
        .with_context(|| format!("no libLLVM.so in {}", rust_lib.display()))?;
    let name = so.file_name().context("libLLVM path has no file name")?;
    for link in [lib.join("libLLVM.so"), lib.join(name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link)
            .with_context(|| format!("linking {} to {}", link.display(), so.display()))?;
    }
    eprintln!("setup: building bpf-linker against {} ({feature})", so.display());
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_works() {
        bail!("bpf-linker was installed but does not run: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> =
        DEBIAN_PACKAGES.iter().filter(|(_, path)| !Path::new(path).exists()).map(|(pkg, _)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
