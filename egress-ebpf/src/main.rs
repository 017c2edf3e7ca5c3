//! The egress datapath. Thin entry points over [`judge::judge`]:
//! - `egress_tc`: TC (tcx) ingress of each LAN interface, the default hook;
//! - `egress_dns`: TC egress of each LAN interface, learns from DNS answers;
//! - `egress_xdp`: the same classifier as XDP for native NICs;
//! - `egress_empty`: does nothing; the baseline of benchmarks.
// Built for the bpf target by the agent's build script; a host build (clippy,
// `cargo build --workspace`) only checks that it compiles.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// What the verifier makes this code be:
#![allow(
    clippy::inline_always,
    reason = "every function is inlined into its program: the verifier follows each program whole, and calls that \
              are not `bpf_loop` callbacks would add frames to the 512-byte stack"
)]
#![allow(
    clippy::cast_ptr_alignment,
    reason = "scratch and ring fields are copied as 8-byte words (no 16-byte temporaries on the stack); the \
              scratch and ring entries are 8-aligned"
)]
#![allow(
    clippy::needless_pass_by_value,
    reason = "the `#[classifier]` and `#[xdp]` macros hand each program its context by value"
)]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference: by value they would be copied onto the stack first"
)]

mod budget;
mod classify;
mod dns;
mod events;
mod flowcache;
mod hosts;
mod judge;
mod maps;
mod parse;
mod scratch;
mod stream;
mod turn;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::{bpf_redirect, bpf_skb_load_bytes, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use dns::{IdSwap, LoadBytes};
use egress_common::DnsStat;

/// skb mark of REFUSED answers the ingress program turned around, so that
/// the egress program does not take them for the resolver's answers.
const MARK_REFUSED: u32 = 0x6567_5246;
/// Marks the reset of a denied flow's server side, cloned back into the
/// ingress of the LAN interface it came in on: `egress_tc` lets it go on to
/// the server through the gateway's routing and NAT. (A workload cannot
/// send it: a packet's mark is cleared when it crosses into the gateway.)
const MARK_SERVER_RESET: u32 = 0x6567_5253;
use egress_common::{TAIL_NAMES, TAIL_QUERY, TAIL_READ, TAIL_SECOND_ANSWER};
use judge::{Action, judge, learn, query};
use maps::{EGV6_TAILS_TC, EGV6_TAILS_XDP};

struct Skb<'a>(&'a TcContext);

impl LoadBytes for Skb<'_> {
    #[inline(always)]
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        // SAFETY: dst has at least len bytes (callers bound len to their buffer).
        unsafe { bpf_skb_load_bytes(self.0.skb.skb as *const _, offset, dst.cast(), len) == 0 }
    }
}

struct XdpBytes<'a>(&'a XdpContext);

impl LoadBytes for XdpBytes<'_> {
    #[inline(always)]
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        // SAFETY: as above.
        unsafe { bpf_xdp_load_bytes(self.0.ctx, offset, dst.cast(), len) == 0 }
    }
}

/// Bytes made linear before parsing: every header the parser reads.
const PULL_BYTES: u32 = 256;

/// Pulls the first [`PULL_BYTES`] into the linear area where
/// [`judge::must_pull`] says the program needs them.
#[inline(always)]
fn pull_if_needed(ctx: &TcContext, len: u32) {
    if judge::must_pull(ctx.data(), ctx.data_end(), len) {
        let _ = ctx.pull_data(if len < PULL_BYTES { len } else { PULL_BYTES });
    }
}

/// TC ingress of a LAN interface.
#[classifier]
pub fn egress_tc(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).mark } == MARK_SERVER_RESET {
        // Our own reset of a denied flow's server side (`reset_server_tc`).
        ctx.set_mark(0);
        return TC_ACT_UNSPEC;
    }
    let len = ctx.len();
    pull_if_needed(&ctx, len);
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let action = judge(ctx.skb.skb.cast(), ctx.data(), ctx.data_end(), len, ifindex);
    tc_verdict(&ctx, action)
}

