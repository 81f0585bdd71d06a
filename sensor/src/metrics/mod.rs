//! The Prometheus exporter's metrics: exact kernel totals, self-metrics,
//! rates and bounded top-K series. METRICS.md documents every family.
//!
//! Kernel totals are cumulative in the kernel; the exported counters are
//! advanced by the difference between successive intervals, so they equal
//! the kernel's counters (the first interval adds the whole cumulative
//! value). If a kernel counter goes backwards (the programs were reloaded)
//! the new kernel value is added as the delta, the exported counter keeps
//! rising (a counter never goes down) and
//! `sensor_kernel_resets_total` counts the event; from then on the
//! exported value is the sum over the kernel counters' lifetimes.
//!
//! Every family's series with closed label sets exist from the first scrape
//! (zero) for each interface added with [`Metrics::add_iface`]. Top-K series
//! are replaced as a whole each interval, so their number never exceeds
//! `top_k` per interface, direction, smoothing and family. All updates of
//! one call are made under a lock the scrape also takes, so a scrape never
//! sees half an interval.
//!
//! Layout: this file ([`Metrics`], [`render`]); [`families`] (the table of
//! names, types, HELP texts and labels); [`doc`] (the METRICS.md parser);
//! `tests` (golden output, promtool, docs agreement).

pub mod doc;
pub mod families;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sensor_common::{Direction, EtherClass, FlowKey, L4Class, Malformed, Totals};

use crate::model::{FlowKeyExt, FlowTableStats, IfaceTotals, Interval, KernelStats};
use crate::rates::{totals_delta, ProtoClass, Ranked, RateSnapshot, Smoothing};
use families::Family;

/// Errors of the metrics module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A family could not be created or registered.
    #[error(
        "cannot register metric {name}: {source}; each Registry takes one Metrics, \
         create a fresh prometheus::Registry"
    )]
    Register {
        name: &'static str,
        source: prometheus::Error,
    },
    /// The registry's contents could not be encoded.
    #[error("cannot encode metrics as text: {source}; a collector returned an invalid family")]
    Encode { source: prometheus::Error },
    /// METRICS.md does not follow its format.
    #[error("METRICS.md line {line}: {what}; follow the format described at its top")]
    Doc { line: usize, what: String },
}

/// What `sensor_build_info` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    /// Source revision (git commit), or `unknown`.
    pub revision: String,
}

impl BuildInfo {
    /// This build: the crate version and `SENSOR_GIT_REVISION` if it was set
    /// at compile time.
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("SENSOR_GIT_REVISION")
                .unwrap_or("unknown")
                .to_string(),
        }
    }
}

/// Registers its parts as one collector whose `collect` takes the lock the
/// observers hold while they update.
struct Gate {
    lock: Arc<Mutex<()>>,
    parts: Vec<Box<dyn Collector>>,
}

impl Collector for Gate {
    fn desc(&self) -> Vec<&Desc> {
        self.parts.iter().flat_map(|c| c.desc()).collect()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.parts.iter().flat_map(|c| c.collect()).collect()
    }
}

fn opts(f: &Family) -> Opts {
    Opts::new(f.name, f.help)
}

fn err(f: &Family) -> impl Fn(prometheus::Error) -> MetricsError {
    let name = f.name;
    move |source| MetricsError::Register { name, source }
}

/// Creates the collector for a family and keeps a clone in `parts`.
fn add<C: Collector + Clone + 'static>(parts: &mut Vec<Box<dyn Collector>>, c: C) -> C {
    parts.push(Box::new(c.clone()));
    c
}

