//! The bounded flow table: cumulative counters, timeouts, flow records.
//!
//! The kernel holds per-interval deltas; [`FlowTable::apply`] adds each
//! [`FlowDelta`](crate::model::FlowDelta) of an [`Interval`] into a
//! per-flow entry and then ends flows as NetFlow v9 / IPFIX (RFC 5470 §5.1)
//! define it, judged on kernel (CLOCK_MONOTONIC) time, with `now` the
//! interval's `end_ns`:
//!
//! - **idle**: no packet for `idle_timeout` (`last_seen + idle <= now`): the
//!   flow is reported and removed;
//! - **active**: the current record window began (first packet since the
//!   flow started or since its previous active record) at least
//!   `active_timeout` ago: a record is written and the entry continues with
//!   counters reset, so the records of a long flow add up to its total;
//! - **evicted**: inserting a new flow into a full table removes the least
//!   recently seen flow, reports it and counts it in
//!   [`FlowTableStats::evictions`];
//! - **shutdown**: [`FlowTable::flush`] reports everything left.
//!
//! A flow whose counts were all reported by an active record and that saw
//! no packet since ends without a (zero-packet) record; its packets are
//! already in the earlier record, and an eviction is still counted.
//!
//! Order is kept at interval granularity: two linked lists through the
//! slots hold the flows least recently seen first (idle expiry, eviction)
//! and non-empty windows oldest first (active expiry); a flow touched by
//! an interval moves to the back. Flows touched by the same interval keep
//! the order the drain returned them in, so among those a flow can end
//! idle, or be evicted, up to one interval off exact last-seen order; the
//! NetFlow/IPFIX timeouts themselves are only checked once per interval.
//!
//! Memory is bounded by `max_flows`. Per flow: a 152-byte [`FlowEntry`] in
//! a slab, a slot number in a hash index that hashes the slab entry's key
//! (4 bytes plus a control byte, about 10 bytes with table slack), and 8
//! bytes in each list: about 180-195 bytes, so about 197 MB at 1,000,000
//! flows (measured). Every operation is O(1) but the hash lookup.
//!
//! Layout: this module (the table), [`record`] (records and their JSON),
//! [`writer`] (JSON-lines output).

mod list;
pub mod record;
#[cfg(test)]
mod tests;
pub mod writer;

use std::{
    collections::{hash_map::RandomState, HashMap},
    hash::BuildHasher,
    time::Duration,
};

use hashbrown::HashTable;

use sensor_common::{FlowKey, FlowValue};

pub use record::{EndReason, FlowRecord};
pub use writer::{RecordWriter, WriterError};

use crate::model::{merge_value, FlowTableStats, IfaceTotals, Interval};
use list::List;

/// Flow table settings (validated by [`crate::config`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// Most flows held; at least 1.
    pub max_flows: usize,
    /// Active timeout.
    pub active_timeout: Duration,
    /// Idle timeout.
    pub idle_timeout: Duration,
}

/// One flow in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// The flow.
    pub key: FlowKey,
    /// Counts of the current record window: since the flow started or its
    /// previous active-timeout record. Zero packets right after one.
    pub value: FlowValue,
    /// Packets since the flow entered the table (across active records).
    pub total_packets: u64,
    /// Bytes since the flow entered the table.
    pub total_bytes: u64,
    /// First packet since the flow entered the table (monotonic ns).
    pub first_seen_ns: u64,
    /// Last packet (monotonic ns).
    pub last_seen_ns: u64,
}

/// The table's counters and learned context, without its flows: what
/// persistent mode journals besides the entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableMeta {
    pub evictions: u64,
    /// Records written, by [`EndReason`] in [`EndReason::ALL`] order.
    pub records: Vec<u64>,
    pub mono_to_unix: Option<i128>,
    pub ifaces: Vec<(u32, String)>,
}

/// The agent's flow table. See the module docs for the semantics.
#[derive(Debug)]
pub struct FlowTable {
    config: FlowTableConfig,
    /// Slot numbers, hashed by their entry's key: key -> index into
    /// `slots` without a second copy of the 48-byte key (SipHash with a
    /// random key: flow keys are chosen by whoever sends packets).
    index: HashTable<u32>,
    hasher: RandomState,
    /// Entries; indices not in `index` are free (listed in `free`).
    slots: Vec<FlowEntry>,
    free: Vec<u32>,
    /// Every flow, least recently seen first: idle expiry and eviction.
    by_last_seen: List,
    /// Flows with a non-empty window, oldest window first: active expiry.
    by_window_start: List,
    /// Interface names learned from interval totals.
    ifaces: HashMap<u32, String>,
    /// Unix ns minus monotonic ns, from the latest interval.
    mono_to_unix: Option<i128>,
    evictions: u64,
    records: [u64; EndReason::ALL.len()],
}

