//! Counting one frame: exact totals first, then the flow in the active buffer.
//!
//! Hot path: one lookup of the interface slot (an array lookup the verifier
//! inlines, for interface indexes below `IFACE_INDEX_ENTRIES`), one of the
//! totals, one of the flow; an existing flow is updated in place on this
//! CPU's value. Only a new flow is inserted, and a failed insert is counted
//! as not attributed.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, maps::PerCpuHashMap, EbpfContext,
};
use aya_log_ebpf::warn;
use sensor_common::{
    tcp_flags, totals_index, Direction, FlowKey, FlowValue, IFACE_INDEX_ENTRIES, UNKNOWN_IFACE_SLOT,
};

use crate::{
    maps::{CONTROL, FLOWS_A, FLOWS_B, IFACE_INDEX, IFACE_SLOTS, TOTALS},
    parse::{Parsed, L3},
};

#[inline(always)]
pub fn account<C: EbpfContext>(ctx: &C, ifindex: u32, dir: Direction, len: u64, p: &Parsed) {
    let slot = if ifindex < IFACE_INDEX_ENTRIES {
        IFACE_INDEX.get(ifindex).copied()
    } else {
        // SAFETY: map values are valid for the program's run.
        unsafe { IFACE_SLOTS.get(ifindex) }.copied()
    }
    .unwrap_or(UNKNOWN_IFACE_SLOT);
    let Some(t) = TOTALS.get_ptr_mut(totals_index(slot, dir as u8)) else {
        return;
    };
    // SAFETY: a per-CPU value: only this CPU writes it, and softirq context
    // is not preempted by another run of these programs.
    let t = unsafe { &mut *t };
    t.packets += 1;
    t.bytes += len;
    match p.class {
        L3::Ipv4 => t.ipv4 += 1,
        L3::Ipv6 => t.ipv6 += 1,
        L3::NonIp(class) => {
            t.non_ip += 1;
            if let Some(c) = t.ether_class.get_mut(class as usize) {
                *c += 1;
            }
        }
    }
    if p.fragment {
        t.fragments += 1;
    }
    if let Some(reason) = p.malformed {
        if let Some(c) = t.malformed.get_mut(reason as usize) {
            *c += 1;
        }
        return;
    }
    if !p.keyed() {
        return;
    }
    if let Some(c) = t.l4.get_mut(p.l4 as usize) {
        *c += 1;
    }
    let key = FlowKey {
        src_addr: bytes(p.src),
        dst_addr: bytes(p.dst),
        ifindex,
        vlan_id: p.vlan_id,
        src_port: p.src_port,
        dst_port: p.dst_port,
        direction: dir as u8,
        ip_version: p.ip_version,
        protocol: p.protocol,
        flags: p.key_flags,
        _pad: [0; 2],
    };
    let active = CONTROL.get(0).map(|c| c.active).unwrap_or(0);
    let counted = if active == 0 {
        flow(&FLOWS_A, &key, len, p.tcp_flags)
    } else {
        flow(&FLOWS_B, &key, len, p.tcp_flags)
    };
    if !counted {
        t.not_attributed += 1;
        t.not_attributed_bytes += len;
        let n = t.not_attributed;
        // Rate-limited: on the 1st, 1024th, 1048576th... miss of this CPU.
        if n == 1 || n == 1 << 10 || n == 1 << 20 || n == 1 << 30 {
            warn!(
                ctx,
                "flow map full: {} packets not attributed on ifindex {}", n, ifindex
            );
        }
    }
}

/// An address held as words (see `Parsed::src`) as its 16 bytes.
#[inline(always)]
fn bytes(w: [u32; 4]) -> [u8; 16] {
    // SAFETY: same size, and every bit pattern is a valid [u8; 16].
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

/// `EEXIST`, as the map helpers return it negated.
const EEXIST: i32 = 17;

/// Adds the frame to its flow; false when the flow could not be stored.
#[inline(always)]
fn flow(map: &PerCpuHashMap<FlowKey, FlowValue>, key: &FlowKey, len: u64, flags: u8) -> bool {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(v) = map.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of the value; see `account`.
        add(unsafe { &mut *v }, now, len, flags);
        return true;
    }
    // Every field computed from the frame: a value built from
    // `FlowValue::default()` made LLVM zero it with a byte-loop `memset`.
    let f = flags as u32;
    let syn = f & tcp_flags::SYN != 0;
    let ack = f & tcp_flags::ACK != 0;
    let v = FlowValue {
        packets: 1,
        bytes: len,
        first_seen_ns: now,
        last_seen_ns: now,
        syn: u64::from(syn && !ack),
        syn_ack: u64::from(syn && ack),
        fin: u64::from(f & tcp_flags::FIN != 0),
        rst: u64::from(f & tcp_flags::RST != 0),
        tcp_flags: f,
        _pad: 0,
    };
    match map.insert(key, v, BPF_NOEXIST as u64) {
        Ok(()) => return true,
        // Another CPU inserted the same flow between our lookup and insert:
        // count into this CPU's slot of that entry (below).
        Err(e) if e == -EEXIST => {}
        // The map is full (E2BIG): not attributed, without a second
        // lookup, which keeps the flood path cheap.
        Err(_) => return false,
    }
    match map.get_ptr_mut(key) {
        Some(e) => {
            // SAFETY: as above.
            let e = unsafe { &mut *e };
            if e.packets == 0 {
                e.first_seen_ns = now;
            }
            add(e, now, len, flags);
            true
        }
        None => false,
    }
}

#[inline(always)]
fn add(v: &mut FlowValue, now: u64, len: u64, flags: u8) {
    v.packets += 1;
    v.bytes += len;
    v.last_seen_ns = now;
    if flags != 0 {
        let f = flags as u32;
        v.tcp_flags |= f;
        if f & tcp_flags::SYN != 0 {
            if f & tcp_flags::ACK != 0 {
                v.syn_ack += 1;
            } else {
                v.syn += 1;
            }
        }
        if f & tcp_flags::FIN != 0 {
            v.fin += 1;
        }
        if f & tcp_flags::RST != 0 {
            v.rst += 1;
        }
    }
}
