//! End-to-end tests of the sensor binary: real traffic from real tools
//! between a network namespace and the root namespace over a veth pair, the
//! sensor attached to the root end, Debian's Prometheus scraping it every
//! second with the repository's alert rules loaded, and tshark as the
//! reference counter on the same interface.
//!
//! - `prometheus_totals_equal_traffic`: `sensor_packets_total` and
//!   `sensor_bytes_total`, queried through Prometheus's HTTP API, equal the
//!   interface's own counters and tshark's frames and bytes, exactly.
//! - `flow_records_equal_tshark_and_shutdown_flushes_all`: after SIGTERM the
//!   sensor exits 0 within 2 s and its flow records, summed per flow, equal
//!   tshark's per-flow counts.
//! - `every_dashboard_panel_returns_data`: with traffic and attacks running,
//!   `grafana/check.py --prometheus` finds data for every panel.
//!
//! Byte counts: veth counts `skb->len` at transmit, which includes the
//! 14-byte Ethernet header, in both `rx_bytes` (the receiving end) and
//! `tx_bytes` (the peer's receive counter mirrored); tshark's `frame.len`
//! and the sensor (XDP `data_end - data`, TC `skb->len`) include it too, so
//! all three are compared without any per-packet correction (measured:
//! equal on 6.18).
//!
//! Needs root and the tools `cargo xtask test` installs.

mod common;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    capture::{Capture, Key},
    e2e::{
        json_lines, ns_bg, ns_run, prepare_link, quiesce, LinkStats, Prometheus, SensorProc,
        TempDir,
    },
    netns::{sh, wait_for, VethPair},
};

const PROBE_PORT: u16 = 9;

fn in_test_prefix(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18,
        IpAddr::V6(v6) => v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8,
    }
}

/// The capture probe (UDP to the discard port) and the namespace's
/// port-unreachable answers to it.
fn is_probe(k: &Key, peer_v4: &str) -> bool {
    (k.3 == 17 && k.5 == PROBE_PORT) || (k.3 == 1 && k.4 == 3 && k.1.to_string() == peer_v4)
}

fn start_capture(p: &VethPair) -> Capture {
    let (host, peer) = (p.host_v4.clone(), p.peer_v4.clone());
    Capture::start(&p.host, move || {
        let sock = std::net::UdpSocket::bind((host.as_str(), 0)).expect("probe socket");
        let _ = sock.send_to(b"probe", (peer.as_str(), PROBE_PORT));
    })
}

/// Known traffic of every protocol the sensor parses, both directions,
/// bounded in count: ICMP, ICMPv6, UDP, TCP (SYN/RST and a short iperf3
/// transfer) and IPv4 fragments.
fn known_traffic(p: &VethPair) {
    ns_run(
        p,
        &["ping", "-c", "50", "-i", "0.01", "-W", "1", &p.host_v4],
    );
    ns_run(
        p,
        &[
            "ping", "-6", "-c", "20", "-i", "0.01", "-W", "1", &p.host_v6,
        ],
    );
    ns_run(
        p,
        &[
            "hping3", "--udp", "-p", "5000", "-c", "200", "-i", "u1000", &p.host_v4,
        ],
    );
    ns_run(
        p,
        &[
            "hping3", "-S", "-p", "80", "-c", "50", "-i", "u2000", &p.host_v4,
        ],
    );
    ns_run(
        p,
        &["ping", "-c", "10", "-i", "0.01", "-s", "3000", &p.host_v4],
    );
    iperf3(p, 25301);
}

