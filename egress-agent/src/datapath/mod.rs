//! The one module that touches the kernel: loads the datapath object,
//! installs compiled packs atomically, attaches to interfaces, and reads
//! counters, learned addresses and events back.
//!
//! Installing a pack: fill the idle slot, write its meta, flip `LIVE`
//! with one update (every packet then reads the new slot), then wait one
//! RCU grace period so that no packet still reads the old slot before it is
//! refilled.

mod attach;
mod barrier;
mod batch;
pub mod counters;
pub mod events;
#[cfg(feature = "lab")]
mod lab_hooks;
mod lan;
mod lease;
pub mod local;
pub mod memory;
mod mmap_array;
pub mod pin;
mod readback;
pub use readback::LearnedPressure;
mod slot;
mod webgroup_bits;

pub use attach::{Attached, pinned_link_ifindex};
pub use lease::Lease;
pub use readback::nul_terminated_text;
pub use slot::fdinfo_memlock as memlock;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use aya::maps::{Array, MapData};
use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};
use egress_common::maps;
use egress_common::{
    AgentLease, DECISION_UNCOVERED, LiveState, MODE_ENFORCE, MODE_MONITOR, RuleCounter, SLOT_FLAG_NAMES,
    SLOT_FLAG_NO_FLOW_CACHE, SLOT_FLAG_WEBGROUPS, SlotMeta, TAIL_NAMES, TAIL_QUERY, TAIL_READ, TAIL_SECOND_ANSWER,
    UNCOVERED_DENY, UNCOVERED_PASS,
};

use barrier::{PendingBarrier, RcuBarrier};
use counters::CounterBook;
use egress_policy::compile::{CompiledPack, CompiledRule};
use egress_policy::model::Mode;
use pin::PinDir;
use slot::SlotMaps;

/// The datapath object, built from `egress-ebpf` by the build script.
pub static DATAPATH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));

/// The TC ingress program: judges workload packets, tracks DNS queries.
pub const TC_PROGRAM: &str = "egress_tc";
/// The TC egress program: learns addresses from DNS answers.
pub const DNS_PROGRAM: &str = "egress_dns";
/// Tail-called by `egress_tc` for permitted DNS: tracks and filters queries.
pub const TC_QUERY_PROGRAM: &str = "egress_tc_query";
/// The XDP program: judges like `egress_tc`.
pub const XDP_PROGRAM: &str = "egress_xdp";
/// Tail-called by `egress_xdp` for permitted DNS.
pub const XDP_QUERY_PROGRAM: &str = "egress_xdp_query";
/// Tail-called by `egress_tc` for flows whose name must be read.
pub const TC_NAMES_PROGRAM: &str = "egress_tc_names";
/// Tail-called by `egress_xdp` for flows whose name must be read.
pub const XDP_NAMES_PROGRAM: &str = "egress_xdp_names";
/// Tail-called by the names programs: gather a segment's bytes, judge by name.
pub const TC_READ_PROGRAM: &str = "egress_tc_read";
/// The XDP read program.
pub const XDP_READ_PROGRAM: &str = "egress_xdp_read";
/// Tail-called by `egress_dns`: the second answer of a TCP segment.
pub const DNS_SECOND_PROGRAM: &str = "egress_dns_second";
/// The empty baseline program.
pub const EMPTY_PROGRAM: &str = "egress_empty";

/// Errors of the datapath module.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(String),
    #[error("the eBPF object has no program `{0}`")]
    MissingProgram(String),
    #[error("map `{name}`: {source}")]
    Map { name: String, source: aya::maps::MapError },
    #[error("program `{name}`: {source}")]
    Program { name: String, source: aya::programs::ProgramError },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    CountersFull(#[from] counters::CountersFull),
}

impl DatapathError {
    fn map(name: &str, source: aya::maps::MapError) -> Self {
        DatapathError::Map { name: name.to_string(), source }
    }
    fn program(name: &str, source: aya::programs::ProgramError) -> Self {
        DatapathError::Program { name: name.to_string(), source }
    }
}

/// Which hook judges a LAN interface's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// TC (tcx) ingress: the default.
    Tc,
    /// XDP (native driver mode where the NIC supports it).
    Xdp,
}

/// Totals of a rule, summed over every pack generation it appeared in.
pub type RuleTotals = std::collections::HashMap<String, [RuleCounter; 3]>;

