//! Offline analysis: the userspace parser against the kernel's
//! (BPF_PROG_TEST_RUN), a capture of real tool traffic against the live
//! sensor, truncated and corrupt captures, memory on a large capture, and
//! the notebook on the records of a live run. All but the corrupt-capture
//! test need root and the tools `cargo xtask test` installs; run them under
//! `flock /tmp/sensor-live.lock`.

mod common;
#[path = "analyze/live.rs"]
mod live;

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use sensor::{
    analyze::parse::{account, add_packet, parse},
    model::Interval,
};
use sensor_common::{Direction, FlowKey, FlowValue, Totals, MAX_IPV6_EXT_HEADERS};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;
const SCTP: u8 = 132;

/// Well-formed, non-IP, malformed, VLAN, extension-header and fragment
/// frames: the cases of `prog.rs`, rebuilt with the same builders.
fn rich_frames() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for flags in [0x02u8, 0x12, 0x11, 0x04, 0x18, 0x00, 0x29, 0xff] {
        let t = tcp(40000, 80, flags);
        v.push(cat(&[&eth(0x0800), &ipv4(TCP, t.len()), &t]));
    }
    v.push(cat(&[
        &eth(0x0800),
        &ipv4(UDP, 20),
        &udp(5353, 53, 12),
        &[7u8; 12],
    ]));
    v.push(cat(&[
        &eth(0x0800),
        &ipv4(UDP, 8),
        &udp(1000, 2000, 0),
        &[0u8; 18],
    ]));
    v.push(cat(&[&eth(0x0800), &ipv4(ICMP, 8), &icmp(8, 0)]));
    v.push(cat(&[&eth(0x0800), &ipv4(ICMP, 8), &icmp(3, 3)]));
    for words in [1usize, 10] {
        v.push(cat(&[
            &eth(0x0800),
            &ipv4_opts(UDP, 8, words),
            &udp(7, 9, 0),
        ]));
    }
    v.push(cat(&[&eth(0x0800), &ipv4(SCTP, 12), &sctp(3868, 3869)]));
    v.push(cat(&[&eth(0x0800), &ipv4(47, 4), &[0u8; 4]]));
    v.push(cat(&[
        &eth(0x0800),
        &ipv4_frag(UDP, 16, 0, true),
        &udp(4000, 4001, 100),
        &[0u8; 8],
    ]));
    v.push(cat(&[
        &eth(0x0800),
        &ipv4_frag(UDP, 16, 2, false),
        &[0xabu8; 16],
    ]));
    v.push(cat(&[&eth(0x0800), &ipv4_frag(TCP, 8, 0, true), &[0u8; 8]]));
    let t = tcp(443, 50000, 0x12);
    v.push(cat(&[&eth(0x86dd), &ipv6(TCP, t.len()), &t]));
    v.push(cat(&[&eth(0x86dd), &ipv6(UDP, 8), &udp(123, 123, 0)]));
    v.push(cat(&[&eth(0x86dd), &ipv6(ICMP6, 8), &icmp(128, 0)]));
    v.push(cat(&[&eth(0x86dd), &ipv6(ICMP, 8), &icmp(8, 0)]));
    v.push(cat(&[&eth(0x0800), &ipv4(ICMP6, 8), &icmp(128, 0)]));
    v.push(cat(&[
        &eth(0x86dd),
        &ipv6(0, 32),
        &ext(43),
        &ext(60),
        &ext(UDP),
        &udp(10, 20, 0),
    ]));
    let t = tcp(22, 60000, 0x10);
    v.push(cat(&[
        &eth(0x86dd),
        &ipv6(51, 16 + t.len()),
        &auth(TCP),
        &t,
    ]));
    v.push(cat(&[
        &eth(0x86dd),
        &ipv6(44, 24),
        &frag6(UDP, 0, true),
        &udp(9, 99, 100),
        &[0u8; 8],
    ]));
    v.push(cat(&[
        &eth(0x86dd),
        &ipv6(44, 24),
        &frag6(UDP, 3, false),
        &[0u8; 16],
    ]));
    for n in [MAX_IPV6_EXT_HEADERS, MAX_IPV6_EXT_HEADERS + 1] {
        let mut chain = vec![eth(0x86dd), ipv6(0, n * 8 + 8)];
        for i in 0..n {
            chain.push(ext(if i + 1 == n { UDP } else { 60 }));
        }
        chain.push(udp(1, 2, 0));
        v.push(chain.concat());
    }
    v.push(cat(&[&eth(0x86dd), &ipv6(59, 0)]));
    let t = tcp(1234, 80, 0x02);
    v.push(cat(&[
        &eth(0x8100),
        &vlan(100, 0x0800),
        &ipv4(TCP, t.len()),
        &t,
    ]));
    v.push(cat(&[
        &eth(0x88a8),
        &vlan(200, 0x8100),
        &vlan(300, 0x86dd),
        &ipv6(UDP, 8),
        &udp(5, 6, 0),
    ]));
    v.push(cat(&[
        &eth(0x9100),
        &vlan(4095, 0x0800),
        &ipv4(UDP, 8),
        &udp(5, 6, 0),
    ]));
    v.push(cat(&[
        &eth(0x88a8),
        &vlan(1, 0x8100),
        &vlan(2, 0x8100),
        &vlan(3, 0x0800),
        &ipv4(UDP, 8),
        &udp(1, 2, 0),
    ]));
    v.push(cat(&[
        &eth(0x8100),
        &vlan(1, 0x88a8),
        &vlan(2, 0x0806),
        &[0u8; 28],
    ]));
    for et in [
        0x0806u16, 0x8035, 0x88cc, 0x8847, 0x8848, 0x8863, 0x8864, 0x888e, 0x0026, 0x05ff, 0x0600,
        0x88b5,
    ] {
        v.push(cat(&[&eth(et), &[0u8; 46]]));
    }
    v.push(cat(&[&eth(0x8100), &vlan(5, 0x0806), &[0u8; 42]]));
    // Cut and broken variants.
    let t = tcp(1, 2, 0x02);
    let full = cat(&[&eth(0x8100), &vlan(7, 0x0800), &ipv4(TCP, t.len()), &t]);
    for cut in [14usize, 16, 17, 18, 19, 28, 37, 38, 40, 57] {
        v.push(full[..cut].to_vec());
    }
    for (proto, l4len) in [(TCP, 19usize), (UDP, 7), (ICMP, 7), (SCTP, 11)] {
        v.push(cat(&[&eth(0x0800), &ipv4(proto, l4len), &vec![0u8; l4len]]));
    }
    let mut bad_doff = tcp(1, 2, 0x02);
    bad_doff[12] = 0x40;
    v.push(cat(&[&eth(0x0800), &ipv4(TCP, 20), &bad_doff]));
    bad_doff[12] = 0xf0; // 60 bytes of header in a 20-byte segment
    v.push(cat(&[&eth(0x0800), &ipv4(TCP, 20), &bad_doff]));
    for (i, b) in [(0usize, 0x44u8), (0, 0x65)] {
        let mut h = ipv4(UDP, 8);
        h[i] = b;
        v.push(cat(&[&eth(0x0800), &h, &udp(1, 2, 0)]));
    }
    let mut h = ipv4(UDP, 8);
    h[2] = 0;
    h[3] = 10;
    v.push(cat(&[&eth(0x0800), &h, &udp(1, 2, 0)]));
    let full6 = cat(&[&eth(0x86dd), &ipv6(UDP, 8), &udp(1, 2, 0)]);
    for cut in [14usize, 20, 53, 58] {
        v.push(full6[..cut].to_vec());
    }
    v.push(cat(&[&eth(0x86dd), &ipv6(UDP, 7), &[0u8; 7]]));
    v.push(cat(&[&eth(0x86dd), &ipv6(0, 4), &ext(UDP)[..4]]));
    let mut h6 = ipv6(UDP, 8);
    h6[0] = 0x45;
    v.push(cat(&[&eth(0x86dd), &h6, &udp(1, 2, 0)]));
    // A long extension header pushing the L4 header past the 512-byte walk limit.
    let mut big = Vec::new();
    big.push(UDP);
    big.push(60); // (60 + 1) * 8 = 488 bytes
    big.resize(488, 0);
    v.push(cat(&[
        &eth(0x86dd),
        &ipv6(60, 488 + 8),
        &big,
        &udp(1, 2, 0),
    ]));
    v
}

