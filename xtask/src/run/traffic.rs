//! Demo traffic: bounded-rate, bounded-duration generators that run between
//! the two ends of the demo veth pair only, restarted when they end.
//!
//! Each generator runs in its own process group so that stopping it also
//! stops anything it started; every one of them ends by itself within a few
//! seconds (`-w`, `-t`), except the iperf3 server, which lives inside the demo
//! namespace and is killed with it.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::net::Plan;
use crate::util;

/// Port of the demo's iperf3 server (inside the demo namespace).
const IPERF_PORT: &str = "5201";
/// iperf3 sending rate: modest, so the demo never loads the machine.
const IPERF_RATE: &str = "10M";
/// Seconds each bounded generator runs before it is restarted.
const ROUND_SECS: &str = "10";
/// Seconds between two demo attacks.
const ATTACK_EVERY: u64 = 45;
/// Pause before restarting a generator that ended.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// One supervised generator.
struct Generator {
    name: &'static str,
    /// Builds the command for round `n` (so rounds can alternate).
    make: Box<dyn Fn(u64) -> Command>,
    child: Option<Child>,
    rounds: u64,
    ended_at: Option<Instant>,
}

/// The running generators; dropping it stops them all.
pub struct Traffic {
    generators: Vec<Generator>,
}

impl Traffic {
    /// The demo's generators for `plan`: IPv4 and IPv6 ping from the
    /// namespace to the root-namespace end, and an iperf3 TCP transfer from the
    /// root namespace to a server in the namespace, alternating IPv4 and IPv6.
    pub fn start(plan: &Plan) -> Result<Traffic> {
        let (p1, p2, p3, p4) = (plan.clone(), plan.clone(), plan.clone(), plan.clone());
        let p5 = plan.clone();
        let generators = vec![
            generator("iperf3 server", move |_| {
                let mut c = p3.in_ns("iperf3");
                c.args(["-s", "-p", IPERF_PORT]);
                c
            }),
            generator("iperf3 client", move |round| {
                let server = if round % 2 == 0 {
                    p4.ns_v4.to_string()
                } else {
                    p4.ns_v6.to_string()
                };
                let mut c = Command::new("iperf3");
                c.args([
                    "-c", &server, "-p", IPERF_PORT, "-b", IPERF_RATE, "-t", ROUND_SECS,
                ]);
                c
            }),
            generator("ping IPv4", move |_| {
                let mut c = p1.in_ns("ping");
                c.args([
                    "-4",
                    "-q",
                    "-i",
                    "0.2",
                    "-w",
                    ROUND_SECS,
                    &p1.host_v4.to_string(),
                ]);
                c
            }),
            generator("ping IPv6", move |_| {
                let mut c = p2.in_ns("ping");
                c.args([
                    "-6",
                    "-q",
                    "-i",
                    "0.5",
                    "-w",
                    ROUND_SECS,
                    &p2.host_v6.to_string(),
                ]);
                c
            }),
            // An attack every ATTACK_EVERY seconds, so the detectors and the
            // threats dashboard have something to show: alternately a
            // bounded SYN flood (10k packets/s for 6 s) and a port scan.
            generator("attack", move |round| {
                let target = p5.host_v4.to_string();
                let attack = if round % 2 == 0 {
                    format!("timeout 6 hping3 -q -S -p 80 -i u100 {target}")
                } else {
                    format!("nmap -sS -p 1-1000 --max-rate 2000 -T4 {target}")
                };
                let mut c = p5.in_ns("sh");
                c.args(["-c", &format!("sleep {ATTACK_EVERY}; exec {attack}")]);
                c
            }),
        ];
        let mut traffic = Traffic { generators };
        // The server starts first, so the first client round finds it listening.
        for g in &mut traffic.generators {
            g.spawn()?;
            if g.name == "iperf3 server" {
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Ok(traffic)
    }

    /// Restarts generators whose round ended; call it periodically.
    pub fn tick(&mut self) -> Result<()> {
        for g in &mut self.generators {
            if let Some(child) = &mut g.child {
                if child.try_wait()?.is_some() {
                    g.child = None;
                    g.ended_at = Some(Instant::now());
                }
            }
            if g.child.is_none() && g.ended_at.is_none_or(|t| t.elapsed() >= RESTART_AFTER) {
                g.spawn()?;
            }
        }
        Ok(())
    }

    /// One line describing the generators, for the demo banner.
    pub fn describe(&self) -> String {
        format!(
            "ping every 0.2 s (IPv4) and 0.5 s (IPv6) from the namespace; iperf3 TCP at {IPERF_RATE}bit/s in {ROUND_SECS} s rounds, alternating IPv4 and IPv6; every {ATTACK_EVERY} s an attack from the namespace, alternately a SYN flood (hping3) and a port scan (nmap)"
        )
    }
}

fn generator(name: &'static str, make: impl Fn(u64) -> Command + 'static) -> Generator {
    Generator {
        name,
        make: Box::new(make),
        child: None,
        rounds: 0,
        ended_at: None,
    }
}

impl Generator {
    fn spawn(&mut self) -> Result<()> {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = (self.make)(self.rounds);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let shown = util::display(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start the {} generator `{shown}`", self.name))?;
        self.child = Some(child);
        self.rounds += 1;
        Ok(())
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for g in &mut self.generators {
            if let Some(mut child) = g.child.take() {
                util::kill_group(child.id(), libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(2);
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if Instant::now() >= deadline => {
                            util::kill_group(child.id(), libc::SIGKILL);
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        }
    }
}
