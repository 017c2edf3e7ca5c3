//! `cargo xtask bench compare`: the agent against iptables and nftables on
//! the same gateway, the same pack and the same traffic.
//!
//! The lab's gateway namespace forwards between the workload and an
//! upstream server at 100.64.0.1:7, a destination no rule of the synthetic
//! pack ([`synth::realistic_pack`], ClassBench-style) covers: the measured
//! flows are permitted by one rule placed after all the others, so every
//! new flow is judged against the whole set. Each system enforces the same
//! pack: the agent (TC, and XDP), iptables as a linear FORWARD chain after
//! an ESTABLISHED accept (legacy and nf_tables back ends), and nftables as
//! a linear chain ([`egress_agent::testkit::translate`]).
//!
//! Measured: new connections per second (connect, 16-byte request, 16-byte
//! reply, close; several client threads) and their p99 latency, over
//! interleaved rounds (A B C ... A B C ...), medians, ratios to the
//! no-filter rate of the same run; the agent's in-program ns per packet
//! from `kernel.bpf_stats_enabled`. Writes `target/bench/compare.json` as
//! `[{"rules", "system", "conn_per_s", "pps", "p99_us", "ratio_conn", ...}]`
//! (`pps` is not measured yet: null). Needs root.
//!
//! Options: `--sizes 10,1000,10000`, `--rounds N`, `--seconds S`,
//! `--agent BIN`, `--out PATH`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use egress_agent::policy::model::{Action, Destination, Mode, Pack, PortRange, Protocol, Rule, Source};
use egress_agent::testkit::agent::AgentProcess;
use egress_agent::testkit::lab::Lab;
use egress_agent::testkit::netns::within;
use egress_agent::testkit::{pack_yaml, synth, translate};
use serde::Serialize;

const SERVER: &str = "100.64.0.1:7";
const CLIENTS: usize = 4;

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
        rounds: 3,
        seconds: 3.0,
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

/// The synthetic pack with the measured flow's permit just before its
/// final default rule.
fn pack(rules: usize) -> Pack {
    let mut p = synth::realistic_pack(rules.max(2), synth::DEFAULT_SEED);
    let at = p.rules.len() - 1;
    let priority = p.rules[at - 1].priority + 1;
    p.rules.insert(
        at,
        Rule {
            name: "allow-bench".into(),
            priority,
            source: Source::Any,
            destinations: vec![Destination::Cidrs(vec!["100.64.0.1/32".parse().expect("prefix")])],
            protocol: Protocol::Tcp,
            ports: Some(vec![PortRange { lo: 7, hi: 7 }]),
            action: Action::Permit,
            mode: Mode::Enforce,
            log: false,
            location: Default::default(),
        },
    );
    p
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    None,
    EgressTc,
    EgressXdp,
    IptablesLegacy,
    IptablesNft,
    NftLinear,
}

impl System {
    const ALL: [System; 6] =
        [System::None, System::EgressTc, System::EgressXdp, System::IptablesLegacy, System::IptablesNft, System::NftLinear];
    fn name(self) -> &'static str {
        match self {
            System::None => "none",
            System::EgressTc => "egress-tc",
            System::EgressXdp => "egress-xdp",
            System::IptablesLegacy => "iptables-legacy",
            System::IptablesNft => "iptables-nft",
            System::NftLinear => "nftables-linear",
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
    ensure!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A system enforcing the pack; torn down on drop (agent stopped, rules flushed).
struct Enforcing<'a> {
    lab: &'a Lab,
    system: System,
    _agent: Option<AgentProcess>,
}

impl Drop for Enforcing<'_> {
    fn drop(&mut self) {
        let flush: &[&str] = match self.system {
            System::IptablesLegacy => &["iptables-legacy", "-F", "FORWARD"],
            System::IptablesNft => &["iptables-nft", "-F", "FORWARD"],
            System::NftLinear => &["nft", "delete", "table", "ip", "egress_bench"],
            _ => &[],
        };
        if !flush.is_empty() {
            let _ = in_gateway(self.lab, flush, "");
        }
    }
}

fn enforce<'a>(lab: &'a Lab, system: System, pack: &Pack, policy: &std::path::Path, agent: &std::path::Path) -> Result<Enforcing<'a>> {
    let mut running = None;
    match system {
        System::None => {}
        System::EgressTc => running = Some(AgentProcess::start_at(lab, agent, policy, &["--no-pin"])?),
        System::EgressXdp => running = Some(AgentProcess::start_at(lab, agent, policy, &["--no-pin", "--xdp"])?),
        System::IptablesLegacy => in_gateway(lab, &["iptables-legacy-restore"], &translate::iptables(pack))?,
        System::IptablesNft => in_gateway(lab, &["iptables-nft-restore"], &translate::iptables(pack))?,
        System::NftLinear => in_gateway(lab, &["nft", "-f", "-"], &translate::nft_linear(pack))?,
    }
    Ok(Enforcing { lab, system, _agent: running })
}