/// What one frame (or a batch) did: flows without timestamps, and totals.
#[derive(Debug, Default, PartialEq, Eq)]
struct Effect {
    flows: HashMap<FlowKey, [u64; 7]>,
    totals: Totals,
}

fn counters(v: &FlowValue) -> [u64; 7] {
    [
        v.packets,
        v.bytes,
        u64::from(v.tcp_flags),
        v.syn,
        v.syn_ack,
        v.fin,
        v.rst,
    ]
}

fn userspace(frames: &[Vec<u8>]) -> Effect {
    let mut e = Effect::default();
    let mut values: HashMap<FlowKey, FlowValue> = HashMap::new();
    for f in frames {
        let p = parse(f, f.len(), 0);
        let len = f.len() as u64;
        if let Some(k) = account(&mut e.totals, &p, len, TEST_IFINDEX, Direction::Ingress) {
            add_packet(values.entry(k).or_default(), 1, len, p.tcp_flags);
        }
    }
    e.flows = values.iter().map(|(k, v)| (*k, counters(v))).collect();
    e
}

fn kernel_effect(iv: &Interval, before: &Totals) -> (Effect, Totals) {
    let now = totals(iv, Direction::Ingress);
    let (delta, reset) = sensor::rates::totals_delta(before, &now);
    assert!(!reset, "kernel totals went backwards");
    let mut flows = HashMap::new();
    for f in &iv.flows {
        let c = flows.entry(f.key).or_insert([0u64; 7]);
        let n = counters(&f.value);
        for i in 0..7 {
            c[i] = if i == 2 { c[i] | n[i] } else { c[i] + n[i] };
        }
    }
    (
        Effect {
            flows,
            totals: delta,
        },
        now,
    )
}

