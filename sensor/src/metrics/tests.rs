use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sensor_common::FlowValue;

use super::*;
use crate::model::{v4, AttachInfo, FlowDelta, ProgramStats};
use crate::rates::{Rates, RatesConfig};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn build() -> BuildInfo {
    BuildInfo {
        version: "0.1.0".into(),
        revision: "test".into(),
    }
}

fn totals(scale: u64) -> Totals {
    let mut t = Totals {
        packets: 100 * scale,
        bytes: 60_000 * scale,
        ipv4: 90 * scale,
        ipv6: 5 * scale,
        non_ip: 5 * scale,
        fragments: scale,
        not_attributed: 2 * scale,
        not_attributed_bytes: 120 * scale,
        ..Default::default()
    };
    t.l4 = [80 * scale, 10 * scale, 4 * scale, 0, scale];
    t.ether_class[0] = 4 * scale;
    t.ether_class[1] = scale;
    t.malformed[1] = scale;
    t
}

fn iface_totals(iface: &str, ifindex: u32, dir: Direction, t: Totals) -> IfaceTotals {
    IfaceTotals {
        ifindex,
        iface: iface.into(),
        direction: dir,
        totals: t,
    }
}

/// A flow delta; `l4` is (protocol, source port, destination port).
fn flow(
    ifindex: u32,
    dir: Direction,
    src: [u8; 16],
    dst: [u8; 16],
    l4: (u8, u16, u16),
    bytes: u64,
) -> FlowDelta {
    let (proto, sport, dport) = l4;
    FlowDelta {
        key: FlowKey {
            src_addr: src,
            dst_addr: dst,
            ifindex,
            src_port: sport,
            dst_port: dport,
            direction: dir as u8,
            ip_version: if src[..12] == v4(0, 0, 0, 0)[..12] {
                4
            } else {
                6
            },
            protocol: proto,
            ..Default::default()
        },
        value: FlowValue {
            packets: bytes / 100,
            bytes,
            ..Default::default()
        },
    }
}

/// `d` with SYN, SYN-ACK, FIN and RST packet counts.
fn with_flags(mut d: FlowDelta, [syn, syn_ack, fin, rst]: [u64; 4]) -> FlowDelta {
    d.value.syn = syn;
    d.value.syn_ack = syn_ack;
    d.value.fin = fin;
    d.value.rst = rst;
    d
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    a[15] = last;
    a
}

fn kernel(bpf: bool) -> KernelStats {
    let stats = |program, t, c| ProgramStats {
        program,
        run_time_ns: bpf.then_some(t),
        run_count: bpf.then_some(c),
    };
    KernelStats {
        flow_map_capacity: 65_536,
        flow_map_occupancy: 4,
        drain_ns: 1_500_000,
        programs: vec![stats("xdp", 2_500_000, 100), stats("tc", 1_000_000, 40)],
        attachments: vec![
            AttachInfo {
                iface: "eth0".into(),
                ifindex: 2,
                xdp_mode: "native",
                xdp_attached: true,
                tc_attached: true,
            },
            AttachInfo {
                iface: "eth1".into(),
                ifindex: 3,
                xdp_mode: "skb",
                xdp_attached: false,
                tc_attached: false,
            },
        ],
    }
}

