//! The agent's one way of making a pack live: read, validate and compile
//! the policy off the packet path, then install it in one atomic step.
//! `run` calls it at start, on SIGHUP and on file changes; `bench swap`
//! times exactly this code.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::datapath::{Datapath, local::local_addresses};
use egress_policy::{self as policy, compile::compile_stable, model::Pack};

/// Why a pack was not installed. The live pack is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Every parse and validation error, each at `file:line:column`.
    #[error("{0}")]
    Policy(#[from] policy::PolicyErrors),
    #[error("{file}: {source}")]
    Compile { file: String, source: policy::compile::CompileError },
    #[error("reading the gateway's addresses: {0}")]
    LocalAddresses(std::io::Error),
    #[error("installing the pack: {0}")]
    Install(#[from] crate::datapath::DatapathError),
    #[error("the datapath lock is poisoned (a thread panicked while installing)")]
    Poisoned,
}

impl ReloadError {
    /// Whether trying again later may succeed with the same files: the
    /// host (its addresses, the kernel's maps) failed, or WebGroup bits are
    /// still being retired; not when the policy itself is at fault.
    pub fn may_pass(&self) -> bool {
        match self {
            ReloadError::LocalAddresses(_) | ReloadError::Install(_) => true,
            ReloadError::Compile { source, .. } => {
                matches!(source, policy::compile::CompileError::WebGroupBitsRetiring { .. })
            }
            ReloadError::Policy(_) | ReloadError::Poisoned => false,
        }
    }
}

/// How long each step of one reload took.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwapTimings {
    /// Reading, parsing, merging and validating the files.
    pub load: Duration,
    /// Compiling the pack to tables.
    pub compile: Duration,
    /// Writing the idle slot and flipping the live pack: after this, every
    /// new packet is judged by the new pack.
    pub install: Duration,
}

impl SwapTimings {
    /// From reading the files to the new pack enforced.
    pub fn total(&self) -> Duration {
        self.load + self.compile + self.install
    }
}

/// A pack made live.
#[derive(Debug)]
pub struct Installed {
    pub pack: Pack,
    pub generation: u32,
    pub timings: SwapTimings,
    /// Hash of the files read.
    pub hash: u64,
}

/// Loads, validates and compiles the pack at `path` and installs it,
/// keeping the WebGroup bits of the live pack. The lock is held only while
/// installing.
pub fn install_from(dp: &Mutex<Datapath>, path: &Path) -> Result<Installed, ReloadError> {
    // One reload at a time (a file change and a SIGHUP may race), so that
    // WebGroup bits are always derived from the pack that is live.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let t0 = Instant::now();
    let (pack, hash) = policy::load_hashed(path)?;
    let t1 = Instant::now();
    let previous = {
        let dp = dp.lock().map_err(|_| ReloadError::Poisoned)?;
        dp.previous()
    };
    let compiled = compile_stable(&pack, &previous)
        .map_err(|source| ReloadError::Compile { file: path.display().to_string(), source })?;
    let addrs = local_addresses().map_err(ReloadError::LocalAddresses)?;
    let t2 = Instant::now();
    let generation = {
        let mut dp = dp.lock().map_err(|_| ReloadError::Poisoned)?;
        if addrs.len() > egress_common::MAX_LOCAL_ADDRS as usize {
            tracing::warn!(
                addresses = addrs.len(),
                kept = egress_common::MAX_LOCAL_ADDRS,
                "the gateway has more addresses than the datapath keeps as its own; packets to the others are judged by the rules"
            );
        }
        dp.set_local_addresses(&addrs)?;
        let generation = dp.install(compiled)?;
        // The new pack is enforced from here on; what follows is upkeep.
        let enforced = Instant::now();
        if let Err(e) = dp.sync_lan_marks() {
            tracing::warn!("updating the LAN interfaces the DNS learner distrusts: {e}");
        }
        // Bits of WebGroups gone are cleared from learned addresses in the
        // background before any other group may have them.
        if let Err(e) = dp.retire_webgroup_bits() {
            tracing::warn!("retiring the bits of removed webgroups (they stay taken; retried): {e}");
        }
        // Only informs `status`: a failure here does not undo the install.
        let status = status_of(&pack, hash, generation, dp.hook());
        if let Err(e) = dp.set_status(&status) {
            tracing::warn!("recording the pack's status for `egress-agent status`: {e}");
        }
        (generation, enforced)
    };
    let (generation, enforced) = generation;
    let timings = SwapTimings { load: t1 - t0, compile: t2 - t1, install: enforced - t2 };
    Ok(Installed { pack, generation, timings, hash })
}

/// What `egress-agent status` shows of an installed pack.
fn status_of(pack: &Pack, hash: u64, generation: u32, hook: crate::datapath::Hook) -> egress_common::PackStatus {
    use egress_policy::model::Mode;
    let installed_unix_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    egress_common::PackStatus {
        generation,
        rules: pack.rules.len() as u32,
        installed_unix_ns,
        hash,
        smartgroups: pack.smartgroups.len() as u32,
        webgroups: pack.webgroups.len() as u32,
        domains: pack.webgroups.values().map(|g| g.domains.len() as u32).sum(),
        mode: if pack.mode == Mode::Enforce { egress_common::MODE_ENFORCE } else { egress_common::MODE_MONITOR },
        hook: match hook {
            crate::datapath::Hook::Tc => egress_common::HOOK_TC,
            crate::datapath::Hook::Xdp => egress_common::HOOK_XDP,
        },
        _pad: [0; 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_policy::compile::CompileError;

    /// Which failures are retried: the host's, and bits still retiring;
    /// never the policy's own faults.
    #[test]
    fn what_may_pass() {
        assert!(ReloadError::LocalAddresses(std::io::Error::other("getifaddrs")).may_pass());
        let retiring = CompileError::WebGroupBitsRetiring { groups: 3, retiring: 62 };
        assert!(ReloadError::Compile { file: "p.yaml".into(), source: retiring }.may_pass());
        assert!(!ReloadError::Compile { file: "p.yaml".into(), source: CompileError::TooManyWebGroups(65) }.may_pass());
        assert!(!ReloadError::Poisoned.may_pass());
    }
}
