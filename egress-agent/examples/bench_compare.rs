//! `cargo xtask bench compare`: the agent against iptables and nftables on
//! the same gateway, the same pack and the same traffic.
//!
//! The lab's gateway namespace forwards between the workload and an
//! upstream server at 100.64.0.1:7, a destination no rule of the synthetic
//! pack ([`synth::realistic_pack`], ClassBench-style) covers: the measured
//! flows are permitted by one rule placed after all the others, so every
//! new flow is judged against the whole set. Each system enforces the same
//! pack: the agent (TC, and XDP), iptables as a linear FORWARD chain after
//! an ESTABLISHED accept (legacy and nf_tables back ends), iptables with
//! ipset, nftables as a linear chain ([`egress_agent::testkit::translate`])
//! and nftables with concatenated interval sets
//! ([`egress_agent::testkit::layers`]: the ordered rules as a few layers of
//! sets that decide every packet as the order does).
//!
//! Measured: new connections per second (connect, 16-byte request, 16-byte
//! reply, close; several client threads) and their p99 latency; UDP
//! datagrams of 18 bytes per second received upstream (several senders,
//! each flow answered once so stateful firewalls see it established); over
//! interleaved rounds (A B C ... A B C ...), medians, ratios to the
//! no-filter rates of the same run; the agent's in-program ns per packet
//! of the connection test from `kernel.bpf_stats_enabled`. Writes `target/bench/compare.json` as
//! `[{"rules", "system", "conn_per_s", "pps", "p99_us", "ratio_conn", ...}]`.
//! Needs root.
//!
//! Options: `--sizes 10,1000,10000`, `--rounds N`, `--seconds S`,
//! `--agent BIN`, `--out PATH`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};
use egress_agent::policy::model::{Action, Destination, Mode, Pack, PortRange, Protocol, Rule, Source};
use egress_agent::testkit::agent::AgentProcess;
use egress_agent::testkit::lab::Lab;
use egress_agent::testkit::loadgen::{UdpSink, serve_tcp_echo, tcp_conn_rate, udp_pps};
use egress_agent::testkit::{layers, pack_yaml, synth, translate};
use serde::Serialize;

const SERVER: &str = "100.64.0.1:7";
const UDP_SERVER: &str = "100.64.0.1:9";
const CLIENTS: usize = 4;
const UDP_SENDERS: usize = 2;

struct Opts {
    sizes: Vec<usize>,
    rounds: usize,
    seconds: f64,
    agent: PathBuf,
    out: PathBuf,
}

fn opts() -> Result<Opts> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("root")?.to_path_buf();
    let mut o = Opts {
        sizes: vec![10, 1_000, 10_000],
        rounds: 5,
        seconds: 2.0,
        agent: root.join("target/release/egress-agent"),
        out: root.join("target/bench/compare.json"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--sizes" => o.sizes = val()?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--seconds" => o.seconds = val()?.parse()?,
            "--agent" => o.agent = val()?.into(),
            "--out" => o.out = val()?.into(),
            "--quick" => {
                o.sizes = vec![10, 1_000];
                o.rounds = 1;
                o.seconds = 1.0;
            }
            other => bail!("unknown argument `{other}` (--sizes, --rounds, --seconds, --agent, --out, --quick)"),
        }
    }
    ensure!(o.rounds >= 1 && o.seconds > 0.0, "need a round and some seconds");
    Ok(o)
}

/// The synthetic pack with the measured flows' permits (TCP to port 7, UDP
/// to port 9) just before its final default rule.
fn pack(rules: usize) -> Pack {
    let mut p = synth::realistic_pack(rules.max(2), synth::DEFAULT_SEED);
    let at = p.rules.len() - 1;
    let priority = p.rules[at - 1].priority + 1;
    for (i, (name, protocol, port)) in [("allow-bench", Protocol::Tcp, 7), ("allow-bench-udp", Protocol::Udp, 9)].into_iter().enumerate() {
        p.rules.insert(
            at + i,
            Rule {
                name: name.into(),
                priority: priority + i as u16,
                source: Source::Any,
                destinations: vec![Destination::Cidrs(vec!["100.64.0.1/32".parse().expect("prefix")])],
                protocol,
                ports: Some(vec![PortRange { lo: port, hi: port }]),
                action: Action::Permit,
                mode: Mode::Enforce,
                log: false,
                location: Default::default(),
            },
        );
    }
    let last = p.rules.len() - 1;
    p.rules[last].priority = p.rules[last].priority.max(priority + 2);
    p
}

#[derive(Clone, Copy, Debug, PartialEq, Default)]
enum System {
    #[default]
    None,
    EgressTc,
    EgressXdp,
    IptablesLegacy,
    IptablesNft,
    IptablesIpset,
    NftLinear,
    NftSet,
}

