//! Flow table: counting, timeouts, eviction, flush, record format.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sensor_common::{Direction, FlowKey, FlowValue, Totals, FLOW_F_FRAGMENT};

use super::*;
use crate::{
    config::Output,
    model::{addr_bytes, v4, FlowDelta, IfaceTotals, Interval},
};

const S: u64 = 1_000_000_000;
/// Unix time of monotonic 0 in these tests: 2024-01-01T00:00:00Z.
const EPOCH_UNIX: u64 = 1_704_067_200 * S;

fn key(src_port: u16) -> FlowKey {
    FlowKey {
        src_addr: v4(198, 18, 0, 1),
        dst_addr: v4(198, 18, 0, 2),
        ifindex: 7,
        vlan_id: 0,
        src_port,
        dst_port: 80,
        direction: Direction::Ingress as u8,
        ip_version: 4,
        protocol: 6,
        flags: 0,
        _pad: [0; 2],
    }
}

fn val(packets: u64, first: u64, last: u64) -> FlowValue {
    FlowValue {
        packets,
        bytes: packets * 100,
        first_seen_ns: first,
        last_seen_ns: last,
        ..Default::default()
    }
}

fn iv(end_s: u64, flows: Vec<(FlowKey, FlowValue)>) -> Interval {
    Interval {
        start_ns: end_s.saturating_sub(1) * S,
        end_ns: end_s * S,
        end_unix_ns: EPOCH_UNIX + end_s * S,
        flows: flows
            .into_iter()
            .map(|(key, value)| FlowDelta { key, value })
            .collect(),
        totals: vec![IfaceTotals {
            ifindex: 7,
            iface: "veth0".to_string(),
            direction: Direction::Ingress,
            totals: Totals::default(),
        }],
        kernel: None,
    }
}

fn table(max_flows: usize) -> FlowTable {
    FlowTable::new(FlowTableConfig {
        max_flows,
        active_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(15),
    })
}

fn reasons(records: &[FlowRecord]) -> Vec<&'static str> {
    records.iter().map(|r| r.reason.as_str()).collect()
}

#[test]
fn counts_accumulate_across_intervals() {
    let mut t = table(10);
    let mut a = val(2, S / 2, S * 9 / 10);
    a.tcp_flags = 0x02;
    a.syn = 1;
    assert!(t
        .apply(&iv(1, vec![(key(1), a), (key(2), val(1, S / 2, S / 2))]))
        .is_empty());
    let mut b = val(3, S + 1, 2 * S - 1);
    b.tcp_flags = 0x10;
    assert!(t
        .apply(&iv(2, vec![(key(1), b), (key(3), val(0, 0, 0))]))
        .is_empty());
    assert_eq!(t.len(), 2, "zero-packet deltas create no flow");
    let e = t.get(&key(1)).unwrap();
    assert_eq!((e.value.packets, e.value.bytes), (5, 500));
    assert_eq!((e.value.first_seen_ns, e.last_seen_ns), (S / 2, 2 * S - 1));
    assert_eq!((e.value.tcp_flags, e.value.syn), (0x12, 1));
    assert_eq!((e.total_packets, e.total_bytes), (5, 500));
    let sum: u64 = t.iter().map(|e| e.value.packets).sum();
    assert_eq!(sum, 6);
    assert_eq!(t.iface_name(7), Some("veth0"));
}

#[test]
fn idle_timeout_ends_flow_after_no_packets() {
    let mut t = table(10);
    t.apply(&iv(1, vec![(key(1), val(4, S / 10, S / 2))]));
    for end in 2..=15 {
        assert!(
            t.apply(&iv(end, vec![])).is_empty(),
            "not idle yet at {end}s"
        );
    }
    // last_seen 0.5 s + 15 s idle = 15.5 s <= 16 s.
    let recs = t.apply(&iv(16, vec![]));
    assert_eq!(reasons(&recs), ["idle"]);
    assert_eq!((recs[0].value.packets, recs[0].value.bytes), (4, 400));
    assert_eq!(recs[0].start_unix_ns, EPOCH_UNIX + S / 10);
    assert_eq!(recs[0].end_unix_ns, EPOCH_UNIX + S / 2);
    assert!(t.is_empty());
    assert_eq!(
        t.stats().records,
        vec![("idle", 1), ("active", 0), ("evicted", 0), ("shutdown", 0)]
    );
}

