//! Section 4: drain cost, batch (the sensor's Drainer) vs per-key
//! iteration, and the traffic lost while drains run.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Instant,
};

use anyhow::{anyhow, Result};
use aya::maps::PerCpuHashMap;
use sensor_common::{BenchConfig, FlowKey, FlowValue, MAP_FLOWS_A, PROG_XDP_BENCH};

use crate::{
    live::{Gen, Veth},
    obj::{self, Obj},
    stats::{figure, Report},
    sys, Mode,
};

const S: &str = "4. drain cost";

/// Per-key drain of the active buffer A: get_next_key, lookup, delete.
fn per_key(o: &mut Obj) -> Result<(f64, u64)> {
    let map = o
        .sensor
        .ebpf_mut()
        .map_mut(MAP_FLOWS_A)
        .ok_or_else(|| anyhow!("no map {MAP_FLOWS_A}"))?;
    let mut m: PerCpuHashMap<_, FlowKey, FlowValue> = PerCpuHashMap::try_from(map)?;
    let start = Instant::now();
    let mut entries = Vec::new();
    for item in m.iter() {
        let (k, v) = item?;
        let packets: u64 = v.iter().map(|c| c.packets).sum();
        entries.push((k, packets));
    }
    for (k, _) in &entries {
        m.remove(k)?;
    }
    Ok((start.elapsed().as_secs_f64() * 1e3, entries.len() as u64))
}

/// Measures and records every section-4 figure and target.
pub fn run(mode: &Mode, report: &mut Report) -> Result<()> {
    println!("== {S}");
    let v4 = obj::ipv4_udp();
    let mut sizes = vec![10_000u32, 100_000];
    if !mode.quick {
        sizes.push(1_000_000);
    }
    let (mut b100k, mut b1m, mut speedup100k) = (f64::NAN, f64::NAN, f64::NAN);
    for &n in &sizes {
        let mut o = Obj::load(1 << 20)?;
        o.config(BenchConfig {
            prog_flows: 0,
            gen_flows: 0,
            ..BenchConfig::default()
        })?;
        let mut key_ms = Vec::new();
        let mut stored = Vec::new();
        for _ in 0..mode.runs {
            o.run(PROG_XDP_BENCH, &v4, n)?;
            let (ms, got) = per_key(&mut o)?;
            key_ms.push(ms * n as f64 / got.max(1) as f64);
            stored.push(got as f64);
        }
        let mut drainer = o.sensor.drainer()?;
        let mut batch_ms = Vec::new();
        for _ in 0..mode.runs {
            o.run(PROG_XDP_BENCH, &v4, n)?;
            let start = Instant::now();
            let iv = drainer.drain()?;
            batch_ms.push(start.elapsed().as_secs_f64() * 1e3);
            stored.push(iv.flows.len() as f64);
        }
        report.add_noted(
            figure(
                S,
                format!("flows stored of {n} inserted in one test run"),
                "flows",
                &stored,
            ),
            "inserts that fail are counted as not attributed; per-key times scaled to n",
        );
        let per_entry = |v: &[f64]| v.iter().map(|ms| ms * 1e6 / n as f64).collect::<Vec<_>>();
        let b = report.add_noted(
            figure(S, format!("batch drain, {n} flows"), "ms", &batch_ms),
            "flip + RCU barrier + LOOKUP_AND_DELETE_BATCH + totals",
        );
        report.add(figure(
            S,
            format!("batch drain per entry, {n} flows"),
            "ns",
            &per_entry(&batch_ms),
        ));
        let k = report.add_noted(
            figure(S, format!("per-key drain, {n} flows"), "ms", &key_ms),
            "get_next_key + lookup (aya iter) + delete per key",
        );
        report.add(figure(
            S,
            format!("per-key drain per entry, {n} flows"),
            "ns",
            &per_entry(&key_ms),
        ));
        match n {
            100_000 => {
                b100k = b;
                speedup100k = k / b;
            }
            1_000_000 => b1m = b,
            _ => {}
        }
    }
    report.target(
        "100k flows drained",
        "<= 20 ms".into(),
        b100k,
        "ms",
        Some(b100k <= 20.0),
    );
    report.target(
        "1M flows drained",
        "<= 300 ms".into(),
        b1m,
        "ms",
        if mode.quick { None } else { Some(b1m <= 300.0) },
    );
    report.target(
        "batch vs per-key speed-up (100k)",
        ">= 5x".into(),
        speedup100k,
        "x",
        Some(speedup100k >= 5.0),
    );
    interference(mode, report)
}

/// Generator rate with and without a concurrent drain loop (100k flows).
fn interference(mode: &Mode, report: &mut Report) -> Result<()> {
    let veth = Veth::new()?;
    let flows = 100_000u64;
    let mut o = Obj::load(1 << 18)?;
    o.sensor.attach(&veth.recv)?;
    let mut drainer = o.sensor.drainer()?;
    let mut without = Vec::new();
    let mut with = Vec::new();
    let drains = AtomicU64::new(0);
    for _ in 0..mode.runs {
        let mut g = Gen::new(&veth, flows)?;
        g.hold_in_dispatcher()?;
        without.push(g.flat_out(mode.live_secs)?);
        drainer.drain()?;
        let stop = AtomicBool::new(false);
        let rate = std::thread::scope(|s| -> Result<f64> {
            let d = &mut drainer;
            let (stop, drains) = (&stop, &drains);
            let h = s.spawn(move || -> Result<()> {
                sys::pin_to_cpu(0)?;
                while !stop.load(Ordering::Relaxed) {
                    d.drain()?;
                    drains.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            let r = g.flat_out(mode.live_secs);
            stop.store(true, Ordering::Relaxed);
            h.join().map_err(|_| anyhow!("drain thread panicked"))??;
            r
        })?;
        with.push(rate);
    }
    let a = report.add_noted(
        figure(S, "live rate, no drain (100k flows)", "pps", &without),
        "generator and receiver on one CPU",
    );
    let b = report.add_noted(
        figure(S, "live rate, drain loop on another CPU", "pps", &with),
        format!("{} drains in total", drains.load(Ordering::Relaxed)),
    );
    report.add(figure(
        S,
        "throughput lost while draining",
        "%",
        &[(1.0 - b / a) * 100.0],
    ));
    Ok(())
}
