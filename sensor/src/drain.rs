//! Double-buffered, loss-free draining of the kernel maps.
//!
//! The programs write the flow buffer that [`Control::active`] names. A drain:
//!
//! 1. flips `active` to the other buffer and notes the time of the flip;
//! 2. waits on an [`RcuBarrier`]: every program run that could still have read
//!    the old flag has finished, so the retired buffer is frozen;
//! 3. reads and deletes every entry of the retired buffer with
//!    `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, summing the per-CPU slots (large
//!    buffers: several threads over disjoint bucket ranges);
//! 4. reads the cumulative per-interface totals.
//!
//! No increment can be lost: an increment lands either in the retired
//! buffer before the barrier (and is read in step 3) or in the active buffer
//! (and is read by the next drain). Nothing writes the retired buffer while
//! it is read and cleared.
//!
//! In persistent mode ([`Drainer::set_two_phase`]) step 3 only reads: the
//! keys are kept until the agent has journaled what it read, and
//! [`Drainer::complete`] deletes them then (see [`crate::persist`]).
//! [`Drainer::recover`] resumes from a journal: it clears a retired buffer
//! that was already applied, or makes the next drain read the retired
//! buffer without flipping when it was not.

use std::{
    os::fd::AsFd,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    Ebpf,
};
use sensor_common::{
    totals_index, Control, Direction, FlowKey, FlowValue, Totals, MAP_CONTROL, MAP_FLOWS_A,
    MAP_FLOWS_B, MAP_TOTALS,
};

use crate::{
    bpf_sys::{self, RcuBarrier},
    loader::SlotTable,
    model::{merge_totals, merge_value, FlowDelta, IfaceTotals, Interval, KernelStats},
};

/// Entries requested per batch syscall.
const BATCH: u32 = 4096;

