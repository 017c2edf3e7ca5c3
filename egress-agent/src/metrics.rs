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
use egress_common::{DnsStat, EventStat, Reason, Verdict};

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

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (totals, reasons, dns, pressure, generation, events) = {
            let dp = self.dp.lock().map_err(|_| std::fmt::Error)?;
            let totals = dp.rule_totals().map_err(|_| std::fmt::Error)?;
            let reasons = dp.reason_counts().map_err(|_| std::fmt::Error)?;
            let dns = dp.dns_stats().map_err(|_| std::fmt::Error)?;
            let pressure = dp.learned_pressure().map_err(|_| std::fmt::Error)?;
            let events = dp.event_stats().map_err(|_| std::fmt::Error)?;
            (totals, reasons, dns, pressure, dp.generation(), events)
        };
        let mut rules: Vec<_> = totals.into_iter().collect();
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, help, field) in [
            ("egress_rule_packets", "Packets decided per rule and verdict.", 0usize),
            ("egress_rule_bytes", "Bytes decided per rule and verdict.", 1),
            ("egress_rule_flows", "New flows decided per rule and verdict.", 2),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (rule, cells) in &rules {
                for v in Verdict::ALL {
                    let c = cells[v as usize];
                    let value = [c.packets, c.bytes, c.flows][field];
                    let labels = [("rule", rule.as_str()), ("verdict", v.name())];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "egress_datapath_packets",
            "Packets seen by the datapath per reason code.",
            None,
            MetricType::Counter,
        )?;
        for r in Reason::ALL {
            let value = reasons.get(r as usize).copied().unwrap_or(0);
            ConstCounter::new(value).encode(family.encode_family(&[("reason", r.name())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "egress_dns_events",
            "DNS messages and learning events in the datapath, by event.",
            None,
            MetricType::Counter,
        )?;
        for e in DnsStat::ALL {
            let value = dns.get(e as usize).copied().unwrap_or(0);
            ConstCounter::new(value).encode(family.encode_family(&[("event", e.name())])?)?;
        }
        for (name, help, value) in [
            ("egress_learned_addresses", "Entries in the learned-address table.", pressure.entries),
            ("egress_learned_capacity", "Entries the learned-address table holds at most.", pressure.capacity),
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
        ConstCounter::new(pressure.evicted).encode(family)?;
        let mut family = encoder.encode_descriptor(
            "egress_flow_events",
            "Flow events in the datapath: sent to the agent, lost (ring buffer full), suppressed (per-source budget).",
            None,
            MetricType::Counter,
        )?;
        for e in EventStat::ALL {
            let value = events.get(e as usize).copied().unwrap_or(0);
            ConstCounter::new(value).encode(family.encode_family(&[("outcome", e.name())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "egress_flow_log_records",
            "Flow-log records written, and writes that failed.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, v) in [("written", &self.stats.records_written), ("failed", &self.stats.records_failed)] {
            ConstCounter::new(v.load(Ordering::Relaxed)).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "egress_pack",
            "The live pack: its files' hash (as in `egress-agent status`) as a label; always 1.",
            None,
            MetricType::Gauge,
        )?;
        let hash = format!("{:016x}", self.stats.pack_hash.load(Ordering::Relaxed));
        ConstGauge::new(1).encode(family.encode_family(&[("hash", hash.as_str())])?)?;
        let mut family =
            encoder.encode_descriptor("egress_build", "Build of the agent; always 1.", None, MetricType::Gauge)?;
        ConstGauge::new(1).encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
        let mut family = encoder.encode_descriptor(
            "egress_policy_reloads",
            "Policy reloads by outcome.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, v) in [("success", &self.stats.reloads_ok), ("failure", &self.stats.reloads_failed)] {
            ConstCounter::new(v.load(Ordering::Relaxed)).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        let family = encoder.encode_descriptor(
            "egress_pack_generation",
            "Generation of the live policy pack.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(generation as i64).encode(family)?;
        Ok(())
    }
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
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(e) => {
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let reg = reg.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(CLIENT_TIMEOUT, sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = if path == "/metrics" {
                match tokio::task::spawn_blocking(move || render(&reg)).await {
                    Ok(Some(body)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
                    _ => {
                        tracing::error!("metrics: reading the datapath failed");
                        ("500 Internal Server Error", "text/plain", "datapath counters unavailable\n".to_string())
                    }
                }
            } else {
                ("404 Not Found", "text/plain", "not found: try /metrics\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let answer = async {
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(body.as_bytes()).await?;
                sock.shutdown().await
            };
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, answer).await;
        });
    }
}
