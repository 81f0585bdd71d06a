//! Section 3: the sensor against libpcap and flow tools at one offered load.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    agent::Agent,
    live::{Gen, StubAttached, Veth},
    stats::{figure, Report},
    sys, Mode,
};

const S: &str = "3. against libpcap and flow tools";
const FLOWS: u64 = 1024;

/// One tool's result: CPU seconds and packets it says it counted.
struct Outcome {
    cpu_s: f64,
    counted: Option<u64>,
    why_na: String,
}

fn spawn(args: &[&str], dir: &Path) -> Result<std::process::Child> {
    Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {args:?}"))
}

fn stop(child: std::process::Child) -> Result<String> {
    // SAFETY: signalling our own child's process group.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The first number on the first line containing `needle`.
fn number_in(text: &str, needle: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains(needle))?;
    line.split(|c: char| !c.is_ascii_digit())
        .find(|t| !t.is_empty())?
        .parse()
        .ok()
}

/// Runs a libpcap tool with the stub attached; `count` reads its tally.
fn pcap_tool(
    veth: &Veth,
    mode: &Mode,
    rate: u64,
    args: &[&str],
    dir: &Path,
    count: impl Fn(&str, &Path) -> Option<u64>,
) -> Result<(Outcome, u64)> {
    let _stub = StubAttached::new(&veth.recv)?;
    let child = spawn(args, dir)?;
    let pgid = child.id();
    std::thread::sleep(Duration::from_millis(1500)); // startup: no condition to poll across tools
    let cpu0 = sys::group_cpu_seconds(pgid);
    let mut g = Gen::new(veth, FLOWS)?;
    g.paced(rate, mode.tool_secs)?;
    std::thread::sleep(Duration::from_millis(500));
    let cpu1 = sys::group_cpu_seconds(pgid);
    let pre = count("", dir);
    let text = stop(child)?;
    let counted = count(&text, dir).or(pre);
    Ok((
        Outcome {
            cpu_s: cpu1 - cpu0,
            counted,
            why_na: format!(
                "no tally found in its output: {}",
                text.lines().last().unwrap_or("")
            ),
        },
        g.sent,
    ))
}

