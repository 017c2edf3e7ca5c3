//! Connection names (contract section "Connection names"): a TCP flow is
//! judged again once its first client message (a TLS ClientHello, an
//! HTTP/1.x request head) has been read, by address and name. These are the
//! tables of that second decision and the state of the stream reader that
//! gathers the message.

use crate::{FlowEvent, NAME_BUF};

/// `XW[slot]` value: the first rules of a combined class x with WebGroup w
/// as destination that match through w, by how a flow stands to w (each
/// [`crate::NO_RULE`] where none comes before x's default). The first
/// decision reads `both` (every WebGroup learned counts as named).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamedRules {
    /// Learned for w and named in w: any rule naming w.
    pub both: u32,
    /// Learned for w, the name not covered (or none): `deny` rules and
    /// `permit` rules with `verify_names: false`.
    pub learned_only: u32,
    /// Named in w, not learned for it: `deny` rules.
    pub named_only: u32,
    pub _pad: u32,
}
crate::assert_size!(NamedRules, 16);

impl NamedRules {
    /// The entry's rule for a flow learned for w (`learned`) whose name w
    /// covers (`named`).
    #[inline(always)]
    pub const fn rule(&self, learned: bool, named: bool) -> u32 {
        match (learned, named) {
            (true, true) => self.both,
            (true, false) => self.learned_only,
            (false, true) => self.named_only,
            (false, false) => crate::NO_RULE,
        }
    }
}

/// The first client bytes read for a name at most (the contract's 16 KiB).
pub const STREAM_WINDOW: usize = 16_384;

/// [`ConnState::status`]: the first client message is being gathered.
pub const CONN_READING: u8 = 1;
/// [`ConnState::status`]: read; the name (or its absence) is final.
pub const CONN_DONE: u8 = 2;

/// [`ConnState::source`] and [`NamedFlowEvent::name_source`]: no name.
pub const NAME_SOURCE_NONE: u8 = 0;
/// The name is the TLS ClientHello's server name (SNI).
pub const NAME_SOURCE_SNI: u8 = 1;
/// The name is the HTTP/1.x request's `Host`.
pub const NAME_SOURCE_HOST: u8 = 2;

/// The name source's word in flow logs, `None` for no name.
pub const fn name_source_word(source: u8) -> Option<&'static str> {
    match source {
        NAME_SOURCE_SNI => Some("sni"),
        NAME_SOURCE_HOST => Some("host"),
        _ => None,
    }
}

/// `CONNS`: per TCP flow whose decision can change with its name, where its
/// reader stands and, once read, the name. Kept for the flow's life (LRU),
/// so that a flow judged again (after a reload, or when its flow-cache way
/// was taken) is judged by the name it gave, under the live pack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnState {
    /// The sequence number of the next in-order client byte (host order).
    pub next_seq: u32,
    /// Client bytes gathered (only the first [`STREAM_WINDOW`] count).
    pub read: u32,
    /// [`CONN_READING`] or [`CONN_DONE`].
    pub status: u8,
    /// `NAME_SOURCE_*`: where the name came from, once read.
    pub source: u8,
    /// A [`crate::Reason`] code: why the flow has no name
    /// ([`crate::Reason::NameMissing`], [`crate::Reason::NameUnreadable`]),
    /// or [`crate::Reason::NameRead`].
    pub reason: u8,
    /// Bytes of `name`.
    pub name_len: u8,
    /// 1 when the gathered bytes are in `STREAMS` (more than one segment).
    pub buffered: u8,
    pub _pad: [u8; 3],
    /// The name, lower-case, no trailing dot (`name[..name_len]`).
    pub name: [u8; NAME_BUF],
}
crate::assert_size!(ConnState, 272);

/// `STREAMS`: the first client bytes of a flow whose message spans segments.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamBuf {
    pub bytes: [u8; STREAM_WINDOW],
}
crate::assert_size!(StreamBuf, STREAM_WINDOW);

/// Flows whose names are kept at once (`CONNS`).
pub const MAX_CONNS: u32 = 65_536;
/// Flows whose first message is gathered across segments at once
/// (`STREAMS`, 16 KiB each).
pub const MAX_STREAMS: u32 = 1_024;

/// [`FlowEvent::kind`] of a [`NamedFlowEvent`].
pub const EVENT_KIND_NAMED: u8 = 2;

/// A TCP flow's second decision, by address and name: a [`FlowEvent`]
/// (kind [`EVENT_KIND_NAMED`]) and the name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamedFlowEvent {
    pub flow: FlowEvent,
    /// `NAME_SOURCE_*`.
    pub name_source: u8,
    /// Bytes of `name`.
    pub name_len: u8,
    pub _pad: [u8; 6],
    pub name: [u8; NAME_BUF],
}
crate::assert_size!(NamedFlowEvent, 328);

crate::impl_pod!(NamedRules, ConnState, StreamBuf, NamedFlowEvent);
