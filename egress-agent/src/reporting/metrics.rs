//! Prometheus metrics at `http://ADDR/metrics`, text format, encoded with
//! prometheus-client from the datapath's exact per-CPU counters at scrape
//! time (nothing is sampled).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::datapath::Datapath;
use egress_common::{DnsStat, EventStat, Level, Reason, Spend, Verdict, budget_stat_slot};

/// Counters the agent keeps itself.
#[derive(Debug)]
pub struct AgentStats {
    /// Policy reloads installed.
    pub reloads_ok: AtomicU64,
    /// Policy reloads rejected (parse, validate, compile or load errors).
    pub reloads_failed: AtomicU64,
    /// Seconds from reading the policy to the new pack enforced, per reload.
    pub swap_seconds: Histogram,
    /// Flow-log records written, and writes that failed.
    pub records_written: AtomicU64,
    pub records_failed: AtomicU64,
    /// Hash of the live pack's files (see `egress-agent status`).
    pub pack_hash: AtomicU64,
}

/// Buckets of the swap latency histogram: 1 ms to about 2 s.
fn swap_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 12)
}

impl Default for AgentStats {
    fn default() -> Self {
        AgentStats {
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            swap_seconds: Histogram::new(swap_buckets()),
            records_written: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            pack_hash: AtomicU64::new(0),
        }
    }
}

impl AgentStats {
    /// Records one installed reload's latency.
    pub fn record_swap(&self, took: std::time::Duration) {
        self.swap_seconds.observe(took.as_secs_f64());
    }
}

/// Reads the datapath's counters on every scrape.
#[derive(Debug)]
pub struct DatapathCollector {
    dp: Arc<Mutex<Datapath>>,
    stats: Arc<AgentStats>,
}

/// What one scrape reads from the datapath, under its lock once.
struct Scrape {
    totals: crate::datapath::RuleTotals,
    reasons: Vec<u64>,
    dns: Vec<u64>,
    pressure: crate::datapath::LearnedPressure,
    events: Vec<u64>,
    budgets: Vec<u64>,
    generation: u32,
}

impl Scrape {
    fn read(dp: &Mutex<Datapath>) -> Result<Self, std::fmt::Error> {
        let dp = dp.lock().map_err(|_| std::fmt::Error)?;
        Ok(Scrape {
            totals: dp.rule_totals().map_err(|_| std::fmt::Error)?,
            reasons: dp.reason_counts().map_err(|_| std::fmt::Error)?,
            dns: dp.dns_stats().map_err(|_| std::fmt::Error)?,
            pressure: dp.learned_pressure().map_err(|_| std::fmt::Error)?,
            events: dp.event_stats().map_err(|_| std::fmt::Error)?,
            budgets: dp.budget_stats().map_err(|_| std::fmt::Error)?,
            generation: dp.generation(),
        })
    }
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scrape = Scrape::read(&self.dp)?;
        encode_rules(&mut encoder, &scrape.totals)?;
        encode_datapath(&mut encoder, &scrape)?;
        encode_agent(&mut encoder, &self.stats, scrape.generation)
    }
}

/// One counter family with one label, a value per label value.
fn labelled_counters<'a>(
    encoder: &mut DescriptorEncoder,
    (name, help, label): (&str, &str, &str),
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_of_label, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&[(label, value_of_label)])?)?;
    }
    Ok(())
}