#[inline(always)]
fn tc_verdict(ctx: &TcContext, action: Action) -> i32 {
    match action {
        // TCX_NEXT: let later programs and the stack have it.
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT,
        Action::Query(query_filter) => {
            // SAFETY: tail call into the query program; returns only if absent.
            unsafe { EGV6_TAILS_TC.tail_call(ctx, TAIL_QUERY) };
            // The tail call failed: the query went unfiltered.
            if judge::tail_call_failed(query_filter) { TC_ACT_SHOT } else { TC_ACT_UNSPEC }
        }
        Action::Refuse => refuse_tc(ctx),
        Action::Reset(at) => reset_tc(ctx, at),
        Action::Named => {
            // SAFETY: tail call into the names program; returns only if absent.
            unsafe { EGV6_TAILS_TC.tail_call(ctx, TAIL_NAMES) };
            // No reader: the flow's name cannot be verified.
            TC_ACT_SHOT
        }
        Action::Read => {
            // SAFETY: tail call into the read program; returns only if absent.
            unsafe { EGV6_TAILS_TC.tail_call(ctx, TAIL_READ) };
            TC_ACT_SHOT
        }
        Action::Record(swap, second) => {
            if swap_id_tc(ctx, &swap) && (!second.is_some() || swap_id_tc(ctx, &second)) {
                TC_ACT_UNSPEC
            } else {
                TC_ACT_SHOT
            }
        }
    }
}

/// Writes a swapped transaction id into the packet; the checksum helper
/// handles partially-checksummed packets (and leaves a zero UDP checksum,
/// none, as it is).
#[inline(always)]
fn swap_id_tc(ctx: &TcContext, swap: &IdSwap) -> bool {
    let flags = if swap.udp { BPF_F_MARK_MANGLED_0 | 2 } else { 2 };
    let (old, new) = (u64::from(swap.old.to_be()), u64::from(swap.new.to_be()));
    ctx.store(usize::from(swap.id_off), &swap.new.to_be_bytes(), 0).is_ok()
        && ctx.l4_csum_replace(usize::from(swap.csum_off), old, new, u64::from(flags)).is_ok()
}

/// Writes a swapped transaction id into an XDP frame, the checksum updated
/// by hand; through the helpers, which take any offset in the frame.
#[inline(always)]
fn swap_id_xdp(ctx: &XdpContext, swap: &IdSwap) -> bool {
    let (id_off, csum_off) = (u32::from(swap.id_off), u32::from(swap.csum_off));
    let mut csum = [0u8; 2];
    if !XdpBytes(ctx).load(csum_off, csum.as_mut_ptr(), 2) {
        return false;
    }
    let csum = u16::from_be_bytes(csum);
    let csum = if swap.udp {
        turn::csum_fold_words(csum, &[(swap.old, swap.new)])
    } else {
        turn::csum_replace16(csum, swap.old, swap.new)
    };
    let (mut id, mut csum) = (swap.new.to_be_bytes(), csum.to_be_bytes());
    // SAFETY: both buffers hold the 2 bytes stored.
    unsafe {
        bpf_xdp_store_bytes(ctx.ctx, id_off, id.as_mut_ptr().cast(), 2) == 0
            && bpf_xdp_store_bytes(ctx.ctx, csum_off, csum.as_mut_ptr().cast(), 2) == 0
    }
}

/// Tail-called by `egress_tc_names` with a segment whose bytes the stream
/// reader must gather, or a flow to judge by its name.
#[classifier]
pub fn egress_tc_read(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let action = judge::judge_read(&Skb(&ctx), ctx.len(), ifindex);
    tc_verdict(&ctx, action)
}

/// Tail-called by `egress_tc` for a packet of a flow whose name must be
/// read: judged again, with the stream reader.
#[classifier]
pub fn egress_tc_names(ctx: TcContext) -> i32 {
    let len = ctx.len();
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let action = judge::judge_names(ctx.skb.skb.cast(), ctx.data(), ctx.data_end(), len, ifindex);
    tc_verdict(&ctx, action)
}

/// Turns a segment denied by its flow's name around into a reset of the
/// workload's side, back out of the interface it came in on.
#[inline(always)]
fn reset_tc(ctx: &TcContext, at: turn::ResetAt) -> i32 {
    reset_server_tc(ctx);
    let Some(r) = turn::reset_in_place(ctx.data(), ctx.data_end(), at) else {
        return TC_ACT_SHOT;
    };
    for (old, new) in r.words {
        if ctx.l4_csum_replace(r.csum_off as usize, u64::from(old.to_be()), u64::from(new.to_be()), 2).is_err() {
            return TC_ACT_SHOT;
        }
    }
    turn_back_tc(ctx)
}

