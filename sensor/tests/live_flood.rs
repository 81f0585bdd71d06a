//! Issue 7, "Flow-table flood": a generator sends live frames from over a
//! million distinct spoofed sources, for a bounded time, to the real
//! `sensor run` binary on the other end of a veth pair. The kernel flow map
//! fills and keeps working, the interface totals stay exact, packets not
//! attributed to a flow are counted, the agent's flow table and memory stay
//! within their configured bounds, /metrics answers every scrape during the
//! flood, and the flood is reported as a `flow_table_flood` anomaly.
//! Needs root.

mod common;

use std::{
    collections::HashSet,
    net::Ipv6Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use common::{
    e2e::{json_lines, quiesce, LinkStats, SensorProc, TempDir},
    livegen,
    netns::{wait_for, VethPair},
    scrape::{self, Series},
};

/// Frames sent, each from a source address never used before
/// (`2001:db8:CPU::k`, see `sensor_common::GEN_SPOOF_V6`).
const FRAMES: u64 = 1_300_000;
/// Each generated frame (IPv6/UDP, Ethernet header included).
const FRAME_BYTES: u64 = 64;
/// Capacity of each kernel flow buffer: a few thousand flows per interval
/// get an entry, every other frame of the flood is not attributed.
const FLOW_MAP_ENTRIES: u64 = 4096;
/// The agent's flow table bound: reached after two intervals of the flood.
const MAX_FLOWS: u64 = 8192;
/// The scan tracker's bound (`[detection] max_tracked_sources`).
const MAX_TRACKED_SOURCES: u64 = 4096;
/// Poll interval.
const INTERVAL: &str = "200ms";
/// Every scrape during the flood must complete within this.
const SCRAPE_LIMIT: Duration = Duration::from_secs(2);

/// Memory the configuration allows the agent on top of its own peak before
/// the flood (VmHWM once ready: binary, runtime, loaded object, empty
/// tables), in bytes:
/// - the flow table: `MAX_FLOWS` x 350 bytes (flowtable's documented
///   worst case per flow: a 152-byte entry, its key-to-slot hash entry and
///   two B-tree index entries, with slack);
/// - one drained interval in flight: `FLOW_MAP_ENTRIES` x (48-byte key +
///   72 bytes per possible CPU, as read from the kernel, + 1 KiB for the
///   merged delta, the per-flow work of rates and detectors, and an evicted
///   flow's record and JSON line);
/// - the scan tracker: `MAX_TRACKED_SOURCES` x 512 bytes (each one-packet
///   spoofed source holds two nearly empty capped sets);
/// - 4 MiB for allocator slack, the blocking pool's thread stacks and
///   scrape bodies.
///
/// Nothing in it grows with the number of distinct sources: a structure
/// keeping as little as 16 bytes per source (over 20 MB for `FRAMES`)
/// would break it.
fn memory_allowance() -> u64 {
    let in_flight = 48 + 72 * possible_cpus() + 1024;
    MAX_FLOWS * 350 + FLOW_MAP_ENTRIES * in_flight + MAX_TRACKED_SOURCES * 512 + (4 << 20)
}

/// Possible CPUs (/sys/devices/system/cpu/possible, e.g. "0-1"): per-CPU
/// map values are read for each of them.
fn possible_cpus() -> u64 {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .expect("/sys/devices/system/cpu/possible");
    text.trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                b.parse::<u64>().expect("cpu range") - a.parse::<u64>().expect("cpu range") + 1
            }
            None => 1,
        })
        .sum()
}

/// What the concurrent scraper saw.
#[derive(Debug, Default)]
struct Scrapes {
    count: u64,
    max_latency: Duration,
    max_table_flows: f64,
    max_map_entries: f64,
    max_rss: u64,
    anomaly_active_after: Option<Duration>,
    failure: Option<String>,
}

