//! DNS learning: outstanding queries, the name table, learned addresses and
//! the DNS counters.

/// Longest name handled: 253 text bytes, kept in a 256-byte buffer.
pub const NAME_BUF: usize = 256;

/// [`NameKey`] kinds (byte 0 of the key).
pub const NAME_EXACT: u8 = 1;
/// `*.suffix`: exactly one label before the suffix.
pub const NAME_ONE_LABEL: u8 = 2;
/// `**.suffix`: one or more labels before the suffix.
pub const NAME_ANY_DEPTH: u8 = 3;

/// A name or suffix in the name table: byte 0 is the kind, the lowercase
/// dotted name (no trailing dot) is right-aligned so that it ends at byte
/// 255; bytes in between are zero. Right alignment makes every suffix of a
/// name a key of its own once the labels before it are zeroed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub bytes: [u8; NAME_BUF],
}
crate::assert_size!(NameKey, 256);

impl NameKey {
    /// The key of `name` (lowercase, no trailing dot, at most 253 bytes)
    /// with the given kind; `None` if the name does not fit.
    pub fn new(kind: u8, name: &[u8]) -> Option<Self> {
        if name.len() > NAME_BUF - 3 {
            return None;
        }
        let mut bytes = [0u8; NAME_BUF];
        bytes[0] = kind;
        bytes[NAME_BUF - name.len()..].copy_from_slice(name);
        Some(NameKey { bytes })
    }
}

/// Bytes of a [`ShortNameKey`]: the kind and a name of up to 63 bytes.
pub const NAME_SHORT: usize = 64;

/// A [`NameKey`] whose name is shorter than [`NAME_SHORT`], as the short
/// name table holds it: the key's last [`NAME_SHORT`] bytes with the kind
/// in the first. Most names are short, and a map lookup hashes its whole
/// key: a quarter of the bytes is a quarter of the hashing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShortNameKey {
    pub bytes: [u8; NAME_SHORT],
}
crate::assert_size!(ShortNameKey, 64);

impl NameKey {
    /// The short form of this key, when its name is short enough (see
    /// [`ShortNameKey`]); `None` for long names, and for keys no
    /// [`NameKey::new`] made.
    pub fn short(&self) -> Option<ShortNameKey> {
        let (kind, len) = self.kind_and_len()?;
        if len >= NAME_SHORT {
            return None;
        }
        let mut bytes = [0u8; NAME_SHORT];
        bytes.copy_from_slice(&self.bytes[NAME_BUF - NAME_SHORT..]);
        bytes[0] = kind;
        Some(ShortNameKey { bytes })
    }

    /// Its kind and the length of its name (`None` for a key no
    /// [`NameKey::new`] made).
    pub fn kind_and_len(&self) -> Option<(u8, usize)> {
        let start = self.bytes[1..].iter().position(|b| *b != 0)? + 1;
        Some((self.bytes[0], NAME_BUF - start))
    }
}

/// `NAMES` value: the WebGroups whose patterns include the key and, for a
/// wildcard pattern (`*.` or `**.`), the zone it opens: an id of the
/// pattern's kind and suffix, the same in every pack, never 0 (exact names
/// have zone 0: a fixed name carries no data).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameEntry {
    pub groups: u64,
    pub zone: u32,
    pub _pad: u32,
}
crate::assert_size!(NameEntry, 16);

impl NameEntry {
    /// The zone id of a pattern of `kind` over `suffix` (FNV-1a, 32 bits,
    /// of the kind byte and the suffix), or 0 for an exact name.
    pub fn zone_of(kind: u8, suffix: &[u8]) -> u32 {
        if kind == NAME_EXACT {
            return 0;
        }
        let mut h: u32 = 0x811c_9dc5;
        for b in core::iter::once(&kind).chain(suffix) {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        h.max(1)
    }
}

/// Which name lengths the name table holds, by kind: bit `len % 64` of
/// word `kind * 4 + len / 64` is set when some key of that kind has a name
/// of `len` bytes (words 0..4, kind 0, stay empty: every index is then a
/// 4-bit mask, which the verifier sees bounded). A name's lookups skip the
/// keys that cannot be there: most of a name's suffixes have a length no
/// pattern has, and a lookup hashes all 256 bytes of its key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameLengths {
    pub words: [u64; 16],
}
crate::assert_size!(NameLengths, 128);