impl FlowTable {
    /// An empty table. A `max_flows` of 0 is treated as 1.
    pub fn new(config: FlowTableConfig) -> FlowTable {
        let config = FlowTableConfig {
            max_flows: config.max_flows.max(1),
            ..config
        };
        FlowTable {
            config,
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_last_seen: List::new(),
            by_window_start: List::new(),
            ifaces: HashMap::new(),
            mono_to_unix: None,
            evictions: 0,
            records: [0; EndReason::ALL.len()],
        }
    }

    /// Adds an interval's deltas, then ends idle and active flows as of
    /// `iv.end_ns`. Returns the records written, evictions first.
    pub fn apply(&mut self, iv: &Interval) -> Vec<FlowRecord> {
        self.learn_ifaces(&iv.totals);
        if iv.end_unix_ns != 0 {
            self.mono_to_unix = Some(i128::from(iv.end_unix_ns) - i128::from(iv.end_ns));
        }
        let mut out = Vec::new();
        for delta in &iv.flows {
            if delta.value.packets > 0 {
                self.add(&delta.key, &delta.value, &mut out);
            }
        }
        self.expire(iv.end_ns, &mut out);
        out
    }

    /// Ends every flow with reason `shutdown` and empties the table.
    /// `end_ns` (monotonic now) maps kernel time to wall-clock time when no
    /// interval was applied yet.
    pub fn flush(&mut self, end_ns: u64) -> Vec<FlowRecord> {
        if self.mono_to_unix.is_none() {
            self.mono_to_unix = Some(i128::from(unix_now_ns()) - i128::from(end_ns));
        }
        let order: Vec<u32> = self.by_last_seen.iter().collect();
        let mut out = Vec::with_capacity(order.len());
        for slot in order {
            let entry = self.remove(slot);
            self.emit(&entry, EndReason::Shutdown, &mut out);
        }
        out
    }

    /// Bookkeeping for metrics.
    pub fn stats(&self) -> FlowTableStats {
        FlowTableStats {
            size: self.index.len() as u64,
            capacity: self.config.max_flows as u64,
            evictions: self.evictions,
            records: EndReason::ALL
                .iter()
                .zip(self.records)
                .map(|(r, n)| (r.as_str(), n))
                .collect(),
        }
    }

    /// Counters and context, for the persistent-mode journal.
    pub fn meta(&self) -> TableMeta {
        let mut ifaces: Vec<(u32, String)> =
            self.ifaces.iter().map(|(i, n)| (*i, n.clone())).collect();
        ifaces.sort();
        TableMeta {
            evictions: self.evictions,
            records: self.records.to_vec(),
            mono_to_unix: self.mono_to_unix,
            ifaces,
        }
    }

    /// Puts back a journaled state: `entries` into an empty table, and the
    /// counters. Entries beyond `max_flows` (a smaller limit than before
    /// the restart) are evicted as usual and returned as records.
    pub fn restore(&mut self, meta: &TableMeta, entries: Vec<FlowEntry>) -> Vec<FlowRecord> {
        self.evictions = meta.evictions;
        for (slot, n) in self.records.iter_mut().zip(&meta.records) {
            *slot = *n;
        }
        self.mono_to_unix = meta.mono_to_unix;
        self.ifaces = meta.ifaces.iter().cloned().collect();
        let mut entries = entries;
        entries.sort_by_key(|e| e.last_seen_ns);
        let mut out = Vec::new();
        for e in entries {
            if self.find(&e.key).is_some() {
                continue;
            }
            if self.index.len() >= self.config.max_flows {
                if let Some(victim) = self.by_last_seen.head() {
                    let entry = self.remove(victim);
                    self.evictions += 1;
                    self.emit(&entry, EndReason::Evicted, &mut out);
                }
            }
            self.insert(e);
        }
        // Active expiry walks windows oldest first.
        let mut windows: Vec<(u64, u32)> = self
            .by_last_seen
            .iter()
            .filter(|&s| self.slots[s as usize].value.packets > 0)
            .map(|s| (self.slots[s as usize].value.first_seen_ns, s))
            .collect();
        windows.sort_unstable();
        self.by_window_start.clear();
        for (_, s) in windows {
            self.by_window_start.push_back(s);
        }
        out
    }

    /// Flows in the table now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The entry of `key`, if present.
    pub fn get(&self, key: &FlowKey) -> Option<&FlowEntry> {
        self.find(key).map(|slot| &self.slots[slot as usize])
    }