/// The loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    live: Array<MapData, LiveState>,
    meta: Array<MapData, SlotMeta>,
    /// The agent's lease on DNS learning ([`maps::AGENT`]).
    lease: Array<MapData, AgentLease>,
    slots: [SlotMaps; 2],
    installed: [Option<CompiledPack>; 2],
    /// Generation of the pack in each slot.
    installed_gen: [u32; 2],
    state: LiveState,
    barrier: std::sync::Arc<RcuBarrier>,
    /// The grace period after the last flip, when not yet waited for.
    barrier_pending: Option<PendingBarrier>,
    /// Which counter each rule name counts into, and what reclaimed ones had counted.
    counter_book: CounterBook,
    /// Whether packs installed from now on use the flow cache.
    flow_cache: bool,
    /// The gateway's own addresses.
    local: BTreeSet<IpAddr>,
    /// Where maps and links are pinned, if anywhere.
    pins: Option<PinDir>,
    /// Whether this agent adopted a pinned datapath.
    adopted: bool,
    /// The hook the judging program is attached with.
    hook: Hook,
    /// WebGroup bits taken and those being retired.
    webgroups: webgroup_bits::WebGroupBits,
    /// The LAN interfaces and those a resolver is reached through.
    lan_marks: lan::LanMarks,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").field("generation", &self.state.generation).finish_non_exhaustive()
    }
}

/// A key for the flow cache's hash that no workload can guess: `std`'s
/// hasher keys come from the operating system's random source once per
/// process, and each new `RandomState` is a different key.
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x65_67_72_65_73_73u64)
}

fn add_counts(total: &mut [RuleCounter; 3], cells: [RuleCounter; 3]) {
    for (t, c) in total.iter_mut().zip(cells) {
        t.packets += c.packets;
        t.bytes += c.bytes;
        t.flows += c.flows;
    }
}

