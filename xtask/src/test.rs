//! `cargo xtask test`: bootstrap, lint, then the test tiers, with a sweep of
//! leftover namespaces and links before and after.
//!
//! Tiers are chosen by file name, so every test file runs in exactly one tier:
//! - `unit`: library, binary and doc tests, plus integration tests whose
//!   names match no other tier (no root needed);
//! - `elf`: `<crate>/tests/elf.rs` (the built object; no root needed);
//! - `prog`: `<crate>/tests/prog*.rs` (BPF_PROG_TEST_RUN; root);
//! - `live`: `<crate>/tests/live*.rs` and xtask's own `xtask_live_*` tests
//!   (network namespaces; root);
//! - `e2e`: `<crate>/tests/e2e*.rs` (root).
//!
//! Root tiers run with `--test-threads=1`.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{bootstrap, lint, run::net, util};

/// Crates whose tests run (the workspace's default members).
const CRATES: [&str; 3] = ["sensor-common", "sensor", "xtask"];
/// Name prefix of xtask's own root-only tests (run in the live tier).
const XTASK_LIVE: &str = "xtask_live_";

/// A test tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    /// Pure unit and doc tests.
    Unit,
    /// Tests of the built eBPF object.
    Elf,
    /// BPF_PROG_TEST_RUN tests.
    Prog,
    /// Network-namespace tests with real traffic.
    Live,
    /// End-to-end tests.
    E2e,
    /// `cargo xtask bench --quick`, so the benchmark harness cannot rot
    /// (its report goes to target/bench-quick; missed targets never fail).
    Bench,
    /// Every tier in order.
    All,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Unit => "unit",
            Tier::Elf => "elf",
            Tier::Prog => "prog",
            Tier::Live => "live",
            Tier::E2e => "e2e",
            Tier::Bench => "bench",
            Tier::All => "all",
        }
    }

    fn needs_root(self) -> bool {
        matches!(self, Tier::Prog | Tier::Live | Tier::E2e | Tier::Bench)
    }

    /// The tier an integration test file (by stem) belongs to.
    pub fn of_test(stem: &str) -> Tier {
        if stem == "elf" {
            Tier::Elf
        } else if stem.starts_with("prog") {
            Tier::Prog
        } else if stem.starts_with("live") || stem == "analyze" || stem == "deploy" {
            // analyze and deploy drive real tools and capabilities as root.
            Tier::Live
        } else if stem.starts_with("e2e") || stem == "http_tls" {
            // http_tls runs a real Prometheus against the TLS endpoint.
            Tier::E2e
        } else {
            Tier::Unit
        }
    }
}

/// Options of `cargo xtask test`.
#[derive(Clone, Debug, clap::Args)]
pub struct TestArgs {
    /// Which tier to run.
    #[arg(long, value_enum, default_value = "all")]
    pub tier: Tier,
    /// Shorter run: sets SENSOR_TEST_QUICK=1 for the tests and leaves the e2e
    /// tier out of `all`.
    #[arg(long)]
    pub quick: bool,
    /// Skip the rustfmt and clippy checks.
    #[arg(long)]
    pub no_lint: bool,
}

/// An integration test target: crate and test name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestTarget {
    /// Package name.
    pub krate: String,
    /// Test target name (file stem).
    pub name: String,
}

/// Integration test targets of [`CRATES`] (`tests/*.rs`, `tests/*/main.rs`).
pub fn discover() -> Vec<TestTarget> {
    let root = util::repo_root();
    let mut found = Vec::new();
    for krate in CRATES {
        let Ok(entries) = std::fs::read_dir(root.join(krate).join("tests")) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = if path.extension().is_some_and(|e| e == "rs") {
                path.file_stem()
            } else if path.join("main.rs").is_file() {
                path.file_name()
            } else {
                None
            };
            if let Some(name) = name {
                found.push(TestTarget {
                    krate: krate.to_string(),
                    name: name.to_string_lossy().into_owned(),
                });
            }
        }
    }
    found.sort_by(|a, b| (&a.krate, &a.name).cmp(&(&b.krate, &b.name)));
    found
}

