//! Groups captured frames into [`Interval`]s by packet timestamp, as the
//! live drain groups them by buffer flips.
//!
//! Intervals are `--interval` long and aligned to multiples of it in Unix
//! time. Both clocks of an interval are the packet clock: `start_ns`,
//! `end_ns` and `end_unix_ns` are Unix ns, so flow records and events carry
//! the capture's own times. Every interval carries the exact cumulative
//! totals of every interface and direction seen so far, as the kernel's
//! totals map would. A frame older than the open interval (captures merged
//! from several interfaces are not strictly ordered) counts in the open
//! interval. An empty stretch between frames yields empty intervals, so
//! anomalies end as they would live; a gap longer than [`MAX_EMPTY`]
//! intervals is crossed by one long empty interval.

use std::collections::HashMap;

use sensor_common::{Direction, FlowKey, FlowValue, Totals};

use super::parse::{account, add_packet, parse};
use crate::model::{FlowDelta, IfaceTotals, Interval};

/// Most empty intervals emitted for one gap in the capture.
pub const MAX_EMPTY: u64 = 3600;

/// Builds intervals from frames in capture order.
pub struct IntervalBuilder {
    len_ns: u64,
    /// (ifindex, name) of each interface, in order of first use.
    ifaces: Vec<(u32, String)>,
    totals: HashMap<(u32, Direction), Totals>,
    flows: HashMap<FlowKey, FlowValue>,
    /// Start of the open interval; `None` before the first frame.
    start_ns: Option<u64>,
}

impl IntervalBuilder {
    /// A builder of intervals `len_ns` long (at least 1 ms).
    pub fn new(len_ns: u64) -> IntervalBuilder {
        IntervalBuilder {
            len_ns: len_ns.max(1_000_000),
            ifaces: Vec::new(),
            totals: HashMap::new(),
            flows: HashMap::new(),
            start_ns: None,
        }
    }

    /// Counts one frame; returns the intervals it closed (oldest first).
    ///
    /// `data` is the captured Ethernet frame, `wire_len` its length on the
    /// wire; `ifindex` and `iface` identify the capture interface.
    pub fn push(
        &mut self,
        ts_ns: u64,
        ifindex: u32,
        iface: &str,
        direction: Direction,
        data: &[u8],
        wire_len: u64,
    ) -> Vec<Interval> {
        let mut closed = Vec::new();
        let start = *self.start_ns.get_or_insert(ts_ns - ts_ns % self.len_ns);
        if ts_ns >= start + self.len_ns {
            closed.push(self.close(start + self.len_ns));
            let mut next = start + self.len_ns;
            let mut empty = 0;
            while ts_ns >= next + self.len_ns {
                let aligned = ts_ns - ts_ns % self.len_ns;
                let end = if empty < MAX_EMPTY {
                    next + self.len_ns
                } else {
                    aligned
                };
                self.start_ns = Some(next);
                closed.push(self.close(end));
                next = end;
                empty += 1;
            }
            self.start_ns = Some(next);
        }
        if !self.ifaces.iter().any(|(i, _)| *i == ifindex) {
            self.ifaces.push((ifindex, iface.to_string()));
        }
        let p = parse(data, wire_len.max(data.len() as u64) as usize, 0);
        let totals = self.totals.entry((ifindex, direction)).or_default();
        if let Some(key) = account(totals, &p, wire_len, ifindex, direction) {
            let v = self.flows.entry(key).or_default();
            add_packet(v, ts_ns, wire_len, p.tcp_flags);
        }
        closed
    }

    /// Closes the open interval at the end of the capture: it ends at its
    /// last frame's interval boundary. `None` before any frame.
    pub fn finish(&mut self) -> Option<Interval> {
        let start = self.start_ns?;
        Some(self.close(start + self.len_ns))
    }

    /// Ends the open interval at `end_ns` and starts none.
    fn close(&mut self, end_ns: u64) -> Interval {
        let start_ns = self.start_ns.unwrap_or(end_ns);
        let mut flows: Vec<FlowDelta> = self
            .flows
            .drain()
            .map(|(key, value)| FlowDelta { key, value })
            .collect();
        // A stable order makes reports and records reproducible.
        flows.sort_by_key(|f| f.value.first_seen_ns);
        let mut totals = Vec::with_capacity(self.ifaces.len() * 2);
        for (ifindex, iface) in &self.ifaces {
            for direction in [Direction::Ingress, Direction::Egress] {
                totals.push(IfaceTotals {
                    ifindex: *ifindex,
                    iface: iface.clone(),
                    direction,
                    totals: self
                        .totals
                        .get(&(*ifindex, direction))
                        .copied()
                        .unwrap_or_default(),
                });
            }
        }
        Interval {
            start_ns,
            end_ns,
            end_unix_ns: end_ns,
            flows,
            totals,
            kernel: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(sport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0, 53, 0, 8, 0, 0]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn intervals_follow_packet_time_with_cumulative_totals() {
        let s = 1_000_000_000u64;
        let mut b = IntervalBuilder::new(s);
        let f = udp_frame(1000);
        assert!(b
            .push(100 * s + 10, 1, "cap", Direction::Ingress, &f, 60)
            .is_empty());
        assert!(b
            .push(100 * s + 20, 1, "cap", Direction::Ingress, &f, 60)
            .is_empty());
        let closed = b.push(103 * s + 5, 1, "cap", Direction::Egress, &f, 60);
        assert_eq!(closed.len(), 3, "one full and two empty intervals");
        assert_eq!((closed[0].start_ns, closed[0].end_ns), (100 * s, 101 * s));
        assert_eq!(closed[0].flows.len(), 1);
        let v = closed[0].flows[0].value;
        assert_eq!(
            (v.packets, v.bytes, v.first_seen_ns, v.last_seen_ns),
            (2, 120, 100 * s + 10, 100 * s + 20)
        );
        assert!(closed[1].flows.is_empty() && closed[2].flows.is_empty());
        assert_eq!((closed[2].start_ns, closed[2].end_ns), (102 * s, 103 * s));
        let last = b.finish().expect("open interval");
        assert_eq!((last.start_ns, last.end_ns), (103 * s, 104 * s));
        let ingress = last
            .totals
            .iter()
            .find(|t| t.direction == Direction::Ingress)
            .expect("ingress");
        let egress = last
            .totals
            .iter()
            .find(|t| t.direction == Direction::Egress)
            .expect("egress");
        assert_eq!((ingress.totals.packets, ingress.totals.l4[1]), (2, 2));
        assert_eq!((egress.totals.packets, egress.totals.bytes), (1, 60));
    }

    #[test]
    fn a_long_gap_is_bounded() {
        let s = 1_000_000_000u64;
        let mut b = IntervalBuilder::new(s);
        let f = udp_frame(1);
        b.push(0, 1, "cap", Direction::Ingress, &f, 60);
        let closed = b.push(100_000 * s, 1, "cap", Direction::Ingress, &f, 60);
        assert_eq!(closed.len() as u64, MAX_EMPTY + 2);
        assert_eq!(closed.last().expect("last").end_ns, 100_000 * s);
    }
}