/// The fixed scenario behind the golden file: two interfaces, a baseline
/// interval and a 2 s interval with IPv4, IPv6 and ICMP flows.
fn scenario() -> (Registry, Metrics) {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    m.add_iface("eth0");
    m.add_iface("eth1");
    m.set_poll_interval(Duration::from_millis(1500));
    let mut rates = Rates::new(RatesConfig {
        top_k: 2,
        tau: Duration::ZERO,
    });
    let s = 1_000_000_000u64;
    let first = Interval {
        start_ns: 0,
        end_ns: s,
        end_unix_ns: 0,
        flows: vec![],
        totals: vec![iface_totals("eth0", 2, Direction::Ingress, totals(1))],
        kernel: Some(kernel(true)),
    };
    m.observe_interval(&first, rates.update(&first));
    let ing = Direction::Ingress;
    let second = Interval {
        start_ns: s,
        end_ns: 3 * s,
        end_unix_ns: 0,
        flows: vec![
            flow(
                2,
                ing,
                v4(198, 18, 0, 1),
                v4(198, 18, 1, 1),
                (6, 40000, 443),
                6000,
            ),
            flow(
                2,
                ing,
                v4(198, 18, 0, 1),
                v4(198, 18, 1, 2),
                (17, 40001, 53),
                400,
            ),
            flow(2, ing, v4(198, 18, 0, 2), v4(198, 18, 1, 1), (1, 8, 0), 200),
            with_flags(
                flow(2, ing, v6(1), v6(2), (6, 50000, 80), 3000),
                [1, 0, 1, 2],
            ),
        ],
        totals: vec![
            iface_totals("eth0", 2, Direction::Ingress, totals(3)),
            iface_totals("eth0", 2, Direction::Egress, totals(1)),
        ],
        kernel: Some(kernel(true)),
    };
    m.observe_interval(&second, rates.update(&second));
    m.observe_flowtable(&FlowTableStats {
        size: 4,
        capacity: 1_000_000,
        evictions: 1,
        records: vec![("idle", 2), ("evicted", 1)],
    });
    m.observe_poll(Duration::from_millis(3), true);
    m.observe_poll(Duration::from_millis(40), false);
    (registry, m)
}

fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn golden_metrics_output() {
    let (registry, _m) = scenario();
    let text = render(&registry);
    let path = manifest().join("tests/fixtures/metrics.golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert!(
        golden == text,
        "metrics output changed; diff against {} (UPDATE_GOLDEN=1 rewrites it)\n{text}",
        path.display()
    );
    // Every family appears in this scenario.
    for f in families::ALL {
        assert!(
            text.contains(&format!("# TYPE {} {}\n", f.name, f.kind.as_str())),
            "{}",
            f.name
        );
    }
}

#[test]
fn promtool_accepts_the_output() {
    let promtool = PathBuf::from("/usr/bin/promtool");
    if !promtool.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is required in CI: install Debian's prometheus package"
        );
        eprintln!("skipping: /usr/bin/promtool not installed");
        return;
    }
    let (registry, _m) = scenario();
    HttpMetricsForTest::register(&registry);
    let text = render(&registry);
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct HttpMetricsForTest;
impl HttpMetricsForTest {
    fn register(registry: &Registry) {
        crate::http::HttpMetrics::register(registry).unwrap();
    }
}

#[test]
fn counters_equal_the_kernel_totals_and_survive_a_reset() {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    let rates = RateSnapshot::default();
    let mut iv = Interval::default();
    let series = "sensor_packets_total{direction=\"ingress\",iface=\"eth0\"}";
    for scale in [1, 2, 7] {
        iv.totals = vec![iface_totals("eth0", 2, Direction::Ingress, totals(scale))];
        m.observe_interval(&iv, &rates);
        let text = render(&registry);
        assert_eq!(value_of(&text, series), Some(100.0 * scale as f64));
        let bytes = "sensor_bytes_total{direction=\"ingress\",iface=\"eth0\"}";
        assert_eq!(value_of(&text, bytes), Some(60_000.0 * scale as f64));
    }
    // Program reload: the kernel restarts from 1x; the counter adds it.
    iv.totals = vec![iface_totals("eth0", 2, Direction::Ingress, totals(1))];
    m.observe_interval(&iv, &rates);
    let text = render(&registry);
    assert_eq!(value_of(&text, series), Some(800.0));
    let resets = "sensor_kernel_resets_total{direction=\"ingress\",iface=\"eth0\"}";
    assert_eq!(value_of(&text, resets), Some(1.0));
    let arp = "sensor_ethertype_packets_total{class=\"arp\",direction=\"ingress\",iface=\"eth0\"}";
    assert_eq!(value_of(&text, arp), Some(32.0));
}