#[test]
fn active_timeout_slices_add_up_to_total() {
    let mut t = table(10);
    let mut records = Vec::new();
    // One packet of 100 bytes every 100 ms for 200 s.
    for end in 1..=200u64 {
        let start = (end - 1) * S;
        let delta = val(10, start + S / 20, start + S * 19 / 20);
        records.extend(t.apply(&iv(end, vec![(key(1), delta)])));
    }
    records.extend(t.flush(200 * S));
    assert_eq!(
        reasons(&records),
        ["active", "active", "active", "shutdown"]
    );
    let packets: u64 = records.iter().map(|r| r.value.packets).sum();
    let bytes: u64 = records.iter().map(|r| r.value.bytes).sum();
    assert_eq!((packets, bytes), (2000, 200_000));
    for pair in records.windows(2) {
        assert!(
            pair[0].value.last_seen_ns < pair[1].value.first_seen_ns,
            "slices do not overlap"
        );
    }
    for r in &records[..3] {
        let span = r.value.last_seen_ns - r.value.first_seen_ns;
        assert!(
            (59 * S..61 * S).contains(&span),
            "active slice spans about 60 s: {span}"
        );
    }
}

#[test]
fn drained_active_flow_ends_idle_without_empty_record() {
    let mut t = table(10);
    t.apply(&iv(1, vec![(key(1), val(1, S / 2, S / 2))]));
    let mut recs = Vec::new();
    // A packet every 10 s keeps it from going idle until 60 s.
    for end in 2..=70u64 {
        let flows = if end % 10 == 0 && end <= 60 {
            vec![(key(1), val(1, (end - 1) * S, (end - 1) * S))]
        } else {
            vec![]
        };
        recs.extend(t.apply(&iv(end, flows)));
    }
    // Active at 61 s (window began at 0.5 s); idle at 74 s with nothing new.
    assert_eq!(reasons(&recs), ["active"]);
    assert_eq!(recs[0].value.packets, 7);
    assert_eq!(t.len(), 1, "the flow continues after its active record");
    let later: Vec<_> = (71..=80)
        .flat_map(|end| t.apply(&iv(end, vec![])))
        .collect();
    assert!(later.is_empty(), "no zero-packet idle record: {later:?}");
    assert!(t.is_empty(), "but the flow left the table");
}

#[test]
fn full_table_evicts_least_recently_seen_and_counts() {
    let mut t = table(2);
    t.apply(&iv(
        1,
        vec![
            (key(1), val(1, S / 10, S / 10)),
            (key(2), val(1, S / 5, S / 5)),
        ],
    ));
    // key(1) sees a packet again, so key(2) is now the least recently seen.
    t.apply(&iv(2, vec![(key(1), val(1, S + 1, S + 1))]));
    let recs = t.apply(&iv(3, vec![(key(3), val(5, 2 * S + 1, 2 * S + 2))]));
    assert_eq!(reasons(&recs), ["evicted"]);
    assert_eq!(recs[0].key, key(2));
    assert_eq!(t.len(), 2);
    assert!(t.get(&key(1)).is_some() && t.get(&key(3)).is_some());
    let st = t.stats();
    assert_eq!((st.size, st.capacity, st.evictions), (2, 2, 1));
    assert_eq!(st.records[2], ("evicted", 1));
}

#[test]
fn memory_stays_within_max_flows() {
    let mut t = table(100);
    let mut emitted = 0u64;
    for round in 0..10u64 {
        let flows = (0..100u16)
            .map(|p| {
                (
                    key(p + 100 * round as u16),
                    val(1, round * S + 1, round * S + 2),
                )
            })
            .collect();
        emitted += t.apply(&iv(round + 1, flows)).len() as u64;
    }
    assert_eq!(t.len(), 100);
    assert!(
        t.slots.len() <= 100,
        "slab never grows past max_flows: {}",
        t.slots.len()
    );
    assert_eq!(t.by_last_seen.len(), 100);
    assert!(t.by_window_start.len() <= 100);
    assert_eq!(t.stats().evictions, 900);
    assert_eq!(emitted, 900, "every eviction is reported");
}

