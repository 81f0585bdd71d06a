//! Section 1: program cost with BPF_PROG_TEST_RUN, pinned to one CPU.

use anyhow::Result;
use sensor_common::{
    BenchConfig, DEFAULT_FLOW_MAP_ENTRIES, PROG_XDP, PROG_XDP_BENCH, PROG_XDP_STUB,
};

use crate::{
    obj::{self, Obj},
    stats::{figure, Report},
    sys, Mode,
};

const S: &str = "1. program cost (BPF_PROG_TEST_RUN)";

/// Runs `f` `runs` times and returns the samples.
fn samples(runs: usize, mut f: impl FnMut() -> Result<f64>) -> Result<Vec<f64>> {
    (0..runs).map(|_| f()).collect()
}

/// Measures and records every section-1 figure and target.
pub fn run(mode: &Mode, report: &mut Report) -> Result<()> {
    println!("== {S}");
    let cpu = sys::online_cpus() - 1;
    sys::pin_to_cpu(cpu)?;
    let stats_off = sys::BpfStats::set(false)?;
    let r = mode.repeat;
    let runs = mode.runs;
    let frames = [
        ("IPv4/UDP", obj::ipv4_udp()),
        ("IPv6/TCP", obj::ipv6_tcp()),
        ("VLAN IPv4/UDP", obj::vlan_udp()),
    ];
    let note = format!("repeat {r}, pinned to CPU {cpu}");
    let mut o = Obj::load(DEFAULT_FLOW_MAP_ENTRIES)?;
    let mut stub_v4 = f64::NAN;
    for (name, frame) in &frames {
        let stub = samples(runs, || o.run(PROG_XDP_STUB, frame, r))?;
        let sensor = samples(runs, || o.run(PROG_XDP, frame, r))?;
        let over: Vec<f64> = sensor.iter().zip(&stub).map(|(a, b)| a - b).collect();
        let s = report.add_noted(figure(S, format!("stub, {name}"), "ns/pkt", &stub), &note);
        report.add_noted(
            figure(S, format!("sensor (one flow), {name}"), "ns/pkt", &sensor),
            &note,
        );
        report.add(figure(
            S,
            format!("sensor over stub, {name}"),
            "ns/pkt",
            &over,
        ));
        if *name == "IPv4/UDP" {
            stub_v4 = s;
        }
    }
    drop(o);

    let v4 = obj::ipv4_udp();
    let mut flow_counts = vec![1u64, 65_536];
    if !mode.quick {
        flow_counts.push(1_000_000);
    }
    let mut hit64k = f64::NAN;
    for &n in &flow_counts {
        let cap = if n > DEFAULT_FLOW_MAP_ENTRIES as u64 {
            1 << 20
        } else {
            DEFAULT_FLOW_MAP_ENTRIES
        };
        let mut o = Obj::load(cap)?;
        o.config(BenchConfig {
            prog_flows: n,
            gen_flows: 0,
            ..BenchConfig::default()
        })?;
        // Populate: one run per flow, the counter cycling through 0..n.
        o.run(PROG_XDP_BENCH, &v4, n as u32)?;
        let stub = samples(runs, || o.run(PROG_XDP_STUB, &v4, r))?;
        let hit = samples(runs, || o.run(PROG_XDP_BENCH, &v4, r))?;
        let over: Vec<f64> = hit.iter().zip(&stub).map(|(a, b)| a - b).collect();
        report.add_noted(
            figure(S, format!("bench hit path, {n} flows"), "ns/pkt", &hit),
            format!("map capacity {cap}"),
        );
        let m = report.add(figure(
            S,
            format!("bench hit path over stub, {n} flows"),
            "ns/pkt",
            &over,
        ));
        if n == 65_536 {
            hit64k = m;
        }
    }

    // New flows: every run a new key; the buffer is emptied between runs.
    let cap = r.max(DEFAULT_FLOW_MAP_ENTRIES);
    let mut o = Obj::load(cap)?;
    o.config(BenchConfig {
        prog_flows: 0,
        gen_flows: 0,
        ..BenchConfig::default()
    })?;
    let mut drainer = o.sensor.drainer()?;
    let new = samples(runs, || {
        let ns = o.run(PROG_XDP_BENCH, &v4, r)?;
        drainer.drain()?;
        Ok(ns)
    })?;
    let over: Vec<f64> = new.iter().map(|v| v - stub_v4).collect();
    report.add_noted(
        figure(S, "bench new-flow path (empty map)", "ns/pkt", &new),
        format!("map capacity {cap}"),
    );
    report.add(figure(S, "bench new-flow path over stub", "ns/pkt", &over));
    drop(drainer);
    drop(o);

    // Map full: fill to capacity, then every run a new key that cannot be stored.
    let cap = DEFAULT_FLOW_MAP_ENTRIES;
    let mut o = Obj::load(cap)?;
    o.config(BenchConfig {
        prog_flows: 0,
        gen_flows: 0,
        ..BenchConfig::default()
    })?;
    o.run(PROG_XDP_BENCH, &v4, cap)?;
    let stub = samples(runs, || o.run(PROG_XDP_STUB, &v4, r))?;
    let full = samples(runs, || o.run(PROG_XDP_BENCH, &v4, r))?;
    let over: Vec<f64> = full.iter().zip(&stub).map(|(a, b)| a - b).collect();
    report.add_noted(
        figure(S, "bench map-full path (new keys)", "ns/pkt", &full),
        format!("map capacity {cap}"),
    );
    let full_over = report.add(figure(S, "bench map-full path over stub", "ns/pkt", &over));
    drop(o);
    drop(stats_off);

    report.target(
        "program cost over stub, hit path, 64k flows",
        "<= 40 ns/pkt (stretch 25)".into(),
        hit64k,
        "ns/pkt",
        Some(hit64k <= 40.0),
    );
    let ratio = full_over / hit64k;
    report.target(
        "map-full path vs hit path (64k flows), over stub",
        "<= 2x".into(),
        ratio,
        "x",
        Some(ratio <= 2.0),
    );
    Ok(())
}
