//! The agent's one way of making a pack live ([`Reloader::install`]):
//! read, validate and compile the policy off the packet path, then install
//! it in one atomic step. The daemon calls it at start and from its reload
//! task (file changes, SIGHUP); `bench swap` times exactly this code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::datapath::{Datapath, local::local_addresses};
use egress_policy::{self as policy, compile::compile_stable_with, model::Pack};

/// Why a pack was not installed. The live pack is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Every parse and validation error, each at `file:line:column`.
    #[error("{0}")]
    Policy(#[from] policy::PolicyErrors),
    /// Not `#[source]`: the message is in the line already, and a chain
    /// printed whole would say it twice.
    #[error("{file}: {error}")]
    Compile { file: String, error: policy::compile::CompileError },
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
            ReloadError::Compile { error, .. } => {
                matches!(error, policy::compile::CompileError::WebGroupBitsRetiring { .. })
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

/// The one way a pack becomes live: owns what a reload needs (the
/// datapath's handle, the policy path, the parse cache). `&mut self`
/// makes reloads one at a time, so that WebGroup bits are always derived
/// from the pack that is live. The daemon's reload task owns the one
/// `Reloader` of a running agent.
pub struct Reloader {
    dp: Arc<Mutex<Datapath>>,
    path: PathBuf,
    /// What the last load parsed: a reload parses only what changed.
    cache: policy::ParseCache,
}

impl Reloader {
    /// A reloader of the policy at `path` (a file or a directory) into `dp`.
    pub fn new(dp: Arc<Mutex<Datapath>>, path: PathBuf) -> Self {
        Reloader { dp, path, cache: policy::ParseCache::new() }
    }

    /// The policy file or directory reloaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads, parses, merges and validates the files.
    fn load(&mut self) -> Result<(Pack, u64), ReloadError> {
        let loaded = self.cache.load_hashed(&self.path);
        // What the last load held and this one no longer needs is freed
        // off the reload's path.
        let retired = self.cache.take_retired();
        if !retired.is_empty() {
            crate::background_drop::drop_in_background(retired);
        }
        Ok(loaded?)
    }

    /// Loads, validates and compiles the pack and installs it, keeping the
    /// WebGroup bits of the live pack. The datapath lock is held only while
    /// installing.
    pub fn install(&mut self) -> Result<Installed, ReloadError> {
        let t0 = Instant::now();
        let (mut pack, hash) = self.load()?;
        // The `gateway` destination: the host's addresses now (the
        // upkeep reloads when they change).
        let addrs = local_addresses().map_err(ReloadError::LocalAddresses)?;
        pack.gateway = addrs.iter().copied().collect();
        let t1 = Instant::now();
        let previous = self.dp.lock().map_err(|_| ReloadError::Poisoned)?.previous();
        // The name table needs nothing else: a large one is built alongside.
        let compiled = compile_stable_with(&pack, &previous, |names, tables| {
            std::thread::scope(|s| {
                let names = s.spawn(names);
                let tables = tables();
                (names.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), tables)
            })
        })
        .map_err(|source| ReloadError::Compile { file: self.path.display().to_string(), error: source })?;
        let t2 = Instant::now();
        let mut dp = self.dp.lock().map_err(|_| ReloadError::Poisoned)?;
        dp.set_local_addresses(&addrs)?;
        let generation = dp.install(compiled)?;
        // The new pack is enforced from here on; what follows is upkeep.
        let enforced = Instant::now();
        upkeep_after_install(&mut dp, &pack, hash, generation);
        drop(dp);
        let timings = SwapTimings { load: t1 - t0, compile: t2 - t1, install: enforced - t2 };
        Ok(Installed { pack, generation, timings, hash })
    }
}

/// After a pack is enforced: LAN marks, bit retirement, the status record.
fn upkeep_after_install(dp: &mut Datapath, pack: &Pack, hash: u64, generation: u32) {
    if let Err(e) = dp.sync_lan_marks() {
        tracing::warn!("updating the LAN interfaces the DNS learner distrusts: {e}");
    }
    // Bits of WebGroups gone are cleared from learned addresses in the
    // background before any other group may have them.
    if let Err(e) = dp.retire_webgroup_bits() {
        tracing::warn!("retiring the bits of removed webgroups (they stay taken; retried): {e}");
    }
    // Only informs `status`: a failure here does not undo the install.
    let status = status_of(pack, hash, generation, dp.hook());
    if let Err(e) = dp.set_status(&status) {
        tracing::warn!("recording the pack's status for `egress-agent status`: {e}");
    }
}

/// What `egress-agent status` shows of an installed pack.
fn status_of(pack: &Pack, hash: u64, generation: u32, hook: crate::datapath::Hook) -> egress_common::PackStatus {
    use egress_policy::model::Mode;
    let installed_unix_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
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
        assert!(ReloadError::Compile { file: "p.yaml".into(), error: retiring }.may_pass());
        assert!(!ReloadError::Compile { file: "p.yaml".into(), error: CompileError::TooManyWebGroups(65) }.may_pass());
        assert!(!ReloadError::Poisoned.may_pass());
    }
}
