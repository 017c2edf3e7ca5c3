//! `egress-agent run`: load and validate the pack, load the datapath,
//! install, attach to every LAN interface, serve metrics, write flow logs,
//! reload on SIGHUP, and exit 0 on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::maps::{MapData, RingBuf};
use egress_common::{EVENT_KIND_LEARN, EVENT_KIND_OFFSET, EventStat, FlowEvent, LearnEvent};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::datapath::{Datapath, Hook, local::local_addresses, pin::PinDir};
use crate::flowlog::{FlowLog, SummaryRecord, dns_record, iface_name, ktime_to_wall, record};
use crate::metrics::AgentStats;
use crate::reload::install_from;

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub lan: Vec<String>,
    pub metrics: Option<SocketAddr>,
    pub flow_log: Option<String>,
    /// Rotate the flow-log file past this many bytes ...
    pub flow_log_max_bytes: u64,
    /// ... keeping this many old files.
    pub flow_log_keep: u32,
    pub pin_dir: Option<PathBuf>,
    pub hook: Hook,
}

/// How often the gateway's own addresses are re-read.
const LOCAL_ADDR_REFRESH: Duration = Duration::from_secs(5);

/// Attempts of a reload whose failure may pass (see `ReloadError::may_pass`).
const RELOAD_ATTEMPTS: u32 = 5;
/// Wait before the next attempt, times the attempt number.
const RELOAD_RETRY: Duration = Duration::from_secs(2);

/// Reloads until the files are installed or rejected for what they say:
/// a failure that may pass is tried again a few times, reading the files
/// afresh each time (no edit is needed to get a good policy in).
async fn reload_until_settled(dp: Arc<Mutex<Datapath>>, path: std::path::PathBuf, stats: Arc<AgentStats>) {
    for attempt in 1..=RELOAD_ATTEMPTS {
        if !reload(&dp, &path, &stats).await || attempt == RELOAD_ATTEMPTS {
            return;
        }
        warn!(attempt, "the reload failed for a reason that may pass; trying again");
        tokio::time::sleep(RELOAD_RETRY * attempt).await;
    }
}

