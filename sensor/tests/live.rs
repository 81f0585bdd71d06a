//! Live tests: real traffic from real tools between a network namespace and
//! the root namespace over a veth pair, counted by the sensor attached to
//! the root end and by tshark capturing on the same interface. Per-flow
//! packets and bytes, ingress and egress, must be equal exactly. Needs root
//! and the tools `cargo xtask test` installs.

mod common;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{
    capture::{Capture, Key},
    netns::{pin_neighbours, quiesce, sh, wait_for, VethPair},
};
use sensor::{
    loader::{LoadOptions, Sensor, XdpModeSetting},
    model::{FlowKeyExt, Interval},
};
use sensor_common::Direction;

const PROBE_PORT: u16 = 9;

fn in_test_prefix(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18,
        IpAddr::V6(v6) => v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8,
    }
}

fn run_tool(p: &VethPair, args: &[&str]) {
    let out = p
        .ns_cmd(args)
        .output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    // hping3 exits non-zero when some probes got no answer; the counts are
    // what we compare, so only a failure to run at all matters.
    assert!(
        out.status.code().is_some(),
        "{args:?} was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn iperf3(p: &VethPair, server: &str, port: u16, extra: &[&str]) {
    let port_s = port.to_string();
    let mut srv = Command::new("iperf3")
        .args(["-s", "-1", "-B", server, "-p", &port_s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    wait_for("iperf3 to listen", Duration::from_secs(10), || {
        let out = Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss");
        !out.stdout.is_empty()
    });
    let mut args = vec![
        "iperf3", "-c", server, "-p", &port_s, "-t", "1", "-b", "40M",
    ];
    args.extend_from_slice(extra);
    let out = p.ns_cmd(&args).output().expect("iperf3 client");
    let _ = srv.wait();
    assert!(
        out.status.success(),
        "iperf3 client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The capture probe, and the port-unreachable answers to it (the only
/// ICMP errors the namespace sends).
fn is_probe(k: &Key, peer_v4: &str) -> bool {
    (k.3 == 17 && k.5 == PROBE_PORT) || (k.3 == 1 && k.4 == 3 && k.1.to_string() == peer_v4)
}

fn sensor_key(iv_flow: &sensor::model::FlowDelta) -> Key {
    let k = &iv_flow.key;
    (
        k.vlan_id,
        k.src(),
        k.dst(),
        k.protocol,
        k.src_port,
        k.dst_port,
    )
}

fn live(mode: XdpModeSetting) {
    let p = VethPair::new();
    pin_neighbours(
        &p,
        &p.host,
        &p.peer_if,
        &[(&p.host_v4, &p.peer_v4), (&p.host_v6, &p.peer_v6)],
    );
    // This kernel is built without 802.1Q devices (CONFIG_VLAN_8021Q unset),
    // so tagged traffic is injected with tcpreplay from both ends instead of
    // a VLAN sub-interface: 802.1Q frames in, 802.1ad+802.1Q frames out.
    let vlan_peer = format!("198.18.{}.2", p.net + 1);
    let vlan_host = format!("198.18.{}.1", p.net + 1);
    let tagged = |outer: &[u8], src: &str, dst: &str, n: usize| -> Vec<Vec<u8>> {
        let (s, d): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
            (src.parse().unwrap(), dst.parse().unwrap());
        (0..n)
            .map(|i| {
                let b =
                    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 8]);
                let payload = vec![0u8; 10 + i * 7];
                let mut v = Vec::new();
                let b = if outer.is_empty() {
                    b.single_vlan(etherparse::VlanId::try_new(100).unwrap())
                } else {
                    b.double_vlan(
                        etherparse::VlanId::try_new(200).unwrap(),
                        etherparse::VlanId::try_new(100).unwrap(),
                    )
                };
                b.ipv4(s.octets(), d.octets(), 64)
                    .udp(7000 + (i % 3) as u16, 53)
                    .write(&mut v, &payload)
                    .expect("frame");
                v
            })
            .collect()
    };
    let pcap_in = std::env::temp_dir().join(format!("{}-in.pcap", p.ns));
    let pcap_out = std::env::temp_dir().join(format!("{}-out.pcap", p.ns));
    common::capture::write_pcap(&pcap_in, &tagged(&[], &vlan_peer, &vlan_host, 25));
    common::capture::write_pcap(&pcap_out, &tagged(&[1], &vlan_host, &vlan_peer, 15));
    // Reference captures see what the stack sees; with GRO on, frames would
    // be merged before the capture tap but after native XDP.
    let _ = Command::new("ethtool")
        .args(["-K", &p.host, "gro", "off"])
        .output();

    let mut sensor = Sensor::load(&LoadOptions {
        flow_map_entries: 65_536,
        xdp_mode: mode,
        pin_path: None,
    })
    .expect("load (needs root)");
    let info = sensor.attach(&p.host).expect("attach");
    let want = match mode {
        XdpModeSetting::Native => "native",
        _ => "skb",
    };
    assert_eq!(info.xdp_mode, want);
    assert!(info.xdp_attached && info.tc_attached);
    let drainer = Arc::new(Mutex::new(sensor.drainer().expect("drainer")));

    // Probe: one UDP datagram to the discard port, excluded from the
    // comparison (those sent before tshark was live reach only the sensor).
    let probe = || {
        let sock = std::net::UdpSocket::bind((p.host_v4.as_str(), 0)).expect("probe socket");
        let _ = sock.send_to(b"probe", (p.peer_v4.as_str(), PROBE_PORT));
    };
    let cap = Capture::start(&p.host, probe);
    // Drain continuously while traffic runs, as the agent does.
    let intervals: Arc<Mutex<Vec<Interval>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let bg = {
        let (d, ivs, stop) = (drainer.clone(), intervals.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let iv = d.lock().unwrap().drain().expect("drain");
                ivs.lock().unwrap().push(iv);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };

    run_tool(
        &p,
        &["ping", "-c", "20", "-i", "0.01", "-W", "1", &p.host_v4],
    );
    run_tool(
        &p,
        &[
            "ping", "-6", "-c", "20", "-i", "0.01", "-W", "1", &p.host_v6,
        ],
    );
    run_tool(
        &p,
        &[
            "hping3", "-S", "-p", "80", "-c", "30", "-i", "u2000", &p.host_v4,
        ],
    );
    run_tool(
        &p,
        &[
            "hping3", "--udp", "-p", "5000", "-c", "30", "-i", "u2000", &p.host_v4,
        ],
    );
    run_tool(
        &p,
        &["hping3", "--icmp", "-c", "30", "-i", "u2000", &p.host_v4],
    );
    run_tool(
        &p,
        &["ping", "-c", "10", "-i", "0.01", "-s", "3000", &p.host_v4],
    );
    run_tool(
        &p,
        &[
            "tcpreplay",
            "-q",
            "-i",
            &p.peer_if,
            pcap_in.to_str().unwrap(),
        ],
    );
    sh(&["tcpreplay", "-q", "-i", &p.host, pcap_out.to_str().unwrap()]);
    iperf3(&p, &p.host_v4, 25201, &[]);
    iperf3(&p, &p.host_v6, 25202, &["-6"]);
    quiesce(&p.host);

    stop.store(true, Ordering::SeqCst);
    bg.join().expect("drain thread");
    let last = drainer.lock().unwrap().drain().expect("final drain");
    intervals.lock().unwrap().push(last);
    let reference = cap.finish();

    let ivs = intervals.lock().unwrap();
    let mut counted: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
    for iv in ivs.iter() {
        for f in &iv.flows {
            let key = sensor_key(f);
            if !(in_test_prefix(&key.1) && in_test_prefix(&key.2)) || is_probe(&key, &p.peer_v4) {
                continue;
            }
            let dir = if key.1.to_string() == p.peer_v4
                || key.1.to_string() == p.peer_v6
                || key.1.to_string() == vlan_peer
            {
                Direction::Ingress
            } else {
                Direction::Egress
            };
            assert_eq!(f.key.direction, dir as u8, "direction of {key:?}");
            assert_eq!(f.key.ifindex, info.ifindex);
            let e = counted.entry(key).or_default();
            e.0 += f.value.packets;
            e.1 += f.value.bytes;
        }
    }
    let expected: BTreeMap<Key, (u64, u64)> = reference
        .flows
        .into_iter()
        .filter(|(k, _)| in_test_prefix(&k.1) && in_test_prefix(&k.2) && !is_probe(k, &p.peer_v4))
        .collect();
    for (k, v) in &expected {
        if counted.get(k) != Some(v) {
            println!("tshark {k:?} = {v:?}; sensor = {:?}", counted.get(k));
        }
    }
    for (k, v) in &counted {
        if !expected.contains_key(k) {
            println!("sensor only {k:?} = {v:?}");
        }
    }
    for t in ivs.last().expect("intervals").totals.iter() {
        println!("{} {:?}: {:?}", t.iface, t.direction, t.totals);
    }
    assert!(
        expected.len() >= 12,
        "too few reference flows: {expected:?}"
    );
    let protos: std::collections::BTreeSet<u8> = expected.keys().map(|k| k.3).collect();
    assert!(
        [1u8, 6, 17, 58].iter().all(|p| protos.contains(p)),
        "traffic must cover ICMP, TCP, UDP and ICMPv6: {protos:?}"
    );
    assert!(
        expected.keys().any(|k| k.0 == 100),
        "the 802.1Q traffic is missing"
    );
    assert!(
        expected.keys().any(|k| k.0 == 200),
        "the 802.1ad traffic is missing"
    );
    let _ = std::fs::remove_file(&pcap_in);
    let _ = std::fs::remove_file(&pcap_out);
    assert_eq!(
        counted, expected,
        "per-flow counts differ from tshark ({want} mode)"
    );

    let mut sensor_total = 0;
    for t in ivs.last().expect("intervals").totals.iter() {
        sensor_total += t.totals.packets;
    }
    assert!(
        sensor_total >= reference.frames,
        "interface totals {sensor_total} below tshark's {} frames",
        reference.frames
    );
    sensor.detach_all();
}

#[test]
fn native_mode_counts_equal_tshark() {
    live(XdpModeSetting::Native);
}

#[test]
fn generic_mode_counts_equal_tshark() {
    live(XdpModeSetting::Skb);
}
