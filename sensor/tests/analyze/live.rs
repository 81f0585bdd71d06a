//! The live half of the analysis tests: the sensor binary attached to a
//! veth while tcpdump records the same interface and real tools (nmap,
//! hping3, iperf3) send traffic from a namespace. The flow records and
//! events of the live run are kept for the notebook test.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use super::common::netns::{quiesce, sh, wait_for, VethPair};
use super::tmp;

const PROBE_PORT: u16 = 9;

/// (vlan, src, dst, protocol, src port or ICMP type, dst port or ICMP
/// code, later fragment).
type Key = (u64, String, String, u64, u64, u64, bool);
type Counts = BTreeMap<Key, (u64, u64)>;

/// What the live run left behind.
pub struct LiveRun {
    pub pcap: PathBuf,
    pub flows: PathBuf,
    pub events: PathBuf,
    peer_v4: String,
    live_kinds: BTreeSet<String>,
}

static RUN: OnceLock<LiveRun> = OnceLock::new();

/// Runs the live scenario once per test process.
pub fn records() -> &'static LiveRun {
    RUN.get_or_init(run_live)
}

/// Kills (SIGTERM, then SIGKILL) a child when dropped.
struct Guard(Option<Child>);

impl Guard {
    fn stop(&mut self, sig: libc::c_int, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.0.take()?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(10));
    }
}

fn in_test_prefix(a: &str) -> bool {
    match a.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18,
        Ok(std::net::IpAddr::V6(v6)) => v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8,
        Err(_) => false,
    }
}

