//! The analysis report: totals, protocol mix, top talkers, top flows and
//! anomalies, as text or JSON.
//!
//! Talkers and flows are summed per key in maps bounded to [`MAX_KEYS`]
//! entries: when a map fills up, its lighter half is dropped and the report
//! says `approximate` (heavy keys seen early stay exact; keys that arrive
//! after a prune are undercounted by what was dropped). Below the bound the
//! figures are exact.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::net::IpAddr;

use sensor_common::{EtherClass, FlowKey, L4Class, Malformed, Totals, L4_CLASSES};
use serde::Serialize;

use crate::detect::{ActiveAnomaly, Event, EventState};
use crate::flowtable::record::{protocol_name, rfc3339_nanos};
use crate::model::{merge_totals, FlowKeyExt as _, Interval};
use crate::rates::l4_class;

/// Keys held per ranking before the lighter half is dropped.
pub const MAX_KEYS: usize = 65_536;

struct Bounded<K> {
    map: HashMap<K, (u64, u64)>,
    pruned: bool,
}

impl<K> Default for Bounded<K> {
    fn default() -> Self {
        Bounded {
            map: HashMap::new(),
            pruned: false,
        }
    }
}

impl<K: Hash + Eq + Clone + Ord> Bounded<K> {
    fn add(&mut self, key: &K, packets: u64, bytes: u64) {
        if let Some(e) = self.map.get_mut(key) {
            e.0 += packets;
            e.1 += bytes;
            return;
        }
        if self.map.len() >= MAX_KEYS {
            let mut v: Vec<(K, (u64, u64))> = self.map.drain().collect();
            v.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(b.1 .0.cmp(&a.1 .0)));
            v.truncate(MAX_KEYS / 2);
            self.map.extend(v);
            self.pruned = true;
        }
        self.map.insert(key.clone(), (packets, bytes));
    }

    /// Heaviest by bytes, then packets, then key.
    fn top(&self, n: usize) -> Vec<(K, (u64, u64))> {
        let mut v: Vec<(K, (u64, u64))> = self.map.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| {
            b.1 .1
                .cmp(&a.1 .1)
                .then(b.1 .0.cmp(&a.1 .0))
                .then(a.0.cmp(&b.0))
        });
        v.truncate(n);
        v
    }
}