/// Reloads off the async workers; counts the outcome. Returns whether it
/// failed for a reason that may pass.
async fn reload(dp: &Arc<Mutex<Datapath>>, path: &std::path::Path, stats: &AgentStats) -> bool {
    let (dp, path) = (dp.clone(), path.to_path_buf());
    match tokio::task::spawn_blocking(move || install_from(&dp, &path)).await {
        Ok(Ok(done)) => {
            stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
            stats.record_swap(done.timings.total());
            stats.pack_hash.store(done.hash, Ordering::Relaxed);
            info!(
                generation = done.generation,
                rules = done.pack.rules.len(),
                ms = done.timings.total().as_secs_f64() * 1e3,
                "pack reloaded"
            );
            false
        }
        Ok(Err(e)) => {
            stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            error!("reload rejected, the last good pack keeps enforcing:\n{e:#}");
            e.may_pass()
        }
        Err(e) => {
            stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            error!("reload task failed, the last good pack keeps enforcing: {e}");
            false
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(opts: RunOptions) -> Result<()> {
    if opts.lan.is_empty() {
        bail!("at least one --lan interface is needed");
    }
    // Before anything slow: a SIGHUP (`systemctl reload`) or SIGTERM while
    // loading must not kill the agent by the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let datapath = match &opts.pin_dir {
        Some(dir) => {
            let pins = PinDir::prepare(dir).with_context(|| format!("preparing pin directory {}", dir.display()))?;
            Datapath::load_pinned(pins).context("loading the pinned eBPF datapath")?
        }
        None => Datapath::load().context("loading the eBPF datapath")?,
    };
    let adopted = datapath.adopted().then(|| datapath.generation());
    if let Some(generation) = adopted {
        info!(generation, "adopted the pinned datapath: its maps and links are kept, nothing was detached");
    }
    let mut datapath = datapath;
    datapath.set_hook(opts.hook);
    // While the agent runs it vouches for DNS learning; if it dies the
    // lease runs out and names fail closed. Renewed on a thread of its own
    // through its own map handle: no lock, install or scrape can delay it.
    let mut lease = datapath.lease_handle().context("a handle on the agent's lease")?;
    std::thread::Builder::new()
        .name("egress-lease".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(egress_common::LEASE_RENEW_MS));
                if let Err(e) = lease.renew() {
                    warn!("renewing the agent's lease: {e}");
                }
            }
        })
        .context("starting the lease thread")?;
    let dp = Arc::new(Mutex::new(datapath));
    let stats = Arc::new(AgentStats::default());
    // The policy on disk is installed first. If it is bad and a pinned
    // datapath was adopted, that datapath's pack keeps enforcing (a policy
    // rejected while the last agent ran must not take the next one down at
    // its start); without one there is nothing to enforce: an error.
    // Before the files are read: an edit made while they are is then seen.
    let read_as = crate::watch::fingerprint(&opts.policy);
    let enforcing = match install_from(&dp, &opts.policy) {
        Ok(first) => {
            stats.pack_hash.store(first.hash, Ordering::Relaxed);
            info!(generation = first.generation, rules = first.pack.rules.len(), policy = %opts.policy.display(), "pack installed");
            format!("{} ({} rules)", opts.policy.display(), first.pack.rules.len())
        }
        Err(e) => match adopted {
            Some(g) => {
                stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                error!(
                    "policy rejected at start; the adopted datapath keeps enforcing its pack (generation {g}) until a good policy is written:\n{e:#}"
                );
                format!("the adopted pack of generation {g} ({} was rejected)", opts.policy.display())
            }
            None => return Err(e.into()),
        },
    };
    let mut upgraded = 0;
    {
        let mut guard = dp.lock().map_err(|_| anyhow::anyhow!("datapath lock poisoned"))?;
        for iface in &opts.lan {
            let done = guard.attach(iface, opts.hook).with_context(|| format!("attaching to {iface}"))?;
            info!(iface, hook = ?opts.hook, new_links = done.new, kept_links = done.kept, "attached");
            if done.stale > 0 {
                warn!(
                    iface,
                    links = done.stale,
                    "pinned links had lost their interface (deleted since): attached anew"
                );
            }
            for (link, old, new) in &done.upgraded {
                warn!(
                    link,
                    old_program = old,
                    new_program = new,
                    "the pinned link ran another build's program: switched to this build's in place"
                );
            }
            if let Some(link) = &done.replaced {
                warn!(
                    link,
                    "removed the pinned link of the other hook (the agent ran with another --xdp setting before)"
                );
            }
            upgraded += done.upgraded.len();
        }
        for lan in guard.lans_shared_with_resolvers() {
            warn!(iface = %lan, "a resolver is reached through this LAN interface (one interface for both sides): answers arriving on it cannot be told from a workload's forgery by interface; use a separate upstream interface or a forwarder on the gateway");
        }
    }
    // Pins of another layout: ours enforce now, alongside; remove theirs
    // (links first, which detaches their programs), so that there is never
    // a moment without a datapath enforcing.
    if let Some(dir) = &opts.pin_dir {
        let pins = PinDir::existing(dir);
        for other in pins.other_layouts() {
            match pins.remove_other(&other) {
                Ok(n) => warn!(path = %other.display(), pins = n, "replaced the datapath of another layout version"),
                Err(e) => error!(path = %other.display(), "removing pins of another layout version: {e}"),
            }
        }
    }

    let mut tasks = Vec::new();
    if let Some(addr) = opts.metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        info!(%addr, "serving metrics at /metrics");
        let reg = Arc::new(crate::metrics::registry(dp.clone(), stats.clone()));
        tasks.push(tokio::spawn(crate::metrics::serve(listener, reg)));
    }
    if let Some(target) = &opts.flow_log {
        let log = FlowLog::open(target, opts.flow_log_max_bytes, opts.flow_log_keep)
            .with_context(|| format!("opening flow log {target}"))?;
        let events = dp.lock().map_err(|_| anyhow::anyhow!("lock"))?.take_events()?;
        tasks.push(tokio::spawn(flow_log_task(dp.clone(), events, log, stats.clone())));
    }

    {
        let (dp, path, stats) = (dp.clone(), opts.policy.clone(), stats.clone());
        tasks.push(tokio::spawn(crate::watch::watch(opts.policy.clone(), read_as, move || {
            let (dp, path, stats) = (dp.clone(), path.clone(), stats.clone());
            info!(policy = %path.display(), "policy changed on disk");
            tokio::spawn(reload_until_settled(dp, path, stats))
        })));
    }

    let hup_reload = Arc::new(tokio::sync::Notify::new());
    {
        let (wanted, dp, path, stats) = (hup_reload.clone(), dp.clone(), opts.policy.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                wanted.notified().await;
                reload_until_settled(dp.clone(), path.clone(), stats.clone()).await;
            }
        }));
    }
    let mut refresh = tokio::time::interval(LOCAL_ADDR_REFRESH);
    let adoption = match (adopted, upgraded) {
        (Some(g), 0) => format!(" (adopted the pinned datapath at generation {g})"),
        (Some(g), n) => format!(" (adopted the pinned datapath at generation {g}; upgraded {n} programs in place)"),
        (None, 0) => String::new(),
        (None, n) => format!(" (upgraded {n} programs in place)"),
    };
    println!("egress-agent: enforcing {enforcing} on {}{adoption}", opts.lan.join(", "));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // To the reload task: retries must not hold up this loop, and
            // signals that arrive during a reload make one more, not many.
            _ = hup.recv() => hup_reload.notify_one(),
            _ = refresh.tick() => {
                if let (Ok(addrs), Ok(mut guard)) = (local_addresses(), dp.lock()) {
                    if let Err(e) = guard.set_local_addresses(&addrs) {
                        warn!("refreshing gateway addresses: {e}");
                    }
                    // Routes change: which LAN a resolver is reached through too.
                    if let Err(e) = guard.sync_lan_marks() {
                        warn!("updating the LAN interfaces the DNS learner distrusts: {e}");
                    }
                    for iface in &opts.lan {
                        match guard.repair_links(iface, opts.hook) {
                            Ok(0) => {}
                            Ok(n) => warn!(iface, links = n, "the interface was created again: attached anew"),
                            Err(e) => warn!(iface, "checking the links: {e}"),
                        }
                    }
                    match guard.retire_webgroup_bits() {
                        Ok(0) => {}
                        Ok(n) => info!(bits = n, "freed the bits of removed webgroups (cleared from every learned address)"),
                        Err(e) => warn!("retiring the bits of removed webgroups (they stay taken; retried): {e}"),
                    }
                }
            }
        }
    }
    info!("stopping");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// How often the flow log says whether events were held back or lost.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Drains the event ring buffer into the flow log; every [`SUMMARY_EVERY`]
