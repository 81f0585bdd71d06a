//! What runs on the receiving veth in one section-3 run: nothing (the
//! baseline), the sensor, or a tool users would pick instead. Each is
//! started, asked how many packets it counted, and stopped.
//!
//! The tools run with the XDP_PASS stub attached natively to the receiver
//! (the generator's XDP_TX frames reach a veth only through its XDP path),
//! so they see what the sensor sees, plus the stub; the baseline has the
//! stub alone. Their output goes to files, never to pipes that could fill.

use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    agent::{self, Agent},
    live::{StubAttached, Veth},
    sys,
};

/// The agent's metrics port.
const AGENT_PORT: u16 = 19_387;
/// FastNetMon's Prometheus port.
const FNM_PORT: u16 = 19_389;

/// One subject of section 3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subject {
    /// No tool: the generator, the stub and the stack.
    Baseline,
    /// The agent with kernel.bpf_stats_enabled on (its program's run time
    /// is then known) or off (no ktime reads per run).
    Sensor {
        bpf_stats: bool,
    },
    Tcpdump,
    Softflowd,
    Pmacctd,
    Fastnetmon,
}

impl Subject {
    /// How it is run and where its count comes from.
    pub fn how(self) -> &'static str {
        match self {
            Subject::Baseline => "XDP_PASS stub on the receiver, nothing else",
            Subject::Sensor { .. } => {
                "`sensor run --xdp-mode native --interval 1s`; counted: sensor_packets_total (ingress) from its endpoint"
            }
            Subject::Tcpdump => "`tcpdump -i IF -n -w /dev/null`; counted: \"packets captured\" printed on exit",
            Subject::Softflowd => {
                "`softflowd -d -i IF -n 127.0.0.1:9` (defaults); counted: \"Packets processed\" of `softflowctl statistics` before it stops"
            }
            Subject::Pmacctd => {
                "`pmacctd -i IF -P memory -c src_host,dst_host,src_port,dst_port,proto` (default buffers); counted: sum of PACKETS in `pmacct -s -O csv`"
            }
            Subject::Fastnetmon => {
                "Debian's 1.2.4 in the foreground (`--configuration_file` written per run: mirror_afpacket = on, interfaces = IF, networks_list 198.19.0.0/16, bans, API and exports off; `--log_to_console --disable_pid_logic`); counted: fastnetmon_total_simple_packets_processed from its Prometheus endpoint"
            }
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Subject::Baseline => "no tool (baseline)",
            Subject::Sensor { .. } => "sensor (agent + XDP program)",
            Subject::Tcpdump => "tcpdump -w /dev/null (libpcap)",
            Subject::Softflowd => "softflowd",
            Subject::Pmacctd => "pmacctd (memory plugin)",
            Subject::Fastnetmon => "fastnetmon (AF_PACKET)",
        }
    }
}

/// A started subject.
pub struct Running {
    subject: Subject,
    iface: String,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    agent: Option<Agent>,
    _stub: Option<StubAttached>,
    _stats: Option<sys::BpfStats>,
}

/// What a stopped subject left behind.
pub struct Stopped {
    /// Packets it says it counted, if it says.
    pub counted: Option<u64>,
    /// Packets its capture layer received, if it says (tcpdump).
    pub received: Option<u64>,
    /// Its output (stdout and stderr).
    pub log: String,
}

/// The first number on the first line containing `needle`.
pub fn number_in(text: &str, needle: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains(needle))?;
    line.split(|c: char| !c.is_ascii_digit())
        .find(|t| !t.is_empty())?
        .parse()
        .ok()
}

