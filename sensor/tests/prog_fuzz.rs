//! Property test of the kernel parser against etherparse: 300,000 (at
//! least 100,000 with SENSOR_TEST_QUICK) random and mutated frames (truncations, bad lengths, extension chains
//! past the walk limit, nested VLANs, fragments, minimum and maximum sizes,
//! random bytes) through the XDP program with BPF_PROG_TEST_RUN. Needs root.
//!
//! For every frame: the verdict is `XDP_PASS`, and the totals it adds (read
//! from the map right after the run) are exactly what the oracle derives
//! from etherparse's parse of the same bytes: class, fragment, L4 class or
//! malformed reason. After each batch the drained flows must be exactly the
//! oracle's keys with exact counts, and at the end the drained totals equal
//! the sum over all frames, with nothing unattributed.
//!
//! `SENSOR_PROG_FUZZ_SEED` (decimal or 0x-hex) replays a run;
//! `SENSOR_PROG_FUZZ_FRAMES` sets the number of frames.
//!
//! Layout (under `prog_fuzz/`): `frames.rs` the seeded generator and its
//! categories, `build.rs` well-formed frames, `mutate.rs` the mutations,
//! `oracle.rs` the oracle and every rule where the kernel differs from
//! etherparse.

#[path = "prog_fuzz/build.rs"]
mod build;
mod common;
#[path = "prog_fuzz/frames.rs"]
mod frames;
#[path = "prog_fuzz/mutate.rs"]
mod mutate;
#[path = "prog_fuzz/oracle.rs"]
mod oracle;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::Instant,
};

use common::*;
use frames::{Category, Gen, Limits};
use oracle::{Class, Expect, Outcome, Rule};
use sensor::{model::merge_value, rates::totals_delta};
use sensor_common::{Direction, FlowKey, FlowValue, Malformed, Totals, MALFORMED_REASONS};

const DEFAULT_SEED: u64 = 0x5e45_0f22_7a11_0007;
/// Frames per run (about 13 s in a debug build on two cores), and with
/// SENSOR_TEST_QUICK set.
const DEFAULT_FRAMES: u64 = 300_000;
const QUICK_FRAMES: u64 = 100_000;
/// Frames run between two drains.
const BATCH: usize = 2_000;
/// Far more than a batch can key: nothing may go unattributed.
const FLOW_MAP_ENTRIES: u32 = 8_192;
/// Detailed disagreements printed (all are counted).
const SHOWN: usize = 10;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => v.replace('_', "").parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