/// Resets the server's side of a flow denied by its name, best effort: the
/// segment made a reset as it stands ([`turn::reset_flags`]) and a copy of
/// it sent back into this interface's ingress, marked, so that it reaches
/// the server as the flow's other packets did (routed, translated). The
/// server frees the connection at once instead of waiting out its timers.
#[inline(always)]
fn reset_server_tc(ctx: &TcContext) {
    let Some(r) = turn::reset_flags(ctx.data(), ctx.data_end()) else { return };
    let (old, new) = (u64::from(r.old.to_be()), u64::from(r.new.to_be()));
    if ctx.l4_csum_replace(r.csum_off as usize, old, new, 2).is_err() {
        return;
    }
    ctx.set_mark(MARK_SERVER_RESET);
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let _ = ctx.clone_redirect(ifindex, u64::from(BPF_F_INGRESS));
    ctx.set_mark(0);
}

/// Sends the turned-around packet back out of the interface it came in on,
/// marked so that the egress program does not take it for upstream's.
#[inline(always)]
fn turn_back_tc(ctx: &TcContext) -> i32 {
    ctx.set_mark(MARK_REFUSED);
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: helper without memory arguments.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// Answers a refused query with REFUSED, back out of the interface it came
/// in on; the checksum helper handles partially-checksummed packets.
#[inline(always)]
fn refuse_tc(ctx: &TcContext) -> i32 {
    let Some(r) = dns::refuse_in_place(ctx.data(), ctx.data_end()) else {
        return TC_ACT_SHOT;
    };
    for (old, new) in r.words {
        let flags = u64::from(BPF_F_MARK_MANGLED_0 | 2);
        if ctx.l4_csum_replace(r.csum_off as usize, u64::from(old.to_be()), u64::from(new.to_be()), flags).is_err() {
            return TC_ACT_SHOT;
        }
    }
    turn_back_tc(ctx)
}

/// Tail-called by `egress_tc` for permitted DNS to a resolver: records the
/// query and applies the query filter.
#[classifier]
pub fn egress_tc_query(ctx: TcContext) -> i32 {
    let action = query(&Skb(&ctx), ctx.data(), ctx.data_end());
    tc_verdict(&ctx, action)
}

/// TC egress of a LAN interface: learns from DNS answers before they reach
/// the workload, and gives an answer to a recorded query the workload's own
/// transaction id back. Never drops.
#[classifier]
pub fn egress_dns(ctx: TcContext) -> i32 {
    // SAFETY: the context's skb pointer is valid for the program's run.
    if unsafe { (*ctx.skb.skb).mark } == MARK_REFUSED {
        // Our own REFUSED answer on its way back: not from the resolver.
        ctx.set_mark(0);
        return TC_ACT_UNSPEC;
    }
    // Nearly every packet towards a workload is not DNS: let it go at a
    // glance, before any map lookup, pull or full parse.
    if parse::quick_ports(&parse::Cursor::new(ctx.data(), ctx.data_end())).is_some_and(|(sport, _)| sport != 53) {
        return TC_ACT_UNSPEC;
    }
    // From port 53 but in through a LAN interface: a workload forging a
    // resolver's answer, hairpinned by the gateway. Real answers come from
    // upstream or from the gateway itself (ingress_ifindex 0).
    // SAFETY: the context's skb pointer is valid for the program's run.
    let came_in = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: a plain lookup; the value is not kept.
    if came_in != 0 && unsafe { maps::EGV6_LAN_IFS.get(&came_in) }.is_some() {
        dns::stat(DnsStat::FromLan);
        return TC_ACT_UNSPEC;
    }
    let len = ctx.len();
    pull_if_needed(&ctx, len);
    let (swap, more, taught) = learn(&Skb(&ctx), ctx.data(), ctx.data_end());
    if taught {
        // The asker's host: the frame's destination, by the gateway's own
        // neighbour table, on this interface.
        // SAFETY: the context's skb pointer is valid for the program's run.
        let ifindex = unsafe { (*ctx.skb.skb).ifindex };
        let mac = parse::Cursor::new(ctx.data(), ctx.data_end()).read_or(0, [0u8; 6]).1;
        hosts::note_asker(ifindex, mac);
    }
    if let Some(swap) = swap {
        // Should the write fail, the answer goes on with the gateway's id,
        // which the workload does not take for an answer to its query.
        let _ = swap_id_tc(&ctx, &swap);
    }
    if more {
        // SAFETY: tail call into the second-answer program; returns only if absent.
        unsafe { EGV6_TAILS_TC.tail_call(&ctx, TAIL_SECOND_ANSWER) };
    }
    TC_ACT_UNSPEC
}

/// Tail-called by `egress_dns` for a TCP segment from a resolver that
/// carries a second answer after the first: learns from it and gives it its
/// workload's id back. Never drops.
#[classifier]
pub fn egress_dns_second(ctx: TcContext) -> i32 {
    let swap = judge::learn_second(&Skb(&ctx), ctx.data(), ctx.data_end());
    if swap.is_some() {
        let _ = swap_id_tc(&ctx, &swap);
    }
    TC_ACT_UNSPEC
}

/// XDP on a LAN interface.
#[xdp]
pub fn egress_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    // SAFETY: the context's xdp_md pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let action = judge(ctx.ctx.cast(), ctx.data(), ctx.data_end(), len, ifindex);
    xdp_verdict(&ctx, action)
}