/// The exporter's metrics; see the module docs.
pub struct Metrics {
    gate: Arc<Mutex<()>>,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    ethertype: IntCounterVec,
    l4: IntCounterVec,
    fragments: IntCounterVec,
    malformed: IntCounterVec,
    unattr_packets: IntCounterVec,
    unattr_bytes: IntCounterVec,
    resets: IntCounterVec,
    tcp_flags: IntCounterVec,
    attached: IntGaugeVec,
    xdp_mode: IntGaugeVec,
    map_capacity: IntGauge,
    map_entries: IntGauge,
    drain: Histogram,
    bpf_seconds: CounterVec,
    bpf_runs: IntCounterVec,
    poll: Histogram,
    poll_errors: IntCounter,
    poll_interval: Gauge,
    table_flows: IntGauge,
    table_capacity: IntGauge,
    evictions: IntCounter,
    records: IntCounterVec,
    rate_packets: GaugeVec,
    rate_bytes: GaugeVec,
    proto_packets: GaugeVec,
    proto_bytes: GaugeVec,
    /// Sources, destinations and flows: (bytes/s, packets/s) each.
    top: [(GaugeVec, GaugeVec); 3],
    names: Vec<String>,
    ifaces: Vec<String>,
    /// Interface names by ifindex, learnt from totals and attachments.
    iface_names: HashMap<u32, String>,
    prev_totals: HashMap<(String, Direction), Totals>,
    prev_programs: HashMap<&'static str, (u64, u64)>,
    prev_evictions: u64,
    prev_records: HashMap<&'static str, u64>,
}

