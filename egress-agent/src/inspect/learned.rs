//! `egress-agent learned`: the addresses the datapath learned from DNS,
//! read from the live kernel maps (found by name among the loaded maps, so
//! it works from any process while an agent's datapath is loaded).

use crate::datapath::LearnedPressure;
use std::collections::HashMap;
use std::net::IpAddr;

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, loaded_maps};
use egress_common::addr::key_addr;
use egress_common::{LearnKey, LearnValue, MAX_WEBGROUPS, NameText, WebGroupName, maps};

use crate::clock::monotonic_ns;
use crate::datapath::nul_terminated_text;

/// Errors of reading the learned table.
#[derive(Debug, thiserror::Error)]
pub enum LearnedError {
    #[error("no egress datapath is loaded (no map named {0})")]
    NotLoaded(&'static str),
    #[error("reading map {name}: {source}")]
    Map { name: &'static str, source: aya::maps::MapError },
}

/// One learned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedEntry {
    pub workload: IpAddr,
    pub addr: IpAddr,
    /// The name whose answer taught it, while still in the name table.
    pub name: Option<String>,
    pub webgroups: Vec<String>,
    /// Seconds until it teaches nothing more (0: expired).
    pub remaining_s: u64,
}

/// Ids of the BPF maps process `pid` holds open (`map_id:` in its fdinfo).
fn map_ids_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.lines().find_map(|l| l.strip_prefix("map_id:").and_then(|v| v.trim().parse().ok())))
        .collect()
}

/// The loaded map with this (kernel, 15-character) name: the newest one,
/// or the one held by process `pid`.
fn find(name: &'static str, pid: Option<u32>) -> Result<Map, LearnedError> {
    let held = pid.map(map_ids_of);
    let id = loaded_maps()
        .filter_map(Result::ok)
        .filter(|m| m.name_as_str() == Some(name))
        .map(|m| m.id())
        .filter(|id| held.as_ref().is_none_or(|h| h.contains(id)))
        .max()
        .ok_or(LearnedError::NotLoaded(name))?;
    let data = MapData::from_id(id).map_err(|source| LearnedError::Map { name, source })?;
    Map::from_map_data(data).map_err(|source| LearnedError::Map { name, source })
}

/// Occupancy of the live learned-address table (see [`LearnedPressure`]).
pub fn read_pressure(pid: Option<u32>, entries: u64) -> Result<LearnedPressure, LearnedError> {
    let learned = find(maps::LEARNED, pid)?;
    let capacity = match &learned {
        Map::LruHashMap(d) => d.info().map_or(0, |i| u64::from(i.max_entries())),
        _ => 0,
    };
    let stats: aya::maps::PerCpuArray<_, u64> = aya::maps::PerCpuArray::try_from(find(maps::DNS_STATS, pid)?)
        .map_err(|source| LearnedError::Map { name: maps::DNS_STATS, source })?;
    let created = stats
        .get(&(egress_common::DnsStat::AddressNew as u32), 0)
        .map(|v| v.iter().sum())
        .map_err(|source| LearnedError::Map { name: maps::DNS_STATS, source })?;
    let mut p = LearnedPressure::new(entries, created);
    p.capacity = capacity;
    Ok(p)
}

/// Every learned address, sorted by workload and address, from the newest
/// datapath or from the one agent process `pid` runs.
pub fn read_learned(pid: Option<u32>) -> Result<Vec<LearnedEntry>, LearnedError> {
    let learned: BpfHashMap<_, LearnKey, LearnValue> = BpfHashMap::try_from(find(maps::LEARNED, pid)?)
        .map_err(|source| LearnedError::Map { name: maps::LEARNED, source })?;
    let names: BpfHashMap<_, u64, NameText> = BpfHashMap::try_from(find(maps::LEARNED_NAMES, pid)?)
        .map_err(|source| LearnedError::Map { name: maps::LEARNED_NAMES, source })?;
    let groups: Array<_, WebGroupName> = Array::try_from(find(maps::WEBGROUPS, pid)?)
        .map_err(|source| LearnedError::Map { name: maps::WEBGROUPS, source })?;
    let group_names: HashMap<u32, String> = (0..MAX_WEBGROUPS)
        .filter_map(|b| groups.get(&b, 0).ok().map(|n| (b, nul_terminated_text(&n))))
        .filter(|(_, n)| !n.is_empty())
        .collect();
    let now = monotonic_ns();
    let mut out: Vec<LearnedEntry> = learned
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| LearnedEntry {
            workload: key_addr(k.workload),
            addr: key_addr(k.addr),
            name: names.get(&v.name_hash, 0).ok().map(|n| nul_terminated_text(&n)),
            webgroups: (0..MAX_WEBGROUPS)
                .filter(|b| v.groups & (1u64 << b) != 0)
                .map(|b| group_names.get(&b).cloned().unwrap_or_else(|| format!("#{b}")))
                .collect(),
            remaining_s: v.expires_ns.saturating_sub(now) / 1_000_000_000,
        })
        .collect();
    out.sort_by_key(|a| (a.workload, a.addr));
    Ok(out)
}

/// A table for the terminal.
pub fn format(entries: &[LearnedEntry]) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{:<40} {:<40} {:<40} {:<24} {:>8}\n", "WORKLOAD", "ADDRESS", "NAME", "WEBGROUPS", "TTL");
    for e in entries {
        let _ = writeln!(
            out,
            "{:<40} {:<40} {:<40} {:<24} {:>7}s",
            e.workload.to_string(),
            e.addr.to_string(),
            e.name.as_deref().unwrap_or("?"),
            e.webgroups.join(","),
            e.remaining_s
        );
    }
    let _ = writeln!(out, "{} learned address(es)", entries.len());
    out
}
