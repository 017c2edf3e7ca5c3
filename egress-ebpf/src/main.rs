//! The egress datapath. Thin entry points over [`judge::judge`]:
//! - `egress_tc`: TC (tcx) ingress of each LAN interface, the default hook;
//! - `egress_xdp`: the same classifier as XDP for native NICs;
//! - `egress_empty`: does nothing; the baseline of benchmarks.
#![no_std]
#![no_main]

mod judge;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use judge::{Action, judge};

/// Bytes made linear before parsing: every header the parser reads.
const PULL_BYTES: u32 = 256;

/// TC ingress of a LAN interface.
#[classifier]
pub fn egress_tc(ctx: TcContext) -> i32 {
    let len = ctx.len();
    let want = if len < PULL_BYTES { len } else { PULL_BYTES };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    // SAFETY: the context's skb pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match judge(ctx.data(), ctx.data_end(), len, ifindex) {
        // TCX_NEXT: let later programs and the stack have it.
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT,
    }
}

/// XDP on a LAN interface.
#[xdp]
pub fn egress_xdp(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    // SAFETY: the context's xdp_md pointer is valid for the program's run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match judge(ctx.data(), ctx.data_end(), len, ifindex) {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

/// Baseline for benchmarks: the cost of running a TC program at all.
#[classifier]
pub fn egress_empty(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
