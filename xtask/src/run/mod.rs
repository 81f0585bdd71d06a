//! `cargo xtask run`: bootstrap, build the sensor (release) and run it as
//! root; without `--iface`, run it on a self-contained demo network.
//!
//! Layout:
//! - [`net`]: the demo namespace and veth pair, and the sweep of leftovers;
//! - [`traffic`]: the demo's traffic generators.

pub mod net;
pub mod traffic;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{bootstrap, util};

/// Where the demo's sensor serves metrics unless `--listen-address` is given.
pub const DEMO_LISTEN_ADDRESS: &str = "127.0.0.1:9617";

/// What to do with the arguments after `--`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No interface given: `sensor run` on the demo network, with these
    /// extra arguments.
    Demo {
        /// Arguments for `sensor run` (without the `run` itself).
        extra: Vec<String>,
    },
    /// Run the sensor with these arguments (as given, with `run` put in
    /// front when they start with an option).
    Direct {
        /// Arguments for the sensor binary.
        args: Vec<String>,
    },
}

/// Decides between the demo and running the sensor as asked: the demo when
/// no interface is given (no `--iface`, no `--config` file, no
/// `SENSOR_IFACES`), no subcommand other than `run` (a subcommand is a first
/// argument not starting with `-`) and no help or version flag.
pub fn classify(args: &[String], ifaces_in_env: bool) -> Mode {
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let help = ["-h", "--help", "-V", "--version"].iter().any(|f| has(f));
    let direct = help || ifaces_in_env || has("--iface") || has("--config");
    match args.first() {
        Some(first) if !first.starts_with('-') && first != "run" => Mode::Direct {
            args: args.to_vec(),
        },
        Some(first) if first == "run" => {
            if direct {
                Mode::Direct {
                    args: args.to_vec(),
                }
            } else {
                Mode::Demo {
                    extra: args[1..].to_vec(),
                }
            }
        }
        _ if direct && !help => Mode::Direct {
            args: std::iter::once("run".to_string())
                .chain(args.iter().cloned())
                .collect(),
        },
        _ if direct => Mode::Direct {
            args: args.to_vec(),
        },
        _ => Mode::Demo {
            extra: args.to_vec(),
        },
    }
}

/// The value of `--listen-address` in `args`, if given.
pub fn listen_address(args: &[String]) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "--listen-address" {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix("--listen-address=").map(str::to_string)
        }
    })
}

/// Runs the sensor; returns the exit code for xtask.
///
/// `prebuilt` is set only by xtask itself when it re-executes under sudo
/// after building as the invoking user.
pub fn run(args: Vec<String>, prebuilt: Option<PathBuf>) -> Result<i32> {
    let bin = match prebuilt {
        Some(bin) => bin,
        None => {
            bootstrap::rust(bootstrap::Linker::Ensure)?;
            crate::build(true)?;
            util::target_dir().join("release").join("sensor")
        }
    };
    if !util::is_executable(&bin) {
        bail!(
            "no sensor binary at {}: run `cargo xtask build --release`",
            bin.display()
        );
    }
    bootstrap::packages()?;
    if !util::is_root() {
        return reexec_with_sudo(&bin, &args);
    }
    let ifaces_in_env = std::env::var_os("SENSOR_IFACES").is_some_and(|v| !v.is_empty());
    match classify(&args, ifaces_in_env) {
        Mode::Direct { args } => {
            let mut cmd = Command::new(&bin);
            cmd.args(&args);
            println!("+ {}", util::display(&cmd));
            let err = cmd.exec();
            bail!("could not run {}: {err}", bin.display())
        }
        Mode::Demo { extra } => demo(&bin, extra),
    }
}

fn reexec_with_sudo(bin: &Path, args: &[String]) -> Result<i32> {
    let Some(sudo) = util::which("sudo") else {
        bail!("not root: the sensor needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN); run as root, or install sudo");
    };
    let me =
        std::env::current_exe().context("cannot find the xtask binary to re-run under sudo")?;
    let mut cmd = Command::new(sudo);
    cmd.arg("--preserve-env=RUST_LOG")
        .arg(me)
        .arg("run")
        .arg("--prebuilt")
        .arg(bin)
        .arg("--")
        .args(args);
    println!("+ {}", util::display(&cmd));
    let err = cmd.exec();
    bail!("could not run sudo: {err}")
}

/// The sensor child; dropping it stops it (SIGINT, then SIGKILL).
struct Sensor(Option<Child>);

