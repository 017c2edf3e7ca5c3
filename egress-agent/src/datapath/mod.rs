//! The one module that touches the kernel: loads the datapath object,
//! installs compiled packs atomically, attaches to interfaces, and reads
//! counters and events back.
//!
//! Installing a pack: fill the idle slot, flip `EGV1_LIVE` with one update
//! (every packet then reads the new slot), then wait one RCU grace period so
//! that no packet still reads the old slot before it is refilled.

mod barrier;
pub mod local;
mod slot;

use std::collections::BTreeSet;
use std::net::IpAddr;

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use egress_common::{
    LiveState, MODE_ENFORCE, MODE_MONITOR, RuleCounter, SLOT_FLAG_NO_FLOW_CACHE, SlotMeta,
};

use crate::policy::compile::CompiledPack;
use crate::policy::model::Mode;
use barrier::RcuBarrier;
use slot::SlotMaps;

/// The datapath object, built from `egress-ebpf` by the build script.
pub static DATAPATH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));

/// Name of the TC program.
pub const TC_PROGRAM: &str = "egress_tc";
/// Name of the XDP program.
pub const XDP_PROGRAM: &str = "egress_xdp";
/// Name of the empty baseline program.
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
    local: HashMap<MapData, [u8; 16], u8>,
    slots: [SlotMaps; 2],
    installed: [Option<CompiledPack>; 2],
    /// Generation of the pack in each slot.
    installed_gen: [u32; 2],
    state: LiveState,
    barrier: RcuBarrier,
    /// Counters of packs no longer live, by rule name.
    retired: RuleTotals,
    /// Whether packs installed from now on use the flow cache.
    flow_cache: bool,
}

