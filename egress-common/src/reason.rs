//! Stable reason codes and verdicts. These numbers appear in the kernel's
//! counters, in flow logs and in metrics: never renumber or reuse one; add new
//! codes at the end.

/// Why the datapath did what it did with a packet.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A rule of the pack (or `implicit-deny`) decided.
    Rule = 0,
    /// The source is covered by no rule: not the firewall's business.
    Uncovered = 1,
    /// Not IP (ARP and other link-layer protocols): passed untouched.
    NotIp = 2,
    /// Link-local control traffic (neighbour discovery, router solicitation,
    /// link-local multicast, DHCP): passed untouched.
    LinkLocal = 3,
    /// Addressed to the gateway itself and passed unjudged. No longer
    /// counted: traffic to the gateway meets the rules (the `gateway`
    /// destination); its control traffic counts as `LinkLocal`. The code
    /// stays taken.
    ToGateway = 4,
    /// Served from the flow cache (counted separately from `Rule`).
    FlowCache = 5,
    /// Headers end before they should (Ethernet, tags, IP, extension, L4).
    Truncated = 6,
    /// A VLAN tag type the datapath does not know, or more than two tags.
    UnknownTag = 7,
    /// A non-first fragment whose first fragment was not seen.
    FragmentUnseen = 8,
    /// More IPv6 extension headers than the datapath walks.
    TooManyExtHeaders = 9,
    /// An IP header that contradicts itself (bad version, IHL below 5, ...).
    BadIpHeader = 10,
    /// A non-first fragment judged by its first fragment's verdict.
    FragmentFollowed = 11,
    /// A later TCP fragment that overlaps the first 24 bytes (RFC 1858).
    TinyFragment = 12,
    /// The pack in the live slot is inconsistent (a rule index past its
    /// table); judged fail-closed.
    BadPack = 13,
    /// A TCP flow judged a second time, with the name its first client
    /// message gave (TLS SNI or HTTP Host): see [`crate::ConnState`].
    NameRead = 14,
    /// A TCP flow judged a second time without a name: its first client
    /// message is whole and names no host (no SNI, no Host), or is neither
    /// a TLS ClientHello nor an HTTP/1.x request.
    NameMissing = 15,
    /// A TCP flow judged a second time without a name: its first client
    /// message cannot be read (contradictory, malformed, over 16 KiB), or
    /// the flow's start was never seen.
    NameUnreadable = 16,
    /// A segment dropped while a flow's name is read: out of order,
    /// overlapping what was read with other bytes, or carrying URG (the
    /// client retransmits).
    StreamDropped = 17,
    /// A segment passed while a flow's name is still being read.
    NameWaiting = 18,
}

/// Number of reason slots in the per-CPU reason counters (room to grow).
pub const REASON_SLOTS: u32 = 32;

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 19] = [
        Reason::Rule,
        Reason::Uncovered,
        Reason::NotIp,
        Reason::LinkLocal,
        Reason::ToGateway,
        Reason::FlowCache,
        Reason::Truncated,
        Reason::UnknownTag,
        Reason::FragmentUnseen,
        Reason::TooManyExtHeaders,
        Reason::BadIpHeader,
        Reason::FragmentFollowed,
        Reason::TinyFragment,
        Reason::BadPack,
        Reason::NameRead,
        Reason::NameMissing,
        Reason::NameUnreadable,
        Reason::StreamDropped,
        Reason::NameWaiting,
    ];

    /// The code's stable name in logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Uncovered => "uncovered",
            Reason::NotIp => "not_ip",
            Reason::LinkLocal => "link_local",
            Reason::ToGateway => "to_gateway",
            Reason::FlowCache => "flow_cache",
            Reason::Truncated => "truncated",
            Reason::UnknownTag => "unknown_tag",
            Reason::FragmentUnseen => "fragment_unseen",
            Reason::TooManyExtHeaders => "too_many_ext_headers",
            Reason::BadIpHeader => "bad_ip_header",
            Reason::FragmentFollowed => "fragment_followed",
            Reason::TinyFragment => "tiny_fragment",
            Reason::BadPack => "bad_pack",
            Reason::NameRead => "name_read",
            Reason::NameMissing => "name_missing",
            Reason::NameUnreadable => "name_unreadable",
            Reason::StreamDropped => "stream_dropped",
            Reason::NameWaiting => "name_waiting",
        }
    }

    /// The reason with this code, if any.
    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| *r as u8 == code)
    }

    /// True for packets the datapath could not judge safely: dropped in
    /// enforce mode, passed and reported in monitor mode.
    pub const fn is_unjudgeable(self) -> bool {
        matches!(
            self,
            Reason::Truncated
                | Reason::UnknownTag
                | Reason::FragmentUnseen
                | Reason::TooManyExtHeaders
                | Reason::BadIpHeader
                | Reason::TinyFragment
                | Reason::BadPack
        )
    }
}

/// What happened to a packet a rule judged.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed = 0,
    Denied = 1,
    /// A deny in monitor mode: the packet passed.
    WouldDeny = 2,
}

/// Number of verdicts; rule counters are indexed `rule * VERDICTS + verdict`.
pub const VERDICTS: u32 = 3;

impl Verdict {
    /// Every verdict, in code order.
    pub const ALL: [Verdict; 3] = [Verdict::Allowed, Verdict::Denied, Verdict::WouldDeny];

    /// The verdict's name in flow logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
            Verdict::WouldDeny => "would_deny",
        }
    }

    /// The verdict with this code, if any.
    pub fn from_code(code: u8) -> Option<Verdict> {
        Verdict::ALL.iter().copied().find(|v| *v as u8 == code)
    }

    /// The verdict of a code the datapath wrote itself; an unknown code
    /// reads as `Denied` (fail closed).
    #[inline(always)]
    pub const fn from_code_fast(code: u8) -> Verdict {
        match code {
            0 => Verdict::Allowed,
            2 => Verdict::WouldDeny,
            _ => Verdict::Denied,
        }
    }

    /// Whether the packet is dropped.
    pub const fn drops(self) -> bool {
        matches!(self, Verdict::Denied)
    }
}
