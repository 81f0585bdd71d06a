//! Section 5: scrape latency and body size, and agent memory by flow count.

use std::{path::Path, time::Duration};

use anyhow::Result;

use crate::{
    agent::{get, Agent},
    live::{Gen, Veth},
    stats::{figure, percentile, Report},
    sys, Mode,
};

const S: &str = "5. exporter and agent memory";

/// Measures and records every section-5 figure and target.
pub fn run(mode: &Mode, agent_bin: &Path, report: &mut Report) -> Result<()> {
    println!("== {S}");
    let veth = Veth::new()?;
    let mut sizes = vec![10_000u64, 100_000];
    if !mode.quick {
        sizes.push(1_000_000);
    }
    let mut rss_1m = f64::NAN;
    let mut p99_default = f64::NAN;
    for &n in &sizes {
        for top_k in ["20", "1000"] {
            if top_k == "1000" && n != 100_000 {
                continue;
            }
            let agent = Agent::start(
                agent_bin,
                &veth.recv,
                19_388,
                &[
                    "--flow-map-entries",
                    "1048576",
                    "--max-flows",
                    "1100000",
                    "--top-k",
                    top_k,
                ],
            )?;
            let mut g = Gen::new(&veth, n)?;
            g.hold_in_dispatcher()?;
            // Every flow seen at least twice, spread over a few intervals.
            let rate = 400_000u64;
            let secs = ((2 * n) as f64 / rate as f64).max(3.0);
            g.paced(rate, Duration::from_secs_f64(secs))?;
            settle(agent.port)?;
            let mut lat = Vec::new();
            let mut size = 0usize;
            for _ in 0..mode.scrapes {
                let (_, body, took) = get(agent.port, "/metrics")?;
                size = body.len();
                lat.push(took.as_secs_f64() * 1e3);
            }
            let label = if top_k == "20" {
                "default top-k 20"
            } else {
                "worst case top-k 1000"
            };
            let p50 = percentile(&lat, 50.0);
            let p99 = percentile(&lat, 99.0);
            report.add_noted(
                figure(S, format!("scrape p50, {label}, {n} flows"), "ms", &[p50]),
                format!("{} scrapes", lat.len()),
            );
            report.add(figure(
                S,
                format!("scrape p99, {label}, {n} flows"),
                "ms",
                &[p99],
            ));
            report.add(figure(
                S,
                format!("scrape body, {label}, {n} flows"),
                "bytes",
                &[size as f64],
            ));
            if top_k == "20" {
                let rss = sys::status_kib(agent.pid(), "VmRSS").unwrap_or(0) as f64 / 1024.0;
                let hwm = sys::status_kib(agent.pid(), "VmHWM").unwrap_or(0) as f64 / 1024.0;
                report.add_noted(
                    figure(S, format!("agent VmRSS, {n} flows"), "MiB", &[rss]),
                    format!("peak VmHWM {hwm:.1} MiB"),
                );
                if n == 1_000_000 {
                    rss_1m = rss;
                }
                if n == 10_000 {
                    p99_default = p99;
                }
            }
        }
    }
    report.target(
        "scrape p99 at default cardinality",
        "<= 50 ms".into(),
        p99_default,
        "ms",
        Some(p99_default <= 50.0),
    );
    report.target(
        "agent memory at 1M flows",
        "<= 150 MB".into(),
        rss_1m,
        "MiB",
        if mode.quick {
            None
        } else {
            Some(rss_1m <= 150.0)
        },
    );
    Ok(())
}

/// Waits until the agent has drained and processed everything sent: the
/// table size (`sensor_flow_table_flows`) is the same in two scrapes 1.5 s
/// apart (at least one empty interval in between), at most 60 s. Memory is
/// then the steady state with the flows held, not a mid-interval sample.
fn settle(port: u16) -> Result<()> {
    let flows = |port| -> Result<Option<f64>> {
        let (_, body, _) = get(port, "/metrics")?;
        Ok(body.lines().find_map(|l| {
            l.strip_prefix("sensor_flow_table_flows ")?
                .trim()
                .parse()
                .ok()
        }))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = flows(port)?;
    loop {
        std::thread::sleep(Duration::from_millis(1500));
        let now = flows(port)?;
        if now.is_some() && now == last {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("the agent's flow table did not settle within 60 s ({now:?})");
        }
        last = now;
    }
}
