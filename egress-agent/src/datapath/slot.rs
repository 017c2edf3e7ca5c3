//! One slot of the double-buffered pack: typed wrappers over its maps with
//! the verbs the installer needs.
//!
//! Every table keeps a mirror of what the kernel holds, updated write by
//! write, and a new pack is diffed against that mirror: a small change is a
//! small number of writes, and a slot that was left half-written by a failed
//! install, or that held a larger pack before, is still brought exactly to
//! the new pack.

use std::collections::BTreeSet;

use egress_policy::bitset::FastMap as StdHashMap;
use std::hash::Hash;
use std::net::IpAddr;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::util::nr_cpus;
use egress_common::addr::{addr_key, key_addr};
use egress_common::{
    ClassDestKey, ClassWebGroupKey, NameEntry, NameKey, NamedRules, RuleCounter, RuleInfo, ShortNameKey, SourcePortKey,
    VERDICTS, maps,
};
use ipnet::IpNet;

use super::mmap_array::MmapArray;
use super::{DatapathError, take_map};
use egress_policy::compile::CompiledPack;

/// A hash map and the mirror of its kernel contents.
struct Mirrored<K: aya::Pod, V: aya::Pod> {
    map: HashMap<MapData, K, V>,
    held: StdHashMap<K, V>,
    name: &'static str,
}

impl<K: aya::Pod + Eq + Hash, V: aya::Pod + PartialEq> Mirrored<K, V> {
    /// Takes the map `name` out of the loaded object.
    fn new(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, DatapathError> {
        Ok(Mirrored { map: take_map(ebpf, name)?, held: StdHashMap::default(), name })
    }

    /// Takes the map's current kernel contents as the mirror (adoption).
    fn adopt(&mut self) -> Result<(), DatapathError> {
        self.held = self.map.iter().collect::<Result<_, _>>().map_err(|e| DatapathError::map(self.name, e))?;
        Ok(())
    }

    /// Brings the map to exactly `want`.
    fn sync(&mut self, want: &StdHashMap<K, V>) -> Result<(), DatapathError> {
        use aya::maps::IterableMap as _;
        let stale: Vec<K> = self.held.keys().filter(|k| !want.contains_key(k)).copied().collect();
        // Batched too, then one by one for what a batch did not delete.
        let deleted =
            super::batch::delete(self.map.map(), &stale).map_or_else(|(deleted, _)| deleted, |()| stale.len());
        for k in &stale[..deleted] {
            self.held.remove(k);
        }
        for k in &stale[deleted..] {
            self.map.remove(k).map_err(|e| DatapathError::map(self.name, e))?;
            self.held.remove(k);
        }
        let (keys, values): (Vec<K>, Vec<V>) =
            want.iter().filter(|(k, v)| self.held.get(k) != Some(v)).map(|(k, v)| (*k, *v)).unzip();
        // In batches; what a batch did not write (a kernel without them for
        // this map, or an error part way) is written one by one, which
        // says which entry failed and why.
        let written = match super::batch::update(self.map.map(), &keys, &values) {
            Ok(()) => keys.len(),
            Err((written, _)) => written,
        };
        // The mirror holds what the kernel holds, whatever fails next.
        self.held.extend(keys.iter().copied().zip(values.iter().copied()).take(written));
        for (k, v) in keys.iter().zip(&values).skip(written) {
            self.map.insert(k, v, 0).map_err(|e| DatapathError::map(self.name, e))?;
            self.held.insert(*k, *v);
        }
        Ok(())
    }
}

/// An LPM trie (by family pair) and the mirror of its kernel contents.
struct MirroredLpm {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
    held: StdHashMap<IpNet, u32>,
}

impl MirroredLpm {
    /// Takes the tries' current kernel contents as the mirror (adoption).
    fn adopt(&mut self) -> Result<(), DatapathError> {
        self.held.clear();
        for item in &self.v4 {
            let (k, v) = item.map_err(|e| DatapathError::map("prefix", e))?;
            let net =
                ipnet::Ipv4Net::new(k.data().into(), u8::try_from(k.prefix_len()).map_err(std::io::Error::other)?)
                    .map_err(std::io::Error::other)?;
            self.held.insert(IpNet::V4(net), v);
        }
        for item in &self.v6 {
            let (k, v) = item.map_err(|e| DatapathError::map("prefix", e))?;
            let net =
                ipnet::Ipv6Net::new(k.data().into(), u8::try_from(k.prefix_len()).map_err(std::io::Error::other)?)
                    .map_err(std::io::Error::other)?;
            self.held.insert(IpNet::V6(net), v);
        }
        Ok(())
    }

