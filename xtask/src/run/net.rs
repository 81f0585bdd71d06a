//! The demo's network: one namespace and a veth pair whose other end stays in
//! the root namespace, removed again on drop; and the sweep of leftovers.
//!
//! Names carry a prefix ([`DEMO_PREFIX`] for the demo, [`TEST_PREFIX`] for
//! tests) so [`clean_leftovers`] can find what a killed run left behind.
//! Addresses come from the benchmarking range 198.18.0.0/15 and the
//! documentation range 2001:db8::/32 only.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{bail, Result};

use crate::util;

/// Prefix of every namespace and link the demo creates.
pub const DEMO_PREFIX: &str = "sdemo-";
/// Prefix of every namespace and link the tests create (a convention the
/// test code follows).
pub const TEST_PREFIX: &str = "st-";
/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAMSIZ_MAX: usize = 15;

/// Names and addresses of one demo network, derived from a number (the pid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Network namespace name.
    pub ns: String,
    /// veth end in the root namespace (the sensor attaches here).
    pub host_if: String,
    /// veth end inside the namespace.
    pub ns_if: String,
    /// IPv4 address of the root-namespace end (a /30).
    pub host_v4: Ipv4Addr,
    /// IPv4 address of the namespace end.
    pub ns_v4: Ipv4Addr,
    /// IPv6 address of the root-namespace end (a /64).
    pub host_v6: Ipv6Addr,
    /// IPv6 address of the namespace end.
    pub ns_v6: Ipv6Addr,
}

impl Plan {
    /// The plan for `prefix` and `id`; distinct ids below 32768 get distinct
    /// subnets, so concurrent demos do not collide.
    pub fn new(prefix: &str, id: u32) -> Result<Plan> {
        let ns = format!("{prefix}{id}");
        let host_if = format!("{ns}h");
        if host_if.len() > IFNAMSIZ_MAX {
            bail!("interface name {host_if} is longer than {IFNAMSIZ_MAX} bytes: use a shorter prefix");
        }
        let slot = id % 32768;
        // 198.18.0.0/15 holds 32768 /30 subnets.
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + slot * 4;
        let v6 = |host: u16| Ipv6Addr::new(0x2001, 0xdb8, 0x5d, slot as u16, 0, 0, 0, host);
        Ok(Plan {
            ns_if: format!("{ns}n"),
            ns,
            host_if,
            host_v4: Ipv4Addr::from(base + 1),
            ns_v4: Ipv4Addr::from(base + 2),
            host_v6: v6(1),
            ns_v6: v6(2),
        })
    }

    /// `/var/run/netns/<ns>`, for `nsenter --net=` (which, unlike
    /// `ip netns exec`, does not remount /sys and so keeps bpffs visible).
    pub fn ns_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.ns)
    }

    /// A command that runs `program` inside the namespace.
    pub fn in_ns(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns_path().display()))
            .arg("--")
            .arg(program);
        cmd
    }
}

/// A created demo network; dropping it removes the namespace and the links.
#[derive(Debug)]
pub struct DemoNet {
    /// What was created.
    pub plan: Plan,
}

impl DemoNet {
    /// Creates the namespace and the veth pair, addresses both ends and
    /// brings them up. On error, whatever was created is removed.
    pub fn create(plan: Plan) -> Result<DemoNet> {
        let net = DemoNet { plan };
        let p = &net.plan;
        let (h4, n4) = (format!("{}/30", p.host_v4), format!("{}/30", p.ns_v4));
        let (h6, n6) = (format!("{}/64", p.host_v6), format!("{}/64", p.ns_v6));
        ip(&["netns", "add", &p.ns])?;
        ip(&[
            "link", "add", &p.host_if, "type", "veth", "peer", "name", &p.ns_if, "netns", &p.ns,
        ])?;
        ip(&["addr", "add", &h4, "dev", &p.host_if])?;
        ip(&["-6", "addr", "add", &h6, "dev", &p.host_if, "nodad"])?;
        ip(&["link", "set", &p.host_if, "up"])?;
        ip(&["-n", &p.ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &p.ns, "addr", "add", &n4, "dev", &p.ns_if])?;
        ip(&[
            "-n", &p.ns, "-6", "addr", "add", &n6, "dev", &p.ns_if, "nodad",
        ])?;
        ip(&["-n", &p.ns, "link", "set", &p.ns_if, "up"])?;
        Ok(net)
    }
}