/// The cargo commands of one tier (empty when the tier has no tests yet).
pub fn commands(tier: Tier, targets: &[TestTarget]) -> Vec<Command> {
    let cargo_test = || {
        let mut c = Command::new("cargo");
        // Every test binary runs even when an earlier one failed.
        c.args(["test", "--no-fail-fast"])
            .current_dir(util::repo_root());
        c
    };
    let mine: Vec<&TestTarget> = targets
        .iter()
        .filter(|t| Tier::of_test(&t.name) == tier)
        .collect();
    let mut cmds = Vec::new();
    if tier == Tier::Unit {
        let mut c = cargo_test();
        for k in CRATES {
            c.args(["-p", k]);
        }
        c.args(["--lib", "--bins"]);
        for t in &mine {
            c.args(["--test", &t.name]);
        }
        c.args(["--", "--skip", XTASK_LIVE]);
        cmds.push(c);
        let mut doc = cargo_test();
        doc.args(["-p", "sensor-common", "-p", "sensor", "--doc"]);
        cmds.push(doc);
        return cmds;
    }
    if !mine.is_empty() {
        let mut c = cargo_test();
        let mut krates: Vec<&str> = mine.iter().map(|t| t.krate.as_str()).collect();
        krates.dedup();
        for k in krates {
            c.args(["-p", k]);
        }
        for t in &mine {
            c.args(["--test", &t.name]);
        }
        if tier.needs_root() {
            c.args(["--", "--test-threads=1"]);
        }
        cmds.push(c);
    }
    if tier == Tier::Live {
        let mut c = cargo_test();
        c.args([
            "-p",
            "xtask",
            "--bins",
            XTASK_LIVE,
            "--",
            "--test-threads=1",
        ]);
        cmds.push(c);
    }
    cmds
}

/// Totals of the `test result:` lines of one tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tests passed.
    pub passed: u64,
    /// Tests failed.
    pub failed: u64,
    /// Tests ignored.
    pub ignored: u64,
    /// cargo invocations that failed (compile errors included).
    pub commands_failed: u64,
}

impl Counts {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line;
    /// returns whether the line was one.
    pub fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        let num = |what: &str| -> u64 {
            rest.split(';')
                .filter_map(|part| part.trim().rsplit_once(' '))
                .find_map(|(n, w)| {
                    (w == what)
                        .then(|| n.rsplit(' ').next().unwrap_or(n).parse().ok())
                        .flatten()
                })
                .unwrap_or(0)
        };
        self.passed += num("passed");
        self.failed += num("failed");
        self.ignored += num("ignored");
        true
    }

    fn ok(&self) -> bool {
        self.failed == 0 && self.commands_failed == 0
    }
}

/// Runs `cmd`, echoing its stdout, and adds its results to `counts`.
fn run_counted(cmd: &mut Command, counts: &mut Counts) -> Result<()> {
    let shown = util::display(cmd);
    println!("+ {shown}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    if !child.wait()?.success() {
        counts.commands_failed += 1;
    }
    Ok(())
}

/// Sweeps leftover test and demo namespaces and links when dropped (and
/// once on creation), so a failing or interrupted run leaves nothing.
struct Sweep;

impl Sweep {
    fn now(when: &str) {
        match net::clean_leftovers(&[net::TEST_PREFIX, net::DEMO_PREFIX]) {
            Ok(removed) if removed.is_empty() => {}
            Ok(removed) => println!("test: removed leftovers {when}: {}", removed.join(", ")),
            Err(e) => eprintln!("test: could not sweep leftovers {when}: {e:#}"),
        }
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        Sweep::now("after the tests");
    }
}

