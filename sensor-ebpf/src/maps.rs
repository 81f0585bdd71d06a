//! Every map the programs use, declared in one place. Names and layouts come
//! from `sensor-common`; the agent may resize the flow buffers at load.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use sensor_common::{
    Control, FlowKey, FlowValue, Totals, DEFAULT_FLOW_MAP_ENTRIES, IFACE_INDEX_ENTRIES,
    MAX_IFACE_SLOTS, TOTALS_ENTRIES,
};

/// Flow buffer 0. Preallocated: an insert into a map that is not full
/// never fails (the kernel's on-demand element allocator can fail for a
/// moment under a burst of new flows in softirq context), and a full map
/// fails fast. Memory is fixed at load: entries x (key + value on every
/// possible CPU); size it with `--flow-map-entries`.
#[map(name = "FLOWS_A")]
pub static FLOWS_A: PerCpuHashMap<FlowKey, FlowValue> =
    PerCpuHashMap::with_max_entries(DEFAULT_FLOW_MAP_ENTRIES, 0);

/// Flow buffer 1.
#[map(name = "FLOWS_B")]
pub static FLOWS_B: PerCpuHashMap<FlowKey, FlowValue> =
    PerCpuHashMap::with_max_entries(DEFAULT_FLOW_MAP_ENTRIES, 0);

/// Exact counters per interface slot and direction.
#[map(name = "TOTALS")]
pub static TOTALS: PerCpuArray<Totals> = PerCpuArray::with_max_entries(TOTALS_ENTRIES, 0);

/// Interface index -> slot, written by the agent when it attaches.
#[map(name = "IFACE_SLOTS")]
pub static IFACE_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IFACE_SLOTS, 0);

/// Interface index -> slot for small indexes (the fast path of
/// `IFACE_SLOTS`), written by the agent when it attaches.
#[map(name = "IFACE_INDEX")]
pub static IFACE_INDEX: Array<u32> = Array::with_max_entries(IFACE_INDEX_ENTRIES, 0);

/// Which flow buffer is active.
#[map(name = "CONTROL")]
pub static CONTROL: Array<Control> = Array::with_max_entries(1, 0);