impl NameLengths {
    /// Notes a key of `kind` whose name is `len` bytes.
    pub fn insert(&mut self, kind: u8, len: usize) {
        if (NAME_EXACT..=NAME_ANY_DEPTH).contains(&kind) && len < NAME_BUF {
            self.words[usize::from(kind) * 4 + len / 64] |= 1 << (len % 64);
        }
    }

    /// Whether some key of `kind` has a name of `len` bytes.
    #[inline(always)]
    pub fn contains(&self, kind: u8, len: usize) -> bool {
        if kind > NAME_ANY_DEPTH || len >= NAME_BUF {
            return false;
        }
        self.words[(usize::from(kind) * 4 + len / 64) & 15] & (1 << (len % 64)) != 0
    }

    /// Whether some key of `kind` has a name shorter than `len` bytes.
    #[inline(always)]
    pub fn any_shorter(&self, kind: u8, len: usize) -> bool {
        if kind > NAME_ANY_DEPTH || len >= NAME_BUF {
            return false;
        }
        let (at, bit) = (len / 64, 1u64 << (len % 64));
        let mut below = 0;
        let mut j = 0;
        while j < 4 {
            let word = self.words[(usize::from(kind) * 4 + j) & 15];
            if j < at {
                below |= word;
            } else if j == at {
                below |= word & (bit - 1);
            }
            j += 1;
        }
        below != 0
    }
}

/// Most WebGroups a pack may have (they are bits of a `u64`).
pub const MAX_WEBGROUPS: u32 = 64;
/// Capacity of each slot's name table.
pub const MAX_NAMES: u32 = 65_536;

/// An outstanding query, keyed as the answer will come back.
///
/// The workload chooses its address, its port, the resolver and the
/// question; the transaction id here is the gateway's, drawn at random and
/// written into the query on its way out, so that an answer forged without
/// seeing the query leaving the gateway cannot name it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub workload: [u8; 16],
    pub resolver: [u8; 16],
    pub workload_port_be: u16,
    /// The gateway's DNS transaction id, as on the wire towards the resolver.
    pub txid_be: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub _pad: [u8; 3],
}
crate::assert_size!(QueryKey, 40);

/// What was asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryValue {
    /// FNV-1a of the lowercase question name, re-checked on the answer.
    pub name_hash: u64,
    /// When the query left (`bpf_ktime_get_coarse_ns`).
    pub sent_ns: u64,
    pub qtype: u16,
    /// The workload's own transaction id, given back in the answer.
    pub workload_txid_be: u16,
    /// The host that sent the query (interface and MAC): what its answer
    /// teaches is paid for from that host's budgets, whatever source
    /// address the query carried.
    pub asker_ifindex: u32,
    pub asker_mac: [u8; 6],
    pub _pad: [u8; 2],
}
crate::assert_size!(QueryValue, 32);

/// Capacity of the outstanding-query table (LRU).
pub const MAX_QUERIES: u32 = 131_072;
/// Queries older than this teach nothing.
pub const QUERY_TIMEOUT_NS: u64 = 10_000_000_000;

/// A learned address, for the workload that asked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LearnKey {
    pub workload: [u8; 16],
    pub addr: [u8; 16],
}
crate::assert_size!(LearnKey, 32);

/// The WebGroups an address was learned for, and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnValue {
    /// WebGroup bits (see the agent's WebGroup registry).
    pub groups: u64,
    /// `bpf_ktime_get_coarse_ns` after which the entry teaches nothing.
    pub expires_ns: u64,
    /// FNV-1a of the question name that taught it (for `learned` listings).
    pub name_hash: u64,
}
crate::assert_size!(LearnValue, 24);

