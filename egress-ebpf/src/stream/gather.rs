//! Gathering a flow's first client bytes, in order: a segment's payload is
//! set against what was read by its sequence number. Bytes already read
//! must be the same bytes again (a retransmission); bytes past them are
//! appended; a gap (out of order) is refused. What was read before this
//! segment lives in `STREAMS` and is brought into the scratch's window.

use core::ffi::c_void;
use core::ptr::addr_of_mut;

use aya_ebpf::helpers::{bpf_loop, generated::bpf_probe_read_kernel};
use egress_common::{ConnState, FlowKey, STREAM_WINDOW, StreamBuf};
use egress_ebpf::names::{MASK, WINDOW};

use super::read::{CHUNK, NameScratch, scratch};
use crate::dns::LoadBytes;
use crate::maps::EGV6_STREAMS;
use crate::scratch::{vget, vset};

/// Chunks of one segment's payload handled at most (its first 16 KiB).
const CHUNKS: usize = WINDOW / CHUNK;

/// `v`, in `1..=max` (`max` a power of two), in a form the verifier can
/// follow: `v` is read back through a volatile load, so that the compiler
/// cannot drop the mask on the strength of bounds the verifier does not
/// know, and masked as `((v - 1) & (max - 1)) + 1`, which leaves any `v` in
/// `1..=max` as it is.
#[inline(always)]
fn within(v: u32, max: u32) -> u32 {
    // SAFETY: reads a local.
    let v = unsafe { core::ptr::read_volatile(&raw const v) };
    (v.wrapping_sub(1) & (max - 1)) + 1
}

/// Where a segment stands to what was read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Out of order, or other bytes where bytes were read: drop it.
    Refused,
    /// Only bytes already read, the same again: let it through.
    Old,
    /// New bytes were appended to the window: read it again.
    New,
    /// What was read before is gone (its buffer evicted): the flow's
    /// message cannot be read.
    Lost,
}

/// Sets the segment (`payload` bytes at packet offset `off`, sequence
/// number `seq`) against the flow's reader `st`, gathering new bytes into
/// the scratch's window. On `New`, `st` counts them.
#[inline(always)]
pub fn take<B: LoadBytes>(
    bytes: &B,
    s: &mut NameScratch,
    key: &FlowKey,
    st: &mut ConnState,
    seq: u32,
    off: u32,
    payload: u32,
) -> Taken {
    let skip = st.next_seq.wrapping_sub(seq);
    let read = st.read;
    if (skip as i32) < 0 || skip > read || read as usize > WINDOW {
        // A gap before this segment, or bytes before the stream's start.
        return Taken::Refused;
    }
    if read > 0 && !restore(s, key, read) {
        return Taken::Lost;
    }
    let overlap = skip.min(payload);
    if overlap > 0 && !same(bytes, s, off, read - skip, overlap) {
        return Taken::Refused;
    }
    let new = payload - overlap;
    if new == 0 {
        return Taken::Old;
    }
    let room = STREAM_WINDOW as u32 - read;
    let n = new.min(room);
    if !append(bytes, s, off + overlap, read, n) {
        return Taken::Refused;
    }
    st.read = read + n;
    st.next_seq = st.next_seq.wrapping_add(new);
    Taken::New
}

/// Brings the `read` bytes gathered before into the window.
#[inline(always)]
fn restore(s: &mut NameScratch, key: &FlowKey, read: u32) -> bool {
    let Some(buf) = EGV6_STREAMS.get_ptr(key) else { return false };
    if read == 0 || read as usize > STREAM_WINDOW {
        return read == 0;
    }
    let n = within(read, STREAM_WINDOW as u32);
    // SAFETY: both buffers hold STREAM_WINDOW bytes and n is at most that.
    unsafe { bpf_probe_read_kernel(s.window.as_mut_ptr().cast(), n, buf.cast::<c_void>()) == 0 }
}

/// Keeps the window's bytes for the flow's next segment.
#[inline(always)]
pub fn save(s: &NameScratch, key: &FlowKey) -> bool {
    // SAFETY: the window is a StreamBuf's worth of bytes at the start of
    // the scratch (a map value, as the helper wants).
    let buf = unsafe { &*core::ptr::from_ref(&s.window).cast::<StreamBuf>() };
    EGV6_STREAMS.insert(key, buf, 0).is_ok()
}

/// Forgets the flow's gathered bytes.
#[inline(always)]
pub fn forget(key: &FlowKey) {
    let _ = EGV6_STREAMS.remove(key);
}

/// Loads `n` payload bytes at packet offset `off` into the window at `at`.
#[inline(always)]
fn append<B: LoadBytes>(bytes: &B, s: &mut NameScratch, off: u32, at: u32, n: u32) -> bool {
    let base = s.window.as_mut_ptr();
    for c in 0..CHUNKS as u32 {
        let done = c * CHUNK as u32;
        if done >= n {
            break;
        }
        let len = within((n - done).min(CHUNK as u32), CHUNK as u32);
        let pos = (at + done) as usize & MASK;
        // SAFETY: pos < WINDOW and len <= CHUNK: inside window and slack.
        if !bytes.load(off + done, unsafe { base.add(pos) }, len) {
            return false;
        }
    }
    true
}

/// The comparison's `bpf_loop` step: one byte of `cmp` against the window.
extern "C" fn same_step(index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    if index >= s.cmp_len {
        return 1;
    }
    let i = index as usize & (CHUNK - 1);
    if s.cmp[i] != s.window[(s.cmp_at as usize + i) & MASK] {
        s.cmp_same = 0;
        return 1;
    }
    0
}

/// Whether the `n` payload bytes at packet offset `off` are the bytes read
/// at window offset `at`.
#[inline(always)]
fn same<B: LoadBytes>(bytes: &B, s: &mut NameScratch, off: u32, at: u32, n: u32) -> bool {
    let p: *mut NameScratch = s;
    for c in 0..CHUNKS as u32 {
        let done = c * CHUNK as u32;
        if done >= n {
            break;
        }
        let len = within((n - done).min(CHUNK as u32), CHUNK as u32);
        // SAFETY: `cmp` holds CHUNK bytes and len is at most that; the
        // callback changes the scratch only between the volatile accesses.
        unsafe {
            if !bytes.load(off + done, addr_of_mut!((*p).cmp).cast(), len) {
                return false;
            }
            vset(addr_of_mut!((*p).cmp_at), u64::from(at + done));
            vset(addr_of_mut!((*p).cmp_len), u64::from(len));
            vset(addr_of_mut!((*p).cmp_same), 1);
            bpf_loop(CHUNK as u32, same_step as *mut c_void, core::ptr::null_mut(), 0);
            if vget(addr_of_mut!((*p).cmp_same)) == 0 {
                return false;
            }
        }
    }
    true
}
