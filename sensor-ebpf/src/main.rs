//! The sensor's kernel side: an XDP program counts ingress frames and a TC
//! classifier counts egress frames, per flow and per interface.
//!
//! Both fail open: whatever happens (a malformed frame, a full flow map), the
//! frame is counted in the exact totals and passes unchanged.
//!
//! Layout:
//! - `main.rs`: the entry points;
//! - [`parse`]: the header walk both programs share;
//! - [`count`]: updating totals and the active flow buffer;
//! - [`maps`]: every map.
#![no_std]
#![no_main]

mod bench;
mod count;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK},
    helpers::generated::bpf_skb_pull_data,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use sensor_common::Direction;

/// Headers the TC program wants in the linear part of an skb.
const PULL_LEN: u32 = 256;

#[xdp]
pub fn sensor_xdp(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    let len = (end - start) as u64;
    let parsed = parse::parse(start, end, end - start, 0);
    count::account(
        &ctx,
        ctx.ingress_ifindex() as u32,
        Direction::Ingress,
        len,
        &parsed,
    );
    xdp_action::XDP_PASS
}

#[classifier]
pub fn sensor_tc(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the program's run.
    let (skb_len, ifindex, vlan_present, vlan_tci) = unsafe {
        let skb = &*ctx.skb.skb;
        (skb.len, skb.ifindex, skb.vlan_present, skb.vlan_tci)
    };
    let mut start = ctx.data();
    let mut end = ctx.data_end();
    // Headers of an egress skb may sit in paged fragments; make the first
    // bytes linear so the walk sees them (rare: the stack builds headers in
    // the linear part).
    let want = if skb_len < PULL_LEN {
        skb_len
    } else {
        PULL_LEN
    };
    if ((end - start) as u32) < want {
        // SAFETY: a valid skb pointer; failure leaves the skb as it was.
        unsafe { bpf_skb_pull_data(ctx.skb.skb, want) };
        start = ctx.data();
        end = ctx.data_end();
    }
    // An offloaded VLAN tag is not in the data: it still counts as the
    // outermost tag and as 4 bytes on the wire.
    let tag_outside = vlan_present != 0;
    let mut parsed = parse::parse(start, end, skb_len as usize, tag_outside as u8);
    let mut len = skb_len as u64;
    if tag_outside {
        len += 4;
        parsed.vlan_id = (vlan_tci & 0x0fff) as u16;
    }
    count::account(&ctx, ifindex, Direction::Egress, len, &parsed);
    TC_ACT_OK
}

/// The benchmark's baseline: the cheapest possible XDP program.
#[xdp]
pub fn sensor_xdp_stub(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
