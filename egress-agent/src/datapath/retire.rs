//! Retiring WebGroup bits. A learned address carries the bits of the
//! WebGroups it was learned for; a bit keeps that meaning in the kernel
//! after its group leaves the pack. Handing the bit to another group at
//! once would let every address learned for the old group pass the new
//! group's rules (a revoked group would live on under another name). So a
//! bit stays taken (its name stays in `EGV2_WEBGROUPS`) until it is
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
use std::thread::JoinHandle;

use aya::maps::{HashMap, Map, MapData};
use egress_common::{LearnKey, LearnValue};

use super::DatapathError;
use super::barrier::RcuBarrier;

/// Passes before giving up on a table that answers keep writing the bits
/// back into (the bits then stay taken; the next install tries again).
const MAX_PASSES: usize = 16;

/// A strip of some bits running in the background.
pub struct Retiring {
    /// The bits being stripped.
    pub bits: u64,
    job: JoinHandle<Result<u64, DatapathError>>,
}

/// Clears `bits` from every entry of the learned table once; returns how
/// many entries had any.
fn pass(learned: &mut HashMap<MapData, LearnKey, LearnValue>, bits: u64) -> Result<u64, DatapathError> {
    let keys: Vec<LearnKey> = learned.keys().filter_map(Result::ok).collect();
    let mut cleared = 0;
    for key in keys {
        let Ok(mut value) = learned.get(&key, 0) else { continue }; // evicted meanwhile
        if value.groups & bits == 0 {
            continue;
        }
        value.groups &= !bits;
        // BPF_EXIST: an entry evicted since is not brought back.
        match learned.insert(key, value, 2) {
            Ok(()) => cleared += 1,
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(DatapathError::map("EGV2_LEARNED", e)),
        }
    }
    Ok(cleared)
}

impl Retiring {
    /// Starts stripping `bits` from the learned table behind `learned_fd`.
    pub fn start(learned_fd: OwnedFd, barrier: Arc<RcuBarrier>, bits: u64) -> Result<Self, DatapathError> {
        let data = MapData::from_fd(learned_fd).map_err(|e| DatapathError::map("EGV2_LEARNED", e))?;
        let mut learned: HashMap<MapData, LearnKey, LearnValue> =
            HashMap::try_from(Map::LruHashMap(data)).map_err(|e| DatapathError::map("EGV2_LEARNED", e))?;
        let job = std::thread::Builder::new().name("egress-retire".into()).spawn(move || {
            let mut total = 0;
            for _ in 0..MAX_PASSES {
                barrier.wait()?;
                match pass(&mut learned, bits)? {
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

    /// Whether the strip has ended (either way).
    pub fn is_finished(&self) -> bool {
        self.job.is_finished()
    }

    /// Waits for the strip to end; how many entries it cleared.
    pub fn finish(self) -> Result<u64, DatapathError> {
        self.job.join().map_err(|_| DatapathError::Io(std::io::Error::other("the retiring thread panicked")))?
    }
}