impl Drop for DemoNet {
    fn drop(&mut self) {
        let p = &self.plan;
        kill_ns_processes(&p.ns);
        remove_link(&p.host_if);
        let _ = quiet_ip(&["netns", "del", &p.ns]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    util::run(Command::new("ip").args(args))
}

/// Runs `ip` without echo; returns whether it succeeded.
fn quiet_ip(args: &[&str]) -> bool {
    util::output(Command::new("ip").args(args)).is_ok_and(|o| o.status.success())
}

/// Detaches XDP in every mode and the clsact qdisc from `link`, then deletes
/// it (deleting a veth end deletes its peer too).
fn remove_link(link: &str) {
    for mode in ["xdpgeneric", "xdpdrv", "xdpoffload", "xdp"] {
        quiet_ip(&["link", "set", "dev", link, mode, "off"]);
    }
    let _ = util::output(Command::new("tc").args(["qdisc", "del", "dev", link, "clsact"]));
    quiet_ip(&["link", "del", link]);
}

/// Terminates the processes running inside namespace `ns` (only our own
/// namespaces are ever passed here): SIGTERM, a grace period, SIGKILL.
fn kill_ns_processes(ns: &str) {
    let pids = |ns: &str| -> Vec<u32> {
        util::stdout_of(Command::new("ip").args(["netns", "pids", ns]))
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = pids(ns);
    if first.is_empty() {
        return;
    }
    for pid in &first {
        util::kill_pid(*pid, libc::SIGTERM);
    }
    for _ in 0..20 {
        if pids(ns).is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for pid in pids(ns) {
        util::kill_pid(pid, libc::SIGKILL);
    }
}

/// Names in `ip netns list` output (the first word of each line).
pub fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Interface names in `ip -o link show` output (`2: name@peer: <...>`).
pub fn parse_link_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Removes namespaces and root-namespace links whose names start with one of
/// `prefixes`, after killing the processes inside those namespaces and
/// detaching XDP and TC programs from the links. Returns what it removed.
pub fn clean_leftovers(prefixes: &[&str]) -> Result<Vec<String>> {
    let ours = |name: &str| prefixes.iter().any(|p| name.starts_with(p));
    let mut removed = Vec::new();
    let list = util::stdout_of(Command::new("ip").args(["netns", "list"]))?;
    for ns in parse_netns_list(&list).into_iter().filter(|n| ours(n)) {
        kill_ns_processes(&ns);
        if quiet_ip(&["netns", "del", &ns]) {
            removed.push(format!("namespace {ns}"));
        }
    }
    let links = util::stdout_of(Command::new("ip").args(["-o", "link", "show"]))?;
    for link in parse_link_list(&links).into_iter().filter(|n| ours(n)) {
        remove_link(&link);
        removed.push(format!("link {link}"));
    }
    // Pin directories of persistent-mode tests (removing one detaches
    // whatever its links still hold).
    if let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ours(&name) && std::fs::remove_dir_all(entry.path()).is_ok() {
                removed.push(format!("pins /sys/fs/bpf/{name}"));
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_fit_ifnamsiz_and_addresses_stay_in_test_ranges() {
        let p = Plan::new(DEMO_PREFIX, 4_194_304).unwrap();
        assert_eq!(p.host_if, "sdemo-4194304h");
        assert!(p.host_if.len() <= IFNAMSIZ_MAX && p.ns_if.len() <= IFNAMSIZ_MAX);
        for id in [0, 1, 32767, 4_194_304] {
            let p = Plan::new(DEMO_PREFIX, id).unwrap();
            let net = u32::from(p.host_v4) & !3;
            assert_eq!(u32::from(p.ns_v4) & !3, net, "same /30");
            assert_eq!(
                u32::from(p.host_v4) >> 17,
                u32::from(Ipv4Addr::new(198, 18, 0, 0)) >> 17
            );
            assert_eq!(p.host_v6.segments()[..2], [0x2001, 0xdb8]);
            assert_ne!(p.host_v4, p.ns_v4);
        }
        assert_ne!(
            Plan::new(DEMO_PREFIX, 1).unwrap().host_v4,
            Plan::new(DEMO_PREFIX, 2).unwrap().host_v4
        );
        assert!(Plan::new("a-very-long-prefix-", 1).is_err());
    }

    #[test]
    fn netns_and_link_lists_are_parsed() {
        let ns = "sdemo-12 (id: 3)\nst-live-a\nother (id: 0)\n";
        assert_eq!(parse_netns_list(ns), ["sdemo-12", "st-live-a", "other"]);
        let links = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\n\
                     7: sdemo-12h@if6: <BROADCAST,MULTICAST,UP> mtu 1500 xdpgeneric\n\
                     9: eth0: <BROADCAST> mtu 1500\n";
        assert_eq!(parse_link_list(links), ["lo", "sdemo-12h", "eth0"]);
    }

    /// Root only (CI runs as root): the demo network comes up, carries
    /// traffic between its two ends, and leaves nothing behind.
    #[test]
    fn xtask_live_demo_network_up_and_down() {
        assert!(
            util::is_root(),
            "needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run `cargo xtask test`"
        );
        let plan = Plan::new(&format!("{DEMO_PREFIX}t"), std::process::id()).unwrap();
        let net = DemoNet::create(plan.clone()).unwrap();
        let ping = |family: &str, addr: String| {
            let out = util::output(
                plan.in_ns("ping")
                    .args([family, "-c", "2", "-i", "0.2", "-w", "5", &addr]),
            )
            .unwrap();
            assert!(
                out.status.success(),
                "ping {addr}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        };
        ping("-4", net.plan.host_v4.to_string());
        ping("-6", net.plan.host_v6.to_string());
        drop(net);
        let ns = util::stdout_of(Command::new("ip").args(["netns", "list"])).unwrap();
        assert!(
            !parse_netns_list(&ns).contains(&plan.ns),
            "namespace left behind"
        );
        let links = util::stdout_of(Command::new("ip").args(["-o", "link", "show"])).unwrap();
        assert!(
            !parse_link_list(&links).contains(&plan.host_if),
            "link left behind"
        );
    }
}
