//! The flow-log task: drains the datapath's event ring into the flow log
//! and, every [`SUMMARY_EVERY`], writes a summary line if the datapath held
//! events back or lost them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use egress_common::EventStat;
use tokio::io::unix::AsyncFd;
use tracing::{error, warn};

use super::flowlog::{
    FlowLog, SummaryRecord, dns_record, iface_name, ktime_to_wall, named_record, record, tunnel_record,
};
use super::metrics::AgentStats;
use crate::datapath::Datapath;
use crate::datapath::events::{self, Event};

/// How often the flow log says whether events were held back or lost.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Drains `events` into `log` until the task is dropped.
pub async fn flow_log_task(
    dp: Arc<Mutex<Datapath>>,
    events: RingBuf<MapData>,
    mut log: FlowLog,
    stats: Arc<AgentStats>,
) {
    // SAFETY: the ring buffer owns its file descriptor for as long as the
    // AsyncFd holds it, and nothing else closes it.
    let mut fd = match unsafe { AsyncFd::register(events) } {
        Ok(fd) => fd,
        Err(e) => {
            error!("flow log: cannot poll the event ring: {}", e.into_parts().1);
            return;
        }
    };
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    let mut reported = [0u64; 3];
    loop {
        tokio::select! {
            ready = fd.readable_mut() => {
                let Ok(mut guard) = ready else { return };
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    write_event(&item, &dp, &mut log, &stats);
                }
                guard.clear_ready();
            }
            _ = summary.tick() => write_summary(&dp, &mut log, &stats, &mut reported),
        }
    }
}

/// One item of the ring: a DNS learn event or a flow event, as a record.
fn write_event(item: &[u8], dp: &Mutex<Datapath>, log: &mut FlowLog, stats: &AgentStats) {
    match events::decode(item) {
        Some(Event::Learn(ev)) => {
            let (name, groups) = match dp.lock() {
                Ok(d) => (d.learned_name_text(ev.name_hash), d.webgroup_names(ev.groups)),
                Err(_) => (None, Vec::new()),
            };
            let rec = dns_record(&ev, name.unwrap_or_default(), groups, ktime_to_wall(ev.ktime_ns));
            count_write(stats, log.write(&rec));
        }
        Some(Event::Flow(ev)) => {
            let (rule, fqdn) = match dp.lock() {
                Ok(d) => (d.rule(ev.generation, ev.rule).cloned(), d.learned_name(ev.src, ev.dst)),
                Err(_) => (None, None),
            };
            let rec = record(&ev, rule.as_ref(), iface_name(ev.ifindex), ktime_to_wall(ev.ktime_ns), fqdn);
            count_write(stats, log.write(&rec));
        }
        Some(Event::Named(ev)) => {
            let flow = &ev.flow;
            let (rule, fqdn) = match dp.lock() {
                Ok(d) => (d.rule(flow.generation, flow.rule).cloned(), d.learned_name(flow.src, flow.dst)),
                Err(_) => (None, None),
            };
            let rec = record(flow, rule.as_ref(), iface_name(flow.ifindex), ktime_to_wall(flow.ktime_ns), fqdn);
            count_write(stats, log.write(&named_record(&ev, rec)));
        }
        Some(Event::Tunnel(ev)) => {
            let zone = dp.lock().ok().and_then(|d| d.zone_pattern(ev.zone));
            let rec = tunnel_record(&ev, zone, ktime_to_wall(ev.ktime_ns));
            count_write(stats, log.write(&rec));
        }
        None => {}
    }
}

/// A summary line when events were lost or suppressed since the last one.
fn write_summary(dp: &Mutex<Datapath>, log: &mut FlowLog, stats: &AgentStats, reported: &mut [u64; 3]) {
    let Some(now) = dp.lock().ok().and_then(|d| d.event_stats().ok()) else { return };
    let get = |s: EventStat| now.get(s as usize).copied().unwrap_or(0);
    let current = [get(EventStat::Sent), get(EventStat::Lost), get(EventStat::Suppressed)];
    if current[1] == reported[1] && current[2] == reported[2] {
        return;
    }
    let rec = SummaryRecord {
        ts: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        kind: "summary",
        events_sent: current[0],
        events_lost: current[1],
        events_suppressed: current[2],
        lost_since_last: current[1] - reported[1],
        suppressed_since_last: current[2] - reported[2],
    };
    warn!(lost = rec.lost_since_last, suppressed = rec.suppressed_since_last, "flow events were held back or lost");
    count_write(stats, log.write(&rec));
    *reported = current;
}

fn count_write(stats: &AgentStats, result: std::io::Result<()>) {
    match result {
        Ok(()) => stats.records_written.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            error!("flow log write failed: {e}");
            stats.records_failed.fetch_add(1, Ordering::Relaxed)
        }
    };
}
