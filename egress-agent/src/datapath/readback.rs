//! Reading the datapath back: counters, events, learned addresses and
//! names; and the programs themselves, for `BPF_PROG_TEST_RUN`.

use aya::maps::{MapData, RingBuf};
use egress_common::{LearnKey, LearnValue, maps};

use super::{Datapath, DatapathError, map_capacity, map_ref, take_map};

/// The text of a zero-padded (NUL-terminated) byte field, such as a
/// learned name ([`egress_common::NameText`]) or a WebGroup name
/// ([`egress_common::WebGroupName`]): the bytes before the first NUL, with
/// anything that is not UTF-8 replaced.
pub fn nul_terminated_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl Datapath {
    /// The ring buffer of flow events (taken once, by the flow logger).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take_map(&mut self.ebpf, maps::EVENTS)
    }

    fn per_cpu_sums(&self, name: &str) -> Result<Vec<u64>, DatapathError> {
        let arr: aya::maps::PerCpuArray<_, u64> = map_ref(&self.ebpf, name)?;
        (0..arr.len())
            .map(|i| arr.get(&i, 0).map(|v| v.iter().sum()).map_err(|e| DatapathError::map(name, e)))
            .collect()
    }

    /// Packets counted per reason code, summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums(maps::REASONS)
    }

    /// Flow-event counters per `EventStat` code, summed over CPUs.
    pub fn event_stats(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums(maps::EVENT_STATS)
    }

    /// Spends refused per budget kind and level (slot
    /// `egress_common::budget_stat_slot`), summed over CPUs.
    pub fn budget_stats(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums(maps::BUDGET_STATS)
    }

    /// DNS counters per `DnsStat` code, summed over CPUs.
    pub fn dns_stats(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums(maps::DNS_STATS)
    }

    /// Every entry of the learned-address table.
    pub fn learned(&self) -> Result<Vec<(LearnKey, LearnValue)>, DatapathError> {
        let table: aya::maps::HashMap<_, LearnKey, LearnValue> = map_ref(&self.ebpf, maps::LEARNED)?;
        Ok(table.iter().filter_map(Result::ok).collect())
    }

    /// The text of a learned name by its hash, while the name table holds it.
    pub fn learned_name_text(&self, hash: u64) -> Option<String> {
        let names: aya::maps::HashMap<_, u64, egress_common::NameText> =
            map_ref(&self.ebpf, maps::LEARNED_NAMES).ok()?;
        Some(nul_terminated_text(&names.get(&hash, 0).ok()?)).filter(|t| !t.is_empty())
    }

    /// The pattern of a tunnel guard zone id, from the installed packs.
    pub fn zone_pattern(&self, zone: u32) -> Option<String> {
        self.installed.iter().flatten().find_map(|p| p.zones.get(&zone).cloned())
    }

    /// The names of the live pack's WebGroups among `bits`.
    pub fn webgroup_names(&self, bits: u64) -> Vec<String> {
        let Some(pack) = self.live_pack() else { return Vec::new() };
        pack.webgroup_bits.iter().filter(|(_, b)| bits & (1u64 << **b) != 0).map(|(n, _)| n.clone()).collect()
    }

    /// The name `workload` resolved `addr` from (16-byte forms, IPv4
    /// mapped), while the learned-address table still holds it.
    pub fn learned_name(&self, workload: [u8; 16], addr: [u8; 16]) -> Option<String> {
        let learned: aya::maps::HashMap<_, LearnKey, LearnValue> = map_ref(&self.ebpf, maps::LEARNED).ok()?;
        let value = learned.get(&LearnKey { workload, addr }, 0).ok()?;
        self.learned_name_text(value.name_hash)
    }

    /// Occupancy of the learned-address table: live entries (counted by
    /// walking the keys), capacity, entries created and evicted.
    pub fn learned_pressure(&self) -> Result<LearnedPressure, DatapathError> {
        let map = self.ebpf.map(maps::LEARNED).ok_or_else(|| DatapathError::MissingMap(maps::LEARNED.into()))?;
        let capacity = map_capacity(map);
        let table = aya::maps::HashMap::<_, LearnKey, LearnValue>::try_from(map)
            .map_err(|e| DatapathError::map(maps::LEARNED, e))?;
        let entries = table.keys().flatten().count() as u64;
        let created = self.dns_stats()?.get(egress_common::DnsStat::AddressNew as usize).copied().unwrap_or(0);
        let mut p = LearnedPressure::new(entries, created);
        p.capacity = capacity;
        Ok(p)
    }
}

/// Occupancy of the learned-address table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnedPressure {
    /// Entries in the table now.
    pub entries: u64,
    /// Entries it holds at most (`MAX_LEARNED`); past that the least
    /// recently used are evicted.
    pub capacity: u64,
    /// Entries created since the datapath was loaded.
    pub created: u64,
    /// Entries evicted (created minus live; expired entries stay until
    /// evicted, so this counts evictions exactly).
    pub evicted: u64,
}

impl LearnedPressure {
    /// From the live entry count and the `address_new` counter.
    pub fn new(entries: u64, created: u64) -> Self {
        LearnedPressure {
            entries,
            capacity: u64::from(egress_common::MAX_LEARNED),
            created,
            evicted: created.saturating_sub(entries),
        }
    }
}
