//! The errors an operator meets first say what to do: unknown interface,
//! another XDP program already attached, missing capabilities, bad usage.
//! Needs root (it drops privileges itself where a test needs that).

mod common;

use std::process::Command;

use common::netns::VethPair;
use sensor::loader::{LoadError, LoadOptions, Sensor, XdpModeSetting};

fn load() -> Sensor {
    Sensor::load(&LoadOptions {
        flow_map_entries: 1024,
        xdp_mode: XdpModeSetting::Native,
        pin_path: None,
    })
    .expect("load (needs root)")
}

#[test]
fn unknown_interface_is_named() {
    let mut s = load();
    let e = s
        .attach("st-nosuchif")
        .expect_err("attach to a missing interface");
    assert!(matches!(e, LoadError::UnknownInterface { .. }), "{e:?}");
    assert!(e.to_string().contains("st-nosuchif") && e.to_string().contains("ip link"));
}

#[test]
fn another_xdp_program_is_reported_and_left_alone() {
    let p = VethPair::new();
    let mut first = load();
    first.attach(&p.host).expect("first attach");
    let mut second = load();
    let e = second.attach(&p.host).expect_err("second attach must fail");
    assert!(matches!(e, LoadError::XdpBusy { .. }), "{e:?}");
    assert!(e.to_string().contains("xdp off"), "{e}");
    // The first sensor's program is still attached.
    let out = Command::new("ip")
        .args(["-d", "link", "show", &p.host])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "XDP detached"
    );
    drop(second);
    first.detach_all();
    let out = Command::new("ip")
        .args(["-d", "link", "show", &p.host])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("prog/xdp"),
        "XDP left attached after detach_all"
    );
}

#[test]
fn missing_capabilities_are_named_and_exit_1() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_sensor"))
        .args(["run", "--iface", "lo", "--listen-address", "127.0.0.1:0"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"] {
        assert!(err.contains(cap), "{cap} not named in: {err}");
    }
}

#[test]
fn bad_usage_exits_64() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["run"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--iface"), "{err}");
    let (code, err) = run(&["run", "--iface", "lo", "--xdp-mode", "turbo"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("native"), "{err}");
    let (code, err) = run(&["run", "--iface", "lo", "--top-k", "0"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("top_k") || err.contains("top-k"), "{err}");
    let web = std::env::temp_dir().join(format!("st-{}-web.yml", std::process::id()));
    std::fs::write(&web, "tls_server_config:\n  cert_fil: x\n").unwrap();
    let (code, err) = run(&[
        "run",
        "--iface",
        "lo",
        "--web.config.file",
        web.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&web);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("cert_fil"), "the unknown key is named: {err}");
}