/// writes a summary line if the datapath held events back or lost them.
async fn flow_log_task(dp: Arc<Mutex<Datapath>>, events: RingBuf<MapData>, mut log: FlowLog, stats: Arc<AgentStats>) {
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
                    if item.len() <= EVENT_KIND_OFFSET {
                        continue;
                    }
                    if item[EVENT_KIND_OFFSET] == EVENT_KIND_LEARN {
                        if item.len() < std::mem::size_of::<LearnEvent>() {
                            continue;
                        }
                        // SAFETY: a whole LearnEvent (checked length); read_unaligned copies it out.
                        let ev: LearnEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const LearnEvent) };
                        let (name, groups) = match dp.lock() {
                            Ok(d) => (d.learned_name_text(ev.name_hash), d.webgroup_names(ev.groups)),
                            Err(_) => (None, Vec::new()),
                        };
                        let rec = dns_record(&ev, name.unwrap_or_default(), groups, ktime_to_wall(ev.ktime_ns));
                        count_write(&stats, log.write(&rec));
                        continue;
                    }
                    if item.len() < std::mem::size_of::<FlowEvent>() {
                        continue;
                    }
                    // SAFETY: the datapath writes whole FlowEvents; read_unaligned copies it out.
                    let ev: FlowEvent = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const FlowEvent) };
                    let (rule, fqdn) = match dp.lock() {
                        Ok(d) => (d.rule(ev.generation, ev.rule).cloned(), d.learned_name(ev.src, ev.dst)),
                        Err(_) => (None, None),
                    };
                    let rec = record(&ev, rule.as_ref(), iface_name(ev.ifindex), ktime_to_wall(ev.ktime_ns), fqdn);
                    count_write(&stats, log.write(&rec));
                }
                guard.clear_ready();
            }
            _ = summary.tick() => {
                let Some(now) = dp.lock().ok().and_then(|d| d.event_stats().ok()) else { continue };
                let get = |s: EventStat| now.get(s as usize).copied().unwrap_or(0);
                let current = [get(EventStat::Sent), get(EventStat::Lost), get(EventStat::Suppressed)];
                if current[1] == reported[1] && current[2] == reported[2] {
                    continue;
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
                count_write(&stats, log.write(&rec));
                reported = current;
            }
        }
    }
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
