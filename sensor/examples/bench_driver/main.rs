//! The benchmark driver behind `cargo xtask bench` (run as root).
//!
//! `bench_driver [--quick] --agent PATH --out DIR` measures the five
//! sections of the benchmark issue and writes `DIR/BENCHMARKS.md` and
//! `DIR/BENCHMARKS.json`. It fails only when the harness itself fails; a
//! missed target is reported, never an error.
//!
//! Layout:
//! - `stats`: figures (median, spread), targets, the report;
//! - `sys`: pinning, CPU time, memory, BPF stats;
//! - `obj`: a loaded object with the bench programs, test frames;
//! - `progcost` (1), `live` (2), `tools` (3), `drain` (4), `exporter` (5);
//! - `rivals`: section 3's subjects (the sensor, tcpdump, flow tools);
//! - `wholecpu`: whole-machine busy CPU time and other work's share;
//! - `agent`: the real agent as a child process and its endpoint;
//! - `render`: BENCHMARKS.md.

mod agent;
mod drain;
mod exporter;
mod live;
mod obj;
mod progcost;
mod render;
mod rivals;
mod stats;
mod sys;
mod tools;
mod wholecpu;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};

/// Sizes of a run.
pub struct Mode {
    pub quick: bool,
    pub repeat: u32,
    pub runs: usize,
    pub live_secs: Duration,
    pub tool_secs: Duration,
    pub tool_rate: u64,
    pub scrapes: usize,
}

fn environment(quick: bool) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_string())
            })
        })
        .unwrap_or_default();
    let kernel = sys::sh(&["uname", "-r"])
        .unwrap_or_default()
        .trim()
        .to_string();
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))
        .unwrap_or_default();
    let aya = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"aya\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .unwrap_or("?")
        .trim_matches('"')
        .to_string();
    vec![
        ("kernel".into(), kernel),
        ("CPU model".into(), cpu),
        ("vCPUs".into(), sys::online_cpus().to_string()),
        ("aya".into(), aya),
        (
            "mode".into(),
            if quick { "quick".into() } else { "full".into() },
        ),
        (
            "date (UTC)".into(),
            sys::sh(&["date", "-u", "+%Y-%m-%d %H:%M"])
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
    ]
}

fn main() -> Result<()> {
    let mut quick = false;
    let mut agent = None;
    let mut out = None;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--agent" => agent = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            "--sections" => only = args.next(),
            other => bail!(
                "unknown argument {other}; usage: bench_driver [--quick] [--sections 12345] --agent PATH --out DIR"
            ),
        }
    }
    let agent = agent.context("--agent PATH (the sensor binary) is required")?;
    let out = out.context("--out DIR is required")?;
    let mode = if quick {
        Mode {
            quick,
            repeat: 100_000,
            runs: 3,
            live_secs: Duration::from_secs(1),
            tool_secs: Duration::from_secs(2),
            tool_rate: 200_000,
            scrapes: 20,
        }
    } else {
        Mode {
            quick,
            repeat: 1_000_000,
            runs: 5,
            live_secs: Duration::from_secs(3),
            tool_secs: Duration::from_secs(5),
            tool_rate: 200_000,
            scrapes: 100,
        }
    };
    type Section<'a> = Box<dyn Fn(&mut stats::Report) -> Result<()> + 'a>;
    let mut report = stats::Report {
        environment: environment(quick),
        ..Default::default()
    };
    let sections: [(&str, Section); 5] = [
        ("1", Box::new(|r| progcost::run(&mode, r))),
        ("2", Box::new(|r| live::run(&mode, r))),
        ("3", Box::new(|r| tools::run(&mode, &agent, r))),
        ("4", Box::new(|r| drain::run(&mode, r))),
        ("5", Box::new(|r| exporter::run(&mode, &agent, r))),
    ];
    let mut failed = Vec::new();
    for (n, f) in sections.iter() {
        if only.as_ref().is_some_and(|o| !o.contains(n)) {
            continue;
        }
        if let Err(e) = f(&mut report) {
            eprintln!("section {n} failed: {e:#}");
            report.note(format!("section {n} failed: {e:#}"));
            failed.push(*n);
        }
    }
    std::fs::write(
        out.join("BENCHMARKS.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("BENCHMARKS.md"), render::markdown(&report))?;
    println!("wrote {}/BENCHMARKS.md and BENCHMARKS.json", out.display());
    if !failed.is_empty() {
        bail!("harness error in section(s) {}", failed.join(", "));
    }
    Ok(())
}
