//! Whole-machine CPU time (section 3): the busy time of all CPUs from
//! /proc/stat, and how much of it went to work outside the benchmark.
//!
//! Busy time is wall time x online CPUs less the idle, iowait and steal
//! time of /proc/stat. With NO_HZ the kernel keeps idle time exactly (the
//! user/system fields are tick samples), so this is the finer measure.
//!
//! On a shared machine other work (someone's build) would land in that busy
//! time. The meter moves the driver, and so every process it starts, into a
//! cgroup of its own; other work is then the task time of the whole
//! hierarchy less ours less kernel threads (kept: ksoftirqd runs our packets
//! under load). With cgroup v1 `cpuacct` the root's usage is exact; with
//! cgroup v2 only, it is the root's `cpu.stat`, which the kernel sums from
//! tick samples.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::sys;

/// USER_HZ, the unit of /proc/stat.
fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// Idle + iowait + steal of all CPUs, in seconds.
fn not_busy_seconds() -> Result<f64> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let line = s.lines().next().context("empty /proc/stat")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    if f.len() < 8 || !line.starts_with("cpu ") {
        bail!("unexpected /proc/stat line: {line}");
    }
    Ok((f[3] + f[4] + f[7]) / user_hz())
}

/// Run time of every kernel thread by pid (/proc/PID/schedstat, ns).
fn kernel_threads() -> HashMap<u32, u64> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        // After the name: state ppid pgrp session tty_nr tpgid flags ...
        let flags = stat[close + 1..]
            .split_whitespace()
            .nth(6)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if flags & PF_KTHREAD == 0 {
            continue;
        }
        if let Some(run) = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            out.insert(pid, run);
        }
    }
    out
}

/// Kernel-thread run time from `a` to `b`, in seconds: threads that exit
/// in between drop out (their past would otherwise count as negative);
/// threads born in between count from zero.
fn kernel_thread_seconds(a: &HashMap<u32, u64>, b: &HashMap<u32, u64>) -> f64 {
    b.iter()
        .map(|(pid, &t)| t.saturating_sub(a.get(pid).copied().unwrap_or(0)))
        .sum::<u64>() as f64
        / 1e9
}

/// Which cgroup hierarchy the meter uses.
#[derive(Clone, Copy)]
enum Kind {
    /// v1 with the cpuacct controller: `cpuacct.usage`, ns, exact.
    V1,
    /// v2: `cpu.stat` usage_usec (the root's from tick samples).
    V2,
}

/// The driver's own cgroup; the driver moves back and removes it on drop.
struct Group {
    kind: Kind,
    root: PathBuf,
    dir: PathBuf,
    home: PathBuf,
}

fn usage_seconds(kind: Kind, dir: &Path) -> Result<f64> {
    Ok(match kind {
        Kind::V1 => {
            let s = std::fs::read_to_string(dir.join("cpuacct.usage"))?;
            s.trim().parse::<f64>()? / 1e9
        }
        Kind::V2 => {
            let s = std::fs::read_to_string(dir.join("cpu.stat"))?;
            let us = s
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .context("no usage_usec in cpu.stat")?;
            us.trim().parse::<f64>()? / 1e6
        }
    })
}

