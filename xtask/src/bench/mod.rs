//! `cargo xtask bench [--quick]`: builds the agent and the bench driver
//! (`sensor/examples/bench_driver`) in release mode, installs the tools it
//! compares against (tcpdump, pmacct, softflowd, fastnetmon) when missing,
//! and runs the driver as root. The driver writes `BENCHMARKS.md` and
//! `BENCHMARKS.json` at the repository root.
//!
//! Exit status: non-zero only for harness errors; a missed target is
//! reported in the files, never a failure (CI runs `--quick` once so the
//! harness cannot rot).

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{bootstrap, util};

/// Debian packages of the comparison tools, by the program they provide.
const TOOLS: [(&str, &str); 4] = [
    ("tcpdump", "tcpdump"),
    ("pmacctd", "pmacct"),
    ("softflowd", "softflowd"),
    ("fastnetmon", "fastnetmon"),
];

fn missing_packages() -> Vec<&'static str> {
    TOOLS
        .iter()
        .filter(|(prog, _)| {
            util::which(prog).is_none() && !std::path::Path::new("/usr/sbin").join(prog).exists()
        })
        .map(|(_, pkg)| *pkg)
        .collect()
}

/// Runs the benchmark; `quick` is the short CI mode. The report goes to
/// `out`, by default the repository root.
pub fn bench(quick: bool, out: Option<&std::path::Path>) -> Result<()> {
    if !util::is_root() {
        bail!("cargo xtask bench needs root (BPF, veth pairs, bpf_stats); run it with sudo");
    }
    bootstrap::rust(bootstrap::Linker::Ensure)?;
    let missing = missing_packages();
    if !missing.is_empty() {
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        if let Err(e) = util::run(&mut apt) {
            // The driver reports each absent tool as not measured.
            eprintln!("bench: could not install {}: {e:#}", missing.join(", "));
        }
    }
    let root = util::repo_root();
    util::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "sensor", "--bin", "sensor"])
            .args(["--example", "bench_driver"])
            .current_dir(&root),
    )?;
    let out = out.unwrap_or(&root);
    std::fs::create_dir_all(out)
        .with_context(|| format!("creating the report directory {}", out.display()))?;
    let release = util::target_dir().join("release");
    let mut driver = Command::new(release.join("examples").join("bench_driver"));
    if quick {
        driver.arg("--quick");
    }
    driver
        .arg("--agent")
        .arg(release.join("sensor"))
        .arg("--out")
        .arg(out)
        .current_dir(&root);
    util::run(&mut driver)
}