fn metrics(listen: &str) -> Vec<Series> {
    let (code, body, _) = scrape::get_within(listen, "/metrics", SCRAPE_LIMIT)
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(code, 200, "GET /metrics: {body}");
    scrape::parse(&body)
}

fn get(all: &[Series], name: &str, iface: &str) -> f64 {
    scrape::value(all, name, &[("iface", iface), ("direction", "ingress")])
        .unwrap_or_else(|| panic!("no {name} for {iface} ingress"))
}

fn global(all: &[Series], name: &str) -> f64 {
    scrape::value(all, name, &[]).unwrap_or_else(|| panic!("no {name}"))
}

/// Scrapes /metrics back to back until `stop`, recording what the flood
/// tests need; the first failed or slow scrape ends it with `failure`.
fn scrape_loop(
    listen: &str,
    pid: u32,
    target: &str,
    started: &OnceLock<Instant>,
    stop: &AtomicBool,
    out: &Mutex<Scrapes>,
) {
    while !stop.load(Ordering::SeqCst) {
        let r = scrape::get_within(listen, "/metrics", SCRAPE_LIMIT);
        let rss = scrape::status_bytes(pid, "VmRSS");
        let mut s = out.lock().expect("scrapes");
        s.count += 1;
        s.max_rss = s.max_rss.max(rss);
        let (code, body, took) = match r {
            Ok(r) => r,
            Err(e) => {
                s.failure = Some(format!("scrape {} failed: {e}", s.count));
                return;
            }
        };
        if code != 200 {
            s.failure = Some(format!("scrape {} answered {code}: {body}", s.count));
            return;
        }
        s.max_latency = s.max_latency.max(took);
        let all = scrape::parse(&body);
        s.max_table_flows = s
            .max_table_flows
            .max(global(&all, "sensor_flow_table_flows"));
        s.max_map_entries = s
            .max_map_entries
            .max(global(&all, "sensor_flow_map_entries"));
        let active = scrape::value(
            &all,
            "sensor_anomaly_active",
            &[("kind", "flow_table_flood"), ("target", target)],
        );
        if active == Some(1.0) && s.anomaly_active_after.is_none() {
            s.anomaly_active_after = started.get().map(|t| t.elapsed());
        }
    }
}