/// Capacity of the learned-address table (LRU, all workloads).
pub const MAX_LEARNED: u32 = 1 << 20;

/// Capacity of the table of names that taught addresses (LRU), by hash.
pub const MAX_LEARNED_NAMES: u32 = 65_536;

/// A learned name as text: lowercase, dotted, zero-padded.
pub type NameText = [u8; NAME_BUF];

/// Longest WebGroup name stored in the WebGroup-name table.
pub const WEBGROUP_NAME_LEN: usize = 64;
/// A WebGroup's name, zero-padded, indexed by its bit.
pub type WebGroupName = [u8; WEBGROUP_NAME_LEN];

/// Key of a slot's `(combined class, WebGroup bit)` table, whose value
/// is the first rule of the class naming that WebGroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClassWebGroupKey {
    pub x_class: u32,
    pub group: u32,
}
crate::assert_size!(ClassWebGroupKey, 8);

/// The lifetime, in seconds, an answer's TTL teaches: `ttl` within the
/// pack's `dns.min_ttl` and `dns.max_ttl` (a maximum below the minimum
/// counts as the minimum).
#[inline(always)]
pub fn clamp_ttl(ttl: u32, min: u32, max: u32) -> u32 {
    ttl.clamp(min, max.max(min))
}

/// FNV-1a, 64 bits.
pub const fn fnv1a_step(hash: u64, byte: u8) -> u64 {
    (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
}
/// FNV-1a offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of a byte string.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h = fnv1a_step(h, bytes[i]);
        i += 1;
    }
    h
}

/// DNS counters (per CPU), by stable code. Never renumber.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsStat {
    /// A query to a resolver was recorded.
    QueryTracked = 0,
    /// A query refused by the query filter (enforce).
    QueryRefused = 1,
    /// A query the filter would refuse (monitor): forwarded and reported.
    QueryWouldRefuse = 2,
    /// A response from a resolver was examined.
    AnswerSeen = 3,
    /// An address was learned (one per A/AAAA record on the chain).
    AddressLearned = 4,
    /// No outstanding query matched (unsolicited, wrong port, not the
    /// gateway's transaction id, duplicate).
    Unsolicited = 5,
    /// The echoed question is not the question that was asked.
    QuestionMismatch = 6,
    /// The message could not be parsed whole (truncated, bad counts, ...).
    Malformed = 7,
    /// A compression pointer that loops, points forward or past the end.
    BadPointer = 8,
    /// A label over 63 bytes, a name over 255 bytes, no root label, or a
    /// byte in a label other than a letter, digit, `-` or `_` (a NUL would
    /// vanish into the name key's zero padding, a `.` read as a separator):
    /// in a query, unreadable; in an answer, the question's name or that of
    /// a record on its chain, nothing taught.
    BadName = 9,
    /// An A record whose RDLENGTH is not 4, or AAAA not 16.
    BadRdata = 10,
    /// Not a DNS response (QR clear, opcode not QUERY, no question).
    NotDns = 11,
    /// DNS over TCP split over segments: not parsed.
    TcpSegmented = 12,
    /// An A/AAAA record for a name that is not on the question's chain.
    OffChain = 13,
    /// The answer's name is in no WebGroup: nothing to learn.
    NoWebGroup = 14,
    /// An error RCODE or an empty answer.
    NoAnswer = 15,
    /// A learned address took a new entry (not a refresh of an existing
    /// one). New entries minus live entries are the LRU's evictions.
    AddressNew = 16,
    /// The agent's lease ran out (the agent is down): a query to a resolver
    /// was refused (query filter `enforce`) or let through unrecorded, or an
    /// answer taught nothing.
    AgentDown = 17,
    /// A packet from a resolver's port 53 that came in on a LAN interface:
    /// a workload's forgery turned around by the gateway (real answers come
    /// from upstream or from the gateway itself). Taught nothing.
    FromLan = 18,
    /// A permitted packet to a resolver's port 53 that the query program
    /// never saw (the tail call into it failed: the program array's slot is
    /// empty). Neither recorded nor filtered: dropped and counted as refused
    /// with the query filter enforcing, passed and counted as would-refuse
    /// monitoring, passed with the filter off.
    QueryUnfiltered = 19,
    /// An IP fragment to a resolver's port 53 with the query filter
    /// enforcing: dropped (DNS does not need fragments to a resolver; a
    /// datagram's later fragments would otherwise carry bytes the filter
    /// never read to the resolver, which reassembles them).
    QueryFragment = 20,
    /// A query whose type is not in `dns.query_types`, with the query
    /// filter on (also counted refused or would-refuse).
    QueryType = 21,
    /// A workload's queries into an allowed zone look like a tunnel (see
    /// `dns.tunnel_guard`): once per workload, zone and window.
    TunnelSuspected = 22,
    /// A query into a zone its workload is suspected of tunnelling through,
    /// refused (`dns.tunnel_guard: enforce`).
    TunnelRefused = 23,
    /// A query left unrecorded (forwarded, answered, teaching nothing), or
    /// an answer that taught nothing, because a budget of its
    /// workload, its host or everyone's was spent
    /// (`egress_budget_refused_total` says which).
    OverBudget = 24,
}

