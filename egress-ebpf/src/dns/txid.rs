//! The gateway's transaction ids. A workload chooses every other field an
//! answer is matched on (its address and port, the resolver, the
//! question), so each recorded query leaves with an id the gateway drew at
//! random: only who saw the query leave the gateway can answer it. The
//! answer gets the workload's own id back before it reaches the workload.
//!
//! Here: recording a query under a drawn id, claiming the query an answer
//! names, and the [`IdSwap`] the entry points write into the packet (TC
//! through the checksum helper, XDP by hand).

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::bpf_get_prandom_u32;
use egress_common::QueryValue;

use super::message::{LoadBytes, query_key};
use crate::maps::EGV6_QUERIES;
use crate::parse::{IPPROTO_UDP, Packet};

/// A DNS message's transaction id rewritten in the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdSwap {
    /// Offset of the id in the packet.
    pub id_off: u16,
    /// Offset of the UDP or TCP checksum.
    pub csum_off: u16,
    /// The id on the wire (host order).
    pub old: u16,
    /// The id it becomes (host order).
    pub new: u16,
    /// UDP: a zero checksum (IPv4, none) stays zero.
    pub udp: bool,
}

impl IdSwap {
    /// No swap (the second of [`super::QueryAction::Record`] when a segment
    /// holds one query): every field set, so that no path carries an
    /// undefined value the verifier would refuse.
    pub const NONE: IdSwap = IdSwap { id_off: 0, csum_off: 0, old: 0, new: 0, udp: false };

    /// Whether this is a swap to write (not [`IdSwap::NONE`]).
    #[inline(always)]
    pub const fn is_some(&self) -> bool {
        self.id_off != 0
    }

    #[inline(always)]
    fn new(pkt: &Packet, id_off: u32, old: u16, new: u16) -> Self {
        let udp = pkt.proto == IPPROTO_UDP;
        let csum_off = pkt.l4_off + if udp { 6 } else { 16 };
        IdSwap { id_off: id_off as u16, csum_off, old, new, udp }
    }
}

/// Ids drawn for one query before it goes unrecorded (each drawn id may be
/// outstanding already for the same workload port and resolver).
const DRAWS: usize = 2;

/// Records the query leaving as `pkt`, whose message starts at `off` with
/// the workload's id `workload_id`, under an id of the gateway's; the swap
/// that writes that id into the query. `None` when every id drawn was
/// taken: the query is let through unrecorded and unchanged.
#[inline(always)]
pub fn record(pkt: &Packet, off: u32, workload_id: u16, value: &QueryValue) -> Option<IdSwap> {
    for _ in 0..DRAWS {
        // SAFETY: helper without preconditions.
        let id = unsafe { bpf_get_prandom_u32() } as u16;
        let key = query_key(&pkt.src, &pkt.dst, pkt.sport, id, pkt.proto);
        if EGV6_QUERIES.insert(&key, value, u64::from(BPF_NOEXIST)).is_ok() {
            return Some(IdSwap::new(pkt, off, workload_id, id));
        }
    }
    None
}

/// The outstanding query that the answer in `pkt` names by the gateway's
/// id, taken out of the table (it is answered once), and the swap that
/// gives the workload its own id back. The id is read where a message
/// starts: the UDP payload, or after the length prefix of a TCP segment
/// that holds one message whole or starts one (then its header must read as
/// a response to one question: a later segment of a long message could
/// hold anything there). Answers of every kind are claimed, taught from or
/// not: the workload waits for its own id.
#[inline(always)]
pub fn claim<B: LoadBytes>(bytes: &B, pkt: &Packet) -> Option<(IdSwap, QueryValue)> {
    claim_at(bytes, pkt, u32::from(pkt.payload_off))
}

/// [`claim`] for the message (UDP) or the length prefix (TCP) at packet
/// offset `off`: the first message of the segment, or the second of a TCP
/// segment that carries two.
#[inline(always)]
pub fn claim_at<B: LoadBytes>(bytes: &B, pkt: &Packet, off: u32) -> Option<(IdSwap, QueryValue)> {
    let end = u32::from(pkt.ip_end);
    let udp = pkt.proto == IPPROTO_UDP;
    let id_off = if udp { off } else { off + 2 };
    if off == 0 || end < id_off + 12 {
        return None;
    }
    let mut head = [0u8; 8];
    if !bytes.load(off, head.as_mut_ptr(), 8) {
        return None;
    }
    let id = if udp {
        u16::from_be_bytes([head[0], head[1]])
    } else {
        let framed = u32::from(u16::from_be_bytes([head[0], head[1]]));
        let flags = u16::from_be_bytes([head[4], head[5]]);
        let questions = u16::from_be_bytes([head[6], head[7]]);
        let whole = framed + 2 == end - off;
        if !whole && (framed < 12 || flags & 0x8000 == 0 || questions != 1) {
            return None;
        }
        u16::from_be_bytes([head[2], head[3]])
    };
    let key = query_key(&pkt.dst, &pkt.src, pkt.dport, id, pkt.proto);
    let query = EGV6_QUERIES.get_ptr(&key)?;
    // SAFETY: value pointer from a successful lookup.
    let query = unsafe { *query };
    let _ = EGV6_QUERIES.remove(&key);
    Some((IdSwap::new(pkt, id_off, id, u16::from_be(query.workload_txid_be)), query))
}