fn iperf3(p: &VethPair, port: u16) {
    let port_s = port.to_string();
    let mut srv = Command::new("iperf3");
    srv.args(["-s", "-1", "-B", &p.host_v4, "-p", &port_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _srv = common::e2e::Proc::spawn("iperf3 server", &mut srv);
    wait_for("iperf3 to listen", Duration::from_secs(10), || {
        let out = sh(&["ss", "-ltnH", &format!("sport = :{port}")]);
        !out.stdout.is_empty()
    });
    let out = p
        .ns_cmd(&[
            "iperf3", "-c", &p.host_v4, "-p", &port_s, "-t", "1", "-b", "20M",
        ])
        .output()
        .expect("iperf3 client");
    assert!(
        out.status.success(),
        "iperf3 client: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ingress and egress packets and bytes of one interface in Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PromTotals {
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
}

fn prom_totals(prom: &Prometheus, iface: &str) -> PromTotals {
    let get = |metric: &str, dir: &str| -> u64 {
        prom.value(&format!(
            "{metric}{{iface=\"{iface}\",direction=\"{dir}\"}}"
        ))
        .unwrap_or_else(|| panic!("no {metric} for {iface} {dir} in Prometheus")) as u64
    };
    PromTotals {
        rx_packets: get("sensor_packets_total", "ingress"),
        tx_packets: get("sensor_packets_total", "egress"),
        rx_bytes: get("sensor_bytes_total", "ingress"),
        tx_bytes: get("sensor_bytes_total", "egress"),
    }
}

/// Waits until Prometheus holds a sample of the totals scraped more than
/// two poll intervals after `since`, so it reflects every frame before it.
fn prom_totals_after(prom: &Prometheus, iface: &str, since: SystemTime) -> PromTotals {
    let since = since.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() + 2.2;
    let expr = format!("min(timestamp(sensor_packets_total{{iface=\"{iface}\"}}))");
    wait_for(
        "a Prometheus sample after the quiet point",
        Duration::from_secs(20),
        || prom.value(&expr).is_some_and(|t| t >= since),
    );
    prom_totals(prom, iface)
}

fn frames_settled(cap: &Capture) -> u64 {
    let mut last = cap.frames_seen();
    let mut still = Instant::now();
    wait_for("tshark to settle", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = cap.frames_seen();
        if now != last {
            last = now;
            still = Instant::now();
        }
        still.elapsed() >= Duration::from_millis(300)
    });
    last
}

/// A quiet point: the interface's counters, tshark's live frame count and
/// Prometheus's totals, all covering the same frames (the interface stayed
/// quiet from before the first read until after a Prometheus sample taken
/// more than two poll intervals later).
fn settle(p: &VethPair, prom: &Prometheus, cap: &Capture) -> (LinkStats, u64, PromTotals) {
    (0..5)
        .find_map(|_| {
            let s = quiesce(&p.host);
            let f = frames_settled(cap);
            let t = prom_totals_after(prom, &p.host, SystemTime::now());
            (LinkStats::read(&p.host) == s && cap.frames_seen() == f).then_some((s, f, t))
        })
        .expect("the interface never stayed quiet for a Prometheus scrape")
}

/// veth with a native XDP program receives through its NAPI ring, and
/// counts `rx_bytes` there, after `eth_type_trans` pulled the Ethernet
/// header: 14 bytes per frame fewer than the frame (measured on 6.18;
/// `tx_bytes`, the peer's receive count without XDP, includes the header).
const VETH_XDP_RX_HEADER: u64 = 14;

#[test]
fn prometheus_totals_equal_traffic() {
    let p = VethPair::new();
    prepare_link(&p);
    let dir = TempDir::new("totals");
    let sensor = SensorProc::start(&p.host, &dir, &["--xdp-mode", "native"]);
    let prom = Prometheus::start(&sensor.listen, &dir);
    let cap = start_capture(&p);

    let (s0, f0, p0) = settle(&p, &prom, &cap);
    known_traffic(&p);
    let (s1, f1, p1) = settle(&p, &prom, &cap);
    let reference = cap.finish();

    let link = s1.since(&s0);
    let got = PromTotals {
        rx_packets: p1.rx_packets - p0.rx_packets,
        tx_packets: p1.tx_packets - p0.tx_packets,
        rx_bytes: p1.rx_bytes - p0.rx_bytes,
        tx_bytes: p1.tx_bytes - p0.tx_bytes,
    };
    // tshark's frames before the first quiet point are the capture probes
    // and their answers, nothing else (checked below); the rest is the
    // window. Its direction follows the source address.
    let probes = reference
        .flows
        .iter()
        .filter(|(k, _)| is_probe(k, &p.peer_v4))
        .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
    let peer: [IpAddr; 2] = [p.peer_v4.parse().unwrap(), p.peer_v6.parse().unwrap()];
    let host: [IpAddr; 2] = [p.host_v4.parse().unwrap(), p.host_v6.parse().unwrap()];
    let mut shark = PromTotals::default();
    let mut other = (0, 0);
    for (k, v) in reference
        .flows
        .iter()
        .filter(|(k, _)| !is_probe(k, &p.peer_v4))
    {
        if peer.contains(&k.1) {
            shark.rx_packets += v.0;
            shark.rx_bytes += v.1;
        } else if host.contains(&k.1) {
            shark.tx_packets += v.0;
            shark.tx_bytes += v.1;
        } else {
            println!("other frames: {k:?} {v:?}");
            other = (other.0 + v.0, other.1 + v.1);
        }
    }
    println!("link delta:       {link:?}");
    println!("prometheus delta: {got:?}");
    println!(
        "tshark window:    {shark:?}, other frames {other:?}, non-IP {}",
        reference.non_ip_frames
    );
    println!(
        "tshark: {} frames / {} bytes in all, {} / {} probe frames before the quiet point ({f0} frames seen then, {f1} at the end)",
        reference.frames, reference.bytes, probes.0, probes.1
    );
    assert_eq!(
        f0, probes.0,
        "frames other than the probes reached tshark before the quiet point"
    );
    assert_eq!(
        reference.frames, f1,
        "tshark's file and its live count differ"
    );
    assert_eq!(
        (got.rx_packets, got.tx_packets),
        (link.rx_packets, link.tx_packets),
        "Prometheus packet totals (ingress, egress) differ from the interface counters"
    );
    assert_eq!(
        (got.rx_bytes, got.tx_bytes),
        (
            link.rx_bytes + VETH_XDP_RX_HEADER * link.rx_packets,
            link.tx_bytes
        ),
        "Prometheus byte totals (ingress, egress) differ from the interface counters"
    );
    assert_eq!(
        (reference.frames - probes.0, reference.bytes - probes.1),
        (got.rx_packets + got.tx_packets, got.rx_bytes + got.tx_bytes),
        "tshark's frames and bytes in the window differ from Prometheus's totals"
    );
    // Frames of other addresses (the kernel's own IPv6 link-local traffic,
    // e.g. neighbour discovery for fe80:: addresses) have no direction by
    // address: they are in the totals above, and here only as the gap.
    assert!(
        shark.rx_packets <= got.rx_packets && shark.tx_packets <= got.tx_packets,
        "tshark saw more per direction than Prometheus"
    );
    assert_eq!(
        (
            got.rx_packets - shark.rx_packets + got.tx_packets - shark.tx_packets,
            got.rx_bytes - shark.rx_bytes + got.tx_bytes - shark.tx_bytes
        ),
        other,
        "tshark's per-direction counts differ from Prometheus's totals beyond the other frames"
    );
    assert!(
        link.rx_packets >= 330 && link.tx_packets >= 80,
        "too little traffic: {link:?}"
    );
}

fn record_key(r: &serde_json::Value) -> Key {
    let n = |f: &str| r[f].as_u64().unwrap_or(0) as u16;
    let (sp, dp) = if r.get("icmp_type").is_some() {
        (n("icmp_type"), n("icmp_code"))
    } else {
        (n("src_port"), n("dst_port"))
    };
    (
        n("vlan"),
        r["src_addr"].as_str().unwrap().parse().expect("src_addr"),
        r["dst_addr"].as_str().unwrap().parse().expect("dst_addr"),
        r["protocol"].as_u64().unwrap() as u8,
        sp,
        dp,
    )
}

#[test]
fn flow_records_equal_tshark_and_shutdown_flushes_all() {
    let p = VethPair::new();
    prepare_link(&p);
    let dir = TempDir::new("records");
    let flows = dir.path("flows.jsonl");
    let mut sensor = SensorProc::start(&p.host, &dir, &["--flows-file", flows.to_str().unwrap()]);
    let cap = start_capture(&p);
    known_traffic(&p);
    quiesce(&p.host);
    frames_settled(&cap);
    let reference = cap.finish();

    let t = Instant::now();
    let status = sensor.proc.terminate(Duration::from_secs(2));
    let took = t.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "the sensor did not exit within 2 s of SIGTERM:\n{}",
            sensor.logs()
        )
    });
    println!("sensor exited {status} {took:?} after SIGTERM");
    assert!(status.success(), "sensor exit: {status}\n{}", sensor.logs());

    let records = json_lines(&flows);
    let mut counted: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *reasons
            .entry(r["reason"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
        let k = record_key(r);
        if !(in_test_prefix(&k.1) && in_test_prefix(&k.2)) || is_probe(&k, &p.peer_v4) {
            continue;
        }
        let e = counted.entry(k).or_default();
        e.0 += r["packets"].as_u64().unwrap();
        e.1 += r["bytes"].as_u64().unwrap();
    }
    let expected: BTreeMap<Key, (u64, u64)> = reference
        .flows
        .into_iter()
        .filter(|(k, _)| in_test_prefix(&k.1) && in_test_prefix(&k.2) && !is_probe(k, &p.peer_v4))
        .collect();
    for (k, v) in &expected {
        if counted.get(k) != Some(v) {
            println!("tshark {k:?} = {v:?}; records = {:?}", counted.get(k));
        }
    }
    for (k, v) in counted.iter().filter(|(k, _)| !expected.contains_key(k)) {
        println!("records only {k:?} = {v:?}");
    }
    let (pk, by) = expected
        .values()
        .fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    println!(
        "{} records ({reasons:?}); {} reference flows, {pk} packets, {by} bytes",
        records.len(),
        expected.len()
    );
    assert!(
        reasons.get("shutdown").copied().unwrap_or(0) > 0,
        "no record was written at shutdown: {reasons:?}"
    );
    let protos: std::collections::BTreeSet<u8> = expected.keys().map(|k| k.3).collect();
    assert!(
        [1u8, 6, 17, 58].iter().all(|p| protos.contains(p)),
        "traffic must cover ICMP, TCP, UDP and ICMPv6: {protos:?}"
    );
    assert_eq!(counted, expected, "flow records differ from tshark");
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct BpfStats(String);

impl BpfStats {
    fn enable() -> BpfStats {
        let old = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .expect("kernel.bpf_stats_enabled")
            .trim()
            .to_string();
        sh(&["sysctl", "-qw", "kernel.bpf_stats_enabled=1"]);
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = Command::new("sysctl")
            .args(["-qw", &format!("kernel.bpf_stats_enabled={}", self.0)])
            .output();
    }
}

#[test]
fn every_dashboard_panel_returns_data() {
    let p = VethPair::new();
    prepare_link(&p);
    let _stats = BpfStats::enable();
    let dir = TempDir::new("panels");
    // Score and baseline gauges exist only for warm baselines (default
    // warm-up 300 s): a 5 s warm-up gives the "Score of the top targets" and
    // "Learned baseline of the top targets" panels data within the test.
    let config = dir.path("sensor.toml");
    std::fs::write(&config, "[detection.baseline]\nwarmup_seconds = 5.0\n").expect("config");
    let sensor = SensorProc::start(&p.host, &dir, &["--config", config.to_str().unwrap()]);
    let prom = Prometheus::start(&sensor.listen, &dir);
    // Background traffic for the rate and top-K panels (bounded: 60 s).
    let _ping = ns_bg(&p, "ping", &["ping", "-c", "600", "-i", "0.1", &p.host_v4]);
    let _ping6 = ns_bg(
        &p,
        "ping -6",
        &["ping", "-6", "-c", "300", "-i", "0.2", &p.host_v6],
    );
    ns_run(
        &p,
        &["ping", "-c", "5", "-i", "0.05", "-s", "3000", &p.host_v4],
    );
    // A short SYN flood for the flood panels, and a slow port scan that
    // keeps running in the background while the panels are checked, so the
    // port_scan anomaly (and SensorPortScan) stays active however long the
    // check takes on a loaded machine (bounded: 90 s).
    ns_run(
        &p,
        &[
            "timeout", "5", "hping3", "--flood", "-S", "-p", "80", &p.host_v4,
        ],
    );
    let _scan = ns_bg(
        &p,
        "nmap",
        &[
            "timeout",
            "90",
            "nmap",
            "-n",
            "-Pn",
            "-sS",
            "-p",
            "1-65535",
            "--max-rate",
            "300",
            &p.host_v4,
        ],
    );
    let url = prom.url();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../grafana/check.py");
    let t = Instant::now();
    // No --allow-empty: every panel must have data in this phase.
    let out = Command::new("python3")
        .args([script, "--prometheus", &url, "--retry-for", "60"])
        .args(["--expect-firing", "SensorPortScan"])
        .output()
        .expect("python3 grafana/check.py");
    println!(
        "check.py took {:?}:\n{}{}",
        t.elapsed(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "grafana/check.py --prometheus failed");
}