#[inline(always)]
fn xdp_verdict(ctx: &XdpContext, action: Action) -> u32 {
    match action {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
        Action::Query(query_filter) => {
            // SAFETY: tail call into the query program; returns only if absent.
            unsafe { EGV6_TAILS_XDP.tail_call(ctx, TAIL_QUERY) };
            // The tail call failed: the query went unfiltered.
            if judge::tail_call_failed(query_filter) { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
        }
        Action::Refuse => match dns::refuse_in_place(ctx.data(), ctx.data_end()) {
            Some(r) => xdp_fix_csum(ctx, r.csum_off, &r.words, true),
            None => xdp_action::XDP_DROP,
        },
        Action::Reset(at) => match turn::reset_in_place(ctx.data(), ctx.data_end(), at) {
            Some(r) => xdp_fix_csum(ctx, r.csum_off, &r.words, false),
            None => xdp_action::XDP_DROP,
        },
        Action::Named => {
            // SAFETY: tail call into the names program; returns only if absent.
            unsafe { EGV6_TAILS_XDP.tail_call(ctx, TAIL_NAMES) };
            xdp_action::XDP_DROP
        }
        Action::Read => {
            // SAFETY: tail call into the read program; returns only if absent.
            unsafe { EGV6_TAILS_XDP.tail_call(ctx, TAIL_READ) };
            xdp_action::XDP_DROP
        }
        Action::Record(swap, second) => {
            if swap_id_xdp(ctx, &swap) && (!second.is_some() || swap_id_xdp(ctx, &second)) {
                xdp_action::XDP_PASS
            } else {
                xdp_action::XDP_DROP
            }
        }
    }
}

/// Tail-called by `egress_xdp_names`, as `egress_tc_read`.
#[xdp]
pub fn egress_xdp_read(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    // SAFETY: the context's xdp_md pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let action = judge::judge_read(&XdpBytes(&ctx), len, ifindex);
    xdp_verdict(&ctx, action)
}

/// Tail-called by `egress_xdp` for a packet of a flow whose name must be read.
#[xdp]
pub fn egress_xdp_names(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    // SAFETY: the context's xdp_md pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let action = judge::judge_names(ctx.ctx.cast(), ctx.data(), ctx.data_end(), len, ifindex);
    xdp_verdict(&ctx, action)
}

/// Updates the L4 checksum at `csum_off` for the changed `words` of a
/// packet turned around (`udp`: a zero checksum, none, stays zero), and
/// sends it back out (`XDP_TX`).
#[inline(always)]
fn xdp_fix_csum(ctx: &XdpContext, csum_off: u32, words: &[(u16, u16)], udp: bool) -> u32 {
    let cur = parse::Cursor::new(ctx.data(), ctx.data_end());
    let (ok, csum) = cur.read_or(csum_off as usize, [0u8; 2]);
    let csum = u16::from_be_bytes(csum);
    let csum = if udp {
        turn::csum_fold_words(csum, words)
    } else {
        words.iter().fold(csum, |c, (old, new)| turn::csum_replace16(c, *old, *new))
    };
    if ok && cur.write(csum_off as usize, csum.to_be_bytes()) { xdp_action::XDP_TX } else { xdp_action::XDP_DROP }
}

/// Tail-called by `egress_xdp` for permitted DNS to a resolver.
#[xdp]
pub fn egress_xdp_query(ctx: XdpContext) -> u32 {
    let action = query(&XdpBytes(&ctx), ctx.data(), ctx.data_end());
    xdp_verdict(&ctx, action)
}

/// Baseline for benchmarks: the cost of running a TC program at all.
#[classifier]
pub fn egress_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
