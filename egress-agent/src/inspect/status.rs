//! `egress-agent status`: what the pinned datapath enforces, read from the
//! pins alone, so it answers while no agent runs.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData};
use egress_common::{
    AgentLease, CONN_READING, ConnState, FlowKey, HOOK_XDP, LEASE_NS, LearnKey, LearnValue, LiveState, MODE_ENFORCE,
    PackStatus, maps,
};

use crate::datapath::pin::PinDir;

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no pinned datapath at {0} (is the agent running with this --pin-dir? as root?)")]
    NotPinned(String),
    #[error("reading {map}: {source}")]
    Map { map: String, source: aya::maps::MapError },
    #[error("reading the kernel memory of {map}: {reason}")]
    Memory { map: String, reason: String },
}

/// The pinned datapath's state.
#[derive(Debug, Clone)]
pub struct Status {
    pub pack: PackStatus,
    /// The generation the datapath reads now (the status's unless an agent
    /// is installing this very moment).
    pub live: LiveState,
    /// Pinned links: `hook@interface`.
    pub links: Vec<String>,
    pub learned: u64,
    pub learned_capacity: u64,
    /// TCP flows whose first client message is still being read for its
    /// name, and flows whose name was read (or found missing).
    pub names_waiting: u64,
    pub names_read: u64,
    /// Kernel memory of the live slot's tables that grow with the pack
    /// (prefix tries, per-entry hash tables), by table, in bytes.
    pub classifier_bytes: Vec<(&'static str, u64)>,
    /// Pins of other layout versions found beside ours.
    pub other_layouts: Vec<String>,
    /// The agent's lease on DNS learning, and the monotonic time it was read at.
    pub lease: AgentLease,
    pub read_at_ns: u64,
}

fn open(pins: &PinDir, name: &str) -> Result<MapData, StatusError> {
    MapData::from_pin(pins.map(name)).map_err(|source| StatusError::Map { map: name.into(), source })
}

fn first<T: aya::Pod>(pins: &PinDir, name: &str) -> Result<T, StatusError> {
    let array: Array<_, T> = Array::try_from(Map::Array(open(pins, name)?))
        .map_err(|source| StatusError::Map { map: name.into(), source })?;
    array.get(&0, 0).map_err(|source| StatusError::Map { map: name.into(), source })
}

/// Reads the status of the datapath pinned under `dir`.
pub fn read(dir: &Path) -> Result<Status, StatusError> {
    let pins = PinDir::existing(dir);
    if !pins.has_datapath() {
        return Err(StatusError::NotPinned(dir.display().to_string()));
    }
    let pack: PackStatus = first(&pins, maps::STATUS)?;
    let live: LiveState = first(&pins, maps::LIVE)?;
    let learned_map = open(&pins, maps::LEARNED)?;
    let learned_capacity = learned_map.info().map_or(0, |i| u64::from(i.max_entries()));
    let learned: HashMap<_, LearnKey, LearnValue> = HashMap::try_from(Map::LruHashMap(learned_map))
        .map_err(|source| StatusError::Map { map: maps::LEARNED.into(), source })?;
    let learned = learned.keys().flatten().count() as u64;
    let (names_waiting, names_read) = connection_names(&pins)?;
    let mut links: Vec<String> = std::fs::read_dir(pins.links_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    links.sort();
    let other_layouts = pins.other_layouts().iter().map(|p| p.display().to_string()).collect();
    let lease: AgentLease = first(&pins, maps::AGENT)?;
    let classifier_bytes = classifier_bytes(&pins, live.slot as usize)?;
    let read_at_ns = crate::clock::monotonic_ns();
    Ok(Status {
        pack,
        live,
        links,
        learned,
        learned_capacity,
        names_waiting,
        names_read,
        classifier_bytes,
        other_layouts,
        lease,
        read_at_ns,
    })
}

/// The kernel memory of slot `slot`'s tables that grow with the pack.
fn classifier_bytes(pins: &PinDir, slot: usize) -> Result<Vec<(&'static str, u64)>, StatusError> {
    let tables = [
        ("src4", maps::SRC4),
        ("src6", maps::SRC6),
        ("dst4", maps::DST4),
        ("dst6", maps::DST6),
        ("sp", maps::SOURCE_PORT),
        ("xd", maps::CLASS_DEST),
        ("xw", maps::CLASS_WEBGROUP),
        ("names", maps::NAMES),
        ("short_names", maps::SHORT_NAMES),
        ("src_permit", maps::SRC_PERMIT),
    ];
    tables
        .into_iter()
        .map(|(table, names)| {
            let name = names.get(slot).copied().unwrap_or(names[0]);
            let map = open(pins, name)?;
            let bytes = crate::datapath::memlock(&map)
                .map_err(|e| StatusError::Memory { map: name.into(), reason: e.to_string() })?;
            Ok((table, bytes))
        })
        .collect()
}

/// Flows of the name reader's table: still being read, and read.
fn connection_names(pins: &PinDir) -> Result<(u64, u64), StatusError> {
    let conns: HashMap<_, FlowKey, ConnState> = HashMap::try_from(Map::LruHashMap(open(pins, maps::CONNS)?))
        .map_err(|source| StatusError::Map { map: maps::CONNS.into(), source })?;
    let (mut waiting, mut read) = (0, 0);
    for (_, st) in conns.iter().flatten() {
        if st.status == CONN_READING {
            waiting += 1;
        } else {
            read += 1;
        }
    }
    Ok((waiting, read))
}

impl Status {
    /// Whether an agent held the lease when the pins were read.
    pub fn agent_up(&self) -> bool {
        self.read_at_ns <= self.lease.until_ns
    }
}

/// Whether an agent holds the lease, in words.
fn agent_line(s: &Status) -> String {
    let secs = |ns: u64| std::time::Duration::from_nanos(ns).as_secs_f64();
    if s.agent_up() {
        format!("agent: up (pid {}, lease {:.1} s left)", s.lease.pid, secs(s.lease.until_ns - s.read_at_ns))
    } else if s.lease.until_ns == 0 {
        "agent: down (lease released): DNS fails closed, nothing new is learned".to_string()
    } else {
        let since = s.read_at_ns - s.lease.until_ns + LEASE_NS;
        format!(
            "agent: down (pid {} last renewed its lease {:.0} s ago): DNS fails closed, nothing new is learned",
            s.lease.pid,
            secs(since)
        )
    }
}

/// The classifier's scheme and the kernel memory of its live tables.
fn classifier_line(s: &Status) -> String {
    let (total, largest) = crate::datapath::memory::summed(&s.classifier_bytes);
    format!("classifier: scheme {}; live tables {total} of kernel memory ({largest})", egress_policy::compile::SCHEME)
}

/// The status in words.
pub fn format(dir: &Path, s: &Status) -> String {
    use std::fmt::Write as _;
    let installed = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(s.pack.installed_unix_ns);
    let when = humantime::format_rfc3339_seconds(installed);
    let mode = if s.pack.mode == MODE_ENFORCE { "enforce" } else { "monitor" };
    let hook = if s.pack.hook == HOOK_XDP { "xdp" } else { "tc" };
    let mut out = format!(
        "pinned datapath: {}\n\
         pack: generation {} (live: {}), hash {:016x}, installed {when}\n\
         mode: {mode}; hook: {hook}\n\
         rules: {}; smartgroups: {}; webgroups: {} ({} domains)\n\
         learned addresses: {} of {}\n\
         connection names: {} flows waiting for their name, {} read\n\
         attach points: {}\n\
         {}\n\
         {}\n",
        dir.display(),
        s.pack.generation,
        s.live.generation,
        s.pack.hash,
        s.pack.rules,
        s.pack.smartgroups,
        s.pack.webgroups,
        s.pack.domains,
        s.learned,
        s.learned_capacity,
        s.names_waiting,
        s.names_read,
        if s.links.is_empty() { "none".to_string() } else { s.links.join(", ") },
        agent_line(s),
        classifier_line(s),
    );
    for other in &s.other_layouts {
        let _ = writeln!(out, "other layout pinned: {other} (the next agent replaces it)");
    }
    out
}
