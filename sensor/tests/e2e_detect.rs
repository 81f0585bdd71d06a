//! End-to-end detection tests: real attack tools and real benign loads
//! from a network namespace against the root end of a veth pair, the sensor
//! binary attached there with `--events`, Debian's Prometheus scraping it
//! every second with the repository's alert rules evaluated every second.
//!
//! - `attacks_are_detected_and_alerts_fire`: hping3 SYN, UDP and ICMP
//!   floods, an nmap SYN scan and an nmap ping sweep, one after the other.
//!   Each gets a `start` event of its kind and target within 10 s of the
//!   tool's start, its alert reaches `firing` in Prometheus, and an `end`
//!   event follows once it stops. Latencies are printed.
//! - `benign_loads_start_no_attack_anomaly`: an iperf3 bulk transfer and 300
//!   short HTTP requests start none of the attack kinds, in the events and
//!   in Prometheus.
//!
//! Needs root and the tools `cargo xtask test` installs.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    e2e::{json_lines, ns_bg, prepare_link, quiesce, Proc, Prometheus, SensorProc, TempDir},
    netns::{sh, wait_for, VethPair},
};
use serde_json::Value;

/// The test's `[detection]` table. The floors, `for_intervals` (2) and the
/// thresholds of scans and sweeps keep their defaults: detection is what an
/// operator gets out of the box. Only the *end* is made faster, so the five
/// attacks fit in about two minutes: `clear_seconds` 5 -> 3, and the scan and
/// sweep windows 30 s -> 8 s (they end `window + clear` after the last
/// probe). nmap sends its 1000 probes in about a second and its sweep of 64
/// addresses in about two, well inside 8 s.
const DETECTION: &str = "\
[detection]
clear_seconds = 3.0

[detection.port_scan]
window_seconds = 8.0

[detection.host_sweep]
window_seconds = 8.0
";

/// Attack kinds that benign loads must never start.
const ATTACK_KINDS: [&str; 5] = [
    "syn_flood",
    "udp_flood",
    "icmp_flood",
    "port_scan",
    "host_sweep",
];

/// Alerts of those kinds.
const ATTACK_ALERTS: [&str; 5] = [
    "SensorSynFlood",
    "SensorUdpFlood",
    "SensorIcmpFlood",
    "SensorPortScan",
    "SensorHostSweep",
];

fn find_event(events: &Path, kind: &str, target: &str, state: &str) -> Option<Value> {
    json_lines(events)
        .into_iter()
        .find(|e| e["kind"] == kind && e["target"] == target && e["state"] == state)
}