impl Group {
    /// Finds a hierarchy, creates `sensor-bench-PID` at its root and moves
    /// the driver into it.
    fn create() -> Result<Group> {
        let mounts = std::fs::read_to_string("/proc/self/mounts")?;
        let mut v1 = None;
        let mut v2 = None;
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            if f[2] == "cgroup" && f[3].split(',').any(|o| o == "cpuacct") {
                v1 = Some(PathBuf::from(f[1]));
            } else if f[2] == "cgroup2" && v2.is_none() {
                v2 = Some(PathBuf::from(f[1]));
            }
        }
        let (kind, root) = match (v1, v2) {
            (Some(r), _) => (Kind::V1, r),
            (None, Some(r)) => (Kind::V2, r),
            _ => bail!("no cgroup v1 cpuacct or cgroup v2 mount"),
        };
        // Where the driver is now, to go back on drop.
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctl, path) = (p.next()?, p.next()?, p.next()?);
                let hit = match kind {
                    Kind::V1 => ctl.split(',').any(|c| c == "cpuacct"),
                    Kind::V2 => ctl.is_empty(),
                };
                hit.then(|| path.trim_start_matches('/').to_string())
            })
            .unwrap_or_default();
        let home = root.join(rel);
        let dir = root.join(format!("sensor-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let g = Group {
            kind,
            root,
            dir,
            home,
        };
        std::fs::write(g.dir.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("moving the driver into {}", g.dir.display()))?;
        usage_seconds(kind, &g.root).context("reading the root group's CPU usage")?;
        usage_seconds(kind, &g.dir).context("reading the bench group's CPU usage")?;
        Ok(g)
    }

    /// (task time of the whole hierarchy, of the group), in seconds, cumulative.
    fn usage(&self) -> Result<(f64, f64)> {
        Ok((
            usage_seconds(self.kind, &self.root)?,
            usage_seconds(self.kind, &self.dir)?,
        ))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A cumulative reading.
pub struct Reading {
    at: Instant,
    not_busy_s: f64,
    /// (all tasks, the group's tasks) with a group.
    usage: Option<(f64, f64)>,
    kernel_threads: HashMap<u32, u64>,
}

/// CPU time between two readings, in seconds.
pub struct Span {
    /// Busy time of all CPUs.
    pub busy_s: f64,
    /// Of which tasks outside the group other than kernel threads took
    /// (None without a group).
    pub others_s: Option<f64>,
    /// Of which the group's tasks took (None without a group).
    pub group_s: Option<f64>,
    /// Of which kernel threads took.
    pub kernel_threads_s: f64,
    /// Wall time x online CPUs.
    pub capacity_s: f64,
}

impl Span {
    /// Busy time less other work.
    pub fn ours_s(&self) -> f64 {
        self.busy_s - self.others_s.unwrap_or(0.0)
    }

    /// Share of the machine other work took, 0..=1 (0 without a group).
    pub fn others_share(&self) -> f64 {
        self.others_s.unwrap_or(0.0).max(0.0) / self.capacity_s
    }
}

/// Reads whole-machine CPU time; see the module docs.
pub struct Meter {
    group: Option<Group>,
    /// Why other work is not subtracted, when it is not.
    pub no_group: Option<String>,
    cpus: f64,
}

impl Meter {
    /// A meter; without a usable cgroup it still measures busy time.
    pub fn new() -> Meter {
        let (group, no_group) = match Group::create() {
            Ok(g) => (Some(g), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Meter {
            group,
            no_group,
            cpus: sys::online_cpus() as f64,
        }
    }

    /// A reading now.
    pub fn read(&self) -> Result<Reading> {
        let kernel_threads = kernel_threads();
        let usage = match &self.group {
            Some(g) => Some(g.usage()?),
            None => None,
        };
        Ok(Reading {
            at: Instant::now(),
            not_busy_s: not_busy_seconds()?,
            usage,
            kernel_threads,
        })
    }

    /// CPU time from `a` to `b`.
    pub fn span(&self, a: &Reading, b: &Reading) -> Span {
        let capacity_s = (b.at - a.at).as_secs_f64() * self.cpus;
        let kernel_threads_s = kernel_thread_seconds(&a.kernel_threads, &b.kernel_threads);
        let usage = a.usage.zip(b.usage).map(|(x, y)| (y.0 - x.0, y.1 - x.1));
        Span {
            busy_s: capacity_s - (b.not_busy_s - a.not_busy_s),
            others_s: usage.map(|(all, group)| all - group - kernel_threads_s),
            group_s: usage.map(|u| u.1),
            kernel_threads_s,
            capacity_s,
        }
    }
}