impl Datapath {
    /// Loads the datapath into the kernel (programs verified, nothing attached).
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with_learned_capacity(egress_common::MAX_LEARNED)
    }

    /// [`Datapath::load`] with another capacity of the learned-address table
    /// (tests of eviction use a small one).
    pub fn load_with_learned_capacity(capacity: u32) -> Result<Self, DatapathError> {
        Self::load_inner(capacity, None)
    }

    /// Loads the datapath with every map pinned under `pins`. If a datapath
    /// of this layout is pinned there already, it is adopted: its maps are
    /// reused (learned addresses, flows and the live pack included), its
    /// attached programs keep running, and nothing is detached.
    pub fn load_pinned(pins: PinDir) -> Result<Self, DatapathError> {
        Self::load_inner(egress_common::MAX_LEARNED, Some(pins))
    }

    /// Whether a pinned datapath was adopted.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    fn load_inner(capacity: u32, pins: Option<PinDir>) -> Result<Self, DatapathError> {
        let paths: Vec<(&str, std::path::PathBuf)> = match &pins {
            Some(p) => maps::all().map(|n| (n, p.map(n))).collect(),
            None => Vec::new(),
        };
        let pinned = pins.as_ref().is_some_and(PinDir::has_datapath);
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::LEARNED, capacity);
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(DATAPATH_OBJECT)?;
        for name in [
            TC_PROGRAM,
            TC_QUERY_PROGRAM,
            TC_NAMES_PROGRAM,
            TC_READ_PROGRAM,
            DNS_PROGRAM,
            DNS_SECOND_PROGRAM,
            EMPTY_PROGRAM,
        ] {
            let prog: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
            prog.load().map_err(|e| DatapathError::program(name, e))?;
        }
        for name in [XDP_PROGRAM, XDP_QUERY_PROGRAM, XDP_NAMES_PROGRAM, XDP_READ_PROGRAM] {
            let xdp: &mut Xdp = program_mut(&mut ebpf, name)?;
            xdp.load().map_err(|e| DatapathError::program(name, e))?;
        }
        fill_tail_calls(&mut ebpf)?;
        let slots = [SlotMaps::take(&mut ebpf, 0)?, SlotMaps::take(&mut ebpf, 1)?];
        let live: Array<MapData, LiveState> = take_map(&mut ebpf, maps::LIVE)?;
        let meta = take_map(&mut ebpf, maps::SLOT_META)?;
        let lease = take_map(&mut ebpf, maps::AGENT)?;
        // A datapath to adopt has a pack in force: pins whose live slot
        // never got one (an agent that failed before its first install)
        // judge nothing, and must not pass for an enforcing datapath.
        let adopted = pinned && live.get(&0, 0).map_err(|e| DatapathError::map(maps::LIVE, e))?.generation != 0;
        let mut dp = Datapath {
            ebpf,
            live,
            meta,
            lease,
            slots,
            installed: [None, None],
            installed_gen: [0, 0],
            state: LiveState::default(),
            barrier: std::sync::Arc::new(RcuBarrier::new()?),
            barrier_pending: None,
            counter_book: CounterBook::default(),
            flow_cache: true,
            local: BTreeSet::new(),
            pins,
            adopted,
            hook: Hook::Tc,
            webgroups: webgroup_bits::WebGroupBits::default(),
            lan_marks: lan::LanMarks::default(),
        };
        // Bits taken before (an adopted datapath): kept, and retired if
        // their group is gone, like any other pack's.
        dp.webgroups.names = dp.read_webgroup_names()?;
        if adopted {
            dp.adopt()?;
        } else if dp.pins.is_some() {
            // Pins without a live slot (a detach cut short): maps reused
            // from them may hold entries; mirror what they hold so that the
            // first install removes what it does not want.
            for slot in &mut dp.slots {
                slot.adopt()?;
            }
        }
        dp.renew_lease()?;
        Ok(dp)
    }

    /// Takes over a pinned datapath's state: the live slot and generation,
    /// what each slot holds. Counters of the packs installed before are
    /// zeroed and left unnamed (this agent does not know their rule names);
    /// new rule names get other counters.
    fn adopt(&mut self) -> Result<(), DatapathError> {
        self.state = self.live.get(&0, 0).map_err(|e| DatapathError::map(maps::LIVE, e))?;
        for slot in 0..2 {
            let meta = self.meta.get(&(slot as u32), 0).map_err(|e| DatapathError::map(maps::SLOT_META, e))?;
            self.slots[slot].adopt()?;
            if meta.generation == 0 {
                continue;
            }
            let used: HashSet<u32> = self.slots[slot]
                .rule_infos(meta.implicit_rule as usize + 1 + usize::from(meta.uncovered == UNCOVERED_DENY))
                .iter()
                .map(|r| r.counter)
                .filter(|&c| c < egress_common::MAX_RULES)
                .collect();
            for &c in &used {
                self.slots[0].zero_counter(c)?;
                self.slots[1].zero_counter(c)?;
            }
            self.counter_book.ids.skip_to(used.iter().max().map_or(0, |m| m + 1));
            self.counter_book.by_slot[slot] = used;
        }
        Ok(())
    }

    /// Gives every rule of `pack` its lasting counter. Counters taken back
    /// for reuse are folded into the retired totals and zeroed first.
    fn with_counters(&mut self, mut pack: CompiledPack, idle: usize) -> Result<CompiledPack, DatapathError> {
        let names: Vec<&str> = pack.rules.iter().map(|r| r.name.as_str()).collect();
        let live = &self.counter_book.by_slot[1 - idle];
        let (ids, reclaimed) = self.counter_book.ids.assign(&names, live)?;
        for r in reclaimed {
            let mut cells = [RuleCounter::default(); 3];
            for slot in &mut self.slots {
                add_counts(&mut cells, slot.read_counter(r.index)?);
                slot.zero_counter(r.index)?;
            }
            if let Some(name) = r.name {
                add_counts(self.counter_book.retired.entry(name).or_insert([RuleCounter::default(); 3]), cells);
            }
        }
        for (rule, id) in pack.rules.iter_mut().zip(&ids) {
            rule.info.counter = *id;
        }
        self.counter_book.by_slot[idle] = ids.into_iter().collect();
        Ok(pack)
    }

    /// Installs `pack` atomically and returns its generation. On error the
    /// live pack is unchanged.
    pub fn install(&mut self, pack: CompiledPack) -> Result<u32, DatapathError> {
        self.wait_for_idle_slot()?;
        let idle = (1 - self.state.slot) as usize;
        // The pack two installs back is freed off the swap's path.
        let old = self.installed[idle].take();
        crate::background_drop::drop_in_background(old);
        self.installed_gen[idle] = 0;
        let pack = self.with_counters(pack, idle)?;
        self.slots[idle].fill(&pack, &self.local)?;
        self.write_webgroup_names(&pack)?;
        let generation = self.state.generation.wrapping_add(1).max(1);
        let mut flags = 0;
        if !self.flow_cache {
            flags |= SLOT_FLAG_NO_FLOW_CACHE;
        }
        if !pack.xw.is_empty() {
            flags |= SLOT_FLAG_WEBGROUPS;
        }
        if pack.named.any() {
            flags |= SLOT_FLAG_NAMES;
        }
        let meta = SlotMeta {
            generation,
            implicit_rule: pack.implicit_rule,
            mode: if pack.unjudgeable_mode == Mode::Enforce { MODE_ENFORCE } else { MODE_MONITOR },
            any_source: u8::from(pack.any_source),
            flags,
            query_filter: pack.query_filter,
            tunnel_guard: pack.tunnel_guard,
            uncovered: if pack.uncovered_rule == DECISION_UNCOVERED { UNCOVERED_PASS } else { UNCOVERED_DENY },
            _pad: [0; 2],
            min_ttl: pack.min_ttl,
            max_ttl: pack.max_ttl,
            permit_groups: pack.permit_groups,
            flow_seed: fresh_seed(),
            query_types: pack.query_types,
            name_lengths: pack.name_lengths,
        };
        self.meta.set(idle as u32, meta, 0).map_err(|e| DatapathError::map(maps::SLOT_META, e))?;
        let state = LiveState { slot: idle as u32, generation };
        self.live.set(0, state, 0).map_err(|e| DatapathError::map(maps::LIVE, e))?;
        self.state = state;
        self.installed[idle] = Some(pack);
        self.installed_gen[idle] = generation;
        // The pack is enforced. Once a grace period has passed no packet
        // reads the other slot any more; it is waited for in the background
        // and finished before that slot is written again.
        // (No thread: it is waited for then, in this thread.)
        self.barrier_pending = Some(self.barrier.start().unwrap_or(PendingBarrier::Owed));
        Ok(generation)
    }

    /// Returns once no packet can still be reading the idle slot.
    fn wait_for_idle_slot(&mut self) -> Result<(), DatapathError> {
        if let Some(pending) = self.barrier_pending.take()
            && pending.finish().is_err()
        {
            // Still owed if this fails too: the next install retries.
            self.barrier_pending = Some(PendingBarrier::Owed);
            self.barrier.wait()?;
            self.barrier_pending = None;
        }
        Ok(())
    }

    /// Sets the hook `attach` will use and `status` reports.
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = hook;
    }

    /// The hook the judging program is (or will be) attached with.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// Records what was installed in [`maps::STATUS`] (for `egress-agent status`).
    pub fn set_status(&mut self, status: &egress_common::PackStatus) -> Result<(), DatapathError> {
        let mut array: Array<_, egress_common::PackStatus> = map_mut(&mut self.ebpf, maps::STATUS)?;
        array.set(0, *status, 0).map_err(|e| DatapathError::map(maps::STATUS, e))
    }

    /// The live pack, if one is installed.
    pub fn live_pack(&self) -> Option<&CompiledPack> {
        self.installed[self.state.slot as usize].as_ref().filter(|_| self.state.generation != 0)
    }

    /// The rule at `index` of the pack of `generation`, while that pack is
    /// still one of the two installed (the live one or the one before).
    pub fn rule(&self, generation: u32, index: u32) -> Option<&CompiledRule> {
        (0..2)
            .find(|&s| self.installed_gen[s] == generation)
            .and_then(|s| self.installed[s].as_ref())
            .and_then(|p| p.rules.get(index as usize))
    }

    /// The bit of a WebGroup of the live pack.
    pub fn webgroup_bit(&self, name: &str) -> Option<u32> {
        self.live_pack().and_then(|p| p.webgroup_bits.get(name).copied())
    }

    /// Kernel memory of the live slot's tables, per map, in bytes; see
    /// `SlotMaps::memlock` for what the kernel counts. Shared maps (flow
    /// cache, fragments, events, learned addresses) are not counted.
    pub fn live_slot_memlock(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        self.slots[self.state.slot as usize].memlock()
    }

    /// The live generation (0 before the first install).
    pub fn generation(&self) -> u32 {
        self.state.generation
    }

    /// The key of the flow cache's hash in the live pack (tests that place
    /// flows in one set need it).
    pub fn flow_seed(&self) -> Result<u64, DatapathError> {
        let meta = self.meta.get(&self.state.slot, 0).map_err(|e| DatapathError::map(maps::SLOT_META, e))?;
        Ok(meta.flow_seed)
    }

    /// Per-rule totals by name, over every pack installed so far.
    pub fn rule_totals(&self) -> Result<RuleTotals, DatapathError> {
        let mut totals = self.counter_book.retired.clone();
        for (name, index) in self.counter_book.ids.named() {
            let total = totals.entry(name.to_string()).or_insert([RuleCounter::default(); 3]);
            for slot in &self.slots {
                add_counts(total, slot.read_counter(index)?);
            }
        }
        Ok(totals)
    }

    /// The live slot's resolvers as the kernel holds them (right after an
    /// adoption no pack of this agent's says).
    pub(super) fn live_slot_resolvers(&self) -> Vec<IpAddr> {
        self.slots[self.state.slot as usize].resolver_addrs()
    }

    /// The gateway's own addresses as last set.
    pub fn local_addresses(&self) -> &BTreeSet<IpAddr> {
        &self.local
    }

    /// Sets the gateway's own addresses (packets to them are not judged),
    /// in the live slot now and in every pack installed later. The live
    /// pack's resolvers are left out: traffic to a resolver on the gateway
    /// is judged like any other. Flows cached towards an address that has
    /// just become the gateway's are dropped from the cache (the datapath
    /// looks at the cache before at the gateway's addresses).
    pub fn set_local_addresses(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), DatapathError> {
        self.local.clone_from(addrs);
        let live = self.state.slot as usize;
        // After an adoption no pack of this agent's is installed yet: the
        // live slot's own resolvers, so that a resolver on the gateway is
        // never taken for one of its own (unjudged) addresses meanwhile.
        let resolvers = match &self.installed[live] {
            Some(p) => p.resolvers.clone(),
            None => self.live_slot_resolvers(),
        };
        let added = self.slots[live].set_local(addrs, &resolvers)?;
        if !added.is_empty() {
            self.forget_flows_to(&added)?;
        }
        Ok(())
    }
}