impl System {
    const ALL: [System; 8] = [
        System::None,
        System::EgressTc,
        System::EgressXdp,
        System::IptablesLegacy,
        System::IptablesNft,
        System::IptablesIpset,
        System::NftLinear,
        System::NftSet,
    ];
    fn name(self) -> &'static str {
        match self {
            System::None => "none",
            System::EgressTc => "egress-tc",
            System::EgressXdp => "egress-xdp",
            System::IptablesLegacy => "iptables-legacy",
            System::IptablesNft => "iptables-nft",
            System::IptablesIpset => "iptables-ipset",
            System::NftLinear => "nftables-linear",
            System::NftSet => "nftables-set",
        }
    }
}

/// Runs `cmd` in the gateway namespace with `input` on standard input.
fn in_gateway(lab: &Lab, cmd: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.gateway.name])
        .args(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{cmd:?}: {}", err.chars().take(600).collect::<String>());
    Ok(())
}

/// A system enforcing the pack; torn down on drop (agent stopped, rules
/// flushed, sets destroyed).
struct Enforcing<'a> {
    lab: &'a Lab,
    system: System,
    ipsets: Vec<String>,
    _agent: Option<AgentProcess>,
}

impl Drop for Enforcing<'_> {
    fn drop(&mut self) {
        let flush: &[&str] = match self.system {
            System::IptablesLegacy | System::IptablesIpset => &["iptables-legacy", "-F", "FORWARD"],
            System::IptablesNft => &["iptables-nft", "-F", "FORWARD"],
            System::NftLinear | System::NftSet => &["nft", "delete", "table", "ip", "egress_bench"],
            _ => &[],
        };
        if !flush.is_empty() {
            let _ = in_gateway(self.lab, flush, "");
        }
        for set in &self.ipsets {
            let _ = in_gateway(self.lab, &["ipset", "destroy", set], "");
        }
    }
}

/// Systems this machine cannot run, and why: the ipset translation needs
/// the `hash:net,port,net` set type, which some kernels are built without.
fn unavailable(lab: &Lab) -> Vec<(System, String)> {
    let probe = "create egress_probe hash:net,port,net\ndestroy egress_probe\n";
    match in_gateway(lab, &["ipset", "restore"], probe) {
        Ok(()) => Vec::new(),
        Err(e) => vec![(System::IptablesIpset, format!("ipset cannot create a hash:net,port,net set here ({})", e.to_string().trim()))],
    }
}

/// What each firewall is given: the same pack, translated once per size.
struct Translated {
    iptables: String,
    nft_linear: String,
    nft_sets: Vec<String>,
    ipsets: (String, String),
    ipset_names: Vec<String>,
}

impl Translated {
    fn of(pack: &Pack) -> Translated {
        let ipsets = layers::ipset(pack);
        Translated {
            iptables: translate::iptables(pack),
            nft_linear: translate::nft_linear(pack),
            nft_sets: layers::nft_sets(pack),
            ipset_names: layers::ipset_names(&ipsets.0),
            ipsets,
        }
    }
}

fn enforce<'a>(lab: &'a Lab, system: System, t: &Translated, policy: &std::path::Path, agent: &std::path::Path) -> Result<Enforcing<'a>> {
    let mut e = Enforcing { lab, system, ipsets: Vec::new(), _agent: None };
    match system {
        System::None => {}
        System::EgressTc => e._agent = Some(AgentProcess::start_at(lab, agent, policy, &["--no-pin"])?),
        System::EgressXdp => e._agent = Some(AgentProcess::start_at(lab, agent, policy, &["--no-pin", "--xdp"])?),
        System::IptablesLegacy => in_gateway(lab, &["iptables-legacy-restore"], &t.iptables)?,
        System::IptablesNft => in_gateway(lab, &["iptables-nft-restore"], &t.iptables)?,
        System::IptablesIpset => {
            e.ipsets = t.ipset_names.clone();
            in_gateway(lab, &["ipset", "restore", "-exist"], &t.ipsets.0)?;
            in_gateway(lab, &["iptables-legacy-restore"], &t.ipsets.1)?;
        }
        System::NftLinear => in_gateway(lab, &["nft", "-f", "-"], &t.nft_linear)?,
        System::NftSet => {
            for script in &t.nft_sets {
                in_gateway(lab, &["nft", "-f", "-"], script)?;
            }
        }
    }
    Ok(e)
}

/// Runs and total ns so far of the agent's judging program
/// (`bpf_stats_enabled`), or `None` if it is not loaded.
fn program_stats() -> Option<(f64, f64)> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.iter().filter(|p| p["name"] == "egress_tc" || p["name"] == "egress_xdp").find_map(|p| {
        let (ns, cnt) = (p["run_time_ns"].as_f64()?, p["run_cnt"].as_f64()?);
        (cnt > 0.0).then_some((cnt, ns))
    })
}