fn fastnetmon_config(dir: &Path, iface: &str) -> Result<PathBuf> {
    let nets = dir.join("networks_list");
    let white = dir.join("networks_whitelist");
    // The generator's destinations: every frame is incoming traffic.
    std::fs::write(&nets, "198.19.0.0/16\n")?;
    std::fs::write(&white, "")?;
    let d = dir.display();
    // Keys as in the package's /etc/fastnetmon.conf; bans and every export off.
    let conf = format!(
        "logging_level = info
logging_local_syslog_logging = off
logging_remote_syslog_logging = off
disable_usage_report = on
enable_ban = off
enable_ban_ipv6 = off
process_incoming_traffic = on
process_outgoing_traffic = on
networks_list_path = {nets}
white_list_path = {white}
check_period = 1
enable_connection_tracking = off
ban_for_pps = off
ban_for_bandwidth = off
ban_for_flows = off
mirror_afpacket = on
mirror_afxdp = off
mirror_netmap = off
pcap = off
netflow = off
sflow = off
interfaces = {iface}
monitor_local_ip_addresses = off
pid_path = {d}/fastnetmon.pid
cli_stats_file_path = {d}/fastnetmon.dat
cli_stats_ipv6_file_path = {d}/fastnetmon_ipv6.dat
notify_script_path = /bin/true
enable_api = off
prometheus = on
prometheus_host = 127.0.0.1
prometheus_port = {FNM_PORT}
redis_enabled = off
mongodb_enabled = off
exabgp = off
gobgp = off
influxdb = off
graphite = off
kafka_traffic_export = off
",
        nets = nets.display(),
        white = white.display(),
    );
    let path = dir.join("fastnetmon.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

impl Running {
    /// Starts `subject` on the pair's receiving end and waits until it is ready.
    pub fn start(subject: Subject, veth: &Veth, agent_bin: &Path, dir: &Path) -> Result<Running> {
        let iface = veth.recv.clone();
        let mut r = Running {
            subject,
            iface: iface.clone(),
            dir: dir.to_path_buf(),
            log: PathBuf::new(),
            child: None,
            agent: None,
            _stub: None,
            _stats: None,
        };
        if let Subject::Sensor { bpf_stats } = subject {
            r._stats = Some(sys::BpfStats::set(bpf_stats)?);
            r.agent = Some(Agent::start(agent_bin, &iface, AGENT_PORT, &[])?);
            return Ok(r);
        }
        r._stub = Some(StubAttached::new(&iface)?);
        let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let (ctl, pidfile, pipe) = (d("softflowd.ctl"), d("softflowd.pid"), d("pmacct.pipe"));
        let conf;
        let args: Vec<&str> = match subject {
            Subject::Baseline | Subject::Sensor { .. } => return Ok(r),
            Subject::Tcpdump => vec!["tcpdump", "-i", &iface, "-n", "-w", "/dev/null"],
            Subject::Softflowd => vec![
                "softflowd",
                "-d",
                "-i",
                &iface,
                "-c",
                &ctl,
                "-p",
                &pidfile,
                "-n",
                "127.0.0.1:9",
            ],
            Subject::Pmacctd => vec![
                "pmacctd",
                "-i",
                &iface,
                "-P",
                "memory",
                "-p",
                &pipe,
                "-c",
                "src_host,dst_host,src_port,dst_port,proto",
            ],
            Subject::Fastnetmon => {
                conf = fastnetmon_config(dir, &iface)?;
                vec![
                    "fastnetmon",
                    "--configuration_file",
                    conf.to_str().context("non-UTF-8 temporary path")?,
                    "--log_to_console",
                    "--disable_pid_logic",
                ]
            }
        };
        r.log = dir.join(format!("{}.log", args[0]));
        let out = File::create(&r.log)?;
        let child = Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {args:?}"))?;
        r.child = Some(child);
        let ready = sys::wait_for(
            &format!("{} to start", subject.name()),
            Duration::from_secs(20),
            || r.ready(),
        );
        if let Err(e) = ready {
            let log = r.stop().map(|s| s.log).unwrap_or_default();
            bail!("{e:#}; its output: {}", log.trim());
        }
        Ok(r)
    }

    fn ready(&mut self) -> bool {
        if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
            // Exited: never ready; wait_for times out and the error shows its output.
            return false;
        }
        match self.subject {
            Subject::Tcpdump => std::fs::read_to_string(&self.log)
                .map(|l| l.contains("listening on"))
                .unwrap_or(false),
            _ => self.counted().is_some(),
        }
    }

    /// Per-process CPU seconds so far: the tool's process tree, or the
    /// agent plus (with BPF stats on) its XDP program's run time.
    pub fn process_cpu(&self) -> Option<f64> {
        match self.subject {
            Subject::Baseline => None,
            Subject::Sensor { bpf_stats } => {
                let agent = sys::cpu_seconds(self.agent.as_ref()?.pid())?;
                if !bpf_stats {
                    return None;
                }
                let (run_ns, _) = sys::attached_xdp_stats(&self.iface).ok()?;
                Some(agent + run_ns as f64 / 1e9)
            }
            _ => Some(sys::tree_cpu_seconds(self.child.as_ref()?.id())),
        }
    }

    /// Packets libpcap handed to softflowd so far (its own statistics).
    pub fn libpcap_received(&self) -> Option<u64> {
        if self.subject != Subject::Softflowd {
            return None;
        }
        let ctl = self.dir.join("softflowd.ctl");
        let s = sys::sh(&["softflowctl", "-c", &ctl.to_string_lossy(), "statistics"]).ok()?;
        number_in(&s, "Packets received by libpcap:")
    }

    /// Packets counted so far, where the subject can say while running.
    pub fn counted(&self) -> Option<u64> {
        let d = |f: &str| self.dir.join(f).to_string_lossy().into_owned();
        match self.subject {
            Subject::Baseline | Subject::Tcpdump => None,
            Subject::Sensor { .. } => self.agent.as_ref()?.packets(&self.iface).ok(),
            Subject::Softflowd => {
                let s = sys::sh(&["softflowctl", "-c", &d("softflowd.ctl"), "statistics"]).ok()?;
                number_in(&s, "Packets processed:")
            }
            Subject::Pmacctd => {
                let out = sys::sh(&["pmacct", "-p", &d("pmacct.pipe"), "-s", "-O", "csv"]).ok()?;
                let mut lines = out.lines();
                let header: Vec<&str> = lines.next()?.split(',').collect();
                let col = header
                    .iter()
                    .position(|h| h.trim().eq_ignore_ascii_case("PACKETS"))?;
                Some(
                    lines
                        .filter_map(|l| l.split(',').nth(col)?.trim().parse::<u64>().ok())
                        .sum(),
                )
            }
            Subject::Fastnetmon => {
                let (code, body, _) = agent::get(FNM_PORT, "/metrics").ok()?;
                if code != 200 {
                    return None;
                }
                body.lines().find_map(|l| {
                    l.strip_prefix("fastnetmon_total_simple_packets_processed ")?
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .map(|v| v as u64)
                })
            }
        }
    }

    /// Polls [`counted`](Self::counted) until it reaches `expected` or has
    /// not moved for 1.5 s (the agent drains once a second); at most 6 s.
    pub fn settle(&self, expected: u64) -> Option<u64> {
        let start = Instant::now();
        let mut last = self.counted();
        let mut since = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            if last.is_none_or(|c| c >= expected) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            let now = self.counted();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(1500) {
                break;
            }
        }
        last
    }

    /// Stops the subject: SIGTERM to its process group (FastNetMon 1.2.4
    /// aborts on SIGINT), SIGKILL after 10 s; returns its output and, for
    /// tcpdump, the count it prints on exit.
    pub fn stop(mut self) -> Result<Stopped> {
        drop(self.agent.take());
        let Some(mut child) = self.child.take() else {
            return Ok(Stopped {
                counted: None,
                received: None,
                log: String::new(),
            });
        };
        let pgid = child.id() as i32;
        // SAFETY: signalling the process group of our own child.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; ends workers that outlive the leader.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let (counted, received) = match self.subject {
            Subject::Tcpdump => (
                number_in(&log, "packets captured"),
                number_in(&log, "packets received by filter"),
            ),
            _ => (None, None),
        };
        Ok(Stopped {
            counted,
            received,
            log,
        })
    }
}