impl Metrics {
    /// Creates every family and registers them on `registry`.
    pub fn new(registry: &Registry, build: BuildInfo) -> Result<Metrics, MetricsError> {
        use families as f;
        let mut p: Vec<Box<dyn Collector>> = Vec::new();
        let icv = |p: &mut Vec<Box<dyn Collector>>, fam: &Family| {
            IntCounterVec::new(opts(fam), fam.labels)
                .map(|c| add(p, c))
                .map_err(err(fam))
        };
        let igv = |p: &mut Vec<Box<dyn Collector>>, fam: &Family| {
            IntGaugeVec::new(opts(fam), fam.labels)
                .map(|c| add(p, c))
                .map_err(err(fam))
        };
        let gv = |p: &mut Vec<Box<dyn Collector>>, fam: &Family| {
            GaugeVec::new(opts(fam), fam.labels)
                .map(|c| add(p, c))
                .map_err(err(fam))
        };
        let ig = |p: &mut Vec<Box<dyn Collector>>, fam: &Family| {
            IntGauge::with_opts(opts(fam))
                .map(|c| add(p, c))
                .map_err(err(fam))
        };
        let hist = |p: &mut Vec<Box<dyn Collector>>, fam: &Family| {
            let o = HistogramOpts::new(fam.name, fam.help).buckets(f::POLL_BUCKETS.to_vec());
            Histogram::with_opts(o).map(|c| add(p, c)).map_err(err(fam))
        };
        let mut m = Metrics {
            gate: Arc::new(Mutex::new(())),
            packets: icv(&mut p, &f::PACKETS)?,
            bytes: icv(&mut p, &f::BYTES)?,
            ethertype: icv(&mut p, &f::ETHERTYPE)?,
            l4: icv(&mut p, &f::L4)?,
            fragments: icv(&mut p, &f::FRAGMENTS)?,
            malformed: icv(&mut p, &f::MALFORMED)?,
            unattr_packets: icv(&mut p, &f::UNATTR_PACKETS)?,
            unattr_bytes: icv(&mut p, &f::UNATTR_BYTES)?,
            resets: icv(&mut p, &f::RESETS)?,
            tcp_flags: icv(&mut p, &f::TCP_FLAGS)?,
            attached: {
                let build_info = igv(&mut p, &f::BUILD_INFO)?;
                build_info
                    .with_label_values(&[build.version.as_str(), build.revision.as_str()])
                    .set(1);
                igv(&mut p, &f::ATTACHED)?
            },
            xdp_mode: igv(&mut p, &f::XDP_MODE)?,
            map_capacity: ig(&mut p, &f::MAP_CAPACITY)?,
            map_entries: ig(&mut p, &f::MAP_ENTRIES)?,
            drain: hist(&mut p, &f::DRAIN_DURATION)?,
            bpf_seconds: CounterVec::new(opts(&f::BPF_RUN_SECONDS), f::BPF_RUN_SECONDS.labels)
                .map(|c| add(&mut p, c))
                .map_err(err(&f::BPF_RUN_SECONDS))?,
            bpf_runs: icv(&mut p, &f::BPF_RUNS)?,
            poll: hist(&mut p, &f::POLL_DURATION)?,
            poll_errors: IntCounter::with_opts(opts(&f::POLL_ERRORS))
                .map(|c| add(&mut p, c))
                .map_err(err(&f::POLL_ERRORS))?,
            poll_interval: Gauge::with_opts(opts(&f::POLL_INTERVAL))
                .map(|c| add(&mut p, c))
                .map_err(err(&f::POLL_INTERVAL))?,
            table_flows: ig(&mut p, &f::TABLE_FLOWS)?,
            table_capacity: ig(&mut p, &f::TABLE_CAPACITY)?,
            evictions: IntCounter::with_opts(opts(&f::TABLE_EVICTIONS))
                .map(|c| add(&mut p, c))
                .map_err(err(&f::TABLE_EVICTIONS))?,
            records: icv(&mut p, &f::RECORDS)?,
            rate_packets: gv(&mut p, &f::RATE_PACKETS)?,
            rate_bytes: gv(&mut p, &f::RATE_BYTES)?,
            proto_packets: gv(&mut p, &f::PROTO_PACKETS)?,
            proto_bytes: gv(&mut p, &f::PROTO_BYTES)?,
            top: [
                (
                    gv(&mut p, &f::TOP_SRC_BYTES)?,
                    gv(&mut p, &f::TOP_SRC_PACKETS)?,
                ),
                (
                    gv(&mut p, &f::TOP_DST_BYTES)?,
                    gv(&mut p, &f::TOP_DST_PACKETS)?,
                ),
                (
                    gv(&mut p, &f::TOP_FLOW_BYTES)?,
                    gv(&mut p, &f::TOP_FLOW_PACKETS)?,
                ),
            ],
            names: Vec::new(),
            ifaces: Vec::new(),
            iface_names: HashMap::new(),
            prev_totals: HashMap::new(),
            prev_programs: HashMap::new(),
            prev_evictions: 0,
            prev_records: HashMap::new(),
        };
        for reason in f::RECORD_REASONS {
            m.records.with_label_values(&[reason]);
        }
        m.names = p
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| d.fq_name.clone())
            .collect();
        m.names.sort();
        let gate = Gate {
            lock: Arc::clone(&m.gate),
            parts: p,
        };
        registry
            .register(Box::new(gate))
            .map_err(|source| MetricsError::Register {
                name: "sensor_*",
                source,
            })?;
        Ok(m)
    }

    /// Names of every family this instance registered, sorted.
    pub fn family_names(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Creates an interface's series with closed label sets (at zero), so
    /// they exist from the first scrape. Idempotent.
    pub fn add_iface(&mut self, iface: &str) {
        let gate = Arc::clone(&self.gate);
        let _guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.init_iface(iface);
    }

    fn init_iface(&mut self, iface: &str) {
        if self.ifaces.iter().any(|i| i == iface) {
            return;
        }
        self.ifaces.push(iface.to_string());
        for dir in [Direction::Ingress, Direction::Egress] {
            let id = [iface, dir.as_str()];
            for c in [
                &self.packets,
                &self.bytes,
                &self.fragments,
                &self.unattr_packets,
                &self.unattr_bytes,
                &self.resets,
            ] {
                c.with_label_values(&id);
            }
            for class in ["ipv4", "ipv6"]
                .into_iter()
                .chain(EtherClass::ALL.iter().map(|c| c.as_str()))
            {
                self.ethertype
                    .with_label_values(&[iface, dir.as_str(), class]);
            }
            for flag in families::TCP_FLAG_NAMES {
                self.tcp_flags
                    .with_label_values(&[iface, dir.as_str(), flag]);
            }
            for class in L4Class::ALL {
                self.l4
                    .with_label_values(&[iface, dir.as_str(), class.as_str()]);
            }
            for reason in Malformed::ALL {
                self.malformed
                    .with_label_values(&[iface, dir.as_str(), reason.as_str()]);
            }
            for s in Smoothing::ALL {
                let l = [iface, dir.as_str(), s.as_str()];
                self.rate_packets.with_label_values(&l);
                self.rate_bytes.with_label_values(&l);
                for class in ProtoClass::ALL {
                    let l = [iface, dir.as_str(), class.as_str(), s.as_str()];
                    self.proto_packets.with_label_values(&l);
                    if class != ProtoClass::NonIp {
                        self.proto_bytes.with_label_values(&l);
                    }
                }
            }
        }
        for prog in families::PROGRAMS {
            self.attached.with_label_values(&[iface, prog]);
        }
        for mode in families::XDP_MODES {
            self.xdp_mode.with_label_values(&[iface, mode]);
        }
    }

    /// Records one interval: kernel totals, kernel state, rates and top-K.
    pub fn observe_interval(&mut self, iv: &Interval, rates: &RateSnapshot) {
        let gate = Arc::clone(&self.gate);
        let _guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        for t in &iv.totals {
            self.init_iface(&t.iface);
            self.iface_names.insert(t.ifindex, t.iface.clone());
            self.count(t);
        }
        if let Some(k) = &iv.kernel {
            self.kernel(k);
        }
        self.tcp_flags(iv);
        self.rates(rates);
    }

    /// Adds the interval's per-flow TCP flag counts. Flows on an ifindex
    /// with no known name are labelled `if{ifindex}`, as the rates do.
    fn tcp_flags(&mut self, iv: &Interval) {
        let mut sums: HashMap<(u32, Direction), [u64; 4]> = HashMap::new();
        for f in &iv.flows {
            let Ok(dir) = Direction::try_from(f.key.direction) else {
                continue;
            };
            let v = &f.value;
            let s = sums.entry((f.key.ifindex, dir)).or_default();
            for (acc, n) in s.iter_mut().zip([v.syn, v.syn_ack, v.fin, v.rst]) {
                *acc += n;
            }
        }
        for ((ifindex, dir), counts) in sums {
            let name = self
                .iface_names
                .get(&ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{ifindex}"));
            for (flag, n) in families::TCP_FLAG_NAMES.iter().zip(counts) {
                self.tcp_flags
                    .with_label_values(&[name.as_str(), dir.as_str(), flag])
                    .inc_by(n);
            }
        }
    }

    /// Sets `sensor_poll_interval_seconds` to the configured interval.
    pub fn set_poll_interval(&mut self, interval: Duration) {
        let gate = Arc::clone(&self.gate);
        let _guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.poll_interval.set(interval.as_secs_f64());
    }

    fn count(&mut self, t: &IfaceTotals) {
        let id = (t.iface.clone(), t.direction);
        let (d, reset) = match self.prev_totals.get(&id) {
            Some(prev) => totals_delta(prev, &t.totals),
            None => (t.totals, false),
        };
        self.prev_totals.insert(id, t.totals);
        let (iface, dir) = (t.iface.as_str(), t.direction.as_str());
        let l = [iface, dir];
        self.packets.with_label_values(&l).inc_by(d.packets);
        self.bytes.with_label_values(&l).inc_by(d.bytes);
        self.fragments.with_label_values(&l).inc_by(d.fragments);
        self.unattr_packets
            .with_label_values(&l)
            .inc_by(d.not_attributed);
        self.unattr_bytes
            .with_label_values(&l)
            .inc_by(d.not_attributed_bytes);
        if reset {
            self.resets.with_label_values(&l).inc();
        }
        self.ethertype
            .with_label_values(&[iface, dir, "ipv4"])
            .inc_by(d.ipv4);
        self.ethertype
            .with_label_values(&[iface, dir, "ipv6"])
            .inc_by(d.ipv6);
        for (c, n) in EtherClass::ALL.iter().zip(d.ether_class) {
            self.ethertype
                .with_label_values(&[iface, dir, c.as_str()])
                .inc_by(n);
        }
        for (c, n) in L4Class::ALL.iter().zip(d.l4) {
            self.l4
                .with_label_values(&[iface, dir, c.as_str()])
                .inc_by(n);
        }
        for (r, n) in Malformed::ALL.iter().zip(d.malformed) {
            self.malformed
                .with_label_values(&[iface, dir, r.as_str()])
                .inc_by(n);
        }
    }

    fn kernel(&mut self, k: &KernelStats) {
        self.map_capacity.set(clamp_i64(k.flow_map_capacity));
        self.map_entries.set(clamp_i64(k.flow_map_occupancy));
        self.drain.observe(k.drain_ns as f64 / 1e9);
        for p in &k.programs {
            let (Some(time), Some(runs)) = (p.run_time_ns, p.run_count) else {
                // Stats switched off: the series disappear until they return.
                let _ = self.bpf_seconds.remove_label_values(&[p.program]);
                let _ = self.bpf_runs.remove_label_values(&[p.program]);
                self.prev_programs.remove(p.program);
                continue;
            };
            let (dt, dr) = match self.prev_programs.get(p.program) {
                Some(&(t0, r0)) if time >= t0 && runs >= r0 => (time - t0, runs - r0),
                _ => (time, runs),
            };
            self.prev_programs.insert(p.program, (time, runs));
            self.bpf_seconds
                .with_label_values(&[p.program])
                .inc_by(dt as f64 / 1e9);
            self.bpf_runs.with_label_values(&[p.program]).inc_by(dr);
        }
        for a in &k.attachments {
            self.init_iface(&a.iface);
            self.iface_names.insert(a.ifindex, a.iface.clone());
            let iface = a.iface.as_str();
            self.attached
                .with_label_values(&[iface, "xdp"])
                .set(i64::from(a.xdp_attached));
            self.attached
                .with_label_values(&[iface, "tc"])
                .set(i64::from(a.tc_attached));
            for mode in families::XDP_MODES {
                self.xdp_mode
                    .with_label_values(&[iface, mode])
                    .set(i64::from(a.xdp_attached && a.xdp_mode == mode));
            }
        }
    }

    fn rates(&mut self, r: &RateSnapshot) {
        for i in &r.ifaces {
            let (iface, dir) = (i.iface.as_str(), i.direction.as_str());
            for (s, pps, bps) in [
                (Smoothing::Interval, i.packets.interval, i.bytes.interval),
                (Smoothing::Ewma, i.packets.ewma, i.bytes.ewma),
            ] {
                let l = [iface, dir, s.as_str()];
                self.rate_packets.with_label_values(&l).set(pps);
                self.rate_bytes.with_label_values(&l).set(bps);
            }
        }
        for p in &r.protocols {
            let (iface, dir, class) = (p.iface.as_str(), p.direction.as_str(), p.class.as_str());
            let pick = |s: Smoothing, v: &crate::rates::Smoothed| match s {
                Smoothing::Interval => v.interval,
                Smoothing::Ewma => v.ewma,
            };
            for s in Smoothing::ALL {
                let l = [iface, dir, class, s.as_str()];
                self.proto_packets
                    .with_label_values(&l)
                    .set(pick(s, &p.packets));
                if let Some(b) = &p.bytes {
                    self.proto_bytes.with_label_values(&l).set(pick(s, b));
                }
            }
        }
        for (bytes, packets) in &self.top {
            bytes.reset();
            packets.reset();
        }
        for t in &r.top {
            let base = [t.iface.as_str(), t.direction.as_str(), t.smoothing.as_str()];
            for (list, which) in [(&t.sources, 0), (&t.destinations, 1)] {
                let (bytes, packets) = &self.top[which];
                for e in list {
                    let (rank, addr) = (e.rank.to_string(), e.key.to_string());
                    let l = [base[0], base[1], base[2], rank.as_str(), addr.as_str()];
                    set_pair(bytes, packets, &l, e);
                }
            }
            let (bytes, packets) = &self.top[2];
            for e in &t.flows {
                let labels = flow_labels(&e.key);
                let rank = e.rank.to_string();
                let mut l: Vec<&str> = vec![base[0], base[1], base[2], rank.as_str()];
                l.extend(labels.iter().map(String::as_str));
                set_pair(bytes, packets, &l, e);
            }
        }
    }

    /// Records the flow table's bookkeeping after an interval.
    pub fn observe_flowtable(&mut self, stats: &FlowTableStats) {
        let gate = Arc::clone(&self.gate);
        let _guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.table_flows.set(clamp_i64(stats.size));
        self.table_capacity.set(clamp_i64(stats.capacity));
        self.evictions
            .inc_by(monotonic_delta(self.prev_evictions, stats.evictions));
        self.prev_evictions = stats.evictions;
        for (reason, n) in &stats.records {
            let prev = self.prev_records.insert(reason, *n).unwrap_or(0);
            self.records
                .with_label_values(&[*reason])
                .inc_by(monotonic_delta(prev, *n));
        }
    }

    /// Records one poll's duration and whether it succeeded.
    pub fn observe_poll(&mut self, duration: Duration, ok: bool) {
        let gate = Arc::clone(&self.gate);
        let _guard = gate.lock().unwrap_or_else(PoisonError::into_inner);
        self.poll.observe(duration.as_secs_f64());
        if !ok {
            self.poll_errors.inc();
        }
    }
}

fn set_pair<K>(bytes: &GaugeVec, packets: &GaugeVec, labels: &[&str], e: &Ranked<K>) {
    bytes.with_label_values(labels).set(e.rate.bytes_per_second);
    packets
        .with_label_values(labels)
        .set(e.rate.packets_per_second);
}

/// `protocol, src_address, src_port, dst_address, dst_port` of a top flow.
/// For ICMP the ports are the type and code, as in the flow key.
fn flow_labels(k: &FlowKey) -> [String; 5] {
    let protocol = match k.protocol {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        132 => "sctp".to_string(),
        n => n.to_string(),
    };
    [
        protocol,
        k.src().to_string(),
        k.src_port.to_string(),
        k.dst().to_string(),
        k.dst_port.to_string(),
    ]
}

/// Growth of a cumulative value; a value that went backwards restarted.
fn monotonic_delta(prev: u64, cur: u64) -> u64 {
    cur.checked_sub(prev).unwrap_or(cur)
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The registry's contents in the text exposition format (version 0.0.4).
pub fn try_render(registry: &Registry) -> Result<String, MetricsError> {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .map_err(|source| MetricsError::Encode { source })?;
    String::from_utf8(buf).map_err(|e| MetricsError::Encode {
        source: prometheus::Error::Msg(e.to_string()),
    })
}

/// Like [`try_render`]; an encoding error becomes a comment line (the
/// families encoded before it are kept out, so nothing partial is served).
pub fn render(registry: &Registry) -> String {
    try_render(registry).unwrap_or_else(|e| format!("# {e}\n"))
}

/// Worst-case number of series the exporter and the HTTP endpoint expose
/// for `ifaces` interfaces and rankings of `top_k` (the formula METRICS.md
/// states; detection's families come on top).
pub fn worst_case_series(ifaces: usize, top_k: usize) -> usize {
    use families::{POLL_BUCKETS, PROGRAMS, RECORD_REASONS, XDP_MODES};
    use sensor_common::{ETHER_CLASSES, L4_CLASSES, MALFORMED_REASONS};
    let smoothings = Smoothing::ALL.len();
    let classes = ProtoClass::ALL.len();
    let per_direction = 6
        + families::TCP_FLAG_NAMES.len()
        + (2 + ETHER_CLASSES)
        + L4_CLASSES
        + MALFORMED_REASONS
        + 2 * smoothings
        + classes * smoothings
        + (classes - 1) * smoothings
        + 6 * smoothings * top_k;
    let per_iface = 2 * per_direction + PROGRAMS.len() + XDP_MODES.len();
    let histogram = POLL_BUCKETS.len() + 3;
    let poll = histogram + 2;
    let global = 1 + 2 + histogram + 2 * PROGRAMS.len() + poll + 3 + RECORD_REASONS.len();
    let http = crate::http::SCRAPE_BUCKETS.len() + 3 + crate::http::CODES.len();
    ifaces * per_iface + global + http
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