#[test]
fn flush_reports_everything_as_shutdown() {
    let mut t = table(10);
    t.apply(&iv(
        1,
        vec![
            (key(1), val(1, 1, 2)),
            (key(2), val(2, 3, 4)),
            (key(3), val(3, 5, 6)),
        ],
    ));
    let recs = t.flush(2 * S);
    assert_eq!(reasons(&recs), ["shutdown"; 3]);
    assert_eq!(recs.iter().map(|r| r.value.packets).sum::<u64>(), 6);
    assert!(t.is_empty() && t.by_window_start.is_empty() && t.by_last_seen.is_empty());
    assert!(t.flush(3 * S).is_empty());
    assert_eq!(t.stats().records[3], ("shutdown", 3));
}

#[test]
fn flush_without_interval_uses_the_clock() {
    let mut t = table(10);
    let mut i = iv(1, vec![(key(1), val(1, S, S))]);
    i.end_unix_ns = 0; // no wall-clock pair known
    t.apply(&i);
    let recs = t.flush(2 * S);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let age = now - recs[0].end_unix_ns;
    assert!(
        (S / 2..3 * S).contains(&age),
        "1 s before the flush time: {age}"
    );
}

#[test]
fn json_golden_tcp() {
    let mut value = val(3, S + 5, 2 * S + 123_456_789);
    value.tcp_flags = 0x13;
    value.syn = 1;
    value.fin = 1;
    let rec = FlowRecord {
        key: FlowKey {
            vlan_id: 100,
            src_port: 40000,
            ..key(1)
        },
        value,
        reason: EndReason::Idle,
        iface: Some("veth0".into()),
        start_unix_ns: EPOCH_UNIX + S + 5,
        end_unix_ns: EPOCH_UNIX + 2 * S + 123_456_789,
    };
    assert_eq!(
        rec.to_json_line(),
        concat!(
            r#"{"start":"2024-01-01T00:00:01.000000005Z","end":"2024-01-01T00:00:02.123456789Z","#,
            r#""iface":"veth0","ifindex":7,"direction":"ingress","vlan":100,"ip_version":4,"#,
            r#""protocol":6,"protocol_name":"tcp","src_addr":"198.18.0.1","dst_addr":"198.18.0.2","#,
            r#""src_port":40000,"dst_port":80,"fragment":false,"packets":3,"bytes":300,"#,
            r#""tcp_flags":"FSA","syn":1,"syn_ack":0,"fin":1,"rst":0,"reason":"idle"}"#
        )
    );
}

#[test]
fn json_golden_icmpv6_fragment_and_other() {
    let v6 = |last: u16| addr_bytes(format!("2001:db8::{last}").parse().unwrap());
    let icmp = FlowRecord {
        key: FlowKey {
            src_addr: v6(1),
            dst_addr: v6(2),
            ip_version: 6,
            protocol: 58,
            src_port: 128,
            dst_port: 0,
            direction: Direction::Egress as u8,
            ..key(0)
        },
        value: val(1, 0, 0),
        reason: EndReason::Shutdown,
        iface: None,
        start_unix_ns: 0,
        end_unix_ns: 0,
    };
    assert_eq!(
        icmp.to_json_line(),
        concat!(
            r#"{"start":"1970-01-01T00:00:00.000000000Z","end":"1970-01-01T00:00:00.000000000Z","#,
            r#""ifindex":7,"direction":"egress","vlan":0,"ip_version":6,"protocol":58,"#,
            r#""protocol_name":"icmpv6","src_addr":"2001:db8::1","dst_addr":"2001:db8::2","#,
            r#""icmp_type":128,"icmp_code":0,"fragment":false,"packets":1,"bytes":100,"#,
            r#""reason":"shutdown"}"#
        )
    );
    let frag = FlowRecord {
        key: FlowKey {
            protocol: 17,
            src_port: 0,
            dst_port: 0,
            flags: FLOW_F_FRAGMENT,
            ..key(0)
        },
        reason: EndReason::Evicted,
        ..icmp.clone()
    };
    let line = frag.to_json_line();
    assert!(
        line.contains(r#""protocol_name":"udp","src_addr":"198.18.0.1""#),
        "{line}"
    );
    assert!(
        line.contains(r#""dst_addr":"198.18.0.2","fragment":true"#),
        "no ports: {line}"
    );
    let gre = FlowRecord {
        key: FlowKey {
            protocol: 47,
            ..key(0)
        },
        ..icmp
    };
    let line = gre.to_json_line();
    assert!(
        line.contains(r#""protocol":47,"src_addr""#),
        "no protocol_name: {line}"
    );
    assert!(!line.contains("tcp_flags"));
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["src_port"], 0);
}

/// A sink tests can read back.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_buffers_until_flush() {
    let sink = Shared::default();
    let mut w = RecordWriter::new(Box::new(sink.clone()), "test");
    let mut t = table(10);
    t.apply(&iv(1, vec![(key(1), val(1, 1, 2)), (key(2), val(2, 3, 4))]));
    w.write(&t.flush(2 * S)).unwrap();
    assert!(sink.0.lock().unwrap().is_empty(), "buffered");
    w.flush().unwrap();
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(w.lines(), 2);
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["reason"], "shutdown");
        assert_eq!(v["iface"], "veth0");
    }
}

