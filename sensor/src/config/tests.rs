//! Merging and every error path of the configuration.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use clap::Parser;

use super::*;

/// A config file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> TempFile {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sensor-config-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["sensor"];
    argv.extend_from_slice(args);
    Config::from_cli(Cli::try_parse_from(argv).expect("clap accepts these arguments"))
}

fn err(args: &[&str]) -> ConfigError {
    parse(args).expect_err("configuration must be rejected")
}

#[test]
fn defaults() {
    let c = parse(&["run", "--iface", "veth0"]).unwrap();
    assert_eq!(c.mode, Mode::Run);
    assert_eq!(c.ifaces, vec!["veth0".to_string()]);
    assert_eq!(c.xdp_mode, XdpModeSetting::Auto);
    assert_eq!(c.interval, Duration::from_secs(1));
    assert_eq!(c.listen_address, "0.0.0.0:9087".parse().unwrap());
    assert_eq!((c.flows_file.clone(), c.events.clone()), (None, None));
    assert_eq!(c.top_k, 20);
    assert_eq!(c.active_timeout, Duration::from_secs(60));
    assert_eq!(c.idle_timeout, Duration::from_secs(15));
    assert_eq!(c.max_flows, 1_000_000);
    assert_eq!(c.flow_map_entries, 65_536);
    assert_eq!(c.ewma_tau, Duration::from_secs(10));
    assert_eq!((c.pin_path.clone(), c.wait_for_iface), (None, false));
    assert_eq!(c.log_level, "info");
}

#[test]
fn every_flag_is_read() {
    let c = parse(&[
        "--log-level",
        "debug",
        "run",
        "--iface",
        "a",
        "--iface",
        "b,c",
        "--iface",
        "a",
        "--xdp-mode",
        "skb",
        "--interval",
        "500ms",
        "--listen-address",
        "127.0.0.1:0",
        "--flows-file",
        "-",
        "--events",
        "/tmp/ev.jsonl",
        "--top-k",
        "5",
        "--active-timeout",
        "2m",
        "--idle-timeout",
        "30s",
        "--max-flows",
        "10",
        "--flow-map-entries",
        "2048",
        "--ewma-tau",
        "3s",
        "--pin-path",
        "/sys/fs/bpf/s",
        "--wait-for-iface",
        "--web.config.file",
        "web.yml",
    ])
    .unwrap();
    assert_eq!(
        c.ifaces,
        vec!["a", "b", "c"],
        "split on commas, duplicates dropped"
    );
    assert_eq!(c.xdp_mode, XdpModeSetting::Skb);
    assert_eq!(c.interval, Duration::from_millis(500));
    assert_eq!(c.listen_address, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.flows_file, Some(Output::Stdout));
    assert_eq!(c.events, Some(Output::File("/tmp/ev.jsonl".into())));
    assert_eq!((c.top_k, c.max_flows, c.flow_map_entries), (5, 10, 2048));
    assert_eq!(c.active_timeout, Duration::from_secs(120));
    assert_eq!(c.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.ewma_tau, Duration::from_secs(3));
    assert_eq!(c.pin_path, Some("/sys/fs/bpf/s".into()));
    assert!(c.wait_for_iface);
    assert_eq!(c.web_config_file, Some("web.yml".into()));
    assert_eq!(c.log_level, "debug");
    let c = parse(&["run", "--iface", "a", "--wait-for-iface=false"]).unwrap();
    assert!(!c.wait_for_iface);
}

#[test]
fn file_then_flags_flags_win() {
    let f = TempFile::new(
        r#"
        log_level = "warn"
        iface = ["eth0", "eth1"]
        xdp_mode = "native"
        interval = "2s"
        listen_address = "[::1]:9999"
        flows_file = "/var/log/flows.jsonl"
        top_k = 50
        active_timeout = "5m"
        idle_timeout = "20s"
        max_flows = 500
        flow_map_entries = 4096
        ewma_tau = "30s"
        wait_for_iface = true
        "#,
    );
    let from_file = parse(&["run", "--config", &f.arg()]).unwrap();
    assert_eq!(from_file.ifaces, vec!["eth0", "eth1"]);
    assert_eq!(from_file.xdp_mode, XdpModeSetting::Native);
    assert_eq!(from_file.interval, Duration::from_secs(2));
    assert_eq!(from_file.listen_address, "[::1]:9999".parse().unwrap());
    assert_eq!(
        from_file.flows_file,
        Some(Output::File("/var/log/flows.jsonl".into()))
    );
    assert_eq!(
        (
            from_file.top_k,
            from_file.max_flows,
            from_file.flow_map_entries
        ),
        (50, 500, 4096)
    );
    assert_eq!(from_file.active_timeout, Duration::from_secs(300));
    assert_eq!(from_file.idle_timeout, Duration::from_secs(20));
    assert_eq!(from_file.ewma_tau, Duration::from_secs(30));
    assert!(from_file.wait_for_iface);
    assert_eq!(from_file.log_level, "warn");
    assert_eq!(from_file.config_file, Some(f.0.clone()));

    let mixed = parse(&[
        "--log-level",
        "error",
        "run",
        "--config",
        &f.arg(),
        "--iface",
        "veth9",
        "--top-k",
        "7",
        "--xdp-mode",
        "auto",
        "--wait-for-iface",
        "false",
    ])
    .unwrap();
    assert_eq!(
        mixed.ifaces,
        vec!["veth9"],
        "flag list replaces the file's list"
    );
    assert_eq!(mixed.top_k, 7);
    assert_eq!(mixed.xdp_mode, XdpModeSetting::Auto);
    assert!(!mixed.wait_for_iface);
    assert_eq!(mixed.log_level, "error");
    assert_eq!(mixed.max_flows, 500, "untouched keys keep the file's value");
}

