//! The DNS tunnel guard (`dns.tunnel_guard`): per workload and allowed
//! zone, how many distinct names with a random-looking label it asked for
//! in the current window, and whether its queries into the zone are
//! refused for a while.
//!
//! A tunnel through an allowed `**.zone` carries its data in the labels
//! before the zone, one query per chunk: many distinct names, each with a
//! long label of encoded bytes (base32 or hex: letters and digits, no `-`
//! or `_`). Ordinary use asks for few distinct names under a zone, and
//! cloud-generated names that are long (ELB `name-123456789`, S3 buckets,
//! Azure resource names) carry hyphens or are short (`CloudFront`'s
//! 14-character `d1xyz...`).

/// `dns.tunnel_guard: off`.
pub const TUNNEL_GUARD_OFF: u8 = 0;
/// `dns.tunnel_guard: monitor` (the default): suspected tunnels are
/// reported only.
pub const TUNNEL_GUARD_MONITOR: u8 = 1;
/// `dns.tunnel_guard: enforce`: a suspected tunnel's further queries into
/// its zone are refused for [`GUARD_BLOCK_NS`].
pub const TUNNEL_GUARD_ENFORCE: u8 = 2;

/// A label at least this long, of letters and digits only (both present),
/// is random-looking: what a tunnel's encoded chunk is.
pub const GUARD_LABEL_MIN: u32 = 24;
/// A label at least this long is random-looking whatever its characters.
pub const GUARD_LABEL_LONG: u32 = 40;
/// Distinct names with a random-looking label, per workload and zone
/// within [`GUARD_WINDOW_NS`], that make a suspected tunnel.
pub const GUARD_THRESHOLD: u32 = 8;
/// The counting window.
pub const GUARD_WINDOW_NS: u64 = 60_000_000_000;
/// How long a suspected tunnel's queries into its zone are refused
/// (enforce).
pub const GUARD_BLOCK_NS: u64 = 300_000_000_000;
/// Recent names remembered per workload and zone (a name asked again is
/// not a new one).
pub const GUARD_RECENT: usize = 8;
/// Workload and zone pairs tracked at once (LRU).
pub const MAX_GUARDS: u32 = 16_384;

/// `GUARDS` key: a workload and an allowed zone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GuardKey {
    /// The asking workload (IPv4 mapped into 16 bytes).
    pub workload: [u8; 16],
    /// The zone: [`crate::NameEntry::zone`] of the wildcard pattern that
    /// covered the name.
    pub zone: u32,
    pub _pad: u32,
}
crate::assert_size!(GuardKey, 24);

/// `GUARDS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardState {
    /// Start of the current window (`bpf_ktime_get_coarse_ns`).
    pub window_start_ns: u64,
    /// Queries into the zone are refused until then (enforce).
    pub blocked_until_ns: u64,
    /// Distinct random-looking names in the window.
    pub distinct: u32,
    /// 1 once the window's suspected tunnel was reported.
    pub reported: u32,
    /// Hashes (low 32 bits, never 0, keyed with a secret seed) of the last
    /// random-looking names.
    pub recent: [u32; GUARD_RECENT],
}
crate::assert_size!(GuardState, 56);

/// [`crate::FlowEvent::kind`] of a [`TunnelEvent`].
pub const EVENT_KIND_TUNNEL: u8 = 3;

/// A suspected tunnel, once per workload, zone and window.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelEvent {
    pub ktime_ns: u64,
    /// The workload (IPv4 mapped into 16 bytes).
    pub workload: [u8; 16],
    /// The zone ([`crate::NameEntry::zone`]).
    pub zone: u32,
    /// Distinct random-looking names seen in the window.
    pub distinct: u32,
    /// Family of `workload`.
    pub family: u8,
    /// `TUNNEL_GUARD_*` in force.
    pub mode: u8,
    /// Bytes of `name`.
    pub name_len: u8,
    pub _pad0: [u8; 25],
    /// [`EVENT_KIND_TUNNEL`], at [`crate::EVENT_KIND_OFFSET`].
    pub kind: u8,
    pub _pad1: [u8; 3],
    /// The name that made the tunnel suspected (a sample).
    pub name: [u8; crate::NAME_BUF],
}
crate::assert_size!(TunnelEvent, 320);

crate::impl_pod!(GuardKey, GuardState, TunnelEvent);
