//! Interfaces that change under a running sensor: down and up, deleted and
//! recreated, and appearing only after start. The sensor keeps running,
//! reattaches, and its totals carry on. Needs root.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use common::netns::{sh, wait_for, VethPair};
use sensor::{
    loader::{IfaceChange, LoadOptions, Sensor, XdpModeSetting},
    model::Interval,
};
use sensor_common::Direction;

fn ingress_packets(iv: &Interval, iface: &str) -> u64 {
    iv.totals
        .iter()
        .filter(|t| t.iface == iface && t.direction == Direction::Ingress)
        .map(|t| t.totals.packets)
        .sum()
}

fn ping(p: &VethPair, n: u32) {
    let out = p
        .ns_cmd(&[
            "ping",
            "-c",
            &n.to_string(),
            "-i",
            "0.01",
            "-W",
            "1",
            &p.host_v4,
        ])
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Recreates the root-side end under the same name with a new peer.
fn recreate(p: &VethPair) {
    sh(&[
        "ip", "link", "add", &p.host, "type", "veth", "peer", "name", &p.peer_if, "netns", &p.ns,
    ]);
    sh(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", p.host_v4),
        "dev",
        &p.host,
    ]);
    sh(&["ip", "link", "set", &p.host, "up"]);
    p.ns_sh(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", p.peer_v4),
        "dev",
        &p.peer_if,
    ]);
    p.ns_sh(&["ip", "link", "set", &p.peer_if, "up"]);
}

#[test]
fn deleted_and_recreated_interface_is_reattached_and_totals_continue() {
    let p = VethPair::new();
    let mut sensor = Sensor::load(&LoadOptions {
        flow_map_entries: 4096,
        xdp_mode: XdpModeSetting::Auto,
        pin_path: None,
    })
    .expect("load (needs root)");
    let first = sensor.attach(&p.host).expect("attach");
    let mut drainer = sensor.drainer().expect("drainer");
    ping(&p, 10);
    let before = ingress_packets(&drainer.drain().expect("drain"), &p.host);
    assert!(before >= 10, "ingress before: {before}");

    // Down and up: the programs stay attached, nothing to do.
    sh(&["ip", "link", "set", &p.host, "down"]);
    sh(&["ip", "link", "set", &p.host, "up"]);
    assert_eq!(sensor.reconcile(), vec![], "down/up needs no reattach");
    wait_for("the link to be up again", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/sys/class/net/{}/operstate", p.host))
            .is_ok_and(|s| s.trim() == "up")
    });
    ping(&p, 5);
    let after_flap = ingress_packets(&drainer.drain().expect("drain"), &p.host);
    assert!(
        after_flap >= before + 5,
        "{after_flap} after the flap, {before} before"
    );

    // Deleted: reported as vanished, the sensor goes on.
    sh(&["ip", "link", "del", &p.host]);
    let changes = sensor.reconcile();
    assert_eq!(
        changes,
        vec![IfaceChange::Vanished {
            iface: p.host.clone()
        }]
    );
    let att = &sensor.attachments()[0];
    assert!(!att.xdp_attached && !att.tc_attached, "{att:?}");
    assert_eq!(
        sensor.reconcile(),
        vec![],
        "a vanished interface is reported once"
    );
    drainer.drain().expect("drain with the interface gone");

    // Recreated under the same name: reattached, with a new index.
    recreate(&p);
    let changes = sensor.reconcile();
    assert!(
        matches!(&changes[..], [IfaceChange::Reattached { iface, ifindex, .. }]
            if *iface == p.host && *ifindex != first.ifindex),
        "{changes:?}"
    );
    assert!(sensor.attachments()[0].xdp_attached && sensor.attachments()[0].tc_attached);
    ping(&p, 7);
    let iv = drainer.drain().expect("drain");
    let after = ingress_packets(&iv, &p.host);
    assert!(
        after >= after_flap + 7,
        "totals carry on: {after} after, {after_flap} before"
    );
    let flows: u64 = iv
        .flows
        .iter()
        .filter(|f| f.key.protocol == 1 && f.key.direction == 0)
        .map(|f| f.value.packets)
        .sum();
    assert!(flows >= 7, "echo requests on the new device: {flows}");
    sensor.detach_all();
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let code = body.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body))
}

#[test]
fn interface_created_after_start_is_attached_when_waited_for() {
    let p = VethPair::new();
    // A name that does not exist yet; the pair's peer gets renamed to it later.
    let late = format!("{}x", p.host);
    let port = 19_300 + (std::process::id() % 500) as u16;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args([
            "run",
            "--iface",
            &late,
            "--wait-for-iface",
            "--interval",
            "200ms",
        ])
        .args(["--listen-address", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sensor");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = Kill(child);
    wait_for("the metrics endpoint", Duration::from_secs(20), || {
        http_get(&addr, "/-/healthy").is_some_and(|(c, _)| c == 200)
    });
    assert_eq!(
        http_get(&addr, "/-/ready").map(|r| r.0),
        Some(503),
        "not ready while waiting"
    );

    // The interface appears: rename the root-side end to the awaited name.
    sh(&["ip", "link", "set", &p.host, "down"]);
    sh(&["ip", "link", "set", &p.host, "name", &late]);
    sh(&["ip", "link", "set", &late, "up"]);
    let line = format!("sensor_program_attached{{iface=\"{late}\",program=\"xdp\"}} 1");
    wait_for(
        "the late interface to be attached",
        Duration::from_secs(20),
        || http_get(&addr, "/metrics").is_some_and(|(_, b)| b.contains(&line)),
    );
    wait_for("readiness", Duration::from_secs(10), || {
        http_get(&addr, "/-/ready").is_some_and(|(c, _)| c == 200)
    });
    // Put the name back so the pair's guard removes it.
    sh(&["ip", "link", "set", &late, "name", &p.host]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(guard.0.id() as i32, libc::SIGTERM) };
    let status = guard.0.wait().expect("wait");
    assert!(status.success(), "sensor exit: {status}");
}
