//! `cargo xtask demo`: the containment lab on real traffic.
//!
//! Builds three network namespaces (the AgentCore runtime subnet, the
//! gateway running `egress-agent` with the pack from `policies/`, and an
//! upstream "internet" with servers), plays what an agent would send, both
//! legitimate and forbidden, and prints what the firewall decided and which
//! rule decided it, from the agent's own flow log. Cleans up on exit,
//! failure and Ctrl-C.
//!
//! Options: `--policy FILE` (default: the embedded `policies/lab.yaml`),
//! `--agent BIN` (default: `target/release/egress-agent`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use egress_agent::testkit::agent::AgentProcess;
use egress_agent::testkit::cleanup;
use egress_agent::testkit::lab::{Lab, NEIGHBOUR_V4, WORKLOAD_V4, WORKLOAD_V6};
use egress_agent::testkit::resolver::{Resolver, Zone};

const DEFAULT_PACK: &str = include_str!("../../policies/lab.yaml");
const TIMEOUT: Duration = Duration::from_millis(1500);

const UPSTREAM: &[&str] = &[
    "203.0.113.10", "2001:db8:1::10", // sanctioned model API (api.openai.com)
    "203.0.113.20",                   // sanctioned tool server
    "203.0.113.66", "2001:db8:1::66", // unsanctioned host
    "203.0.113.77",                   // unsanctioned model provider (api.shadow-llm.example)
    "198.51.100.53",                  // approved resolver
    "198.51.100.99",                  // foreign resolver
    "203.0.113.123",                  // an NTP server
];