/// xorshift64*: a small deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mutate(rng: &mut Rng, base: &[Vec<u8>]) -> Vec<u8> {
    let mut f = base[rng.below(base.len())].clone();
    match rng.below(6) {
        0 => {
            // Random bytes with a plausible EtherType.
            let n = 14 + rng.below(200);
            f = (0..n).map(|_| rng.next() as u8).collect();
            let et: [u16; 6] = [0x0800, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x0806];
            f[12..14].copy_from_slice(&et[rng.below(6)].to_be_bytes());
        }
        1 => {
            let cut = 14 + rng.below(f.len().saturating_sub(13).max(1));
            f.truncate(cut.min(f.len()));
        }
        2 => {
            let extra = rng.below(64);
            f.extend((0..extra).map(|_| rng.next() as u8));
        }
        _ => {
            // Flip 1-4 bytes in the headers.
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(f.len().min(120));
                f[i] = rng.next() as u8;
            }
        }
    }
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

#[test]
fn userspace_parser_agrees_with_the_kernel() {
    let mut h = Harness::new(65_536);
    let mut before = totals(&h.drain(), Direction::Ingress);
    let rich = rich_frames();
    for (i, f) in rich.iter().enumerate() {
        assert_eq!(h.xdp(f), XDP_PASS);
        let (kernel, now) = kernel_effect(&h.drain(), &before);
        before = now;
        let user = userspace(std::slice::from_ref(f));
        assert_eq!(user, kernel, "frame {i} ({} bytes) {:02x?}", f.len(), f);
    }
    println!("{} rich frames agree", rich.len());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let batch = 250;
    let mut total = 0;
    let mut keyed = 0;
    while total < 10_000 {
        let frames: Vec<Vec<u8>> = (0..batch).map(|_| mutate(&mut rng, &rich)).collect();
        for f in &frames {
            assert_eq!(h.xdp(f), XDP_PASS);
        }
        let (kernel, now) = kernel_effect(&h.drain(), &before);
        before = now;
        let user = userspace(&frames);
        if user != kernel {
            // Find the first frame that differs.
            for f in &frames {
                h.xdp(f);
                let (k, now) = kernel_effect(&h.drain(), &before);
                before = now;
                assert_eq!(
                    userspace(std::slice::from_ref(f)),
                    k,
                    "mutated frame {:02x?}",
                    f
                );
            }
            panic!("batch differs but no single frame does");
        }
        keyed += user.flows.values().map(|c| c[0]).sum::<u64>();
        total += batch;
    }
    println!("{total} mutated frames agree ({keyed} keyed)");
    assert!(keyed > 1000, "too few mutated frames were keyed: {keyed}");
}