fn tool(p: &VethPair, args: &[&str]) {
    let out = p
        .ns_cmd(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    // hping3 exits non-zero when probes go unanswered and `timeout` with
    // 124; only a failure to run at all matters.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn iperf3(p: &VethPair, server: &str, port: u16) {
    let port_s = port.to_string();
    let srv = Command::new("iperf3")
        .args(["-s", "-1", "-B", server, "-p", &port_s])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let mut srv = Guard(Some(srv));
    wait_for("iperf3 to listen", Duration::from_secs(10), || {
        let out = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss");
        !out.stdout.is_empty()
    });
    let out = p
        .ns_cmd(&[
            "iperf3", "-c", server, "-p", &port_s, "-t", "1", "-b", "40M",
        ])
        .output()
        .expect("iperf3 client");
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop(libc::SIGTERM, Duration::from_secs(10));
}

fn http_ready(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn run_live() -> LiveRun {
    let p = VethPair::new();
    p.pin_own_neighbours();
    let _ = Command::new("ethtool")
        .args(["-K", &p.host, "gro", "off"])
        .output();
    let (pcap, flows, events) = (
        tmp("live.pcap"),
        tmp("live-flows.jsonl"),
        tmp("live-events.jsonl"),
    );
    for f in [&pcap, &flows, &events] {
        let _ = std::fs::remove_file(f);
    }
    let port = free_port();
    let log = std::fs::File::create(tmp("live-sensor.log")).expect("log");
    let sensor = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(["run", "--iface", &p.host, "--xdp-mode", "native"])
        .args(["--listen-address", &format!("127.0.0.1:{port}")])
        .arg("--flows-file")
        .arg(&flows)
        .arg("--events")
        .arg(&events)
        .args(["--flow-map-entries", "262144"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting the sensor");
    let mut sensor = Guard(Some(sensor));
    wait_for("the sensor to be ready", Duration::from_secs(60), || {
        http_ready(port)
    });

    let tcpdump_log = tmp("live-tcpdump.log");
    let dump = Command::new("tcpdump")
        .args([
            "-i",
            &p.host,
            "-n",
            "-U",
            "--immediate-mode",
            "-B",
            "262144",
            "-Z",
            "root",
        ])
        .arg("-w")
        .arg(&pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&tcpdump_log).expect("tcpdump log"))
        .spawn()
        .expect("starting tcpdump");
    let mut dump = Guard(Some(dump));
    wait_for("tcpdump to listen", Duration::from_secs(20), || {
        std::fs::read_to_string(&tcpdump_log).is_ok_and(|s| s.contains("listening on"))
    });
    // Probes to the discard port until tcpdump has written one; they are
    // excluded from the comparison (early ones reach only the sensor).
    let sock = std::net::UdpSocket::bind((p.host_v4.as_str(), 0)).expect("probe socket");
    wait_for(
        "tcpdump to capture a probe",
        Duration::from_secs(20),
        || {
            let _ = sock.send_to(b"probe", (p.peer_v4.as_str(), PROBE_PORT));
            std::thread::sleep(Duration::from_millis(50));
            std::fs::metadata(&pcap).is_ok_and(|m| m.len() > 24)
        },
    );

    let h4 = p.host_v4.as_str();
    tool(
        &p,
        &[
            "nmap",
            "-sS",
            "-n",
            "-Pn",
            "-p",
            "1-200",
            "--max-retries",
            "0",
            h4,
        ],
    );
    tool(
        &p,
        &["hping3", "-S", "-p", "80", "-c", "30", "-i", "u2000", h4],
    );
    tool(
        &p,
        &[
            "hping3", "--udp", "-p", "5000", "-c", "30", "-i", "u2000", h4,
        ],
    );
    tool(&p, &["hping3", "--icmp", "-c", "30", "-i", "u2000", h4]);
    tool(&p, &["ping", "-6", "-c", "20", "-i", "0.01", &p.host_v6]);
    // Floods from one source port (-k): one flow each way, so neither the
    // kernel's flow buffer nor the capture is the limit. Paced at one frame
    // per 10 us at most (well above every flood floor, but not the
    // unbounded --flood rate, at which tcpdump itself starts to drop).
    for mode in [
        &["-S", "-p", "80", "-s", "40000", "-k"][..],
        &["--udp", "-p", "5000", "-s", "40001", "-k"],
        &["--icmp"],
    ] {
        let mut args = vec!["timeout", "3", "hping3", "-i", "u10", "-q"];
        args.extend_from_slice(mode);
        args.push(h4);
        tool(&p, &args);
        quiesce(&p.host);
    }
    iperf3(&p, h4, 25301);
    quiesce(&p.host);
    // SIGINT drops what tcpdump has not read yet: wait until the file has
    // stopped growing.
    let mut last = 0;
    let mut still = 0;
    wait_for(
        "the capture file to stop growing",
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_millis(100));
            let len = std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
            still = if len == last { still + 1 } else { 0 };
            last = len;
            still >= 5
        },
    );

    dump.stop(libc::SIGINT, Duration::from_secs(30));
    let dlog = std::fs::read_to_string(&tcpdump_log).unwrap_or_default();
    println!("tcpdump: {}", dlog.trim().replace('\n', "; "));
    let dropped = dlog
        .lines()
        .find(|l| l.contains("dropped by kernel"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(
        dropped,
        Some(0),
        "tcpdump dropped frames, the capture is incomplete: {dlog}"
    );
    let status = sensor.stop(libc::SIGTERM, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the sensor exited with {status:?}"
    );
    sh(&["chmod", "0644", pcap.to_str().expect("utf8")]);
    let live_kinds = kinds_of_events(&events);
    LiveRun {
        pcap,
        flows,
        events,
        peer_v4: p.peer_v4.clone(),
        live_kinds,
    }
}

fn kinds_of_events(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["state"] == "start")
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect()
}

/// Per-flow packets and bytes of test-prefix flows, probes excluded.
fn flow_counts(path: &Path, peer_v4: &str) -> Counts {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Counts::new();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("record json");
        let s = |f: &str| r[f].as_str().unwrap_or_default().to_string();
        let n = |a: &str, b: &str| r[a].as_u64().or_else(|| r[b].as_u64()).unwrap_or(0);
        let key: Key = (
            r["vlan"].as_u64().unwrap_or(0),
            s("src_addr"),
            s("dst_addr"),
            r["protocol"].as_u64().unwrap_or(0),
            n("src_port", "icmp_type"),
            n("dst_port", "icmp_code"),
            r["fragment"].as_bool().unwrap_or(false),
        );
        let probe = (key.3 == 17 && key.5 == u64::from(PROBE_PORT))
            || (key.3 == 1 && key.4 == 3 && key.1 == peer_v4);
        if !in_test_prefix(&key.1) || !in_test_prefix(&key.2) || probe {
            continue;
        }
        let e = out.entry(key).or_default();
        e.0 += r["packets"].as_u64().unwrap_or(0);
        e.1 += r["bytes"].as_u64().unwrap_or(0);
    }
    out
}

/// Analyses the live run's capture and compares it with the live sensor.
pub fn check_capture_against_live() {
    let run = records();
    let (oflows, oevents) = (tmp("offline-flows.jsonl"), tmp("offline-events.jsonl"));
    let _ = std::fs::remove_file(&oflows);
    let _ = std::fs::remove_file(&oevents);
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(["analyze", "--format", "json"])
        .arg(&run.pcap)
        .arg("--flows-file")
        .arg(&oflows)
        .arg("--events")
        .arg(&oevents)
        .output()
        .expect("sensor analyze");
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "analyze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report json");
    let packets = report["packets"].as_u64().expect("packets");
    println!(
        "analysed {packets} frames in {:.2} s ({:.0} frames/s, debug build)",
        elapsed.as_secs_f64(),
        packets as f64 / elapsed.as_secs_f64()
    );

    let live = flow_counts(&run.flows, &run.peer_v4);
    let offline = flow_counts(&oflows, &run.peer_v4);
    let mut diffs = 0;
    for (k, v) in &live {
        if offline.get(k) != Some(v) {
            diffs += 1;
            if diffs <= 20 {
                println!("live {k:?} = {v:?}; capture = {:?}", offline.get(k));
            }
        }
    }
    for (k, v) in &offline {
        if !live.contains_key(k) {
            diffs += 1;
            if diffs <= 40 {
                println!("capture only {k:?} = {v:?}");
            }
        }
    }
    let protos: BTreeSet<u64> = live.keys().map(|k| k.3).collect();
    assert!(
        [1u64, 6, 17, 58].iter().all(|p| protos.contains(p)),
        "protocols: {protos:?}"
    );
    assert!(live.len() > 300, "too few live flows: {}", live.len());
    assert_eq!(
        diffs,
        0,
        "{diffs} of {} flows differ between the capture and the live sensor",
        live.len()
    );

    let offline_kinds: BTreeSet<String> = report["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .filter_map(|a| a["kind"].as_str().map(str::to_string))
        .collect();
    println!(
        "live kinds {:?}; capture kinds {offline_kinds:?}",
        run.live_kinds
    );
    for kind in ["port_scan", "syn_flood", "udp_flood", "icmp_flood"] {
        assert!(
            run.live_kinds.contains(kind),
            "the live sensor did not report {kind}"
        );
    }
    assert_eq!(offline_kinds, run.live_kinds, "anomaly kinds differ");
    assert_eq!(
        kinds_of_events(&oevents),
        run.live_kinds,
        "events file kinds differ"
    );

    // The same analysis without any privilege.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_sensor"))
        .args(["analyze", "--format", "json"])
        .arg(&run.pcap)
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "unprivileged analyze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unpriv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(unpriv["packets"].as_u64(), Some(packets));
    assert_eq!(
        unpriv["anomalies"].as_array().map(Vec::len),
        report["anomalies"].as_array().map(Vec::len)
    );
}