/// Errors of a drain.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the object has no map {0}; the binary and object disagree, rebuild")]
    MissingMap(&'static str),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Moves the kernel's per-flow deltas and totals into [`Interval`]s.
pub struct Drainer {
    flows: [MapData; 2],
    totals: PerCpuArray<MapData, Totals>,
    control: Array<MapData, Control>,
    barrier: RcuBarrier,
    active: u32,
    slots: SlotTable,
    ncpus: usize,
    last_flip_ns: u64,
    capacity: u32,
    /// Persistent mode: read, then delete in [`Drainer::complete`].
    two_phase: bool,
    /// Buffer and packed keys read by the last drain, not yet deleted.
    pending: Option<(usize, Vec<u8>)>,
    /// The next drain reads the retired buffer without flipping first.
    skip_flip: bool,
    /// Entries of the last drain: the next one's first allocation.
    last_len: usize,
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DrainError> {
    ebpf.take_map(name).ok_or(DrainError::MissingMap(name))
}

fn map_data(map: aya::maps::Map, name: &'static str) -> Result<MapData, DrainError> {
    use aya::maps::Map;
    match map {
        Map::PerCpuHashMap(m) => Ok(m),
        _ => Err(DrainError::MissingMap(name)),
    }
}

/// Buffers with at least this many hash buckets are read by several
/// threads at once.
const PARALLEL_MIN_BUCKETS: u32 = 1 << 16;
/// Most threads one drain uses.
const MAX_DRAIN_THREADS: u32 = 4;

/// Threads for reading a buffer of `buckets` buckets: up to one per CPU
/// (at most [`MAX_DRAIN_THREADS`]) for large buffers, else one. The
/// kernel's batch read costs about 0.5 us per entry here (a copy to user
/// memory per bucket), so a 1M-flow buffer takes over half a second on one
/// thread.
fn drain_threads(buckets: u32) -> u32 {
    if buckets < PARALLEL_MIN_BUCKETS {
        return 1;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    cpus.clamp(1, MAX_DRAIN_THREADS)
}

/// Adds a batch of entries (keys and every CPU's value) to `out`, summed
/// over CPUs; entries without packets are left out.
fn push_entries(keys: &[u8], values: &[u8], value_bytes: usize, out: &mut Vec<FlowDelta>) {
    const KEY: usize = std::mem::size_of::<FlowKey>();
    const VALUE: usize = std::mem::size_of::<FlowValue>();
    for (k, v) in keys.chunks_exact(KEY).zip(values.chunks_exact(value_bytes)) {
        // SAFETY: FlowKey is Pod and the chunk holds exactly its bytes;
        // read_unaligned makes no alignment assumption.
        let key: FlowKey = unsafe { std::ptr::read_unaligned(k.as_ptr().cast()) };
        let mut value = FlowValue::default();
        for cpu in v.chunks_exact(VALUE) {
            // SAFETY: as above, for one CPU's FlowValue.
            let cv: FlowValue = unsafe { std::ptr::read_unaligned(cpu.as_ptr().cast()) };
            merge_value(&mut value, &cv);
        }
        if value.packets > 0 {
            out.push(FlowDelta { key, value });
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Drainer {
    /// Takes the flow, totals and control maps out of a loaded object.
    pub fn new(ebpf: &mut Ebpf, slots: SlotTable, capacity: u32) -> Result<Drainer, DrainError> {
        let a = map_data(take(ebpf, MAP_FLOWS_A)?, MAP_FLOWS_A)?;
        let b = map_data(take(ebpf, MAP_FLOWS_B)?, MAP_FLOWS_B)?;
        let totals =
            PerCpuArray::try_from(take(ebpf, MAP_TOTALS)?).map_err(|source| DrainError::Map {
                map: MAP_TOTALS,
                source,
            })?;
        let control: Array<MapData, Control> =
            Array::try_from(take(ebpf, MAP_CONTROL)?).map_err(|source| DrainError::Map {
                map: MAP_CONTROL,
                source,
            })?;
        let active = control.get(&0, 0).map(|c| c.active & 1).unwrap_or(0);
        let barrier = RcuBarrier::new().map_err(|source| DrainError::Sys {
            what: "creating the RCU barrier maps",
            source,
        })?;
        let ncpus = bpf_sys::possible_cpus().map_err(|source| DrainError::Sys {
            what: "reading /sys/devices/system/cpu/possible",
            source,
        })?;
        Ok(Drainer {
            flows: [a, b],
            totals,
            control,
            barrier,
            active,
            slots,
            ncpus,
            last_flip_ns: monotonic_ns(),
            capacity,
            two_phase: false,
            pending: None,
            skip_flip: false,
            last_len: 0,
        })
    }

    /// Persistent mode: a drain reads without deleting; call
    /// [`Drainer::complete`] once what it read is journaled.
    pub fn set_two_phase(&mut self, on: bool) {
        self.two_phase = on;
    }

    /// The buffer the programs write now.
    pub fn active(&self) -> u32 {
        self.active
    }

    /// Monotonic time of the latest flip.
    pub fn last_flip_ns(&self) -> u64 {
        self.last_flip_ns
    }

    /// Resumes from a journal whose last frame saw `active_after` as the
    /// active buffer and flipped at `last_flip_ns`. Returns the entries
    /// of an already applied retired buffer that were deleted.
    pub fn recover(&mut self, active_after: u32, last_flip_ns: u64) -> Result<u64, DrainError> {
        self.last_flip_ns = last_flip_ns;
        if self.active == active_after & 1 {
            // Applied but not (entirely) cleared before the agent stopped.
            let retired = (self.active ^ 1) as usize;
            let fd = self.flows[retired].fd().as_fd();
            const KEY: usize = std::mem::size_of::<FlowKey>();
            const VALUE: usize = std::mem::size_of::<FlowValue>();
            bpf_sys::lookup_and_delete_batch(fd, KEY, VALUE * self.ncpus, BATCH, |_, _| {}).map_err(
                |source| DrainError::Sys {
                    what: "clearing the already journaled flow buffer",
                    source,
                },
            )
        } else {
            // Flipped after the last frame: the retired buffer is unread.
            self.skip_flip = true;
            Ok(0)
        }
    }

    /// Deletes what the last two-phase drain read.
    pub fn complete(&mut self) -> Result<u64, DrainError> {
        let Some((which, keys)) = self.pending.take() else {
            return Ok(0);
        };
        let fd = self.flows[which].fd().as_fd();
        bpf_sys::delete_batch(fd, std::mem::size_of::<FlowKey>(), &keys).map_err(|source| {
            DrainError::Sys {
                what: "BPF_MAP_DELETE_BATCH on the retired flow buffer",
                source,
            }
        })
    }

    /// Flips the flow buffers, waits for in-flight programs, reads and
    /// clears the retired buffer, and reads the totals.
    pub fn drain(&mut self) -> Result<Interval, DrainError> {
        let started = Instant::now();
        // A two-phase drain whose keys were never deleted (its journal
        // frame failed): delete them now, before that buffer is reused.
        if self.pending.is_some() {
            self.complete()?;
        }
        if !std::mem::take(&mut self.skip_flip) {
            let next = self.active ^ 1;
            self.control
                .set(
                    0,
                    Control {
                        active: next,
                        _pad: 0,
                    },
                    0,
                )
                .map_err(|source| DrainError::Map {
                    map: MAP_CONTROL,
                    source,
                })?;
            self.active = next;
        }
        let retired = self.active ^ 1;
        let flip_ns = monotonic_ns();
        let flip_unix_ns = unix_ns();
        self.barrier.wait().map_err(|source| DrainError::Sys {
            what: "waiting for in-flight programs (map-in-map update)",
            source,
        })?;

        let flows = self.read_flows(retired as usize)?;
        let totals = self.read_totals()?;
        let interval = Interval {
            start_ns: self.last_flip_ns,
            end_ns: flip_ns,
            end_unix_ns: flip_unix_ns,
            kernel: Some(KernelStats {
                flow_map_capacity: self.capacity as u64,
                flow_map_occupancy: flows.len() as u64,
                drain_ns: started.elapsed().as_nanos() as u64,
                programs: Vec::new(),
                attachments: Vec::new(),
            }),
            flows,
            totals,
        };
        self.last_flip_ns = flip_ns;
        Ok(interval)
    }

    fn read_flows(&mut self, which: usize) -> Result<Vec<FlowDelta>, DrainError> {
        const KEY: usize = std::mem::size_of::<FlowKey>();
        let value_bytes = std::mem::size_of::<FlowValue>() * self.ncpus;
        let fd = self.flows[which].fd().as_fd();
        let err = |source| DrainError::Sys {
            what: "reading the retired flow buffer (BPF_MAP_LOOKUP[_AND_DELETE]_BATCH)",
            source,
        };
        let cap = self.last_len + self.last_len / 8;
        let out = if self.two_phase {
            // Persistent mode: read now, delete after the journal frame.
            let mut out = Vec::with_capacity(cap);
            let mut pending = Vec::new();
            bpf_sys::lookup_batch(fd, KEY, value_bytes, BATCH, |ks, vs| {
                pending.extend_from_slice(ks);
                push_entries(ks, vs, value_bytes, &mut out);
            })
            .map_err(err)?;
            self.pending = Some((which, pending));
            out
        } else {
            let buckets = self.capacity.max(1).next_power_of_two();
            let threads = drain_threads(buckets);
            if threads <= 1 {
                let mut out = Vec::with_capacity(cap);
                bpf_sys::lookup_and_delete_batch(fd, KEY, value_bytes, BATCH, |ks, vs| {
                    push_entries(ks, vs, value_bytes, &mut out)
                })
                .map_err(err)?;
                out
            } else {
                // Disjoint bucket ranges, one thread each (see
                // `bpf_sys::lookup_and_delete_batch_range`).
                let step = buckets / threads;
                let parts: Vec<std::io::Result<Vec<FlowDelta>>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads)
                        .map(|i| {
                            let start = i * step;
                            let end = if i + 1 == threads {
                                u32::MAX
                            } else {
                                start + step
                            };
                            scope.spawn(move || {
                                let mut out = Vec::with_capacity(cap / threads as usize);
                                bpf_sys::lookup_and_delete_batch_range(
                                    fd,
                                    KEY,
                                    value_bytes,
                                    BATCH,
                                    start..end,
                                    |ks, vs| push_entries(ks, vs, value_bytes, &mut out),
                                )
                                .map(|_| out)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(std::io::Error::other("a drain thread panicked"))
                            })
                        })
                        .collect()
                });
                let mut out = Vec::with_capacity(cap);
                for part in parts {
                    out.extend(part.map_err(err)?);
                }
                out
            }
        };
        self.last_len = out.len();
        Ok(out)
    }

    fn read_totals(&self) -> Result<Vec<IfaceTotals>, DrainError> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut out = Vec::with_capacity(slots.len() * 2);
        for (slot, (ifindex, iface)) in slots {
            for direction in [Direction::Ingress, Direction::Egress] {
                let values = self
                    .totals
                    .get(&totals_index(slot, direction as u8), 0)
                    .map_err(|source| DrainError::Map {
                        map: MAP_TOTALS,
                        source,
                    })?;
                let mut sum = Totals::default();
                for t in values.iter() {
                    merge_totals(&mut sum, t);
                }
                out.push(IfaceTotals {
                    ifindex,
                    iface: iface.clone(),
                    direction,
                    totals: sum,
                });
            }
        }
        Ok(out)
    }
}