/// Capacity of `LAN_IFS`, the interfaces the agent is attached to.
pub const MAX_LAN_IFACES: u32 = 256;

/// Slots in the DNS counter array.
pub const DNS_STAT_SLOTS: u32 = 32;

impl DnsStat {
    /// Every counter in code order.
    pub const ALL: [DnsStat; 25] = [
        DnsStat::QueryTracked,
        DnsStat::QueryRefused,
        DnsStat::QueryWouldRefuse,
        DnsStat::AnswerSeen,
        DnsStat::AddressLearned,
        DnsStat::Unsolicited,
        DnsStat::QuestionMismatch,
        DnsStat::Malformed,
        DnsStat::BadPointer,
        DnsStat::BadName,
        DnsStat::BadRdata,
        DnsStat::NotDns,
        DnsStat::TcpSegmented,
        DnsStat::OffChain,
        DnsStat::NoWebGroup,
        DnsStat::NoAnswer,
        DnsStat::AddressNew,
        DnsStat::AgentDown,
        DnsStat::FromLan,
        DnsStat::QueryUnfiltered,
        DnsStat::QueryFragment,
        DnsStat::QueryType,
        DnsStat::TunnelSuspected,
        DnsStat::TunnelRefused,
        DnsStat::OverBudget,
    ];

    /// The counter's name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            DnsStat::QueryTracked => "query_tracked",
            DnsStat::QueryRefused => "query_refused",
            DnsStat::QueryWouldRefuse => "query_would_refuse",
            DnsStat::AnswerSeen => "answer_seen",
            DnsStat::AddressLearned => "address_learned",
            DnsStat::Unsolicited => "unsolicited",
            DnsStat::QuestionMismatch => "question_mismatch",
            DnsStat::Malformed => "malformed",
            DnsStat::BadPointer => "bad_pointer",
            DnsStat::BadName => "bad_name",
            DnsStat::BadRdata => "bad_rdata",
            DnsStat::NotDns => "not_dns",
            DnsStat::TcpSegmented => "tcp_segmented",
            DnsStat::OffChain => "off_chain",
            DnsStat::NoWebGroup => "no_webgroup",
            DnsStat::NoAnswer => "no_answer",
            DnsStat::AddressNew => "address_new",
            DnsStat::AgentDown => "agent_down",
            DnsStat::FromLan => "answer_from_lan",
            DnsStat::QueryUnfiltered => "query_unfiltered",
            DnsStat::QueryFragment => "query_fragment",
            DnsStat::QueryType => "query_type",
            DnsStat::TunnelSuspected => "tunnel_suspected",
            DnsStat::TunnelRefused => "tunnel_refused",
            DnsStat::OverBudget => "over_budget",
        }
    }
}

