//! The alert rules and dashboards, checked without a running sensor:
//! `promtool check rules`, the promtool unit tests of every rule (fires when
//! it should, silent when it should not), and grafana/check.py's static
//! checks (dashboard structure, and every metric a dashboard or rule uses
//! is one METRICS.md documents). The live side is in tests/e2e.rs.

use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.current_dir(root()).output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (cargo xtask test installs promtool and python3)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_are_valid() {
    let text =
        run(Command::new("promtool").args(["check", "rules", "grafana/rules/sensor-rules.yml"]));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alert_rule_unit_tests_pass() {
    let tests: Vec<PathBuf> = std::fs::read_dir(root().join("grafana/rules/tests"))
        .expect("grafana/rules/tests")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    assert!(tests.len() >= 2, "rule tests missing: {tests:?}");
    let text = run(Command::new("promtool")
        .args(["test", "rules"])
        .args(&tests));
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_kind_has_a_rule_and_a_runbook() {
    let rules = std::fs::read_to_string(root().join("grafana/rules/sensor-rules.yml")).unwrap();
    for kind in [
        "syn_flood",
        "udp_flood",
        "icmp_flood",
        "port_scan",
        "host_sweep",
        "traffic_spike",
        "outbound_spike",
    ] {
        assert!(
            rules.contains(&format!("kind=\"{kind}\"")),
            "no rule for {kind}"
        );
    }
    for line in rules
        .lines()
        .filter(|l| l.contains("runbook_url:") && l.contains("https:"))
    {
        let file = line.rsplit('/').next().unwrap().trim().trim_matches('"');
        assert!(
            root().join("docs/runbooks").join(file).is_file(),
            "runbook {file} missing"
        );
    }
}

#[test]
fn dashboards_pass_the_static_checks() {
    run(Command::new("python3").arg("grafana/check.py"));
}