impl Datapath {
    /// Loads the datapath into the kernel (programs verified, nothing attached).
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = EbpfLoader::new().load(DATAPATH_OBJECT)?;
        for name in [TC_PROGRAM, EMPTY_PROGRAM] {
            let prog: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
            prog.load().map_err(|e| DatapathError::program(name, e))?;
        }
        let xdp: &mut Xdp = program_mut(&mut ebpf, XDP_PROGRAM)?;
        xdp.load().map_err(|e| DatapathError::program(XDP_PROGRAM, e))?;
        let slots = [SlotMaps::take(&mut ebpf, 0)?, SlotMaps::take(&mut ebpf, 1)?];
        let live = take_map(&mut ebpf, "EGV1_LIVE")?;
        let meta = take_map(&mut ebpf, "EGV1_SLOT_META")?;
        let local = take_map(&mut ebpf, "EGV1_LOCAL")?;
        Ok(Datapath {
            ebpf,
            live,
            meta,
            local,
            slots,
            installed: [None, None],
            installed_gen: [0, 0],
            state: LiveState::default(),
            barrier: RcuBarrier::new()?,
            retired: RuleTotals::new(),
            flow_cache: true,
        })
    }

    /// Installs `pack` atomically and returns its generation.
    pub fn install(&mut self, pack: &CompiledPack) -> Result<u32, DatapathError> {
        let idle = (1 - self.state.slot) as usize;
        let old = self.installed[idle].take();
        if let Some(old) = &old {
            self.retire_counters(idle, old)?;
        }
        self.slots[idle].fill(old.as_ref(), pack)?;
        let generation = self.state.generation.wrapping_add(1).max(1);
        let meta = SlotMeta {
            generation,
            implicit_rule: pack.implicit_rule,
            mode: if pack.mode == Mode::Enforce { MODE_ENFORCE } else { MODE_MONITOR },
            any_source: pack.any_source as u8,
            flags: if self.flow_cache { 0 } else { SLOT_FLAG_NO_FLOW_CACHE },
            _pad: [0; 5],
        };
        self.meta.set(idle as u32, meta, 0).map_err(|e| DatapathError::map("EGV1_SLOT_META", e))?;
        let state = LiveState { slot: idle as u32, generation };
        self.live.set(0, state, 0).map_err(|e| DatapathError::map("EGV1_LIVE", e))?;
        self.state = state;
        self.installed[idle] = Some(pack.clone());
        self.installed_gen[idle] = generation;
        // From here on no packet reads the other slot once the barrier returns.
        self.barrier.wait()?;
        Ok(generation)
    }

    fn retire_counters(&mut self, slot: usize, pack: &CompiledPack) -> Result<(), DatapathError> {
        let counts = self.slots[slot].read_counters(pack.rules.len())?;
        for (rule, cells) in pack.rules.iter().zip(counts) {
            let total = self.retired.entry(rule.name.clone()).or_insert([RuleCounter::default(); 3]);
            for (t, c) in total.iter_mut().zip(cells) {
                t.packets += c.packets;
                t.bytes += c.bytes;
                t.flows += c.flows;
            }
        }
        self.slots[slot].zero_counters(pack.rules.len())
    }

    /// Benchmarks only: with `false`, packs installed afterwards decide every
    /// packet afresh (nothing is cached), so repeated runs of one packet
    /// measure the new-flow path.
    pub fn set_flow_cache(&mut self, enabled: bool) {
        self.flow_cache = enabled;
    }

    /// The live pack, if one is installed.
    pub fn live_pack(&self) -> Option<&CompiledPack> {
        self.installed[self.state.slot as usize].as_ref().filter(|_| self.state.generation != 0)
    }

    /// The rule at `index` of the pack of `generation`, while that pack is
    /// still one of the two installed (the live one or the one before).
    pub fn rule(&self, generation: u32, index: u32) -> Option<&crate::policy::compile::CompiledRule> {
        (0..2)
            .find(|&s| self.installed_gen[s] == generation)
            .and_then(|s| self.installed[s].as_ref())
            .and_then(|p| p.rules.get(index as usize))
    }

    /// Kernel memory of the live slot's tables, per map (`src4`, `src6`,
    /// `dst4`, `dst6`, `ports`, `sp`, `xd`, `defaults`, `rules`, `counters`),
    /// in bytes; see `SlotMaps::memlock` for what the kernel counts. Shared
    /// maps (flow cache, fragments, events) and the idle slot are not counted.
    pub fn live_slot_memlock(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        self.slots[self.state.slot as usize].memlock()
    }

    /// The live generation (0 before the first install).
    pub fn generation(&self) -> u32 {
        self.state.generation
    }

    /// Per-rule totals by name, over every pack installed so far.
    pub fn rule_totals(&self) -> Result<RuleTotals, DatapathError> {
        let mut totals = self.retired.clone();
        for (slot, pack) in self.installed.iter().enumerate() {
            let Some(pack) = pack else { continue };
            let counts = self.slots[slot].read_counters(pack.rules.len())?;
            for (rule, cells) in pack.rules.iter().zip(counts) {
                let total = totals.entry(rule.name.clone()).or_insert([RuleCounter::default(); 3]);
                for (t, c) in total.iter_mut().zip(cells) {
                    t.packets += c.packets;
                    t.bytes += c.bytes;
                    t.flows += c.flows;
                }
            }
        }
        Ok(totals)
    }

    /// Sets the addresses that count as the gateway's own (packets to them
    /// are not judged). The listed resolvers are left out: traffic to a
    /// resolver on the gateway is judged like any other.
    pub fn set_local_addresses(
        &mut self,
        addrs: &BTreeSet<IpAddr>,
        resolvers: &[IpAddr],
    ) -> Result<(), DatapathError> {
        let want: BTreeSet<[u8; 16]> =
            addrs.iter().filter(|a| !resolvers.contains(a)).map(|a| local::addr_key(*a)).collect();
        let have: Vec<[u8; 16]> = self.local.keys().filter_map(Result::ok).collect();
        for k in have.iter().filter(|k| !want.contains(*k)) {
            self.local.remove(k).map_err(|e| DatapathError::map("EGV1_LOCAL", e))?;
        }
        for k in want.iter().filter(|k| !have.contains(k)) {
            self.local.insert(k, 1, 0).map_err(|e| DatapathError::map("EGV1_LOCAL", e))?;
        }
        Ok(())
    }

    /// Attaches the judging program to `iface`'s ingress.
    pub fn attach(&mut self, iface: &str, hook: Hook) -> Result<(), DatapathError> {
        match hook {
            Hook::Tc => {
                let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, TC_PROGRAM)?;
                prog.attach(iface, TcAttachType::Ingress).map_err(|e| DatapathError::program(TC_PROGRAM, e))?;
            }
            Hook::Xdp => {
                let prog: &mut Xdp = program_mut(&mut self.ebpf, XDP_PROGRAM)?;
                prog.attach(iface, XdpMode::Default).map_err(|e| DatapathError::program(XDP_PROGRAM, e))?;
            }
        }
        Ok(())
    }

    /// The ring buffer of flow events (taken once, by the flow logger).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take_map(&mut self.ebpf, "EGV1_EVENTS")
    }

    /// Packets counted per reason code, summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<u64>, DatapathError> {
        let map = self.ebpf.map("EGV1_REASONS").ok_or_else(|| DatapathError::MissingMap("EGV1_REASONS".into()))?;
        let arr = aya::maps::PerCpuArray::<_, u64>::try_from(map).map_err(|e| DatapathError::map("EGV1_REASONS", e))?;
        let mut out = Vec::new();
        for i in 0..arr.len() {
            let v = arr.get(&i, 0).map_err(|e| DatapathError::map("EGV1_REASONS", e))?;
            out.push(v.iter().sum());
        }
        Ok(out)
    }

    /// A loaded TC program by name, for BPF_PROG_TEST_RUN.
    pub fn tc_program(&mut self, name: &str) -> Result<&mut SchedClassifier, DatapathError> {
        program_mut(&mut self.ebpf, name)
    }

    /// The loaded XDP program, for BPF_PROG_TEST_RUN.
    pub fn xdp_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        program_mut(&mut self.ebpf, XDP_PROGRAM)
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| DatapathError::MissingProgram(name.to_string()))?;
    prog.try_into().map_err(|e| DatapathError::program(name, e))
}

fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, DatapathError> {
    let map = ebpf.take_map(name).ok_or_else(|| DatapathError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}
