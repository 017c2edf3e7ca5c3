//! Starting the daemon: the datapath (pinned or not), the lease thread,
//! attaching to the LAN interfaces, replacing pins of another layout.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tracing::{error, info, warn};

use crate::datapath::{Datapath, Hook, pin::PinDir};

/// Loads the datapath: pinned under `pin_dir` (adopting what is pinned
/// there), or not pinned.
pub(super) fn load_datapath(pin_dir: Option<&Path>) -> Result<Datapath> {
    let datapath = match pin_dir {
        Some(dir) => {
            let pins = PinDir::prepare(dir).with_context(|| format!("preparing pin directory {}", dir.display()))?;
            Datapath::load_pinned(pins).context("loading the pinned eBPF datapath")?
        }
        None => Datapath::load().context("loading the eBPF datapath")?,
    };
    if datapath.adopted() {
        info!(
            generation = datapath.generation(),
            "adopted the pinned datapath: its maps and links are kept, nothing was detached"
        );
    }
    Ok(datapath)
}

/// While the agent runs it vouches for DNS learning; if it dies the lease
/// runs out and names fail closed. Renewed on a thread of its own through
/// its own map handle: no lock, install or scrape can delay it.
pub(super) fn spawn_lease(datapath: &Datapath) -> Result<()> {
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
    Ok(())
}

/// Attaches to every LAN interface; returns how many programs were
/// upgraded in place.
pub(super) fn attach_all(dp: &Mutex<Datapath>, lan: &[String], hook: Hook) -> Result<usize> {
    let mut upgraded = 0;
    let mut guard = dp.lock().map_err(|_| anyhow::anyhow!("datapath lock poisoned"))?;
    for iface in lan {
        let done = guard.attach(iface, hook).with_context(|| format!("attaching to {iface}"))?;
        info!(iface, hook = ?hook, new_links = done.new, kept_links = done.kept, "attached");
        if done.stale > 0 {
            warn!(iface, links = done.stale, "pinned links had lost their interface (deleted since): attached anew");
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
            warn!(link, "removed the pinned link of the other hook (the agent ran with another --xdp setting before)");
        }
        upgraded += done.upgraded.len();
    }
    for lan in guard.lans_shared_with_resolvers() {
        warn!(iface = %lan, "a resolver is reached through this LAN interface (one interface for both sides): answers arriving on it cannot be told from a workload's forgery by interface; use a separate upstream interface or a forwarder on the gateway");
    }
    Ok(upgraded)
}

/// Pins of another layout: ours enforce now, alongside; theirs are removed
/// (links first, which detaches their programs), so that there is never a
/// moment without a datapath enforcing.
pub(super) fn replace_other_layouts(dir: &Path) {
    let pins = PinDir::existing(dir);
    for other in pins.other_layouts() {
        match pins.remove_other(&other) {
            Ok(n) => warn!(path = %other.display(), pins = n, "replaced the datapath of another layout version"),
            Err(e) => error!(path = %other.display(), "removing pins of another layout version: {e}"),
        }
    }
}

/// The banner's note on adoption and upgrades.
pub(super) fn adoption_note(adopted: Option<u32>, upgraded: usize) -> String {
    match (adopted, upgraded) {
        (Some(g), 0) => format!(" (adopted the pinned datapath at generation {g})"),
        (Some(g), n) => format!(" (adopted the pinned datapath at generation {g}; upgraded {n} programs in place)"),
        (None, 0) => String::new(),
        (None, n) => format!(" (upgraded {n} programs in place)"),
    }
}