/// A map's capacity as the kernel created it.
fn map_capacity(map: &aya::maps::Map) -> u64 {
    use aya::maps::Map;
    let (Map::LruHashMap(data) | Map::HashMap(data)) = map else { return 0 };
    data.info().map_or(0, |i| u64::from(i.max_entries()))
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?;
    prog.try_into().map_err(|e| DatapathError::program(name, e))
}

/// A map of the loaded object, borrowed as its typed wrapper.
pub(crate) fn map_mut<'a, T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<T, DatapathError> {
    let map = ebpf.map_mut(name).ok_or_else(|| DatapathError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

/// A map of the loaded object, borrowed read-only as its typed wrapper.
pub(crate) fn map_ref<'a, T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &'a Ebpf,
    name: &str,
) -> Result<T, DatapathError> {
    let map = ebpf.map(name).ok_or_else(|| DatapathError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

/// Takes a map out of the loaded object as its typed wrapper.
pub(crate) fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, DatapathError> {
    let map = ebpf.take_map(name).ok_or_else(|| DatapathError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

/// Puts the tail-called programs in the judges' program arrays: the query
/// programs, the names and read programs (TC and XDP), and the
/// second-answer program (TC egress).
fn fill_tail_calls(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    for (tails, index, name) in [
        (maps::TAILS_TC, TAIL_QUERY, TC_QUERY_PROGRAM),
        (maps::TAILS_TC, TAIL_NAMES, TC_NAMES_PROGRAM),
        (maps::TAILS_TC, TAIL_READ, TC_READ_PROGRAM),
        (maps::TAILS_TC, TAIL_SECOND_ANSWER, DNS_SECOND_PROGRAM),
        (maps::TAILS_XDP, TAIL_QUERY, XDP_QUERY_PROGRAM),
        (maps::TAILS_XDP, TAIL_NAMES, XDP_NAMES_PROGRAM),
        (maps::TAILS_XDP, TAIL_READ, XDP_READ_PROGRAM),
    ] {
        let fd = ebpf
            .program(name)
            .ok_or_else(|| DatapathError::MissingProgram(name.into()))?
            .fd()
            .map_err(|e| DatapathError::program(name, e))?
            .try_clone()
            .map_err(DatapathError::Io)?;
        let map = ebpf.map_mut(tails).ok_or_else(|| DatapathError::MissingMap(tails.into()))?;
        let mut array = aya::maps::ProgramArray::try_from(map).map_err(|e| DatapathError::map(tails, e))?;
        array.set(index, &fd, 0).map_err(|e| DatapathError::map(tails, e))?;
    }
    Ok(())
}