    /// Every current entry, least recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = &FlowEntry> + '_ {
        self.by_last_seen
            .iter()
            .map(|slot| &self.slots[slot as usize])
    }

    /// Interface name of `ifindex`, as last seen in interval totals.
    pub fn iface_name(&self, ifindex: u32) -> Option<&str> {
        self.ifaces.get(&ifindex).map(String::as_str)
    }

    fn learn_ifaces(&mut self, totals: &[IfaceTotals]) {
        for t in totals {
            if t.iface.is_empty() || self.ifaces.get(&t.ifindex) == Some(&t.iface) {
                continue;
            }
            self.ifaces.insert(t.ifindex, t.iface.clone());
        }
    }

    fn add(&mut self, key: &FlowKey, delta: &FlowValue, out: &mut Vec<FlowRecord>) {
        if let Some(slot) = self.find(key) {
            let e = &mut self.slots[slot as usize];
            let old_last = e.last_seen_ns;
            let had_window = e.value.packets > 0;
            merge_value(&mut e.value, delta);
            e.total_packets += delta.packets;
            e.total_bytes += delta.bytes;
            e.first_seen_ns = e.first_seen_ns.min(e.value.first_seen_ns);
            e.last_seen_ns = e.last_seen_ns.max(delta.last_seen_ns);
            if e.last_seen_ns != old_last {
                self.by_last_seen.move_to_back(slot);
            }
            if !had_window {
                self.by_window_start.push_back(slot);
            }
            return;
        }
        if self.index.len() >= self.config.max_flows {
            if let Some(victim) = self.by_last_seen.head() {
                let entry = self.remove(victim);
                self.evictions += 1;
                self.emit(&entry, EndReason::Evicted, out);
            }
        }
        self.insert(FlowEntry {
            key: *key,
            value: *delta,
            total_packets: delta.packets,
            total_bytes: delta.bytes,
            first_seen_ns: delta.first_seen_ns,
            last_seen_ns: delta.last_seen_ns,
        });
    }

    /// Inserts a flow that is not in the table (the caller made room).
    fn insert(&mut self, entry: FlowEntry) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                slot
            }
            None => {
                // max_flows is at most 100M (config), far below u32::MAX.
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hasher.hash_one(entry.key), slot, |&s| {
                hasher.hash_one(slots[s as usize].key)
            });
        self.by_last_seen.push_back(slot);
        if entry.value.packets > 0 {
            self.by_window_start.push_back(slot);
        }
    }

    fn expire(&mut self, now_ns: u64, out: &mut Vec<FlowRecord>) {
        let idle = duration_ns(self.config.idle_timeout);
        while let Some(slot) = self.by_last_seen.head() {
            if self.slots[slot as usize].last_seen_ns.saturating_add(idle) > now_ns {
                break;
            }
            let entry = self.remove(slot);
            self.emit(&entry, EndReason::Idle, out);
        }
        let active = duration_ns(self.config.active_timeout);
        while let Some(slot) = self.by_window_start.head() {
            let start = self.slots[slot as usize].value.first_seen_ns;
            if start.saturating_add(active) > now_ns {
                break;
            }
            self.by_window_start.unlink(slot);
            let entry = self.slots[slot as usize];
            self.slots[slot as usize].value = FlowValue::default();
            self.emit(&entry, EndReason::Active, out);
        }
    }

    /// The slot of `key`, if present.
    fn find(&self, key: &FlowKey) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(key), |&s| {
                slots[s as usize].key == *key
            })
            .copied()
    }

    /// Removes a live slot from every index and returns its entry.
    fn remove(&mut self, slot: u32) -> FlowEntry {
        let entry = self.slots[slot as usize];
        if let Ok(found) = self
            .index
            .find_entry(self.hasher.hash_one(entry.key), |&s| s == slot)
        {
            found.remove();
        }
        self.by_last_seen.unlink(slot);
        self.by_window_start.unlink(slot);
        self.free.push(slot);
        entry
    }

    fn emit(&mut self, entry: &FlowEntry, reason: EndReason, out: &mut Vec<FlowRecord>) {
        if entry.value.packets == 0 {
            return;
        }
        self.records[reason as usize] += 1;
        let offset = self.mono_to_unix.unwrap_or(0);
        let wall =
            |mono: u64| u64::try_from((i128::from(mono) + offset).max(0)).unwrap_or(u64::MAX);
        out.push(FlowRecord {
            key: entry.key,
            value: entry.value,
            reason,
            iface: self.ifaces.get(&entry.key.ifindex).cloned(),
            start_unix_ns: wall(entry.value.first_seen_ns),
            end_unix_ns: wall(entry.value.last_seen_ns),
        });
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(duration_ns)
        .unwrap_or(0)
}
