//! Issue 7, "Signals": SIGHUP reloads the configuration file (top-K,
//! thresholds, allowlist) without losing counts, an invalid file keeps the
//! running configuration, and SIGINT detaches every program and flushes
//! every flow within 2 s. The real `sensor run` binary on the root-side end
//! of a veth pair, steady UDP and ICMP traffic from the namespace. Needs
//! root.

mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, UdpSocket},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::{
    e2e::{json_lines, quiesce, SensorProc, TempDir},
    netns::{enter_netns, pin_neighbours, wait_for, VethPair},
    scrape::{self, Series},
};

const INTERVAL: &str = "500ms";
/// UDP senders (one flow each) from the peer's first address.
const UDP_SOCKETS: u16 = 8;
const UDP_SPORT: u16 = 40_001;
const UDP_DPORT: u16 = 5001;
/// UDP packets per second, all sockets together: twice the first
/// configuration's `udp_flood` floor.
const UDP_PPS: u64 = 2000;
const UDP_PAYLOAD: usize = 100;
/// Ethernet + IPv4 + UDP + payload.
const UDP_FRAME: u64 = 14 + 20 + 8 + UDP_PAYLOAD as u64;
/// Echo requests per `ping` run (at 100/s: five times the second
/// configuration's `icmp_flood` floor, a tenth of the first one's).
const PINGS_PER_RUN: u64 = 50;
/// Ethernet + IPv4 + ICMP header + ping's 56 data bytes.
const ICMP_FRAME: u64 = 14 + 20 + 8 + 56;

/// The config file: top-K, the two flood floors and the source allowlist.
fn config(top_k: u32, icmp_pps: u32, allow: &[&str]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "top_k = {top_k}\n\
         [detection]\n\
         for_intervals = 2\n\
         clear_seconds = 1\n\
         allow_sources = [{}]\n\
         [detection.udp_flood]\n\
         pps = 1000\n\
         [detection.icmp_flood]\n\
         pps = {icmp_pps}\n",
        allow.join(", ")
    )
}