    fn sync(&mut self, want: &StdHashMap<IpNet, u32>) -> Result<(), DatapathError> {
        let stale: Vec<IpNet> = self.held.keys().filter(|k| !want.contains_key(k)).copied().collect();
        for net in stale {
            let res = match net {
                IpNet::V4(n) => self.v4.remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets())),
                IpNet::V6(n) => self.v6.remove(&Key::new(u32::from(n.prefix_len()), n.addr().octets())),
            };
            res.map_err(|e| DatapathError::map("prefix", e))?;
            self.held.remove(&net);
        }
        for (net, class) in want {
            if self.held.get(net) == Some(class) {
                continue;
            }
            let res = match net {
                IpNet::V4(n) => self.v4.insert(&Key::new(u32::from(n.prefix_len()), n.addr().octets()), class, 0),
                IpNet::V6(n) => self.v6.insert(&Key::new(u32::from(n.prefix_len()), n.addr().octets()), class, 0),
            };
            res.map_err(|e| DatapathError::map("prefix", e))?;
            self.held.insert(*net, *class);
        }
        Ok(())
    }
}

/// An array written through a shared mapping of its values: reading the
/// kernel's contents is as cheap as a mirror, so none is kept (and nothing
/// needs re-learning after adoption).
struct MappedSlotArray<V: aya::Pod> {
    map: Array<MapData, V>,
    mem: MmapArray<V>,
    name: &'static str,
}

impl<V: aya::Pod + PartialEq> MappedSlotArray<V> {
    /// Takes the array `name` out of the loaded object and maps its values.
    fn new(ebpf: &mut Ebpf, name: &'static str) -> Result<Self, DatapathError> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let array: Array<MapData, V> = take_map(ebpf, name)?;
        let mem = MmapArray::new(array.map().fd().as_fd(), array.len())?;
        Ok(MappedSlotArray { map: array, mem, name })
    }

    /// Writes `want` from index 0, leaving later entries as they are (the
    /// pack never reads past what it wrote).
    fn sync(&mut self, want: impl IntoIterator<Item = V>) -> Result<(), DatapathError> {
        for (i, v) in want.into_iter().enumerate() {
            if self.mem.get(i as u32) != Some(v) && !self.mem.set(i as u32, v) {
                let e = std::io::Error::other(format!("{}: index {i} is past the end of the array", self.name));
                return Err(DatapathError::Io(e));
            }
        }
        Ok(())
    }
}

/// The maps of one slot.
pub struct SlotMaps {
    src: MirroredLpm,
    dst: MirroredLpm,
    ports: MappedSlotArray<u32>,
    sp: Mirrored<SourcePortKey, u32>,
    src_default: MappedSlotArray<u32>,
    wild: MappedSlotArray<u32>,
    xd: Mirrored<ClassDestKey, u32>,
    defaults: MappedSlotArray<u32>,
    rules: MappedSlotArray<RuleInfo>,
    names: Mirrored<NameKey, NameEntry>,
    short_names: Mirrored<ShortNameKey, NameEntry>,
    xw: Mirrored<ClassWebGroupKey, NamedRules>,
    name_deny: MappedSlotArray<u32>,
    src_permit: Mirrored<u32, u64>,
    resolvers: Mirrored<[u8; 16], u8>,
    local: Mirrored<[u8; 16], u8>,
    counters: PerCpuArray<MapData, RuleCounter>,
}