#[test]
fn million_source_flood_keeps_totals_exact_and_memory_bounded() {
    let test_start = Instant::now();
    let p = VethPair::new();
    // Only generated frames may cross the pair: no IPv6 (router
    // solicitations, MLD) on either end, and nothing else sends.
    p.disable_ipv6();
    let dir = TempDir::new("flood");
    let events = dir.path("events.jsonl");
    let flows = dir.path("flows.jsonl");
    let config = dir.path("sensor.toml");
    std::fs::write(
        &config,
        format!("[detection]\nmax_tracked_sources = {MAX_TRACKED_SOURCES}\nmax_baselines = 1024\n"),
    )
    .expect("writing the config file");
    let (fme, mf) = (FLOW_MAP_ENTRIES.to_string(), MAX_FLOWS.to_string());
    let mut sensor = SensorProc::start_every(
        &p.host,
        &dir,
        INTERVAL,
        &[
            "--flow-map-entries",
            &fme,
            "--max-flows",
            &mf,
            "--events",
            events.to_str().expect("path"),
            "--flows-file",
            flows.to_str().expect("path"),
            "--config",
            config.to_str().expect("path"),
        ],
    );
    let pid = sensor.proc.child.id();
    let before = quiesce(&p.host);
    let m0 = metrics(&sensor.listen);
    assert_eq!(
        get(&m0, "sensor_packets_total", &p.host),
        0.0,
        "frames on the quiet link before the flood:\n{}",
        sensor.logs()
    );
    let idle_hwm = scrape::status_bytes(pid, "VmHWM");
    let bound = idle_hwm + memory_allowance();
    let target = format!("iface:{}", p.host);

    let frame = livegen::ipv6_udp_64(p.host_v6.parse::<Ipv6Addr>().expect("host v6"));
    assert_eq!(frame.len() as u64, FRAME_BYTES);
    let started = OnceLock::new();
    let stop = AtomicBool::new(false);
    let scrapes = Mutex::new(Scrapes::default());
    let mut event_after = Duration::ZERO;
    let report = std::thread::scope(|s| {
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(&stop);
        let gen = s.spawn(|| {
            livegen::flood_v6(
                &p.ns,
                &p.peer_if,
                &frame,
                FRAMES,
                65_536,
                Duration::from_secs(30),
                &started,
            )
        });
        let scraper =
            s.spawn(|| scrape_loop(&sensor.listen, pid, &target, &started, &stop, &scrapes));
        let flood_event = || {
            json_lines(&events).iter().any(|e| {
                e["kind"] == "flow_table_flood" && e["target"] == *target && e["state"] == "start"
            })
        };
        // While the generator runs, or until it fails.
        wait_for(
            "a flow_table_flood start event on the interface",
            Duration::from_secs(40),
            || gen.is_finished() || flood_event(),
        );
        if flood_event() {
            event_after = started.get().expect("the flood started").elapsed();
        }
        let report = gen.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        if event_after.is_zero() {
            wait_for(
                "a flow_table_flood start event after the flood",
                Duration::from_secs(10),
                flood_event,
            );
            event_after = started.get().expect("the flood started").elapsed();
        }
        wait_for(
            "sensor_anomaly_active{kind=\"flow_table_flood\"} = 1 in a scrape",
            Duration::from_secs(10),
            || {
                scraper.is_finished()
                    || scrapes
                        .lock()
                        .expect("scrapes")
                        .anomaly_active_after
                        .is_some()
            },
        );
        report
    });
    let scrapes = scrapes.into_inner().expect("scrapes");
    let flood_secs = report.elapsed.as_secs_f64();
    println!(
        "generator: {} frames requested, {} program runs, {:.2} s ({:.0} frames/s)",
        report.requested,
        report.program_runs,
        flood_secs,
        report.requested as f64 / flood_secs
    );
    println!("scrapes: {scrapes:?}");
    assert_eq!(scrapes.failure, None, "/metrics failed during the flood");
    assert!(
        scrapes.count >= 5,
        "too few scrapes during the flood: {scrapes:?}"
    );
    assert_eq!(report.requested, FRAMES);
    assert_eq!(
        report.program_runs, FRAMES,
        "the generator program ran once per frame (each run a new source)"
    );

    // Totals: exact against the generator and the receiving end's counters.
    let after = quiesce(&p.host);
    let link = after.since(&before);
    let mut m = Vec::new();
    wait_for(
        "the sensor's totals to catch up with the link",
        Duration::from_secs(10),
        || {
            m = metrics(&sensor.listen);
            get(&m, "sensor_packets_total", &p.host) >= link.rx_packets as f64
        },
    );
    let packets = get(&m, "sensor_packets_total", &p.host) as u64;
    let bytes = get(&m, "sensor_bytes_total", &p.host) as u64;
    let un_packets = get(&m, "sensor_unattributed_packets_total", &p.host) as u64;
    let un_bytes = get(&m, "sensor_unattributed_bytes_total", &p.host) as u64;
    let evictions = global(&m, "sensor_flow_table_evictions_total");
    println!(
        "link {link:?}; sensor: {packets} packets, {bytes} bytes, {un_packets} not attributed, \
         {evictions} evictions"
    );
    assert_eq!(
        link,
        LinkStats {
            rx_packets: FRAMES,
            // Whole frames: they arrive as XDP frames (XDP_TX on the
            // sending end, ndo_xdp_xmit), Ethernet header included, unlike
            // the 14-byte-short rx_bytes of frames the peer's stack sends.
            rx_bytes: FRAMES * FRAME_BYTES,
            tx_packets: 0,
            tx_bytes: 0,
        },
        "the receiving end's counters"
    );
    assert_eq!(packets, FRAMES, "sensor_packets_total vs frames sent");
    assert_eq!(
        bytes,
        FRAMES * FRAME_BYTES,
        "sensor_bytes_total vs bytes sent"
    );
    assert!(
        un_packets > FRAMES / 2,
        "most of the flood cannot get a flow entry: {un_packets} not attributed"
    );
    assert_eq!(un_bytes, un_packets * FRAME_BYTES);

    // Kernel map: full in some interval, and emptied and refilled after.
    assert_eq!(
        scrapes.max_map_entries, FLOW_MAP_ENTRIES as f64,
        "the kernel flow buffer never filled"
    );
    // Flow table: at its bound, never above.
    assert_eq!(
        scrapes.max_table_flows, MAX_FLOWS as f64,
        "flow table size (max over scrapes) vs --max-flows"
    );
    assert!(evictions > 0.0, "the flow table never evicted");
    // Memory.
    let hwm = scrape::status_bytes(pid, "VmHWM");
    println!(
        "memory: idle VmHWM {:.1} MiB, peak VmHWM {:.1} MiB, max VmRSS {:.1} MiB, \
         bound {:.1} MiB (idle + {:.1} MiB)",
        idle_hwm as f64 / 1048576.0,
        hwm as f64 / 1048576.0,
        scrapes.max_rss as f64 / 1048576.0,
        bound as f64 / 1048576.0,
        memory_allowance() as f64 / 1048576.0
    );
    assert!(
        hwm <= bound,
        "agent peak memory {hwm} bytes exceeds the configured bound {bound}"
    );
    // The anomaly, as an event and as a metric.
    println!(
        "flow_table_flood: event after {event_after:?}, metric after {:?}",
        scrapes.anomaly_active_after
    );
    assert!(
        scrapes.anomaly_active_after.is_some(),
        "sensor_anomaly_active{{kind=\"flow_table_flood\",target=\"{target}\"}} never 1"
    );

    // Shutdown: every flow is written; flows + not attributed = all.
    let status = sensor
        .proc
        .terminate(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("the sensor did not exit after SIGTERM:\n{}", sensor.logs()));
    assert!(status.success(), "sensor exit {status}:\n{}", sensor.logs());
    assert_eq!(
        scrape::programs_on(&p.host),
        Vec::<String>::new(),
        "programs left on the interface after exit"
    );
    let records = json_lines(&flows);
    let mut sources = HashSet::new();
    let (mut rec_packets, mut rec_bytes) = (0u64, 0u64);
    for r in records
        .iter()
        .filter(|r| r["iface"] == *p.host && r["direction"] == "ingress")
    {
        let src = r["src_addr"].as_str().expect("src_addr");
        let addr: Ipv6Addr = src.parse().expect("a generated IPv6 source");
        assert_eq!(&addr.octets()[..4], &[0x20, 0x01, 0x0d, 0xb8], "{r}");
        assert_eq!(r["packets"], 1, "each source sent exactly one frame: {r}");
        assert!(sources.insert(addr), "source {src} in two records");
        rec_packets += r["packets"].as_u64().expect("packets");
        rec_bytes += r["bytes"].as_u64().expect("bytes");
    }
    println!(
        "{} flow records ({} distinct sources attributed), {rec_packets} packets; \
         test ran {:?}",
        records.len(),
        sources.len(),
        test_start.elapsed()
    );
    assert!(
        sources.len() as u64 > 2 * FLOW_MAP_ENTRIES,
        "the kernel map kept attributing new flows after filling: {} flows",
        sources.len()
    );
    assert_eq!(
        rec_packets + un_packets,
        packets,
        "flow records + not attributed vs sensor_packets_total"
    );
    assert_eq!(rec_bytes + un_bytes, bytes, "bytes likewise");
}
