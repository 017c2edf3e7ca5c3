//! WebGroup bits: their names in the WebGroup-name table (read back by an adopting
//! agent), what the next compile must keep, and retiring them. A learned
//! address carries the bits of the WebGroups it was learned for; a bit
//! keeps that meaning in the kernel
//! after its group leaves the pack. Handing the bit to another group at
//! once would let every address learned for the old group pass the new
//! group's rules (a revoked group would live on under another name). So a
//! bit stays taken (its name stays in that table) until it is
//! stripped from every learned entry, on a thread of its own:
//!
//! ```text
//! loop { grace period; pass: clear the bits in every entry; stop when a pass cleared none }
//! ```
//! The grace period first lets every program that could still learn with
//! the old pack's name table finish; a later pass catches entries that a
//! program merging an answer into them (`groups |= old`) wrote back with
//! the bit after an earlier pass had cleared it.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use aya::maps::{Array, HashMap, Map, MapData};
use egress_common::{LearnKey, LearnValue, WEBGROUP_NAME_LEN, WebGroupName, maps};

use super::barrier::RcuBarrier;
use super::readback::nul_terminated_text;
use super::{Datapath, DatapathError, map_mut};
use egress_policy::compile::CompiledPack;

/// Passes before giving up on a table that answers keep writing the bits
/// back into (the bits then stay taken; the next install tries again).
const MAX_PASSES: usize = 16;

/// A strip of some bits running in the background.
/// The WebGroup bits of this datapath: taken, and being retired.
#[derive(Default)]
pub struct WebGroupBits {
    /// Mirror of [`maps::WEBGROUPS`]: every bit taken, by the live pack's
    /// groups and by removed groups whose bit is being retired.
    pub(super) names: std::collections::BTreeMap<u32, String>,
    /// The strip of retired bits running now, if any.
    retiring: Option<Retiring>,
}

pub struct Retiring {
    /// The bits being stripped. An install whose pack takes one of them
    /// back (a group re-added) clears it here before its flip: from then on
    /// no pass clears it, and it is not freed.
    bits: Arc<AtomicU64>,
    job: JoinHandle<Result<u64, DatapathError>>,
}

/// Clears the bits `strip` holds (read afresh for every entry) from every
/// entry of the learned table once; returns how many entries had any.
fn pass(learned: &mut HashMap<MapData, LearnKey, LearnValue>, strip: &AtomicU64) -> Result<u64, DatapathError> {
    // Every key, or an error: a pass cut short must not count as clean.
    let keys: Vec<LearnKey> =
        learned.keys().collect::<Result<_, _>>().map_err(|e| DatapathError::map(maps::LEARNED, e))?;
    let mut cleared = 0;
    for key in keys {
        let Ok(mut value) = learned.get(&key, 0) else { continue }; // evicted meanwhile
        let bits = strip.load(Ordering::Acquire);
        if value.groups & bits == 0 {
            continue;
        }
        value.groups &= !bits;
        // BPF_EXIST: an entry evicted since is not brought back.
        match learned.insert(key, value, 2) {
            Ok(()) => cleared += 1,
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(DatapathError::map(maps::LEARNED, e)),
        }
    }
    Ok(cleared)
}

impl Retiring {
    /// Starts stripping `bits` from the learned table behind `learned_fd`.
    pub fn start(learned_fd: OwnedFd, barrier: Arc<RcuBarrier>, bits: u64) -> Result<Self, DatapathError> {
        let data = MapData::from_fd(learned_fd).map_err(|e| DatapathError::map(maps::LEARNED, e))?;
        let mut learned: HashMap<MapData, LearnKey, LearnValue> =
            HashMap::try_from(Map::LruHashMap(data)).map_err(|e| DatapathError::map(maps::LEARNED, e))?;
        let bits = Arc::new(AtomicU64::new(bits));
        let strip = bits.clone();
        let job = std::thread::Builder::new().name("egress-retire".into()).spawn(move || {
            let mut total = 0;
            for _ in 0..MAX_PASSES {
                barrier.wait()?;
                match pass(&mut learned, &strip)? {
                    0 => return Ok(total),
                    n => total += n,
                }
            }
            Err(DatapathError::Io(std::io::Error::other(format!(
                "answers kept writing retired WebGroup bits back after {MAX_PASSES} passes"
            ))))
        })?;
        Ok(Retiring { bits, job })
    }

    /// Stops stripping `bits` (a new pack uses them again).
    pub fn keep(&self, bits: u64) {
        self.bits.fetch_and(!bits, Ordering::AcqRel);
    }

    /// The bits still being stripped.
    pub fn bits(&self) -> u64 {
        self.bits.load(Ordering::Acquire)
    }

    /// Whether the strip has ended (either way).
    pub fn is_finished(&self) -> bool {
        self.job.is_finished()
    }

    /// Waits for the strip to end; how many entries it cleared.
    pub fn finish(self) -> Result<u64, DatapathError> {
        self.job.join().map_err(|_| DatapathError::Io(std::io::Error::other("the retiring thread panicked")))?
    }
}

