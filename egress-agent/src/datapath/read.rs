//! Reading the datapath back: counters, events, learned addresses and
//! names; and the programs themselves, for BPF_PROG_TEST_RUN.

use aya::maps::{MapData, RingBuf};
use aya::programs::{SchedClassifier, Xdp};
use egress_common::{LearnKey, LearnValue, QueryKey, QueryValue};

use super::{Datapath, DatapathError, XDP_PROGRAM, map_capacity, program_mut, take_map};

impl Datapath {
    /// The ring buffer of flow events (taken once, by the flow logger).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take_map(&mut self.ebpf, "EGV2_EVENTS")
    }

    fn per_cpu_sums(&self, name: &str) -> Result<Vec<u64>, DatapathError> {
        let map = self.ebpf.map(name).ok_or_else(|| DatapathError::MissingMap(name.into()))?;
        let arr = aya::maps::PerCpuArray::<_, u64>::try_from(map).map_err(|e| DatapathError::map(name, e))?;
        (0..arr.len())
            .map(|i| arr.get(&i, 0).map(|v| v.iter().sum()).map_err(|e| DatapathError::map(name, e)))
            .collect()
    }

    /// Packets counted per reason code, summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums("EGV2_REASONS")
    }

    /// Flow-event counters per `EventStat` code, summed over CPUs.
    pub fn event_stats(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums("EGV2_EVSTATS")
    }

    /// DNS counters per `DnsStat` code, summed over CPUs.
    pub fn dns_stats(&self) -> Result<Vec<u64>, DatapathError> {
        self.per_cpu_sums("EGV2_DNS_STATS")
    }

    /// Every entry of the learned-address table.
    pub fn learned(&self) -> Result<Vec<(LearnKey, LearnValue)>, DatapathError> {
        let map = self.ebpf.map("EGV2_LEARNED").ok_or_else(|| DatapathError::MissingMap("EGV2_LEARNED".into()))?;
        let table = aya::maps::HashMap::<_, LearnKey, LearnValue>::try_from(map)
            .map_err(|e| DatapathError::map("EGV2_LEARNED", e))?;
        Ok(table.iter().filter_map(Result::ok).collect())
    }

    /// The text of a learned name by its hash, while the name table holds it.
    pub fn learned_name_text(&self, hash: u64) -> Option<String> {
        let names =
            aya::maps::HashMap::<_, u64, egress_common::NameText>::try_from(self.ebpf.map("EGV2_LNAMES")?).ok()?;
        Some(crate::learned::text(&names.get(&hash, 0).ok()?)).filter(|t| !t.is_empty())
    }

    /// The names of the live pack's WebGroups among `bits`.
    pub fn webgroup_names(&self, bits: u64) -> Vec<String> {
        let Some(pack) = self.live_pack() else { return Vec::new() };
        pack.webgroup_bits.iter().filter(|(_, b)| bits & (1u64 << **b) != 0).map(|(n, _)| n.clone()).collect()
    }

    /// The name `workload` resolved `addr` from (16-byte forms, IPv4
    /// mapped), while the learned-address table still holds it.
    pub fn learned_name(&self, workload: [u8; 16], addr: [u8; 16]) -> Option<String> {
        let learned = aya::maps::HashMap::<_, LearnKey, LearnValue>::try_from(self.ebpf.map("EGV2_LEARNED")?).ok()?;
        let value = learned.get(&LearnKey { workload, addr }, 0).ok()?;
        self.learned_name_text(value.name_hash)
    }

    /// Occupancy of the learned-address table: live entries (counted by
    /// walking the keys), capacity, entries created and evicted.
    pub fn learned_pressure(&self) -> Result<crate::learned::Pressure, DatapathError> {
        let map = self.ebpf.map("EGV2_LEARNED").ok_or_else(|| DatapathError::MissingMap("EGV2_LEARNED".into()))?;
        let capacity = map_capacity(map);
        let table = aya::maps::HashMap::<_, LearnKey, LearnValue>::try_from(map)
            .map_err(|e| DatapathError::map("EGV2_LEARNED", e))?;
        let entries = table.keys().filter(Result::is_ok).count() as u64;
        let created = self.dns_stats()?.get(egress_common::DnsStat::AddressNew as usize).copied().unwrap_or(0);
        let mut p = crate::learned::Pressure::new(entries, created);
        p.capacity = capacity;
        Ok(p)
    }

    /// Records an outstanding query as the query program would (benchmarks
    /// replay one answer many times; each answer consumes its query).
    pub fn track_query(&mut self, key: &QueryKey, name: &str, qtype: u16) -> Result<(), DatapathError> {
        let map = self.ebpf.map_mut("EGV2_QUERIES").ok_or_else(|| DatapathError::MissingMap("EGV2_QUERIES".into()))?;
        let mut queries: aya::maps::HashMap<_, QueryKey, QueryValue> =
            aya::maps::HashMap::try_from(map).map_err(|e| DatapathError::map("EGV2_QUERIES", e))?;
        let value = QueryValue {
            name_hash: egress_common::fnv1a(name.to_ascii_lowercase().trim_end_matches('.').as_bytes()),
            sent_ns: crate::clock::monotonic_ns(),
            qtype,
            _pad: [0; 6],
        };
        queries.insert(key, value, 0).map_err(|e| DatapathError::map("EGV2_QUERIES", e))
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