/// A classic pcap writer that streams to disk.
pub struct PcapWriter {
    out: BufWriter<std::fs::File>,
    /// Byte offset of each record written.
    pub offsets: Vec<u64>,
    pos: u64,
    keep_offsets: bool,
}

impl PcapWriter {
    pub fn create(path: &Path, keep_offsets: bool) -> PcapWriter {
        let mut out =
            BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create pcap"));
        for x in [0xa1b2_3c4du32, 0x0004_0002, 0, 0, 262_144, 1] {
            out.write_all(&x.to_le_bytes()).expect("write");
        }
        PcapWriter {
            out,
            offsets: Vec::new(),
            pos: 24,
            keep_offsets,
        }
    }

    pub fn frame(&mut self, ts_ns: u64, f: &[u8]) {
        if self.keep_offsets {
            self.offsets.push(self.pos);
        }
        let sec = (ts_ns / 1_000_000_000) as u32;
        let ns = (ts_ns % 1_000_000_000) as u32;
        for x in [sec, ns, f.len() as u32, f.len() as u32] {
            self.out.write_all(&x.to_le_bytes()).expect("write");
        }
        self.out.write_all(f).expect("write");
        self.pos += 16 + f.len() as u64;
    }

    pub fn finish(mut self) {
        self.out.flush().expect("flush");
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("analyze");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    dir.join(name)
}

fn udp_frame(i: u64, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let src = [198, 18, (i % 7) as u8, 1 + (i % 5) as u8];
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [198, 19, 0, 1], 64)
        .udp(10_000 + (i % 997) as u16, 53)
        .write(&mut v, &vec![0u8; payload])
        .expect("frame");
    v
}

fn analyze(file: &Path) -> (serde_json::Value, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(["analyze", "--format", "json"])
        .arg(file)
        .output()
        .expect("running sensor analyze");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"));
    (
        report,
        String::from_utf8_lossy(&out.stderr).to_string(),
        out.status.code(),
    )
}

#[test]
fn truncated_and_corrupt_captures_report_the_frames_before_the_offset() {
    let path = tmp("whole.pcap");
    let mut w = PcapWriter::create(&path, true);
    for i in 0..100u64 {
        w.frame(
            1_700_000_000_000_000_000 + i * 10_000_000,
            &udp_frame(i, 20 + i as usize),
        );
    }
    let offsets = w.offsets.clone();
    w.finish();
    let whole = std::fs::read(&path).expect("read");
    let (r, err, code) = analyze(&path);
    assert_eq!((code, r["packets"].as_u64()), (Some(0), Some(100)), "{err}");

    // Cut in the middle of record 60's data.
    let cut = tmp("cut.pcap");
    std::fs::write(&cut, &whole[..offsets[60] as usize + 16 + 10]).expect("write");
    let (r, err, code) = analyze(&cut);
    assert_ne!(code, Some(0), "a truncated capture must fail");
    assert_eq!(
        r["packets"].as_u64(),
        Some(60),
        "frames before the cut: {r}"
    );
    assert!(
        err.contains(&format!("truncated at byte offset {}", offsets[60])),
        "{err}"
    );
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("truncated")),
        "{r}"
    );

    // Corrupt the captured length of record 25.
    let bad = tmp("corrupt.pcap");
    let mut b = whole.clone();
    let at = offsets[25] as usize + 8;
    b[at..at + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    std::fs::write(&bad, &b).expect("write");
    let (r, err, code) = analyze(&bad);
    assert_ne!(code, Some(0));
    assert_eq!(r["packets"].as_u64(), Some(25), "{r}");
    assert!(
        err.contains(&format!("corrupt capture at byte offset {}", offsets[25])),
        "{err}"
    );
    println!(
        "truncated: {}corrupt: {}",
        err.lines().last().unwrap_or(""),
        err
    );
}

