//! One slot of the double-buffered pack: typed wrappers over its maps with
//! the verbs the installer needs. Writes are diffed against what the slot
//! held before, so a small policy change is a small number of map updates.

use std::collections::HashMap as StdHashMap;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::util::nr_cpus;
use egress_common::{RuleCounter, RuleInfo, SpKey, VERDICTS, XdKey};
use ipnet::IpNet;

use super::DatapathError;
use crate::policy::compile::CompiledPack;

/// The maps of one slot.
pub struct SlotMaps {
    src4: LpmTrie<MapData, [u8; 4], u32>,
    src6: LpmTrie<MapData, [u8; 16], u32>,
    dst4: LpmTrie<MapData, [u8; 4], u32>,
    dst6: LpmTrie<MapData, [u8; 16], u32>,
    ports: Array<MapData, u32>,
    sp: HashMap<MapData, SpKey, u32>,
    xd: HashMap<MapData, XdKey, u32>,
    defaults: Array<MapData, u32>,
    rules: Array<MapData, RuleInfo>,
    counters: PerCpuArray<MapData, RuleCounter>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, DatapathError> {
    let map = ebpf.take_map(name).ok_or_else(|| DatapathError::MissingMap(name.to_string()))?;
    T::try_from(map).map_err(|e| DatapathError::map(name, e))
}

impl SlotMaps {
    /// Takes slot `n`'s maps out of the loaded object.
    pub fn take(ebpf: &mut Ebpf, n: u8) -> Result<Self, DatapathError> {
        Ok(SlotMaps {
            src4: take(ebpf, &format!("EGV1_SRC4_{n}"))?,
            src6: take(ebpf, &format!("EGV1_SRC6_{n}"))?,
            dst4: take(ebpf, &format!("EGV1_DST4_{n}"))?,
            dst6: take(ebpf, &format!("EGV1_DST6_{n}"))?,
            ports: take(ebpf, &format!("EGV1_PORTS_{n}"))?,
            sp: take(ebpf, &format!("EGV1_SP_{n}"))?,
            xd: take(ebpf, &format!("EGV1_XD_{n}"))?,
            defaults: take(ebpf, &format!("EGV1_DEFAULTS_{n}"))?,
            rules: take(ebpf, &format!("EGV1_RULES_{n}"))?,
            counters: take(ebpf, &format!("EGV1_COUNTERS_{n}"))?,
        })
    }

    /// Writes `new` into the slot, given that it held `old` (or nothing).
    pub fn fill(&mut self, old: Option<&CompiledPack>, new: &CompiledPack) -> Result<(), DatapathError> {
        let empty = CompiledPack::default();
        let old = old.unwrap_or(&empty);
        self.fill_prefixes(&old.src, &new.src, true)?;
        self.fill_prefixes(&old.dst, &new.dst, false)?;
        fill_hash(&mut self.sp, &old.sp, &new.sp, "sp")?;
        fill_hash(&mut self.xd, &old.xd, &new.xd, "xd")?;
        // A slot never written holds zeros (arrays are created zeroed), so
        // entries past what the old pack wrote compare against zero.
        let old_ports = expand_runs(&old.ports);
        for (i, class) in expand_runs(&new.ports).into_iter().enumerate() {
            if old_ports.get(i).copied().unwrap_or(0) != class {
                self.ports.set(i as u32, class, 0).map_err(|e| DatapathError::map("ports", e))?;
            }
        }
        for (i, d) in new.defaults.iter().enumerate() {
            if old.defaults.get(i).copied().unwrap_or(0) != *d {
                self.defaults.set(i as u32, *d, 0).map_err(|e| DatapathError::map("defaults", e))?;
            }
        }
        for (i, r) in new.rules.iter().enumerate() {
            if old.rules.get(i).map_or(RuleInfo::default(), |o| o.info) != r.info {
                self.rules.set(i as u32, r.info, 0).map_err(|e| DatapathError::map("rules", e))?;
            }
        }
        Ok(())
    }

