//! `cargo xtask bench compare`: the agent against iptables and nftables on
//! the same gateway, the same pack and the same traffic.
//!
//! The lab's gateway namespace forwards between the workload and an
//! upstream server at 100.64.0.1:7, a destination no rule of the synthetic
//! pack ([`synth::realistic_pack`], ClassBench-style) covers: the measured
//! flows are permitted by one rule placed after all the others, so every
//! new flow is judged against the whole set. Each system enforces the same
//! pack: the agent (TC, and XDP), iptables as a linear FORWARD chain after
//! an ESTABLISHED accept (legacy and `nf_tables` back ends), iptables with
//! ipset (three-part sets, or the source in the rule where the kernel has
//! no `hash:net,port,net`), nftables as a linear chain ([`egress_lab::translate`])
//! and nftables with concatenated interval sets
//! ([`egress_lab::layers`]: the ordered rules as a few layers of
//! sets that decide every packet as the order does).
//!
//! Measured: new connections per second (connect, 16-byte request, 16-byte
//! reply, close; several client threads) and their p99 latency; new TLS
//! connections per second and their p99 (rustls on both ends, a full
//! handshake naming `tls.bench.test`, 16 bytes each way; the agent permits
//! them by a WebGroup rule with `verify_names`, so it reads and judges
//! every ClientHello, after learning the name's address from a lookup
//! through the lab's resolver; iptables and nftables permit the address,
//! as they cannot check names); UDP
//! datagrams of 18 bytes per second received upstream (several senders,
//! each flow answered once so stateful firewalls see it established); over
//! interleaved rounds (A B C ..., then B C ... A, and so on: each system
//! takes every place in the order in turn; after a system is set up the
//! machine is let settle, so that what the last one left behind, such as
//! a killed agent's maps being freed, is not charged to it), medians; ratios are the median
//! over rounds of each round's rate against the no-filter rate of the same
//! round, so that drift of the machine between rounds cancels. The agent's
//! in-program ns per packet comes from `kernel.bpf_stats_enabled` over a
//! separate short connection test after each measured one (the stats cost
//! the program two clock reads a run, which the measured rates must not
//! carry). Writes `target/bench/compare.json` as
//! `[{"shape", "rules", "left_out", "system", "conn_per_s", "pps", "p99_us", "ratio_conn",
//! "tls_conn_per_s", "tls_p99_us", "ratio_tls", ...}]`.
//! Needs root.
//!
//! Shapes (`--shapes`, `shape` in each row; `synthetic` by default): the
//! shapes of `egress_lab::shapes`, each at every size, with the rules of
//! the shape that would decide a measured flow left out (`left_out`).
//!
//! Options: `--sizes 10,1000,10000`, `--shapes synthetic,per-agent,acl,fw,ipc`, `--rounds N`, `--seconds S`,
//! `--agent BIN`, `--out PATH`, `--clients N`, `--systems egress-tc,nftables-set` (the
//! no-filter baseline is always measured).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use egress_agent::datapath::Datapath;
use egress_lab::agent::AgentProcess;
use egress_lab::dnsmsg::Message;
use egress_lab::lab::Lab;
use egress_lab::loadgen::{UdpSink, serve_tcp_echo, settle, tcp_conn_rate, udp_pps};
use egress_lab::netns::within;
use egress_lab::resolver::{Resolver, Zone};
use egress_lab::shapes::Shape;
use egress_lab::tls::Certificate;
use egress_lab::tls_load::{TlsPair, serve_tls_echo, tls_conn_rate};
use egress_lab::{layers, translate};
use egress_policy::model::{Action, Destination, Location, Mode, Pack, PortRange, Protocol, Rule, Source, WebGroup};
use egress_policy::{pack_yaml, synth};
use serde::Serialize;

const SERVER: &str = "100.64.0.1:7";
const UDP_SERVER: &str = "100.64.0.1:9";
const TLS_SERVER: &str = "100.64.0.2:443";
/// The TLS server's name, which the agent's WebGroup rule covers.
const TLS_NAME: &str = "tls.bench.test";
const RESOLVER: &str = "100.64.0.53";
/// Client threads of the connection test, by default: enough to keep both
/// cores of the lab busy, so that the rate does not ride on wake-up latency.
const CLIENTS: usize = 8;
const UDP_SENDERS: usize = 2;