impl Datapath {
    /// Names the pack's WebGroup bits in [`maps::WEBGROUPS`] (bits are stable
    /// across packs, so a name never changes meaning while in use).
    pub(super) fn write_webgroup_names(&mut self, pack: &CompiledPack) -> Result<(), DatapathError> {
        let mut names = self.webgroup_name_table()?;
        for (name, bit) in &pack.webgroup_bits {
            let mut text = [0u8; WEBGROUP_NAME_LEN];
            // All of it: names are at most 64 bytes (the policy says so),
            // and the reader takes a full buffer without a NUL as it is.
            let n = name.len().min(WEBGROUP_NAME_LEN);
            text[..n].copy_from_slice(&name.as_bytes()[..n]);
            names.set(*bit, text, 0).map_err(|e| DatapathError::map(maps::WEBGROUPS, e))?;
        }
        let mut taken = 0u64;
        for (name, bit) in &pack.webgroup_bits {
            self.webgroups.names.insert(*bit, name.clone());
            taken |= 1u64 << *bit;
        }
        // A group re-added while its bit is being retired: stop stripping it.
        if let Some(job) = &self.webgroups.retiring {
            job.keep(taken);
        }
        Ok(())
    }

    fn webgroup_name_table(&mut self) -> Result<Array<&mut MapData, WebGroupName>, DatapathError> {
        map_mut(&mut self.ebpf, maps::WEBGROUPS)
    }

    /// The WebGroup bits named in [`maps::WEBGROUPS`].
    pub(super) fn read_webgroup_names(&mut self) -> Result<std::collections::BTreeMap<u32, String>, DatapathError> {
        let names = self.webgroup_name_table()?;
        let mut taken = std::collections::BTreeMap::new();
        for bit in 0..egress_common::MAX_WEBGROUPS {
            let text = names.get(&bit, 0).map_err(|e| DatapathError::map(maps::WEBGROUPS, e))?;
            let name = nul_terminated_text(&text);
            if !name.is_empty() {
                taken.insert(bit, name);
            }
        }
        Ok(taken)
    }

    /// What the next compile keeps: every WebGroup bit taken (the live
    /// pack's, those being retired, and after adoption those the pinned
    /// datapath named) and the live pack's combined and port classes.
    pub fn previous(&self) -> egress_policy::compile::Previous {
        let live = self.live_pack().map(egress_policy::compile::CompiledPack::previous).unwrap_or_default();
        egress_policy::compile::Previous {
            webgroup_bits: self.webgroups.names.iter().map(|(b, n)| (n.clone(), *b)).collect(),
            ..live
        }
    }

    /// Retires the WebGroup bits the live pack no longer uses: frees those
    /// a finished strip cleared from the learned table (their names are
    /// cleared, so the next compile may hand them out), and starts a strip
    /// of the rest (see the module comment). Called after every install and
    /// periodically. Returns how many bits it freed.
    pub fn retire_webgroup_bits(&mut self) -> Result<usize, DatapathError> {
        // No pack of this agent's yet (an adopted one keeps enforcing over
        // a bad policy): which bits it uses is not known; retire nothing.
        let Some(live) = self.live_pack().map(|p| p.webgroup_bits.clone()) else { return Ok(0) };
        let unused = |bit: &u32, name: &String| live.get(name) != Some(bit);
        let mut freed = 0;
        if let Some(job) = self.webgroups.retiring.take_if(|j| j.is_finished()) {
            let bits = job.bits();
            job.finish()?;
            let done: Vec<u32> = self
                .webgroups
                .names
                .iter()
                .filter(|(b, n)| bits & (1u64 << **b) != 0 && unused(b, n))
                .map(|(b, _)| *b)
                .collect();
            let mut names = self.webgroup_name_table()?;
            for bit in &done {
                names.set(*bit, [0u8; WEBGROUP_NAME_LEN], 0).map_err(|e| DatapathError::map(maps::WEBGROUPS, e))?;
            }
            for bit in done {
                self.webgroups.names.remove(&bit);
                freed += 1;
            }
        }
        let retired = self.webgroups.names.iter().filter(|(b, n)| unused(b, n)).fold(0u64, |m, (b, _)| m | 1u64 << *b);
        if retired != 0 && self.webgroups.retiring.is_none() {
            use std::os::fd::AsFd as _;
            let fd = match self.ebpf.map(maps::LEARNED) {
                Some(aya::maps::Map::LruHashMap(m)) => m.fd().as_fd().try_clone_to_owned()?,
                _ => return Err(DatapathError::MissingMap(maps::LEARNED.into())),
            };
            self.webgroups.retiring = Some(Retiring::start(fd, self.barrier.clone(), retired)?);
        }
        Ok(freed)
    }

    /// Waits for the running strip of retired WebGroup bits, if any (tests).
    pub fn wait_retiring(&mut self) -> Result<(), DatapathError> {
        while self.webgroups.retiring.as_ref().is_some_and(|j| !j.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }
}
