//! `egress-agent`: a thin CLI over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use egress_agent::datapath::Hook;
use egress_agent::policy;
use egress_agent::run::{RunOptions, run};

#[derive(Parser)]
#[command(name = "egress-agent", version, about = "eBPF egress firewall for Linux gateways")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a policy file or directory and print a summary (exit 1 on errors).
    Check {
        /// A policy YAML file or a directory of them.
        path: PathBuf,
    },
    /// List the addresses learned from DNS answers, from the live maps.
    Learned {
        /// Read the datapath of this agent process (default: the newest).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Remove the pinned datapath: detaches every program and frees its maps.
    Detach {
        /// The pin directory the agent ran with.
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/bpf/egress")]
        pin_dir: PathBuf,
    },
    /// Enforce a policy pack on the LAN interfaces until SIGTERM/SIGINT.
    Run {
        /// A policy YAML file or a directory of them.
        #[arg(long)]
        policy: PathBuf,
        /// An interface the workloads' traffic enters through (repeatable).
        #[arg(long, required = true)]
        lan: Vec<String>,
        /// Serve Prometheus metrics at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Write JSON flow-log lines to PATH, or `-` for standard output.
        #[arg(long, value_name = "PATH|-")]
        flow_log: Option<String>,
        /// Pin maps and links here (a bpffs is mounted if needed): the
        /// datapath then keeps enforcing when the agent exits or crashes, and
        /// the next agent started with the same directory adopts it.
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
        /// Attach as XDP (native NICs) instead of TC (tcx).
        #[arg(long)]
        xdp: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Check { path } => match policy::load(&path) {
            Ok(pack) => {
                print!("{}", policy::summary(&pack));
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} error(s)", path.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        Cmd::Detach { pin_dir } => match egress_agent::datapath::pin::PinDir::existing(&pin_dir).remove_all() {
            Ok(n) => {
                println!("egress-agent: removed {n} pins from {}; the datapath is detached", pin_dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("egress-agent: detach {}: {e}", pin_dir.display());
                ExitCode::FAILURE
            }
        },
        Cmd::Learned { pid } => match egress_agent::learned::read_learned(pid) {
            Ok(entries) => {
                print!("{}", egress_agent::learned::format(&entries));
                if let Ok(p) = egress_agent::learned::read_pressure(pid, entries.len() as u64) {
                    println!(
                        "table: {} of {} entries; {} created since load, {} evicted",
                        p.entries, p.capacity, p.created, p.evicted
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("egress-agent: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run { policy, lan, metrics, flow_log, pin_dir, xdp } => {
            let opts = RunOptions {
                policy,
                lan,
                metrics,
                flow_log,
                pin_dir,
                hook: if xdp { Hook::Xdp } else { Hook::Tc },
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("egress-agent: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("egress-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