#[derive(Serialize)]
struct Row {
    rules: usize,
    system: &'static str,
    conn_per_s: f64,
    pps: Option<f64>,
    p99_us: f64,
    ratio_conn: f64,
    ratio_pps: Option<f64>,
    program_ns: Option<f64>,
    rounds: usize,
}

/// One system's measurements over the rounds.
#[derive(Default)]
struct Runs {
    system: System,
    conns: Vec<f64>,
    p99s: Vec<f64>,
    pps: Vec<f64>,
    progs: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let o = opts()?;
    let lab = Lab::new(&["100.64.0.1"]).context("lab (run as root)")?;
    for (k, v) in [("net.ipv4.tcp_tw_reuse", "1"), ("net.ipv4.ip_local_port_range", "1024 65535")] {
        lab.workload.sysctl(k, v)?;
    }
    let _ = lab.gateway.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1");
    let server: SocketAddr = SERVER.parse()?;
    let udp_server: SocketAddr = UDP_SERVER.parse()?;
    serve_tcp_echo(&lab.upstream.name, server, CLIENTS)?;
    let sink = UdpSink::start(&lab.upstream.name, udp_server)?;
    let skipped = unavailable(&lab);
    for (system, why) in &skipped {
        eprintln!("bench_compare: skipping {}: {why}", system.name());
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let dir = std::env::temp_dir().join(format!("egress-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for &size in &o.sizes {
        let p = pack(size);
        let translated = Translated::of(&p);
        let policy = dir.join(format!("pack-{size}.yaml"));
        std::fs::write(&policy, pack_yaml::to_yaml(&p))?;
        let mut runs: Vec<Runs> =
            System::ALL.iter().filter(|s| !skipped.iter().any(|(k, _)| k == *s)).map(|s| Runs { system: *s, ..Runs::default() }).collect();
        for round in 0..o.rounds {
            for r in runs.iter_mut() {
                let guard = enforce(&lab, r.system, &translated, &policy, &o.agent).with_context(|| r.system.name())?;
                tcp_conn_rate(&lab.workload.name, server, CLIENTS, 0.3)?; // warm up
                let before = program_stats();
                let (c, l) = tcp_conn_rate(&lab.workload.name, server, CLIENTS, o.seconds)?;
                // In-program time per packet of the connection test alone.
                if let (Some((n0, t0)), Some((n1, t1))) = (before, program_stats()) {
                    r.progs.push((t1 - t0) / (n1 - n0).max(1.0));
                }
                let pps = udp_pps(&lab.workload.name, udp_server, UDP_SENDERS, o.seconds.min(2.0), &sink)?;
                drop(guard);
                eprintln!("bench_compare: {size} rules, round {round}, {}: {c:.0} conn/s, p99 {l:.0} µs, {pps:.0} pps", r.system.name());
                r.conns.push(c);
                r.p99s.push(l);
                r.pps.push(pps);
            }
        }
        let base = median(runs[0].conns.clone());
        let base_pps = median(runs[0].pps.clone());
        for r in runs {
            let (c, pps) = (median(r.conns), median(r.pps));
            rows.push(Row {
                rules: size,
                system: r.system.name(),
                conn_per_s: c,
                pps: Some(pps),
                p99_us: median(r.p99s),
                ratio_conn: c / base,
                ratio_pps: Some(pps / base_pps),
                program_ns: (!r.progs.is_empty()).then(|| median(r.progs)),
                rounds: o.rounds,
            });
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let _ = std::fs::remove_dir_all(&dir);
    for (system, why) in &skipped {
        println!("not measured: {}: {why}", system.name());
    }
    println!("\nNew connections per second through the gateway, medians of {} interleaved rounds of {} s", o.rounds, o.seconds);
    println!("{:>6} {:<16} {:>10} {:>6} {:>9} {:>10} {:>6} {:>11}", "rules", "system", "conn/s", "ratio", "p99 µs", "UDP pps", "ratio", "prog ns/pkt");
    for r in &rows {
        let prog = r.program_ns.map(|n| format!("{n:.0}")).unwrap_or_else(|| "-".into());
        let (pps, rp) = (r.pps.unwrap_or(0.0), r.ratio_pps.unwrap_or(0.0));
        println!(
            "{:>6} {:<16} {:>10.0} {:>6.2} {:>9.0} {:>10.0} {:>6.2} {:>11}",
            r.rules, r.system, r.conn_per_s, r.ratio_conn, r.p99_us, pps, rp, prog
        );
    }
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", o.out.display());
    Ok(())
}