/// `AGENT[0]`: the running agent's lease on DNS learning. The agent renews
/// it every [`LEASE_RENEW_MS`]; once `bpf_ktime_get_coarse_ns` passes `until_ns`
/// the agent counts as down and the datapath fails closed for names:
/// queries to resolvers are refused (query filter `enforce`; otherwise let
/// through unrecorded) and answers teach nothing, while addresses learned
/// before keep working until their TTL.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentLease {
    /// `CLOCK_MONOTONIC` nanoseconds (the clock of `bpf_ktime_get_ns`, and,
    /// a tick behind, of `bpf_ktime_get_coarse_ns`) until which the agent
    /// vouches for learning; 0: never, or released.
    pub until_ns: u64,
    /// Process id of the agent that renewed it last (for `status`).
    pub pid: u32,
    pub _pad: u32,
}
crate::assert_size!(AgentLease, 16);

/// How long one renewal of the [`AgentLease`] lasts.
pub const LEASE_NS: u64 = 5_000_000_000;
/// How often a running agent renews its lease.
pub const LEASE_RENEW_MS: u64 = 1_000;

crate::impl_pod!(
    AgentLease,
    NameKey,
    ShortNameKey,
    NameEntry,
    QueryKey,
    QueryValue,
    LearnKey,
    LearnValue,
    ClassWebGroupKey
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_lengths_hold_what_was_inserted_and_nothing_else() {
        let mut l = NameLengths::default();
        l.insert(NAME_ANY_DEPTH, 9);
        l.insert(NAME_EXACT, 200);
        assert!(l.contains(NAME_ANY_DEPTH, 9) && l.contains(NAME_EXACT, 200));
        assert!(!l.contains(NAME_ONE_LABEL, 9) && !l.contains(NAME_ANY_DEPTH, 10) && !l.contains(NAME_EXACT, 9));
        assert!(l.any_shorter(NAME_ANY_DEPTH, 10) && !l.any_shorter(NAME_ANY_DEPTH, 9));
        assert!(l.any_shorter(NAME_EXACT, 253) && !l.any_shorter(NAME_EXACT, 200));
        assert!(!l.any_shorter(NAME_ONE_LABEL, 255));
        assert!(!l.contains(0, 9) && !l.contains(4, 9) && !l.contains(NAME_EXACT, 256));
        l.insert(0, 9);
        assert_eq!(l.words[..4], [0; 4], "kind 0 is no kind");
    }

    #[test]
    fn a_key_knows_its_kind_and_length() {
        let key = NameKey::new(NAME_ONE_LABEL, b"openai.com").unwrap();
        assert_eq!(key.kind_and_len(), Some((NAME_ONE_LABEL, 10)));
        let long = [b'a'; 253];
        assert_eq!(NameKey::new(NAME_EXACT, &long).unwrap().kind_and_len(), Some((NAME_EXACT, 253)));
    }

    #[test]
    fn a_short_key_is_the_long_keys_tail_under_its_kind() {
        let short = NameKey::new(NAME_ANY_DEPTH, b"openai.com").unwrap().short().unwrap();
        assert_eq!(short.bytes[0], NAME_ANY_DEPTH);
        assert_eq!(&short.bytes[NAME_SHORT - 10..], b"openai.com");
        assert!(short.bytes[1..NAME_SHORT - 10].iter().all(|b| *b == 0));
        let longest = [b'a'; NAME_SHORT - 1];
        let short = NameKey::new(NAME_EXACT, &longest).unwrap().short().unwrap();
        assert_eq!((short.bytes[0], &short.bytes[1..]), (NAME_EXACT, &longest[..]));
        assert!(NameKey::new(NAME_EXACT, &[b'a'; NAME_SHORT]).unwrap().short().is_none());
    }
}
