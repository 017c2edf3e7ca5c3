//! The DNS message: where it sits in the packet, its copy in the scratch
//! and reads from that copy by masked index; the DNS counters; the
//! agent's lease.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use egress_common::{DnsStat, QueryKey};

use crate::maps::{EGV6_AGENT, EGV6_DNS_STATS, EGV6_SCRATCH};
use crate::parse::{IPPROTO_UDP, Packet};
use crate::scratch::{FAILED, MSG_MAX, Scratch};

const MSG_MASK: usize = MSG_MAX - 1;

/// Reads packet bytes into memory (skb or XDP helper).
pub trait LoadBytes {
    /// Copies `len` bytes at `offset` to `dst`; false on failure.
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool;
}

/// This CPU's scratch.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU scratch, used by one program run at a time.
    EGV6_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Counts a DNS event.
#[inline(always)]
pub fn stat(s: DnsStat) {
    if let Some(cell) = EGV6_DNS_STATS.get_ptr_mut(s as u32) {
        // SAFETY: per-CPU cell, no concurrent writer on this CPU.
        unsafe { *cell += 1 };
    }
}

/// The counter a walker's failed `status` names.
#[inline(always)]
pub fn failed(code: u64) -> Option<DnsStat> {
    match code {
        c if c == FAILED + DnsStat::BadPointer as u64 => Some(DnsStat::BadPointer),
        c if c == FAILED + DnsStat::BadName as u64 => Some(DnsStat::BadName),
        c if c == FAILED + DnsStat::BadRdata as u64 => Some(DnsStat::BadRdata),
        c if c == FAILED + DnsStat::Malformed as u64 => Some(DnsStat::Malformed),
        _ => None,
    }
}

/// Byte `i` of the message copy (the index masked into the buffer).
#[inline(always)]
pub fn byte(msg: &[u8; MSG_MAX], i: usize) -> u8 {
    // SAFETY: the index is masked into the buffer.
    unsafe { *msg.get_unchecked(i & MSG_MASK) }
}

/// The big-endian 16-bit word at `i` of the message copy.
#[inline(always)]
pub fn be16(msg: &[u8; MSG_MAX], i: usize) -> u16 {
    u16::from_be_bytes([byte(msg, i), byte(msg, i + 1)])
}

/// Where the DNS message sits in the packet: (offset, length), or `None`
/// when there is no payload to look at.
#[inline(always)]
pub fn message_span<B: LoadBytes>(bytes: &B, pkt: &Packet) -> Result<Option<(u32, usize)>, DnsStat> {
    let off = pkt.payload_off as usize;
    let end = pkt.ip_end as usize;
    if off == 0 {
        return Ok(None);
    }
    if pkt.proto == IPPROTO_UDP {
        // A datagram to or from port 53 with nothing in it is no DNS.
        if end <= off {
            return Err(DnsStat::Malformed);
        }
        return Ok(Some((off as u32, end - off)));
    }
    if end <= off {
        // TCP without payload (handshake, ACKs).
        return Ok(None);
    }
    let payload = end - off;
    // TCP: a 2-byte length, and the whole message in this segment (the
    // first of two: see `second_span`).
    let dns_len = framed_len(bytes, off as u32, payload)?;
    if dns_len + 2 > payload {
        return Err(DnsStat::TcpSegmented);
    }
    Ok(Some((off as u32 + 2, dns_len)))
}

/// The length a 2-byte TCP framing at `off` gives, `payload` bytes of the
/// segment being left from there.
#[inline(always)]
fn framed_len<B: LoadBytes>(bytes: &B, off: u32, payload: usize) -> Result<usize, DnsStat> {
    let mut framing = [0u8; 2];
    if payload < 2 || !bytes.load(off, framing.as_mut_ptr(), 2) {
        return Err(DnsStat::TcpSegmented);
    }
    Ok(u16::from_be_bytes(framing) as usize)
}

/// After a TCP segment's first message (`first`, from `message_span`):
/// `None` when it ends the segment, the second message's span when one
/// whole message follows and ends it (glibc sends its A and AAAA queries
/// so), an error for anything else (part of a message, a third one).
#[inline(always)]
pub fn second_span<B: LoadBytes>(
    bytes: &B,
    pkt: &Packet,
    first: (u32, usize),
) -> Result<Option<(u32, usize)>, DnsStat> {
    let end = u32::from(pkt.ip_end);
    let next = first.0 + first.1 as u32;
    if pkt.proto == IPPROTO_UDP || next >= end {
        return Ok(None);
    }
    let left = (end - next) as usize;
    let dns_len = framed_len(bytes, next, left)?;
    if dns_len + 2 != left {
        return Err(DnsStat::TcpSegmented);
    }
    Ok(Some((next + 2, dns_len)))
}

/// Copies the message into the scratch buffer.
#[inline(always)]
pub fn copy_message<B: LoadBytes>(bytes: &B, s: &mut Scratch, off: u32, len: usize) -> Result<(), DnsStat> {
    if len < 12 {
        return Err(DnsStat::Malformed);
    }
    if len > MSG_MAX - 1 {
        return Err(DnsStat::Malformed);
    }
    // `len` is 12..MSG_MAX here; read back through a volatile load and
    // masked as `((len - 1) & MASK) + 1`, which leaves it as it is, so that
    // the verifier sees a size of 1..=MSG_MAX whatever the compiler proved.
    // SAFETY: reads a local.
    let len = unsafe { core::ptr::read_volatile(&raw const len) };
    let n = ((len.wrapping_sub(1) & MSG_MASK) + 1) as u32;
    if !bytes.load(off, s.msg.as_mut_ptr(), n) {
        return Err(DnsStat::Malformed);
    }
    Ok(())
}

/// The key of a query in the outstanding-query table, as the answer will
/// find it.
#[inline(always)]
pub fn query_key(workload: &[u8; 16], resolver: &[u8; 16], workload_port: u16, txid: u16, proto: u8) -> QueryKey {
    QueryKey {
        workload: *workload,
        resolver: *resolver,
        workload_port_be: workload_port.to_be(),
        txid_be: txid.to_be(),
        proto,
        _pad: [0; 3],
    }
}

/// Whether the agent's lease still runs (see [`egress_common::AgentLease`]),
/// by the coarse clock (the lease is seconds; a tick late is nothing).
#[inline(always)]
pub fn agent_up() -> bool {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    EGV6_AGENT.get(0).is_some_and(|lease| now <= lease.until_ns)
}