struct Opts {
    sizes: Vec<usize>,
    /// The shapes of pack, each at every size (`synthetic` by default).
    shapes: Vec<Shape>,
    rounds: usize,
    seconds: f64,
    agent: PathBuf,
    out: PathBuf,
    /// The systems to measure besides `none` (all by default).
    systems: Option<Vec<System>>,
    /// Client threads of the connection test (and server threads).
    clients: usize,
}

fn opts() -> Result<Opts> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().context("root")?.to_path_buf();
    let mut o = Opts {
        sizes: vec![10, 1_000, 10_000],
        shapes: vec![Shape::Synthetic],
        rounds: 5,
        seconds: 2.0,
        agent: root.join("target/release/egress-agent"),
        out: root.join("target/bench/compare.json"),
        systems: None,
        clients: CLIENTS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--sizes" => o.sizes = val()?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?,
            "--shapes" => o.shapes = val()?.split(',').map(Shape::parse).collect::<Result<_>>()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--seconds" => o.seconds = val()?.parse()?,
            "--agent" => o.agent = val()?.into(),
            "--out" => o.out = val()?.into(),
            "--clients" => o.clients = val()?.parse()?,
            "--systems" => {
                let names = val()?;
                let pick = |n: &str| System::ALL.into_iter().find(|s| s.name() == n.trim());
                let picked: Option<Vec<System>> = names.split(',').map(pick).collect();
                let all: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
                o.systems = Some(picked.with_context(|| format!("--systems {names}: known are {}", all.join(", ")))?);
            }
            "--quick" => {
                o.sizes = vec![10, 1_000];
                o.rounds = 1;
                o.seconds = 1.0;
            }
            other => bail!(
                "unknown argument `{other}` (--sizes, --shapes, --rounds, --seconds, --agent, --out, --systems, --clients, --quick)"
            ),
        }
    }
    ensure!(o.rounds >= 1 && o.seconds > 0.0 && o.clients >= 1, "need a round, some seconds and a client");
    ensure!(o.shapes.iter().all(|&s| s == Shape::Synthetic) || o.sizes.iter().all(|&n| n >= 5), "shapes need 5+ rules");
    Ok(o)
}

/// A permit of everyone to `destination` on one port, as the measured
/// flows' rules are.
fn permit(name: &str, priority: u16, destination: Destination, protocol: Protocol, port: u16, names: bool) -> Rule {
    Rule {
        name: name.into(),
        priority,
        source: Source::Any,
        destinations: vec![destination],
        protocol,
        ports: Some(vec![PortRange { lo: port, hi: port }]),
        action: Action::Permit,
        mode: Mode::Enforce,
        log: false,
        verify_names: names,
        location: Location::default(),
    }
}

/// The pack of `shape` and about `rules` rules with the measured flows'
/// permits (TCP to port 7, UDP to port 9, TLS to port 443, DNS to the
/// lab's resolver) just before its final default rule. Rules of the shape
/// that would decide a measured flow before them (ClassBench-like sets
/// hold rules of any source and destination; their sources nest under the
/// lab's 10.10/16) are left out, so that every measured flow is judged
/// against the whole set: the second value says how many. `by_name`: the
/// TLS server is permitted by a WebGroup rule that verifies names (the
/// agent's pack); otherwise by its address (what iptables and nftables
/// are given).
fn pack(shape: Shape, rules: usize, by_name: bool) -> Result<(Pack, usize)> {
    let size = if shape == Shape::PerAgent { rules / 5 } else { rules.max(2) };
    let mut p = shape.pack(size, synth::DEFAULT_SEED)?;
    let resolver: std::net::IpAddr = RESOLVER.parse().expect("address");
    let tls: SocketAddr = TLS_SERVER.parse().expect("address");
    let removed = leave_out_deciders(&mut p, &[(SERVER, 6), (UDP_SERVER, 17), (TLS_SERVER, 6), ("100.64.0.53:53", 17)]);
    p.dns.resolvers = vec![resolver];
    p.dns.max_ttl = p.dns.max_ttl.max(3600);
    p.webgroups.insert(
        "bench-tls".into(),
        WebGroup {
            name: "bench-tls".into(),
            domains: vec![egress_policy::domain::parse_pattern(TLS_NAME).expect("pattern")],
            location: Location::default(),
        },
    );
    let tls_destination = if by_name {
        Destination::WebGroup("bench-tls".into())
    } else {
        Destination::Cidrs(vec![ipnet::IpNet::from(tls.ip())])
    };
    let at = p.rules.len() - 1;
    let priority = p.rules[at - 1].priority + 1;
    let bench = Destination::Cidrs(vec!["100.64.0.1/32".parse().expect("prefix")]);
    let added = [
        permit("allow-bench", priority, bench.clone(), Protocol::Tcp, 7, false),
        permit("allow-bench-udp", priority + 1, bench, Protocol::Udp, 9, false),
        permit("allow-bench-tls", priority + 2, tls_destination, Protocol::Tcp, tls.port(), by_name),
        permit(
            "allow-bench-dns",
            priority + 3,
            Destination::Cidrs(vec![ipnet::IpNet::from(resolver)]),
            Protocol::Udp,
            53,
            false,
        ),
    ];
    let n = added.len() as u16;
    for (i, rule) in added.into_iter().enumerate() {
        p.rules.insert(at + i, rule);
    }
    let last = p.rules.len() - 1;
    p.rules[last].priority = p.rules[last].priority.max(priority + n);
    Ok((p, removed))
}

