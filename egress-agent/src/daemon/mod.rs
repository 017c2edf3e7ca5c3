//! `egress-agent run`: load and validate the pack, load the datapath,
//! install, attach to every LAN interface, serve metrics, write flow logs,
//! reload on file changes and SIGHUP, and exit 0 on SIGTERM or SIGINT.
//!
//! - [`start`]: loading the datapath, the lease, attaching.
//! - [`reload`]: [`reload::Reloader`], the one way a pack becomes live.
//! - [`reload_task`]: the thread that owns the reloader, fed by the
//!   watcher and SIGHUP through one channel.
//! - [`watch`]: file events and the fingerprint safety net.

pub mod reload;
pub mod reload_task;
mod start;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::datapath::{Datapath, Hook, local::local_addresses};
use crate::reporting::flowlog::FlowLog;
use crate::reporting::metrics::AgentStats;
use reload::Reloader;
use reload_task::Trigger;

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
    let mut datapath = start::load_datapath(opts.pin_dir.as_deref())?;
    let adopted = datapath.adopted().then(|| datapath.generation());
    datapath.set_hook(opts.hook);
    start::spawn_lease(&datapath)?;
    let dp = Arc::new(Mutex::new(datapath));
    let stats = Arc::new(AgentStats::default());
    // Before the files are read: an edit made while they are is then seen.
    let read_as = watch::fingerprint(&opts.policy);
    let mut reloader = Reloader::new(dp.clone(), opts.policy.clone());
    let enforcing = first_install(&mut reloader, adopted, &stats)?;
    let upgraded = start::attach_all(&dp, &opts.lan, opts.hook)?;
    if let Some(dir) = &opts.pin_dir {
        start::replace_other_layouts(dir);
    }
    let tasks = start_reporting(&opts, &dp, &stats).await?;
    let (requests, reload_thread) = reload_task::spawn(reloader, stats.clone()).context("starting the reload task")?;
    let watcher = watch::spawn(opts.policy.clone(), read_as, requests.clone()).context("watching the policy")?;
    println!(
        "egress-agent: enforcing {enforcing} on {}{}",
        opts.lan.join(", "),
        start::adoption_note(adopted, upgraded)
    );
    let mut refresh = tokio::time::interval(LOCAL_ADDR_REFRESH);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            // To the reload task: retries must not hold up this loop, and
            // signals that arrive during a reload make one more, not many.
            _ = hup.recv() => { requests.request(Trigger::Signal); }
            _ = refresh.tick() => upkeep(&dp, &opts, &requests),
        }
    }
    info!("stopping");
    for t in tasks {
        t.abort();
    }
    // The watcher's and ours are the last requests: the reload task ends
    // after the reload it is running.
    // Joined off the runtime's workers: a reload in progress may take a while.
    let _ = tokio::task::spawn_blocking(move || {
        drop(watcher);
        drop(requests);
        let _ = reload_thread.join();
    })
    .await;
    Ok(())
}

/// Installs the policy on disk. If it is bad and a pinned datapath was
/// adopted, that datapath's pack keeps enforcing (a policy rejected while
/// the last agent ran must not take the next one down at its start);
/// without one there is nothing to enforce: an error. Returns what is
/// enforced, for the banner.
fn first_install(reloader: &mut Reloader, adopted: Option<u32>, stats: &AgentStats) -> Result<String> {
    let policy = reloader.path().display().to_string();
    match reloader.install() {
        Ok(first) => {
            stats.pack_hash.store(first.hash, Ordering::Relaxed);
            info!(generation = first.generation, rules = first.pack.rules.len(), policy, "pack installed");
            Ok(format!("{policy} ({} rules)", first.pack.rules.len()))
        }
        Err(e) => match adopted {
            Some(g) => {
                stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                error!(
                    "policy rejected at start; the adopted datapath keeps enforcing its pack (generation {g}) until a good policy is written:\n{e:#}"
                );
                Ok(format!("the adopted pack of generation {g} ({policy} was rejected)"))
            }
            None => Err(e.into()),
        },
    }
}

/// The metrics server and the flow-log task, as asked for.
async fn start_reporting(
    opts: &RunOptions,
    dp: &Arc<Mutex<Datapath>>,
    stats: &Arc<AgentStats>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if let Some(addr) = opts.metrics {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        info!(%addr, "serving metrics at /metrics");
        let reg = Arc::new(crate::reporting::metrics::registry(dp.clone(), stats.clone()));
        tasks.push(tokio::spawn(crate::reporting::metrics::serve(listener, reg)));
    }
    if let Some(target) = &opts.flow_log {
        let log = FlowLog::open(target, opts.flow_log_max_bytes, opts.flow_log_keep)
            .with_context(|| format!("opening flow log {target}"))?;
        let events = dp.lock().map_err(|_| anyhow::anyhow!("datapath lock poisoned"))?.take_events()?;
        tasks.push(tokio::spawn(crate::reporting::events::flow_log_task(dp.clone(), events, log, stats.clone())));
    }
    Ok(tasks)
}

/// Every [`LOCAL_ADDR_REFRESH`]: the gateway's addresses (a reload when
/// they changed: the `gateway` destination means them), the LAN marks,
/// links of interfaces created again, bits of removed WebGroups.
fn upkeep(dp: &Mutex<Datapath>, opts: &RunOptions, requests: &reload_task::ReloadRequests) {
    let (Ok(addrs), Ok(mut guard)) = (local_addresses(), dp.lock()) else { return };
    if guard.local_addresses() != &addrs {
        info!(addresses = addrs.len(), "the gateway's addresses changed: reloading the pack");
        requests.request(reload_task::Trigger::Addresses);
        // Asked once: a reload that fails (a bad pack on disk) is not
        // asked for again every period.
        if let Err(e) = guard.set_local_addresses(&addrs) {
            warn!("refreshing gateway addresses: {e}");
        }
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
