//! Reading a name from the gathered bytes: the pure parsers of
//! [`egress_ebpf::names`], one step per `bpf_loop` callback, over the
//! per-CPU [`NameScratch`] (a callback reaches it through the map).

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::helpers::bpf_loop;
use egress_common::{ConnState, NAME_BUF, NAME_SOURCE_HOST, NAME_SOURCE_NONE, NAME_SOURCE_SNI, Reason};
use egress_ebpf::names::http::{HTTP_BATCHES, HttpWalk};
use egress_ebpf::names::tls::{TLS_STEPS, TlsWalk};
use egress_ebpf::names::{Name, NameResult, WINDOW, Window};

use crate::maps::EGV6_NSCRATCH;
use crate::scratch::{vget, vset};

/// Bytes one load or comparison moves at most.
pub const CHUNK: usize = 2048;

/// Per-CPU working memory of the name reader (too large for the stack).
#[repr(C)]
pub struct NameScratch {
    /// The flow's first client bytes, in order (`len` of them).
    pub window: Window,
    /// Room past the window's end, so that a load of up to [`CHUNK`] bytes
    /// at any offset inside the window stays inside the scratch.
    pub slack: [u8; CHUNK],
    /// Bytes of a retransmitted segment being compared with the window.
    pub cmp: [u8; CHUNK],
    pub name: Name,
    pub tls: TlsWalk,
    pub http: HttpWalk,
    /// Bytes in `window`.
    pub len: u64,
    /// The walk's answer (a [`NameResult`] code).
    pub result: u64,
    /// A comparison: window offset, bytes, and whether all were equal.
    pub cmp_at: u64,
    pub cmp_len: u64,
    pub cmp_same: u64,
    /// A connection state being built before its insert (no 272-byte
    /// value on the stack).
    pub conn: ConnState,
    /// The packet being judged, passed through here (see [`super::launder`]).
    pub pkt: crate::parse::Packet,
    /// What the names program hands the read program.
    pub hand: super::Handoff,
    /// What the judge hands the names program.
    pub early: super::Early,
}

/// This CPU's scratch.
#[inline(always)]
pub fn scratch() -> Option<&'static mut NameScratch> {
    // SAFETY: per-CPU scratch, used by one program run at a time.
    EGV6_NSCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

extern "C" fn tls_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let len = (s.len as usize).min(WINDOW);
    match s.tls.step(&s.window, len, &mut s.name) {
        Some(r) => {
            s.result = r as u64;
            1
        }
        None => 0,
    }
}

extern "C" fn http_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(s) = scratch() else { return 1 };
    let len = (s.len as usize).min(WINDOW);
    match s.http.steps(&s.window, len, &mut s.name) {
        Some(r) => {
            s.result = r as u64;
            1
        }
        None => 0,
    }
}

#[inline(always)]
fn result_of(code: u64) -> NameResult {
    match code {
        1 => NameResult::Name,
        2 => NameResult::NeedMore,
        4 => NameResult::NotTls,
        5 => NameResult::NotHttp,
        _ => NameResult::NoName,
    }
}

/// What the first `len` bytes in the window say: the name (in `s.name`)
/// and its source, `None` while the message is not whole.
#[inline(always)]
pub fn read_name(s: &mut NameScratch, len: u32) -> Option<(Reason, u8)> {
    let p: *mut NameScratch = s;
    // SAFETY: `p` is this CPU's scratch; the callbacks change it between
    // the volatile accesses, never during them.
    unsafe {
        vset(addr_of_mut!((*p).len), u64::from(len));
        vset(addr_of_mut!((*p).result), NameResult::NoName as u64);
        vset(addr_of_mut!((*p).name.len), 0);
        let tls = vget(addr_of!((*p).window[0])) == 0x16;
        // Plain stores before the calls: `bpf_loop` is opaque, and the
        // scratch came from a helper, so none is moved past it.
        if tls {
            (*p).tls.reset();
            bpf_loop(TLS_STEPS as u32, tls_step as *mut c_void, core::ptr::null_mut(), 0);
        } else {
            (*p).http.reset();
            bpf_loop(HTTP_BATCHES as u32, http_step as *mut c_void, core::ptr::null_mut(), 0);
        }
        let source = if tls { NAME_SOURCE_SNI } else { NAME_SOURCE_HOST };
        // Without a name: missing when the message named no host at all
        // (no `server_name`, no `Host`, or neither TLS nor HTTP);
        // unreadable when it named one in a way that cannot be trusted
        // (two of them, contradictory lengths) or does not fit the window.
        let named_some = if tls { vget(addr_of!((*p).tls.sni)) } else { vget(addr_of!((*p).http.hosts)) };
        match result_of(vget(addr_of!((*p).result))) {
            NameResult::NeedMore => None,
            NameResult::Name => Some((Reason::NameRead, source)),
            NameResult::NoName if named_some != 0 || len as usize >= WINDOW => {
                Some((Reason::NameUnreadable, NAME_SOURCE_NONE))
            }
            _ => Some((Reason::NameMissing, NAME_SOURCE_NONE)),
        }
    }
}

/// Copies the name just read into `conn` (a word at a time), with its
/// source and reason.
#[inline(always)]
pub fn keep_name(s: &NameScratch, conn: *mut ConnState, reason: Reason, source: u8) {
    let len = if reason == Reason::NameRead { s.name.len.min(NAME_BUF - 3) } else { 0 };
    // SAFETY: `conn` points at a map value or the scratch's `conn`; both
    // buffers are NAME_BUF bytes, 8-aligned.
    unsafe {
        let from = addr_of!(s.name.bytes).cast::<u64>();
        let to = addr_of_mut!((*conn).name).cast::<u64>();
        for i in 0..NAME_BUF / 8 {
            to.add(i).write_volatile(from.add(i).read_volatile());
        }
        addr_of_mut!((*conn).name_len).write(len as u8);
        addr_of_mut!((*conn).source).write(source);
        addr_of_mut!((*conn).reason).write(reason as u8);
    }
}