    fn fill_prefixes(
        &mut self,
        old: &StdHashMap<IpNet, u32>,
        new: &StdHashMap<IpNet, u32>,
        source: bool,
    ) -> Result<(), DatapathError> {
        let (v4, v6) = if source { (&mut self.src4, &mut self.src6) } else { (&mut self.dst4, &mut self.dst6) };
        for net in old.keys().filter(|k| !new.contains_key(k)) {
            let res = match net {
                IpNet::V4(n) => v4.remove(&Key::new(n.prefix_len() as u32, n.addr().octets())),
                IpNet::V6(n) => v6.remove(&Key::new(n.prefix_len() as u32, n.addr().octets())),
            };
            res.map_err(|e| DatapathError::map("prefix", e))?;
        }
        for (net, class) in new.iter().filter(|(k, v)| old.get(k) != Some(v)) {
            let res = match net {
                IpNet::V4(n) => v4.insert(&Key::new(n.prefix_len() as u32, n.addr().octets()), class, 0),
                IpNet::V6(n) => v6.insert(&Key::new(n.prefix_len() as u32, n.addr().octets()), class, 0),
            };
            res.map_err(|e| DatapathError::map("prefix", e))?;
        }
        Ok(())
    }

    /// Reads the per-rule counters of `rules` rules, summed over CPUs:
    /// `result[rule][verdict]`.
    pub fn read_counters(&self, rules: usize) -> Result<Vec<[RuleCounter; 3]>, DatapathError> {
        let mut out = vec![[RuleCounter::default(); 3]; rules];
        for (rule, cells) in out.iter_mut().enumerate() {
            for (verdict, cell) in cells.iter_mut().enumerate() {
                let idx = rule as u32 * VERDICTS + verdict as u32;
                let values = self.counters.get(&idx, 0).map_err(|e| DatapathError::map("counters", e))?;
                for v in values.iter() {
                    cell.packets += v.packets;
                    cell.bytes += v.bytes;
                    cell.flows += v.flows;
                }
            }
        }
        Ok(out)
    }

    /// Kernel memory of each of the slot's maps, in bytes, as the kernel
    /// reports it in `memlock:` of `/proc/self/fdinfo/<map fd>` (the map's
    /// `map_mem_usage`, Linux 6.4 and later). The arrays (`ports`,
    /// `defaults`, `rules`, per-CPU `counters`) are preallocated, so their
    /// figure is fixed; the LPM tries count their stored prefixes
    /// (`n_entries` nodes, not the trie's intermediate nodes) and the
    /// `NO_PREALLOC` hashes (`sp`, `xd`) their current elements, so those
    /// grow with the pack.
    pub fn memlock(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        use aya::maps::IterableMap;
        let maps: [(&'static str, &MapData); 10] = [
            ("src4", self.src4.map()),
            ("src6", self.src6.map()),
            ("dst4", self.dst4.map()),
            ("dst6", self.dst6.map()),
            ("ports", self.ports.map()),
            ("sp", self.sp.map()),
            ("xd", self.xd.map()),
            ("defaults", self.defaults.map()),
            ("rules", self.rules.map()),
            ("counters", self.counters.map()),
        ];
        maps.into_iter().map(|(name, map)| Ok((name, fdinfo_memlock(map)?))).collect()
    }

    /// Zeroes the counters of the first `rules` rules.
    pub fn zero_counters(&mut self, rules: usize) -> Result<(), DatapathError> {
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        for idx in 0..(rules as u32 * VERDICTS) {
            let zero = PerCpuValues::try_from(vec![RuleCounter::default(); cpus])
                .map_err(|e| DatapathError::Io(std::io::Error::other(e)))?;
            self.counters.set(idx, zero, 0).map_err(|e| DatapathError::map("counters", e))?;
        }
        Ok(())
    }
}

fn fill_hash<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut HashMap<MapData, K, u32>,
    old: &StdHashMap<K, u32>,
    new: &StdHashMap<K, u32>,
    name: &str,
) -> Result<(), DatapathError> {
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        map.remove(k).map_err(|e| DatapathError::map(name, e))?;
    }
    for (k, v) in new.iter().filter(|(k, v)| old.get(k) != Some(v)) {
        map.insert(k, v, 0).map_err(|e| DatapathError::map(name, e))?;
    }
    Ok(())
}

/// `memlock:` of a map's `/proc/self/fdinfo` entry.
fn fdinfo_memlock(map: &MapData) -> Result<u64, DatapathError> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = map.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:").and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| DatapathError::Io(std::io::Error::other(format!("no memlock in fdinfo of fd {fd}"))))
}

/// The port-class array from its runs.
fn expand_runs(runs: &[(u32, u32, u32)]) -> Vec<u32> {
    let mut out = Vec::with_capacity(egress_common::PORT_INDEX_SLOTS as usize);
    for &(lo, hi, class) in runs {
        out.extend(std::iter::repeat_n(class, (hi - lo + 1) as usize));
    }
    out
}
