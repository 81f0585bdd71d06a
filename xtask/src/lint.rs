//! `cargo xtask lint`: formatting check and clippy in two passes.
//!
//! Pass one covers the host crates on stable; pass two the eBPF crate on
//! nightly for the BPF target (it is not a default member, see Cargo.toml).

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::util;

/// The commands [`lint`] runs, in order.
pub fn commands() -> Vec<Command> {
    let root = util::repo_root();
    let mut fmt = Command::new("cargo");
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut host = Command::new("cargo");
    host.args([
        "clippy",
        "--workspace",
        "--exclude",
        "sensor-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let mut ebpf = Command::new("cargo");
    ebpf.args([
        "+nightly",
        "clippy",
        "-p",
        "sensor-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);
    let mut all = vec![fmt, host, ebpf];
    for cmd in &mut all {
        cmd.current_dir(&root);
    }
    all
}

/// Runs every lint command, stopping at the first failure.
pub fn lint() -> Result<()> {
    let what = [
        "rustfmt check",
        "clippy (host crates)",
        "clippy (eBPF crate)",
    ];
    for (mut cmd, what) in commands().into_iter().zip(what) {
        util::run(&mut cmd).with_context(|| match what {
            "rustfmt check" => {
                "formatting differs: run `cargo fmt --all` and review the diff".to_string()
            }
            _ => format!("{what} reported warnings or errors (they are denied)"),
        })?;
        println!("lint: {what}: ok");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pass_excludes_the_ebpf_crate_and_ebpf_pass_targets_bpf() {
        let cmds: Vec<String> = commands().iter().map(util::display).collect();
        assert_eq!(cmds.len(), 3);
        assert!(cmds[1].contains("--exclude sensor-ebpf") && cmds[1].contains("-D warnings"));
        assert!(
            cmds[2].starts_with("cargo +nightly clippy -p sensor-ebpf --target bpfel-unknown-none")
        );
    }
}