#[test]
fn a_large_capture_streams_in_bounded_memory() {
    let path = tmp("large.pcap");
    let mut w = PcapWriter::create(&path, false);
    let mut frames = 0u64;
    let mut i = 0u64;
    let target = 200 * 1024 * 1024;
    let mut size = 24u64;
    while size < target {
        let f = udp_frame(i, 200 + (i % 1200) as usize);
        w.frame(1_700_000_000_000_000_000 + i * 100_000, &f);
        size += 16 + f.len() as u64;
        frames += 1;
        i += 1;
    }
    w.finish();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_sensor"))
        .args(["analyze", "--format", "json"])
        .arg(&path)
        .output()
        .expect("running /usr/bin/time -v sensor analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "analyze failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["packets"].as_u64(), Some(frames));
    let field = |name: &str| -> String {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {stderr}"))
    };
    let rss_kb: u64 = field("Maximum resident set size (kbytes):")
        .parse()
        .expect("rss");
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):");
    let secs: f64 = wall
        .split(':')
        .fold(0.0, |acc, p| acc * 60.0 + p.parse::<f64>().unwrap_or(0.0));
    let _ = std::fs::remove_file(&path);
    println!(
        "large capture: {} MB, {frames} frames in {secs:.2} s ({:.0} frames/s), peak RSS {} MB",
        size / (1024 * 1024),
        frames as f64 / secs.max(1e-3),
        rss_kb / 1024
    );
    assert!(
        rss_kb < 100 * 1024,
        "peak RSS {rss_kb} KiB is not well below the 200 MB file"
    );
}

#[test]
fn capture_of_real_traffic_equals_the_live_sensor() {
    live::check_capture_against_live();
}

#[test]
fn notebook_runs_on_live_records() {
    let run = live::records();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notebook/run.sh");
    let out_nb = tmp("flows.executed.ipynb");
    let _ = std::fs::remove_file(&out_nb);
    let status = Command::new("bash")
        .arg(&script)
        .env("SENSOR_FLOWS", &run.flows)
        .env("SENSOR_EVENTS", &run.events)
        .env("SENSOR_NOTEBOOK_OUT", &out_nb)
        .status()
        .expect("running run.sh");
    assert!(status.success(), "run.sh failed: {status}");
    let nb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_nb).expect("executed notebook"))
            .expect("notebook json");
    let images = nb["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .flat_map(|c| c["outputs"].as_array().cloned().unwrap_or_default())
        .filter(|o| o["data"]["image/png"].is_string())
        .count();
    println!("executed notebook has {images} images");
    assert!(
        images >= 3,
        "expected plots of traffic, talkers and anomalies: {images} images"
    );
}

/// On a terminal, a progress line (percent, frames, frames/s) goes to
/// standard error; with standard error redirected, none.
#[test]
fn progress_line_only_on_a_terminal() {
    let path = tmp("progress.pcap");
    let frames: Vec<Vec<u8>> = (0..20_000).map(|i| udp_frame(i, 32)).collect();
    common::capture::write_pcap(&path, &frames);
    let cmd = format!(
        "{} analyze {}",
        env!("CARGO_BIN_EXE_sensor"),
        path.display()
    );
    // `script` runs the command on a pseudo-terminal and relays its output.
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("frames/s") && tty.contains('%'),
        "no progress line: {tty}"
    );
    let (_, stderr, code) = analyze(&path);
    assert_eq!(code, Some(0));
    assert!(
        !stderr.contains("frames/s"),
        "progress line without a terminal: {stderr}"
    );
    let _ = std::fs::remove_file(&path);
}