impl SlotMaps {
    /// Takes slot `n`'s maps (0 or 1) out of the loaded object.
    pub fn take(ebpf: &mut Ebpf, n: usize) -> Result<Self, DatapathError> {
        Ok(SlotMaps {
            src: MirroredLpm {
                v4: take_map(ebpf, maps::SRC4[n])?,
                v6: take_map(ebpf, maps::SRC6[n])?,
                held: StdHashMap::default(),
            },
            dst: MirroredLpm {
                v4: take_map(ebpf, maps::DST4[n])?,
                v6: take_map(ebpf, maps::DST6[n])?,
                held: StdHashMap::default(),
            },
            ports: MappedSlotArray::new(ebpf, maps::PORTS[n])?,
            sp: Mirrored::new(ebpf, maps::SOURCE_PORT[n])?,
            src_default: MappedSlotArray::new(ebpf, maps::SRC_DEFAULT[n])?,
            wild: MappedSlotArray::new(ebpf, maps::WILD[n])?,
            xd: Mirrored::new(ebpf, maps::CLASS_DEST[n])?,
            defaults: MappedSlotArray::new(ebpf, maps::DEFAULTS[n])?,
            rules: MappedSlotArray::new(ebpf, maps::RULES[n])?,
            names: Mirrored::new(ebpf, maps::NAMES[n])?,
            short_names: Mirrored::new(ebpf, maps::SHORT_NAMES[n])?,
            xw: Mirrored::new(ebpf, maps::CLASS_WEBGROUP[n])?,
            name_deny: MappedSlotArray::new(ebpf, maps::NAME_DENY[n])?,
            src_permit: Mirrored::new(ebpf, maps::SRC_PERMIT[n])?,
            resolvers: Mirrored::new(ebpf, maps::RESOLVERS[n])?,
            local: Mirrored::new(ebpf, maps::LOCAL[n])?,
            counters: take_map(ebpf, maps::COUNTERS[n])?,
        })
    }

    /// Adopts a pinned slot: the mirrors take what the kernel holds, so the
    /// next fill writes exactly the difference.
    pub fn adopt(&mut self) -> Result<(), DatapathError> {
        self.src.adopt()?;
        self.dst.adopt()?;
        self.sp.adopt()?;
        self.xd.adopt()?;
        self.names.adopt()?;
        self.short_names.adopt()?;
        self.xw.adopt()?;
        self.src_permit.adopt()?;
        self.resolvers.adopt()?;
        self.local.adopt()?;
        Ok(())
    }

    /// Brings every table of the slot to `pack`, with the gateway's own
    /// addresses `local` (the pack's resolvers are left out of them).
    pub fn fill(&mut self, pack: &CompiledPack, local: &BTreeSet<IpAddr>) -> Result<(), DatapathError> {
        self.src.sync(&pack.src)?;
        self.dst.sync(&pack.dst)?;
        self.sp.sync(&pack.sp)?;
        self.src_default.sync(pack.src_default.iter().copied())?;
        self.wild.sync(pack.wild.iter().copied())?;
        self.xd.sync(&pack.xd)?;
        self.ports.sync(expand_runs(&pack.ports))?;
        self.defaults.sync(pack.defaults.iter().copied())?;
        self.rules.sync(pack.rules.iter().map(|r| r.info))?;
        let (long, short) = split_names(&pack.names);
        self.names.sync(&long)?;
        self.short_names.sync(&short)?;
        self.xw.sync(&pack.named.xw)?;
        self.name_deny.sync(pack.named.first_name_deny.iter().copied())?;
        self.src_permit.sync(&pack.src_permit)?;
        let resolvers = pack.resolvers.iter().map(|a| (addr_key(*a), 1u8)).collect();
        self.resolvers.sync(&resolvers)?;
        // A new generation: no cached flow of the old one is used again.
        self.set_local(local, &pack.resolvers).map(drop)
    }

    /// The resolvers this slot holds (from its mirror: right after an
    /// adoption, before any pack of this agent's is installed).
    pub fn resolver_addrs(&self) -> Vec<IpAddr> {
        self.resolvers.held.keys().map(|k| key_addr(*k)).collect()
    }

    /// Sets the gateway's own addresses, less `resolvers`, at most
    /// `MAX_LOCAL_ADDRS` of them (IPv4 first): on a host with more (IPVS
    /// service addresses) the rest are judged like any destination rather
    /// than every install failing. Returns the addresses (as keyed) that
    /// were not local before.
    pub fn set_local(
        &mut self,
        local: &BTreeSet<IpAddr>,
        resolvers: &[IpAddr],
    ) -> Result<Vec<[u8; 16]>, DatapathError> {
        let want: StdHashMap<[u8; 16], u8> = local
            .iter()
            .filter(|a| !resolvers.contains(a))
            .take(egress_common::MAX_LOCAL_ADDRS as usize)
            .map(|a| (addr_key(*a), 1u8))
            .collect();
        let added = want.keys().filter(|k| !self.local.held.contains_key(*k)).copied().collect();
        self.local.sync(&want)?;
        Ok(added)
    }

