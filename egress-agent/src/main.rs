//! `egress-agent`: a thin CLI over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use egress_agent::daemon::{RunOptions, run};
use egress_agent::datapath::Hook;
use egress_policy as policy;

/// Where the datapath is pinned unless `--pin-dir` says otherwise.
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress";

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
    /// Which rule decides a packet, and why: walks the rules by priority.
    Explain(ExplainArgs),
    /// Judge the flows of flow logs with a candidate pack and print what
    /// would change (exit 2 if a newly denied flow is one `--expect-allowed`
    /// names, 1 on errors).
    Replay {
        /// The candidate pack: a policy YAML file or a directory of them.
        #[arg(long)]
        policy: PathBuf,
        /// Flow-log files (JSON lines, as `run --flow-log` writes them).
        #[arg(long = "flow-log", required = true)]
        flow_logs: Vec<PathBuf>,
        /// What must stay allowed: one CIDR, address or domain pattern a line.
        #[arg(long, value_name = "FILE")]
        expect_allowed: Option<PathBuf>,
    },
    /// List the addresses learned from DNS answers, from the live maps.
    Learned {
        /// Read the datapath of this agent process (default: the newest).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// What the pinned datapath enforces: pack, attach points, counts (works
    /// while no agent runs).
    Status {
        /// The pin directory the agent runs with.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Exit with status 1 unless an agent holds the lease (it renews it
        /// every second from a thread of its own): a liveness probe.
        #[arg(long)]
        live: bool,
    },
    /// Remove the pinned datapath: detaches every program and frees its maps.
    Detach {
        /// The pin directory the agent ran with.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
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
        /// Serve Prometheus metrics over HTTP at ADDR, path /metrics. A bare port
        /// listens on loopback only (127.0.0.1:PORT); give an address to
        /// listen elsewhere.
        #[arg(long, value_name = "[IP:]PORT", value_parser = listen_addr)]
        metrics: Option<SocketAddr>,
        /// Write JSON flow-log lines to PATH, or `-` for standard output.
        #[arg(long, value_name = "PATH|-")]
        flow_log: Option<String>,
        /// Rotate the flow-log file when it would pass this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = egress_agent::reporting::flowlog::DEFAULT_MAX_BYTES)]
        flow_log_max_bytes: u64,
        /// Old flow-log files kept (PATH.1 is the newest).
        #[arg(long, value_name = "N", default_value_t = egress_agent::reporting::flowlog::DEFAULT_KEEP)]
        flow_log_keep: u32,
        /// Pin maps and links here (created 0700; a bpffs is mounted if
        /// needed): the datapath keeps enforcing when the agent exits or
        /// crashes, and the next agent adopts it.
        #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Pin nothing: the datapath goes away with the agent.
        #[arg(long, conflicts_with = "pin_dir")]
        no_pin: bool,
        /// Attach as XDP (native NICs) instead of TC (tcx).
        #[arg(long)]
        xdp: bool,
    },
}