#[test]
fn closed_label_sets_exist_before_any_interval() {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    m.add_iface("eth9");
    let text = render(&registry);
    for s in [
        "sensor_packets_total{direction=\"egress\",iface=\"eth9\"} 0",
        "sensor_malformed_packets_total{direction=\"ingress\",iface=\"eth9\",reason=\"too_many_vlan_tags\"} 0",
        "sensor_l4_packets_total{direction=\"egress\",iface=\"eth9\",protocol=\"sctp\"} 0",
        "sensor_ethertype_packets_total{class=\"ipv6\",direction=\"egress\",iface=\"eth9\"} 0",
        "sensor_program_attached{iface=\"eth9\",program=\"tc\"} 0",
        "sensor_xdp_mode{iface=\"eth9\",mode=\"native\"} 0",
        "sensor_protocol_rate_packets_per_second{direction=\"ingress\",iface=\"eth9\",protocol=\"non_ip\",smoothing=\"ewma\"} 0",
        "sensor_flow_records_total{reason=\"shutdown\"} 0",
        "sensor_build_info{revision=\"test\",version=\"0.1.0\"} 1",
        "sensor_poll_duration_seconds_count 0",
        "sensor_flow_table_evictions_total 0",
    ] {
        assert!(text.contains(s), "missing {s}");
    }
    assert!(!text.contains("sensor_protocol_rate_bytes_per_second{direction=\"ingress\",iface=\"eth9\",protocol=\"non_ip\""));
    assert!(
        !text.contains("sensor_bpf_program"),
        "BPF stats only when enabled"
    );
    assert!(
        !text.contains("sensor_top_"),
        "no top-K series without traffic"
    );
}

#[test]
fn stale_top_k_series_are_removed() {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    let mut rates = Rates::new(RatesConfig {
        top_k: 1,
        tau: Duration::ZERO,
    });
    let ing = Direction::Ingress;
    let mut iv = Interval {
        end_ns: 1_000_000_000,
        flows: vec![flow(
            2,
            ing,
            v4(198, 18, 0, 1),
            v4(198, 18, 1, 1),
            (6, 1, 2),
            500,
        )],
        ..Default::default()
    };
    m.observe_interval(&iv, rates.update(&iv));
    assert!(render(&registry).contains("address=\"198.18.0.1\""));
    iv.start_ns = iv.end_ns;
    iv.end_ns += 1_000_000_000;
    iv.flows = vec![flow(
        2,
        ing,
        v4(198, 18, 0, 9),
        v4(198, 18, 1, 1),
        (6, 1, 2),
        500,
    )];
    m.observe_interval(&iv, rates.update(&iv));
    let text = render(&registry);
    assert!(
        !text.contains("198.18.0.1\""),
        "stale source still exported:\n{text}"
    );
    assert!(text.contains("address=\"198.18.0.9\""));
    let n = text
        .lines()
        .filter(|l| l.starts_with("sensor_top_source_bytes_per_second{"))
        .count();
    assert_eq!(n, 2, "one per smoothing");
}

