//! Developer automation for the sensor workspace (`cargo xtask <command>`).
//!
//! Layout:
//! - [`bootstrap`]: idempotent toolchain, bpf-linker and Debian package setup;
//! - [`run`]: running the sensor, or the self-contained demo without `--iface`;
//! - [`test`]: the test tiers;
//! - [`lint`]: rustfmt check and clippy in two passes;
//! - [`util`]: command helpers, paths, root check, signal flag.

mod bench;
mod bootstrap;
mod deploy_check;
mod lint;
mod run;
mod test;
mod util;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Developer automation for the sensor workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ensure rust-src for nightly, bpf-linker against the nightly's libLLVM,
    /// and the Debian packages the tests need (idempotent).
    Bootstrap {
        /// Rebuild bpf-linker even if a working one is installed.
        #[arg(long)]
        rebuild_linker: bool,
        /// Leave the Debian packages alone.
        #[arg(long)]
        no_packages: bool,
    },
    /// Bootstrap, then build the sensor.
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Bootstrap, build (release) and run the sensor as root. Without
    /// `--iface`, run it on a demo veth pair with generated traffic.
    Run {
        /// Internal: the sensor binary built before re-running under sudo.
        #[arg(long, hide = true)]
        prebuilt: Option<PathBuf>,
        /// Arguments for the sensor, after `--` (e.g. `-- run --iface eth0`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Bootstrap, lint, then run the test tiers.
    Test(test::TestArgs),
    /// rustfmt check and clippy (host crates, then the eBPF crate).
    Lint,
    /// Remove leftover test (`st-`) and demo (`sdemo-`) namespaces and links.
    Cleanup,
    /// Benchmarks: writes BENCHMARKS.md and BENCHMARKS.json (root).
    Bench {
        /// Short mode for CI (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Where to write BENCHMARKS.md and BENCHMARKS.json [default: the
        /// repository root].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Offline checks of deploy/: systemd unit, Dockerfile, Kubernetes
    /// manifests (systemd-analyze, hadolint, kubernetes-validate).
    Deploy,
}

/// `cargo build -p sensor` (no bootstrap; callers do that first).
pub fn build(release: bool) -> Result<()> {
    let mut cmd = std::process::Command::new("cargo");
    cmd.args(["build", "-p", "sensor"])
        .current_dir(util::repo_root());
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)
}

fn dispatch(cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::Bootstrap {
            rebuild_linker,
            no_packages,
        } => {
            let linker = if rebuild_linker {
                bootstrap::Linker::Rebuild
            } else {
                bootstrap::Linker::Ensure
            };
            bootstrap::rust(linker)?;
            if !no_packages {
                bootstrap::packages()?;
            }
        }
        Cmd::Build { release } => {
            bootstrap::rust(bootstrap::Linker::Ensure)?;
            build(release)?;
        }
        Cmd::Run { prebuilt, args } => {
            let code = run::run(args, prebuilt)?;
            return Ok(u8::try_from(code).unwrap_or(1));
        }
        Cmd::Test(args) => test::test(&args)?,
        Cmd::Lint => {
            bootstrap::rust(bootstrap::Linker::Ensure)?;
            lint::lint()?;
        }
        Cmd::Cleanup => {
            let removed =
                run::net::clean_leftovers(&[run::net::TEST_PREFIX, run::net::DEMO_PREFIX])?;
            if removed.is_empty() {
                println!("cleanup: nothing left behind");
            } else {
                println!("cleanup: removed {}", removed.join(", "));
            }
        }
        Cmd::Bench { quick, out } => bench::bench(quick, out.as_deref())?,
        Cmd::Deploy => deploy_check::deploy_check()?,
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