#[test]
fn writer_appends_to_file_and_reports_open_errors() {
    let path = std::env::temp_dir().join(format!("sensor-flows-test-{}.jsonl", std::process::id()));
    std::fs::write(&path, "existing\n").unwrap();
    let mut w = RecordWriter::open(&Output::File(path.clone())).unwrap();
    let mut t = table(10);
    t.apply(&iv(1, vec![(key(1), val(1, 1, 2))]));
    w.write(&t.flush(2 * S)).unwrap();
    w.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(text.starts_with("existing\n{\"start\""), "{text}");

    let bad = Output::File("/nonexistent-dir/flows.jsonl".into());
    let e = RecordWriter::open(&bad).unwrap_err();
    assert!(matches!(e, WriterError::Open { .. }));
    assert!(e.to_string().contains("/nonexistent-dir"), "{e}");
}

/// A table restored from its entries and counters (persistent mode's
/// journal) continues exactly as the original: same records, same stats.
#[test]
fn a_restored_table_continues_like_the_original() {
    let mut original = table(3);
    let mut steps = vec![
        iv(1, vec![(key(1), val(5, S, S)), (key(2), val(1, S, S))]),
        iv(2, vec![(key(3), val(2, 2 * S, 2 * S))]),
        iv(3, vec![(key(1), val(4, 3 * S, 3 * S))]),
    ];
    for step in &steps {
        original.apply(step);
    }
    let mut restored = table(3);
    let evicted = restored.restore(&original.meta(), original.iter().copied().collect());
    assert!(evicted.is_empty());
    assert_eq!(restored.meta(), original.meta());
    assert_eq!(restored.len(), original.len());

    // More intervals: a new flow that evicts, then idle and active ends.
    steps = vec![
        iv(4, vec![(key(4), val(1, 4 * S, 4 * S))]),
        iv(30, vec![(key(1), val(1, 30 * S, 30 * S))]),
        iv(200, vec![]),
    ];
    for step in &steps {
        let mut a = original.apply(step);
        let mut b = restored.apply(step);
        a.sort_by_key(|r| (r.key.src_port, r.reason as u8));
        b.sort_by_key(|r| (r.key.src_port, r.reason as u8));
        assert_eq!(a, b, "records at {}", step.end_ns / S);
    }
    assert_eq!(restored.stats(), original.stats());
    let mut a = original.flush(300 * S);
    let mut b = restored.flush(300 * S);
    a.sort_by_key(|r| r.key.src_port);
    b.sort_by_key(|r| r.key.src_port);
    assert_eq!(a, b);
}

/// Restoring into a smaller table evicts the least recently seen flows,
/// as records, and counts them.
#[test]
fn restoring_into_a_smaller_table_evicts_the_oldest() {
    let mut original = table(4);
    original.apply(&iv(
        1,
        (1..=4)
            .map(|p| (key(p), val(1, u64::from(p) * S, u64::from(p) * S)))
            .collect(),
    ));
    let mut small = table(2);
    let evicted = small.restore(&original.meta(), original.iter().copied().collect());
    let mut ports: Vec<u16> = evicted.iter().map(|r| r.key.src_port).collect();
    ports.sort();
    assert_eq!(ports, vec![1, 2]);
    assert!(evicted.iter().all(|r| r.reason == EndReason::Evicted));
    assert_eq!((small.len(), small.stats().evictions), (2, 2));
}
