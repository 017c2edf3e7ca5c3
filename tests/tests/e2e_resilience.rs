//! The datapath under disturbance, with continuous traffic from the
//! workload ([`egress_lab::traffic`]): a long-lived permitted flow, new permitted
//! connections and denied probes.
//! - 1,000 swaps alternating between two packs: a flow both permit is never
//!   dropped, a flow both deny never passes.
//! - A crash loop (SIGKILL every 2 s for 30 s, each agent adopting the pins):
//!   no gap, no leaked pins, no leaked programs.
//! - A reload storm (10 per second for 30 s): the agent's memory stays flat.
//!
//! The tests run one at a time (they count system-wide BPF programs and
//! measure memory).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use egress_lab::agent::{AgentProcess, metric};
use egress_lab::bpffs::Bpffs;
use egress_lab::lab::Lab;
use egress_lab::traffic::Traffic;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ALLOWED: &str = "203.0.113.10:443";
const DENIED_TCP: &str = "203.0.113.20:443";
const DENIED_UDP: &str = "203.0.113.20:5353";

/// Two packs that agree on the traffic's flows and differ in everything
/// else: rule order, names, priorities, filler rules, one destination.
fn pack(variant: usize) -> String {
    let mut rules = String::new();
    let filler: Vec<usize> = if variant == 0 { (0..40).collect() } else { (0..40).rev().collect() };
    for (k, i) in filler.iter().enumerate() {
        let action = if (i + variant).is_multiple_of(3) { "deny" } else { "permit" };
        let _ = writeln!(
            rules,
            "  - {{ name: filler-{variant}-{i}, priority: {}, source: runtime, destination: {{ cidrs: [192.0.2.{}/32] }}, protocol: tcp, ports: [{}], action: {action} }}",
            100 + k,
            i + 1,
            8000 + i
        );
    }
    let (third, third_action) = ("203.0.113.30/32", if variant == 0 { "permit" } else { "deny" });
    format!(
        r"
version: 1
mode: enforce
smartgroups:
  runtime: {{ cidrs: [10.10.1.0/24] }}
rules:
  - {{ name: allow-web-{variant}, priority: {p1}, source: runtime, destination: {{ cidrs: [203.0.113.10/32] }}, protocol: tcp, ports: [443], action: permit }}
  - {{ name: third-{variant}, priority: {p2}, source: runtime, destination: {{ cidrs: [{third}] }}, action: {third_action} }}
{rules}  - {{ name: default-deny-{variant}, priority: 1000, source: runtime, destination: any, action: deny }}
",
        p1 = 10 + variant,
        p2 = 20 - variant,
    )
}

fn lab() -> Lab {
    let lab = Lab::new(&["203.0.113.10", "203.0.113.20", "203.0.113.30"]).expect("lab (run as root)");
    lab.tcp_echo(ALLOWED.parse().expect("addr")).expect("server");
    lab.tcp_echo(DENIED_TCP.parse().expect("addr")).expect("server");
    lab.udp_echo(DENIED_UDP.parse().expect("addr")).expect("server");
    lab
}

fn traffic(lab: &Lab) -> Traffic {
    let t = Traffic::start(
        &lab.workload.name,
        ALLOWED.parse().expect("addr"),
        DENIED_TCP.parse().expect("addr"),
        DENIED_UDP.parse().expect("addr"),
    )
    .expect("traffic starts through the agent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.counts().new_ok.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(t.counts().new_ok.load(Ordering::Relaxed) > 0, "traffic flows: {}", t.counts().summary());
    t
}

fn assert_clean(t: Traffic, what: &str) {
    let c = t.stop();
    let s = c.summary();
    assert!(c.held_ok.load(Ordering::Relaxed) > 0 && c.new_ok.load(Ordering::Relaxed) > 0, "{what}: no traffic? {s}");
    assert_eq!(c.held_failed.load(Ordering::Relaxed), 0, "{what}: the permitted long-lived flow broke: {s}");
    assert_eq!(c.new_failed.load(Ordering::Relaxed), 0, "{what}: a permitted connection failed: {s}");
    assert_eq!(c.leaks.load(Ordering::Relaxed), 0, "{what}: a denied probe got through: {s}");
    eprintln!("{what}: {s}");
}

fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(egress_lab::agent_binary)
}

fn write_policy(path: &Path, text: &str) {
    egress_lab::agent::write_and_rename(path, text).expect("write policy");
}