fn errno(e: &aya::programs::ProgramError) -> Option<i32> {
    match e {
        aya::programs::ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// Finds what BPF_PROG_TEST_RUN accepts and how much of a frame the
/// program sees, with all-zero frames (802.3, not IP: never keyed).
fn probe_limits(h: &mut Harness, reader: &TotalsReader) -> Limits {
    let min = (0..=64)
        .find(|&n| h.try_xdp(&vec![0u8; n]).is_ok())
        .expect("some size is accepted");
    for n in 0..min {
        let e = h.try_xdp(&vec![0u8; n]).expect_err("refused");
        assert_eq!(errno(&e), Some(libc::EINVAL), "{n} bytes: {e}");
    }
    let accepted = |h: &mut Harness, n: usize| h.try_xdp(&vec![0u8; n]).is_ok();
    let before = reader.read();
    assert!(accepted(h, 8192), "an 8 KiB frame (XDP multi-buffer)");
    let linear = (reader.read().bytes - before.bytes) as usize;
    let (mut lo, mut hi) = (8192usize, 1usize << 20);
    assert!(!accepted(h, hi), "a 1 MiB frame is refused");
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if accepted(h, mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let e = h.try_xdp(&vec![0u8; lo + 1]).expect_err("refused");
    let limits = Limits {
        min,
        linear,
        max: lo,
    };
    println!(
        "BPF_PROG_TEST_RUN (XDP) accepts {min}..={} bytes (EINVAL below, {} above); \
         the program sees at most the first {linear} (the rest goes to fragments)",
        limits.max,
        std::io::Error::from_raw_os_error(errno(&e).unwrap_or(0)),
    );
    // ETH_HLEN, and a full standard frame must be seen whole.
    assert_eq!(min, 14, "the kernel's minimum is an Ethernet header");
    assert!(linear >= 1514, "linear part {linear}");
    limits
}

/// The totals one frame must add.
fn frame_totals(e: &Expect, len: usize) -> Totals {
    let mut t = Totals {
        packets: 1,
        bytes: len as u64,
        fragments: e.fragment as u64,
        ..Totals::default()
    };
    match e.class {
        Class::V4 => t.ipv4 = 1,
        Class::V6 => t.ipv6 = 1,
        Class::NonIp(c) => {
            t.non_ip = 1;
            t.ether_class[c as usize] = 1;
        }
    }
    match e.outcome {
        Outcome::Malformed(r) => t.malformed[r as usize] = 1,
        Outcome::Keyed { l4, .. } => t.l4[l4 as usize] = 1,
        Outcome::NotIp => {}
    }
    t
}

fn add(sum: &mut Totals, t: &Totals) {
    sensor::model::merge_totals(sum, t);
}

fn hex(f: &[u8]) -> String {
    let shown = &f[..f.len().min(160)];
    let mut s = String::with_capacity(shown.len() * 2);
    for b in shown {
        let _ = write!(s, "{b:02x}");
    }
    if f.len() > shown.len() {
        let _ = write!(s, "... ({} bytes)", f.len());
    }
    s
}

/// What the oracle expects of a flow over one batch.
#[derive(Default)]
struct Want {
    value: FlowValue,
    frames: Vec<usize>,
}

fn add_packet(v: &mut FlowValue, len: usize, flags: u8) {
    v.packets += 1;
    v.bytes += len as u64;
    let f = flags as u32;
    v.tcp_flags |= f;
    if f & 0x02 != 0 {
        if f & 0x10 != 0 {
            v.syn_ack += 1;
        } else {
            v.syn += 1;
        }
    }
    v.fin += (f & 0x01 != 0) as u64;
    v.rst += (f & 0x04 != 0) as u64;
}

#[derive(Default)]
struct PerCategory {
    frames: u64,
    refused: u64,
    keyed: u64,
    malformed: u64,
    non_ip: u64,
}

#[derive(Default)]
struct Report {
    frames: u64,
    run: u64,
    refused: u64,
    cut_to_linear: u64,
    keyed: u64,
    non_ip: u64,
    fragments: u64,
    malformed: [u64; MALFORMED_REASONS],
    categories: BTreeMap<Category, PerCategory>,
    /// Per rule: frames it applied to, and frames where etherparse's own
    /// whole-frame verdict differs from the kernel's expected one.
    rules: BTreeMap<Rule, (u64, u64)>,
    /// Frames no rule touched, where the walk and etherparse's whole-frame
    /// parse agreed: (keyed, malformed, not IP).
    plain: [u64; 3],
    flows: u64,
    disagreements: u64,
    shown: Vec<String>,
}

impl Report {
    fn disagree(&mut self, what: String) {
        self.disagreements += 1;
        if self.shown.len() < SHOWN {
            self.shown.push(what);
        }
    }
}

fn describe(cat: Category, f: &[u8], e: &Expect) -> String {
    format!(
        "{cat:?} frame of {} bytes {}\n  oracle: class {:?}, fragment {}, {:?}, rules {:?}\n  etherparse whole frame: {:?}",
        f.len(),
        hex(f),
        e.class,
        e.fragment,
        e.outcome,
        e.rules,
        oracle::whole_frame(f),
    )
}

#[test]
fn hostile_frames_are_counted_as_etherparse_sees_them() {
    let seed = env_u64("SENSOR_PROG_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let quick = std::env::var_os("SENSOR_TEST_QUICK").is_some();
    let target = env_u64("SENSOR_PROG_FUZZ_FRAMES").unwrap_or(if quick {
        QUICK_FRAMES
    } else {
        DEFAULT_FRAMES
    });
    println!("seed {seed:#018x} (replay with SENSOR_PROG_FUZZ_SEED={seed:#x}), {target} frames");
    let started = Instant::now();

    let mut h = Harness::new(FLOW_MAP_ENTRIES);
    let reader = h.totals_reader(Direction::Ingress);
    let limits = probe_limits(&mut h, &reader);
    let start = totals(&h.drain(), Direction::Ingress);
    let mut before = reader.read();
    assert_eq!(before, start, "nothing runs between the drain and the read");

    let mut gen = Gen::new(seed, limits);
    let mut sum = Totals::default();
    let mut rep = Report::default();
    let mut last = None;
    while rep.frames < target {
        let batch: Vec<(Category, Vec<u8>)> = (0..BATCH).map(|_| gen.next()).collect();
        let mut want: HashMap<FlowKey, Want> = HashMap::new();
        let mut expects = Vec::with_capacity(batch.len());
        for (i, (cat, frame)) in batch.iter().enumerate() {
            rep.frames += 1;
            rep.categories.entry(*cat).or_default().frames += 1;
            let result = h.try_xdp(frame);
            if frame.len() < limits.min || frame.len() > limits.max {
                rep.categories.entry(*cat).or_default().refused += 1;
                rep.refused += 1;
                let now = reader.read();
                if result.is_ok() || now != before {
                    rep.disagree(format!(
                        "{cat:?} frame of {} bytes was run ({result:?}), outside {}..={}",
                        frame.len(),
                        limits.min,
                        limits.max
                    ));
                    before = now;
                }
                expects.push(None);
                continue;
            }
            rep.run += 1;
            // The program sees the linear part only (see probe_limits).
            let seen = &frame[..frame.len().min(limits.linear)];
            rep.cut_to_linear += (seen.len() < frame.len()) as u64;
            let e = oracle::expect(seen);
            let whole = oracle::whole_frame(seen);
            if e.rules.is_empty() {
                match whole {
                    Some(w) if w == e.outcome => {
                        rep.plain[match e.outcome {
                            Outcome::Keyed { .. } => 0,
                            Outcome::Malformed(_) => 1,
                            Outcome::NotIp => 2,
                        }] += 1
                    }
                    _ => rep.disagree(format!(
                        "oracle: the walk and etherparse's whole-frame parse disagree with no kernel rule to explain it\n  {}",
                        describe(*cat, seen, &e)
                    )),
                }
            }
            let changed = whole != Some(e.outcome);
            let mut rules = e.rules.clone();
            rules.sort();
            rules.dedup();
            for r in rules {
                let c = rep.rules.entry(r).or_default();
                c.0 += 1;
                c.1 += changed as u64;
            }

            match result {
                Ok(XDP_PASS) => {}
                other => rep.disagree(format!(
                    "verdict {other:?}, not XDP_PASS\n  {}",
                    describe(*cat, seen, &e)
                )),
            }
            let now = reader.read();
            let (got, reset) = totals_delta(&before, &now);
            before = now;
            let expected = frame_totals(&e, seen.len());
            if reset || got != expected {
                rep.disagree(format!(
                    "totals\n  {}\n  kernel added {got:?}\n  oracle wants {expected:?}",
                    describe(*cat, seen, &e)
                ));
            }
            add(&mut sum, &expected);
            rep.fragments += e.fragment as u64;
            let per = rep.categories.entry(*cat).or_default();
            match e.outcome {
                Outcome::Keyed { key, tcp_flags, .. } => {
                    rep.keyed += 1;
                    per.keyed += 1;
                    let w = want.entry(key).or_default();
                    add_packet(&mut w.value, seen.len(), tcp_flags);
                    w.frames.push(i);
                }
                Outcome::Malformed(r) => {
                    rep.malformed[r as usize] += 1;
                    per.malformed += 1;
                }
                Outcome::NotIp => {
                    rep.non_ip += 1;
                    per.non_ip += 1;
                }
            }
            expects.push(Some(e));
        }

        let iv = h.drain();
        check_flows(&iv, want, &batch, &expects, &mut rep);
        last = Some(iv);
    }

    let drained = totals(&last.expect("at least one batch"), Direction::Ingress);
    let (drained, _) = totals_delta(&start, &drained);
    if drained != sum {
        rep.disagree(format!(
            "drained totals\n  kernel {drained:?}\n  oracle {sum:?}"
        ));
    }
    assert_eq!(drained.not_attributed, 0, "every keyed frame has its flow");

    print_report(&rep, started);
    for s in &rep.shown {
        println!("DISAGREEMENT: {s}");
    }
    assert_eq!(
        rep.disagreements, 0,
        "{} disagreements (first {} above); replay with SENSOR_PROG_FUZZ_SEED={seed:#x}",
        rep.disagreements, SHOWN
    );
    assert!(rep.run >= target * 9 / 10, "most frames reach the program");
}

/// The drained flows of a batch against the oracle's: the same keys, the
/// same counts.
fn check_flows(
    iv: &sensor::model::Interval,
    want: HashMap<FlowKey, Want>,
    batch: &[(Category, Vec<u8>)],
    expects: &[Option<Expect>],
    rep: &mut Report,
) {
    let mut got: HashMap<FlowKey, FlowValue> = HashMap::new();
    for f in &iv.flows {
        merge_value(got.entry(f.key).or_default(), &f.value);
    }
    rep.flows += want.len() as u64;
    let frames_of = |idx: &[usize]| -> String {
        idx.iter()
            .take(3)
            .map(|&i| {
                let e = expects[i].as_ref().expect("a run frame");
                format!("\n  {}", describe(batch[i].0, &batch[i].1, e))
            })
            .collect()
    };
    for (key, w) in want {
        match got.remove(&key) {
            None => rep.disagree(format!(
                "the kernel did not key {key:?}{}",
                frames_of(&w.frames)
            )),
            Some(v) => {
                let counts = |v: &FlowValue| {
                    (
                        v.packets,
                        v.bytes,
                        v.tcp_flags,
                        v.syn,
                        v.syn_ack,
                        v.fin,
                        v.rst,
                    )
                };
                let times_ok = v.first_seen_ns > 0 && v.first_seen_ns <= v.last_seen_ns;
                if counts(&v) != counts(&w.value) || !times_ok {
                    rep.disagree(format!(
                        "flow {key:?}\n  kernel {v:?}\n  oracle {:?}{}",
                        w.value,
                        frames_of(&w.frames)
                    ));
                }
            }
        }
    }
    for (key, v) in got {
        // Frames whose bytes hold the source address: the likely culprits.
        let needle: &[u8] = if key.ip_version == 4 {
            &key.src_addr[12..]
        } else {
            &key.src_addr
        };
        let suspects: Vec<usize> = (0..batch.len())
            .filter(|&i| {
                expects[i].is_some() && batch[i].1.windows(needle.len()).any(|w| w == needle)
            })
            .collect();
        rep.disagree(format!(
            "the kernel keyed {key:?} ({v:?}), which no frame should have; frames with its source address:{}",
            frames_of(&suspects)
        ));
    }
}

fn print_report(rep: &Report, started: Instant) {
    println!(
        "{} frames in {:.1} s: {} run, {} refused by BPF_PROG_TEST_RUN (size), {} seen cut to the linear part",
        rep.frames,
        started.elapsed().as_secs_f64(),
        rep.run,
        rep.refused,
        rep.cut_to_linear
    );
    let malformed: u64 = rep.malformed.iter().sum();
    println!(
        "run frames: {} keyed ({} flows over all batches), {} malformed, {} not IP; {} counted as fragments",
        rep.keyed, rep.flows, malformed, rep.non_ip, rep.fragments
    );
    for r in Malformed::ALL {
        println!(
            "  malformed {:<22} {}",
            r.as_str(),
            rep.malformed[r as usize]
        );
    }
    println!(
        "  {:<16} {:>7} {:>7} {:>7} {:>9} {:>7}",
        "category", "frames", "refused", "keyed", "malformed", "not IP"
    );
    for (c, n) in &rep.categories {
        println!(
            "  {:<16} {:>7} {:>7} {:>7} {:>9} {:>7}",
            format!("{c:?}"),
            n.frames,
            n.refused,
            n.keyed,
            n.malformed,
            n.non_ip
        );
    }
    println!(
        "no kernel rule applied, walk = etherparse's whole-frame verdict: {} keyed, {} malformed, {} not IP",
        rep.plain[0], rep.plain[1], rep.plain[2]
    );
    println!("kernel rules applied (frames; of them, where etherparse's own verdict differs):");
    for (r, (n, changed)) in &rep.rules {
        println!("  {:<20} {n:>7} {changed:>7}", format!("{r:?}"));
    }
    println!("disagreements: {}", rep.disagreements);
}