#[test]
fn bpf_stats_follow_the_kernel_switch() {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    let rates = RateSnapshot::default();
    let mut iv = Interval {
        kernel: Some(kernel(true)),
        ..Default::default()
    };
    m.observe_interval(&iv, &rates);
    let text = render(&registry);
    assert_eq!(
        value_of(&text, "sensor_bpf_program_runs_total{program=\"xdp\"}"),
        Some(100.0)
    );
    assert_eq!(
        value_of(
            &text,
            "sensor_bpf_program_run_seconds_total{program=\"xdp\"}"
        ),
        Some(0.0025)
    );
    assert_eq!(
        value_of(
            &text,
            "sensor_program_attached{iface=\"eth0\",program=\"xdp\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(&text, "sensor_xdp_mode{iface=\"eth0\",mode=\"native\"}"),
        Some(1.0)
    );
    assert_eq!(
        value_of(&text, "sensor_xdp_mode{iface=\"eth1\",mode=\"skb\"}"),
        Some(0.0),
        "detached"
    );
    iv.kernel = Some(kernel(false));
    m.observe_interval(&iv, &rates);
    assert!(!render(&registry).contains("sensor_bpf_program"));
}

#[test]
fn a_registry_takes_one_metrics() {
    let registry = Registry::new();
    let _m = Metrics::new(&registry, build()).unwrap();
    assert!(matches!(
        Metrics::new(&registry, build()),
        Err(MetricsError::Register { .. })
    ));
}

/// Series of a saturated configuration: every closed label set, full top-K
/// lists, BPF stats on, HTTP metrics registered.
#[test]
fn worst_case_series_count_matches_the_formula() {
    let (ifaces, k) = (2usize, 3usize);
    let registry = Registry::new();
    crate::http::HttpMetrics::register(&registry).unwrap();
    let mut m = Metrics::new(&registry, build()).unwrap();
    let mut rates = Rates::new(RatesConfig {
        top_k: k,
        tau: Duration::from_secs(5),
    });
    let mut iv = Interval {
        end_ns: 1_000_000_000,
        kernel: Some(kernel(true)),
        ..Default::default()
    };
    for round in 0..2u64 {
        iv.totals.clear();
        iv.flows.clear();
        for (i, name) in ["eth0", "eth1"].iter().enumerate() {
            let ifindex = 2 + i as u32;
            for dir in [Direction::Ingress, Direction::Egress] {
                iv.totals
                    .push(iface_totals(name, ifindex, dir, totals(round + 1)));
                for h in 0..(k as u8 + 2) {
                    let bytes = 1000 + u64::from(h) * 100;
                    iv.flows.push(flow(
                        ifindex,
                        dir,
                        v4(198, 18, 0, h),
                        v4(198, 18, 1, h),
                        (6, 1, 2),
                        bytes,
                    ));
                }
            }
        }
        m.observe_interval(&iv, rates.update(&iv));
        iv.start_ns = iv.end_ns;
        iv.end_ns += 1_000_000_000;
    }
    let text = render(&registry);
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert_eq!(series, worst_case_series(ifaces, k));
    assert_eq!(
        worst_case_series(2, 20),
        1255,
        "the worked example in METRICS.md"
    );
}

#[test]
fn metrics_md_lists_exactly_the_exported_families() {
    let path = manifest().join("../METRICS.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs = doc::parse(&text).unwrap();
    let ours: Vec<Family> = families::ALL
        .iter()
        .chain(crate::http::FAMILIES.iter())
        .copied()
        .collect();
    let documented: BTreeSet<&str> = docs
        .iter()
        .filter(|d| d.owner == "metrics" || d.owner == "http")
        .map(|d| d.name.as_str())
        .collect();
    let exported: BTreeSet<&str> = ours.iter().map(|f| f.name).collect();
    assert_eq!(documented, exported, "METRICS.md and the exporter disagree");
    for f in &ours {
        let d = docs.iter().find(|d| d.name == f.name).unwrap();
        assert_eq!(d.kind, f.kind.as_str(), "{}: type", f.name);
        assert_eq!(d.help, f.help, "{}: help", f.name);
        assert_eq!(d.labels, f.labels, "{}: labels", f.name);
    }
    // What Metrics registers is the table.
    let registry = Registry::new();
    let m = Metrics::new(&registry, build()).unwrap();
    let mut table: Vec<String> = families::ALL.iter().map(|f| f.name.to_string()).collect();
    table.sort();
    assert_eq!(m.family_names(), table);
}

#[test]
fn doc_parser_rejects_incomplete_and_duplicate_entries() {
    let ok = "## A (owner: x)\n### sensor_a\n- type: gauge\n- labels: -\n- help: H.\n";
    let d = doc::parse(ok).unwrap();
    assert_eq!(d[0].labels, Vec::<String>::new());
    assert_eq!(
        (d[0].owner.as_str(), d[0].kind.as_str(), d[0].help.as_str()),
        ("x", "gauge", "H.")
    );
    let missing = "## A (owner: x)\n### sensor_a\n- type: gauge\n";
    assert!(matches!(
        doc::parse(missing),
        Err(MetricsError::Doc { line: 2, .. })
    ));
    let twice = format!("{ok}{}", ok.replace("## A (owner: x)\n", ""));
    assert!(doc::parse(&twice).is_err());
    let orphan = "### sensor_a\n- type: gauge\n- labels: -\n- help: H.\n";
    assert!(matches!(
        doc::parse(orphan),
        Err(MetricsError::Doc { line: 1, .. })
    ));
}

#[test]
fn tcp_flags_add_up_the_flow_deltas_per_interface_and_direction() {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    m.add_iface("eth0");
    let text = render(&registry);
    for flag in families::TCP_FLAG_NAMES {
        for dir in ["ingress", "egress"] {
            let s = format!(
                "sensor_tcp_flags_total{{direction=\"{dir}\",flag=\"{flag}\",iface=\"eth0\"}} 0"
            );
            assert!(text.contains(&s), "missing {s}");
        }
    }
    let (a, b) = (v4(198, 18, 0, 1), v4(198, 18, 1, 1));
    let (ing, eg) = (Direction::Ingress, Direction::Egress);
    let mut iv = Interval {
        end_ns: 1_000_000_000,
        totals: vec![iface_totals("eth0", 2, ing, totals(1))],
        flows: vec![
            with_flags(flow(2, ing, a, b, (6, 1000, 80), 100), [3, 0, 1, 0]),
            with_flags(flow(2, ing, b, a, (6, 80, 1000), 100), [2, 1, 0, 4]),
            with_flags(flow(2, eg, a, b, (6, 1001, 80), 100), [0, 5, 0, 0]),
            // An interface the totals do not name yet.
            with_flags(flow(7, ing, a, b, (6, 1002, 80), 100), [9, 0, 0, 0]),
        ],
        ..Default::default()
    };
    m.observe_interval(&iv, &RateSnapshot::default());
    iv.flows.truncate(1);
    m.observe_interval(&iv, &RateSnapshot::default());
    let text = render(&registry);
    let v = |iface: &str, dir: &str, flag: &str| {
        let s = format!(
            "sensor_tcp_flags_total{{direction=\"{dir}\",flag=\"{flag}\",iface=\"{iface}\"}}"
        );
        value_of(&text, &s)
    };
    assert_eq!(
        v("eth0", "ingress", "syn"),
        Some(8.0),
        "3 + 2, then 3 again"
    );
    assert_eq!(v("eth0", "ingress", "syn_ack"), Some(1.0));
    assert_eq!(v("eth0", "ingress", "fin"), Some(2.0));
    assert_eq!(v("eth0", "ingress", "rst"), Some(4.0));
    assert_eq!(v("eth0", "egress", "syn_ack"), Some(5.0));
    assert_eq!(v("eth0", "egress", "syn"), Some(0.0));
    assert_eq!(v("if7", "ingress", "syn"), Some(9.0));
}

#[test]
fn poll_interval_is_exported_in_seconds() {
    let registry = Registry::new();
    let mut m = Metrics::new(&registry, build()).unwrap();
    assert_eq!(
        value_of(&render(&registry), "sensor_poll_interval_seconds"),
        Some(0.0)
    );
    m.set_poll_interval(Duration::from_millis(250));
    assert_eq!(
        value_of(&render(&registry), "sensor_poll_interval_seconds"),
        Some(0.25)
    );
}
