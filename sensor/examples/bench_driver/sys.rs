//! Process and system helpers: CPU pinning, CPU time, memory, commands, BPF stats.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Online CPUs.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Clock ticks per second (for /proc/PID/stat times).
fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// CPU time of a process (all its threads), in seconds: the scheduler's
/// run time from /proc/PID/task/*/schedstat (ns), else utime + stime
/// (clock ticks).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let mut ns = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Some(run) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += run;
                any = true;
            }
        }
    }
    if any {
        return Some(ns as f64 / 1e9);
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name start at 3 (state); utime is 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks())
}

/// Sum of [`cpu_seconds`] over process `pid`, the processes of its process
/// group and all their descendants (workers that change group or are
/// re-parented after their parent's exit are still found by group or by
/// ancestry while it lives).
pub fn tree_cpu_seconds(pid: u32) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    // pid -> (ppid, pgid)
    let mut procs = std::collections::HashMap::new();
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = s.rfind(')') else { continue };
        let f: Vec<&str> = s[close + 2..].split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        procs.insert(p, (num(1), num(2)));
    }
    let ours = |mut p: u32| {
        for _ in 0..64 {
            let Some(&(ppid, pgid)) = procs.get(&p) else {
                return false;
            };
            if p == pid || pgid == pid {
                return true;
            }
            if ppid <= 1 {
                return false;
            }
            p = ppid;
        }
        false
    };
    procs
        .keys()
        .filter(|&&p| ours(p))
        .map(|&p| cpu_seconds(p).unwrap_or(0.0))
        .sum()
}

/// Sets the calling thread's nice value (children inherit it); returns the old one.
pub fn set_nice(nice: i32) -> Result<i32> {
    // SAFETY: getpriority/setpriority on the calling thread (who = 0).
    unsafe {
        *libc::__errno_location() = 0;
        let old = libc::getpriority(libc::PRIO_PROCESS, 0);
        if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
            bail!("setpriority({nice}): {}", std::io::Error::last_os_error());
        }
        Ok(old)
    }
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Runs a command; fails with its stderr when it fails.
pub fn sh(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Sets kernel.bpf_stats_enabled while alive; restores the old value on drop.
pub struct BpfStats {
    old: String,
}

impl BpfStats {
    /// Turns BPF run statistics on or off.
    pub fn set(on: bool) -> Result<BpfStats> {
        let old = std::fs::read_to_string(BPF_STATS).context("reading bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, if on { "1" } else { "0" })
            .context("writing bpf_stats_enabled")?;
        Ok(BpfStats {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.old);
    }
}

/// (run_time_ns, run_cnt) of the XDP program attached to `iface`, via bpftool.
pub fn attached_xdp_stats(iface: &str) -> Result<(u64, u64)> {
    let net = sh(&["bpftool", "-j", "net", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&net).context("bpftool net json")?;
    let id = v
        .get(0)
        .and_then(|x| x.get("xdp"))
        .and_then(|x| x.get(0))
        .and_then(|x| x.get("id"))
        .and_then(|x| x.as_u64())
        .with_context(|| format!("no XDP program on {iface}: {net}"))?;
    let p = sh(&["bpftool", "-j", "prog", "show", "id", &id.to_string()])?;
    let p: serde_json::Value = serde_json::from_str(&p).context("bpftool prog json")?;
    let t = p.get("run_time_ns").and_then(|x| x.as_u64()).unwrap_or(0);
    let c = p.get("run_cnt").and_then(|x| x.as_u64()).unwrap_or(0);
    Ok((t, c))
}