/// Leaves out of `pack` (but its final default rule) every rule that
/// decides one of the `flows` (server, IP protocol) from the lab's
/// workload; returns how many.
fn leave_out_deciders(pack: &mut Pack, flows: &[(&str, u8)]) -> usize {
    use egress_policy::evaluate::{Outcome, Probe, evaluate};
    let src: std::net::IpAddr = egress_lab::lab::WORKLOAD_V4.parse().expect("address");
    let mut removed = 0;
    loop {
        let last = pack.rules.len() - 1;
        let decider = flows.iter().find_map(|(server, proto)| {
            let to: SocketAddr = server.parse().expect("address");
            match evaluate(pack, &Probe { src, dst: to.ip(), proto: *proto, dport: to.port() }) {
                Outcome::Rule(r) if r < last => Some(r),
                _ => None,
            }
        });
        let Some(r) = decider else { return removed };
        pack.rules.remove(r);
        removed += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Default)]
enum System {
    #[default]
    None,
    TcEmpty,
    EgressTc,
    EgressXdp,
    IptablesLegacy,
    IptablesNft,
    IptablesIpset,
    NftLinear,
    NftSet,
}

impl System {
    const ALL: [System; 9] = [
        System::None,
        System::TcEmpty,
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
            System::TcEmpty => "tc-empty",
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
    _empty: Option<Datapath>,
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

/// How iptables gets the pack's layers as ipsets on this kernel: in
/// three-part sets (`hash:net,port,net`, one rule a layer) where the
/// kernel has them, else with the source in the rule and two-part sets
/// (`hash:net,port`, a rule per layer and source); `Err` if neither.
fn ipset_kind(lab: &Lab) -> Result<bool, String> {
    let probe =
        |ty: &str| in_gateway(lab, &["ipset", "restore"], &format!("create egress_probe {ty}\ndestroy egress_probe\n"));
    match (probe("hash:net,port,net").and(probe("hash:net,net")), probe("hash:net,port")) {
        (Ok(()), _) => Ok(true),
        (Err(_), Ok(())) => Ok(false),
        (Err(e), Err(_)) => Err(format!("ipset cannot create hash:net,port sets here ({})", e.to_string().trim())),
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
    /// `three_part`: see [`ipset_kind`].
    fn of(pack: &Pack, three_part: bool) -> Translated {
        let ipsets = if three_part { layers::ipset(pack) } else { layers::ipset_by_source(pack) };
        Translated {
            iptables: translate::iptables(pack),
            nft_linear: translate::nft_linear(pack),
            nft_sets: layers::nft_sets(pack),
            ipset_names: layers::ipset_names(&ipsets.0),
            ipsets,
        }
    }
}

fn enforce<'a>(
    lab: &'a Lab,
    system: System,
    t: &Translated,
    policy: &std::path::Path,
    agent: &std::path::Path,
) -> Result<Enforcing<'a>> {
    let (running_agent, empty_program) = match system {
        System::TcEmpty => {
            let attached = within(&lab.gateway.name, || -> Result<Datapath> {
                let mut dp = Datapath::load()?;
                dp.attach_empty("lan0")?;
                Ok(dp)
            })??;
            (None, Some(attached))
        }
        System::EgressTc => (Some(AgentProcess::start_at(lab, agent, policy, &["--no-pin"])?), None),
        System::EgressXdp => (Some(AgentProcess::start_at(lab, agent, policy, &["--no-pin", "--xdp"])?), None),
        _ => (None, None),
    };
    let mut e = Enforcing { lab, system, ipsets: Vec::new(), _agent: running_agent, _empty: empty_program };
    match system {
        System::None | System::TcEmpty | System::EgressTc | System::EgressXdp => {}
        System::IptablesLegacy => in_gateway(lab, &["iptables-legacy-restore"], &t.iptables)?,
        System::IptablesNft => in_gateway(lab, &["iptables-nft-restore"], &t.iptables)?,
        System::IptablesIpset => {
            e.ipsets.clone_from(&t.ipset_names);
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

/// Runs and total ns so far (`bpf_stats_enabled`) of the agent's judging
/// program (`egress_tc` or `egress_xdp`; for `tc-empty`, the empty program
/// on both hooks) and of its DNS learner (`egress_dns`, on every packet
/// towards the workloads); of several loaded, the one that ran most;
/// `None` where none is loaded. bpftool leaves out counters that are zero.
fn program_stats() -> [Option<(f64, f64)>; 2] {
    let listed = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok());
    let find = |names: &[&str]| {
        listed
            .as_ref()?
            .as_array()?
            .iter()
            .filter(|p| names.iter().any(|n| p["name"] == *n))
            .map(|p| (p["run_cnt"].as_f64().unwrap_or(0.0), p["run_time_ns"].as_f64().unwrap_or(0.0)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    };
    [find(&["egress_tc", "egress_xdp", "egress_empty"]), find(&["egress_dns"])]
}

/// ns per run between two readings of [`program_stats`].
fn per_run(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<f64> {
    let ((n0, t0), (n1, t1)) = (before?, after?);
    (n1 > n0).then(|| (t1 - t0) / (n1 - n0))
}

#[derive(Serialize)]
struct Row {
    /// `synthetic`, or a shape of `egress_lab::shapes`.
    shape: &'static str,
    rules: usize,
    /// Rules of the shape left out because they decided a measured flow.
    left_out: usize,
    system: &'static str,
    conn_per_s: f64,
    pps: Option<f64>,
    p99_us: f64,
    ratio_conn: f64,
    ratio_pps: Option<f64>,
    tls_conn_per_s: f64,
    tls_p99_us: f64,
    ratio_tls: f64,
    program_ns: Option<f64>,
    dns_program_ns: Option<f64>,
    rounds: usize,
}

/// One system's measurements over the rounds.
#[derive(Default)]
struct Runs {
    system: System,
    conns: Vec<f64>,
    p99s: Vec<f64>,
    pps: Vec<f64>,
    tls_conns: Vec<f64>,
    tls_p99s: Vec<f64>,
    progs: Vec<f64>,
    dns_progs: Vec<f64>,
}

/// Seconds of the connection test that measures in-program time.
const PROGRAM_SECONDS: f64 = 0.5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The no-filter baseline's measurements, for the ratios.
struct Baseline {
    conns: Vec<f64>,
    pps: Vec<f64>,
    tls: Vec<f64>,
}

/// The lab's servers, and what every measurement shares.
struct Bench<'a> {
    lab: &'a Lab,
    o: &'a Opts,
    server: SocketAddr,
    udp_server: SocketAddr,
    tls_server: SocketAddr,
    tls: &'a TlsPair,
    sink: &'a UdpSink,
}

impl Bench<'_> {
    /// One measurement of one system: set up, let the machine settle, the
    /// connection test (and for the BPF systems the in-program time), the
    /// UDP test, torn down.
    fn measure(
        &self,
        runs: &mut Runs,
        t: &Translated,
        policy: &std::path::Path,
        size: usize,
        round: usize,
    ) -> Result<()> {
        let (lab, o) = (self.lab, self.o);
        let guard = enforce(lab, runs.system, t, policy, &o.agent).with_context(|| runs.system.name())?;
        settle(Duration::from_secs(5));
        tcp_conn_rate(&lab.workload.name, self.server, o.clients, 0.3)?; // warm up
        let (conns, p99) = tcp_conn_rate(&lab.workload.name, self.server, o.clients, o.seconds)?;
        if matches!(runs.system, System::TcEmpty | System::EgressTc | System::EgressXdp) {
            // In-program time per packet of a connection test alone.
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
            let [judge_before, dns_before] = program_stats();
            tcp_conn_rate(&lab.workload.name, self.server, o.clients, PROGRAM_SECONDS)?;
            let [judge_after, dns_after] = program_stats();
            runs.progs.extend(per_run(judge_before, judge_after));
            runs.dns_progs.extend(per_run(dns_before, dns_after));
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
        }
        let pps = udp_pps(&lab.workload.name, self.udp_server, UDP_SENDERS, o.seconds.min(2.0), self.sink)?;
        // The agent learns the TLS server's address from this answer.
        lookup(lab, TLS_NAME)?;
        let ns = &lab.workload.name;
        tls_conn_rate(ns, self.tls_server, TLS_NAME, self.tls, o.clients, 0.3).context("TLS warm-up")?;
        let (tls, tls_p99) = tls_conn_rate(ns, self.tls_server, TLS_NAME, self.tls, o.clients, o.seconds)?;
        drop(guard);
        eprintln!(
            "bench_compare: {size} rules, round {round}, {}: {conns:.0} conn/s, p99 {p99:.0} µs, {pps:.0} pps, {tls:.0} TLS conn/s, p99 {tls_p99:.0} µs",
            runs.system.name()
        );
        runs.conns.push(conns);
        runs.p99s.push(p99);
        runs.pps.push(pps);
        runs.tls_conns.push(tls);
        runs.tls_p99s.push(tls_p99);
        Ok(())
    }

    /// Every system over the rounds for a pack of `size` rules, each round
    /// in another order; a row per system.
    fn size(
        &self,
        (shape, size): (Shape, usize),
        three_part: bool,
        skipped: &[(System, String)],
        dir: &std::path::Path,
    ) -> Result<Vec<Row>> {
        let o = self.o;
        let (by_address, left_out) = pack(shape, size, false)?;
        let translated = Translated::of(&by_address, three_part);
        let policy = dir.join(format!("pack-{}-{size}.yaml", shape.name()));
        let (by_name, _) = pack(shape, size, true)?;
        let size = by_name.rules.len();
        std::fs::write(&policy, pack_yaml::to_yaml(&by_name))?;
        let wanted = |s: &System| *s == System::None || o.systems.as_ref().is_none_or(|w| w.contains(s));
        let mut runs: Vec<Runs> = System::ALL
            .iter()
            .filter(|s| wanted(s) && !skipped.iter().any(|(k, _)| k == *s))
            .map(|s| Runs { system: *s, ..Runs::default() })
            .collect();
        let systems = runs.len();
        for round in 0..o.rounds {
            for i in 0..systems {
                self.measure(&mut runs[(round + i) % systems], &translated, &policy, size, round)?;
            }
        }
        let baseline =
            Baseline { conns: runs[0].conns.clone(), pps: runs[0].pps.clone(), tls: runs[0].tls_conns.clone() };
        Ok(runs.into_iter().map(|r| row((shape, size, left_out), r, &baseline, o.rounds)).collect())
    }
}

/// A system's row: medians, and ratios against the baseline of each round.
fn row((shape, size, left_out): (Shape, usize, usize), runs: Runs, baseline: &Baseline, rounds: usize) -> Row {
    let paired = |v: &[f64], b: &[f64]| median(v.iter().zip(b).map(|(x, y)| x / y).collect());
    let (ratio_conn, ratio_pps) = (paired(&runs.conns, &baseline.conns), paired(&runs.pps, &baseline.pps));
    let ratio_tls = paired(&runs.tls_conns, &baseline.tls);
    Row {
        shape: shape.name(),
        rules: size,
        left_out,
        system: runs.system.name(),
        conn_per_s: median(runs.conns),
        pps: Some(median(runs.pps)),
        p99_us: median(runs.p99s),
        ratio_conn,
        ratio_pps: Some(ratio_pps),
        tls_conn_per_s: median(runs.tls_conns),
        tls_p99_us: median(runs.tls_p99s),
        ratio_tls,
        program_ns: (!runs.progs.is_empty()).then(|| median(runs.progs)),
        dns_program_ns: (!runs.dns_progs.is_empty()).then(|| median(runs.dns_progs)),
        rounds,
    }
}

/// The rows as a table.
fn print_rows(rows: &[Row], o: &Opts) {
    println!(
        "\nNew connections per second through the gateway, medians of {} interleaved rounds of {} s;",
        o.rounds, o.seconds
    );
    println!("ratios: median over rounds of the rate against the no-filter rate of the same round");
    println!(
        "{:>9} {:>6} {:<16} {:>10} {:>6} {:>9} {:>10} {:>6} {:>11} {:>10}",
        "shape", "rules", "system", "conn/s", "ratio", "p99 µs", "UDP pps", "ratio", "prog ns/pkt", "dns ns/pkt"
    );
    let ns = |n: Option<f64>| n.map_or_else(|| "-".into(), |n| format!("{n:.0}"));
    for r in rows {
        let (pps, ratio_pps) = (r.pps.unwrap_or(0.0), r.ratio_pps.unwrap_or(0.0));
        println!(
            "{:>9} {:>6} {:<16} {:>10.0} {:>6.2} {:>9.0} {:>10.0} {:>6.2} {:>11} {:>10}",
            r.shape,
            r.rules,
            r.system,
            r.conn_per_s,
            r.ratio_conn,
            r.p99_us,
            pps,
            ratio_pps,
            ns(r.program_ns),
            ns(r.dns_program_ns)
        );
    }
    println!("\nNew TLS connections per second (full handshake naming {TLS_NAME}, 16 bytes each way), same rounds;");
    println!("the agent reads and judges every ClientHello's name, the others permit the address");
    println!("{:>9} {:>6} {:<16} {:>10} {:>6} {:>9}", "shape", "rules", "system", "TLS conn/s", "ratio", "p99 µs");
    for r in rows {
        println!(
            "{:>9} {:>6} {:<16} {:>10.0} {:>6.2} {:>9.0}",
            r.shape, r.rules, r.system, r.tls_conn_per_s, r.ratio_tls, r.tls_p99_us
        );
    }
    for r in rows.iter().filter(|r| r.left_out > 0 && r.system == "none") {
        println!(
            "{} {}: {} rules of the shape decided a measured flow and were left out",
            r.shape, r.rules, r.left_out
        );
    }
}

/// A lookup of `name` (type A) from the workload through the lab's
/// resolver; fails unless it is answered with an address.
fn lookup(lab: &Lab, name: &str) -> Result<()> {
    let resolver = SocketAddr::new(RESOLVER.parse()?, 53);
    let query = Message::query(0x5151, name, 1).to_bytes();
    let name = name.to_string();
    within(&lab.workload.name, move || -> Result<()> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        sock.send_to(&query, resolver)?;
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).context("no answer from the lab's resolver")?;
        ensure!(n >= 12, "a short answer");
        let (rcode, answers) = (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]]));
        ensure!(rcode == 0 && answers > 0, "no address for {name} (RCODE {rcode})");
        Ok(())
    })?
}