impl Sensor {
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.0.take()?;
        util::kill_pid(child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                _ => {
                    eprintln!("demo: the sensor did not stop within 10 s: killing it");
                    let _ = child.kill();
                    return child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn demo(bin: &Path, extra: Vec<String>) -> Result<i32> {
    util::install_stop_handler()?;
    let removed = net::clean_leftovers(&[net::DEMO_PREFIX])?;
    if !removed.is_empty() {
        println!(
            "demo: removed leftovers of an earlier demo: {}",
            removed.join(", ")
        );
    }
    let plan = net::Plan::new(net::DEMO_PREFIX, std::process::id())?;
    // Drop order (reverse of declaration): sensor, traffic, then the network.
    let demo_net = net::DemoNet::create(plan)?;
    let plan = &demo_net.plan;
    let mut traffic = traffic::Traffic::start(plan)?;
    let listen = listen_address(&extra);
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--iface", &plan.host_if]);
    if listen.is_none() {
        cmd.args(["--listen-address", DEMO_LISTEN_ADDRESS]);
    }
    if !extra
        .iter()
        .any(|a| a == "--events" || a.starts_with("--events="))
    {
        // Anomaly starts and ends as JSON lines on the terminal.
        cmd.args(["--events", "-"]);
    }
    cmd.args(&extra).process_group(0);
    // SAFETY: prctl is async-signal-safe; it only makes the sensor receive
    // SIGTERM if xtask dies without cleaning up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    println!("+ {}", util::display(&cmd));
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", bin.display()))?;
    let mut sensor = Sensor(Some(child));
    let listen = listen.unwrap_or_else(|| DEMO_LISTEN_ADDRESS.to_string());
    println!(
        "\n\
         demo: namespace {ns}; veth {h} (root namespace, {h4}, {h6}) <-> {n} (in {ns}, {n4}, {n6})\n\
         demo: traffic: {traffic}\n\
         demo: the sensor runs on {h}; metrics: http://{listen}/metrics\n\
         demo: anomaly events (JSON lines) appear below as attacks start and end\n\
         demo: Ctrl-C stops the sensor and removes the namespace, the links and the generators\n",
        ns = plan.ns,
        h = plan.host_if,
        n = plan.ns_if,
        h4 = plan.host_v4,
        h6 = plan.host_v6,
        n4 = plan.ns_v4,
        n6 = plan.ns_v6,
        traffic = traffic.describe(),
    );
    loop {
        if util::stop_requested() {
            println!("demo: stopping");
            if let Some(status) = sensor.stop() {
                println!("demo: the sensor exited ({status})");
            }
            return Ok(0);
        }
        if let Some(child) = &mut sensor.0 {
            if let Some(status) = child.try_wait()? {
                sensor.0 = None;
                println!("demo: the sensor exited ({status}); cleaning up");
                return Ok(status.code().unwrap_or(1));
            }
        }
        traffic.tick()?;
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_interface_means_demo() {
        let demo = |extra: &[&str]| Mode::Demo { extra: v(extra) };
        assert_eq!(classify(&[], false), demo(&[]));
        assert_eq!(classify(&v(&["run"]), false), demo(&[]));
        assert_eq!(
            classify(&v(&["run", "--xdp-mode", "skb"]), false),
            demo(&["--xdp-mode", "skb"])
        );
        assert_eq!(
            classify(&v(&["--events", "-"]), false),
            demo(&["--events", "-"])
        );
    }

    #[test]
    fn an_interface_a_subcommand_or_help_means_direct() {
        let direct = |args: &[&str]| Mode::Direct { args: v(args) };
        assert_eq!(
            classify(&v(&["run", "--iface", "eth0"]), false),
            direct(&["run", "--iface", "eth0"])
        );
        assert_eq!(
            classify(&v(&["--iface=eth0"]), false),
            direct(&["run", "--iface=eth0"])
        );
        assert_eq!(
            classify(&v(&["--config", "s.toml"]), false),
            direct(&["run", "--config", "s.toml"])
        );
        assert_eq!(classify(&v(&["run"]), true), direct(&["run"]));
        assert_eq!(classify(&v(&["--help"]), false), direct(&["--help"]));
        assert_eq!(classify(&v(&["run", "-h"]), false), direct(&["run", "-h"]));
        assert_eq!(
            classify(&v(&["check", "--iface", "x"]), false),
            direct(&["check", "--iface", "x"])
        );
    }

    #[test]
    fn listen_address_is_found_in_both_spellings() {
        assert_eq!(
            listen_address(&v(&["--listen-address", "127.0.0.1:1"])).as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(
            listen_address(&v(&["--listen-address=[::1]:2"])).as_deref(),
            Some("[::1]:2")
        );
        assert_eq!(listen_address(&v(&["--events", "-"])), None);
    }
}
