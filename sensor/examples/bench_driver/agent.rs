//! The real agent as a child process, and scraping its endpoint.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::sys;

/// A running agent; stopped with SIGTERM on drop.
pub struct Agent {
    child: Child,
    pub port: u16,
}

impl Agent {
    /// Starts `sensor run` on `iface` with extra flags; waits until ready.
    pub fn start(bin: &Path, iface: &str, port: u16, extra: &[&str]) -> Result<Agent> {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--log-level",
            "warn",
            "run",
            "--iface",
            iface,
            "--xdp-mode",
            "native",
        ])
        .args(["--listen-address", &listen, "--interval", "1s"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let a = Agent { child, port };
        sys::wait_for("the agent to become ready", Duration::from_secs(30), || {
            get(port, "/-/ready")
                .map(|(code, _, _)| code == 200)
                .unwrap_or(false)
        })?;
        Ok(a)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ingress packets of `iface` in sensor_packets_total.
    pub fn packets(&self, iface: &str) -> Result<u64> {
        let (_, body, _) = get(self.port, "/metrics")?;
        Ok(body
            .lines()
            .filter(|l| {
                l.starts_with("sensor_packets_total{") && l.contains(iface) && l.contains("ingress")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HTTP/1.0 GET on 127.0.0.1: (status, body, latency).
pub fn get(port: u16, path: &str) -> Result<(u16, String, Duration)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&buf);
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body, took))
}