fn main() -> Result<()> {
    let o = opts()?;
    let tls_server: SocketAddr = TLS_SERVER.parse()?;
    let lab = Lab::new(&["100.64.0.1", "100.64.0.2", RESOLVER]).context("lab (run as root)")?;
    for (k, v) in [("net.ipv4.tcp_tw_reuse", "1"), ("net.ipv4.ip_local_port_range", "1024 65535")] {
        lab.workload.sysctl(k, v)?;
    }
    let _ = lab.gateway.sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1");
    let server: SocketAddr = SERVER.parse()?;
    let udp_server: SocketAddr = UDP_SERVER.parse()?;
    serve_tcp_echo(&lab.upstream.name, server, o.clients)?;
    let sink = UdpSink::start(&lab.upstream.name, udp_server)?;
    let dir = std::env::temp_dir().join(format!("egress-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cert = Certificate::self_signed(&dir, TLS_NAME)?;
    let tls = TlsPair::from_pem(&cert.cert, &cert.key)?;
    serve_tls_echo(&lab.upstream.name, tls_server, o.clients, &tls)?;
    let zone = Zone { hosts: vec![(TLS_NAME.into(), vec![tls_server.ip()])], ttl: 3600, ..Zone::default() };
    let _resolver = Resolver::start(&lab, &[RESOLVER.parse()?], &zone)?;
    let ipsets = ipset_kind(&lab);
    let skipped: Vec<(System, String)> =
        ipsets.clone().err().map(|why| (System::IptablesIpset, why)).into_iter().collect();
    for (system, why) in &skipped {
        eprintln!("bench_compare: skipping {}: {why}", system.name());
    }
    if ipsets == Ok(false) {
        eprintln!(
            "bench_compare: no hash:net,port,net sets here: iptables-ipset puts the source in the rule, destination and port in hash:net,port sets"
        );
    }
    let bench = Bench { lab: &lab, o: &o, server, udp_server, tls_server, tls: &tls, sink: &sink };
    let mut rows = Vec::new();
    for &shape in &o.shapes {
        for &size in &o.sizes {
            rows.extend(bench.size((shape, size), ipsets == Ok(true), &skipped, &dir)?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (system, why) in &skipped {
        println!("not measured: {}: {why}", system.name());
    }
    print_rows(&rows, &o);
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", o.out.display());
    Ok(())
}
