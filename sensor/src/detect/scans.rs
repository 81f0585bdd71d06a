//! Port scans and host sweeps: distinct probes per source in a sliding window.
//!
//! Each tracked source keeps two capped sets of (hash, last-seen time): the
//! (protocol, destination port) of its unanswered probes, over any
//! destinations, and the destinations it probed. An entry counts while it is younger than the window; a set
//! holds at most twice its threshold (past that, the oldest entry is
//! replaced), so a count is exact up to that cap and saturates there. Memory
//! per source is at most `8 * 2 * (min_ports + min_hosts)` bytes, and the
//! number of sources is bounded by `max_tracked_sources`.

use std::collections::HashSet;
use std::net::IpAddr;

use super::aggregate::Aggregate;
use super::bounded::{BoundedMap, Rank};
use super::config::DetectConfig;
use super::{Judgment, Kind, Target};

/// A capped set of hashes with last-seen times (deciseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WindowSet {
    entries: Vec<(u32, u32)>,
}

impl WindowSet {
    /// Drops entries at least `window` old.
    fn expire(&mut self, now: u32, window: u32) {
        self.entries.retain(|e| now.saturating_sub(e.1) < window);
    }

    /// Adds or refreshes `h`; a full set replaces its oldest entry.
    fn insert(&mut self, h: u32, now: u32, cap: usize) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == h) {
            e.1 = now;
        } else if self.entries.len() < cap {
            if self.entries.len() == self.entries.capacity() {
                self.entries
                    .reserve_exact((self.entries.len()).clamp(4, cap - self.entries.len()));
            }
            self.entries.push((h, now));
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.1) {
            *oldest = (h, now);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What one source probed recently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SourceState {
    ports: WindowSet,
    hosts: WindowSet,
    last: u32,
}

impl Rank for SourceState {
    /// Least recently seen first.
    fn rank(&self) -> (u8, u64) {
        (0, u64::from(self.last))
    }
}

/// Bounded per-source state.
pub(crate) struct SourceTable {
    map: BoundedMap<IpAddr, SourceState>,
}

/// Seconds to deciseconds, saturating.
fn deci(seconds: f64) -> u32 {
    (seconds * 10.0).clamp(0.0, f64::from(u32::MAX)) as u32
}

impl SourceTable {
    /// An empty table of at most `cap` sources.
    pub fn new(cap: usize) -> SourceTable {
        SourceTable {
            map: BoundedMap::new(cap),
        }
    }

    /// Changes the bound.
    pub fn set_capacity(&mut self, cap: usize) {
        self.map.set_capacity(cap);
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Sources evicted since start.
    pub fn evictions(&self) -> u64 {
        self.map.evictions()
    }

    /// Folds in this interval's probes and judges every source that probed
    /// or is `watched` (pending or active). `now` is deciseconds since the
    /// detector's epoch.
    pub fn evaluate(
        &mut self,
        agg: &Aggregate,
        watched: &HashSet<(Kind, Target)>,
        cfg: &DetectConfig,
        now: u32,
        dt: f64,
        out: &mut Vec<Judgment>,
    ) {
        let ps = &cfg.port_scan;
        let hs = &cfg.host_sweep;
        let (pw, hw) = (deci(ps.window_seconds), deci(hs.window_seconds));
        let (pcap, hcap) = (ps.min_ports * 2, hs.min_hosts * 2);
        for (src, probes) in &agg.probes {
            let st = self.map.get_or_insert_with(src, SourceState::default);
            st.last = now;
            st.ports.expire(now, pw);
            st.hosts.expire(now, hw);
            for h in &probes.ports {
                st.ports.insert((h >> 32) as u32, now, pcap);
            }
            for h in &probes.hosts {
                st.hosts.insert((h >> 32) as u32, now, hcap);
            }
            let pps = probes.pkts as f64 / dt;
            let bps = probes.bytes as f64 * 8.0 / dt;
            let target = Target::Addr(*src);
            if !probes.ports.is_empty() || watched.contains(&(Kind::PortScan, target.clone())) {
                out.push(judge(
                    Kind::PortScan,
                    target.clone(),
                    st.ports.len(),
                    ps.min_ports,
                    pps,
                    bps,
                ));
            }
            if !probes.hosts.is_empty() || watched.contains(&(Kind::HostSweep, target.clone())) {
                out.push(judge(
                    Kind::HostSweep,
                    target,
                    st.hosts.len(),
                    hs.min_hosts,
                    pps,
                    bps,
                ));
            }
        }
        for (kind, target) in watched {
            let Target::Addr(src) = target else { continue };
            if agg.probes.contains_key(src) {
                continue;
            }
            let (count, min) = match (kind, self.map.get_mut(src)) {
                (Kind::PortScan, Some(st)) => {
                    st.ports.expire(now, pw);
                    (st.ports.len(), ps.min_ports)
                }
                (Kind::HostSweep, Some(st)) => {
                    st.hosts.expire(now, hw);
                    (st.hosts.len(), hs.min_hosts)
                }
                (Kind::PortScan, None) => (0, ps.min_ports),
                (Kind::HostSweep, None) => (0, hs.min_hosts),
                _ => continue,
            };
            out.push(judge(*kind, target.clone(), count, min, 0.0, 0.0));
        }
    }
}

fn judge(kind: Kind, target: Target, count: usize, min: usize, pps: f64, bps: f64) -> Judgment {
    Judgment {
        kind,
        target,
        over: count >= min,
        observed: count as f64,
        pps,
        bps,
        // Scans have no learned baseline: the score is the count over its
        // threshold (1.0 = at the threshold), so the top scanners rank.
        score: Some(count as f64 / min.max(1) as f64),
        baseline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_set_expires_and_caps() {
        let mut w = WindowSet::default();
        for h in 0..10u32 {
            w.insert(h, 5, 8);
        }
        assert_eq!(w.len(), 8);
        w.insert(3, 7, 8);
        w.expire(60, 55);
        assert_eq!(
            w.len(),
            1,
            "only the refreshed entry is younger than the window"
        );
        w.expire(62, 55);
        assert_eq!(w.len(), 0);
    }
}
