//! Property test of the configuration parser: thousands of random config
//! files and flag sets, valid and not. Whatever the input, parsing never
//! panics; it either yields a `Config` that satisfies every documented
//! invariant, or a `ConfigError` whose message names a key.

use std::path::PathBuf;

use clap::Parser;

use super::*;

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

const KEYS: [&str; 16] = [
    "log_level",
    "iface",
    "xdp_mode",
    "interval",
    "listen_address",
    "flows_file",
    "events",
    "top_k",
    "active_timeout",
    "idle_timeout",
    "max_flows",
    "flow_map_entries",
    "ewma_tau",
    "wait_for_iface",
    "unknown_key",
    "detection",
];

/// A TOML value for `key`: usually of the right type, sometimes not.
fn value(rng: &mut Rng, key: &str) -> String {
    let durations = [
        "\"1s\"",
        "\"500ms\"",
        "\"0s\"",
        "\"2m\"",
        "\"-1s\"",
        "\"x\"",
        "\"1h30m\"",
        "5",
    ];
    let ints = [
        "0",
        "1",
        "20",
        "1000",
        "1001",
        "-3",
        "65536",
        "1023",
        "99999999999",
        "\"7\"",
    ];
    match (key, rng.below(10)) {
        (_, 0) => rng.pick(&["true", "\"\"", "[]", "1.5", "{}"]).to_string(),
        ("iface", _) => rng
            .pick(&[
                "[\"eth0\"]",
                "[\"a\", \"b\"]",
                "[]",
                "[\"this-name-is-too-long\"]",
                "[\"a/b\"]",
                "\"eth0\"",
            ])
            .to_string(),
        ("xdp_mode", _) => rng
            .pick(&["\"auto\"", "\"native\"", "\"skb\"", "\"turbo\""])
            .to_string(),
        ("log_level", _) => rng
            .pick(&["\"info\"", "\"sensor=debug\"", "\"[\"", "\"\""])
            .to_string(),
        ("listen_address", _) => rng
            .pick(&[
                "\"127.0.0.1:9087\"",
                "\"[::1]:1\"",
                "\"localhost:80\"",
                "\"nope\"",
                "\"1.2.3.4\"",
            ])
            .to_string(),
        ("flows_file" | "events", _) => rng.pick(&["\"-\"", "\"/tmp/x.json\"", "\"\""]).to_string(),
        ("wait_for_iface", _) => rng.pick(&["true", "false", "\"yes\""]).to_string(),
        ("detection", _) => rng
            .pick(&[
                "{ for_intervals = 2 }",
                "{ for_intervals = 0 }",
                "{ nope = 1 }",
                "{ clear_seconds = -1.0 }",
            ])
            .to_string(),
        ("interval" | "active_timeout" | "idle_timeout" | "ewma_tau", _) => {
            rng.pick(&durations).to_string()
        }
        _ => rng.pick(&ints).to_string(),
    }
}

fn check(result: Result<Config, ConfigError>, input: &str) {
    match result {
        Ok(c) => {
            assert!(
                !c.interval.is_zero() && c.interval <= c.idle_timeout,
                "{input}"
            );
            assert!(c.idle_timeout <= c.active_timeout, "{input}");
            assert!(TOP_K_RANGE.contains(&(c.top_k as u64)), "{input}");
            assert!(!c.ewma_tau.is_zero(), "{input}");
            assert!(c.max_flows >= 1 && c.flow_map_entries >= 1024, "{input}");
            if let (Some(a), Some(b)) = (&c.flows_file, &c.events) {
                assert!(a != b, "flows and events outputs coincide: {input}");
            }
            c.detection
                .validate()
                .expect("a Config holds a valid [detection]");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "{input}");
            if let ConfigError::Invalid { key, .. } | ConfigError::Contradiction { key, .. } = &e {
                assert!(msg.contains(key), "{msg} does not name {key}");
            }
        }
    }
}

#[test]
fn random_config_files_never_panic_and_keep_invariants() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let dir = std::env::temp_dir().join(format!("sensor-config-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("c.toml");
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..rng.below(6) + 1 {
            let key = rng.pick(&KEYS);
            if key == "detection" {
                text.push_str(&format!("detection = {}\n", value(&mut rng, key)));
            } else {
                text.push_str(&format!("{key} = {}\n", value(&mut rng, key)));
            }
        }
        if rng.below(20) == 0 {
            // Not TOML at all.
            text.push_str("= = [\n");
        }
        std::fs::write(&path, &text).unwrap();
        let p = path.display().to_string();
        let mode = if rng.below(2) == 0 { "run" } else { "check" };
        let argv = ["sensor", mode, "--config", &p];
        let cli = Cli::try_parse_from(argv).expect("clap accepts --config");
        let result = Config::from_cli(cli);
        if result.is_ok() {
            ok += 1;
        } else {
            rejected += 1;
        }
        check(result, &text);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Both outcomes must be exercised, or the generator is too narrow.
    assert!(
        ok > 100 && rejected > 100,
        "{ok} accepted, {rejected} rejected"
    );
}

#[test]
fn random_flag_sets_never_panic() {
    let mut rng = Rng(0x0bad_5eed_0000_0002);
    let flags: [(&str, &[&str]); 8] = [
        ("--iface", &["eth0", "", "x/y", "averyveryverylongname"]),
        ("--interval", &["1s", "0s", "abc", "100ms", "30s"]),
        ("--top-k", &["0", "1", "1000", "1001", "-1", "z"]),
        ("--idle-timeout", &["1s", "15s", "0s", "2h"]),
        ("--active-timeout", &["5s", "60s", "1ms"]),
        ("--listen-address", &["127.0.0.1:1", "bad", ":80"]),
        ("--xdp-mode", &["auto", "skb", "turbo"]),
        ("--flow-map-entries", &["1024", "1", "16777217", "65536"]),
    ];
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..3000 {
        let mut argv: Vec<String> = vec!["sensor".into(), "run".into()];
        if rng.below(8) != 0 {
            argv.extend(["--iface".into(), "eth0".into()]);
        }
        for _ in 0..rng.below(4) {
            let (flag, values) = flags[rng.below(flags.len() as u64) as usize];
            argv.push(flag.into());
            argv.push(rng.pick(values).into());
        }
        let input = argv.join(" ");
        match Cli::try_parse_from(&argv) {
            // clap's own usage errors exit 64 in main.
            Err(_) => rejected += 1,
            Ok(cli) => {
                let r = Config::from_cli(cli);
                if r.is_ok() {
                    ok += 1;
                } else {
                    rejected += 1;
                }
                check(r, &input);
            }
        }
    }
    assert!(
        ok > 100 && rejected > 100,
        "{ok} accepted, {rejected} rejected"
    );
}