#[derive(Clone, Copy)]
enum Probe {
    Tcp(&'static str),
    Udp(&'static str),
    Ping(&'static str),
    /// Resolve a name with the system resolver, then connect on 443.
    Name(&'static str),
    /// TCP from the neighbouring workload address, which resolved nothing.
    Neighbour(&'static str),
}

struct Scenario {
    what: &'static str,
    probe: Probe,
    expect_delivered: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { what: "resolve and call the sanctioned model API", probe: Probe::Name("api.openai.com"), expect_delivered: true },
    Scenario { what: "a neighbour that never resolved it calls it", probe: Probe::Neighbour("203.0.113.10:443"), expect_delivered: false },
    Scenario { what: "resolve and call an unsanctioned model", probe: Probe::Name("api.shadow-llm.example"), expect_delivered: false },
    Scenario { what: "use a sanctioned tool", probe: Probe::Tcp("203.0.113.20:8443"), expect_delivered: true },
    Scenario { what: "exfiltrate to an unsanctioned host", probe: Probe::Tcp("203.0.113.66:443"), expect_delivered: false },
    Scenario { what: "exfiltrate to an unsanctioned host over IPv6", probe: Probe::Tcp("[2001:db8:1::66]:443"), expect_delivered: false },
    Scenario { what: "tunnel DNS to a foreign resolver", probe: Probe::Udp("198.51.100.99:53"), expect_delivered: false },
    Scenario { what: "reach the model API on a non-HTTPS port", probe: Probe::Tcp("203.0.113.10:8080"), expect_delivered: false },
    Scenario { what: "call the model API's IPv6 address, never resolved", probe: Probe::Tcp("[2001:db8:1::10]:443"), expect_delivered: false },
    Scenario { what: "ping an outside host", probe: Probe::Ping("203.0.113.66"), expect_delivered: false },
    Scenario { what: "sync time (rule in monitor mode)", probe: Probe::Udp("203.0.113.123:123"), expect_delivered: true },
];

/// The lab resolver's zone: the names the scenarios resolve.
fn zone() -> Zone {
    let host = |n: &str, a: &str| (n.to_string(), vec![a.parse().expect("demo address")]);
    Zone {
        hosts: vec![
            host("api.openai.com", "203.0.113.10"),
            host("api.shadow-llm.example", "203.0.113.77"),
        ],
        cnames: vec![],
        wildcards: vec![],
        ttl: 300,
    }
}

/// Run inside the workload namespace as `demo --client NAME`: resolve
/// with glibc and connect, print one JSON record.
fn client(name: &str) -> ExitCode {
    let names = [name.to_string()];
    for r in egress_agent::testkit::client::resolve_connect(&names, 443, TIMEOUT, 4) {
        println!("{r}");
    }
    ExitCode::SUCCESS
}

/// Resolves and connects from the workload, as an application would.
fn resolve_and_connect(lab: &Lab, name: &str) -> std::io::Result<serde_json::Value> {
    let out = cleanup::unblocked("ip")
        .args(["netns", "exec", &lab.workload.name])
        .arg(std::env::current_exe()?)
        .args(["--client", name])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| std::io::Error::other("the client printed nothing"))
}

fn args() -> (Option<PathBuf>, PathBuf) {
    let mut policy = None;
    let mut agent = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/egress-agent"));
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--policy" => policy = it.next().map(PathBuf::from),
            "--agent" => agent = it.next().map(PathBuf::from).unwrap_or(agent),
            other => eprintln!("demo: ignoring unknown argument {other}"),
        }
    }
    (policy, agent)
}

fn start_servers(lab: &Lab) -> std::io::Result<()> {
    for a in ["203.0.113.10:443", "203.0.113.10:8080", "[2001:db8:1::10]:443", "203.0.113.20:8443", "203.0.113.66:443", "[2001:db8:1::66]:443", "203.0.113.77:443"] {
        lab.tcp_echo(a.parse().map_err(std::io::Error::other)?)?;
    }
    for a in ["198.51.100.99:53", "203.0.113.123:123"] {
        lab.udp_echo(a.parse().map_err(std::io::Error::other)?)?;
    }
    Ok(())
}

/// Plays a probe: (delivered, source, destination, port, protocol).
fn play(lab: &Lab, probe: Probe) -> std::io::Result<(bool, IpAddr, IpAddr, u16, &'static str)> {
    let me: IpAddr = WORKLOAD_V4.parse().map_err(std::io::Error::other)?;
    let (delivered, dst, port, proto) = match probe {
        Probe::Tcp(a) => {
            let sa: SocketAddr = a.parse().map_err(std::io::Error::other)?;
            (lab.tcp_exchange(None, sa, TIMEOUT)?, sa.ip(), sa.port(), "tcp")
        }
        Probe::Udp(a) => {
            let sa: SocketAddr = a.parse().map_err(std::io::Error::other)?;
            (lab.udp_exchange(sa, TIMEOUT)?, sa.ip(), sa.port(), "udp")
        }
        Probe::Ping(a) => {
            let ip: IpAddr = a.parse().map_err(std::io::Error::other)?;
            (lab.ping(ip)?, ip, 0, if ip.is_ipv4() { "icmp" } else { "icmpv6" })
        }
        Probe::Name(n) => {
            let r = resolve_and_connect(lab, n)?;
            let dst = r["addr"].as_str().and_then(|a| a.parse().ok());
            match dst {
                Some(dst) => (r["connected"] == true, dst, 443, "tcp"),
                None => return Err(std::io::Error::other(format!("{n} did not resolve: {r}"))),
            }
        }
        Probe::Neighbour(a) => {
            let sa: SocketAddr = a.parse().map_err(std::io::Error::other)?;
            let src: IpAddr = NEIGHBOUR_V4.parse().map_err(std::io::Error::other)?;
            let ok = lab.tcp_exchange(Some(src), sa, TIMEOUT)?;
            return Ok((ok, src, sa.ip(), sa.port(), "tcp"));
        }
    };
    let src = if dst.is_ipv4() { me } else { WORKLOAD_V6.parse().map_err(std::io::Error::other)? };
    Ok((delivered, src, dst, port, proto))
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let (policy, agent_bin) = args();
    let (pack, origin) = match &policy {
        Some(p) => (std::fs::read_to_string(p)?, p.display().to_string()),
        None => (DEFAULT_PACK.to_string(), "policies/lab.yaml (embedded)".to_string()),
    };
    println!("egress demo: containing an AI agent runtime at the network layer\n");
    println!("  runtime subnet  workload {WORKLOAD_V4}, {WORKLOAD_V6}");
    println!("  gateway         egress-agent enforcing {origin}");
    println!("  upstream        api.openai.com 203.0.113.10, api.shadow-llm.example 203.0.113.77, tools 203.0.113.20,");
    println!("                  unsanctioned 203.0.113.66, approved resolver (dnsmasq) 198.51.100.53, foreign resolver 198.51.100.99\n");
    let lab = Lab::new(UPSTREAM)?;
    start_servers(&lab)?;
    let _resolver = Resolver::start(&lab, &["198.51.100.53".parse()?], &zone())?;
    let agent = AgentProcess::start(&lab, &agent_bin, &pack)?;
    println!("  {:<50} {:<42} {:<10} {}", "the agent tries to", "traffic", "result", "decided by (flow log)");
    println!("  {}", "-".repeat(140));
    let mut all_as_expected = true;
    for s in SCENARIOS {
        let (delivered, src, dst, dport, proto) = play(&lab, s.probe)?;
        let (src_s, dst_s) = (src.to_string(), dst.to_string());
        let rec = agent.wait_record(Duration::from_secs(2), |v| {
            v["src"] == src_s.as_str() && v["dst"] == dst_s.as_str() && v["dport"] == dport && v["proto"] == proto
        });
        let decided = match &rec {
            Some(v) => format!("{} ({}, {} mode)", v["rule"].as_str().unwrap_or("?"), v["verdict"].as_str().unwrap_or("?"), v["mode"].as_str().unwrap_or("?")),
            None => "no flow record".to_string(),
        };
        let ok = delivered == s.expect_delivered;
        all_as_expected &= ok;
        let traffic = match s.probe {
            Probe::Tcp(a) => format!("tcp {a}"),
            Probe::Udp(a) => format!("udp {a}"),
            Probe::Ping(a) => format!("ping {a}"),
            Probe::Name(n) => format!("{n} → {dst}"),
            Probe::Neighbour(a) => format!("tcp {a} from {NEIGHBOUR_V4}"),
        };
        let result = if delivered { "delivered" } else { "blocked" };
        println!("{} {:<50} {:<42} {:<10} {}", if ok { "✔" } else { "✘" }, s.what, traffic, result, decided);
    }
    let page = agent.metrics()?;
    println!("\n  counters at http://127.0.0.1:9464/metrics (gateway namespace), non-zero:");
    for line in page.lines().filter(|l| l.starts_with("egress_rule_flows_total") && !l.ends_with(" 0")) {
        println!("    {line}");
    }
    let code = agent.stop()?;
    println!("\n  agent stopped (exit {}); removing the lab", code.map_or("signal".into(), |c| c.to_string()));
    drop(lab);
    Ok(all_as_expected)
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--client") {
        return client(&argv.next().unwrap_or_default());
    }
    cleanup::on_interrupt();
    match run() {
        Ok(true) => {
            println!("\nevery scenario behaved as the pack says.");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("\nsome scenarios did not behave as expected (✘).");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            cleanup::cleanup_now();
            ExitCode::FAILURE
        }
    }
}