/// Polls the events file every 20 ms for an event, up to `timeout`;
/// returns it and when it was first seen.
fn wait_event(
    events: &Path,
    kind: &str,
    target: &str,
    state: &str,
    timeout: Duration,
) -> (Value, Instant) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = find_event(events, kind, target, state) {
            return (e, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "no {state} event of {kind} for {target} within {timeout:?}; events:\n{}",
            std::fs::read_to_string(events).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Seconds between a Unix time and an RFC 3339 UTC timestamp with
/// milliseconds (`2025-01-02T03:04:05.678Z`), as the events carry.
fn rfc3339_secs(t: &str) -> f64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').expect("RFC 3339");
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (d[0], d[1], d[2]);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let hms: Vec<f64> = time.split(':').map(|x| x.parse().unwrap()).collect();
    days as f64 * 86_400.0 + hms[0] * 3600.0 + hms[1] * 60.0 + hms[2]
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One attack and what it must cause.
struct Attack<'a> {
    kind: &'a str,
    alert: &'a str,
    target: String,
    args: Vec<String>,
    /// Keep the tool running until the alert fires (floods: their alerts
    /// wait `for: 10s`); otherwise let it finish by itself.
    until_alert: bool,
}

/// Figures measured for one attack.
struct Measured {
    kind: String,
    start_latency: f64,
    event_latency: f64,
    alert_latency: f64,
    end_after_stop: f64,
}

fn run_attack(p: &VethPair, prom: &Prometheus, events: &Path, a: &Attack) -> Measured {
    assert!(
        find_event(events, a.kind, &a.target, "start").is_none(),
        "{} already started before its attack",
        a.kind
    );
    let args: Vec<&str> = a.args.iter().map(String::as_str).collect();
    let (t0, u0) = (Instant::now(), unix_now());
    let mut tool: Proc = ns_bg(p, a.kind, &args);
    let (start, seen) = wait_event(events, a.kind, &a.target, "start", Duration::from_secs(10));
    let start_latency = seen.duration_since(t0).as_secs_f64();
    let event_latency = rfc3339_secs(start["time"].as_str().expect("time")) - u0;
    println!(
        "{}: start event after {start_latency:.2} s (event time {event_latency:+.2} s): {start}",
        a.kind
    );
    wait_for(
        &format!("alert {} to fire", a.alert),
        Duration::from_secs(30),
        || prom.firing().iter().any(|n| n == a.alert),
    );
    let alert_latency = t0.elapsed().as_secs_f64();
    if a.until_alert {
        tool.terminate(Duration::from_secs(5))
            .expect("the attack tool ignored SIGTERM");
    } else {
        let deadline = Instant::now() + Duration::from_secs(40);
        while tool.running() {
            assert!(Instant::now() < deadline, "{} did not finish", a.kind);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let stopped = Instant::now();
    let (end, seen) = wait_event(events, a.kind, &a.target, "end", Duration::from_secs(30));
    let end_after_stop = seen.duration_since(stopped).as_secs_f64();
    println!(
        "{}: alert {} firing after {alert_latency:.1} s; end event {end_after_stop:.1} s after the tool stopped: {end}",
        a.kind, a.alert
    );
    // A quiet gap before the next attack.
    quiesce(&p.host);
    Measured {
        kind: a.kind.to_string(),
        start_latency,
        event_latency,
        alert_latency,
        end_after_stop,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn attacks_are_detected_and_alerts_fire() {
    let p = VethPair::new();
    prepare_link(&p);
    // The sweep range: 198.19.N.0/26 routed from the namespace through the
    // host end, where 30 of its addresses are live, so every probe crosses
    // the watched interface as IP (an on-link range would be swept by ARP).
    let sweep_net = format!("198.19.{}", p.net);
    p.ns_sh(&[
        "ip",
        "route",
        "add",
        &format!("{sweep_net}.0/26"),
        "via",
        &p.host_v4,
    ]);
    for i in 10..40 {
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{sweep_net}.{i}/32"),
            "dev",
            &p.host,
        ]);
    }
    let dir = TempDir::new("attacks");
    let events = dir.path("events.jsonl");
    let config = dir.path("sensor.toml");
    std::fs::write(&config, DETECTION).expect("config");
    let sensor = SensorProc::start(
        &p.host,
        &dir,
        &[
            "--events",
            events.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let prom = Prometheus::start(&sensor.listen, &dir);
    let host = p.host_v4.clone();
    let attacks = [
        Attack {
            kind: "syn_flood",
            alert: "SensorSynFlood",
            target: host.clone(),
            args: strings(&[
                "timeout", "40", "hping3", "--flood", "-S", "-p", "80", &host,
            ]),
            until_alert: true,
        },
        Attack {
            kind: "udp_flood",
            alert: "SensorUdpFlood",
            target: host.clone(),
            args: strings(&[
                "timeout", "40", "hping3", "--flood", "--udp", "-p", "5000", &host,
            ]),
            until_alert: true,
        },
        Attack {
            kind: "icmp_flood",
            alert: "SensorIcmpFlood",
            target: host.clone(),
            args: strings(&["timeout", "40", "hping3", "--flood", "--icmp", &host]),
            until_alert: true,
        },
        Attack {
            kind: "port_scan",
            alert: "SensorPortScan",
            target: p.peer_v4.clone(),
            args: strings(&[
                "timeout",
                "30",
                "nmap",
                "-n",
                "-Pn",
                "-sS",
                "-p",
                "1-1000",
                "-T4",
                "--max-rate",
                "2000",
                &host,
            ]),
            until_alert: false,
        },
        Attack {
            kind: "host_sweep",
            alert: "SensorHostSweep",
            target: p.peer_v4.clone(),
            args: strings(&[
                "timeout",
                "30",
                "nmap",
                "-n",
                "-sn",
                "-T4",
                "--max-rate",
                "2000",
                &format!("{sweep_net}.0/26"),
            ]),
            until_alert: false,
        },
    ];
    let measured: Vec<Measured> = attacks
        .iter()
        .map(|a| run_attack(&p, &prom, &events, a))
        .collect();
    println!("kind        start (polled)  event time  alert firing  end after stop");
    for m in &measured {
        println!(
            "{:<11} {:>12.2} s {:>9.2} s {:>11.1} s {:>13.1} s",
            m.kind, m.start_latency, m.event_latency, m.alert_latency, m.end_after_stop
        );
    }
    let starts = json_lines(&events)
        .into_iter()
        .filter(|e| e["state"] == "start")
        .map(|e| format!("{} {}", e["kind"], e["target"]))
        .collect::<Vec<_>>();
    println!("all starts: {starts:?}");
    drop(sensor);
}

/// A small HTTP client in the namespace: `n` GET requests, each on a new
/// connection; prints the number answered 200.
const HTTP_CLIENT: &str = "
import http.client, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for _ in range(n):
    c = http.client.HTTPConnection(host, port, timeout=5)
    c.request('GET', '/index.html', headers={'Connection': 'close'})
    r = c.getresponse()
    r.read()
    ok += r.status == 200
    c.close()
print(ok)
";

#[test]
fn benign_loads_start_no_attack_anomaly() {
    let p = VethPair::new();
    prepare_link(&p);
    let dir = TempDir::new("benign");
    let events = dir.path("events.jsonl");
    // Default detection settings: this is what must stay quiet.
    let sensor = SensorProc::start(&p.host, &dir, &["--events", events.to_str().unwrap()]);
    let prom = Prometheus::start(&sensor.listen, &dir);
    let evals0 = prom
        .value("sum(sensor_detection_evaluations_total)")
        .unwrap_or(0.0);

    // A single TCP bulk transfer, 3 s, unlimited rate.
    let port = common::e2e::free_port().to_string();
    let mut srv = Command::new("iperf3");
    srv.args(["-s", "-1", "-B", &p.host_v4, "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _iperf = Proc::spawn("iperf3 server", &mut srv);
    wait_for("iperf3 to listen", Duration::from_secs(10), || {
        !sh(&["ss", "-ltnH", &format!("sport = :{port}")])
            .stdout
            .is_empty()
    });
    let out = p
        .ns_cmd(&["iperf3", "-c", &p.host_v4, "-p", &port, "-t", "3", "-J"])
        .output()
        .expect("iperf3 client");
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J");
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    println!("iperf3: {:.0} Mbit/s for 3 s", bits / 1e6);

    // 300 short HTTP requests, a new connection each.
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello\n".repeat(100)).unwrap();
    let http_port = common::e2e::free_port().to_string();
    let mut srv = Command::new("python3");
    srv.args(["-m", "http.server", "--bind", &p.host_v4, &http_port])
        .current_dir(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _http = Proc::spawn("python3 -m http.server", &mut srv);
    wait_for("http.server to listen", Duration::from_secs(10), || {
        !sh(&["ss", "-ltnH", &format!("sport = :{http_port}")])
            .stdout
            .is_empty()
    });
    let t = Instant::now();
    let out = p
        .ns_cmd(&["python3", "-c", HTTP_CLIENT, &p.host_v4, &http_port, "300"])
        .output()
        .expect("http client");
    let ok: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "http: {ok} of 300 requests answered 200 in {:?}",
        t.elapsed()
    );
    assert_eq!(ok, 300, "{}", String::from_utf8_lossy(&out.stderr));

    // Let the detector judge the intervals after the load: for_intervals (2)
    // plus a margin, observed as samples in Prometheus.
    quiesce(&p.host);
    let after = unix_now() + 4.0;
    wait_for(
        "the detector to judge the load's last intervals",
        Duration::from_secs(20),
        || {
            prom.value("min(timestamp(sensor_detection_evaluations_total))")
                .is_some_and(|t| t >= after)
        },
    );
    let evals = prom
        .value("sum(sensor_detection_evaluations_total)")
        .unwrap_or(0.0);
    let tcp_in = prom
        .value(&format!(
            "sensor_l4_packets_total{{iface=\"{}\",direction=\"ingress\",protocol=\"tcp\"}}",
            p.host
        ))
        .unwrap_or(0.0);
    println!(
        "detector evaluations during the test: {}; ingress TCP packets: {tcp_in}",
        evals - evals0
    );
    assert!(evals > evals0, "the detector judged nothing");
    assert!(tcp_in >= 3000.0, "the sensor saw too little of the load");

    let starts: Vec<Value> = json_lines(&events)
        .into_iter()
        .filter(|e| {
            e["state"] == "start" && ATTACK_KINDS.contains(&e["kind"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(
        starts.is_empty(),
        "benign load started attack anomalies: {starts:?}"
    );
    let kinds = ATTACK_KINDS.join("|");
    let seen = prom.query(&format!(
        "max_over_time(sensor_anomaly_active{{kind=~\"{kinds}\"}}[10m])"
    ));
    assert!(seen.is_empty(), "Prometheus saw attack anomalies: {seen:?}");
    // Without attacks, no anomaly alert at all (the spike and flow-table
    // alerts included) may be pending or firing.
    let alerts: Vec<_> = prom
        .alerts()
        .into_iter()
        .filter(|a| {
            ATTACK_ALERTS.contains(&a.0.as_str())
                || [
                    "SensorTrafficSpike",
                    "SensorOutboundSpike",
                    "SensorFlowTableFlood",
                ]
                .contains(&a.0.as_str())
        })
        .collect();
    assert!(
        alerts.is_empty(),
        "anomaly alerts pending or firing without an attack: {alerts:?}"
    );
    let other: Vec<String> = json_lines(&events)
        .iter()
        .map(|e| format!("{} {} {}", e["state"], e["kind"], e["target"]))
        .collect();
    println!("events of other kinds: {other:?}");
}