/// `cargo xtask test`.
pub fn test(args: &TestArgs) -> Result<()> {
    let tiers: Vec<Tier> = match args.tier {
        Tier::All if args.quick => vec![Tier::Unit, Tier::Elf, Tier::Prog, Tier::Live, Tier::Bench],
        Tier::All => vec![
            Tier::Unit,
            Tier::Elf,
            Tier::Prog,
            Tier::Live,
            Tier::E2e,
            Tier::Bench,
        ],
        t => vec![t],
    };
    if !util::is_root() {
        if let Some(t) = tiers.iter().find(|t| t.needs_root()) {
            bail!(
                "not root: the {} tier needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN); run as root or pick --tier unit or --tier elf",
                t.name()
            );
        }
    }
    bootstrap::rust(bootstrap::Linker::Ensure)?;
    bootstrap::packages()?;
    if args.quick {
        std::env::set_var("SENSOR_TEST_QUICK", "1");
    }
    // Only the root tiers create namespaces; a unit run leaves others' alone.
    let sweep_wanted = util::is_root() && tiers.iter().any(|t| t.needs_root());
    let _sweep = sweep_wanted.then(|| {
        Sweep::now("before the tests");
        Sweep
    });
    if !args.no_lint {
        lint::lint()?;
    }
    let targets = discover();
    let mut summary = Vec::new();
    for tier in tiers {
        let mut counts = Counts::default();
        if tier == Tier::Bench {
            let out = util::target_dir().join("bench-quick");
            match crate::bench::bench(true, Some(&out)) {
                Ok(()) => counts.passed = 1,
                Err(e) => {
                    eprintln!("bench: {e:#}");
                    counts.commands_failed = 1;
                }
            }
            summary.push((tier, counts));
            continue;
        }
        let cmds = commands(tier, &targets);
        for mut cmd in cmds {
            run_counted(&mut cmd, &mut counts)?;
        }
        summary.push((tier, counts));
    }
    println!();
    let mut ok = true;
    for (tier, c) in &summary {
        ok &= c.ok();
        let verdict = if !c.ok() {
            "FAILED"
        } else if c.passed == 0 {
            "no tests yet"
        } else {
            "ok"
        };
        println!(
            "tier {:<4}: {verdict}: {} passed, {} failed, {} ignored{}",
            tier.name(),
            c.passed,
            c.failed,
            c.ignored,
            if c.commands_failed > 0 {
                format!(", {} cargo invocation(s) failed", c.commands_failed)
            } else {
                String::new()
            }
        );
    }
    if !ok {
        bail!("some tests failed (see above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_map_to_tiers_by_name() {
        assert_eq!(Tier::of_test("elf"), Tier::Elf);
        assert_eq!(Tier::of_test("prog"), Tier::Prog);
        assert_eq!(Tier::of_test("prog_fuzz"), Tier::Prog);
        assert_eq!(Tier::of_test("live"), Tier::Live);
        assert_eq!(Tier::of_test("live_vlan"), Tier::Live);
        assert_eq!(Tier::of_test("e2e_prometheus"), Tier::E2e);
        assert_eq!(Tier::of_test("metrics_doc"), Tier::Unit);
        assert_eq!(Tier::of_test("elf_extra"), Tier::Unit);
    }

    #[test]
    fn result_lines_are_summed() {
        let mut c = Counts::default();
        assert!(c.add_line("test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s"));
        assert!(c.add_line("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 1.20s"));
        assert!(!c.add_line("test foo ... ok"));
        assert_eq!((c.passed, c.failed, c.ignored), (15, 1, 2));
        assert!(!c.ok());
    }

    #[test]
    fn root_tiers_run_single_threaded_and_every_file_runs_once() {
        let t = |k: &str, n: &str| TestTarget {
            krate: k.into(),
            name: n.into(),
        };
        let targets = [
            t("sensor", "elf"),
            t("sensor", "live_a"),
            t("sensor", "live_b"),
            t("sensor", "misc"),
        ];
        let show = |tier| {
            commands(tier, &targets)
                .iter()
                .map(util::display)
                .collect::<Vec<_>>()
        };
        let unit = show(Tier::Unit);
        assert!(unit[0].contains("--test misc") && !unit[0].contains("--test elf"));
        let live = show(Tier::Live);
        assert!(live[0].contains("--test live_a --test live_b -- --test-threads=1"));
        assert!(live[1].contains("-p xtask --bins xtask_live_"));
        assert!(!show(Tier::Elf)[0].contains("--test-threads"));
        assert!(show(Tier::Prog).is_empty());
    }
}
