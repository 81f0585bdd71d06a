//! End-to-end helpers: the sensor binary and Debian's Prometheus as child
//! processes (each stopped by a Drop guard, also while a failing test
//! unwinds), a tiny HTTP client for their APIs, and the interface-level
//! plumbing the e2e tests share (static neighbours, link counters, quiet
//! periods, background tools).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::netns::{wait_for, VethPair};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A temporary directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `st-e2e-PID-N-what`.
    pub fn new(what: &str) -> TempDir {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("st-e2e-{}-{n}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A child process sent SIGTERM (then SIGKILL after 5 s) when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd`, named `name` in messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; None if it is
    /// still running then (it is killed when dropped).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the child runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a tool inside the namespace in the background, output discarded.
pub fn ns_bg(p: &VethPair, name: &str, args: &[&str]) -> Proc {
    let mut cmd = p.ns_cmd(args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    Proc::spawn(name, &mut cmd)
}

/// Runs a tool inside the namespace to completion; panics only if it could
/// not run (hping3 and nmap exit non-zero for unanswered probes).
pub fn ns_run(p: &VethPair, args: &[&str]) {
    let out = p
        .ns_cmd(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    assert!(
        out.status.code().is_some(),
        "{args:?} was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sensor binary attached to one interface, with its HTTP endpoint.
pub struct SensorProc {
    /// The process.
    pub proc: Proc,
    /// HOST:PORT of /metrics.
    pub listen: String,
    /// Its standard error (logs), kept for failure messages.
    pub log: PathBuf,
}

impl SensorProc {
    /// Starts `sensor run --iface IFACE --listen-address 127.0.0.1:PORT
    /// --interval 1s EXTRA...` with logs in `dir`, and waits until
    /// `/-/ready` answers 200 (programs attached).
    pub fn start(iface: &str, dir: &TempDir, extra: &[&str]) -> SensorProc {
        SensorProc::start_every(iface, dir, "1s", extra)
    }

    /// [`SensorProc::start`] with `--interval INTERVAL`.
    pub fn start_every(iface: &str, dir: &TempDir, interval: &str, extra: &[&str]) -> SensorProc {
        let listen = format!("127.0.0.1:{}", free_port());
        let log = dir.path("sensor.log");
        let logfile = std::fs::File::create(&log).expect("sensor log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sensor"));
        cmd.args(["run", "--iface", iface, "--listen-address", &listen])
            .args(["--interval", interval])
            .args(extra)
            .env("SENSOR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile);
        let mut s = SensorProc {
            proc: Proc::spawn("sensor", &mut cmd),
            listen,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                s.proc.running(),
                "the sensor exited during start-up:\n{}",
                s.logs()
            );
            if matches!(http_get(&s.listen, "/-/ready"), Ok((200, _))) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the sensor was not ready within 30 s:\n{}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sensor's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Debian's Prometheus scraping one target every second, with the
/// repository's alert rules evaluated every second.
pub struct Prometheus {
    /// The process.
    pub proc: Proc,
    /// HOST:PORT of its API.
    pub addr: String,
    /// Its log.
    pub log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus with config and TSDB in `dir`, scraping `target`
    /// (HOST:PORT) as job `sensor-e2e`, and waits until the target is up.
    pub fn start(target: &str, dir: &TempDir) -> Prometheus {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/rules/sensor-rules.yml");
        let rules = rules
            .canonicalize()
            .expect("grafana/rules/sensor-rules.yml");
        let config = dir.path("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: sensor-e2e\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .expect("writing prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.path("prometheus.log");
        let logfile = std::fs::File::create(&log).expect("prometheus log file");
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile);
        let mut prom = Prometheus {
            proc: Proc::spawn("prometheus (installed by `cargo xtask test`)", &mut cmd),
            addr,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                prom.proc.running(),
                "prometheus exited during start-up:\n{}",
                prom.logs()
            );
            let up = prom.try_query("up{job=\"sensor-e2e\"} == 1");
            if matches!(up, Ok(ref v) if !v.is_empty()) {
                return prom;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape {target} within 60 s ({up:?}):\n{}",
                prom.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// http://HOST:PORT
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Prometheus's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query: (labels, value) per series.
    pub fn try_query(&self, expr: &str) -> Result<Vec<Sample>, String> {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        let (code, body) = http_get(&self.addr, &path).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{code}: {e}"))?;
        if v["status"] != "success" {
            return Err(format!("{code}: {v}"));
        }
        let mut out = Vec::new();
        for r in v["data"]["result"].as_array().into_iter().flatten() {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| format!("no value in {r}"))?;
            out.push(Sample { labels, value });
        }
        Ok(out)
    }

    /// An instant query that must succeed.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        self.try_query(expr)
            .unwrap_or_else(|e| panic!("query {expr}: {e}"))
    }

    /// The single value of `expr`, or None when it has no series.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let v = self.query(expr);
        assert!(v.len() <= 1, "{expr} has {} series: {v:?}", v.len());
        v.first().map(|s| s.value)
    }

    /// Alerts by (name, state), with their labels.
    pub fn alerts(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let (code, body) = http_get(&self.addr, "/api/v1/alerts").expect("GET /api/v1/alerts");
        let v: Value = serde_json::from_slice(&body).expect("alerts JSON");
        assert_eq!(v["status"], "success", "/api/v1/alerts {code}: {v}");
        let mut out = Vec::new();
        for a in v["data"]["alerts"].as_array().into_iter().flatten() {
            let labels: BTreeMap<String, String> = a["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let name = labels.get("alertname").cloned().unwrap_or_default();
            let state = a["state"].as_str().unwrap_or("").to_string();
            out.push((name, state, labels));
        }
        out
    }

    /// Names of the alerts firing now.
    pub fn firing(&self) -> Vec<String> {
        self.alerts()
            .into_iter()
            .filter(|a| a.1 == "firing")
            .map(|a| a.0)
            .collect()
    }
}

/// One series of an instant query result.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// GET over HTTP/1.0 (so the server neither chunks nor keeps the
/// connection): status code and body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((code, buf[split + 4..].to_vec()))
}

/// The JSON lines of a file written so far (a partial last line is left
/// out).
pub fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Permanent neighbour entries for the pair's addresses on both ends, so
/// no ARP or ND frame appears during a comparison; GRO off on the host end
/// so captures see wire frames.
pub fn prepare_link(p: &VethPair) {
    p.pin_own_neighbours();
    let _ = Command::new("ethtool")
        .args(["-K", &p.host, "gro", "off"])
        .output();
}

/// The interface's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// rx_packets
    pub rx_packets: u64,
    /// tx_packets
    pub tx_packets: u64,
    /// rx_bytes
    pub rx_bytes: u64,
    /// tx_bytes
    pub tx_bytes: u64,
}

impl LinkStats {
    /// Reads /sys/class/net/IFACE/statistics.
    pub fn read(iface: &str) -> LinkStats {
        let r = |f: &str| -> u64 {
            let path = format!("/sys/class/net/{iface}/statistics/{f}");
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .parse()
                .expect("counter")
        };
        LinkStats {
            rx_packets: r("rx_packets"),
            tx_packets: r("tx_packets"),
            rx_bytes: r("rx_bytes"),
            tx_bytes: r("tx_bytes"),
        }
    }

    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &LinkStats) -> LinkStats {
        LinkStats {
            rx_packets: self.rx_packets - earlier.rx_packets,
            tx_packets: self.tx_packets - earlier.tx_packets,
            rx_bytes: self.rx_bytes - earlier.rx_bytes,
            tx_bytes: self.tx_bytes - earlier.tx_bytes,
        }
    }
}

/// Waits until the interface's counters have not moved for 400 ms; returns
/// them.
pub fn quiesce(iface: &str) -> LinkStats {
    let mut last = LinkStats::read(iface);
    let mut still = Instant::now();
    wait_for("the interface to go quiet", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = LinkStats::read(iface);
        if now != last {
            last = now;
            still = Instant::now();
        }
        still.elapsed() >= Duration::from_millis(400)
    });
    last
}