#[test]
fn check_needs_no_interface_but_run_does() {
    let c = parse(&["check"]).unwrap();
    assert_eq!(c.mode, Mode::Check);
    assert!(c.ifaces.is_empty());
    let e = err(&["run"]);
    assert!(matches!(e, ConfigError::NoInterface));
    assert!(e.to_string().contains("--iface"), "{e}");
}

fn assert_invalid(e: ConfigError, want_key: &str, accepted_part: &str) {
    match &e {
        ConfigError::Invalid { key, accepted, .. } => {
            assert_eq!(*key, want_key, "{e}");
            assert!(accepted.contains(accepted_part), "{e}");
        }
        other => panic!("expected Invalid for {want_key}, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains(&format!("`{want_key}`")),
        "message names the key: {text}"
    );
    assert!(
        text.contains(accepted_part),
        "message names accepted values: {text}"
    );
}

#[test]
fn out_of_range_numbers() {
    assert_invalid(
        err(&["run", "--iface", "a", "--top-k", "0"]),
        "top_k",
        "1 to 1000",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--top-k", "1001"]),
        "top_k",
        "1 to 1000",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--max-flows", "0"]),
        "max_flows",
        "1 to 100000000",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--flow-map-entries", "1023"]),
        "flow_map_entries",
        "1024 to 16777216",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--flow-map-entries", "16777217"]),
        "flow_map_entries",
        "1024",
    );
    let f = TempFile::new("top_k = -3\n");
    assert_invalid(err(&["check", "--config", &f.arg()]), "top_k", "1 to 1000");
}

#[test]
fn zero_durations() {
    for key in ["interval", "active-timeout", "idle-timeout", "ewma-tau"] {
        let flag = format!("--{key}");
        let e = err(&["run", "--iface", "a", &flag, "0s"]);
        assert_invalid(e, &key.replace('-', "_"), "greater than zero");
    }
}

#[test]
fn contradictions() {
    let e = err(&["run", "--iface", "a", "--idle-timeout", "90s"]);
    assert!(
        matches!(
            e,
            ConfigError::Contradiction {
                key: "idle_timeout",
                other: "active_timeout",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("--active-timeout"), "{e}");
    let e = err(&["run", "--iface", "a", "--interval", "20s"]);
    assert!(
        matches!(
            e,
            ConfigError::Contradiction {
                key: "interval",
                other: "idle_timeout",
                ..
            }
        ),
        "{e:?}"
    );
    let e = err(&["run", "--iface", "a", "--flows-file", "-", "--events", "-"]);
    assert!(
        matches!(e, ConfigError::Contradiction { key: "events", .. }),
        "{e:?}"
    );
    let e = err(&[
        "run",
        "--iface",
        "a",
        "--flows-file",
        "/x",
        "--events",
        "/x",
    ]);
    assert!(
        matches!(e, ConfigError::Contradiction { key: "events", .. }),
        "{e:?}"
    );
    // Equal values are fine.
    parse(&[
        "run",
        "--iface",
        "a",
        "--interval",
        "15s",
        "--active-timeout",
        "15s",
    ])
    .unwrap();
}

#[test]
fn bad_strings() {
    assert_invalid(
        err(&["run", "--iface", "a", "--listen-address", "nope"]),
        "listen_address",
        "HOST:PORT",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--listen-address", "1.2.3.4"]),
        "listen_address",
        "HOST:PORT",
    );
    assert_eq!(
        parse(&["run", "--iface", "a", "--listen-address", "localhost:81"])
            .unwrap()
            .listen_address,
        "127.0.0.1:81".parse().unwrap()
    );
    assert_invalid(
        err(&["run", "--iface", "way-too-long-name0"]),
        "iface",
        "1 to 15 bytes",
    );
    assert_invalid(err(&["run", "--iface", "a/b"]), "iface", "'/'");
    assert_invalid(
        err(&["run", "--iface", "a", "--flows-file", ""]),
        "flows_file",
        "\"-\"",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--pin-path", "rel/dir"]),
        "pin_path",
        "absolute",
    );
    assert_invalid(
        err(&["run", "--iface", "a", "--state-dir", "run/sensor"]),
        "state_dir",
        "absolute",
    );
    assert_invalid(
        err(&["--log-level", "loud=[", "run", "--iface", "a"]),
        "log_level",
        "trace",
    );
    let many: Vec<String> = (0..64).map(|i| format!("--iface=v{i}")).collect();
    let mut args = vec!["run"];
    args.extend(many.iter().map(String::as_str));
    assert_invalid(err(&args), "iface", "at most 63");
}

#[test]
fn clap_rejects_bad_flag_syntax() {
    for args in [
        &["sensor", "run", "--interval", "5"][..],
        &["sensor", "run", "--xdp-mode", "turbo"],
        &["sensor", "run", "--top-k", "-1"],
        &["sensor", "run", "--wait-for-iface", "maybe"],
        &["sensor", "run", "--no-such-flag"],
        &["sensor"],
    ] {
        assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
    }
    let e = Cli::try_parse_from(["sensor", "run", "--xdp-mode", "turbo"]).unwrap_err();
    assert!(e.to_string().contains("native"), "{e}");
    let e = Cli::try_parse_from(["sensor", "run", "--interval", "5"]).unwrap_err();
    assert!(e.to_string().contains("500ms"), "{e}");
}

#[test]
fn file_errors() {
    let missing = std::env::temp_dir().join("sensor-config-test-does-not-exist.toml");
    let e = err(&["check", "--config", &missing.display().to_string()]);
    assert!(matches!(e, ConfigError::ReadFile { .. }), "{e:?}");
    assert!(e.to_string().contains("--config"), "{e}");

    let f = TempFile::new("top_k = \n");
    assert!(matches!(
        err(&["check", "--config", &f.arg()]),
        ConfigError::ParseFile { .. }
    ));

    let f = TempFile::new("iface = [\"a\"]\ntopk = 5\n");
    let e = err(&["check", "--config", &f.arg()]);
    let text = e.to_string();
    assert!(matches!(e, ConfigError::ParseFile { .. }), "{e:?}");
    assert!(
        text.contains("topk") && text.contains("top_k"),
        "names the key and the accepted keys: {text}"
    );

    let f = TempFile::new("xdp_mode = \"turbo\"\n");
    let text = err(&["check", "--config", &f.arg()]).to_string();
    assert!(
        text.contains("turbo") && text.contains("native") && text.contains("skb"),
        "{text}"
    );

    let f = TempFile::new("top_k = \"ten\"\n");
    let text = err(&["check", "--config", &f.arg()]).to_string();
    assert!(text.contains("top_k"), "{text}");

    let f = TempFile::new("idle_timeout = \"soon\"\n");
    assert_invalid(
        err(&["check", "--config", &f.arg()]),
        "idle_timeout",
        "500ms",
    );

    let f = TempFile::new("[detection]\nsyn_rate = 5\n");
    assert!(matches!(
        err(&["check", "--config", &f.arg()]),
        ConfigError::ParseFile { .. }
    ));

    let f = TempFile::new("[detection]\nfor_intervals = 0\n");
    let e = err(&["check", "--config", &f.arg()]);
    assert!(
        matches!(&e, ConfigError::Detection { message } if message.contains("for_intervals")),
        "{e}"
    );

    let f = TempFile::new("[detection]\nfor_intervals = 3\nclear_seconds = 20.0\n");
    let c = parse(&["check", "--config", &f.arg()]).unwrap();
    assert_eq!(c.detection.for_intervals, 3);
}

#[test]
fn reload_rereads_file_and_keeps_flags() {
    let f = TempFile::new("iface = [\"eth0\"]\ntop_k = 10\nmax_flows = 100\n");
    let c = parse(&["run", "--config", &f.arg(), "--max-flows", "200"]).unwrap();
    assert_eq!((c.top_k, c.max_flows), (10, 200));
    std::fs::write(&f.0, "iface = [\"eth0\"]\ntop_k = 30\nmax_flows = 300\n").unwrap();
    let r = c.reload_from_file().unwrap();
    assert_eq!(r.top_k, 30, "file change picked up");
    assert_eq!(r.max_flows, 200, "flag still wins");
    assert!(
        c.restart_required(&r).is_empty(),
        "{:?}",
        c.restart_required(&r)
    );

    std::fs::write(&f.0, "iface = [\"eth1\"]\nmax_flows = 300\n").unwrap();
    let r = c.reload_from_file().unwrap();
    assert_eq!(r.top_k, 20, "removed key falls back to the default");
    assert_eq!(c.restart_required(&r), vec!["iface"]);

    std::fs::write(&f.0, "iface = [\"eth0\"]\nbogus = 1\n").unwrap();
    assert!(matches!(
        c.reload_from_file(),
        Err(ConfigError::ParseFile { .. })
    ));
    std::fs::remove_file(&f.0).unwrap();
    assert!(matches!(
        c.reload_from_file(),
        Err(ConfigError::ReadFile { .. })
    ));

    let no_file = parse(&["run", "--iface", "a"]).unwrap();
    assert!(matches!(
        no_file.reload_from_file(),
        Err(ConfigError::NoConfigFile)
    ));
}