    /// Reads the cells of counter `index`, summed over CPUs, by verdict.
    pub fn read_counter(&self, index: u32) -> Result<[RuleCounter; 3], DatapathError> {
        let mut cells = [RuleCounter::default(); 3];
        for (verdict, cell) in cells.iter_mut().enumerate() {
            let idx = index * VERDICTS + verdict as u32;
            let values = self.counters.get(&idx, 0).map_err(|e| DatapathError::map("counters", e))?;
            for v in values.iter() {
                cell.packets += v.packets;
                cell.bytes += v.bytes;
                cell.flows += v.flows;
            }
        }
        Ok(cells)
    }

    /// The first `n` entries of the rule table as the kernel holds them.
    pub fn rule_infos(&self, n: usize) -> Vec<RuleInfo> {
        (0..n as u32).map_while(|i| self.rules.mem.get(i)).collect()
    }

    /// Kernel memory of each of the slot's maps, from `memlock:` in
    /// `/proc/self/fdinfo/<fd>`. Preallocated arrays (ports, defaults, rules,
    /// per-CPU counters) count their full capacity; LPM tries and the
    /// `NO_PREALLOC` hashes grow with the pack.
    pub fn memlock(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        use aya::maps::IterableMap as _;
        let maps: [(&'static str, &MapData); 19] = [
            ("src4", self.src.v4.map()),
            ("src6", self.src.v6.map()),
            ("dst4", self.dst.v4.map()),
            ("dst6", self.dst.v6.map()),
            ("ports", self.ports.map.map()),
            ("sp", self.sp.map.map()),
            ("src_default", self.src_default.map.map()),
            ("wild", self.wild.map.map()),
            ("xd", self.xd.map.map()),
            ("defaults", self.defaults.map.map()),
            ("rules", self.rules.map.map()),
            ("names", self.names.map.map()),
            ("short_names", self.short_names.map.map()),
            ("xw", self.xw.map.map()),
            ("name_deny", self.name_deny.map.map()),
            ("src_permit", self.src_permit.map.map()),
            ("resolvers", self.resolvers.map.map()),
            ("local", self.local.map.map()),
            ("counters", self.counters.map()),
        ];
        maps.into_iter().map(|(name, map)| Ok((name, fdinfo_memlock(map)?))).collect()
    }

    /// Zeroes the cells of counter `index`.
    pub fn zero_counter(&mut self, index: u32) -> Result<(), DatapathError> {
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        for idx in index * VERDICTS..(index + 1) * VERDICTS {
            let zero = PerCpuValues::try_from(vec![RuleCounter::default(); cpus])
                .map_err(|e| DatapathError::Io(std::io::Error::other(e)))?;
            self.counters.set(idx, zero, 0).map_err(|e| DatapathError::map("counters", e))?;
        }
        Ok(())
    }
}

/// `memlock:` of a map's fdinfo, in bytes.
pub fn fdinfo_memlock(map: &MapData) -> Result<u64, DatapathError> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let fd = map.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:").and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| DatapathError::Io(std::io::Error::other("no memlock in fdinfo")))
}

/// The port-class array from its runs.
fn expand_runs(runs: &[(u32, u32, u32)]) -> Vec<u32> {
    let mut out = Vec::with_capacity(egress_common::PORT_INDEX_SLOTS as usize);
    for &(lo, hi, class) in runs {
        out.extend(std::iter::repeat_n(class, (hi - lo + 1) as usize));
    }
    out
}

/// The compiled name table split as the datapath holds it: long names by
/// their whole key, short ones by their [`ShortNameKey`].
fn split_names(
    names: &StdHashMap<NameKey, NameEntry>,
) -> (StdHashMap<NameKey, NameEntry>, StdHashMap<ShortNameKey, NameEntry>) {
    let (mut long, mut short) = (StdHashMap::default(), StdHashMap::default());
    for (key, entry) in names {
        match key.short() {
            Some(k) => short.insert(k, *entry),
            None => long.insert(*key, *entry),
        };
    }
    (long, short)
}