/// Connections completed in `secs` by the client threads, and the p99 of
/// their latency in microseconds.
fn measure(lab: &Lab, secs: f64) -> Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let server: SocketAddr = SERVER.parse()?;
    let mut threads = Vec::new();
    for _ in 0..CLIENTS {
        let (stop, ns) = (stop.clone(), lab.workload.name.clone());
        threads.push(std::thread::spawn(move || {
            within(&ns, move || {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut failed = 0u64;
                let (req, mut resp) = ([7u8; 16], [0u8; 16]);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = TcpStream::connect_timeout(&server, Duration::from_secs(1)).is_ok_and(|mut c| {
                        c.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
                            && c.write_all(&req).is_ok()
                            && c.read_exact(&mut resp).is_ok()
                    });
                    if ok { lat.push(t.elapsed().as_nanos() as u64) } else { failed += 1 }
                }
                (lat, failed)
            })
            .unwrap_or_default()
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in threads {
        let (l, f) = t.join().map_err(|_| anyhow::anyhow!("client panicked"))?;
        lat.extend(l);
        failed += f;
    }
    ensure!(failed * 100 <= lat.len() as u64 + 1, "{failed} failed connections against {} completed", lat.len());
    lat.sort_unstable();
    let p99 = lat.get(lat.len().saturating_sub(1) * 99 / 100).copied().unwrap_or(0) as f64 / 1e3;
    Ok((lat.len() as f64 / secs, p99))
}

/// Mean ns per run of the agent's judging program (`bpf_stats_enabled`).
fn program_ns() -> Option<f64> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.iter().filter(|p| p["name"] == "egress_tc" || p["name"] == "egress_xdp").find_map(|p| {
        let (ns, cnt) = (p["run_time_ns"].as_f64()?, p["run_cnt"].as_f64()?);
        (cnt > 0.0).then(|| ns / cnt)
    })
}

fn serve(lab: &Lab) -> Result<()> {
    let listener = within(&lab.upstream.name, || TcpListener::bind(SERVER))??;
    for _ in 0..CLIENTS {
        let l = listener.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            for mut c in l.incoming().flatten() {
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&buf);
                }
            }
        });
    }
    Ok(())
}

#[derive(Serialize)]
struct Row {
    rules: usize,
    system: &'static str,
    conn_per_s: f64,
    pps: Option<f64>,
    p99_us: f64,
    ratio_conn: f64,
    program_ns: Option<f64>,
    rounds: usize,
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
    serve(&lab)?;
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let dir = std::env::temp_dir().join(format!("egress-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for &size in &o.sizes {
        let p = pack(size);
        let policy = dir.join(format!("pack-{size}.yaml"));
        std::fs::write(&policy, pack_yaml::to_yaml(&p))?;
        let mut runs: Vec<(System, Vec<f64>, Vec<f64>, Vec<f64>)> = System::ALL.iter().map(|s| (*s, vec![], vec![], vec![])).collect();
        for round in 0..o.rounds {
            for (system, conns, p99s, progs) in runs.iter_mut() {
                let guard = enforce(&lab, *system, &p, &policy, &o.agent).with_context(|| system.name())?;
                measure(&lab, 0.3)?; // warm up
                let (c, l) = measure(&lab, o.seconds)?;
                if matches!(system, System::EgressTc | System::EgressXdp) {
                    progs.extend(program_ns());
                }
                drop(guard);
                eprintln!("bench_compare: {size} rules, round {round}, {}: {c:.0} conn/s, p99 {l:.0} µs", system.name());
                conns.push(c);
                p99s.push(l);
            }
        }
        let base = median(runs[0].1.clone());
        for (system, conns, p99s, progs) in runs {
            let c = median(conns);
            rows.push(Row {
                rules: size,
                system: system.name(),
                conn_per_s: c,
                pps: None,
                p99_us: median(p99s),
                ratio_conn: c / base,
                program_ns: (!progs.is_empty()).then(|| median(progs)),
                rounds: o.rounds,
            });
        }
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nNew connections per second through the gateway, medians of {} interleaved rounds of {} s", o.rounds, o.seconds);
    println!("{:>6} {:<16} {:>10} {:>8} {:>9} {:>11}", "rules", "system", "conn/s", "ratio", "p99 µs", "prog ns/pkt");
    for r in &rows {
        let prog = r.program_ns.map(|n| format!("{n:.0}")).unwrap_or_else(|| "-".into());
        println!("{:>6} {:<16} {:>10.0} {:>8.2} {:>9.0} {:>11}", r.rules, r.system, r.conn_per_s, r.ratio_conn, r.p99_us, prog);
    }
    if let Some(parent) = o.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&rows)?)?;
    println!("wrote {}", o.out.display());
    Ok(())
}
