//! Bounded top-K selection and the smoothed trackers built on it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

use sensor_common::FlowKey;

use super::Rate;

/// A candidate in a ranking: better means more bytes/s, then more packets/s,
/// then the smaller key (so ties break the same way every time).
struct Cand<T> {
    rate: Rate,
    key: T,
}

impl<T: Ord> Ord for Cand<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rate
            .bytes_per_second
            .total_cmp(&other.rate.bytes_per_second)
            .then(
                self.rate
                    .packets_per_second
                    .total_cmp(&other.rate.packets_per_second),
            )
            .then_with(|| other.key.cmp(&self.key))
    }
}
impl<T: Ord> PartialOrd for Cand<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord> PartialEq for Cand<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<T: Ord> Eq for Cand<T> {}

/// The `k` best items, best first: highest bytes/s, then highest packets/s,
/// then the smallest key. O(n log k) time, O(k) extra memory.
pub fn top_k<T: Ord>(items: impl IntoIterator<Item = (T, Rate)>, k: usize) -> Vec<(T, Rate)> {
    if k == 0 {
        return Vec::new();
    }
    // A min-heap of the best k so far: its top is the worst kept item.
    let mut heap: BinaryHeap<Reverse<Cand<T>>> = BinaryHeap::with_capacity(k + 1);
    for (key, rate) in items {
        let cand = Cand { rate, key };
        if heap.len() == k {
            match heap.peek() {
                Some(Reverse(worst)) if cand <= *worst => continue,
                _ => {}
            }
        }
        heap.push(Reverse(cand));
        if heap.len() > k {
            heap.pop();
        }
    }
    // Ascending order of Reverse is descending order of Cand: best first.
    heap.into_sorted_vec()
        .into_iter()
        .map(|Reverse(c)| (c.key, c.rate))
        .collect()
}

/// A [`FlowKey`] with a total order (addresses, ports, protocol, VLAN,
/// interface, direction, flags), so flows can be ranked and ties broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowOrd(pub FlowKey);

impl FlowOrd {
    fn tuple(&self) -> ([u8; 16], [u8; 16], u16, u16, u8, u16, u32, u8, u8) {
        let k = &self.0;
        (
            k.src_addr,
            k.dst_addr,
            k.src_port,
            k.dst_port,
            k.protocol,
            k.vlan_id,
            k.ifindex,
            k.direction,
            k.flags,
        )
    }
}
impl Ord for FlowOrd {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tuple().cmp(&other.tuple())
    }
}
impl PartialOrd for FlowOrd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Below this (in both packets/s and bytes/s) a smoothed entry is dropped.
const NEGLIGIBLE: f64 = 1e-3;

/// EWMA state for the heaviest keys of one (interface, direction), bounded
/// to `cap` entries.
///
/// Each interval every tracked key decays towards its current rate (zero if
/// it was silent); keys among the interval's `cap` heaviest that are not
/// tracked yet enter as if their average had been zero; then only the `cap`
/// heaviest averages are kept. A key that never ranks among the interval's
/// `cap` heaviest is never tracked: the smoothed top-K is exact for keys
/// that are heavy in some interval, which is what a top-K is for.
#[derive(Debug)]
pub(super) struct Tracker<T> {
    avg: HashMap<T, Rate>,
}

impl<T> Default for Tracker<T> {
    fn default() -> Self {
        Tracker {
            avg: HashMap::new(),
        }
    }
}

impl<T: Ord + Hash + Clone> Tracker<T> {
    /// Folds one interval in. `heaviest` is the interval's ranking (best
    /// first, at most `cap` entries), `current` every key's interval rate.
    pub(super) fn update(
        &mut self,
        current: &HashMap<T, Rate>,
        heaviest: &[(T, Rate)],
        decay: f64,
        cap: usize,
    ) {
        for (key, avg) in self.avg.iter_mut() {
            let new = current.get(key).copied().unwrap_or_default();
            *avg = new.ewma(*avg, decay);
        }
        for (key, rate) in heaviest {
            if !self.avg.contains_key(key) {
                self.avg
                    .insert(key.clone(), rate.ewma(Rate::default(), decay));
            }
        }
        self.avg
            .retain(|_, r| r.bytes_per_second >= NEGLIGIBLE || r.packets_per_second >= NEGLIGIBLE);
        if self.avg.len() > cap {
            let keep = top_k(self.avg.drain(), cap);
            self.avg.extend(keep);
        }
    }

    /// The `k` heaviest smoothed entries, best first.
    pub(super) fn top(&self, k: usize) -> Vec<(T, Rate)> {
        top_k(self.avg.iter().map(|(key, r)| (key.clone(), *r)), k)
    }

    /// Number of keys tracked.
    pub(super) fn len(&self) -> usize {
        self.avg.len()
    }
}
