//! The DNS programs' per-CPU working memory (the map `EGV6_SCRATCH`, one
//! [`Scratch`] a CPU): the message, the name being read, and the state of
//! the `bpf_loop` walkers, whose callbacks reach it through the map since a
//! callback's frame cannot see its caller's stack.
//!
//! A caller holds `&mut Scratch` while a callback changes it: state is
//! handed over field by field with [`vset`] and [`vget`] (volatile, so no
//! access is moved across the `bpf_loop` call, and no struct-sized
//! temporary lands on the 512-byte stack).

use egress_common::NAME_BUF;

/// Largest DNS message parsed (bigger ones teach nothing).
pub const MSG_MAX: usize = 4096;
/// Addresses learned from one answer at most.
pub const MAX_LEARN: usize = 32;
/// CNAME chain names tracked at most.
pub const MAX_CHAIN: usize = 8;

/// A walker's `status`: still running.
pub const RUNNING: u64 = 0;
/// A walker's `status`: finished; a failure is `FAILED + DnsStat` code.
pub const DONE: u64 = 1;
/// A walker's `status` base for failures: `FAILED + DnsStat` code.
pub const FAILED: u64 = 2;

/// Per-CPU working memory (too large for the 512-byte stack), and the
/// state of the `bpf_loop` walkers, which reach it from their callbacks.
#[repr(C)]
pub struct Scratch {
    pub msg: [u8; MSG_MAX],
    pub name: [u8; NAME_BUF],
    pub key: [u8; NAME_BUF],
    /// Never written: the zeros a name's tail is cleared from.
    pub zeros: [u8; NAME_BUF],
    pub addrs: [[u8; 16]; MAX_LEARN],
    pub ttls: [u32; MAX_LEARN],
    pub chain: [u64; MAX_CHAIN],
    /// Where each chain name starts in the message (the question at 12, a
    /// CNAME target at its record's data): an owner that is just a
    /// pointer to one of them is that name, without walking it again.
    pub chain_at: [u64; MAX_CHAIN],
    pub walk: Walk,
    pub scan: Scan,
    pub records: Records,
    /// What the last answer taught, for its flow-log event.
    pub report: Report,
    /// The tunnel guard's inputs and answer (`dns::guard`).
    pub guard: GuardWork,
    /// The routing and neighbour lookup of [`crate::hosts`].
    pub fib: aya_ebpf::bindings::bpf_fib_lookup,
    /// The host being noted (`crate::hosts::note_asker`).
    pub host: HostWork,
}

/// The host an answer's asker is noted under, and a fresh entry to insert
/// (in the scratch: not on the callback's stack).
#[repr(C)]
pub struct HostWork {
    pub key: egress_common::HostKey,
    pub fresh: egress_common::HostAddrs,
    /// A sibling's learned-address key (`crate::hosts::sibling_groups`).
    pub learn: egress_common::LearnKey,
}

/// The queries of one packet as the tunnel guard sees them (noted while
/// each is judged, weighed after), and the packet's workload.
#[repr(C)]
pub struct GuardWork {
    /// Queries noted (at most two).
    pub n: u64,
    /// Per query: the scan's zone and random flag, the name's hash and
    /// length.
    pub zone: [u64; 2],
    pub random: [u64; 2],
    pub hash: [u64; 2],
    pub len: [u64; 2],
    /// The key being weighed (the asking workload, IPv4 mapped, and a
    /// zone) and a fresh state to insert: in the scratch, not on the
    /// callback's stack, which adds to the query program's.
    pub key: egress_common::GuardKey,
    pub fresh: egress_common::GuardState,
    /// The workload's family.
    pub family: u64,
    /// `TUNNEL_GUARD_*` of the live slot.
    pub mode: u64,
    /// Set by the weighing when a query is refused.
    pub refused: u64,
    /// Set by the weighing when a tunnel is to be reported: the zone, the
    /// sample name's length and the distinct names counted (reported
    /// after the weighing, outside its callback: the report's spend would
    /// add its frame to the callback's).
    pub report_zone: u64,
    pub report_len: u64,
    pub report_distinct: u64,
}

/// What an answer taught, handed to the learning and reporting callbacks.
#[repr(C)]
pub struct Report {
    pub workload: [u8; 16],
    pub groups: u64,
    pub name_hash: u64,
    pub found: u32,
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub family: u32,
    /// `bpf_ktime_get_coarse_ns` when the answer was judged.
    pub now: u64,
    /// The question's length, read back before its tail is cleared: a
    /// value the verifier does not carry back through the whole answer
    /// (a helper's size is tracked precisely wherever it came from).
    pub name_len: u64,
}

/// State of a name walk (`dns::name::read_name`).
#[repr(C)]
pub struct Walk {
    pub len: u64,
    pub pos: u64,
    pub lowest: u64,
    pub next: u64,
    pub label_left: u64,
    pub olen: u64,
    pub hash: u64,
    pub pointers: u64,
    pub jumped: u64,
    pub copy: u64,
    /// Set at a byte other than a letter, digit, `-` or `_` in a label.
    pub bad: u64,
    /// [`RUNNING`], [`DONE`], or [`FAILED`] + a `DnsStat` code.
    pub status: u64,
}

/// State of the suffix scan (`dns::name::name_groups`).
#[repr(C)]
pub struct Scan {
    pub i: u64,
    pub labels: u64,
    pub groups: u64,
    pub slot: u64,
    /// The zone of the first wildcard pattern that covered the name (its
    /// longest), 0 for none.
    pub zone: u64,
    /// Bytes of the label being scanned, and its character classes
    /// (`CLASS_*` bits).
    pub label: u64,
    pub classes: u64,
    /// 1 when a label before the zone looked random (see
    /// `egress_common::GUARD_LABEL_MIN`).
    pub random: u64,
    /// The bytes before the zone hashed from a secret seed
    /// (`EGV6_GUARD_SEED`): the guard's "asked again" test, which a
    /// workload cannot aim a collision at.
    pub keyed: u64,
}

/// [`Scan::classes`]: a digit.
pub const CLASS_DIGIT: u64 = 1;
/// [`Scan::classes`]: a letter.
pub const CLASS_LETTER: u64 = 2;
/// [`Scan::classes`]: `-` or `_`.
pub const CLASS_JOINER: u64 = 4;

/// State of the answer-record walk (`dns::answer`).
#[repr(C)]
pub struct Records {
    pub len: u64,
    pub at: u64,
    pub chain_len: u64,
    pub found: u64,
    /// [`RUNNING`], [`DONE`], or [`FAILED`] + a `DnsStat` code.
    pub status: u64,
    pub ancount: u64,
}

/// Volatile store (state handed to a `bpf_loop` callback).
///
/// # Safety
/// `p` must be valid for writes.
#[inline(always)]
pub unsafe fn vset<T>(p: *mut T, v: T) {
    // SAFETY: per the caller.
    unsafe { core::ptr::write_volatile(p, v) }
}

/// Volatile load (state a `bpf_loop` callback produced).
///
/// # Safety
/// `p` must be valid for reads.
#[inline(always)]
pub unsafe fn vget<T>(p: *const T) -> T {
    // SAFETY: per the caller.
    unsafe { core::ptr::read_volatile(p) }
}