/// Per-rule, per-verdict packets, bytes and flows.
fn encode_rules(encoder: &mut DescriptorEncoder, totals: &crate::datapath::RuleTotals) -> Result<(), std::fmt::Error> {
    let mut rules: Vec<_> = totals.iter().collect();
    rules.sort_by(|a, b| a.0.cmp(b.0));
    for (name, help, field) in [
        ("egress_rule_packets", "Packets decided per rule and verdict.", 0usize),
        ("egress_rule_bytes", "Bytes decided per rule and verdict.", 1),
        ("egress_rule_flows", "New flows decided per rule and verdict.", 2),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (rule, cells) in &rules {
            for v in Verdict::ALL {
                let c = &cells[v as usize];
                let value = [c.packets, c.bytes, c.flows][field];
                let labels = [("rule", rule.as_str()), ("verdict", v.name())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

/// Reason codes, DNS events, the learned table, flow events.
fn encode_datapath(encoder: &mut DescriptorEncoder, s: &Scrape) -> Result<(), std::fmt::Error> {
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
    labelled_counters(
        encoder,
        ("egress_datapath_packets", "Packets seen by the datapath per reason code.", "reason"),
        Reason::ALL.iter().map(|&r| (r.name(), at(&s.reasons, r as usize))),
    )?;
    labelled_counters(
        encoder,
        ("egress_dns_events", "DNS messages and learning events in the datapath, by event.", "event"),
        DnsStat::ALL.iter().map(|&e| (e.name(), at(&s.dns, e as usize))),
    )?;
    for (name, help, value) in [
        ("egress_learned_addresses", "Entries in the learned-address table.", s.pressure.entries),
        ("egress_learned_capacity", "Entries the learned-address table holds at most.", s.pressure.capacity),
    ] {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value as i64).encode(family)?;
    }
    let family = encoder.encode_descriptor(
        "egress_learned_evictions",
        "Learned addresses evicted (least recently used) to make room.",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(s.pressure.evicted).encode(family)?;
    labelled_counters(
        encoder,
        (
            "egress_flow_events",
            "Flow events in the datapath: sent to the agent, lost (ring buffer full), suppressed (a budget spent).",
            "outcome",
        ),
        EventStat::ALL.iter().map(|&e| (e.name(), at(&s.events, e as usize))),
    )?;
    let mut family = encoder.encode_descriptor(
        "egress_budget_refused",
        "Spends refused by a budget (events, queries recorded, addresses learned, first fragments, tunnel alerts), \
         by the level that ran out: the source address, its host (interface and MAC), or everyone.",
        None,
        MetricType::Counter,
    )?;
    for kind in Spend::ALL {
        for level in Level::ALL {
            let value = at(&s.budgets, budget_stat_slot(kind, level) as usize);
            ConstCounter::new(value)
                .encode(family.encode_family(&[("budget", kind.name()), ("level", level.name())])?)?;
        }
    }
    Ok(())
}

/// The agent's own: flow-log writes, the pack, the build, reloads, the generation.
fn encode_agent(encoder: &mut DescriptorEncoder, stats: &AgentStats, generation: u32) -> Result<(), std::fmt::Error> {
    let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
    labelled_counters(
        encoder,
        ("egress_flow_log_records", "Flow-log records written, and writes that failed.", "outcome"),
        [("written", load(&stats.records_written)), ("failed", load(&stats.records_failed))],
    )?;
    let mut family = encoder.encode_descriptor(
        "egress_pack",
        "The live pack: its files' hash (as in `egress-agent status`) as a label; always 1.",
        None,
        MetricType::Gauge,
    )?;
    let hash = format!("{:016x}", stats.pack_hash.load(Ordering::Relaxed));
    ConstGauge::new(1).encode(family.encode_family(&[("hash", hash.as_str())])?)?;
    let mut family =
        encoder.encode_descriptor("egress_build", "Build of the agent; always 1.", None, MetricType::Gauge)?;
    ConstGauge::new(1).encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
    labelled_counters(
        encoder,
        ("egress_policy_reloads", "Policy reloads by outcome.", "outcome"),
        [("success", load(&stats.reloads_ok)), ("failure", load(&stats.reloads_failed))],
    )?;
    let family = encoder.encode_descriptor(
        "egress_pack_generation",
        "Generation of the live policy pack.",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::from(generation)).encode(family)
}

/// The registry with the datapath collector.
pub fn registry(dp: Arc<Mutex<Datapath>>, stats: Arc<AgentStats>) -> Registry {
    let mut reg = Registry::default();
    reg.register_with_unit(
        "egress_policy_swap",
        "Time from reading the policy to the new pack enforced, per installed reload",
        prometheus_client::registry::Unit::Seconds,
        stats.swap_seconds.clone(),
    );
    reg.register_collector(Box::new(DatapathCollector { dp, stats }));
    reg
}

/// Renders the registry in Prometheus text format; `None` when a collector
/// failed (the datapath could not be read).
pub fn render(reg: &Registry) -> Option<String> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, reg).ok()?;
    Some(out)
}

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 4;
/// Time a client has to send its request, and to take the answer.
const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until the task is dropped. A few
/// connections at a time, each with deadlines: clients that connect and
/// send nothing, or read slowly, cannot pile up tasks and descriptors.
pub async fn serve(listener: TcpListener, reg: Arc<Registry>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(answer(sock, reg.clone(), permit));
    }
}

/// Answers one connection: `/metrics`, or 404.
async fn answer(mut sock: tokio::net::TcpStream, reg: Arc<Registry>, _permit: tokio::sync::OwnedSemaphorePermit) {
    let mut buf = [0u8; 2048];
    let Ok(Ok(n)) = tokio::time::timeout(CLIENT_TIMEOUT, sock.read(&mut buf)).await else { return };
    let req = String::from_utf8_lossy(&buf[..n]);
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if path == "/metrics" {
        if let Ok(Some(body)) = tokio::task::spawn_blocking(move || render(&reg)).await {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        } else {
            tracing::error!("metrics: reading the datapath failed");
            ("500 Internal Server Error", "text/plain", "datapath counters unavailable\n".to_string())
        }
    } else {
        ("404 Not Found", "text/plain", "not found: try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let reply = async {
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(body.as_bytes()).await?;
        sock.shutdown().await
    };
    let _ = tokio::time::timeout(CLIENT_TIMEOUT, reply).await;
}