/// The question `explain` answers.
#[derive(clap::Args)]
struct ExplainArgs {
    /// A policy YAML file or a directory of them.
    #[arg(long)]
    policy: PathBuf,
    /// The workload's address.
    #[arg(long)]
    src: std::net::IpAddr,
    /// The destination: an address (learned for no WebGroup), or a name
    /// (an address the workload resolved it to through an approved
    /// resolver: learned for the WebGroups covering the name).
    #[arg(long)]
    dst: String,
    /// tcp, udp, icmp (icmpv6 for IPv6 sources) or a protocol number.
    #[arg(long, default_value = "tcp")]
    proto: String,
    /// Destination port (tcp and udp).
    #[arg(long)]
    port: Option<u16>,
    /// The name the TCP connection sends (TLS SNI or HTTP Host): judge
    /// the flow's second decision, by address and name, beside the first.
    #[arg(long)]
    name: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Check { path } => check(&path),
        Cmd::Status { pin_dir, live } => match egress_agent::inspect::status::read(&pin_dir) {
            Ok(s) => {
                print!("{}", egress_agent::inspect::status::format(&pin_dir, &s));
                if live && !s.agent_up() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
            Err(e) => {
                eprintln!("egress-agent: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Explain(args) => explain(&args),
        Cmd::Replay { policy, flow_logs, expect_allowed } => replay(&policy, &flow_logs, expect_allowed.as_deref()),
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
        Cmd::Learned { pid } => match egress_agent::inspect::learned::read_learned(pid) {
            Ok(entries) => {
                print!("{}", egress_agent::inspect::learned::format(&entries));
                if let Ok(p) = egress_agent::inspect::learned::read_pressure(pid, entries.len() as u64) {
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
        Cmd::Run { policy, lan, metrics, flow_log, flow_log_max_bytes, flow_log_keep, pin_dir, no_pin, xdp } => {
            let opts = RunOptions {
                policy,
                lan,
                metrics,
                flow_log,
                flow_log_max_bytes,
                flow_log_keep,
                pin_dir: (!no_pin).then_some(pin_dir),
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

/// `check`: validates the pack and compiles it as `run` would.
fn check(path: &std::path::Path) -> ExitCode {
    match policy::load(path) {
        // What `run` would install: the pack is compiled as `run` does,
        // and fails here with the message `run` would give.
        Ok(pack) => match policy::compile::compile(&pack) {
            Ok(compiled) => {
                print!("{}", policy::summary(&pack));
                println!("{}", egress_policy::compile::tables_summary(&compiled));
                println!("{}", egress_agent::datapath::memory::describe(&compiled));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                eprintln!("{}: the pack is valid but cannot be installed", path.display());
                ExitCode::FAILURE
            }
        },
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// `replay`: the recorded flows judged by the candidate pack.
fn replay(policy: &std::path::Path, logs: &[PathBuf], expect: Option<&std::path::Path>) -> ExitCode {
    use egress_agent::inspect::replay::{self as r, Expect, ReplayError};
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|source| ReplayError::Read { file: p.display().to_string(), source })
    };
    let pack = match policy::load(policy) {
        Ok(pack) => pack,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let run = || -> Result<r::Report, ReplayError> {
        let expect = match expect {
            Some(p) => Expect::parse(&p.display().to_string(), &read(p)?)?,
            None => Expect::default(),
        };
        let mut flows = Vec::new();
        let mut skipped = 0;
        for log in logs {
            let (more, other) = r::read_flows(&log.display().to_string(), &read(log)?)?;
            flows.extend(more);
            skipped += other;
        }
        let mut report = r::replay(&pack, flows, &expect);
        report.skipped += skipped;
        Ok(report)
    };
    match run() {
        Ok(report) => {
            print!("{}", r::render(&report, policy));
            if report.unexpected.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) }
        }
        Err(e) => {
            eprintln!("egress-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `explain`: loads the pack, walks it, prints the walk and the decision;
/// with `name`, both decisions of the TCP flow with that name.
fn explain(args: &ExplainArgs) -> ExitCode {
    use egress_policy::explain::{Question, explain, render};
    use egress_policy::explain_named::{Check, check, explain_named, render_named};
    let mut pack = match policy::load(&args.policy) {
        Ok(pack) => pack,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // The `gateway` destination: this host's addresses, as `run` takes them.
    pack.gateway = egress_agent::datapath::local::local_addresses().unwrap_or_default().into_iter().collect();
    let q = match Question::from_words(args.src, &args.dst, &args.proto, args.port) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("egress-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(name) = args.name.as_deref() else {
        print!("{}", render(&pack, &q, &explain(&pack, &q)));
        return ExitCode::SUCCESS;
    };
    let e = match explain_named(&pack, &q, name) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("egress-agent: --name: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", render_named(&pack, &q, &e));
    match check(&pack, &q, &e) {
        Check::Agrees => ExitCode::SUCCESS,
        Check::Skipped(why) => {
            eprintln!("egress-agent: note: not checked against the compiled tables: {why}");
            ExitCode::SUCCESS
        }
        Check::Disagrees(how) => {
            eprintln!("egress-agent: internal error, please report: {how}");
            ExitCode::FAILURE
        }
    }
}

/// `PORT` (loopback) or `IP:PORT`.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("`{text}` is neither a port nor IP:PORT (e.g. 9464 or 10.0.0.1:9464)"))
}