/// Totals of one capture interface and direction.
#[derive(Clone, Debug, Serialize)]
pub struct IfaceSummary {
    /// Interface name.
    pub iface: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// Frames.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// IPv4 frames.
    pub ipv4: u64,
    /// IPv6 frames.
    pub ipv6: u64,
    /// Non-IP frames.
    pub non_ip: u64,
    /// IP fragments.
    pub fragments: u64,
    /// Non-IP frames per class (non-zero only).
    pub ether_classes: Vec<(&'static str, u64)>,
    /// Malformed frames per reason (non-zero only).
    pub malformed: Vec<(&'static str, u64)>,
}

/// One protocol class in the mix.
#[derive(Clone, Debug, Serialize)]
pub struct ProtoShare {
    /// `tcp`, `udp`, `icmp`, `sctp`, `other` or `non_ip`.
    pub class: &'static str,
    /// Frames (exact).
    pub packets: u64,
    /// Bytes of frames keyed as flows; null for non-IP.
    pub bytes: Option<u64>,
}

/// A host in the top talkers.
#[derive(Clone, Debug, Serialize)]
pub struct Talker {
    /// Address.
    pub addr: String,
    /// Packets sent.
    pub packets: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// A flow in the top flows (all its records together).
#[derive(Clone, Debug, Serialize)]
pub struct TopFlow {
    /// Interface name.
    pub iface: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// VLAN id (0: untagged).
    pub vlan: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Its name, when known.
    pub protocol_name: Option<&'static str>,
    /// Source address.
    pub src_addr: String,
    /// Destination address.
    pub dst_addr: String,
    /// Source port or ICMP type.
    pub src_port: u16,
    /// Destination port or ICMP code.
    pub dst_port: u16,
    /// A non-first fragment (no ports).
    pub fragment: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One anomaly: start, end and peaks.
#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    /// Kind label.
    pub kind: &'static str,
    /// Target label.
    pub target: String,
    /// Time the anomaly started (end of the deciding interval).
    pub start: String,
    /// Time it ended; null when still active at the end of the capture.
    pub end: Option<String>,
    /// What `observed` measures.
    pub signal: &'static str,
    /// Highest observation of the signal.
    pub observed: f64,
    /// Highest packet rate, packets/s.
    pub peak_pps: f64,
    /// Highest bit rate, bits/s.
    pub peak_bps: f64,
    /// Seconds over threshold (up to the end of the capture if active).
    pub duration_seconds: f64,
    /// Heaviest sources.
    pub top_sources: Vec<crate::detect::TopSource>,
}

/// The whole report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The capture file.
    pub file: String,
    /// Frames read.
    pub packets: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// First frame (RFC 3339), if any.
    pub first: Option<String>,
    /// Last frame.
    pub last: Option<String>,
    /// Seconds between the first and last frame.
    pub duration_seconds: f64,
    /// Intervals analysed.
    pub intervals: u64,
    /// Per interface and direction.
    pub totals: Vec<IfaceSummary>,
    /// Packets (and bytes) per protocol class.
    pub protocols: Vec<ProtoShare>,
    /// Top sources by bytes.
    pub top_talkers: Vec<Talker>,
    /// Top flows by bytes.
    pub top_flows: Vec<TopFlow>,
    /// True when a ranking dropped keys to stay bounded.
    pub approximate: bool,
    /// Anomalies, in start order.
    pub anomalies: Vec<Anomaly>,
    /// Flow records written with --flows-file.
    pub flow_records: u64,
    /// The error that stopped reading, if any (the report covers the
    /// frames before it).
    pub error: Option<String>,
}

/// Accumulates the report while intervals go by.
#[derive(Default)]
pub struct ReportBuilder {
    last_totals: Vec<crate::model::IfaceTotals>,
    proto_bytes: [u64; L4_CLASSES],
    talkers: Bounded<IpAddr>,
    flows: Bounded<FlowOrdKey>,
    names: HashMap<u32, String>,
    anomalies: Vec<Anomaly>,
    open: HashMap<(&'static str, String), usize>,
    intervals: u64,
    first_ns: Option<u64>,
    last_ns: u64,
}

/// A flow key with an order, for deterministic ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FlowOrdKey([u8; 16], [u8; 16], u16, u16, u8, u16, u32, u8, u8);

impl FlowOrdKey {
    fn of(k: &FlowKey) -> FlowOrdKey {
        FlowOrdKey(
            k.src_addr,
            k.dst_addr,
            k.src_port,
            k.dst_port,
            k.protocol,
            k.vlan_id,
            k.ifindex,
            k.direction,
            k.flags | (k.ip_version << 4),
        )
    }
}

impl ReportBuilder {
    /// Notes a frame's time.
    pub fn frame(&mut self, ts_ns: u64) {
        self.first_ns = Some(self.first_ns.map_or(ts_ns, |f| f.min(ts_ns)));
        self.last_ns = self.last_ns.max(ts_ns);
    }

    /// Folds one interval in, with the events the detector gave for it.
    pub fn interval(&mut self, iv: &Interval, events: &[Event]) {
        self.intervals += 1;
        for t in &iv.totals {
            self.names.insert(t.ifindex, t.iface.clone());
        }
        self.last_totals.clone_from(&iv.totals);
        for f in &iv.flows {
            let (p, b) = (f.value.packets, f.value.bytes);
            self.proto_bytes[l4_class(&f.key) as usize] += b;
            self.talkers.add(&f.key.src(), p, b);
            self.flows.add(&FlowOrdKey::of(&f.key), p, b);
        }
        for e in events {
            let id = (e.kind, e.target.clone());
            match e.state {
                EventState::Start => {
                    self.open.insert(id, self.anomalies.len());
                    self.anomalies.push(Anomaly {
                        kind: e.kind,
                        target: e.target.clone(),
                        start: e.time.clone(),
                        end: None,
                        signal: e.signal,
                        observed: e.observed,
                        peak_pps: e.peak_pps,
                        peak_bps: e.peak_bps,
                        duration_seconds: 0.0,
                        top_sources: e.top_sources.clone(),
                    });
                }
                EventState::End => {
                    if let Some(i) = self.open.remove(&id) {
                        let a = &mut self.anomalies[i];
                        a.end = Some(e.time.clone());
                        a.observed = e.observed;
                        a.peak_pps = e.peak_pps;
                        a.peak_bps = e.peak_bps;
                        a.duration_seconds = e.duration_seconds.unwrap_or(0.0);
                        a.top_sources = e.top_sources.clone();
                    }
                }
            }
        }
    }

    /// The report; `active` are the anomalies still active at the end,
    /// whose peaks so far complete their entries.
    pub fn finish<'a>(
        mut self,
        file: &str,
        top_k: usize,
        end_ns: u64,
        active: impl Iterator<Item = &'a ActiveAnomaly>,
        top_sources: usize,
    ) -> Report {
        for a in active {
            if let Some(&i) = self.open.get(&(a.kind.as_str(), a.target.to_string())) {
                let r = &mut self.anomalies[i];
                r.observed = a.observed;
                r.peak_pps = a.peak_pps;
                r.peak_bps = a.peak_bps;
                r.duration_seconds = a.duration_seconds(end_ns);
                r.top_sources = a
                    .top_sources(top_sources)
                    .into_iter()
                    .map(|(ip, packets)| crate::detect::TopSource {
                        source: ip.to_string(),
                        packets,
                    })
                    .collect();
            }
        }
        let mut sum = Totals::default();
        let mut totals = Vec::new();
        for t in &self.last_totals {
            merge_totals(&mut sum, &t.totals);
            if t.totals.packets == 0 {
                continue;
            }
            totals.push(summary(&t.iface, t.direction.as_str(), &t.totals));
        }
        let mut protocols: Vec<ProtoShare> = L4Class::ALL
            .iter()
            .map(|c| ProtoShare {
                class: c.as_str(),
                packets: sum.l4[*c as usize],
                bytes: Some(self.proto_bytes[*c as usize]),
            })
            .collect();
        protocols.push(ProtoShare {
            class: "non_ip",
            packets: sum.non_ip,
            bytes: None,
        });
        let name = |ifindex: u32| {
            self.names
                .get(&ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{ifindex}"))
        };
        let top_flows = self
            .flows
            .top(top_k)
            .into_iter()
            .map(|(k, (packets, bytes))| {
                let ip_version = k.8 >> 4;
                let key = FlowKey {
                    src_addr: k.0,
                    dst_addr: k.1,
                    ip_version,
                    ..FlowKey::default()
                };
                TopFlow {
                    iface: name(k.6),
                    direction: if k.7 == 0 { "ingress" } else { "egress" },
                    vlan: k.5,
                    protocol: k.4,
                    protocol_name: protocol_name(k.4),
                    src_addr: key.src().to_string(),
                    dst_addr: key.dst().to_string(),
                    src_port: k.2,
                    dst_port: k.3,
                    fragment: k.8 & 0x0f != 0,
                    packets,
                    bytes,
                }
            })
            .collect();
        Report {
            file: file.to_string(),
            packets: sum.packets,
            bytes: sum.bytes,
            first: self.first_ns.map(rfc3339_nanos),
            last: self.first_ns.map(|_| rfc3339_nanos(self.last_ns)),
            duration_seconds: self
                .first_ns
                .map_or(0.0, |f| self.last_ns.saturating_sub(f) as f64 / 1e9),
            intervals: self.intervals,
            totals,
            protocols,
            top_talkers: self
                .talkers
                .top(top_k)
                .into_iter()
                .map(|(a, (packets, bytes))| Talker {
                    addr: a.to_string(),
                    packets,
                    bytes,
                })
                .collect(),
            top_flows,
            approximate: self.talkers.pruned || self.flows.pruned,
            anomalies: self.anomalies,
            flow_records: 0,
            error: None,
        }
    }
}

fn summary(iface: &str, direction: &'static str, t: &Totals) -> IfaceSummary {
    IfaceSummary {
        iface: iface.to_string(),
        direction,
        packets: t.packets,
        bytes: t.bytes,
        ipv4: t.ipv4,
        ipv6: t.ipv6,
        non_ip: t.non_ip,
        fragments: t.fragments,
        ether_classes: EtherClass::ALL
            .iter()
            .map(|c| (c.as_str(), t.ether_class[*c as usize]))
            .filter(|(_, n)| *n > 0)
            .collect(),
        malformed: Malformed::ALL
            .iter()
            .map(|m| (m.as_str(), t.malformed[*m as usize]))
            .filter(|(_, n)| *n > 0)
            .collect(),
    }
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // A tree of strings, numbers and vectors always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "capture  {}", self.file);
        let _ = writeln!(
            s,
            "frames   {} ({} bytes) from {} to {} ({:.3} s, {} intervals)",
            self.packets,
            self.bytes,
            self.first.as_deref().unwrap_or("-"),
            self.last.as_deref().unwrap_or("-"),
            self.duration_seconds,
            self.intervals
        );
        let _ = writeln!(s, "\ntotals");
        for t in &self.totals {
            let _ = writeln!(
                s,
                "  {} {}: {} frames, {} bytes; ipv4 {}, ipv6 {}, non-ip {}, fragments {}",
                t.iface, t.direction, t.packets, t.bytes, t.ipv4, t.ipv6, t.non_ip, t.fragments
            );
            for (c, n) in &t.ether_classes {
                let _ = writeln!(s, "    non-ip {c}: {n}");
            }
            for (r, n) in &t.malformed {
                let _ = writeln!(s, "    malformed {r}: {n}");
            }
        }
        let _ = writeln!(s, "\nprotocol mix");
        let total = self.packets.max(1) as f64;
        for p in &self.protocols {
            let bytes = p.bytes.map_or("-".to_string(), |b| b.to_string());
            let _ = writeln!(
                s,
                "  {:<7} {:>12} frames {:>6.2} %  {:>14} bytes",
                p.class,
                p.packets,
                p.packets as f64 * 100.0 / total,
                bytes
            );
        }
        let approx = if self.approximate {
            " (approximate)"
        } else {
            ""
        };
        let _ = writeln!(s, "\ntop talkers by bytes sent{approx}");
        for t in &self.top_talkers {
            let _ = writeln!(
                s,
                "  {:<40} {:>12} bytes {:>10} frames",
                t.addr, t.bytes, t.packets
            );
        }
        let _ = writeln!(s, "\ntop flows by bytes{approx}");
        for f in &self.top_flows {
            let proto = f
                .protocol_name
                .map_or(f.protocol.to_string(), str::to_string);
            let vlan = if f.vlan != 0 {
                format!(" vlan {}", f.vlan)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  {} {}:{} -> {}:{}{vlan} {} {}: {} bytes, {} frames",
                proto,
                f.src_addr,
                f.src_port,
                f.dst_addr,
                f.dst_port,
                f.iface,
                f.direction,
                f.bytes,
                f.packets
            );
        }
        let _ = writeln!(s, "\nanomalies: {}", self.anomalies.len());
        for a in &self.anomalies {
            let _ = writeln!(
                s,
                "  {} {}: start {}, end {}, {:.1} s; peak {:.0} pps, {:.0} bit/s; {} {:.1}",
                a.kind,
                a.target,
                a.start,
                a.end.as_deref().unwrap_or("(active at end of capture)"),
                a.duration_seconds,
                a.peak_pps,
                a.peak_bps,
                a.signal,
                a.observed
            );
        }
        if self.flow_records > 0 {
            let _ = writeln!(s, "\nflow records written: {}", self.flow_records);
        }
        s
    }
}