#[test]
fn no_mixed_decisions_over_1000_swaps() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab();
    let dir = std::env::temp_dir().join(format!("egress-swaps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let policy = dir.join("pack.yaml");
    write_policy(&policy, &pack(0));
    let agent = AgentProcess::start_at(&lab, bin(), &policy, &["--no-pin"]).expect("agent");
    let t = traffic(&lab);
    let started = Instant::now();
    let mut done = agent.reloads().unwrap_or(0);
    for i in 1..=1000 {
        write_policy(&policy, &pack(i % 2));
        agent.hup();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = agent.reloads().unwrap_or(0);
            if now > done {
                done = now;
                break;
            }
            assert!(Instant::now() < deadline, "swap {i} was not installed within 5 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    eprintln!("1000 swaps in {:.1} s", started.elapsed().as_secs_f64());
    assert_clean(t, "1000 swaps");
    let failures = metric(&agent.metrics().expect("metrics"), "egress_policy_reloads_total{outcome=\"failure\"}");
    assert_eq!(failures, 0, "every swap installed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent's BPF programs loaded in the kernel (by name: systemd and
/// others load and free their own at any time).
fn agent_program_count() -> usize {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool");
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map_or(usize::MAX, |v| {
        v.iter().filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("egress_"))).count()
    })
}

/// Waits (up to 10 s) for the agent's program count to be `want`: a killed
/// agent's programs are freed shortly after it dies, not at once. Returns
/// the last count.
fn agent_programs_settle_at(want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = agent_program_count();
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pins_under(dir: &Path) -> usize {
    fn walk(d: &Path) -> usize {
        std::fs::read_dir(d)
            .map_or(0, |e| e.filter_map(Result::ok).map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
    }
    walk(dir)
}

#[test]
fn crash_loop_keeps_enforcing_without_leaks() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let pins = Bpffs::new("crash").expect("bpffs");
    let lab = lab();
    let policy = pack(0);
    let mut agent = AgentProcess::start_with(&lab, bin(), &policy, &["--pin-dir", &pins.arg()]).expect("agent");
    let t = traffic(&lab);
    // The count once steady (an earlier test's agents may still be going).
    let mut first_programs = agent_program_count();
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(300));
        match agent_program_count() {
            n if n == first_programs => break,
            n => first_programs = n,
        }
    }
    let pinned = pins_under(&pins.0);
    // After a restart the kernel holds the running agent's programs plus
    // the two the pinned links keep attached (the first agent's, adopted,
    // never re-attached): that count must then stay put.
    let after_restart = first_programs + 2;
    let started = Instant::now();
    let mut restarts = 0;
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(2));
        agent.kill().expect("SIGKILL");
        agent = AgentProcess::start_with(&lab, bin(), &policy, &["--pin-dir", &pins.arg()]).expect("restart");
        assert!(agent.banner().contains("adopted"), "restart {restarts} adopts: {}", agent.banner());
        restarts += 1;
    }
    assert_clean(t, &format!("crash loop of {restarts} restarts"));
    assert_eq!(pins_under(&pins.0), pinned, "no pin leaked or lost");
    assert!(restarts > 0, "restarted");
    let programs = agent_programs_settle_at(after_restart);
    assert_eq!(
        programs, after_restart,
        "{first_programs} programs at first, {programs} after {restarts} restarts: each killed agent's own are freed"
    );
    drop(agent);
    let out = Command::new(bin()).args(["detach", "--pin-dir", &pins.arg()]).output().expect("detach");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn reload_storm_keeps_memory_flat() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = lab();
    let dir = std::env::temp_dir().join(format!("egress-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let policy = dir.join("pack.yaml");
    write_policy(&policy, &pack(0));
    let agent = AgentProcess::start_at(&lab, bin(), &policy, &["--no-pin"]).expect("agent");
    let t = traffic(&lab);
    let mut warm = None;
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(30) {
        sent += 1;
        write_policy(&policy, &pack(sent % 2));
        agent.hup();
        std::thread::sleep(Duration::from_millis(100));
        if warm.is_none() && started.elapsed() > Duration::from_secs(5) {
            warm = agent.rss_kib();
        }
    }
    let end = agent.rss_kib().expect("rss");
    let warm = warm.expect("rss after warm-up");
    let done = agent.reloads().unwrap_or(0);
    assert_clean(t, &format!("reload storm of {sent} reloads"));
    eprintln!("reloads installed {done}; rss after 5 s {warm} KiB, at the end {end} KiB");
    assert!(done >= sent as u64 / 2, "most reloads installed: {done} of {sent}");
    assert!(end <= warm + warm / 10 + 4096, "memory grew from {warm} KiB to {end} KiB");
    let _ = std::fs::remove_dir_all(&dir);
}