fn metrics(listen: &str) -> Vec<Series> {
    let (code, body, _) = scrape::get_within(listen, "/metrics", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(code, 200, "GET /metrics: {body}");
    scrape::parse(&body)
}

fn total(all: &[Series], name: &str, iface: &str, direction: &str) -> u64 {
    scrape::value(all, name, &[("iface", iface), ("direction", direction)])
        .unwrap_or_else(|| panic!("no {name} for {iface} {direction}")) as u64
}

/// Ingress top-K flow series of the last interval.
fn top_flows(all: &[Series], iface: &str) -> usize {
    scrape::select(
        all,
        "sensor_top_flow_packets_per_second",
        &[
            ("iface", iface),
            ("direction", "ingress"),
            ("smoothing", "interval"),
        ],
    )
    .len()
}

fn polls(all: &[Series]) -> f64 {
    scrape::value(all, "sensor_poll_duration_seconds_count", &[]).expect("poll count")
}

/// Events of `kind` on `target` in `state` so far.
fn events(path: &Path, kind: &str, target: &str, state: &str) -> usize {
    json_lines(path)
        .iter()
        .filter(|e| e["kind"] == kind && e["target"] == target && e["state"] == state)
        .count()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling our own child, which has not been reaped.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Sends `UDP_PPS` datagrams per second from the namespace, round robin
/// over `UDP_SOCKETS` source ports, until `stop`; datagrams sent per port.
fn udp_sender(ns: &str, src: Ipv4Addr, dst: Ipv4Addr, stop: &AtomicBool) -> Vec<u64> {
    enter_netns(ns);
    let socks: Vec<UdpSocket> = (0..UDP_SOCKETS)
        .map(|i| UdpSocket::bind((src, UDP_SPORT + i)).expect("binding a UDP sender"))
        .collect();
    let mut sent = vec![0u64; socks.len()];
    let payload = [0x5au8; UDP_PAYLOAD];
    let per_slot = UDP_PPS / 100;
    let start = Instant::now();
    let mut n = 0usize;
    let mut slot = 0u32;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..per_slot {
            let i = n % socks.len();
            socks[i]
                .send_to(&payload, (dst, UDP_DPORT))
                .expect("sending a datagram");
            sent[i] += 1;
            n += 1;
        }
        // Pacing, not synchronisation: 10 ms slots.
        slot += 1;
        if let Some(wait) =
            (start + Duration::from_millis(10) * slot).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
    sent
}

/// Runs `ping -c PINGS_PER_RUN -i 0.01` from `src` until `stop`; echo
/// requests sent (every run must get all its replies).
fn pinger(p: &VethPair, src: &str, stop: &AtomicBool) -> u64 {
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) {
        let out = p
            .ns_cmd(&[
                "ping",
                "-q",
                "-c",
                &PINGS_PER_RUN.to_string(),
                "-i",
                "0.01",
                "-W",
                "2",
                "-I",
                src,
                &p.host_v4,
            ])
            .output()
            .expect("ping");
        assert!(
            out.status.success(),
            "ping: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        sent += PINGS_PER_RUN;
    }
    sent
}

#[test]
fn sighup_reloads_top_k_thresholds_and_allowlist_without_losing_counts() {
    let p = VethPair::new();
    // Nothing but the test's traffic on the pair: no IPv6, static
    // neighbours for the host and the peer's two addresses.
    p.disable_ipv6();
    let pinger_v4 = format!("198.18.{}.3", p.net);
    p.ns_sh(&[
        "ip",
        "addr",
        "add",
        &format!("{pinger_v4}/24"),
        "dev",
        &p.peer_if,
    ]);
    pin_neighbours(
        &p,
        &p.host,
        &p.peer_if,
        &[(&p.host_v4, &p.peer_v4), (&p.host_v4, &pinger_v4)],
    );
    // The UDP destination exists, so the host sends no port unreachables.
    let _sink = UdpSocket::bind((p.host_v4.parse::<Ipv4Addr>().expect("v4"), UDP_DPORT))
        .expect("binding the UDP sink");

    let dir = TempDir::new("signals");
    let file = dir.path("sensor.toml");
    let events_path = dir.path("events.jsonl");
    let flows = dir.path("flows.jsonl");
    std::fs::write(&file, config(2, 1000, &[])).expect("config");
    let mut sensor = SensorProc::start_every(
        &p.host,
        &dir,
        INTERVAL,
        &[
            "--config",
            file.to_str().expect("path"),
            "--events",
            events_path.to_str().expect("path"),
            "--flows-file",
            flows.to_str().expect("path"),
        ],
    );
    let pid = sensor.proc.child.id();
    let before = quiesce(&p.host);
    let m0 = metrics(&sensor.listen);
    assert_eq!(
        total(&m0, "sensor_packets_total", &p.host, "ingress"),
        0,
        "frames on the quiet link before the test traffic"
    );
    let target = p.host_v4.as_str();
    let count = |kind: &str, state: &str| events(&events_path, kind, target, state);

    let stop = AtomicBool::new(false);
    let (udp_sent, icmp_sent) = std::thread::scope(|s| {
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = StopOnDrop(&stop);
        let (ns, stop) = (&p.ns, &stop);
        let src = p.peer_v4.parse().expect("v4");
        let dst = p.host_v4.parse().expect("v4");
        let udp = s.spawn(move || udp_sender(ns, src, dst, stop));
        let icmp = s.spawn(|| pinger(&p, &pinger_v4, stop));

        // First configuration: 2 top flows, UDP over its floor, ICMP under.
        wait_for(
            "udp_flood on the host (first configuration)",
            Duration::from_secs(15),
            || count("udp_flood", "start") == 1,
        );
        let m = metrics(&sensor.listen);
        assert_eq!(top_flows(&m, &p.host), 2, "top-K flows with top_k = 2");
        assert_eq!(count("icmp_flood", "start"), 0, "ICMP is under its floor");

        // Reload: top_k 5, the UDP sender allowlisted, the ICMP floor
        // lowered under the ping rate.
        std::fs::write(&file, config(5, 20, &[&p.peer_v4])).expect("config");
        let hup = Instant::now();
        signal(pid, libc::SIGHUP);
        wait_for("top-K flows to become 5", Duration::from_secs(10), || {
            top_flows(&metrics(&sensor.listen), &p.host) == 5
        });
        wait_for(
            "icmp_flood to start under the lowered floor",
            Duration::from_secs(10),
            || count("icmp_flood", "start") == 1,
        );
        let icmp_after = hup.elapsed();
        wait_for(
            "udp_flood to end once its source is allowlisted",
            Duration::from_secs(10),
            || count("udp_flood", "end") == 1,
        );
        let udp_end_after = hup.elapsed();
        println!("after SIGHUP: icmp_flood started in {icmp_after:?}, udp_flood ended in {udp_end_after:?}");
        assert!(
            sensor.logs().contains("configuration reloaded"),
            "{}",
            sensor.logs()
        );

        // An invalid file (a bad allowlist entry next to valid changes) is
        // refused as a whole: top-K, floors and allowlist stay.
        std::fs::write(&file, config(1, 1000, &["198.18.0.0/40"])).expect("config");
        signal(pid, libc::SIGHUP);
        wait_for(
            "the refused reload in the log",
            Duration::from_secs(10),
            || {
                sensor
                    .logs()
                    .contains("configuration reload failed, keeping the running configuration")
            },
        );
        let log = sensor.logs();
        let line = log
            .lines()
            .find(|l| l.contains("configuration reload failed"))
            .expect("the line");
        assert!(
            line.contains("WARN") && line.contains("allow_sources"),
            "the warning names the key: {line}"
        );
        let p0 = polls(&metrics(&sensor.listen));
        let mut m = Vec::new();
        wait_for("four more intervals", Duration::from_secs(10), || {
            m = metrics(&sensor.listen);
            polls(&m) >= p0 + 4.0
        });
        assert_eq!(top_flows(&m, &p.host), 5, "top_k kept after the bad file");
        let icmp_active = scrape::value(
            &m,
            "sensor_anomaly_active",
            &[("kind", "icmp_flood"), ("target", target)],
        );
        assert_eq!(icmp_active, Some(1.0), "icmp_flood still active");
        assert_eq!(count("icmp_flood", "end"), 0, "the ICMP floor was kept");
        assert_eq!(
            count("udp_flood", "start"),
            1,
            "the allowlist was kept: no new udp_flood"
        );

        drop(guard);
        let udp_sent = udp.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let icmp_sent = icmp.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (udp_sent, icmp_sent)
    });

    // No count lost across the reloads: totals equal what was sent.
    let udp_total: u64 = udp_sent.iter().sum();
    let after = quiesce(&p.host);
    let link = after.since(&before);
    let mut m = Vec::new();
    wait_for(
        "the sensor's totals to catch up with the link",
        Duration::from_secs(10),
        || {
            m = metrics(&sensor.listen);
            total(&m, "sensor_packets_total", &p.host, "ingress") >= link.rx_packets
                && total(&m, "sensor_packets_total", &p.host, "egress") >= link.tx_packets
        },
    );
    println!("sent {udp_total} UDP, {icmp_sent} echo requests; link {link:?}");
    let t = |name: &str, dir: &str| total(&m, name, &p.host, dir);
    let (rx, rx_bytes) = (
        udp_total + icmp_sent,
        udp_total * UDP_FRAME + icmp_sent * ICMP_FRAME,
    );
    assert_eq!(
        t("sensor_packets_total", "ingress"),
        rx,
        "ingress packets vs sent"
    );
    assert_eq!(
        t("sensor_bytes_total", "ingress"),
        rx_bytes,
        "ingress bytes vs sent"
    );
    assert_eq!(link.rx_packets, rx, "the link's rx_packets vs sent");
    // Frames from the peer's stack: native XDP's rx_bytes lacks the
    // 14-byte Ethernet header.
    assert_eq!(link.rx_bytes + 14 * link.rx_packets, rx_bytes, "rx_bytes");
    assert_eq!(
        t("sensor_packets_total", "egress"),
        icmp_sent,
        "echo replies"
    );
    assert_eq!(t("sensor_bytes_total", "egress"), icmp_sent * ICMP_FRAME);
    assert_eq!(link.tx_packets, icmp_sent, "the link's tx_packets");
    for dir in ["ingress", "egress"] {
        assert_eq!(t("sensor_unattributed_packets_total", dir), 0, "{dir}");
    }

    // SIGINT: exit 0 within 2 s, nothing left attached, every flow written.
    let int = Instant::now();
    signal(pid, libc::SIGINT);
    let mut status = None;
    wait_for(
        "the sensor to exit after SIGINT",
        Duration::from_secs(2),
        || {
            status = sensor.proc.child.try_wait().expect("wait");
            status.is_some()
        },
    );
    let took = int.elapsed();
    let status = status.expect("exited");
    println!("sensor exited {status} {took:?} after SIGINT");
    assert!(status.success(), "exit {status}:\n{}", sensor.logs());
    assert_eq!(
        scrape::programs_on(&p.host),
        Vec::<String>::new(),
        "programs left on the interface after SIGINT"
    );
    let records = json_lines(&flows);
    assert!(
        records.iter().any(|r| r["reason"] == "shutdown"),
        "no record written at shutdown"
    );
    type Key = (String, String, String, u64, u64, u64);
    let mut got: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    for r in &records {
        let n = |f: &str| r[f].as_u64().unwrap_or(0);
        let (sp, dp) = if r.get("icmp_type").is_some() {
            (n("icmp_type"), n("icmp_code"))
        } else {
            (n("src_port"), n("dst_port"))
        };
        let key = (
            r["direction"].as_str().expect("direction").to_string(),
            r["src_addr"].as_str().expect("src").to_string(),
            r["dst_addr"].as_str().expect("dst").to_string(),
            n("protocol"),
            sp,
            dp,
        );
        let e = got.entry(key).or_default();
        e.0 += n("packets");
        e.1 += n("bytes");
    }
    let k = |dir: &str, src: &str, dst: &str, proto: u64, sp: u64, dp: u64| -> Key {
        (dir.into(), src.into(), dst.into(), proto, sp, dp)
    };
    let mut want: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    for (i, n) in udp_sent.iter().enumerate() {
        let sport = u64::from(UDP_SPORT) + i as u64;
        let key = k(
            "ingress",
            &p.peer_v4,
            &p.host_v4,
            17,
            sport,
            u64::from(UDP_DPORT),
        );
        want.insert(key, (*n, n * UDP_FRAME));
    }
    let request = k("ingress", &pinger_v4, &p.host_v4, 1, 8, 0);
    want.insert(request, (icmp_sent, icmp_sent * ICMP_FRAME));
    let reply = k("egress", &p.host_v4, &pinger_v4, 1, 0, 0);
    want.insert(reply, (icmp_sent, icmp_sent * ICMP_FRAME));
    assert_eq!(got, want, "flow records (summed per flow) vs traffic sent");
}
