//! The reload task: one thread that owns the [`Reloader`] and reloads
//! whenever the watcher or SIGHUP asks, through one channel. Requests that
//! come in while a reload runs coalesce into one more reload, which reads
//! the files afresh. A failure that may pass is tried again a few times;
//! a new request cuts the wait short.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use tracing::{error, info, warn};

use super::reload::Reloader;
use crate::reporting::metrics::AgentStats;

/// Attempts of a reload whose failure may pass (see `ReloadError::may_pass`).
const RELOAD_ATTEMPTS: u32 = 5;
/// Wait before the next attempt, times the attempt number.
const RELOAD_RETRY: Duration = Duration::from_secs(2);

/// Why a reload is asked for (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The watcher saw the policy change on disk.
    Files,
    /// SIGHUP.
    Signal,
    /// The gateway's own addresses changed (the `gateway` destination).
    Addresses,
}

/// Where reloads are asked for; cheap to clone. The task ends once every
/// handle is dropped (after the reload it is running).
#[derive(Debug, Clone)]
pub struct ReloadRequests(mpsc::Sender<Trigger>);

impl ReloadRequests {
    /// Asks for a reload; `false` when the task has ended.
    pub fn request(&self, why: Trigger) -> bool {
        self.0.send(why).is_ok()
    }

    #[cfg(test)]
    pub(crate) fn from_sender(tx: mpsc::Sender<Trigger>) -> Self {
        ReloadRequests(tx)
    }
}

/// Starts the reload task on a thread of its own.
pub fn spawn(
    reloader: Reloader,
    stats: Arc<AgentStats>,
) -> std::io::Result<(ReloadRequests, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let thread =
        std::thread::Builder::new().name("egress-reload".into()).spawn(move || serve(reloader, &rx, &stats))?;
    Ok((ReloadRequests(tx), thread))
}

/// Every request received so far, as one (the latest reason wins).
fn coalesce(first: Trigger, rx: &mpsc::Receiver<Trigger>) -> Trigger {
    rx.try_iter().last().unwrap_or(first)
}

fn serve(mut reloader: Reloader, rx: &mpsc::Receiver<Trigger>, stats: &AgentStats) {
    let Ok(mut why) = rx.recv() else { return };
    loop {
        why = coalesce(why, rx);
        let mut attempt = 1;
        let next = loop {
            if !reload(&mut reloader, why, stats) || attempt == RELOAD_ATTEMPTS {
                break rx.recv();
            }
            warn!(attempt, "the reload failed for a reason that may pass; trying again");
            match rx.recv_timeout(RELOAD_RETRY * attempt) {
                // A new request: the files are read afresh anyway.
                Ok(t) => break Ok(t),
                Err(RecvTimeoutError::Timeout) => attempt += 1,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        match next {
            Ok(t) => why = t,
            Err(_) => return,
        }
    }
}

/// One reload, counted and logged. Returns whether it failed for a reason
/// that may pass.
fn reload(reloader: &mut Reloader, why: Trigger, stats: &AgentStats) -> bool {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reloader.install()));
    match outcome {
        Ok(Ok(done)) => {
            stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
            stats.record_swap(done.timings.total());
            stats.pack_hash.store(done.hash, Ordering::Relaxed);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            info!(
                generation = done.generation,
                rules = done.pack.rules.len(),
                trigger = ?why,
                ms = ms(done.timings.total()),
                load_ms = ms(done.timings.load),
                compile_ms = ms(done.timings.compile),
                install_ms = ms(done.timings.install),
                "pack reloaded"
            );
            crate::background_drop::drop_in_background(done.pack);
            false
        }
        Ok(Err(e)) => {
            stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            error!(trigger = ?why, "reload rejected, the last good pack keeps enforcing:\n{e:#}");
            e.may_pass()
        }
        Err(_) => {
            stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            error!(trigger = ?why, "the reload panicked, the last good pack keeps enforcing");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests queued while a reload ran make one more reload.
    #[test]
    fn queued_requests_coalesce() {
        let (tx, rx) = mpsc::channel();
        for why in [Trigger::Files, Trigger::Signal, Trigger::Files] {
            tx.send(why).unwrap();
        }
        assert_eq!(coalesce(Trigger::Signal, &rx), Trigger::Files);
        assert!(rx.try_recv().is_err(), "all taken");
        assert_eq!(coalesce(Trigger::Signal, &rx), Trigger::Signal);
    }
}
