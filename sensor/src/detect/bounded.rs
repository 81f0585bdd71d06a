//! A hash map with a fixed capacity and batch eviction.
//!
//! When an insert finds the map full, the eighth of the entries that rank
//! lowest (see [`Rank`]) is evicted in one pass, so eviction costs
//! O(1) amortised per insert even under a flood of new keys.

use std::collections::HashMap;
use std::hash::Hash;

/// How an entry ranks for eviction: the lowest rank goes first.
pub(crate) trait Rank {
    /// Eviction rank; compared lexicographically.
    fn rank(&self) -> (u8, u64);
}

/// A capacity-bounded map.
#[derive(Debug)]
pub(crate) struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    cap: usize,
    evictions: u64,
}

impl<K: Hash + Eq + Clone, V: Rank> BoundedMap<K, V> {
    /// An empty map holding at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> BoundedMap<K, V> {
        BoundedMap {
            map: HashMap::new(),
            cap: cap.max(1),
            evictions: 0,
        }
    }

    /// Changes the capacity, evicting at once if the map is over it.
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap.max(1);
        if self.map.len() > self.cap {
            let excess = self.map.len() - self.cap;
            self.evict(excess);
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries evicted since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The entry for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// The entry for `key`, mutable.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The entry for `key`, created with `make` (after evicting if full).
    pub fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) && self.map.len() >= self.cap {
            self.evict((self.cap / 8).max(1));
        }
        self.map.entry(key.clone()).or_insert_with(make)
    }

    /// Evicts the `n` lowest-ranked entries.
    fn evict(&mut self, n: usize) {
        let n = n.min(self.map.len());
        if n == 0 {
            return;
        }
        let mut ranked: Vec<((u8, u64), K)> = self
            .map
            .iter()
            .map(|(k, v)| (v.rank(), k.clone()))
            .collect();
        ranked.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0));
        for (_, key) in ranked.into_iter().take(n) {
            self.map.remove(&key);
        }
        self.evictions += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Aged(u64);
    impl Rank for Aged {
        fn rank(&self) -> (u8, u64) {
            (0, self.0)
        }
    }

    #[test]
    fn never_exceeds_capacity_and_evicts_oldest() {
        let mut m = BoundedMap::new(16);
        for i in 0..1000u64 {
            m.get_or_insert_with(&i, || Aged(i));
            assert!(m.len() <= 16);
        }
        assert!(m.get(&999).is_some());
        assert!(m.get(&0).is_none());
        assert_eq!(m.evictions() + m.len() as u64, 1000);
        m.set_capacity(4);
        assert_eq!(m.len(), 4);
        assert!(m.get(&999).is_some());
    }
}