/// Measures and records every section-3 figure and target.
pub fn run(mode: &Mode, agent_bin: &Path, report: &mut Report) -> Result<()> {
    println!("== {S}");
    let veth = Veth::new()?;
    let dir = std::env::temp_dir().join(format!("sensor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rate = mode.tool_rate;
    let note = format!("{rate} pps offered for {:?}, {FLOWS} flows", mode.tool_secs);
    let mut results: Vec<(String, Result<(Outcome, u64)>)> = Vec::new();

    // The sensor: agent CPU plus its XDP program's run time from BPF stats.
    let sensor = (|| -> Result<(Outcome, u64)> {
        let _stats = sys::BpfStats::set(true)?;
        let agent = Agent::start(agent_bin, &veth.recv, 19_387, &[])?;
        let (t0, _) = sys::attached_xdp_stats(&veth.recv)?;
        let before = agent.packets(&veth.recv)?;
        let cpu0 = sys::cpu_seconds(agent.pid()).unwrap_or(0.0);
        let mut g = Gen::new(&veth, FLOWS)?;
        g.paced(rate, mode.tool_secs)?;
        std::thread::sleep(Duration::from_millis(2500)); // two drain intervals
        let cpu1 = sys::cpu_seconds(agent.pid()).unwrap_or(0.0);
        let (t1, _) = sys::attached_xdp_stats(&veth.recv)?;
        let counted = agent.packets(&veth.recv)? - before;
        Ok((
            Outcome {
                cpu_s: cpu1 - cpu0 + (t1 - t0) as f64 / 1e9,
                counted: Some(counted),
                why_na: String::new(),
            },
            g.sent,
        ))
    })();
    results.push(("sensor (agent + XDP program)".into(), sensor));

    let recv = veth.recv.clone();
    results.push((
        "tcpdump -w /dev/null (libpcap)".into(),
        pcap_tool(
            &veth,
            mode,
            rate,
            &["tcpdump", "-i", &recv, "-n", "-w", "/dev/null"],
            &dir,
            |t, _| number_in(t, "packets captured"),
        ),
    ));
    let sock = dir.join("softflowd.ctl");
    let sock_s = sock.to_string_lossy().to_string();
    results.push((
        "softflowd".into(),
        pcap_tool(
            &veth,
            mode,
            rate,
            &[
                "softflowd",
                "-d",
                "-i",
                &recv,
                "-c",
                &sock_s,
                "-p",
                &dir.join("sf.pid").to_string_lossy(),
                "-n",
                "127.0.0.1:9",
            ],
            &dir,
            |t, _| {
                if t.is_empty() {
                    let s = sys::sh(&["softflowctl", "-c", &sock_s, "statistics"]).ok()?;
                    number_in(&s, "packets processed")
                        .or_else(|| number_in(&s, "Number of packets"))
                } else {
                    None
                }
            },
        ),
    ));
    let pipe = dir.join("pmacct.pipe").to_string_lossy().to_string();
    results.push((
        "pmacctd (memory plugin)".into(),
        pcap_tool(
            &veth,
            mode,
            rate,
            &[
                "pmacctd",
                "-i",
                &recv,
                "-P",
                "memory",
                "-p",
                &pipe,
                "-c",
                "src_host,dst_host,src_port,dst_port,proto",
            ],
            &dir,
            |t, _| {
                if !t.is_empty() {
                    return None;
                }
                let out = sys::sh(&["pmacct", "-p", &pipe, "-s", "-O", "csv"]).ok()?;
                let mut lines = out.lines();
                let header: Vec<&str> = lines.next()?.split(',').collect();
                let col = header
                    .iter()
                    .position(|h| h.eq_ignore_ascii_case("PACKETS"))?;
                Some(
                    lines
                        .filter_map(|l| l.split(',').nth(col)?.trim().parse::<u64>().ok())
                        .sum(),
                )
            },
        ),
    ));

    let mut per_pkt = Vec::new();
    for (name, r) in results {
        match r {
            Ok((o, sent)) => {
                let ns = o.cpu_s * 1e9 / sent.max(1) as f64;
                if o.cpu_s <= 0.0 {
                    report.note(format!("{name}: CPU per packet n/a (no CPU time found in its process group; it may re-parent its workers)"));
                    continue;
                }
                report.add_noted(
                    figure(S, format!("{name}: CPU per packet"), "ns/pkt", &[ns]),
                    &note,
                );
                match o.counted {
                    Some(c) => {
                        report.add_noted(
                            figure(
                                S,
                                format!("{name}: share counted"),
                                "%",
                                &[c as f64 * 100.0 / sent.max(1) as f64],
                            ),
                            format!("{c} of {sent}"),
                        );
                    }
                    None => report.note(format!("{name}: share counted n/a ({})", o.why_na)),
                }
                per_pkt.push((name, ns));
            }
            Err(e) => report.note(format!("{name}: not measured: {e:#}")),
        }
    }
    report.note(
        "fastnetmon: n/a: the Debian package runs as a configured daemon (/etc/fastnetmon.conf, \
         capture backend, networks list); the harness does not yet drive it",
    );
    report.note(
        "CPU per packet of the libpcap tools is their processes' utime+stime; the kernel's \
         AF_PACKET copy in softirq is not charged to them (it favours them)",
    );
    let s = per_pkt
        .iter()
        .find(|(n, _)| n.starts_with("sensor"))
        .map(|p| p.1);
    let t = per_pkt
        .iter()
        .find(|(n, _)| n.starts_with("tcpdump"))
        .map(|p| p.1);
    let ratio = match (s, t) {
        (Some(s), Some(t)) => s / t,
        _ => f64::NAN,
    };
    report.target(
        "CPU per packet vs libpcap (sensor / tcpdump)",
        "<= 0.2".into(),
        ratio,
        "",
        ratio.is_finite().then_some(ratio <= 0.2),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
